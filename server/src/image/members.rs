//! `/v2/images/{id}/members`: sharing a `shared` image with other projects.
//!
//! The owner (or an admin) adds and removes members; the member itself (or an admin) accepts or
//! rejects. The owner sees every member, a member only its own membership.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{MAX_MEMBERS, caller_project, isotime, require_owner, visible_image};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;
use crate::store::image::{Image, Member, member_not_found};

type JsonResult = ApiResult<axum::Json<Value>>;

const STATUSES: [&str; 3] = ["pending", "accepted", "rejected"];

fn member_json(m: &Member) -> Value {
    json!({
        "image_id": m.image_id,
        "member_id": m.member,
        "status": m.status,
        "created_at": isotime(&m.created_at),
        "updated_at": isotime(&m.updated_at),
        "schema": "/v2/schemas/member",
    })
}

/// A visible image that can have members (404 when invisible, 403 when not `shared`).
async fn shared_image(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Image> {
    let img = visible_image(state, ctx, id).await?;
    if img.visibility != "shared" {
        return Err(ApiError::forbidden(format!(
            "Error fetching members of image {id}: Only shared images have members."
        )));
    }
    Ok(img)
}

fn sees_all_members(ctx: &Ctx, img: &Image) -> bool {
    ctx.is_admin() || (img.owner.is_some() && img.owner.as_deref() == caller_project(ctx))
}

/// The membership `member_id` as the caller may see it (owners: any; members: their own).
async fn lookup(state: &AppState, ctx: &Ctx, img: &Image, member_id: &str) -> ApiResult<Member> {
    let not_found = || ApiError::not_found(member_not_found(&img.id, member_id));
    if !sees_all_members(ctx, img) && caller_project(ctx) != Some(member_id) {
        return Err(not_found());
    }
    state.store.image_member(&img.id, member_id).await?.ok_or_else(not_found)
}

/// `GET /v2/images/{id}/members`.
pub async fn list(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    let img = shared_image(&state, &ctx, &id).await?;
    let mut members = state.store.list_image_members(&id).await?;
    if !sees_all_members(&ctx, &img) {
        members.retain(|m| Some(m.member.as_str()) == caller_project(&ctx));
    }
    Ok(axum::Json(json!({
        "members": members.iter().map(member_json).collect::<Vec<_>>(),
        "schema": "/v2/schemas/members",
    })))
}

/// `POST /v2/images/{id}/members` `{"member": PROJECT}`: the new membership, pending.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let member = match body.get("member") {
        None => return Err(ApiError::bad_request("Member to be added not specified")),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= 255 => s.clone(),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(ApiError::bad_request("Member can't be empty"));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!("Invalid member: {other}; a project id string is expected.")));
        }
    };
    let img = shared_image(&state, &ctx, &id).await?;
    require_owner(&ctx, &img, "add_member")
        .map_err(|_| ApiError::forbidden(format!("Not allowed to create members for image {id}.")))?;
    if state.store.count_image_members(&id).await? >= MAX_MEMBERS {
        return Err(ApiError::too_large(format!(
            "Image member limit exceeded for image {id}: The limit has been exceeded on the number of allowed image members for this image. Attempted: {}, Maximum: {MAX_MEMBERS}",
            MAX_MEMBERS + 1
        )));
    }
    let m = state.store.add_image_member(&id, &member).await?;
    Ok(axum::Json(member_json(&m)))
}

/// `GET /v2/images/{id}/members/{member_id}`.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, member_id)): Path<(String, String)>,
) -> JsonResult {
    // Glance turns "not shared" into 404 here to avoid leaking information.
    let img = shared_image(&state, &ctx, &id)
        .await
        .map_err(|e| if e.status == StatusCode::FORBIDDEN { ApiError::not_found(e.message) } else { e })?;
    let m = lookup(&state, &ctx, &img, &member_id).await?;
    Ok(axum::Json(member_json(&m)))
}

/// `PUT /v2/images/{id}/members/{member_id}` `{"status": ...}`: only the member (or an admin).
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, member_id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    let status = body.get("status").ok_or_else(|| ApiError::bad_request("Status not specified"))?;
    let img = shared_image(&state, &ctx, &id).await?;
    lookup(&state, &ctx, &img, &member_id).await?;
    let is_member = caller_project(&ctx) == Some(member_id.as_str()) && ctx.has_role("member");
    if !(ctx.is_admin() || is_member) {
        return Err(ApiError::forbidden(format!("Not allowed to update members for image {id}.")));
    }
    let status = match status.as_str() {
        Some(s) if STATUSES.contains(&s) => s,
        _ => {
            return Err(ApiError::bad_request(
                "Incorrect request: Status must be \"pending\", \"accepted\" or \"rejected\".",
            ));
        }
    };
    let m = state.store.set_image_member_status(&id, &member_id, status).await?;
    Ok(axum::Json(member_json(&m)))
}

/// `DELETE /v2/images/{id}/members/{member_id}`: the owner (or an admin) only; 204.
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, member_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let img = shared_image(&state, &ctx, &id).await?;
    lookup(&state, &ctx, &img, &member_id).await?;
    require_owner(&ctx, &img, "delete_member").map_err(|e| {
        if e.status == StatusCode::FORBIDDEN {
            ApiError::forbidden(format!("Not allowed to delete members for image {id}."))
        } else {
            e
        }
    })?;
    state.store.remove_image_member(&id, &member_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
