//! `/v2.0/{networks,subnets,ports}/{id}/tags[/{tag}]` (standard-attr-tag). The resource kind
//! is a const parameter so one set of handlers serves the three collections.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::api::{self, JsonResult, deny, invalid};
use super::{networks, ports, subnets};
use crate::auth::Ctx;
use crate::error::ApiResult;
use crate::extract::Json;
use crate::state::AppState;
use crate::store::network::{NetError, Tagged};

pub const NETWORK: u8 = 0;
pub const SUBNET: u8 = 1;
pub const PORT: u8 = 2;
const MAX_TAG_LEN: usize = 255;

fn kind(k: u8) -> Tagged {
    match k {
        NETWORK => Tagged::Network,
        SUBNET => Tagged::Subnet,
        _ => Tagged::Port,
    }
}

/// The resource's current tags; for writes, checks the caller may change it.
async fn load(state: &AppState, ctx: &Ctx, k: Tagged, id: &str, write: bool) -> ApiResult<Vec<String>> {
    ctx.require_reader("get_tags").map_err(|_| deny("get_tags"))?;
    let (tags, owners) = match k {
        Tagged::Network => {
            let n = networks::load_visible(state, ctx, id).await?;
            (n.tag_list(), vec![n.project_id])
        }
        Tagged::Subnet => {
            let (s, net_owner) = subnets::load_visible(state, ctx, id).await?;
            (s.tag_list(), vec![s.project_id, net_owner])
        }
        Tagged::Port => {
            let (p, net) = ports::load_visible(state, ctx, id).await?;
            (p.tag_list(), vec![p.project_id, net.project_id])
        }
    };
    if write {
        let refs: Vec<&str> = owners.iter().map(String::as_str).collect();
        api::check_write(ctx, &refs, "update_tags")?;
    }
    Ok(tags)
}

fn check_tag(tag: &str) -> ApiResult<()> {
    if tag.is_empty() || tag.chars().count() > MAX_TAG_LEN {
        return Err(invalid("tags", format!("'{tag}' is not a valid tag: 1-{MAX_TAG_LEN} characters are required")));
    }
    Ok(())
}

fn normalise(mut tags: Vec<String>) -> Vec<String> {
    tags.sort();
    tags.dedup();
    tags
}

fn tag_not_found(k: Tagged, id: &str, tag: &str) -> NetError {
    let res = match k {
        Tagged::Network => "networks",
        Tagged::Subnet => "subnets",
        Tagged::Port => "ports",
    };
    NetError::not_found("TagNotFound", format!("Tag {tag} could not be found for {res} {id}."))
}

pub async fn list<const K: u8>(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    let tags = load(&state, &ctx, kind(K), &id, false).await?;
    Ok(axum::Json(json!({"tags": tags})))
}

/// `PUT …/tags` with `{"tags": [...]}`: replaces them all.
pub async fn replace<const K: u8>(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    load(&state, &ctx, kind(K), &id, true).await?;
    let m = body.as_object().cloned().unwrap_or_default();
    let tags = api::str_list(&m, "tags")?.ok_or_else(|| api::bad("Invalid input for tags: a list is required."))?;
    for t in &tags {
        check_tag(t)?;
    }
    let tags = normalise(tags);
    state.store.set_tags(kind(K), &id, &tags).await?;
    Ok(axum::Json(json!({"tags": tags})))
}

pub async fn clear<const K: u8>(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    load(&state, &ctx, kind(K), &id, true).await?;
    state.store.set_tags(kind(K), &id, &[]).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn check<const K: u8>(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let tags = load(&state, &ctx, kind(K), &id, false).await?;
    if tags.contains(&tag) { Ok(StatusCode::NO_CONTENT) } else { Err(tag_not_found(kind(K), &id, &tag).into()) }
}

pub async fn add<const K: u8>(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    check_tag(&tag)?;
    let mut tags = load(&state, &ctx, kind(K), &id, true).await?;
    if !tags.contains(&tag) {
        tags.push(tag);
        state.store.set_tags(kind(K), &id, &normalise(tags)).await?;
    }
    Ok(StatusCode::CREATED)
}

pub async fn remove<const K: u8>(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let mut tags = load(&state, &ctx, kind(K), &id, true).await?;
    let before = tags.len();
    tags.retain(|t| *t != tag);
    if tags.len() == before {
        return Err(tag_not_found(kind(K), &id, &tag).into());
    }
    state.store.set_tags(kind(K), &id, &tags).await?;
    Ok(StatusCode::NO_CONTENT)
}
