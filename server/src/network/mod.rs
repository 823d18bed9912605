//! Neutron v2.0: networks, subnets, ports with IPAM, quotas.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::state::AppState;

/// Routes under `/network`.
pub fn router() -> Router<AppState> {
    Router::new().route("/", get(versions))
}

async fn versions(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(
        json!({"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": state.url("network/v2.0/")}]}]}),
    )
}
