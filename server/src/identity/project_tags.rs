//! Keystone project tags: `/v3/projects/{id}/tags[/{tag}]`, their validation and policy, and
//! the `tags`, `tags-any`, `not-tags` and `not-tags-any` filters of `GET /v3/projects`.
//!
//! A project's tags are its `tags` column (a JSON array of strings, there since migration
//! 0001), so a project and its tags are one row and are read together. Every change is a
//! read-modify-write closed by a compare-and-set ([`Store::replace_project_tags`]), which
//! keeps concurrent edits (and the 80-tag limit) correct on SQLite and PostgreSQL alike.
//!
//! [`Store::replace_project_tags`]: crate::store::Store::replace_project_tags

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::identity::Project;

/// Keystone's schema (`project_tags_update`): at most 80 tags on a project...
const MAX_TAGS: usize = 80;
/// ...each of 1 to 255 characters (`_project_tag_name_properties`).
const MAX_TAG_CHARS: usize = 255;
/// Compare-and-set rounds before giving up on a project whose tags keep changing under us.
const CAS_ATTEMPTS: usize = 8;

/// The stored tags. The column only ever holds what this module (or project create/update,
/// through [`normalize_tags`]) wrote; an unreadable value is shown as no tags rather than
/// failing every read of the project.
pub(super) fn stored_tags(column: &str) -> Vec<String> {
    serde_json::from_str(column).unwrap_or_default()
}

/// One tag as Keystone's schema allows it: 1 to 255 characters without '/' or ',' (the API-WG
/// tags guideline: both are ambiguous in URLs and in the comma-separated list filters).
fn check_tag(tag: &str) -> ApiResult<()> {
    let chars = tag.chars().count();
    if chars == 0 || chars > MAX_TAG_CHARS {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field 'tags': a tag must be 1 to {MAX_TAG_CHARS} characters."
        )));
    }
    if tag.contains(['/', ',']) {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field 'tags': '{tag}' contains '/' or ',', which a tag may not."
        )));
    }
    Ok(())
}

/// A whole tag list as Keystone stores it: each tag stripped of surrounding whitespace (its
/// resource manager does that), then valid, at most 80 of them, and no tag twice.
pub(super) fn normalize_tags(tags: Vec<String>) -> ApiResult<Vec<String>> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field 'tags': a project has at most {MAX_TAGS} tags ({} given).",
            tags.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = tag.trim().to_string();
        check_tag(&tag)?;
        if out.contains(&tag) {
            return Err(ApiError::bad_request(format!("Invalid input for field 'tags': '{tag}' is given twice.")));
        }
        out.push(tag);
    }
    Ok(out)
}

/// Keystone's `identity:list_project_tags` and `identity:get_project_tag`: admins, readers of
/// the project's domain, and anyone with a role on the project itself (reader or member too).
fn may_read(ctx: &Ctx, project: Option<&Project>) -> bool {
    ctx.is_admin()
        || project.is_some_and(|p| {
            ctx.project.as_ref().is_some_and(|(scope, _)| scope.id == p.id)
                || (ctx.has_role("reader") && ctx.domain.as_ref().is_some_and(|d| d.id == p.domain_id))
        })
}

/// Keystone's `identity:update_project_tags`, `create_project_tag`, `delete_project_tag(s)`:
/// admins, including admins of the project's domain (a project admin is an admin here).
/// Members and readers may not change tags.
fn may_write(ctx: &Ctx, project: Option<&Project>) -> bool {
    ctx.is_admin()
        || project.is_some_and(|p| ctx.has_role("admin") && ctx.domain.as_ref().is_some_and(|d| d.id == p.domain_id))
}

/// The project, once `allowed` lets the caller act on it. Keystone judges policy first (with
/// an empty target when the project does not exist), so a caller without rights gets 403
/// whether the project exists or not, and only an allowed caller learns it is missing (404).
async fn authorized(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    action: &str,
    allowed: fn(&Ctx, Option<&Project>) -> bool,
) -> ApiResult<Project> {
    let project = match state.store.get_project(id).await {
        Ok(p) => Some(p),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if !allowed(ctx, project.as_ref()) {
        return Err(ApiError::policy(action));
    }
    project.ok_or_else(|| ApiError::not_found(format!("Could not find project: {id}.")))
}

/// Applies `change` to the project's tags and stores the result if nobody changed them in
/// between; otherwise re-reads them and applies `change` again (so a concurrent add is never
/// lost and the limit is checked against what is really stored).
async fn change_tags(
    state: &AppState,
    project: Project,
    change: impl Fn(Vec<String>) -> ApiResult<Vec<String>>,
) -> ApiResult<Vec<String>> {
    let mut current = project.tags;
    for _ in 0..CAS_ATTEMPTS {
        let new = change(stored_tags(&current))?;
        let new_column = serde_json::to_string(&new).map_err(ApiError::internal)?;
        if state.store.replace_project_tags(&project.id, &current, &new_column).await? {
            return Ok(new);
        }
        current = state.store.get_project(&project.id).await?.tags;
    }
    Err(ApiError::conflict(format!("The tags of project {} kept changing; try again.", project.id)))
}

/// Keystone's tag collection body: the tags and a link to themselves.
fn tags_body(state: &AppState, id: &str, tags: &[String]) -> Value {
    json!({"tags": tags, "links": {"self": state.url(&format!("identity/v3/projects/{id}/tags"))}})
}

/// `GET|HEAD /v3/projects/{id}/tags`
pub async fn list(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<axum::Json<Value>> {
    let p = authorized(&state, &ctx, &id, "identity:list_project_tags", may_read).await?;
    Ok(axum::Json(tags_body(&state, &id, &stored_tags(&p.tags))))
}

#[derive(Deserialize)]
pub struct TagsReq {
    tags: Vec<String>,
}

/// `PUT /v3/projects/{id}/tags`: replaces every tag; answers the new list.
pub async fn replace(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<TagsReq>,
) -> ApiResult<axum::Json<Value>> {
    let p = authorized(&state, &ctx, &id, "identity:update_project_tags", may_write).await?;
    let tags = normalize_tags(req.tags)?;
    let stored = change_tags(&state, p, |_| Ok(tags.clone())).await?;
    Ok(axum::Json(tags_body(&state, &id, &stored)))
}

/// Replaces a project's tags with an already normalized list (`PATCH /v3/projects/{id}`).
pub(super) async fn set_tags(state: &AppState, project: Project, tags: Vec<String>) -> ApiResult<Vec<String>> {
    change_tags(state, project, |_| Ok(tags.clone())).await
}

/// `DELETE /v3/projects/{id}/tags`: removes every tag.
pub async fn clear(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let p = authorized(&state, &ctx, &id, "identity:delete_project_tags", may_write).await?;
    change_tags(&state, p, |_| Ok(Vec::new())).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn tag_not_found(tag: &str) -> ApiError {
    ApiError::not_found(format!("Could not find project tag: {tag}."))
}

/// `GET|HEAD /v3/projects/{id}/tags/{tag}`: 204 if the project has the tag, 404 if not.
pub async fn check(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let p = authorized(&state, &ctx, &id, "identity:get_project_tag", may_read).await?;
    if stored_tags(&p.tags).contains(&tag) { Ok(StatusCode::NO_CONTENT) } else { Err(tag_not_found(&tag)) }
}

/// `PUT /v3/projects/{id}/tags/{tag}`: adds one tag; 201 with its URL and no body. As in
/// Keystone, the resulting list must pass the list checks, so a tag already there or an 81st
/// tag is a 400.
pub async fn add(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let p = authorized(&state, &ctx, &id, "identity:create_project_tag", may_write).await?;
    check_tag(&tag)?;
    change_tags(&state, p, |mut tags| {
        tags.push(tag.clone());
        normalize_tags(tags)
    })
    .await?;
    let url = state.url(&format!("identity/v3/projects/{id}/tags/{}", path_segment(tag.trim())));
    let mut resp = StatusCode::CREATED.into_response();
    // The URL is percent-encoded ASCII, so it always makes a header value.
    if let Ok(location) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

/// `DELETE /v3/projects/{id}/tags/{tag}`: 204, or 404 if the project does not have the tag.
pub async fn remove(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let p = authorized(&state, &ctx, &id, "identity:delete_project_tag", may_write).await?;
    change_tags(&state, p, |mut tags| {
        let at = tags.iter().position(|t| *t == tag).ok_or_else(|| tag_not_found(&tag))?;
        tags.remove(at);
        Ok(tags)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Percent-encodes a tag for use as one URL path segment (tags may hold spaces, '?', '#',
/// non-ASCII text...): everything but RFC 3986's unreserved characters is encoded.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The tag filters of `GET /v3/projects`, each a comma-separated list as Keystone splits it:
/// `tags` (has all of them), `tags-any` (has one of them), `not-tags` (does not have all of
/// them) and `not-tags-any` (has none of them). Several filters must all hold.
pub(super) struct TagFilter {
    all: Option<Vec<String>>,
    any: Option<Vec<String>>,
    not_all: Option<Vec<String>>,
    not_any: Option<Vec<String>>,
}

impl TagFilter {
    pub(super) fn from_query(q: &Query) -> TagFilter {
        let list = |key: &str| q.get(key).map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>());
        TagFilter { all: list("tags"), any: list("tags-any"), not_all: list("not-tags"), not_any: list("not-tags-any") }
    }

    pub(super) fn matches(&self, tags: &[String]) -> bool {
        let has = |t: &String| tags.contains(t);
        self.all.as_ref().is_none_or(|want| want.iter().all(has))
            && self.any.as_ref().is_none_or(|want| want.iter().any(has))
            && self.not_all.as_ref().is_none_or(|want| !want.iter().all(has))
            && self.not_any.as_ref().is_none_or(|want| !want.iter().any(has))
    }
}
