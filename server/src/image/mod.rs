//! Glance v2: images with streamed upload/download, and members.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;

/// Routes under `/image`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(versions))
        .route("/versions", get(versions))
}

async fn versions(State(state): State<AppState>) -> impl IntoResponse {
    let href = state.url("image/v2/");
    let values: Vec<_> = ["2.16", "2.15", "2.9", "2.0"]
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": format!("v{v}"), "status": if i == 0 { "CURRENT" } else { "SUPPORTED" }, "links": [{"rel": "self", "href": href}]}))
        .collect();
    (
        StatusCode::MULTIPLE_CHOICES,
        axum::Json(json!({"versions": values})),
    )
}
