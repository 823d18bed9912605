//! Cinder v3 (block storage): version discovery, microversions, volumes and their actions,
//! volume types, quotas, limits and availability zones; [`work`] places volumes on hosts, hands
//! their work to agents and applies what the agents report.
//!
//! Every path carries the project id (`/volume/v3/{project_id}/…`), as Cinder's catalog URL
//! does; like Cinder, the project acted for is the token's, not the path's.

mod attachments;
mod extensions;
pub(crate) mod from_image;
pub mod mv;
pub(crate) mod quotas;
pub(crate) mod snapshots;
mod types;
mod upload;
mod volumes;
pub mod work;

#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::AppState;

/// The microversions served. Clients act on the maximum advertised, so every response key and
/// behaviour change up to it is served for what exists here (`mv` lists them); API families that
/// do not exist (groups, messages, backups, clusters…) answer 404 at any version.
pub const MIN_VERSION: (u32, u32) = (3, 0);
pub const MAX_VERSION: (u32, u32) = (3, 48);

/// Routes under `/volume`.
pub fn router() -> Router<AppState> {
    let project = Router::new()
        .route("/volumes", get(volumes::list).post(volumes::create))
        .route("/volumes/detail", get(volumes::list_detail))
        .route("/volumes/summary", mv::gated_router(mv::VOLUME_SUMMARY, get(volumes::summary)))
        .route("/attachments", mv::gated_router(mv::NEW_ATTACH, get(attachments::list).post(attachments::create)))
        .route("/attachments/detail", mv::gated_router(mv::NEW_ATTACH, get(attachments::list_detail)))
        .route(
            "/attachments/{id}",
            mv::gated_router(
                mv::NEW_ATTACH,
                get(attachments::show).put(attachments::update).delete(attachments::delete),
            ),
        )
        .route("/attachments/{id}/action", mv::gated_router(mv::NEW_ATTACH_COMPLETION, post(attachments::action)))
        .route("/resource_filters", mv::gated_router(mv::RESOURCE_FILTERS_API, get(extensions::resource_filters)))
        .route("/extensions", get(extensions::list))
        .route("/volumes/{id}", get(volumes::show).put(volumes::update).delete(volumes::delete))
        .route("/volumes/{id}/action", post(volumes::action))
        .route(
            "/volumes/{id}/metadata",
            get(volumes::show_metadata).post(volumes::merge_metadata).put(volumes::replace_metadata),
        )
        .route(
            "/volumes/{id}/metadata/{key}",
            get(volumes::show_metadata_item).put(volumes::put_metadata_item).delete(volumes::delete_metadata_item),
        )
        .merge(snapshot_routes())
        .route("/types", get(types::list).post(types::create))
        .route("/types/default", get(types::show_default))
        .route("/types/{id}", get(types::show).put(types::update).delete(types::delete))
        .route("/types/{id}/extra_specs", get(types::list_specs).post(types::create_specs))
        .route(
            "/types/{id}/extra_specs/{key}",
            get(types::show_spec).put(types::update_spec).delete(types::delete_spec),
        )
        .route("/os-quota-sets/{project_id}", get(quotas::show).put(quotas::update).delete(quotas::reset))
        .route("/os-quota-sets/{project_id}/defaults", get(quotas::defaults))
        .route("/limits", get(quotas::limits))
        .route("/os-availability-zone", get(quotas::availability_zones));
    let v3 = Router::new().route("/", get(version)).nest("/{project_id}", project).layer(from_fn(negotiate));
    Router::new().route("/", get(versions)).nest("/v3", v3)
}

/// `/snapshots` (their own module).
fn snapshot_routes() -> Router<AppState> {
    Router::new()
        .route("/snapshots", get(snapshots::list).post(snapshots::create))
        .route("/snapshots/detail", get(snapshots::list_detail))
        .route("/snapshots/{id}", get(snapshots::show).put(snapshots::update).delete(snapshots::delete))
        .route("/snapshots/{id}/action", post(snapshots::action))
        .route(
            "/snapshots/{id}/metadata",
            get(snapshots::show_metadata).post(snapshots::merge_metadata).put(snapshots::replace_metadata),
        )
        .route(
            "/snapshots/{id}/metadata/{key}",
            get(snapshots::show_metadata_item)
                .put(snapshots::put_metadata_item)
                .delete(snapshots::delete_metadata_item),
        )
}

fn version_doc(state: &AppState) -> Value {
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": format!("{}.{}", MAX_VERSION.0, MAX_VERSION.1),
        "min_version": format!("{}.{}", MIN_VERSION.0, MIN_VERSION.1),
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": state.url("volume/v3/")},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    })
}

/// `GET /volume`: 300 Multiple Choices with the one version, as Cinder answers its root.
async fn versions(State(state): State<AppState>) -> Response {
    (StatusCode::MULTIPLE_CHOICES, axum::Json(json!({"versions": [version_doc(&state)]}))).into_response()
}

/// `GET /volume/v3`.
async fn version(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({"versions": [version_doc(&state)]}))
}

/// The microversion a request asks for: `OpenStack-API-Version: volume 3.x` (or the legacy
/// `X-OpenStack-Volume-API-Version`), `latest`, or the minimum when absent. 406 outside the
/// served range, 400 when malformed (Cinder's `InvalidAPIVersionString`).
pub fn requested(headers: &HeaderMap) -> Result<(u32, u32), ApiError> {
    let modern = headers.get_all("openstack-api-version").iter().find_map(|v| {
        v.to_str().ok()?.split(',').find_map(|part| {
            let mut words = part.split_whitespace();
            match (words.next(), words.next()) {
                (Some(service), Some(version)) if service.eq_ignore_ascii_case("volume") => Some(version.to_string()),
                _ => None,
            }
        })
    });
    let legacy =
        || headers.get("x-openstack-volume-api-version").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string());
    let Some(text) = modern.or_else(legacy) else {
        return Ok(MIN_VERSION);
    };
    if text.eq_ignore_ascii_case("latest") {
        return Ok(MAX_VERSION);
    }
    let v = text.split_once('.').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))).ok_or_else(
        || {
            ApiError::bad_request(format!(
                "API Version String {text} is of invalid format. Must be of format MajorNum.MinorNum."
            ))
        },
    )?;
    if v < MIN_VERSION || v > MAX_VERSION {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "Version {}.{} is not supported by the API. Minimum is {}.{} and maximum is {}.{}.",
                v.0, v.1, MIN_VERSION.0, MIN_VERSION.1, MAX_VERSION.0, MAX_VERSION.1
            ),
        ));
    }
    Ok(v)
}

/// Middleware: rejects unsupported versions and echoes the chosen one.
async fn negotiate(req: Request, next: Next) -> Response {
    let (major, minor) = match requested(req.headers()) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let mut req = req;
    req.extensions_mut().insert(mv::Mv(major, minor));
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("volume {major}.{minor}")) {
        h.insert("openstack-api-version", v);
    }
    h.append("vary", HeaderValue::from_static("OpenStack-API-Version"));
    resp
}

/// Deletes a volume as `DELETE /volumes/{id}` does (refused while attached or busy).
pub(crate) async fn start_delete(state: &AppState, v: &crate::store::volume::Volume) -> crate::error::ApiResult<()> {
    volumes::start_delete(state, v, false).await
}
