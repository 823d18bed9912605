//! Glance v2: images with streamed upload/download, and members.
//!
//! - [`images`]: create/list/show/update (JSON patch)/delete, tags, deactivate/reactivate;
//! - [`data`]: `PUT`/`GET /v2/images/{id}/file`, streamed to and from `{data_dir}/images/{id}`;
//! - [`members`]: sharing (`shared` images only);
//! - [`schemas`]: the JSON schemas clients fetch;
//! - `/v2/info/import`: the (empty) list of import methods.
//!
//! Policy follows Glance's secure-RBAC defaults: readers read what they can see, members of the
//! owning project write, admins do everything; an image the caller cannot see is a 404.

pub(crate) mod data;
mod images;
mod members;
mod schemas;
#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::image::Image;
use crate::store::{StoreError, parse_time};

/// Routes under `/image`.
pub fn router() -> Router<AppState> {
    let v2 = Router::new()
        .route("/images", get(images::list).post(images::create))
        .route("/images/{id}", get(images::show).patch(images::update).delete(images::delete))
        .route("/images/{id}/file", get(data::download).put(data::upload))
        .route("/images/{id}/tasks", get(images::tasks))
        .route("/images/{id}/actions/deactivate", post(images::deactivate))
        .route("/images/{id}/actions/reactivate", post(images::reactivate))
        .route("/images/{id}/tags/{tag}", put(images::add_tag).delete(images::remove_tag))
        .route("/images/{id}/members", get(members::list).post(members::create))
        .route("/images/{id}/members/{member_id}", get(members::show).put(members::update).delete(members::delete))
        .route("/schemas/image", get(schemas::image))
        .route("/schemas/images", get(schemas::images))
        .route("/schemas/member", get(schemas::member))
        .route("/schemas/members", get(schemas::members))
        .route("/info/import", get(import_info))
        .layer(axum::middleware::from_fn(exact_paths));
    Router::new().route("/", get(versions)).route("/versions", get(versions)).nest("/v2", v2)
}

async fn versions(State(state): State<AppState>) -> impl IntoResponse {
    let href = state.url("image/v2/");
    let values: Vec<_> = ["2.16", "2.15", "2.9", "2.0"]
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": format!("v{v}"), "status": if i == 0 { "CURRENT" } else { "SUPPORTED" }, "links": [{"rel": "self", "href": href}]}))
        .collect();
    (StatusCode::MULTIPLE_CHOICES, axum::Json(json!({"versions": values})))
}

/// Glance matches its v2 routes exactly: a path with a trailing slash (`/v2/images/`, which
/// clients send for an empty image id) is no route, a 404, not the listing it would be once
/// the slash is dropped.
async fn exact_paths(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    if req.extensions().get::<crate::TrailingSlash>().is_some() {
        return ApiError::not_found("The resource could not be found.").into_response();
    }
    next.run(req).await
}

/// `GET /v2/info/import`: the interoperable import methods. Meridian has none (images are
/// uploaded with `PUT /v2/images/{id}/file`), like a Glance with `enabled_import_methods = []`.
async fn import_info(_ctx: Ctx) -> axum::Json<Value> {
    axum::Json(json!({"import-methods": {"description": "Import methods available.", "type": "array", "value": []}}))
}

/// Glance's accepted formats (its default `[image_format]` options).
pub const DISK_FORMATS: [&str; 11] =
    ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"];
pub const CONTAINER_FORMATS: [&str; 8] = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"];
pub const VISIBILITIES: [&str; 4] = ["community", "public", "private", "shared"];
pub const STATUSES: [&str; 9] =
    ["queued", "saving", "active", "killed", "deleted", "uploading", "importing", "pending_delete", "deactivated"];

/// Glance's default quotas per image.
pub const MAX_TAGS: usize = 128;
pub const MAX_PROPERTIES: usize = 128;
pub const MAX_MEMBERS: i64 = 128;

/// Glance's policy refusal.
pub(crate) fn denied(action: &str) -> ApiError {
    ApiError::forbidden(format!("You are not authorized to complete {action} action."))
}

/// Reading needs any role on the project (reader, member or admin).
pub(crate) fn require_reader(ctx: &Ctx, action: &str) -> ApiResult<()> {
    if ctx.is_admin() || ctx.has_role("reader") || ctx.has_role("member") { Ok(()) } else { Err(denied(action)) }
}

fn caller_project(ctx: &Ctx) -> Option<&str> {
    ctx.project.as_ref().map(|(p, _)| p.id.as_str())
}

/// Admins, or members of the owning project.
pub(crate) fn require_owner(ctx: &Ctx, img: &Image, action: &str) -> ApiResult<()> {
    if ctx.is_admin() {
        return Ok(());
    }
    let owns = img.owner.is_some() && img.owner.as_deref() == caller_project(ctx);
    if owns && ctx.has_role("member") { Ok(()) } else { Err(denied(action)) }
}

/// An image the caller may see (reader role and Glance's visibility rules), else 404.
pub(crate) async fn visible_image(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Image> {
    require_reader(ctx, "get_image")?;
    let not_found = || ApiError::not_found(format!("No image found with ID {id}"));
    let img = match state.store.get_image(id).await {
        Ok(img) => img,
        Err(StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if state.store.image_visible_to(&img, caller_project(ctx), ctx.is_admin()).await? {
        Ok(img)
    } else {
        Err(not_found())
    }
}

/// `2016-06-29T16:13:07Z`, Glance's `isotime`.
pub(crate) fn isotime(stored: &str) -> String {
    parse_time(stored).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_else(|| stored.to_string())
}

/// The image as Glance renders it: free-form properties flattened beside the base attributes.
pub(crate) fn image_json(img: &Image) -> Value {
    let mut o = img.properties_map();
    let base = json!({
        "id": img.id,
        "name": img.name,
        "status": img.status,
        "visibility": img.visibility,
        "protected": img.protected != 0,
        "os_hidden": img.os_hidden != 0,
        "checksum": img.checksum,
        "os_hash_algo": img.os_hash_algo,
        "os_hash_value": img.os_hash_value,
        "owner": img.owner,
        "size": img.size,
        "virtual_size": img.virtual_size,
        "min_ram": img.min_ram,
        "min_disk": img.min_disk,
        "disk_format": img.disk_format,
        "container_format": img.container_format,
        "created_at": isotime(&img.created_at),
        "updated_at": isotime(&img.updated_at),
        "tags": img.tags,
        "self": format!("/v2/images/{}", img.id),
        "file": format!("/v2/images/{}/file", img.id),
        "schema": "/v2/schemas/image",
    });
    if let Value::Object(base) = base {
        o.extend(base);
    }
    Value::Object(o)
}

/// Python's `repr` of a JSON value, as jsonschema's messages show it.
pub(crate) fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => format!("'{s}'"),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => {
            format!("{{{}}}", o.iter().map(|(k, v)| format!("'{k}': {}", py_repr(v))).collect::<Vec<_>>().join(", "))
        }
    }
}
