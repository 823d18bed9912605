//! Keystone's admin resources: domains, projects, users and roles.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::project_tags::{TagFilter, normalize_tags, set_tags, stored_tags};
use super::{DEFAULT_DOMAIN_ID, domain_json, project_json};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::identity::{Domain, NameFilter, Project, Role, User};
use crate::store::{flag, new_hex_id};

pub(super) type JsonResult = ApiResult<axum::Json<Value>>;

pub(super) fn list_links(state: &AppState, path: &str) -> Value {
    json!({"self": state.url(&format!("identity/v3/{path}")), "previous": null, "next": null})
}

fn name_filter(q: &Query) -> ApiResult<NameFilter> {
    Ok(NameFilter {
        domain_id: q.get("domain_id").map(str::to_string),
        name: q.get("name").map(str::to_string),
        enabled: q.bool("enabled")?,
        parent_id: q.get("parent_id").map(str::to_string),
    })
}

// ---- domains ----

pub async fn list_domains(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_admin("identity:list_domains")?;
    let name = q.get("name");
    let enabled = q.bool("enabled")?;
    let domains: Vec<Value> = state
        .store
        .list_domains()
        .await?
        .iter()
        .filter(|d| name.is_none_or(|n| n == d.name))
        .filter(|d| enabled.is_none_or(|e| e == (d.enabled != 0)))
        .map(|d| domain_json(&state, d))
        .collect();
    Ok(axum::Json(json!({"domains": domains, "links": list_links(&state, "domains")})))
}

pub async fn get_domain(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    let d = state.store.get_domain(&id).await?;
    let in_it = ctx.project.as_ref().is_some_and(|(_, pd)| pd.id == d.id)
        || ctx.domain.as_ref().is_some_and(|sd| sd.id == d.id);
    if !ctx.is_admin() && !in_it {
        return Err(ApiError::policy("identity:get_domain"));
    }
    Ok(axum::Json(json!({"domain": domain_json(&state, &d)})))
}

#[derive(Deserialize)]
pub struct DomainReq {
    domain: DomainBody,
}
#[derive(Deserialize)]
struct DomainBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

/// Keystone's limit on domain, project and group names.
const SHORT_NAME: usize = 64;
/// Keystone's limit on user and role names.
const LONG_NAME: usize = 255;

pub async fn create_domain(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(req): Json<DomainReq>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_domain")?;
    let b = req.domain;
    let name = name_field("domain/name", b.name.as_deref().unwrap_or_default(), SHORT_NAME)?;
    let id = new_hex_id();
    let enabled = b.enabled.unwrap_or(true);
    state.store.create_domain_with(&id, name, b.description.as_deref().unwrap_or_default(), enabled).await?;
    let d = state.store.get_domain(&id).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"domain": domain_json(&state, &d)}))))
}

pub async fn update_domain(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<DomainReq>,
) -> JsonResult {
    ctx.require_admin("identity:update_domain")?;
    let d = apply_domain_update(&state, &id, req.domain).await?;
    Ok(axum::Json(json!({"domain": domain_json(&state, &d)})))
}

async fn apply_domain_update(state: &AppState, id: &str, b: DomainBody) -> ApiResult<Domain> {
    let mut d = state.store.get_domain(id).await?;
    if let Some(n) = b.name {
        d.name = name_field("domain/name", &n, SHORT_NAME)?.to_string();
    }
    if let Some(desc) = b.description {
        d.description = desc;
    }
    if let Some(e) = b.enabled {
        if !e && d.id == DEFAULT_DOMAIN_ID {
            return Err(ApiError::forbidden("The default domain cannot be disabled."));
        }
        d.enabled = flag(e);
    }
    state.store.update_domain(&d).await?;
    Ok(d)
}

/// `DELETE /v3/domains/{id}`: only a disabled domain, and never the default one (Keystone).
/// Everything in the domain goes with it.
pub async fn delete_domain(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_domain")?;
    remove_domain(&state, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_domain(state: &AppState, id: &str) -> ApiResult<()> {
    let d = state.store.get_domain(id).await?;
    if d.id == DEFAULT_DOMAIN_ID {
        return Err(ApiError::forbidden("The default domain cannot be deleted."));
    }
    if d.enabled != 0 {
        return Err(ApiError::forbidden("Cannot delete a domain that is enabled, please disable it first."));
    }
    state.store.delete_domain(id).await?;
    Ok(())
}

/// A name of 1 to `max` characters (Keystone's schema: 64 for domains, projects and groups).
pub(super) fn name_field<'a>(field: &str, value: &'a str, max: usize) -> ApiResult<&'a str> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field '{field}': must be 1 to {max} characters."
        )));
    }
    Ok(v)
}

fn non_empty<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    name_field(field, value, LONG_NAME)
}

// ---- projects ----

/// A domain seen through the projects API (Keystone stores domains as `is_domain` projects).
fn domain_as_project(state: &AppState, d: &Domain) -> Value {
    json!({
        "id": d.id,
        "name": d.name,
        "domain_id": null,
        "description": d.description,
        "enabled": d.enabled != 0,
        "is_domain": true,
        "parent_id": null,
        "tags": [],
        "options": {},
        "links": {"self": state.url(&format!("identity/v3/projects/{}", d.id))},
    })
}

pub async fn list_projects(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    // Keystone: admins list every project, domain readers their domain's; a project member
    // is refused (it lists its own through /v3/auth/projects or /v3/users/{id}/projects).
    let mut f = name_filter(&q)?;
    if !ctx.is_admin() {
        let reader_of = ctx.domain.as_ref().filter(|_| ctx.has_role("reader")).map(|d| d.id.clone());
        match reader_of {
            Some(d) if f.domain_id.as_ref().is_none_or(|want| *want == d) => f.domain_id = Some(d),
            _ => return Err(ApiError::policy("identity:list_projects")),
        }
    }
    let tag_filter = TagFilter::from_query(&q);
    let out: Vec<Value> = if q.bool("is_domain")? == Some(true) {
        state
            .store
            .list_domains()
            .await?
            .iter()
            .filter(|d| f.name.as_ref().is_none_or(|n| *n == d.name))
            .filter(|d| f.enabled.is_none_or(|e| e == (d.enabled != 0)))
            // Domains carry no tags here.
            .filter(|_| tag_filter.matches(&[]))
            .map(|d| domain_as_project(&state, d))
            .collect()
    } else {
        state
            .store
            .list_projects(&f)
            .await?
            .iter()
            .filter(|p| tag_filter.matches(&stored_tags(&p.tags)))
            .map(|p| project_json(&state, p))
            .collect()
    };
    Ok(axum::Json(json!({"projects": out, "links": list_links(&state, "projects")})))
}

pub async fn get_project(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    let in_scope = ctx.project.as_ref().is_some_and(|(p, _)| p.id == id);
    if !ctx.is_admin() && !in_scope {
        // Keystone answers 403 here, not 404: project ids are not secret to it.
        return Err(ApiError::policy("identity:get_project"));
    }
    match state.store.get_project(&id).await {
        Ok(p) => Ok(axum::Json(json!({"project": project_json(&state, &p)}))),
        Err(crate::store::StoreError::NotFound(m)) => match state.store.get_domain(&id).await {
            Ok(d) => Ok(axum::Json(json!({"project": domain_as_project(&state, &d)}))),
            Err(_) => Err(ApiError::not_found(m)),
        },
        Err(e) => Err(e.into()),
    }
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
    let name = name_field("project/name", b.name.as_deref().unwrap_or_default(), SHORT_NAME)?.to_string();
    let tags = normalize_tags(b.tags.unwrap_or_default())?;
    if b.is_domain == Some(true) {
        // A project acting as a domain is a domain: stored and served as one.
        if b.parent_id.is_some() {
            return Err(ApiError::bad_request("A project acting as a domain cannot have a parent."));
        }
        let id = new_hex_id();
        let description = b.description.unwrap_or_default();
        state.store.create_domain_with(&id, &name, &description, b.enabled.unwrap_or(true)).await?;
        let d = state.store.get_domain(&id).await?;
        return Ok((StatusCode::CREATED, axum::Json(json!({"project": domain_as_project(&state, &d)}))));
    }
    // The parent is a project, or the domain itself (a top-level project).
    let parent = match &b.parent_id {
        Some(pid) => match state.store.get_project(pid).await {
            Ok(p) => Some(p),
            Err(crate::store::StoreError::NotFound(_)) if state.store.get_domain(pid).await.is_ok() => None,
            Err(crate::store::StoreError::NotFound(_)) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field 'project/parent_id': project {pid} does not exist."
                )));
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let domain_id = match (&b.domain_id, &parent, &b.parent_id) {
        (Some(d), _, _) => d.clone(),
        (None, Some(p), _) => p.domain_id.clone(),
        (None, None, Some(domain)) => domain.clone(),
        (None, None, None) => ctx.project.as_ref().map_or(DEFAULT_DOMAIN_ID.to_string(), |(p, _)| p.domain_id.clone()),
    };
    if let Some(p) = &parent
        && p.domain_id != domain_id
    {
        return Err(ApiError::bad_request("A project must be in the same domain as its parent."));
    }
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
        tags: serde_json::to_string(&tags).map_err(ApiError::internal)?,
        parent_id: parent.map(|p| p.id),
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
    let b = req.project;
    let mut p = match state.store.get_project(&id).await {
        Ok(p) => p,
        Err(crate::store::StoreError::NotFound(m)) => {
            // A project acting as a domain.
            if state.store.get_domain(&id).await.is_err() {
                return Err(ApiError::not_found(m));
            }
            let body = DomainBody { name: b.name, description: b.description, enabled: b.enabled };
            let d = apply_domain_update(&state, &id, body).await?;
            return Ok(axum::Json(json!({"project": domain_as_project(&state, &d)})));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(d) = b.domain_id.filter(|d| *d != p.domain_id) {
        return Err(ApiError::bad_request(format!("Update of `domain_id` is not allowed (to {d}).")));
    }
    if let Some(name) = b.name {
        p.name = name_field("project/name", &name, SHORT_NAME)?.to_string();
    }
    if let Some(d) = b.description {
        p.description = d;
    }
    if let Some(e) = b.enabled {
        p.enabled = flag(e);
    }
    // Checked before anything is written, so an invalid list leaves the project unchanged.
    let tags = b.tags.map(normalize_tags).transpose()?;
    state.store.update_project(&p).await?;
    if let Some(tags) = tags {
        let stored = set_tags(&state, p.clone(), tags).await?;
        p.tags = serde_json::to_string(&stored).map_err(ApiError::internal)?;
    }
    Ok(axum::Json(json!({"project": project_json(&state, &p)})))
}

pub async fn delete_project(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_project")?;
    if ctx.project.as_ref().is_some_and(|(p, _)| p.id == id) {
        return Err(ApiError::forbidden("You cannot delete the project your token is scoped to."));
    }
    match state.store.get_project(&id).await {
        Ok(_) => {}
        Err(crate::store::StoreError::NotFound(m)) => {
            if state.store.get_domain(&id).await.is_err() {
                return Err(ApiError::not_found(m));
            }
            remove_domain(&state, &id).await?;
            return Ok(StatusCode::NO_CONTENT);
        }
        Err(e) => return Err(e.into()),
    }
    if state.store.has_subprojects(&id).await? {
        return Err(ApiError::forbidden(format!(
            "Cannot delete project {id}: it is not a leaf in the hierarchy. Delete its subprojects first."
        )));
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
    // Attributes Keystone does not know come back as they were given.
    if let Ok(serde_json::Value::Object(extra)) = serde_json::from_str::<Value>(&u.extra) {
        for (k, val) in extra {
            v[k] = val;
        }
    }
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
    /// Keystone's fixed options are not kept; anything else is an extra attribute.
    #[serde(default)]
    #[allow(dead_code)]
    options: Option<Value>,
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
}

/// Merges extra attributes into the stored JSON object (`null` removes one).
fn merge_extra(stored: &str, changes: serde_json::Map<String, Value>) -> ApiResult<String> {
    let mut extra = match serde_json::from_str::<Value>(stored) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (k, v) in changes {
        if matches!(k.as_str(), "id" | "links" | "password_expires_at") {
            continue;
        }
        if v.is_null() {
            extra.remove(&k);
        } else {
            extra.insert(k, v);
        }
    }
    serde_json::to_string(&extra).map_err(ApiError::internal)
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
    // Keystone answers 404 for a user in a domain that does not exist.
    state.store.get_domain(&domain_id).await?;
    let password_hash = match b.password {
        Some(p) => Some(state.limits.hashing.hash(p).await?),
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
        extra: merge_extra("{}", b.extra)?,
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
    if let Some(d) = b.domain_id.filter(|d| *d != u.domain_id) {
        return Err(ApiError::bad_request(format!("Update of `domain_id` is not allowed (to {d}).")));
    }
    let mut revoke = false;
    if let Some(name) = b.name {
        u.name = non_empty("user/name", &name)?.to_string();
    }
    if let Some(p) = b.password {
        u.password_hash = Some(state.limits.hashing.hash(p).await?);
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
    u.extra = merge_extra(&u.extra, b.extra)?;
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
    // Keystone authenticates the original password as a login (lockout included).
    if !super::lockout::check_password(&state, &u, req.user.original_password).await? {
        return Err(ApiError::unauthorized("The request you have made requires authentication."));
    }
    non_empty("user/password", &req.user.password)?;
    u.password_hash = Some(state.limits.hashing.hash(req.user.password).await?);
    state.store.update_user(&u).await?;
    state.store.revoke_user_tokens(&u.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- roles ----

pub(super) fn role_json(state: &AppState, r: &Role) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "domain_id": r.domain_id,
        "description": r.description,
        "options": {},
        "links": {"self": state.url(&format!("identity/v3/roles/{}", r.id))},
    })
}

pub async fn list_roles(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_admin("identity:list_roles")?;
    let roles: Vec<Value> =
        state.store.list_roles(q.get("name"), q.get("domain_id")).await?.iter().map(|r| role_json(&state, r)).collect();
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
    let name = non_empty("role/name", req.role.name.as_deref().unwrap_or_default())?;
    if let Some(d) = &req.role.domain_id {
        state.store.get_domain(d).await?;
    }
    let id = new_hex_id();
    state.store.create_role_in(&id, name, req.role.description.as_deref(), req.role.domain_id.as_deref()).await?;
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
