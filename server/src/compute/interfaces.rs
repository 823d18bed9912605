//! `/servers/{id}/os-interface`: list, show, attach (hot plug a port, waiting for the host as
//! Nova's RPC call does) and detach (202; the host unplugs, then the conductor unbinds the port
//! or deletes the one Nova made). Also the synchronous "ask the host and wait" helper the
//! diagnostics share.

use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use meridian_common::agent::Action;
use serde_json::{Map, Value, json};

use super::ApiVersion;
use super::conductor::{self, json_list};
use super::servers::{record_action, task_state, visible, vm_state};
use super::states::{self, Action as UserAction};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;
use crate::store::hosts::Work;
use crate::store::instances::Instance;
use crate::store::network::{IpRequest, NetError, NewPort, Port, PortUpdate};

type JsonResult = ApiResult<axum::Json<Value>>;

/// A network-side failure as a compute fault (same status, Nova's message).
fn net(e: NetError) -> ApiError {
    match e {
        NetError::Fault { status, message, .. } => {
            ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), message)
        }
        NetError::Store(s) => s.into(),
    }
}

fn view(port: &Port, tag: Option<Option<&String>>) -> Value {
    let fixed: Vec<Value> =
        port.fixed_ips.iter().map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address})).collect();
    let mut o = Map::new();
    o.insert("net_id".into(), json!(port.network_id));
    o.insert("port_id".into(), json!(port.id));
    o.insert("mac_addr".into(), json!(port.mac_address));
    o.insert("port_state".into(), json!(port.status));
    o.insert("fixed_ips".into(), Value::Array(fixed));
    if let Some(t) = tag {
        o.insert("tag".into(), json!(t));
    }
    Value::Object(o)
}

/// `GET /servers/{id}/os-interface`: the ports whose device is the server.
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    ctx.require_reader("os_compute_api:os-attach-interfaces:list")?;
    let inst = visible(&state, &ctx, &id).await?;
    let ports = state.store.ports_by_device(&inst.id).await.map_err(net)?;
    let tags = if v.at_least(70) { Some(state.store.interface_tags(&inst.id).await?) } else { None };
    let list: Vec<Value> = ports.iter().map(|p| view(p, tags.as_ref().map(|t| t.get(&p.id)))).collect();
    Ok(axum::Json(json!({"interfaceAttachments": list})))
}

async fn show_inner(state: &AppState, v: ApiVersion, inst: &Instance, port_id: &str) -> JsonResult {
    let port = state.store.get_port(port_id).await.map_err(net)?;
    if port.device_id != inst.id {
        return Err(ApiError::not_found(format!("Instance {} does not have a port with id {port_id}", inst.id)));
    }
    let tags = if v.at_least(70) { Some(state.store.interface_tags(&inst.id).await?) } else { None };
    Ok(axum::Json(json!({"interfaceAttachment": view(&port, tags.as_ref().map(|t| t.get(&port.id)))})))
}

/// `GET /servers/{id}/os-interface/{port_id}`.
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, port_id)): Path<(String, String)>,
) -> JsonResult {
    ctx.require_reader("os_compute_api:os-attach-interfaces:show")?;
    let inst = visible(&state, &ctx, &id).await?;
    show_inner(&state, v, &inst, &port_id).await
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// What an attach asked for, validated as Nova's schema.
struct Request {
    net_id: Option<String>,
    port_id: Option<String>,
    ip: Option<String>,
    tag: Option<String>,
}

fn parse(v: ApiVersion, body: &Value) -> ApiResult<Request> {
    let top = body.as_object().ok_or_else(|| bad("Invalid input for field/attribute body."))?;
    if let Some(k) = top.keys().find(|k| *k != "interfaceAttachment") {
        return Err(bad(format!("Additional properties are not allowed ('{k}' was unexpected)")));
    }
    let empty = Map::new();
    let a = match top.get("interfaceAttachment") {
        None => &empty,
        Some(Value::Object(o)) => o,
        Some(other) => {
            return Err(bad(format!(
                "Invalid input for field/attribute interfaceAttachment. Value: {other}. {other} is not of type 'object'"
            )));
        }
    };
    let allowed: &[&str] =
        if v.at_least(49) { &["net_id", "port_id", "fixed_ips", "tag"] } else { &["net_id", "port_id", "fixed_ips"] };
    if let Some(k) = a.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute interfaceAttachment. Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    let uuid = |key: &str| -> ApiResult<Option<String>> {
        match a.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => Ok(Some(s.clone())),
            Some(other) => {
                Err(bad(format!("Invalid input for field/attribute {key}. Value: {other}. {other} is not a 'uuid'")))
            }
        }
    };
    let (net_id, port_id) = (uuid("net_id")?, uuid("port_id")?);
    let ip = match a.get("fixed_ips") {
        None => None,
        Some(Value::Array(list)) if list.len() == 1 => {
            let item = list[0].as_object().filter(|o| o.keys().all(|k| k == "ip_address"));
            match item.and_then(|o| o.get("ip_address")).and_then(Value::as_str) {
                Some(s) if s.parse::<std::net::IpAddr>().is_ok() => Some(s.to_string()),
                _ => return Err(bad("Invalid input for field/attribute fixed_ips.")),
            }
        }
        Some(_) => return Err(bad("Invalid input for field/attribute fixed_ips.")),
    };
    let tag = match a.get("tag") {
        None => None,
        Some(Value::String(t)) if (1..=60).contains(&t.chars().count()) && !t.contains(['/', ',']) => Some(t.clone()),
        Some(other) => return Err(bad(format!("Invalid input for field/attribute tag. Value: {other}."))),
    };
    if net_id.is_some() && port_id.is_some() {
        return Err(bad("Must not input both network_id and port_id"));
    }
    if ip.is_some() && net_id.is_none() {
        return Err(bad("Must input network_id when request IP address"));
    }
    Ok(Request { net_id, port_id, ip, tag })
}

/// Nova's `check_instance_lock` then `check_instance_state` for an interface action.
pub(crate) fn check(ctx: &Ctx, inst: &Instance, action: UserAction) -> ApiResult<()> {
    if inst.locked != 0 && !ctx.is_admin() {
        return Err(ApiError::conflict(format!("Instance {} is locked", inst.id)));
    }
    let (vm, task) = (vm_state(inst), task_state(inst));
    if !states::allowed(action, vm, task) {
        return Err(states::refuse(action, &inst.id, vm, task));
    }
    Ok(())
}

/// The instance's host, when it is up (the action cannot run otherwise).
async fn host_of(state: &AppState, inst: &Instance, what: &str) -> ApiResult<crate::store::hosts::Host> {
    let unavailable =
        || ApiError::conflict(format!("Compute host of instance {} is not available; cannot {what}.", inst.id));
    let host_id = inst.host_id.as_deref().ok_or_else(unavailable)?;
    let host = state.store.get_host(host_id).await?;
    if !conductor::host_up(state, &host) {
        return Err(unavailable());
    }
    Ok(host)
}

/// Queues `action` for the instance's host and waits up to `timeout` for its end: `Some` with
/// the finished work (its state `done` or `failed`), `None` when the host did not answer in
/// time (the work is cancelled then, never delivered again).
pub(crate) async fn ask_host(
    state: &AppState,
    inst: &Instance,
    host_id: &str,
    action: &Action,
    timeout: Duration,
) -> ApiResult<Option<Work>> {
    let json = serde_json::to_string(action).map_err(ApiError::internal)?;
    let work_id = state.store.enqueue_work(&inst.id, host_id, &json).await?;
    let signal = state.signals.get(&work_id);
    state.signals.notify(host_id);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut timed_out = false;
    loop {
        let notified = signal.notified();
        if let Some(w) = state.store.take_finished_work(&work_id).await? {
            return Ok(Some(w).filter(|w| w.state != "cancelled"));
        }
        if timed_out {
            return Ok(None);
        }
        let wake = (tokio::time::Instant::now() + Duration::from_millis(500)).min(deadline);
        if tokio::time::timeout_at(wake, notified).await.is_err() && tokio::time::Instant::now() >= deadline {
            state.store.finish_work(&work_id, "cancelled", None).await?;
            timed_out = true;
        }
    }
}

/// How long an attach waits for the host (Nova's RPC call timeout is 60 s by default).
fn attach_wait(state: &AppState) -> Duration {
    Duration::from_secs(state.cfg.compute.action_timeout_secs.clamp(1, 60))
}

/// Takes a port back from the instance: deleted when Nova made it, else unbound and freed.
pub(crate) async fn release_port(state: &AppState, inst_id: &str, port_id: &str) -> ApiResult<()> {
    let inst = state.store.get_instance(inst_id).await?;
    let mut owned = json_list(&inst.owned_ports);
    if owned.contains(&port_id.to_string()) {
        match state.store.delete_port(port_id).await {
            Ok(()) | Err(NetError::Fault { status: 404, .. }) => {}
            Err(e) => return Err(net(e)),
        }
        owned.retain(|p| p != port_id);
        state.store.set_owned_ports(inst_id, &json!(owned).to_string()).await?;
    } else {
        let free = PortUpdate {
            device_id: Some(String::new()),
            device_owner: Some(String::new()),
            host_id: Some(String::new()),
            ..Default::default()
        };
        match state.store.update_port(port_id, &free).await {
            Ok(_) | Err(NetError::Fault { status: 404, .. }) => {}
            Err(e) => return Err(net(e)),
        }
    }
    state.store.set_interface_tag(port_id, inst_id, None).await?;
    Ok(())
}

/// Nova's `InterfaceAttachFailedNoNetwork` / `NetworkAmbiguous` choice when no network or
/// port is named: the one network the project can use.
async fn only_network(state: &AppState, project_id: &str) -> ApiResult<String> {
    let nets = state.store.list_networks(Some(project_id)).await?;
    let usable: Vec<_> = nets.into_iter().filter(|n| n.external == 0 || n.shared != 0).collect();
    match usable.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(bad(format!("No specific network was requested and none are available for project '{project_id}'."))),
        _ => Err(bad(
            "More than one possible network found. Specify network ID(s) to select which one(s) to connect to.",
        )),
    }
}

/// `POST /servers/{id}/os-interface`: 200 with the attachment once the host plugged it.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let inst = visible(&state, &ctx, &id).await?;
    ctx.require_member("os_compute_api:os-attach-interfaces:create")?;
    let req = parse(v, &body)?;
    check(&ctx, &inst, UserAction::AttachInterface)?;
    let host = host_of(&state, &inst, "attach_interface").await?;
    // The port: an existing free one of the caller's, or a new one on the network.
    let port = match &req.port_id {
        Some(pid) => {
            let p = match state.store.get_port(pid).await {
                Ok(p) if ctx.is_admin() || p.project_id == inst.project_id => p,
                Ok(_) | Err(NetError::Fault { status: 404, .. }) => {
                    return Err(ApiError::not_found(format!("Port {pid} could not be found.")));
                }
                Err(e) => return Err(net(e)),
            };
            if !p.device_id.is_empty() {
                return Err(ApiError::conflict(format!("Port {pid} is still in use.")));
            }
            record_action(&state, &ctx, &inst.id, "attach_interface", &ctx.request_id).await?;
            let bind = PortUpdate {
                device_id: Some(inst.id.clone()),
                device_owner: Some(format!("compute:{}", host.availability_zone)),
                host_id: Some(host.name.clone()),
                ..Default::default()
            };
            state.store.update_port(pid, &bind).await.map_err(net)?
        }
        None => {
            let net_id = match &req.net_id {
                Some(n) => n.clone(),
                None => only_network(&state, &inst.project_id).await?,
            };
            let network = match state.store.get_network(&net_id).await {
                Ok(n) if ctx.is_admin() || n.project_id == inst.project_id || n.shared != 0 => n,
                _ => return Err(ApiError::not_found(format!("Network {net_id} could not be found."))),
            };
            if network.subnets.is_empty() {
                return Err(bad(format!("Network {net_id} requires a subnet in order to boot instances on.")));
            }
            record_action(&state, &ctx, &inst.id, "attach_interface", &ctx.request_id).await?;
            let mut np = NewPort::new(&inst.project_id, &net_id);
            np.device_id = inst.id.clone();
            np.device_owner = format!("compute:{}", host.availability_zone);
            np.host_id = host.name.clone();
            if let Some(ip) = &req.ip {
                let addr = ip.parse().map_err(|_| bad(format!("Invalid fixed IP address {ip}")))?;
                np.fixed_ips = Some(vec![IpRequest { subnet_id: None, ip_address: Some(addr) }]);
            }
            let mut owned = json_list(&inst.owned_ports);
            owned.push(np.id.clone());
            let made = match state.store.create_instance_port(np, &inst.id, &json!(owned).to_string()).await {
                Ok(m) => m,
                Err(e) => {
                    let e = match e {
                        NetError::Fault { status: 409, message, .. } => ApiError::conflict(message),
                        NetError::Fault { status: 403 | 413, message, .. } => ApiError::forbidden(message),
                        other => net(other),
                    };
                    state.store.finish_named_action(&inst.id, "attach_interface", "Error", Some("Error"), None).await?;
                    return Err(e);
                }
            };
            made.port
        }
    };
    if let Some(tag) = &req.tag {
        state.store.set_interface_tag(&port.id, &inst.id, Some(tag)).await?;
    }
    if let Some(a) = state.store.latest_action(&inst.id, "attach_interface").await? {
        state.store.start_event(&a.id, "compute_attach_interface", Some(&host.name)).await?;
    }
    let nic = conductor::nic_of(&state, port.clone()).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let answer = ask_host(&state, &inst, &host.id, &Action::InterfaceAttach { nic }, attach_wait(&state)).await?;
    match answer {
        Some(w) if w.state == "done" => {
            state.store.finish_named_action(&inst.id, "attach_interface", "Success", None, None).await?;
            show_inner(&state, v, &inst, &port.id).await
        }
        other => {
            let why = match &other {
                Some(w) => w.result.clone().unwrap_or_default(),
                None => "the compute host did not answer in time".to_string(),
            };
            tracing::warn!(instance = %inst.id, port = %port.id, reason = %why, "interface attach failed");
            release_port(&state, &inst.id, &port.id).await?;
            state.store.finish_named_action(&inst.id, "attach_interface", "Error", Some("Error"), Some(&why)).await?;
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Failed to attach network adapter device to {}", inst.id),
            ))
        }
    }
}

/// `DELETE /servers/{id}/os-interface/{port_id}`: 202; the host unplugs the port, then the
/// conductor releases it ([`on_detached`]).
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, port_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let inst = visible(&state, &ctx, &id).await?;
    ctx.require_member("os_compute_api:os-attach-interfaces:delete")?;
    check(&ctx, &inst, UserAction::DetachInterface)?;
    let port = match state.store.get_port(&port_id).await {
        Ok(p) if p.device_id == inst.id => p,
        Ok(_) | Err(NetError::Fault { status: 404, .. }) => {
            return Err(ApiError::not_found(format!("Port {port_id} is not attached")));
        }
        Err(e) => return Err(net(e)),
    };
    let host = host_of(&state, &inst, "detach_interface").await?;
    record_action(&state, &ctx, &inst.id, "detach_interface", &ctx.request_id).await?;
    if let Some(a) = state.store.latest_action(&inst.id, "detach_interface").await? {
        state.store.start_event(&a.id, "compute_detach_interface", Some(&host.name)).await?;
    }
    let action = Action::InterfaceDetach { port_id: port.id.clone(), mac_address: port.mac_address.clone() };
    let json = serde_json::to_string(&action).map_err(ApiError::internal)?;
    state.store.enqueue_work(&inst.id, &host.id, &json).await?;
    state.signals.notify(&host.id);
    Ok(StatusCode::ACCEPTED)
}

/// The conductor's side of an interface work item's end.
pub(crate) async fn on_event(
    state: &AppState,
    work: &Work,
    action: &Action,
    event: meridian_common::agent::WorkEvent,
) -> Result<(), conductor::ConductError> {
    use meridian_common::agent::WorkEvent;
    let internal = |e: ApiError| conductor::ConductError::Invalid(e.to_string());
    match (action, event) {
        (Action::InterfaceAttach { nic }, WorkEvent::Done { .. }) => {
            if !state.store.finish_work(&work.id, "done", None).await? {
                // The API gave up waiting and released the port: take the device out again.
                let undo =
                    Action::InterfaceDetach { port_id: nic.port_id.clone(), mac_address: nic.mac_address.clone() };
                let json = serde_json::to_string(&undo).map_err(|e| conductor::ConductError::Invalid(e.to_string()))?;
                state.store.enqueue_work(&work.instance_id, &work.host_id, &json).await?;
                state.signals.notify(&work.host_id);
            }
            state.signals.notify(&work.id);
        }
        (Action::InterfaceDetach { port_id, .. }, WorkEvent::Done { .. }) => {
            if state.store.finish_work(&work.id, "done", None).await? {
                let inst = state.store.get_instance(&work.instance_id).await?;
                // Only a port still on this instance is released (an undo of a timed-out
                // attach finds it released already).
                if let Ok(p) = state.store.get_port(port_id).await
                    && p.device_id == inst.id
                {
                    release_port(state, &inst.id, port_id).await.map_err(internal)?;
                }
                state.store.finish_named_action(&inst.id, "detach_interface", "Success", None, None).await?;
            }
        }
        (_, WorkEvent::Failed { message, details, .. }) => {
            if state.store.finish_work(&work.id, "failed", Some(&message)).await?
                && matches!(action, Action::InterfaceDetach { .. })
            {
                state
                    .store
                    .finish_named_action(&work.instance_id, "detach_interface", "Error", Some("Error"), Some(&details))
                    .await?;
            }
            state.signals.notify(&work.id);
        }
        (_, WorkEvent::Progress { .. }) => {}
        // Diagnostics: the answer is the work's result, for the waiting API call.
        (_, WorkEvent::Done { data, .. }) => {
            let text = data.map(|d| d.to_string());
            state.store.finish_work(&work.id, "done", text.as_deref()).await?;
            state.signals.notify(&work.id);
        }
    }
    Ok(())
}

// ---- diagnostics ----

/// The keys of Nova 2.48's diagnostics body, in its order.
const DIAGNOSTICS_KEYS: [&str; 13] = [
    "state",
    "driver",
    "hypervisor",
    "hypervisor_os",
    "uptime",
    "config_drive",
    "num_cpus",
    "num_nics",
    "num_disks",
    "cpu_details",
    "nic_details",
    "disk_details",
    "memory_details",
];

/// `GET /servers/{id}/diagnostics` (admin): asks the host and waits (up to 10 s); before 2.48
/// the libvirt driver's flat dict, from 2.48 the standard body. Nova's compute manager answers
/// only for a running guest (409 with the power state otherwise).
pub async fn diagnostics(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    let inst = visible(&state, &ctx, &id).await?;
    ctx.require_admin("os_compute_api:os-server-diagnostics")?;
    let Some(host_id) = inst.host_id.clone() else {
        return Err(ApiError::conflict(format!("Instance {} is not ready", inst.id)));
    };
    if inst.power_state != 1 {
        return Err(ApiError::conflict(format!(
            "Cannot 'get_diagnostics' instance {} while it is in power_state {}",
            inst.id, inst.power_state
        )));
    }
    let host = state.store.get_host(&host_id).await?;
    if !conductor::host_up(&state, &host) {
        return Err(ApiError::conflict(format!("Instance {} is not ready", inst.id)));
    }
    let answer = ask_host(&state, &inst, &host_id, &Action::Diagnostics, Duration::from_secs(10)).await?;
    let w = match answer {
        Some(w) if w.state == "done" => w,
        Some(w) => {
            return Err(ApiError::conflict(format!("Diagnostics not available: {}", w.result.unwrap_or_default())));
        }
        None => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "The compute host did not return the diagnostics in time.",
            ));
        }
    };
    let body: Value = serde_json::from_str(w.result.as_deref().unwrap_or("{}")).map_err(ApiError::internal)?;
    if v.at_least(48) {
        let mut o = Map::new();
        for k in DIAGNOSTICS_KEYS {
            o.insert(k.into(), body.get(k).cloned().unwrap_or(Value::Null));
        }
        Ok(axum::Json(Value::Object(o)))
    } else {
        Ok(axum::Json(body.get("legacy").cloned().unwrap_or_else(|| json!({}))))
    }
}
