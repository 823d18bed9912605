//! Nova's image proxy (`/images`, below microversion 2.36): the Glance images of our image
//! store in Nova's shape, their deletion and their metadata (Glance's free-form properties).
//! From 2.36 the proxy is gone and every route answers 404, as Nova does.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::ApiVersion;
use super::conductor::nova_time;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::image::{Image, ImageQuery};

type JsonResult = ApiResult<axum::Json<Value>>;

/// Nova's `maxImageMeta`.
const MAX_IMAGE_META: usize = 128;

fn proxy_available(v: ApiVersion) -> ApiResult<()> {
    if v.at_least(36) { Err(ApiError::not_found("The resource could not be found.")) } else { Ok(()) }
}

/// Glance status → Nova status and progress (Nova's `_get_status` / `_get_progress`).
fn nova_status(glance: &str) -> (&'static str, i64) {
    match glance {
        "active" => ("ACTIVE", 100),
        "queued" => ("SAVING", 25),
        "saving" | "importing" | "uploading" => ("SAVING", 50),
        "deleted" | "pending_delete" => ("DELETED", 0),
        "killed" => ("ERROR", 0),
        _ => ("UNKNOWN", 0),
    }
}

/// Glance's properties as Nova's `metadata`: every value a string.
fn metadata_of(img: &Image) -> Map<String, Value> {
    img.properties_map()
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, Value::String(text))
        })
        .collect()
}

fn image_links(state: &AppState, id: &str) -> Value {
    let mut l = super::links(state, &format!("images/{id}"));
    if let Some(list) = l.as_array_mut() {
        list.push(json!({
            "rel": "alternate",
            "type": "application/vnd.openstack.image",
            "href": state.url(&format!("image/images/{id}")),
        }));
    }
    l
}

fn image_json(state: &AppState, img: &Image, detail: bool) -> Value {
    let name = img.name.clone().unwrap_or_default();
    if !detail {
        return json!({"id": img.id, "name": name, "links": image_links(state, &img.id)});
    }
    let (status, progress) = nova_status(&img.status);
    let metadata = metadata_of(img);
    let mut o = json!({
        "id": img.id,
        "name": name,
        "minRam": img.min_ram,
        "minDisk": img.min_disk,
        "metadata": metadata,
        "created": nova_time(&img.created_at),
        "updated": nova_time(&img.updated_at),
        "status": status,
        "progress": progress,
        "links": image_links(state, &img.id),
        "OS-EXT-IMG-SIZE:size": img.size,
    });
    // A snapshot names the server it was taken from.
    if let Some(server) = metadata.get("instance_uuid").and_then(Value::as_str) {
        o["server"] = json!({"id": server, "links": super::links(state, &format!("servers/{server}"))});
    }
    o
}

/// An image the caller may see, or Nova's 404.
async fn visible_image(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Image> {
    let missing = || ApiError::not_found("Image not found.");
    let img = match state.store.get_image(id).await {
        Ok(i) => i,
        Err(StoreError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let project = ctx.project_id().ok();
    if !state.store.image_visible_to(&img, project, ctx.is_admin()).await? {
        return Err(missing());
    }
    Ok(img)
}

/// Glance lets an image's owner (or an admin) change or delete it.
fn require_owner(ctx: &Ctx, img: &Image) -> ApiResult<()> {
    if ctx.is_admin() || (img.owner.is_some() && img.owner.as_deref() == ctx.project_id().ok()) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("You are not authorized to change image {}.", img.id)))
    }
}

async fn list_inner(state: AppState, ctx: Ctx, v: ApiVersion, q: Query, detail: bool) -> JsonResult {
    proxy_available(v)?;
    ctx.require_reader("os_compute_api:images:index")?;
    let query = ImageQuery {
        project_id: ctx.project_id().ok().map(str::to_string),
        is_admin: ctx.is_admin(),
        limit: usize::MAX,
        ..Default::default()
    };
    let changes_since = match q.get("changes-since") {
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .or_else(|_| chrono::DateTime::parse_from_rfc3339(&format!("{s}Z")))
                .map_err(|_| ApiError::bad_request(format!("Invalid changes-since value: {s}")))?
                .with_timezone(&chrono::Utc),
        ),
        None => None,
    };
    let changes_since = changes_since.map(crate::store::fmt_time);
    let int = |key: &str| -> ApiResult<Option<i64>> {
        q.get(key)
            .map(|s| s.parse::<i64>().map_err(|_| ApiError::bad_request(format!("Invalid {key} filter [{s}]"))))
            .transpose()
    };
    let (min_ram, min_disk) = (int("minRam")?, int("minDisk")?);
    let server = q.get("server").map(|s| s.trim_end_matches('/').rsplit('/').next().unwrap_or(s).to_string());
    let mut images: Vec<Image> = state
        .store
        .list_images(&query)
        .await?
        .images
        .into_iter()
        .filter(|i| q.get("name").is_none_or(|n| i.name.as_deref() == Some(n)))
        .filter(|i| q.get("status").is_none_or(|s| nova_status(&i.status).0.eq_ignore_ascii_case(s)))
        .filter(|i| changes_since.as_ref().is_none_or(|c| i.updated_at >= *c))
        .filter(|i| min_ram.is_none_or(|m| i.min_ram >= m))
        .filter(|i| min_disk.is_none_or(|m| i.min_disk >= m))
        .filter(|i| q.get("type").is_none_or(|t| metadata_of(i).get("image_type").and_then(Value::as_str) == Some(t)))
        .filter(|i| {
            server.as_deref().is_none_or(|s| metadata_of(i).get("instance_uuid").and_then(Value::as_str) == Some(s))
        })
        .collect();
    let page = super::flavors::paginate(&mut images, &q, |i| &i.id)?;
    let mut body = json!({"images": images.iter().map(|i| image_json(&state, i, detail)).collect::<Vec<_>>()});
    let path = if detail { "images/detail" } else { "images" };
    if let Some(l) = super::next_links(&state, path, page, images.len(), images.last().map(|i| i.id.as_str())) {
        body["images_links"] = l;
    }
    Ok(axum::Json(body))
}

/// `GET /images`
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    list_inner(state, ctx, v, q, false).await
}

/// `GET /images/detail`
pub async fn list_detail(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    list_inner(state, ctx, v, q, true).await
}

/// `GET /images/{id}`
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    proxy_available(v)?;
    ctx.require_reader("os_compute_api:images:show")?;
    let img = visible_image(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"image": image_json(&state, &img, true)})))
}

/// `DELETE /images/{id}`: 204; the image and its data go, as through Glance.
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    proxy_available(v)?;
    ctx.require_member("os_compute_api:images:delete")?;
    let img = visible_image(&state, &ctx, &id).await?;
    require_owner(&ctx, &img)?;
    if img.protected != 0 {
        return Err(ApiError::forbidden(format!("Image {id} is protected and cannot be deleted.")));
    }
    state.store.delete_image(&id).await.map_err(|e| match e {
        StoreError::NotFound(_) => ApiError::not_found("Image not found."),
        other => other.into(),
    })?;
    crate::image::data::remove_data(&state, &id).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- metadata ----

/// `{"metadata": {...}}` (or `{"meta": {...}}` for one item) with string values.
fn metadata_body(body: &Value, key: &str) -> ApiResult<Map<String, Value>> {
    let m = body
        .get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::bad_request(format!("Invalid input for field/attribute {key}.")))?;
    for (k, v) in m {
        if k.is_empty() || k.len() > 255 || !v.is_string() || v.as_str().is_some_and(|s| s.len() > 255) {
            return Err(ApiError::bad_request(format!("Invalid input for field/attribute {key}. Value: {k}.")));
        }
    }
    Ok(m.clone())
}

/// Stores `metadata` as the image's whole property set (reserved Glance keys are columns,
/// never properties, so nothing else changes).
async fn write_metadata(state: &AppState, ctx: &Ctx, img: &Image, metadata: Map<String, Value>) -> ApiResult<()> {
    require_owner(ctx, img)?;
    if metadata.len() > MAX_IMAGE_META {
        return Err(ApiError::forbidden("Quota exceeded for metadata_items: the limit is 128 image metadata items."));
    }
    let updated =
        Image { properties: Value::Object(metadata).to_string(), updated_at: crate::store::now(), ..img.clone() };
    state.store.update_image(&updated).await?;
    Ok(())
}

async fn metadata_image(state: &AppState, ctx: &Ctx, v: ApiVersion, id: &str) -> ApiResult<Image> {
    proxy_available(v)?;
    ctx.require_reader("os_compute_api:image-metadata")?;
    visible_image(state, ctx, id).await
}

/// `GET /images/{id}/metadata`
pub async fn list_metadata(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    let img = metadata_image(&state, &ctx, v, &id).await?;
    Ok(axum::Json(json!({"metadata": metadata_of(&img)})))
}

/// `POST /images/{id}/metadata`: merges.
pub async fn merge_metadata(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let img = metadata_image(&state, &ctx, v, &id).await?;
    let mut m = metadata_of(&img);
    m.extend(metadata_body(&body, "metadata")?);
    write_metadata(&state, &ctx, &img, m.clone()).await?;
    Ok(axum::Json(json!({"metadata": m})))
}

/// `PUT /images/{id}/metadata`: replaces.
pub async fn replace_metadata(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let img = metadata_image(&state, &ctx, v, &id).await?;
    let m = metadata_body(&body, "metadata")?;
    write_metadata(&state, &ctx, &img, m.clone()).await?;
    Ok(axum::Json(json!({"metadata": m})))
}

/// `GET /images/{id}/metadata/{key}`
pub async fn show_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, key)): Path<(String, String)>,
) -> JsonResult {
    let img = metadata_image(&state, &ctx, v, &id).await?;
    let value = metadata_of(&img)
        .remove(&key)
        .ok_or_else(|| ApiError::not_found(format!("Image metadata key {key} not found")))?;
    Ok(axum::Json(json!({"meta": {key: value}})))
}

/// `PUT /images/{id}/metadata/{key}`: one item; the body's key must be the URL's.
pub async fn put_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, key)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    let img = metadata_image(&state, &ctx, v, &id).await?;
    let item = metadata_body(&body, "meta")?;
    if item.len() != 1 || !item.contains_key(&key) {
        return Err(ApiError::bad_request(if item.len() == 1 {
            "Request body and URI mismatch"
        } else {
            "Request body contains too many items"
        }));
    }
    let mut m = metadata_of(&img);
    m.extend(item.clone());
    write_metadata(&state, &ctx, &img, m).await?;
    Ok(axum::Json(json!({"meta": item})))
}

/// `DELETE /images/{id}/metadata/{key}`: 204.
pub async fn delete_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let img = metadata_image(&state, &ctx, v, &id).await?;
    let mut m = metadata_of(&img);
    if m.remove(&key).is_none() {
        return Err(ApiError::not_found(format!("Image metadata key {key} not found")));
    }
    write_metadata(&state, &ctx, &img, m).await?;
    Ok(StatusCode::NO_CONTENT)
}
