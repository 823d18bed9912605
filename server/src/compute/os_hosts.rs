//! `os-hosts` (Nova's deprecated host API, microversions 2.1–2.42): the hosts of every
//! service, a compute host's resources per project, and the host update and power actions.
//!
//! Nova's libvirt driver implements none of enable/disable, maintenance mode or host power
//! actions (its compute manager raises `NotImplementedError`, which the API answers 501); the
//! agents here have no such operations either, so this module answers as a libvirt Nova does.
//! Enabling or disabling a compute host is `os-services`' job (`PUT /os-services/{id}`).

use axum::Extension;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::ApiVersion;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::hosts::Host;

type JsonResult = ApiResult<axum::Json<Value>>;

/// The last microversion that has the API (2.43 removed it).
const LAST: u32 = 42;

fn check_version(v: ApiVersion) -> ApiResult<()> {
    if v.at_least(LAST + 1) { Err(ApiError::not_found("The resource could not be found.")) } else { Ok(()) }
}

/// `GET /os-hosts[?zone=]`: every enabled service but the API's own, with its topic and zone.
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    check_version(v)?;
    ctx.require_admin("os_compute_api:os-hosts:list")?;
    let mut hosts = Vec::new();
    // The server's replicas run the scheduler and the conductor (the `internal` zone, as Nova).
    for hb in state.store.service_heartbeats().await? {
        let Some(topic) = hb.service.strip_prefix("nova-") else { continue };
        if matches!(topic, "osapi_compute" | "metadata" | "api") {
            continue;
        }
        hosts.push(json!({"host_name": hb.replica, "service": topic, "zone": "internal"}));
    }
    for h in state.store.list_hosts().await? {
        if h.enabled != 0 {
            hosts.push(json!({"host_name": h.name, "service": "compute", "zone": h.availability_zone}));
        }
    }
    // Nova filters on the zone only when one is given (`?zone=` alone lists everything).
    if let Some(zone) = q.get("zone").filter(|z| !z.is_empty()) {
        hosts.retain(|h| h["zone"] == zone);
    }
    Ok(axum::Json(json!({"hosts": hosts})))
}

async fn compute_host(state: &AppState, name: &str) -> ApiResult<Host> {
    let hosts = state.store.list_hosts().await?;
    hosts
        .into_iter()
        .find(|h| h.name == name)
        .ok_or_else(|| ApiError::not_found(format!("Compute host {name} could not be found.")))
}

/// A host's resource line (`{"resource": {...}}`).
fn resource(host: &str, project: &str, cpu: i64, memory_mb: i64, disk_gb: i64) -> Value {
    json!({"resource": {"host": host, "project": project, "cpu": cpu, "memory_mb": memory_mb, "disk_gb": disk_gb}})
}

/// `GET /os-hosts/{host}`: the host's totals, what is used now, the sum of its instances'
/// flavors, then the same sum per project.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(name): Path<String>,
) -> JsonResult {
    check_version(v)?;
    ctx.require_admin("os_compute_api:os-hosts:show")?;
    let h = compute_host(&state, &name).await?;
    let f = crate::store::instances::InstanceFilter { host_id: Some(h.id.clone()), ..Default::default() };
    let instances = state.store.list_instances(&f).await?;
    let mut lines = vec![
        resource(&h.name, "(total)", h.vcpus, h.memory_mb, h.disk_gb),
        resource(&h.name, "(used_now)", h.vcpus_used, h.memory_mb_used, h.disk_gb_used),
    ];
    let mut total = (0, 0, 0);
    // Projects in the order their first instance is met, as Nova's dict keeps them.
    let mut per_project: Vec<(String, (i64, i64, i64))> = Vec::new();
    for inst in &instances {
        let flavor: Value = serde_json::from_str(&inst.flavor).unwrap_or_default();
        let n = |k: &str| flavor[k].as_i64().unwrap_or(0);
        let used = (n("vcpus"), n("ram"), n("disk") + n("ephemeral"));
        total = (total.0 + used.0, total.1 + used.1, total.2 + used.2);
        match per_project.iter_mut().find(|(p, _)| *p == inst.project_id) {
            Some((_, sum)) => *sum = (sum.0 + used.0, sum.1 + used.1, sum.2 + used.2),
            None => per_project.push((inst.project_id.clone(), used)),
        }
    }
    lines.push(resource(&h.name, "(used_max)", total.0, total.1, total.2));
    for (project, (cpu, mem, disk)) in per_project {
        lines.push(resource(&h.name, &project, cpu, mem, disk));
    }
    Ok(axum::Json(json!({"host": lines})))
}

/// Reads `enable`/`disable` for `field` (Nova's schema: those two words, any case, spaces
/// around allowed).
fn enable_word(body: &Map<String, Value>, field: &str) -> ApiResult<Option<bool>> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "enable" => Ok(Some(true)),
            "disable" => Ok(Some(false)),
            _ => Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {field}. Value: {s}. '{s}' is not one of ['enable', 'disable']"
            ))),
        },
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {field}. Value: {other}. {other} is not of type 'string'"
        ))),
    }
}

fn not_supported() -> ApiError {
    ApiError::new(axum::http::StatusCode::NOT_IMPLEMENTED, "Action is not supported.")
}

/// `PUT /os-hosts/{host}`: `status` and/or `maintenance_mode` (`enable`/`disable`). The body is
/// validated as Nova's schema does; the host must exist; then, as with Nova's libvirt driver,
/// neither change is supported (501).
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    check_version(v)?;
    ctx.require_admin("os_compute_api:os-hosts:update")?;
    let Some(o) = body.as_object() else {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute body. Value: {body}. {body} is not of type 'object'"
        )));
    };
    if let Some(extra) = o.keys().find(|k| *k != "status" && *k != "maintenance_mode") {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute body. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let status = enable_word(o, "status")?;
    let maintenance = enable_word(o, "maintenance_mode")?;
    if status.is_none() && maintenance.is_none() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute body. Value: {}. {} does not have enough properties",
        ));
    }
    compute_host(&state, &name).await?;
    Err(not_supported())
}

/// `GET /os-hosts/{host}/{startup|shutdown|reboot}`: host power actions, which Nova's libvirt
/// driver does not implement (501) once the host is known (404 before that).
pub async fn power_action(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((name, action)): Path<(String, String)>,
) -> JsonResult {
    check_version(v)?;
    let policy = match action.as_str() {
        "startup" => "start",
        "shutdown" => "shutdown",
        "reboot" => "reboot",
        _ => return Err(ApiError::not_found("The resource could not be found.")),
    };
    ctx.require_admin(&format!("os_compute_api:os-hosts:{policy}"))?;
    compute_host(&state, &name).await?;
    Err(not_supported())
}
