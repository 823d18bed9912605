//! Role grants (Keystone's assignment API): users or groups hold roles on projects, domains or
//! the system, and OS-INHERIT grants reach the projects below a domain or project; the
//! `/v3/role_assignments` listing (with `effective` expansion); and role inference rules
//! (`/v3/roles/{prior}/implies/{implied}`).

use std::collections::HashMap;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use super::resources::{JsonResult, list_links, role_json};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::identity::{Grant, NameFilter, Project, Role, SYSTEM_ALL};

/// Which kind of grant a route serves.
#[derive(Clone, Copy)]
struct Kind {
    /// `project` | `domain` | `system`
    target: &'static str,
    /// `user` | `group`
    actor: &'static str,
    inherited: bool,
}

/// Every grant route, one small router per kind (the kind travels as an extension).
pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for (target, targets) in [("project", "projects"), ("domain", "domains")] {
        for (actor, actors) in [("user", "users"), ("group", "groups")] {
            let kind = Kind { target, actor, inherited: false };
            r = r.merge(routes(
                &format!("/v3/{targets}/{{tid}}/{actors}/{{aid}}/roles"),
                &format!("/v3/{targets}/{{tid}}/{actors}/{{aid}}/roles/{{rid}}"),
                kind,
            ));
            let kind = Kind { target, actor, inherited: true };
            r = r.merge(routes(
                &format!("/v3/OS-INHERIT/{targets}/{{tid}}/{actors}/{{aid}}/roles/inherited_to_projects"),
                &format!("/v3/OS-INHERIT/{targets}/{{tid}}/{actors}/{{aid}}/roles/{{rid}}/inherited_to_projects"),
                kind,
            ));
        }
    }
    for (actor, actors) in [("user", "users"), ("group", "groups")] {
        let kind = Kind { target: "system", actor, inherited: false };
        r = r.merge(routes(
            &format!("/v3/system/{actors}/{{aid}}/roles"),
            &format!("/v3/system/{actors}/{{aid}}/roles/{{rid}}"),
            kind,
        ));
    }
    r.route("/v3/role_assignments", get(list_assignments))
        .route("/v3/role_inferences", get(list_all_inferences))
        .route("/v3/roles/{prior}/implies", get(list_inferences))
        .route(
            "/v3/roles/{prior}/implies/{implied}",
            get(get_inference).head(check_inference).put(create_inference).delete(delete_inference),
        )
}

fn routes(list: &str, item: &str, kind: Kind) -> Router<AppState> {
    Router::new()
        .route(list, get(list_grants))
        .route(item, get(check_grant).head(check_grant).put(add_grant).delete(remove_grant))
        .layer(Extension(kind))
}

fn param<'a>(p: &'a HashMap<String, String>, name: &str) -> ApiResult<&'a str> {
    p.get(name).map(String::as_str).ok_or_else(|| ApiError::internal(format!("route without {{{name}}}")))
}

/// The grant a route names, after checking that its target and actor exist. Returns the
/// domain that owns the target (none for the system).
async fn grant_of(
    state: &AppState,
    kind: Kind,
    p: &HashMap<String, String>,
    role_id: &str,
) -> ApiResult<(Grant, Option<String>)> {
    let target_id = if kind.target == "system" { SYSTEM_ALL.to_string() } else { param(p, "tid")?.to_string() };
    let actor_id = param(p, "aid")?.to_string();
    let domain = match kind.target {
        "project" => Some(state.store.get_project(&target_id).await?.domain_id),
        "domain" => Some(state.store.get_domain(&target_id).await?.id),
        _ => None,
    };
    match kind.actor {
        "user" => drop(state.store.get_user(&actor_id).await?),
        _ => drop(state.store.get_group(&actor_id).await?),
    }
    let grant = Grant {
        actor_type: kind.actor.into(),
        actor_id,
        target_type: kind.target.into(),
        target_id,
        role_id: role_id.into(),
        inherited: crate::store::flag(kind.inherited),
    };
    Ok((grant, domain))
}

async fn list_grants(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(kind): Extension<Kind>,
    Path(p): Path<HashMap<String, String>>,
) -> JsonResult {
    ctx.require_admin("identity:list_grants")?;
    let (g, _) = grant_of(&state, kind, &p, "").await?;
    let mut roles = Vec::new();
    for found in state
        .store
        .list_grants(
            Some((&g.actor_type, &g.actor_id)),
            Some((&g.target_type, &g.target_id)),
            None,
            Some(kind.inherited),
        )
        .await?
    {
        roles.push(role_json(&state, &state.store.get_role(&found.role_id).await?));
    }
    Ok(axum::Json(json!({"roles": roles, "links": {"self": null, "previous": null, "next": null}})))
}

async fn add_grant(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(kind): Extension<Kind>,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:create_grant")?;
    let role = state.store.get_role(param(&p, "rid")?).await?;
    let (g, domain) = grant_of(&state, kind, &p, &role.id).await?;
    // A domain-specific role is granted only inside its own domain (Keystone).
    if let Some(role_domain) = &role.domain_id
        && domain.as_ref() != Some(role_domain)
    {
        return Err(ApiError::forbidden(format!(
            "Role {} is specific to domain {role_domain} and cannot be granted outside it.",
            role.id
        )));
    }
    state.store.add_grant(&g).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check_grant(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(kind): Extension<Kind>,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:check_grant")?;
    let rid = param(&p, "rid")?;
    state.store.get_role(rid).await?;
    let (g, _) = grant_of(&state, kind, &p, rid).await?;
    let found = state
        .store
        .list_grants(
            Some((&g.actor_type, &g.actor_id)),
            Some((&g.target_type, &g.target_id)),
            Some(rid),
            Some(kind.inherited),
        )
        .await?;
    if found.is_empty() {
        return Err(ApiError::not_found(format!(
            "Could not find role assignment with role: {rid}, user or group: {}, project, domain, or system: {}.",
            g.actor_id, g.target_id
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_grant(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(kind): Extension<Kind>,
    Path(p): Path<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:revoke_grant")?;
    let rid = param(&p, "rid")?;
    let (g, _) = grant_of(&state, kind, &p, rid).await?;
    state.store.remove_grant(&g).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- /v3/role_assignments ----

/// One row of the listing: who holds which role where (and, when effective and through a
/// group, which group).
#[derive(Clone)]
struct Row {
    actor_type: String,
    actor_id: String,
    target_type: String,
    target_id: String,
    role: Role,
    inherited: bool,
    via_group: Option<String>,
}

/// `GET /v3/role_assignments` with `user.id`, `group.id`, `role.id`, `scope.project.id`,
/// `scope.domain.id`, `scope.system`, `scope.OS-INHERIT:inherited_to`, `include_names` and
/// `effective` (groups expanded to their members, inherited grants to the projects they
/// reach, implied roles added), as Keystone answers.
pub async fn list_assignments(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    let user = q.get("user.id");
    if !ctx.is_admin() && user != Some(ctx.user.id.as_str()) {
        return Err(ApiError::policy("identity:list_role_assignments"));
    }
    let names = flag_param(&q, "include_names")?;
    let effective = q.has("effective") && flag_param(&q, "effective")?;
    let group = q.get("group.id");
    let role = q.get("role.id");
    let project = q.get("scope.project.id");
    let domain = q.get("scope.domain.id");
    let system = q.has("scope.system");
    let inherited_only = q.get("scope.OS-INHERIT:inherited_to") == Some("projects");

    let grants = state.store.list_grants(None, None, None, None).await?;
    let mut rows: Vec<Row> = Vec::new();
    if effective {
        let projects = state.store.list_projects(&NameFilter::default()).await?;
        for g in grants {
            let members: Vec<(String, Option<String>)> = if g.actor_type == "group" {
                state
                    .store
                    .group_users(&g.actor_id)
                    .await?
                    .into_iter()
                    .map(|u| (u.id, Some(g.actor_id.clone())))
                    .collect()
            } else {
                vec![(g.actor_id.clone(), None)]
            };
            let targets: Vec<(String, String)> = if g.inherited != 0 {
                projects
                    .iter()
                    .filter(|p| reaches(&g, p, &projects))
                    .map(|p| ("project".to_string(), p.id.clone()))
                    .collect()
            } else {
                vec![(g.target_type.clone(), g.target_id.clone())]
            };
            let mut roles = state.store.expand_implied(vec![state.store.get_role(&g.role_id).await?]).await?;
            roles.retain(|r| r.domain_id.is_none());
            for (uid, via) in &members {
                for (tt, tid) in &targets {
                    for r in &roles {
                        let row = Row {
                            actor_type: "user".into(),
                            actor_id: uid.clone(),
                            target_type: tt.clone(),
                            target_id: tid.clone(),
                            role: r.clone(),
                            inherited: false,
                            via_group: via.clone(),
                        };
                        if !rows.iter().any(|x| same_assignment(x, &row)) {
                            rows.push(row);
                        }
                    }
                }
            }
        }
    } else {
        for g in grants {
            let role = state.store.get_role(&g.role_id).await?;
            rows.push(Row {
                actor_type: g.actor_type,
                actor_id: g.actor_id,
                target_type: g.target_type,
                target_id: g.target_id,
                role,
                inherited: g.inherited != 0,
                via_group: None,
            });
        }
    }
    rows.retain(|r| {
        user.is_none_or(|u| r.actor_type == "user" && r.actor_id == u)
            && group.is_none_or(|g| (r.actor_type == "group" && r.actor_id == g) || r.via_group.as_deref() == Some(g))
            && role.is_none_or(|id| r.role.id == id)
            && project.is_none_or(|p| r.target_type == "project" && r.target_id == p)
            && domain.is_none_or(|d| r.target_type == "domain" && r.target_id == d)
            && (!system || r.target_type == "system")
            && (!inherited_only || r.inherited)
    });
    let mut out = Vec::new();
    for r in &rows {
        out.push(assignment_json(&state, r, names).await?);
    }
    Ok(axum::Json(json!({"role_assignments": out, "links": list_links(&state, "role_assignments")})))
}

/// A query flag: absent = false, bare (`?effective`) = true, else a boolean.
fn flag_param(q: &Query, name: &str) -> ApiResult<bool> {
    match q.get(name) {
        None => Ok(false),
        Some("") => Ok(true),
        Some(_) => Ok(q.bool(name)?.unwrap_or(true)),
    }
}

fn same_assignment(a: &Row, b: &Row) -> bool {
    a.actor_id == b.actor_id && a.target_type == b.target_type && a.target_id == b.target_id && a.role.id == b.role.id
}

/// Whether an inherited grant reaches project `p`: `p` is in the granted domain, or below
/// the granted project.
fn reaches(g: &Grant, p: &Project, all: &[Project]) -> bool {
    if g.target_type == "domain" {
        return p.domain_id == g.target_id;
    }
    let mut parent = p.parent_id.clone();
    let mut hops = 0;
    while let Some(id) = parent {
        if id == g.target_id {
            return true;
        }
        hops += 1;
        if hops > 64 {
            return false;
        }
        parent = all.iter().find(|x| x.id == id).and_then(|x| x.parent_id.clone());
    }
    false
}

async fn assignment_json(state: &AppState, r: &Row, names: bool) -> ApiResult<Value> {
    let actors = if r.actor_type == "user" { "users" } else { "groups" };
    let (scope, link) = match r.target_type.as_str() {
        "project" => (
            json!({"project": {"id": r.target_id}}),
            format!("projects/{}/{actors}/{}/roles/{}", r.target_id, r.actor_id, r.role.id),
        ),
        "domain" => (
            json!({"domain": {"id": r.target_id}}),
            format!("domains/{}/{actors}/{}/roles/{}", r.target_id, r.actor_id, r.role.id),
        ),
        _ => (json!({"system": {"all": true}}), format!("system/{actors}/{}/roles/{}", r.actor_id, r.role.id)),
    };
    let mut v = json!({
        "role": {"id": r.role.id},
        "scope": scope,
        "links": {"assignment": state.url(&format!("identity/v3/{link}"))},
    });
    v[r.actor_type.as_str()] = json!({"id": r.actor_id});
    if r.inherited {
        v["scope"]["OS-INHERIT:inherited_to"] = json!("projects");
        v["links"]["assignment"] = json!(state.url(&format!("identity/v3/OS-INHERIT/{link}/inherited_to_projects")));
    }
    if let Some(g) = &r.via_group {
        v["links"]["membership"] = json!(state.url(&format!("identity/v3/groups/{g}/users/{}", r.actor_id)));
    }
    if names {
        v["role"]["name"] = json!(r.role.name);
        if let Some(d) = &r.role.domain_id {
            v["role"]["domain"] = domain_ref(state, d).await?;
        }
        let (name, domain_id) = if r.actor_type == "user" {
            let u = state.store.get_user(&r.actor_id).await?;
            (u.name, u.domain_id)
        } else {
            let g = state.store.get_group(&r.actor_id).await?;
            (g.name, g.domain_id)
        };
        v[r.actor_type.as_str()] =
            json!({"id": r.actor_id, "name": name, "domain": domain_ref(state, &domain_id).await?});
        match r.target_type.as_str() {
            "project" => {
                let p = state.store.get_project(&r.target_id).await?;
                v["scope"]["project"] =
                    json!({"id": p.id, "name": p.name, "domain": domain_ref(state, &p.domain_id).await?});
            }
            "domain" => v["scope"]["domain"] = domain_ref(state, &r.target_id).await?,
            _ => {}
        }
    }
    Ok(v)
}

async fn domain_ref(state: &AppState, id: &str) -> ApiResult<Value> {
    let d = state.store.get_domain(id).await?;
    Ok(json!({"id": d.id, "name": d.name}))
}

// ---- role inference rules ----

fn role_ref(state: &AppState, r: &Role) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "links": {"self": state.url(&format!("identity/v3/roles/{}", r.id))},
    })
}

async fn inference_json(state: &AppState, prior: &Role, implied: &Role) -> Value {
    json!({"role_inference": {"prior_role": role_ref(state, prior), "implies": role_ref(state, implied)}, "links": {"self": state.url(&format!("identity/v3/roles/{}/implies/{}", prior.id, implied.id))}})
}

async fn rule_exists(state: &AppState, prior: &str, implied: &str) -> ApiResult<bool> {
    Ok(state.store.implied_roles().await?.iter().any(|(p, i)| p == prior && i == implied))
}

fn no_rule(prior: &str, implied: &str) -> ApiError {
    ApiError::not_found(format!("{prior} does not imply {implied}."))
}

async fn create_inference(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((prior, implied)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_implied_role")?;
    let p = state.store.get_role(&prior).await?;
    let i = state.store.get_role(&implied).await?;
    // Keystone: a global role may not imply a domain-specific one (it would leak the
    // domain's role everywhere).
    if p.domain_id.is_none() && i.domain_id.is_some() {
        return Err(ApiError::forbidden("A global role cannot imply a domain-specific role."));
    }
    if prior == implied {
        return Err(ApiError::forbidden("A role cannot imply itself."));
    }
    state.store.add_implied_role(&prior, &implied).await?;
    Ok((StatusCode::CREATED, axum::Json(inference_json(&state, &p, &i).await)))
}

async fn get_inference(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((prior, implied)): Path<(String, String)>,
) -> JsonResult {
    ctx.require_admin("identity:get_implied_role")?;
    let p = state.store.get_role(&prior).await?;
    let i = state.store.get_role(&implied).await?;
    if !rule_exists(&state, &prior, &implied).await? {
        return Err(no_rule(&prior, &implied));
    }
    Ok(axum::Json(inference_json(&state, &p, &i).await))
}

async fn check_inference(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((prior, implied)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:check_implied_role")?;
    if !rule_exists(&state, &prior, &implied).await? {
        return Err(no_rule(&prior, &implied));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_inference(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((prior, implied)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_implied_role")?;
    match state.store.remove_implied_role(&prior, &implied).await {
        Err(StoreError::NotFound(_)) => Err(no_rule(&prior, &implied)),
        other => Ok(other.map(|_| StatusCode::NO_CONTENT)?),
    }
}

async fn rules_of(state: &AppState, prior: &Role, rules: &[(String, String)]) -> ApiResult<Value> {
    let mut implies = Vec::new();
    for (_, i) in rules.iter().filter(|(p, _)| *p == prior.id) {
        implies.push(role_ref(state, &state.store.get_role(i).await?));
    }
    Ok(json!({"prior_role": role_ref(state, prior), "implies": implies}))
}

/// `GET /v3/roles/{prior}/implies`
async fn list_inferences(State(state): State<AppState>, ctx: Ctx, Path(prior): Path<String>) -> JsonResult {
    ctx.require_admin("identity:list_implied_roles")?;
    let p = state.store.get_role(&prior).await?;
    let rules = state.store.implied_roles().await?;
    Ok(axum::Json(json!({
        "role_inference": rules_of(&state, &p, &rules).await?,
        "links": {"self": state.url(&format!("identity/v3/roles/{prior}/implies"))},
    })))
}

/// `GET /v3/role_inferences`
async fn list_all_inferences(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_admin("identity:list_role_inference_rules")?;
    let rules = state.store.implied_roles().await?;
    let mut priors: Vec<&String> = rules.iter().map(|(p, _)| p).collect();
    priors.dedup();
    let mut out = Vec::new();
    for p in priors {
        out.push(rules_of(&state, &state.store.get_role(p).await?, &rules).await?);
    }
    Ok(axum::Json(json!({"role_inferences": out, "links": list_links(&state, "role_inferences")})))
}
