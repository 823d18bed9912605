//! `os-server-external-events` (admin): the events Neutron and Cinder send Nova about its
//! servers (`network-vif-plugged`, `volume-extended`, …), answered per event as Nova does:
//! 200 for a server on a host, 404 for an unknown server, 422 for one that has no host yet,
//! 400 for an event that needs a tag and has none; 207 overall when any event failed.
//!
//! Meridian's network and block storage services run in this process and act on the agents
//! directly (port filters, volume attach and extend), so an accepted event has nothing left
//! to trigger: it is logged, as Nova's API logs it before casting it to the compute host.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiVersion;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;

/// Event names by the microversion that added them.
const NAMES: [(&str, u32); 8] = [
    ("network-changed", 0),
    ("network-vif-plugged", 0),
    ("network-vif-unplugged", 0),
    ("network-vif-deleted", 0),
    ("volume-extended", 51),
    ("power-update", 76),
    ("accelerator-request-bound", 82),
    ("volume-reimaged", 93),
];

/// Events Nova drops unless they carry a tag.
const TAG_REQUIRED: [&str; 3] = ["volume-extended", "power-update", "accelerator-request-bound"];

fn invalid(why: String) -> ApiError {
    ApiError::bad_request(format!("Invalid input for field/attribute events. {why}"))
}

/// Checks one event as Nova's schema does at `v`.
fn validate(v: ApiVersion, e: &Value) -> ApiResult<()> {
    let Some(o) = e.as_object() else { return Err(invalid(format!("Value: {e}. {e} is not of type 'object'"))) };
    if let Some(extra) = o.keys().find(|k| !matches!(k.as_str(), "name" | "server_uuid" | "status" | "tag")) {
        return Err(invalid(format!("Additional properties are not allowed ('{extra}' was unexpected)")));
    }
    for key in ["name", "server_uuid"] {
        if !o.contains_key(key) {
            return Err(invalid(format!("'{key}' is a required property")));
        }
    }
    let name = o.get("name").and_then(Value::as_str).unwrap_or("");
    if !NAMES.iter().any(|(n, since)| *n == name && v.at_least(*since)) {
        return Err(invalid(format!("Value: {}. '{name}' is not one of the known event names", o["name"])));
    }
    if let Some(status) = o.get("status")
        && !matches!(status.as_str(), Some("failed" | "completed" | "in-progress"))
    {
        return Err(invalid(format!("Value: {status}. {status} is not one of ['failed', 'completed', 'in-progress']")));
    }
    if let Some(tag) = o.get("tag")
        && tag.as_str().is_none_or(|t| t.chars().count() > 255)
    {
        return Err(invalid(format!("Value: {tag}. {tag} is not a string of at most 255 characters")));
    }
    if !o.get("server_uuid").is_some_and(Value::is_string) {
        return Err(invalid(format!("Value: {}. It is not of type 'string'", o["server_uuid"])));
    }
    Ok(())
}

/// `POST /os-server-external-events`.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    ctx.require_admin("os_compute_api:os-server-external-events:create")?;
    let events = body
        .get("events")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid("'events' must be a non-empty list".into()))?;
    for e in events {
        validate(v, e)?;
    }
    let mut status = StatusCode::OK;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let mut e = e.clone();
        let name = e["name"].as_str().unwrap_or("").to_string();
        let server = e["server_uuid"].as_str().unwrap_or("").to_string();
        let inst = match state.store.get_instance(&server).await {
            Ok(i) if i.deleted == 0 => Some(i),
            _ => None,
        };
        let code = match inst {
            None => 404,
            Some(_) if TAG_REQUIRED.contains(&name.as_str()) && e.get("tag").is_none() => 400,
            Some(i) if i.host_id.is_some() => {
                tracing::info!(instance = %server, event = %name, tag = ?e.get("tag"), "external event accepted");
                200
            }
            Some(_) => 422,
        };
        if code != 200 {
            status = StatusCode::MULTI_STATUS;
        }
        e["status"] = json!(if code == 200 { "completed" } else { "failed" });
        e["code"] = json!(code);
        out.push(e);
    }
    Ok((status, axum::Json(json!({"events": out}))).into_response())
}
