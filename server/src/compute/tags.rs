//! Server tags (2.26+): `/servers/{id}/tags[/{tag}]`, the tag filters of the server list and
//! the checks of tags given at create (2.52+), with Nova's limits and messages.
//!
//! Tags live in `instances.tags` as a JSON list in insertion order (what the server body shows
//! as it is); Nova's list is a set, so a tag is never stored twice.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiVersion;
use super::servers::visible;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::instances::Instance;

/// Nova's `MAX_TAG_COUNT` and `MAX_TAG_LENGTH`.
pub(crate) const MAX_TAGS: usize = 50;
pub(crate) const MAX_TAG_LENGTH: usize = 60;

/// Below 2.26 the routes do not exist (Nova answers 404).
fn require_version(v: ApiVersion) -> ApiResult<()> {
    if v.at_least(26) { Ok(()) } else { Err(ApiError::not_found("The resource could not be found.")) }
}

/// Why `tag` is not a valid tag (jsonschema's wording, as Nova embeds it), if it is not.
fn tag_problem(tag: &str) -> Option<String> {
    if tag.is_empty() {
        Some(format!("'{tag}' is too short"))
    } else if tag.chars().count() > MAX_TAG_LENGTH {
        Some(format!("'{tag}' is too long"))
    } else if tag.contains(['/', ',']) {
        Some(format!("'{tag}' does not match '^[^,/]*$'"))
    } else {
        None
    }
}

/// A list of tags from a request body (`field` names it in messages): strings, valid, at
/// most [`MAX_TAGS`]; duplicates dropped, order kept.
pub(crate) fn check_tags(field: &str, raw: &Value) -> ApiResult<Vec<String>> {
    let bad = |why: String| ApiError::bad_request(format!("Invalid input for field/attribute {field}. {why}"));
    let list = raw.as_array().ok_or_else(|| bad(format!("Value: {raw}. {raw} is not of type 'array'")))?;
    if list.len() > MAX_TAGS {
        return Err(bad(format!("Value: {raw}. {raw} is too long")));
    }
    let mut out: Vec<String> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let tag =
            item.as_str().ok_or_else(|| bad(format!("Value: {item}. {item} is not of type 'string' (item {i})")))?;
        if let Some(why) = tag_problem(tag) {
            return Err(bad(format!("Value: {tag}. {why}")));
        }
        if !out.iter().any(|t| t == tag) {
            out.push(tag.to_string());
        }
    }
    Ok(out)
}

pub(crate) fn tags_of(inst: &Instance) -> Vec<String> {
    serde_json::from_str(&inst.tags).unwrap_or_default()
}

/// Tags may change while the server is active, paused, suspended or stopped (Nova's
/// `_check_instance_in_valid_state`); `method` is the name Nova's 409 uses.
fn check_state(inst: &Instance, method: &str) -> ApiResult<()> {
    if matches!(inst.vm_state.as_str(), "active" | "paused" | "suspended" | "stopped") {
        return Ok(());
    }
    Err(ApiError::conflict(format!("Cannot '{method}' instance {} while it is in vm_state {}", inst.id, inst.vm_state)))
}

async fn store(state: &AppState, inst: &Instance, tags: &[String]) -> ApiResult<()> {
    state.store.set_instance_tags(&inst.id, &json!(tags).to_string()).await?;
    Ok(())
}

/// `GET /servers/{id}/tags`
pub async fn list(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    require_version(v)?;
    ctx.require_reader("os_compute_api:os-server-tags:index")?;
    let inst = visible(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"tags": tags_of(&inst)})))
}

/// `PUT /servers/{id}/tags`: replaces them all.
pub async fn replace(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<Value>> {
    require_version(v)?;
    ctx.require_member("os_compute_api:os-server-tags:update_all")?;
    let inst = visible(&state, &ctx, &id).await?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("Invalid input for field/attribute tags. The body must be an object"))?;
    if let Some(extra) = obj.keys().find(|k| *k != "tags") {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{extra}' was unexpected)")));
    }
    let raw = obj.get("tags").ok_or_else(|| ApiError::bad_request("'tags' is a required property"))?;
    let tags = check_tags("tags", raw)?;
    check_state(&inst, "update tags")?;
    store(&state, &inst, &tags).await?;
    Ok(axum::Json(json!({"tags": tags})))
}

/// `DELETE /servers/{id}/tags`: 204.
pub async fn clear(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    require_version(v)?;
    ctx.require_member("os_compute_api:os-server-tags:delete_all")?;
    let inst = visible(&state, &ctx, &id).await?;
    check_state(&inst, "delete tags")?;
    store(&state, &inst, &[]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /servers/{id}/tags/{tag}`: 204 when the server has it.
pub async fn show(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    require_version(v)?;
    ctx.require_reader("os_compute_api:os-server-tags:show")?;
    let inst = visible(&state, &ctx, &id).await?;
    if tags_of(&inst).contains(&tag) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("Server {id} has no tag '{tag}'")))
    }
}

/// `PUT /servers/{id}/tags/{tag}`: 201 with `Location` when added, 204 when already there.
pub async fn add(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<Response> {
    require_version(v)?;
    ctx.require_member("os_compute_api:os-server-tags:update")?;
    let inst = visible(&state, &ctx, &id).await?;
    check_state(&inst, "update tag")?;
    if let Some(why) = tag_problem(&tag) {
        return Err(ApiError::bad_request(format!(
            "Tag '{tag}' is invalid. It must be a non empty string without characters '/' and ','. \
             Validation error message: {why}"
        )));
    }
    let mut tags = tags_of(&inst);
    if tags.len() >= MAX_TAGS {
        return Err(ApiError::bad_request(format!("The number of tags exceeded the per-server limit {MAX_TAGS}")));
    }
    if tags.contains(&tag) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    tags.push(tag.clone());
    store(&state, &inst, &tags).await?;
    let mut resp = StatusCode::CREATED.into_response();
    let location = state.url(&format!("compute/v2.1/servers/{id}/tags/{tag}"));
    if let Ok(loc) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// `DELETE /servers/{id}/tags/{tag}`: 204.
pub async fn remove(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    require_version(v)?;
    ctx.require_member("os_compute_api:os-server-tags:delete")?;
    let inst = visible(&state, &ctx, &id).await?;
    check_state(&inst, "delete tag")?;
    let mut tags = tags_of(&inst);
    let before = tags.len();
    tags.retain(|t| *t != tag);
    if tags.len() == before {
        return Err(ApiError::not_found(format!("Instance {id} has no tag '{tag}'")));
    }
    store(&state, &inst, &tags).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The list filters on tags (2.26+): `tags` (all of), `tags-any`, `not-tags` (not all of),
/// `not-tags-any` (none of); each a comma-separated list.
#[derive(Debug, Default, Clone)]
pub(crate) struct TagFilter {
    all: Option<Vec<String>>,
    any: Option<Vec<String>>,
    not_all: Option<Vec<String>>,
    not_any: Option<Vec<String>>,
}

impl TagFilter {
    /// The filters of a list query, `None` when it has none (or the version predates them).
    pub(crate) fn from_query(q: &Query, v: ApiVersion) -> Option<TagFilter> {
        if !v.at_least(26) {
            return None;
        }
        let list = |key: &str| q.get(key).map(|s| s.split(',').map(str::to_string).collect::<Vec<_>>());
        let f = TagFilter {
            all: list("tags"),
            any: list("tags-any"),
            not_all: list("not-tags"),
            not_any: list("not-tags-any"),
        };
        (f.all.is_some() || f.any.is_some() || f.not_all.is_some() || f.not_any.is_some()).then_some(f)
    }

    pub(crate) fn matches(&self, inst: &Instance) -> bool {
        let tags = tags_of(inst);
        let has = |t: &String| tags.contains(t);
        self.all.as_ref().is_none_or(|w| w.iter().all(has))
            && self.any.as_ref().is_none_or(|w| w.iter().any(has))
            && self.not_all.as_ref().is_none_or(|w| !w.iter().all(has))
            && self.not_any.as_ref().is_none_or(|w| !w.iter().any(has))
    }
}

/// The `locked` list filter (2.73+): `Some(wanted)`, or a 400 for a value that is no boolean.
pub(crate) fn locked_filter(q: &Query, v: ApiVersion) -> ApiResult<Option<bool>> {
    match q.get("locked") {
        Some(s) if v.at_least(73) => crate::extract::parse_bool(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input received: Unrecognized value '{s}', acceptable values are: '0', '1', 'f', 'false', \
                 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
            ))
        }),
        _ => Ok(None),
    }
}
