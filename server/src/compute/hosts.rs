//! Admin views of the compute hosts: `os-hypervisors` and `os-services`, plus
//! `os-instance-actions` and the instance state timeline.

use axum::Extension;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::ApiVersion;
use super::conductor::{self, nova_time};
use super::servers::{visible, visible_or_deleted};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::hosts::Host;

type JsonResult = ApiResult<axum::Json<Value>>;

fn host_ref(v: ApiVersion, h: &Host) -> Value {
    if v.at_least(53) { json!(h.id) } else { json!(h.num) }
}

async fn running_vms(state: &AppState, h: &Host) -> ApiResult<i64> {
    let f = crate::store::instances::InstanceFilter { host_id: Some(h.id.clone()), ..Default::default() };
    Ok(state.store.list_instances(&f).await?.len() as i64)
}

fn hypervisor_summary(state: &AppState, v: ApiVersion, h: &Host) -> Value {
    let up = conductor::host_up(state, h);
    json!({
        "id": host_ref(v, h),
        "hypervisor_hostname": h.name,
        "state": if up { "up" } else { "down" },
        "status": if h.enabled != 0 { "enabled" } else { "disabled" },
    })
}

async fn hypervisor_detail(state: &AppState, v: ApiVersion, h: &Host) -> ApiResult<Value> {
    let mut o = hypervisor_summary(state, v, h);
    // Agents report capacity already minus their reservations.
    let (vcpus, mem, disk) = (h.vcpus, h.memory_mb, h.disk_gb);
    let extra = json!({
        "hypervisor_type": h.hypervisor_type,
        "hypervisor_version": h.hypervisor_version,
        "host_ip": h.host_ip,
        "vcpus": vcpus,
        "memory_mb": mem,
        "local_gb": disk,
        "vcpus_used": h.vcpus_used,
        "memory_mb_used": h.memory_mb_used,
        "local_gb_used": h.disk_gb_used,
        "free_ram_mb": mem - h.memory_mb_used,
        "free_disk_gb": disk - h.disk_gb_used,
        "disk_available_least": disk - h.disk_gb_used,
        "current_workload": 0,
        "running_vms": running_vms(state, h).await?,
        "cpu_info": cpu_info(v, h),
        "service": {"host": h.name, "id": host_ref(v, h), "disabled_reason": h.disabled_reason},
    });
    if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    Ok(o)
}

/// What we know of the host's CPU, in the libvirt driver's shape: a JSON string before 2.28,
/// an object from 2.28.
fn cpu_info(v: ApiVersion, h: &Host) -> Value {
    let info = json!({"arch": h.cpu_arch, "vendor": "", "model": "", "topology": {}, "features": []});
    if v.at_least(28) { info } else { json!(info.to_string()) }
}

/// `GET /os-hypervisors/statistics`: the sums over every host (Nova's deprecated summary).
pub async fn hypervisor_statistics(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_admin("os_compute_api:os-hypervisors:statistics")?;
    let hosts = state.store.list_hosts().await?;
    let sum = |f: fn(&Host) -> i64| hosts.iter().map(f).sum::<i64>();
    let mut running = 0;
    for h in &hosts {
        running += running_vms(&state, h).await?;
    }
    let (disk, disk_used) = (sum(|h| h.disk_gb), sum(|h| h.disk_gb_used));
    let (mem, mem_used) = (sum(|h| h.memory_mb), sum(|h| h.memory_mb_used));
    Ok(axum::Json(json!({"hypervisor_statistics": {
        "count": hosts.len(),
        "current_workload": 0,
        "disk_available_least": disk - disk_used,
        "free_disk_gb": disk - disk_used,
        "free_ram_mb": mem - mem_used,
        "local_gb": disk,
        "local_gb_used": disk_used,
        "memory_mb": mem,
        "memory_mb_used": mem_used,
        "running_vms": running,
        "vcpus": sum(|h| h.vcpus),
        "vcpus_used": sum(|h| h.vcpus_used),
    }})))
}

/// `GET /os-hypervisors/{id}/uptime`: the host's `uptime` line as its agent last reported it.
pub async fn hypervisor_uptime(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-hypervisors:uptime")?;
    let h = find_host(&state, &id).await?;
    let uptime = h.uptime.clone().filter(|_| conductor::host_up(&state, &h)).ok_or_else(|| {
        // Nova's answer when the compute host cannot tell (down, or a driver without uptime).
        ApiError::new(axum::http::StatusCode::NOT_IMPLEMENTED, "Virt driver does not implement uptime function.")
    })?;
    let mut o = hypervisor_summary(&state, v, &h);
    o["uptime"] = json!(uptime);
    Ok(axum::Json(json!({"hypervisor": o})))
}

/// Hosts whose name contains `pattern`; 404 (Nova's wording) when none does.
async fn matching_hosts(state: &AppState, pattern: &str) -> ApiResult<Vec<Host>> {
    let hosts: Vec<Host> = state.store.list_hosts().await?.into_iter().filter(|h| h.name.contains(pattern)).collect();
    if hosts.is_empty() {
        return Err(ApiError::not_found(format!("No hypervisor matching '{pattern}' could be found.")));
    }
    Ok(hosts)
}

/// Before 2.53 only (then replaced by `hypervisor_hostname_pattern` and `with_servers`).
fn before_2_53(v: ApiVersion) -> ApiResult<()> {
    if v.at_least(53) { Err(ApiError::not_found("The resource could not be found.")) } else { Ok(()) }
}

/// `GET /os-hypervisors/{pattern}/search` (before 2.53).
pub async fn search_hypervisors(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(pattern): Path<String>,
) -> JsonResult {
    before_2_53(v)?;
    ctx.require_admin("os_compute_api:os-hypervisors:search")?;
    let list: Vec<Value> =
        matching_hosts(&state, &pattern).await?.iter().map(|h| hypervisor_summary(&state, v, h)).collect();
    Ok(axum::Json(json!({"hypervisors": list})))
}

/// `GET /os-hypervisors/{pattern}/servers` (before 2.53): matching hosts with their servers.
pub async fn hypervisor_servers(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(pattern): Path<String>,
) -> JsonResult {
    before_2_53(v)?;
    ctx.require_admin("os_compute_api:os-hypervisors:servers")?;
    let mut list = Vec::new();
    for h in matching_hosts(&state, &pattern).await? {
        let mut o = hypervisor_summary(&state, v, &h);
        let f = crate::store::instances::InstanceFilter { host_id: Some(h.id.clone()), ..Default::default() };
        let servers: Vec<Value> = state
            .store
            .list_instances(&f)
            .await?
            .iter()
            .map(|i| json!({"uuid": i.id, "name": format!("meridian-{}", i.id)}))
            .collect();
        // Nova leaves the key out for a host without servers.
        if !servers.is_empty() {
            o["servers"] = json!(servers);
        }
        list.push(o);
    }
    Ok(axum::Json(json!({"hypervisors": list})))
}

async fn find_host(state: &AppState, id: &str) -> ApiResult<Host> {
    for h in state.store.list_hosts().await? {
        if h.id == id || h.num.to_string() == id {
            return Ok(h);
        }
    }
    Err(ApiError::not_found(format!("Hypervisor with ID {id} could not be found.")))
}

pub async fn list_hypervisors(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-hypervisors:list")?;
    let pattern = q.get("hypervisor_hostname_pattern");
    let list: Vec<Value> = state
        .store
        .list_hosts()
        .await?
        .iter()
        .filter(|h| pattern.is_none_or(|p| h.name.contains(p)))
        .map(|h| hypervisor_summary(&state, v, h))
        .collect();
    Ok(axum::Json(json!({"hypervisors": list})))
}

pub async fn list_hypervisors_detail(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-hypervisors:list-detail")?;
    let mut list = Vec::new();
    for h in state.store.list_hosts().await? {
        list.push(hypervisor_detail(&state, v, &h).await?);
    }
    Ok(axum::Json(json!({"hypervisors": list})))
}

pub async fn show_hypervisor(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-hypervisors:show")?;
    let h = find_host(&state, &id).await?;
    Ok(axum::Json(json!({"hypervisor": hypervisor_detail(&state, v, &h).await?})))
}

/// `GET /os-services`: one `nova-compute` per agent host, plus `nova-scheduler` and
/// `nova-conductor` per server replica from its supervised conductor loop's heartbeats
/// (`supervisor.rs`), down when the last one is older than `host_down_after_secs`.
pub async fn list_services(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-services:list")?;
    let mut out = Vec::new();
    for hb in state.store.service_heartbeats().await? {
        if !hb.service.starts_with("nova-") {
            continue;
        }
        let mut s = json!({
            "id": if v.at_least(53) { json!(hb.id) } else { json!(hb.num) },
            "binary": hb.service, "host": hb.replica, "zone": "internal", "status": "enabled",
            "state": if service_up(&state, &hb.updated_at) { "up" } else { "down" },
            "updated_at": nova_time(&hb.updated_at), "disabled_reason": null,
        });
        if v.at_least(11) {
            s["forced_down"] = json!(false);
        }
        out.push(s);
    }
    for h in state.store.list_hosts().await? {
        out.push(compute_service_json(&state, v, &h));
    }
    let out: Vec<Value> = out
        .into_iter()
        .filter(|s| q.get("host").is_none_or(|h| s["host"] == h))
        .filter(|s| q.get("binary").is_none_or(|b| s["binary"] == b))
        .collect();
    Ok(axum::Json(json!({"services": out})))
}

/// `PUT /os-services/{id}` (2.53+): enable/disable a compute host, force it down.
pub async fn update_service(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-services:update")?;
    if !v.at_least(53) {
        return Err(ApiError::not_found("Use microversion 2.53 or later to update a service by id."));
    }
    let h = state.store.get_host(&id).await.map_err(|_| ApiError::not_found(format!("Service {id} not found.")))?;
    if let Some(status) = body.get("status") {
        let enabled = match status.as_str() {
            Some("enabled") => true,
            Some("disabled") => false,
            _ => {
                return Err(ApiError::bad_request(
                    "Invalid input for field/attribute status. Value must be 'enabled' or 'disabled'",
                ));
            }
        };
        let reason = body.get("disabled_reason").and_then(Value::as_str);
        state.store.set_host_enabled(&h.id, enabled, if enabled { None } else { reason }).await?;
    }
    if let Some(fd) = body.get("forced_down") {
        let down =
            fd.as_bool().ok_or_else(|| ApiError::bad_request("Invalid input for field/attribute forced_down."))?;
        state.store.set_host_forced_down(&h.id, down).await?;
    }
    let h = state.store.get_host(&id).await?;
    Ok(axum::Json(json!({"service": compute_service_json(&state, v, &h)})))
}

/// Whether a server loop's last heartbeat is recent enough for its service to count as up.
pub(crate) fn service_up(state: &AppState, updated_at: &str) -> bool {
    let limit = chrono::Duration::seconds(i64::try_from(state.cfg.compute.host_down_after_secs).unwrap_or(i64::MAX));
    crate::store::parse_time(updated_at).is_some_and(|t| chrono::Utc::now() - t <= limit)
}

/// One agent host as a `nova-compute` service.
fn compute_service_json(state: &AppState, v: ApiVersion, h: &Host) -> Value {
    let mut s = json!({
        "id": host_ref(v, h),
        "binary": "nova-compute",
        "host": h.name,
        "zone": h.availability_zone,
        "status": if h.enabled != 0 { "enabled" } else { "disabled" },
        "state": if conductor::host_up(state, h) { "up" } else { "down" },
        "updated_at": nova_time(&h.last_heartbeat),
        "disabled_reason": h.disabled_reason,
    });
    if v.at_least(11) {
        s["forced_down"] = json!(h.forced_down != 0);
    }
    s
}

// ---- instance actions ----

fn action_json(v: ApiVersion, a: &crate::store::instances::InstanceAction) -> Value {
    let mut o = json!({
        "action": a.action,
        "instance_uuid": a.instance_id,
        "message": a.message,
        "project_id": a.project_id,
        "request_id": a.request_id,
        "start_time": a.start_time.trim_end_matches('Z'),
        "user_id": a.user_id,
    });
    if v.at_least(58) {
        o["updated_at"] = json!(a.updated_at.trim_end_matches('Z'));
    }
    o
}

/// The instance whose actions are asked for: from 2.21 a deleted one too (Nova reads deleted
/// instances there, so the `delete` action stays visible).
async fn action_instance(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    id: &str,
) -> ApiResult<crate::store::instances::Instance> {
    if v.at_least(21) { visible_or_deleted(state, ctx, id).await } else { visible(state, ctx, id).await }
}

pub async fn list_actions(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    ctx.require_reader("os_compute_api:os-instance-actions:list")?;
    let inst = action_instance(&state, &ctx, v, &id).await?;
    let list: Vec<Value> = state.store.list_actions(&inst.id).await?.iter().map(|a| action_json(v, a)).collect();
    Ok(axum::Json(json!({"instanceActions": list})))
}

pub async fn show_action(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, request_id)): Path<(String, String)>,
) -> JsonResult {
    ctx.require_reader("os_compute_api:os-instance-actions:show")?;
    let inst = action_instance(&state, &ctx, v, &id).await?;
    let a = state.store.get_action(&inst.id, &request_id).await?;
    let mut out = action_json(v, &a);
    // Events: always for admins; for others from 2.51 (without tracebacks).
    if ctx.is_admin() || v.at_least(51) {
        let mut events = Vec::new();
        for e in state.store.list_events(&a.id).await? {
            let mut ev = json!({
                "event": e.event,
                "start_time": e.start_time.trim_end_matches('Z'),
                "finish_time": e.finish_time.as_deref().map(|t| t.trim_end_matches('Z').to_string()),
                "result": e.result,
            });
            if ctx.is_admin() {
                ev["traceback"] = json!(e.traceback);
            }
            if v.at_least(62) {
                let host = e.host.clone().unwrap_or_default();
                if ctx.is_admin() {
                    ev["host"] = json!(host);
                }
                ev["hostId"] = json!(if host.is_empty() {
                    String::new()
                } else {
                    hex::encode(<sha2::Sha224 as sha2::Digest>::digest(format!("{}{host}", inst.project_id).as_bytes()))
                });
            }
            events.push(ev);
        }
        out["events"] = json!(events);
    }
    Ok(axum::Json(json!({"instanceAction": out})))
}

/// `GET /servers/{id}/os-meridian-timeline`: every state change with its time and how long
/// each phase lasted (a Meridian extension; clients detect it by trying).
/// Admins may pass `deleted=true` to read the timeline of a deleted server.
pub async fn timeline(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, q: Query) -> JsonResult {
    ctx.require_reader("os_compute_api:servers:show")?;
    let inst = if ctx.is_admin() && q.bool("deleted")? == Some(true) {
        state.store.get_instance(&id).await?
    } else {
        visible(&state, &ctx, &id).await?
    };
    let rows = state.store.transitions(&inst.id).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, t) in rows.iter().enumerate() {
        let next = rows.get(i + 1).and_then(|n| crate::store::parse_time(&n.at));
        let dur = match (crate::store::parse_time(&t.at), next) {
            (Some(a), Some(b)) => Some((b - a).num_microseconds().unwrap_or(0) as f64 / 1e6),
            _ => None,
        };
        out.push(json!({
            "vm_state": t.vm_state, "task_state": t.task_state, "power_state": t.power_state,
            "at": t.at, "duration_s": dur,
        }));
    }
    Ok(axum::Json(json!({"timeline": out})))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, StatusCode};
    use serde_json::Value;

    use crate::testing::TestApp;

    async fn services(app: &TestApp, version: &str) -> Vec<Value> {
        services_at(app, version, "/compute/v2.1/os-services").await
    }

    async fn services_at(app: &TestApp, version: &str, path: &str) -> Vec<Value> {
        let t = app.admin_token.clone();
        let r = app.call(Method::GET, path, Some(&t), &[("openstack-api-version", version)], Body::empty()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["services"].as_array().cloned().unwrap_or_default()
    }

    /// Scheduler and conductor rows come from each replica's heartbeats: up while fresh, down
    /// once older than `host_down_after_secs`, each with ids of its own.
    #[tokio::test]
    async fn server_services_follow_their_heartbeats() {
        let app = TestApp::new().await;
        assert!(services(&app, "compute 2.1").await.is_empty(), "no loop has run in this process");
        for replica in ["fresh", "stale"] {
            for service in crate::supervisor::services_of("conductor") {
                app.state.store.service_heartbeat(replica, service).await.expect("beat");
            }
        }
        let old = crate::store::fmt_time(chrono::Utc::now() - chrono::Duration::seconds(16));
        sqlx::query("UPDATE service_heartbeats SET updated_at = $1 WHERE replica = 'stale'")
            .bind(&old)
            .execute(&mut *app.state.store.conn().await.expect("conn"))
            .await
            .expect("age the heartbeat");
        let list = services(&app, "compute 2.1").await;
        let row = |host: &str, binary: &str| {
            list.iter().find(|s| s["host"] == host && s["binary"] == binary).cloned().expect("service row")
        };
        for binary in ["nova-scheduler", "nova-conductor"] {
            assert_eq!(row("fresh", binary)["state"], "up");
            assert_eq!(row("stale", binary)["state"], "down");
            assert_eq!(row("stale", binary)["updated_at"], super::nova_time(&old));
        }
        // The shape Nova gives at 2.1: integer ids, distinct per row.
        let mut ids: Vec<i64> = list.iter().filter_map(|s| s["id"].as_i64()).collect();
        assert_eq!(ids.len(), 4);
        ids.dedup();
        assert_eq!(ids.len(), 4);
        let mut keys: Vec<&String> = list[0].as_object().expect("object").keys().collect();
        keys.sort();
        let want = ["binary", "disabled_reason", "host", "id", "state", "status", "updated_at", "zone"];
        assert_eq!(keys, want);
        // From 2.53 the ids are UUIDs; from 2.11 rows say whether they are forced down.
        let list = services(&app, "compute 2.53").await;
        assert!(list.iter().all(|s| s["id"].as_str().is_some_and(|id| id.len() == 36)), "{list:?}");
        assert!(list.iter().all(|s| s["forced_down"] == false), "{list:?}");
        let list = services_at(&app, "compute 2.1", "/compute/v2.1/os-services?host=stale&binary=nova-conductor").await;
        assert_eq!(list.len(), 1, "{list:?}");
    }
}
