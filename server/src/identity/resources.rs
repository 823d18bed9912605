//! Keystone's admin resources: domains, projects, users, roles and role assignments, plus the
//! read-only services/endpoints/regions views of the catalog.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{DEFAULT_DOMAIN_ID, INTERFACES, REGION, SERVICES, domain_json, project_json, stable_id};
use crate::auth::{self, Ctx};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::identity::{NameFilter, Project, Role, User};
use crate::store::{flag, new_hex_id};

type JsonResult = ApiResult<axum::Json<Value>>;

fn list_links(state: &AppState, path: &str) -> Value {
    json!({"self": state.url(&format!("identity/v3/{path}")), "previous": null, "next": null})
}

fn name_filter(q: &Query) -> ApiResult<NameFilter> {
    Ok(NameFilter {
        domain_id: q.get("domain_id").map(str::to_string),
        name: q.get("name").map(str::to_string),
        enabled: q.bool("enabled")?,
    })
}

// ---- domains ----

pub async fn list_domains(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_admin("identity:list_domains")?;
    let name = q.get("name");
    let domains: Vec<Value> = state
        .store
        .list_domains()
        .await?
        .iter()
        .filter(|d| name.is_none_or(|n| n == d.name))
        .map(|d| domain_json(&state, d))
        .collect();
    Ok(axum::Json(json!({"domains": domains, "links": list_links(&state, "domains")})))
}

pub async fn get_domain(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    let d = state.store.get_domain(&id).await?;
    let in_it = ctx.project.as_ref().is_some_and(|(_, pd)| pd.id == d.id);
    if !ctx.is_admin() && !in_it {
        return Err(ApiError::policy("identity:get_domain"));
    }
    Ok(axum::Json(json!({"domain": domain_json(&state, &d)})))
}

#[derive(Deserialize)]
pub struct DomainCreate {
    domain: DomainBody,
}
#[derive(Deserialize)]
struct DomainBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

pub async fn create_domain(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(req): Json<DomainCreate>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_domain")?;
    let name = non_empty("domain/name", &req.domain.name)?;
    let id = new_hex_id();
    state.store.create_domain(&id, name, req.domain.description.as_deref().unwrap_or_default()).await?;
    let d = state.store.get_domain(&id).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"domain": domain_json(&state, &d)}))))
}

fn non_empty<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    let v = value.trim();
    if v.is_empty() || v.len() > 255 {
        return Err(ApiError::bad_request(format!("Invalid input for field '{field}': must be 1 to 255 characters.")));
    }
    Ok(v)
}

// ---- projects ----

pub async fn list_projects(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    let projects = if ctx.is_admin() {
        state.store.list_projects(&name_filter(&q)?).await?
    } else {
        // Non-admins see the projects they are a member of (Keystone's domain-reader rule
        // would refuse outright; this is friendlier and leaks nothing).
        let f = name_filter(&q)?;
        state
            .store
            .user_projects(&ctx.user.id)
            .await?
            .into_iter()
            .filter(|p| f.name.as_ref().is_none_or(|n| *n == p.name))
            .filter(|p| f.domain_id.as_ref().is_none_or(|d| *d == p.domain_id))
            .collect()
    };
    let out: Vec<Value> = projects.iter().map(|p| project_json(&state, p)).collect();
    Ok(axum::Json(json!({"projects": out, "links": list_links(&state, "projects")})))
}

pub async fn get_project(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    let in_scope = ctx.project.as_ref().is_some_and(|(p, _)| p.id == id);
    if !ctx.is_admin() && !in_scope {
        // Keystone answers 403 here, not 404: project ids are not secret to it.
        return Err(ApiError::policy("identity:get_project"));
    }
    let p = state.store.get_project(&id).await?;
    Ok(axum::Json(json!({"project": project_json(&state, &p)})))
}

#[derive(Deserialize)]
pub struct ProjectReq {
    project: ProjectBody,
}
#[derive(Deserialize)]
struct ProjectBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain_id: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    is_domain: Option<bool>,
    #[serde(default)]
    parent_id: Option<String>,
}

pub async fn create_project(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(req): Json<ProjectReq>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_project")?;
    let b = req.project;
    if b.is_domain == Some(true) {
        return Err(ApiError::bad_request("Projects acting as domains are not supported."));
    }
    let name = non_empty("project/name", b.name.as_deref().unwrap_or_default())?.to_string();
    let domain_id = b.domain_id.or(b.parent_id).unwrap_or_else(|| DEFAULT_DOMAIN_ID.to_string());
    state.store.get_domain(&domain_id).await.map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid input for field 'project/domain_id': domain {domain_id} does not exist."
        ))
    })?;
    let p = Project {
        id: new_hex_id(),
        name,
        domain_id,
        description: b.description.unwrap_or_default(),
        enabled: flag(b.enabled.unwrap_or(true)),
        tags: serde_json::to_string(&b.tags.unwrap_or_default()).map_err(ApiError::internal)?,
    };
    state.store.create_project(&p).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"project": project_json(&state, &p)}))))
}

pub async fn update_project(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<ProjectReq>,
) -> JsonResult {
    ctx.require_admin("identity:update_project")?;
    let mut p = state.store.get_project(&id).await?;
    let b = req.project;
    if let Some(d) = b.domain_id.filter(|d| *d != p.domain_id) {
        return Err(ApiError::bad_request(format!("Update of `domain_id` is not allowed (to {d}).")));
    }
    if let Some(name) = b.name {
        p.name = non_empty("project/name", &name)?.to_string();
    }
    if let Some(d) = b.description {
        p.description = d;
    }
    if let Some(e) = b.enabled {
        p.enabled = flag(e);
    }
    if let Some(tags) = b.tags {
        p.tags = serde_json::to_string(&tags).map_err(ApiError::internal)?;
    }
    state.store.update_project(&p).await?;
    Ok(axum::Json(json!({"project": project_json(&state, &p)})))
}

pub async fn delete_project(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_project")?;
    if ctx.project.as_ref().is_some_and(|(p, _)| p.id == id) {
        return Err(ApiError::forbidden("You cannot delete the project your token is scoped to."));
    }
    state.store.delete_project(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- users ----

pub(crate) fn user_json(state: &AppState, u: &User) -> Value {
    let mut v = json!({
        "id": u.id,
        "name": u.name,
        "domain_id": u.domain_id,
        "enabled": u.enabled != 0,
        "password_expires_at": null,
        "options": {},
        "links": {"self": state.url(&format!("identity/v3/users/{}", u.id))},
    });
    if let Some(e) = &u.email {
        v["email"] = json!(e);
    }
    if let Some(d) = &u.description {
        v["description"] = json!(d);
    }
    if let Some(p) = &u.default_project_id {
        v["default_project_id"] = json!(p);
    }
    v
}

pub async fn list_users(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_admin("identity:list_users")?;
    let users: Vec<Value> =
        state.store.list_users(&name_filter(&q)?).await?.iter().map(|u| user_json(&state, u)).collect();
    Ok(axum::Json(json!({"users": users, "links": list_links(&state, "users")})))
}

pub async fn get_user(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    if !ctx.is_admin() && ctx.user.id != id {
        return Err(ApiError::policy("identity:get_user"));
    }
    let u = state.store.get_user(&id).await?;
    Ok(axum::Json(json!({"user": user_json(&state, &u)})))
}

#[derive(Deserialize)]
pub struct UserReq {
    user: UserBody,
}
#[derive(Deserialize)]
struct UserBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain_id: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    default_project_id: Option<String>,
}

pub async fn create_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(req): Json<UserReq>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_user")?;
    let b = req.user;
    let name = non_empty("user/name", b.name.as_deref().unwrap_or_default())?.to_string();
    let domain_id = b.domain_id.unwrap_or_else(|| DEFAULT_DOMAIN_ID.to_string());
    state.store.get_domain(&domain_id).await.map_err(|_| {
        ApiError::bad_request(format!("Invalid input for field 'user/domain_id': domain {domain_id} does not exist."))
    })?;
    let password_hash = match b.password {
        Some(p) => Some(auth::hash_password(p).await.map_err(ApiError::internal)?),
        None => None,
    };
    let u = User {
        id: new_hex_id(),
        name,
        domain_id,
        password_hash,
        enabled: flag(b.enabled.unwrap_or(true)),
        email: b.email,
        description: b.description,
        default_project_id: b.default_project_id,
    };
    state.store.create_user(&u).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"user": user_json(&state, &u)}))))
}

pub async fn update_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<UserReq>,
) -> JsonResult {
    ctx.require_admin("identity:update_user")?;
    let mut u = state.store.get_user(&id).await?;
    let b = req.user;
    let mut revoke = false;
    if let Some(name) = b.name {
        u.name = non_empty("user/name", &name)?.to_string();
    }
    if let Some(p) = b.password {
        u.password_hash = Some(auth::hash_password(p).await.map_err(ApiError::internal)?);
        revoke = true;
    }
    if let Some(e) = b.enabled {
        u.enabled = flag(e);
        revoke |= !e;
    }
    if b.email.is_some() {
        u.email = b.email;
    }
    if b.description.is_some() {
        u.description = b.description;
    }
    if b.default_project_id.is_some() {
        u.default_project_id = b.default_project_id;
    }
    state.store.update_user(&u).await?;
    if revoke {
        state.store.revoke_user_tokens(&u.id).await?;
    }
    Ok(axum::Json(json!({"user": user_json(&state, &u)})))
}

pub async fn delete_user(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_user")?;
    state.store.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn user_projects(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    if !ctx.is_admin() && ctx.user.id != id {
        return Err(ApiError::policy("identity:list_user_projects"));
    }
    state.store.get_user(&id).await?;
    let projects: Vec<Value> = state.store.user_projects(&id).await?.iter().map(|p| project_json(&state, p)).collect();
    Ok(axum::Json(json!({"projects": projects, "links": list_links(&state, &format!("users/{id}/projects"))})))
}

#[derive(Deserialize)]
pub struct PasswordChange {
    user: PasswordBody,
}
#[derive(Deserialize)]
struct PasswordBody {
    original_password: String,
    password: String,
}

/// `POST /v3/users/{id}/password`: a user changes their own password (no token needed, as in
/// Keystone; the original password is the proof).
pub async fn change_password(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<PasswordChange>,
) -> ApiResult<StatusCode> {
    let mut u = state
        .store
        .get_user(&id)
        .await
        .map_err(|_| ApiError::unauthorized("The request you have made requires authentication."))?;
    let ok = match u.password_hash.clone() {
        Some(h) => auth::verify_password(req.user.original_password, h).await,
        None => false,
    };
    if !ok {
        return Err(ApiError::unauthorized("The request you have made requires authentication."));
    }
    non_empty("user/password", &req.user.password)?;
    u.password_hash = Some(auth::hash_password(req.user.password).await.map_err(ApiError::internal)?);
    state.store.update_user(&u).await?;
    state.store.revoke_user_tokens(&u.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- roles ----

fn role_json(state: &AppState, r: &Role) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "domain_id": null,
        "description": r.description,
        "options": {},
        "links": {"self": state.url(&format!("identity/v3/roles/{}", r.id))},
    })
}

pub async fn list_roles(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_admin("identity:list_roles")?;
    let roles: Vec<Value> = state.store.list_roles(q.get("name")).await?.iter().map(|r| role_json(&state, r)).collect();
    Ok(axum::Json(json!({"roles": roles, "links": list_links(&state, "roles")})))
}

pub async fn get_role(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    ctx.require_admin("identity:get_role")?;
    let r = state.store.get_role(&id).await?;
    Ok(axum::Json(json!({"role": role_json(&state, &r)})))
}

#[derive(Deserialize)]
pub struct RoleReq {
    role: RoleBody,
}
#[derive(Deserialize)]
struct RoleBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    domain_id: Option<String>,
}

pub async fn create_role(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(req): Json<RoleReq>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_role")?;
    if req.role.domain_id.is_some() {
        return Err(ApiError::bad_request("Domain-specific roles are not supported."));
    }
    let name = non_empty("role/name", req.role.name.as_deref().unwrap_or_default())?;
    let id = new_hex_id();
    state.store.create_role(&id, name, req.role.description.as_deref()).await?;
    let r = state.store.get_role(&id).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"role": role_json(&state, &r)}))))
}

pub async fn update_role(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<RoleReq>,
) -> JsonResult {
    ctx.require_admin("identity:update_role")?;
    let mut r = state.store.get_role(&id).await?;
    if let Some(n) = req.role.name {
        r.name = non_empty("role/name", &n)?.to_string();
    }
    if req.role.description.is_some() {
        r.description = req.role.description;
    }
    state.store.update_role(&r).await?;
    Ok(axum::Json(json!({"role": role_json(&state, &r)})))
}

pub async fn delete_role(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_role")?;
    state.store.delete_role(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- grants ----

pub async fn list_grants(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((pid, uid)): Path<(String, String)>,
) -> JsonResult {
    ctx.require_admin("identity:list_grants")?;
    state.store.get_project(&pid).await?;
    state.store.get_user(&uid).await?;
    let mut roles = Vec::new();
    for a in state.store.list_assignments(Some(&uid), Some(&pid), None).await? {
        roles.push(role_json(&state, &state.store.get_role(&a.role_id).await?));
    }
    Ok(axum::Json(json!({"roles": roles, "links": list_links(&state, &format!("projects/{pid}/users/{uid}/roles"))})))
}

pub async fn grant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((pid, uid, rid)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:create_grant")?;
    state.store.get_project(&pid).await?;
    state.store.get_user(&uid).await?;
    state.store.get_role(&rid).await?;
    state.store.grant(&uid, &pid, &rid).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn check_grant(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((pid, uid, rid)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:check_grant")?;
    if state.store.list_assignments(Some(&uid), Some(&pid), Some(&rid)).await?.is_empty() {
        return Err(ApiError::not_found(format!(
            "Could not find role assignment with role: {rid}, user or group: {uid}, project, domain, or system: {pid}."
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((pid, uid, rid)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:revoke_grant")?;
    state.store.revoke(&uid, &pid, &rid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/role_assignments` with `user.id`, `scope.project.id`, `role.id`, `include_names`,
/// `effective` (implied roles expanded).
pub async fn list_assignments(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    let user = q.get("user.id");
    if !ctx.is_admin() && user != Some(ctx.user.id.as_str()) {
        return Err(ApiError::policy("identity:list_role_assignments"));
    }
    if q.has("group.id") || q.has("scope.domain.id") || q.has("scope.system") {
        // Only user/project assignments exist here; filtering by anything else matches none.
        return Ok(axum::Json(json!({"role_assignments": [], "links": list_links(&state, "role_assignments")})));
    }
    let project = q.get("scope.project.id");
    let role = q.get("role.id");
    // A bare `include_names` (no value) means true, as in Keystone.
    let names = match q.get("include_names") {
        None => false,
        Some("") => true,
        Some(_) => q.bool("include_names")?.unwrap_or(true),
    };
    let effective = q.has("effective");
    let mut out = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for a in state.store.list_assignments(user, project, if effective { None } else { role }).await? {
        if effective {
            if pairs.contains(&(a.user_id.clone(), a.project_id.clone())) {
                continue;
            }
            pairs.push((a.user_id.clone(), a.project_id.clone()));
            for r in state.store.effective_roles(&a.user_id, &a.project_id).await? {
                if role.is_none_or(|want| want == r.id) {
                    out.push(assignment_json(&state, &a.user_id, &a.project_id, &r, names).await?);
                }
            }
        } else {
            let r = state.store.get_role(&a.role_id).await?;
            out.push(assignment_json(&state, &a.user_id, &a.project_id, &r, names).await?);
        }
    }
    Ok(axum::Json(json!({"role_assignments": out, "links": list_links(&state, "role_assignments")})))
}

async fn assignment_json(state: &AppState, uid: &str, pid: &str, r: &Role, names: bool) -> ApiResult<Value> {
    let mut v = json!({
        "role": {"id": r.id},
        "user": {"id": uid},
        "scope": {"project": {"id": pid}},
        "links": {"assignment": state.url(&format!("identity/v3/projects/{pid}/users/{uid}/roles/{}", r.id))},
    });
    if names {
        let u = state.store.get_user(uid).await?;
        let ud = state.store.get_domain(&u.domain_id).await?;
        let p = state.store.get_project(pid).await?;
        let pd = state.store.get_domain(&p.domain_id).await?;
        v["role"]["name"] = json!(r.name);
        v["user"] = json!({"id": uid, "name": u.name, "domain": {"id": ud.id, "name": ud.name}});
        v["scope"] = json!({"project": {"id": pid, "name": p.name, "domain": {"id": pd.id, "name": pd.name}}});
    }
    Ok(v)
}

// ---- catalog views ----

pub async fn list_services(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_admin("identity:list_services")?;
    let services: Vec<Value> = SERVICES
        .iter()
        .map(|(kind, name, _)| {
            let id = stable_id(&["service", kind]);
            json!({"id": id, "type": kind, "name": name, "enabled": true, "description": "",
                   "links": {"self": state.url(&format!("identity/v3/services/{id}"))}})
        })
        .collect();
    Ok(axum::Json(json!({"services": services, "links": list_links(&state, "services")})))
}

pub async fn list_endpoints(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_admin("identity:list_endpoints")?;
    let mut out = Vec::new();
    for (kind, _, path) in SERVICES {
        for iface in INTERFACES {
            let id = stable_id(&["endpoint", kind, iface]);
            out.push(json!({
                "id": id, "interface": iface, "region": REGION, "region_id": REGION,
                "service_id": stable_id(&["service", kind]), "url": state.url(path), "enabled": true,
                "links": {"self": state.url(&format!("identity/v3/endpoints/{id}"))},
            }));
        }
    }
    Ok(axum::Json(json!({"endpoints": out, "links": list_links(&state, "endpoints")})))
}

pub async fn list_regions(State(state): State<AppState>, _ctx: Ctx) -> JsonResult {
    let regions: Vec<Value> = state
        .store
        .list_regions()
        .await?
        .into_iter()
        .map(|(id, description)| {
            json!({"id": id, "description": description, "parent_region_id": null,
            "links": {"self": state.url(&format!("identity/v3/regions/{id}"))}})
        })
        .collect();
    Ok(axum::Json(json!({"regions": regions, "links": list_links(&state, "regions")})))
}
