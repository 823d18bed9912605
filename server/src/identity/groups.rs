//! Keystone groups: CRUD and membership. Roles granted to a group reach its members (see
//! `grants.rs` and `Store::effective_roles`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::DEFAULT_DOMAIN_ID;
use super::resources::{JsonResult, list_links, name_field, user_json};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::identity::Group;
use crate::store::new_hex_id;

fn group_json(state: &AppState, g: &Group) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "domain_id": g.domain_id,
        "description": g.description,
        "links": {"self": state.url(&format!("identity/v3/groups/{}", g.id))},
    })
}

#[derive(Deserialize)]
pub struct GroupReq {
    group: GroupBody,
}
#[derive(Deserialize)]
struct GroupBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain_id: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

pub async fn list_groups(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_admin("identity:list_groups")?;
    let groups: Vec<Value> = state
        .store
        .list_groups(q.get("domain_id"), q.get("name"))
        .await?
        .iter()
        .map(|g| group_json(&state, g))
        .collect();
    Ok(axum::Json(json!({"groups": groups, "links": list_links(&state, "groups")})))
}

pub async fn create_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(req): Json<GroupReq>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_group")?;
    let b = req.group;
    let name = name_field("group/name", b.name.as_deref().unwrap_or_default(), 64)?.to_string();
    let domain_id = b.domain_id.unwrap_or_else(|| DEFAULT_DOMAIN_ID.to_string());
    state.store.get_domain(&domain_id).await?;
    let g = Group { id: new_hex_id(), name, domain_id, description: b.description.unwrap_or_default() };
    state.store.create_group(&g).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"group": group_json(&state, &g)}))))
}

pub async fn get_group(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    ctx.require_admin("identity:get_group")?;
    let g = state.store.get_group(&id).await?;
    Ok(axum::Json(json!({"group": group_json(&state, &g)})))
}

pub async fn update_group(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<GroupReq>,
) -> JsonResult {
    ctx.require_admin("identity:update_group")?;
    let mut g = state.store.get_group(&id).await?;
    let b = req.group;
    if let Some(d) = b.domain_id.filter(|d| *d != g.domain_id) {
        return Err(ApiError::bad_request(format!("Update of `domain_id` is not allowed (to {d}).")));
    }
    if let Some(n) = b.name {
        g.name = name_field("group/name", &n, 64)?.to_string();
    }
    if let Some(d) = b.description {
        g.description = d;
    }
    state.store.update_group(&g).await?;
    Ok(axum::Json(json!({"group": group_json(&state, &g)})))
}

pub async fn delete_group(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_group")?;
    state.store.delete_group(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/groups/{id}/users`
pub async fn list_group_users(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    ctx.require_admin("identity:list_users_in_group")?;
    state.store.get_group(&id).await?;
    let users: Vec<Value> = state.store.group_users(&id).await?.iter().map(|u| user_json(&state, u)).collect();
    Ok(axum::Json(json!({"users": users, "links": list_links(&state, &format!("groups/{id}/users"))})))
}

/// `PUT /v3/groups/{gid}/users/{uid}`
pub async fn add_group_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((gid, uid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:add_user_to_group")?;
    state.store.get_group(&gid).await?;
    state.store.get_user(&uid).await?;
    state.store.add_group_member(&gid, &uid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `HEAD|GET /v3/groups/{gid}/users/{uid}`
pub async fn check_group_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((gid, uid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:check_user_in_group")?;
    state.store.get_group(&gid).await?;
    state.store.get_user(&uid).await?;
    if !state.store.is_group_member(&gid, &uid).await? {
        return Err(ApiError::not_found(format!("User '{uid}' not found in group '{gid}'.")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v3/groups/{gid}/users/{uid}`
pub async fn remove_group_user(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((gid, uid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:remove_user_from_group")?;
    state.store.get_group(&gid).await?;
    state.store.get_user(&uid).await?;
    state.store.remove_group_member(&gid, &uid).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/users/{id}/groups`
pub async fn list_user_groups(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    if !ctx.is_admin() && ctx.user.id != id {
        return Err(ApiError::policy("identity:list_groups_for_user"));
    }
    state.store.get_user(&id).await?;
    let groups: Vec<Value> = state
        .store
        .user_groups(&id)
        .await?
        .iter()
        .map(|g| {
            let mut v = group_json(&state, g);
            v["membership_expires_at"] = Value::Null;
            v
        })
        .collect();
    Ok(axum::Json(json!({"groups": groups, "links": list_links(&state, &format!("users/{id}/groups"))})))
}
