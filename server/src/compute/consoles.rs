//! Remote consoles: Nova's `remote-consoles` API (and the older `os-get*Console` actions), the
//! console tokens behind their URLs, and the websocket proxy that joins a client to the
//! instance's agent.
//!
//! A console URL carries a random token, stored hashed, valid once and for
//! `[console] token_ttl_secs`. The client's websocket (`/console/serial/?token=…` or
//! `/console/vnc/?token=…`) is refused with 401 before the upgrade when its token is unknown,
//! used or expired. Once upgraded, the server opens a session and asks the instance's host for
//! it through the agent's long poll (an in-memory [`Action::Console`] request, never a durable
//! work item, and outside the instance's work queue on the agent); the agent connects back to
//! `/agent/v1/consoles/{session}` with its host credential and the server splices the two
//! websockets. Bytes travel in binary frames both ways.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meridian_common::agent::{Action, ConsoleProtocol, WorkItem};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::ApiVersion;
use super::agents::HostAuth;
use super::servers::visible;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;
use crate::store::identity::token_hash;
use crate::store::instances::Instance;
use crate::store::new_uuid;

/// How long the agent has to connect back for a session.
pub const AGENT_CONNECT_DEADLINE: Duration = Duration::from_secs(10);

/// Console requests waiting for their host's long poll, and sessions waiting for their agent.
#[derive(Default)]
pub struct Consoles {
    requests: Mutex<HashMap<String, Vec<WorkItem>>>,
    sessions: Mutex<HashMap<String, Pending>>,
}

struct Pending {
    host_id: String,
    agent: oneshot::Sender<WebSocket>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Consoles {
    /// The console requests for a host, taken (each is handed out once).
    pub fn take_requests(&self, host_id: &str) -> Vec<WorkItem> {
        lock(&self.requests).remove(host_id).unwrap_or_default()
    }

    fn open(&self, host_id: &str, item: WorkItem, agent: oneshot::Sender<WebSocket>) {
        lock(&self.sessions).insert(item.id.clone(), Pending { host_id: host_id.to_string(), agent });
        lock(&self.requests).entry(host_id.to_string()).or_default().push(item);
    }

    /// Forgets a session that was not (or can no longer be) joined.
    fn abandon(&self, host_id: &str, session: &str) {
        lock(&self.sessions).remove(session);
        let mut requests = lock(&self.requests);
        if let Some(list) = requests.get_mut(host_id) {
            list.retain(|w| w.id != session);
            if list.is_empty() {
                requests.remove(host_id);
            }
        }
    }

    /// The waiting end of a session for its own host's agent; `None` for an unknown session or
    /// another host's.
    fn claim(&self, session: &str, host_id: &str) -> Option<oneshot::Sender<WebSocket>> {
        let mut sessions = lock(&self.sessions);
        if sessions.get(session).is_some_and(|p| p.host_id == host_id) {
            sessions.remove(session).map(|p| p.agent)
        } else {
            None
        }
    }
}

/// The client-facing console routes (outside the API services: no fault JSON, no timeout).
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/console/serial", get(serial_ws))
        .route("/console/vnc", get(vnc_ws))
        .nest_service("/console/novnc", tower_http::services::ServeDir::new(&state.cfg.console.novnc_dir))
}

// ---- the API ----

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn not_one_of(field: &str, value: &Value, allowed: &[&str]) -> ApiError {
    let list = allowed.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", ");
    let shown = match value {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    };
    bad(format!("Invalid input for field/attribute {field}. Value: {value}. {shown} is not one of [{list}]"))
}

/// Reads `{"<key>": {<fields>: <enum>}}` as Nova's JSON schema does: the object, its required
/// members, no others, each value one of its enum.
fn schema_object<'a>(body: &'a Value, key: &str, fields: &[(&str, &[&str])]) -> ApiResult<HashMap<String, &'a str>> {
    let top = body.as_object().ok_or_else(|| bad(format!("Invalid input for field/attribute {key}.")))?;
    if let Some(extra) = top.keys().find(|k| *k != key) {
        return Err(bad(format!("Additional properties are not allowed ('{extra}' was unexpected)")));
    }
    let inner = top.get(key).ok_or_else(|| bad(format!("'{key}' is a required property")))?;
    let obj = inner.as_object().ok_or_else(|| {
        bad(format!("Invalid input for field/attribute {key}. Value: {inner}. {inner} is not of type 'object'"))
    })?;
    for (name, _) in fields {
        if !obj.contains_key(*name) {
            return Err(bad(format!(
                "Invalid input for field/attribute {key}. Value: {inner}. '{name}' is a required property"
            )));
        }
    }
    if let Some(extra) = obj.keys().find(|k| !fields.iter().any(|(f, _)| f == k)) {
        return Err(bad(format!(
            "Invalid input for field/attribute {key}. Value: {inner}. Additional properties are not allowed \
             ('{extra}' was unexpected)"
        )));
    }
    let mut out = HashMap::new();
    for (name, allowed) in fields {
        let v = &obj[*name];
        match v.as_str() {
            Some(s) if allowed.contains(&s) => {
                out.insert((*name).to_string(), s);
            }
            Some(_) => return Err(not_one_of(name, v, allowed)),
            None => {
                return Err(bad(format!(
                    "Invalid input for field/attribute {name}. Value: {v}. {v} is not of type 'string'"
                )));
            }
        }
    }
    Ok(out)
}

const PROTOCOLS_26: &[&str] = &["vnc", "spice", "serial", "rdp"];
const PROTOCOLS_28: &[&str] = &["vnc", "spice", "serial", "rdp", "mks"];
const TYPES_26: &[&str] = &["novnc", "xvpvnc", "spice-html5", "serial", "rdp-html5"];
const TYPES_28: &[&str] = &["novnc", "xvpvnc", "spice-html5", "serial", "rdp-html5", "webmks"];

/// `POST /servers/{id}/remote-consoles` (2.6+).
pub async fn create(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    if !v.at_least(6) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    let (protocols, types) = if v.at_least(8) { (PROTOCOLS_28, TYPES_28) } else { (PROTOCOLS_26, TYPES_26) };
    let fields = schema_object(&body, "remote_console", &[("protocol", protocols), ("type", types)])?;
    let (protocol, console_type) = (fields["protocol"], fields["type"]);
    let inst = visible(&state, &ctx, &id).await?;
    ctx.require_member("os_compute_api:os-remote-consoles")?;
    if protocol == "rdp" {
        return Err(bad(format!("Unavailable console type {protocol}.")));
    }
    let url = console_url(&state, &inst, protocol, console_type).await?;
    Ok(axum::Json(json!({"remote_console": {"protocol": protocol, "type": console_type, "url": url}})).into_response())
}

/// The `os-get*Console` actions of `POST /servers/{id}/action` (2.1–2.5; from 2.6 they are
/// gone, as in Nova: 404). `None` when `name` is not one of them.
pub async fn action(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    id: &str,
    name: &str,
    body: &Value,
) -> Option<ApiResult<Response>> {
    let (protocol, types): (&str, &[&str]) = match name {
        "os-getVNCConsole" => ("vnc", &["novnc", "xvpvnc"]),
        "os-getSerialConsole" => ("serial", &["serial"]),
        "os-getSPICEConsole" => ("spice", &["spice-html5"]),
        "os-getRDPConsole" => ("rdp", &[]),
        _ => return None,
    };
    Some(
        async {
            if v.at_least(6) {
                return Err(ApiError::not_found("The resource could not be found."));
            }
            ctx.require_member("os_compute_api:os-remote-consoles")?;
            if protocol == "rdp" {
                // Removed with the Hyper-V driver (Nova 29.0.0): always 400.
                return Err(bad("RDP consoles are not available."));
            }
            let fields = schema_object(body, name, &[("type", types)])?;
            let console_type = fields["type"];
            let inst = visible(state, ctx, id).await?;
            let url = console_url(state, &inst, protocol, console_type).await?;
            Ok(axum::Json(json!({"console": {"type": console_type, "url": url}})).into_response())
        }
        .await,
    )
}

/// Checks the instance and the console kind as Nova's compute API and manager do, issues a
/// token and builds the URL.
async fn console_url(state: &AppState, inst: &Instance, protocol: &str, console_type: &str) -> ApiResult<String> {
    if matches!(inst.task_state.as_deref(), Some("deleting" | "migrating")) {
        return Err(ApiError::conflict(format!(
            "Cannot 'get_{protocol}_console' instance {} while it is in task_state {}",
            inst.id,
            inst.task_state.as_deref().unwrap_or_default()
        )));
    }
    let Some(host_id) = inst.host_id.clone() else {
        // Nova's check_instance_host: not yet on a host.
        return Err(ApiError::conflict(format!("Instance {} is not ready", inst.id)));
    };
    let kind = match (protocol, console_type) {
        ("vnc", "novnc") => ConsoleProtocol::Vnc,
        ("serial", "serial") => ConsoleProtocol::Serial,
        // SPICE and MKS are not enabled here (Nova with `[spice] enabled = False`).
        ("spice" | "mks", t) => return Err(bad(format!("Unavailable console type {t}."))),
        (_, t) => return Err(bad(format!("Invalid console type {t}"))),
    };
    // A guest that is not running has no console to attach to (Nova's InstanceNotReady).
    if inst.vm_state != "active" || inst.power_state != meridian_common::agent::PowerState::Running.code() {
        return Err(ApiError::conflict(format!("Instance {} is not ready", inst.id)));
    }
    let token = crate::auth::random_secret();
    let ttl = Duration::from_secs(state.cfg.console.token_ttl_secs);
    state.store.create_console_token(&token_hash(&token), &inst.id, &host_id, console_type, ttl).await?;
    let base = &state.cfg.public_url;
    Ok(match kind {
        ConsoleProtocol::Serial => {
            let ws = if let Some(rest) = base.strip_prefix("https://") {
                format!("wss://{rest}")
            } else {
                format!("ws://{}", base.strip_prefix("http://").unwrap_or(base))
            };
            format!("{ws}/console/serial/?token={token}")
        }
        // noVNC's page connects to `/<path>` on the host and port it was loaded from.
        ConsoleProtocol::Vnc => format!("{base}/console/novnc/vnc_lite.html?path=console%2Fvnc%2F%3Ftoken%3D{token}"),
    })
}

/// `GET /os-console-auth-tokens/{token}` (admin): what an unused, unexpired token grants.
pub async fn show_token(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(token): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    if !v.at_least(31) {
        // Before 2.31 only RDP tokens could be shown, and RDP is gone (as Nova: 400).
        return Err(bad("Bad request."));
    }
    ctx.require_admin("os_compute_api:os-console-auth-tokens")?;
    let found = state.store.get_console_token(&token_hash(&token)).await?;
    let t = found.ok_or_else(|| ApiError::not_found("Token not found"))?;
    let host = state.store.get_host(&t.host_id).await.map(|h| h.name).unwrap_or(t.host_id);
    // The agent opens the guest's console itself, so there is no host port or path to give.
    Ok(axum::Json(json!({"console": {
        "instance_uuid": t.instance_id,
        "host": host,
        "port": null,
        "internal_access_path": null,
    }})))
}

// ---- the websocket proxy ----

async fn serial_ws(state: State<AppState>, q: RawQuery, ws: WebSocketUpgrade) -> Response {
    client_ws(state, q, ws, ConsoleProtocol::Serial).await
}

async fn vnc_ws(state: State<AppState>, q: RawQuery, ws: WebSocketUpgrade) -> Response {
    client_ws(state, q, ws, ConsoleProtocol::Vnc).await
}

/// A refused handshake. The connection is closed after it, as websockify and Nova's proxies
/// do: a client that sent an upgrade reads until the socket ends.
fn refuse(status: StatusCode, message: &str) -> Response {
    let headers =
        [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8"), (axum::http::header::CONNECTION, "close")];
    (status, headers, format!("{message}\n")).into_response()
}

/// Validates (and consumes) the token, then upgrades; refusals are plain text before the upgrade.
async fn client_ws(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
    protocol: ConsoleProtocol,
) -> Response {
    let token = query
        .as_deref()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned()));
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return refuse(StatusCode::UNAUTHORIZED, "A console token is required (?token=…).");
    };
    let found = match state.store.take_console_token(&token_hash(&token)).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "cannot read console tokens");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "The console service is unavailable; try again.");
        }
    };
    let Some(t) = found else {
        return refuse(StatusCode::UNAUTHORIZED, "The console token is not valid or was already used.");
    };
    if crate::store::parse_time(&t.expires_at).is_none_or(|e| e <= chrono::Utc::now()) {
        return refuse(StatusCode::UNAUTHORIZED, "The console token has expired.");
    }
    let wanted = match protocol {
        ConsoleProtocol::Serial => "serial",
        ConsoleProtocol::Vnc => "novnc",
    };
    if t.console_type != wanted {
        return refuse(StatusCode::UNAUTHORIZED, &format!("The console token is for a {} console.", t.console_type));
    }
    let host_name = match state.store.get_host(&t.host_id).await {
        Ok(h) => h.name,
        Err(_) => t.host_id.clone(),
    };
    // websockify and nova-serialproxy answer a client offering `binary` with it.
    ws.protocols(["binary"])
        .on_upgrade(move |socket| session(state, socket, t.host_id, host_name, t.instance_id, protocol))
}

/// A close frame with `reason` cut to what a close frame holds (123 bytes).
fn close(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(&reason[..end]) }))
}

/// One console session: ask the host's agent to connect, then carry bytes until either side
/// ends.
async fn session(
    state: AppState,
    mut client: WebSocket,
    host_id: String,
    host: String,
    instance_id: String,
    protocol: ConsoleProtocol,
) {
    let id = new_uuid();
    let (tx, rx) = oneshot::channel();
    let item = WorkItem {
        id: id.clone(),
        instance_id: instance_id.clone(),
        attempt: 1,
        action: Action::Console { session: id.clone(), protocol },
    };
    state.consoles.open(&host_id, item, tx);
    state.signals.notify(&host_id);
    tracing::info!(session = %id, instance = %instance_id, %host, ?protocol, "console session opened");
    let agent = tokio::select! {
        joined = tokio::time::timeout(AGENT_CONNECT_DEADLINE, rx) => joined.ok().and_then(Result::ok),
        () = state.shutdown.cancelled() => {
            state.consoles.abandon(&host_id, &id);
            let _ = client.send(close(close_code::AWAY, "server shutting down")).await;
            return;
        }
    };
    let Some(agent) = agent else {
        state.consoles.abandon(&host_id, &id);
        tracing::warn!(session = %id, %host, "the agent did not connect for the console");
        let reason = format!("console connection to host {host} could not be made");
        let _ = client.send(close(close_code::AGAIN, &reason)).await;
        return;
    };
    let reason = splice(&state, client, agent, &host).await;
    tracing::info!(session = %id, instance = %instance_id, %host, reason, "console session ended");
}

/// Carries frames between the client and the agent; returns why it ended.
async fn splice(state: &AppState, mut client: WebSocket, mut agent: WebSocket, host: &str) -> &'static str {
    let lost = format!("console connection to host {host} was lost");
    loop {
        tokio::select! {
            from_client = client.recv() => match from_client {
                Some(Ok(Message::Binary(b))) => {
                    if agent.send(Message::Binary(b)).await.is_err() {
                        let _ = client.send(close(close_code::ERROR, &lost)).await;
                        return "agent lost";
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if agent.send(Message::Binary(bytes::Bytes::copy_from_slice(t.as_str().as_bytes()))).await.is_err() {
                        let _ = client.send(close(close_code::ERROR, &lost)).await;
                        return "agent lost";
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = agent.send(close(close_code::NORMAL, "the client closed the console")).await;
                    return "client closed";
                }
            },
            from_agent = agent.recv() => match from_agent {
                Some(Ok(Message::Binary(b))) => {
                    if client.send(Message::Binary(b)).await.is_err() {
                        let _ = agent.send(close(close_code::NORMAL, "the client went away")).await;
                        return "client lost";
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    let b = bytes::Bytes::copy_from_slice(t.as_str().as_bytes());
                    if client.send(Message::Binary(b)).await.is_err() {
                        let _ = agent.send(close(close_code::NORMAL, "the client went away")).await;
                        return "client lost";
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // The agent says why (the guest stopped, the console could not be opened).
                Some(Ok(Message::Close(Some(frame)))) if !frame.reason.is_empty() => {
                    let reason = format!("console of host {host} closed: {}", frame.reason.as_str());
                    let _ = client.send(close(frame.code, &reason)).await;
                    return "agent closed";
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = client.send(close(close_code::ERROR, &lost)).await;
                    return "agent lost";
                }
            },
            () = state.shutdown.cancelled() => {
                let _ = client.send(close(close_code::AWAY, "server shutting down")).await;
                let _ = agent.send(close(close_code::AWAY, "server shutting down")).await;
                return "shutdown";
            }
        }
    }
}

/// `GET /agent/v1/consoles/{session}` (websocket): the agent joins a session of its own host;
/// any other session is 404.
pub async fn agent_join(
    State(state): State<AppState>,
    auth: HostAuth,
    Path(session): Path<String>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let Some(waiting) = state.consoles.claim(&session, &auth.host_id) else {
        return Err(ApiError::not_found(format!("Console session {session} could not be found.")));
    };
    Ok(ws.on_upgrade(move |socket| async move {
        // The session's task owns the socket from here; if it gave up meanwhile, it is dropped.
        let _ = waiting.send(socket);
    }))
}
