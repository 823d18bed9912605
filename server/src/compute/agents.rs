//! The server side of the agent protocol (`meridian_common::agent`): registration, heartbeats
//! with power-state sync, long-polled work delivery, work events and image data for agents.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meridian_common::agent::{
    Action, EventBatch, EventBatchResult, Heartbeat, Inventory, PowerState, RegisterRequest, RegisterResponse,
    VolumeSource, WorkEvent, WorkItem,
};

use super::conductor;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::hosts::{HostInventory, Work};
use crate::store::identity::token_hash;
use crate::store::instances::{Expect, InstanceFilter, NewState};

/// Routes under `/agent/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/hosts/{host}/heartbeat", post(heartbeat))
        .route("/hosts/{host}/work", get(poll_work))
        .route("/hosts/{host}/port-filters", get(super::port_filters::poll))
        .route("/work/{id}/events", post(work_event))
        .route("/events", post(work_events))
        .route("/images/{id}/file", get(image_file).put(image_upload))
        .route("/consoles/{session}", get(super::consoles::agent_join))
        .route("/migrations/{id}/disk", get(super::migrations::disk_get).put(super::migrations::disk_put))
        .route("/migrations/{id}/progress", post(super::live_migration::progress))
        .route("/metadata", get(super::metadata::root))
        .route("/metadata/{*path}", get(super::metadata::item).post(super::metadata::post_item))
}

/// The bearer token of a request (`Authorization: Bearer …`), trimmed.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether `given` is the cluster's agent join token.
async fn is_join_token(state: &AppState, given: &str) -> ApiResult<bool> {
    let matches =
        |expected: &str| !expected.is_empty() && constant_time_eq(given.as_bytes(), expected.trim().as_bytes());
    // Compare with the copy read before, and read the database again only when that fails
    // (the token was set or changed meanwhile).
    let cached = state.agent_token.read().unwrap_or_else(|p| p.into_inner()).clone();
    if cached.as_deref().is_some_and(matches) {
        return Ok(true);
    }
    let expected = state.store.setting("agent_token").await?.unwrap_or_default();
    if !matches(&expected) {
        return Ok(false);
    }
    *state.agent_token.write().unwrap_or_else(|p| p.into_inner()) = Some(expected);
    Ok(true)
}

/// An agent holding its host's credential (handed out by registration): every agent call but
/// registration needs one, and acts for that host only. The join token is not a credential.
/// An unknown or replaced credential is 401, which tells the agent to register again.
#[derive(Clone, Debug)]
pub struct HostAuth {
    pub host_id: String,
    pub host_name: String,
}

impl HostAuth {
    /// Refuses a call naming another host in its path: 403, since the caller is a known host
    /// asking for something that is plainly not its own (host names are no secret).
    pub(crate) fn check_host(&self, host: &str) -> ApiResult<()> {
        if self.host_name == host {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("This credential belongs to compute host {}, not {host}.", self.host_name)))
        }
    }
}

impl FromRequestParts<AppState> for HostAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let given = bearer(&parts.headers).ok_or_else(|| ApiError::unauthorized("A host credential is required."))?;
        let hash = token_hash(given);
        if let Some(auth) = state.agent_creds.get(&hash) {
            return Ok(auth);
        }
        let generation = state.agent_creds.generation();
        let Some((host_id, host_name)) = state.store.host_by_credential(&hash).await? else {
            return Err(ApiError::unauthorized("The host credential is not valid; register the host again."));
        };
        let auth = HostAuth { host_id, host_name };
        state.agent_creds.put(&hash, generation, &auth);
        Ok(auth)
    }
}

/// Host credentials validated in the last [`crate::auth::ValidationCache::TTL`], keyed by their
/// hash: every agent call carries one, and most would otherwise cost a read of the one SQLite
/// connection. Registration empties it, so a replaced credential stops working at once in this
/// process (within the TTL on other replicas).
pub type CredentialCache = crate::auth::ValidationCache<HostAuth>;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_inventory(inv: &Inventory, agent_version: &str) -> HostInventory {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    HostInventory {
        availability_zone: if inv.availability_zone.is_empty() {
            super::quotas::DEFAULT_AZ.into()
        } else {
            inv.availability_zone.clone()
        },
        hypervisor_type: inv.hypervisor_type.clone(),
        hypervisor_version: i(inv.hypervisor_version),
        cpu_arch: inv.cpu_arch.clone(),
        libvirt_uri: inv.libvirt_uri.clone(),
        host_ip: inv.host_ip.clone(),
        supports_networks: inv.supports_networks,
        agent_version: agent_version.to_string(),
        vcpus: i64::from(inv.vcpus),
        memory_mb: i(inv.memory_mb),
        disk_gb: i(inv.disk_gb),
        reserved_vcpus: i64::from(inv.reserved_vcpus),
        reserved_memory_mb: i(inv.reserved_memory_mb),
        reserved_disk_gb: i(inv.reserved_disk_gb),
        uptime: inv.uptime.clone(),
    }
}

fn valid_host_name(name: &str) -> ApiResult<()> {
    let ok =
        !name.is_empty() && name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok { Ok(()) } else { Err(ApiError::bad_request(format!("Invalid host name '{name}'."))) }
}

/// Registers a host (or refreshes it) and hands out a new credential for it, replacing the
/// previous one. Allowed with the join token, or with the host's own current credential (so a
/// joined host can do without the join token); anything else is 401.
async fn register(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<axum::Json<RegisterResponse>> {
    let given = bearer(&headers).ok_or_else(|| ApiError::unauthorized("An agent join token is required."))?;
    let allowed = is_join_token(&state, given).await?
        || state.store.host_by_credential(&token_hash(given)).await?.is_some_and(|(_, name)| name == req.host);
    if !allowed {
        return Err(ApiError::unauthorized("The agent join token is not valid."));
    }
    valid_host_name(&req.host)?;
    let id = state.store.register_host(&req.host, &to_inventory(&req.inventory, &req.agent_version)).await?;
    let credential = crate::auth::random_secret();
    state.store.set_host_credential(&id, &token_hash(&credential)).await?;
    state.agent_creds.invalidate();
    tracing::info!(host = %req.host, %id, "compute host registered");
    // A host that is back removes what was evacuated away from it while it was down.
    super::evacuate::reclaim_source(&state, &id).await.map_err(ApiError::internal)?;
    Ok(axum::Json(RegisterResponse {
        host_id: id,
        heartbeat_interval_secs: state.cfg.compute.heartbeat_interval_secs,
        credential,
    }))
}

async fn heartbeat(
    State(state): State<AppState>,
    auth: HostAuth,
    Path(host): Path<String>,
    Json(hb): Json<Heartbeat>,
) -> ApiResult<StatusCode> {
    auth.check_host(&host)?;
    let h = state.store.get_host(&auth.host_id).await?;
    state.store.heartbeat(&h.id, &to_inventory(&hb.inventory, &h.agent_version)).await?;
    // Also for a host that kept running while judged down (forced down, a partition).
    super::evacuate::reclaim_source(&state, &h.id).await.map_err(ApiError::internal)?;
    // Power-state sync (Nova's _sync_power_states): a guest that shut itself down becomes
    // SHUTOFF; other changes only refresh power_state.
    // One query for the host's instances rather than one per report.
    let on_host =
        state.store.list_instances(&InstanceFilter { host_id: Some(h.id.clone()), ..Default::default() }).await?;
    for report in hb.instances {
        let Some(inst) = on_host.iter().find(|i| i.id == report.instance_id) else {
            continue;
        };
        if inst.task_state.is_some() {
            continue;
        }
        let code = report.power_state.code();
        if inst.vm_state == "active" && matches!(report.power_state, PowerState::Shutdown | PowerState::Crashed) {
            let to = NewState { vm_state: "stopped", task_state: None, power_state: Some(code) };
            if let Ok(Some(_)) = state.store.transition(&inst.id, Expect::Task(None), to).await {
                tracing::info!(instance = %inst.id, "guest stopped from inside: now SHUTOFF");
            }
        } else if inst.power_state != code && inst.vm_state != "building" {
            let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: Some(code) };
            let _ = state.store.transition(&inst.id, Expect::Task(None), to).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Long poll: work that is due now, or whatever arrives within `wait` seconds (max 60); an
/// empty answer at once when the server is shutting down.
async fn poll_work(
    State(state): State<AppState>,
    auth: HostAuth,
    Path(host): Path<String>,
    q: Query,
) -> ApiResult<axum::Json<Vec<WorkItem>>> {
    auth.check_host(&host)?;
    let wait = q.uint("wait")?.unwrap_or(25).min(60);
    let host_id = auth.host_id;
    let lease = state.cfg.compute.work_lease_secs as i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait as u64);
    let signal = state.signals.get(&host_id);
    loop {
        let notified = signal.notified();
        // Console requests first: they are not durable work and must not wait behind any.
        let mut items = state.consoles.take_requests(&host_id);
        let leased = state.store.lease_work(&host_id, lease, 64).await?;
        if !leased.is_empty() || !items.is_empty() {
            // Work is durable before any host acts on it (its build, placement and lease).
            if !leased.is_empty() {
                state.store.sync().await?;
            }
            items.reserve(leased.len());
            for w in leased {
                match serde_json::from_str::<Action>(&w.action) {
                    Ok(action) => items.push(WorkItem {
                        id: w.id,
                        instance_id: w.instance_id,
                        attempt: u32::try_from(w.attempt).unwrap_or(u32::MAX),
                        action,
                    }),
                    Err(e) => {
                        tracing::error!(work = %w.id, error = %e, "unreadable work item dropped");
                        state.store.finish_work(&w.id, "failed", Some("unreadable work item")).await?;
                    }
                }
            }
            return Ok(axum::Json(items));
        }
        tokio::select! {
            woken = tokio::time::timeout_at(deadline, notified) => {
                if woken.is_err() {
                    return Ok(axum::Json(Vec::new()));
                }
            }
            // Shutting down: nothing was leased, so answer now and let the server stop; the
            // agent polls again (this server once it is back, or another replica).
            () = state.shutdown.cancelled() => return Ok(axum::Json(Vec::new())),
        }
    }
}

async fn work_event(
    State(state): State<AppState>,
    auth: HostAuth,
    Path(id): Path<String>,
    Json(event): Json<WorkEvent>,
) -> ApiResult<StatusCode> {
    let work = state.store.get_work(&id).await?;
    // Another host's work is answered as if it did not exist: 404, as for unknown ids.
    if work.host_id != auth.host_id {
        return Err(StoreError::NotFound(format!("Work {id} could not be found.")).into());
    }
    apply_event_to(&state, &work, event).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Several events in order; stops at the first that cannot be applied now (the agent sends it
/// and the rest again). Events refused for good (unknown work, or another host's) count as
/// taken.
async fn work_events(
    State(state): State<AppState>,
    auth: HostAuth,
    Json(batch): Json<EventBatch>,
) -> ApiResult<axum::Json<EventBatchResult>> {
    // The batch's work items, read once (events only change them through guarded updates);
    // another host's are left out, so their events are refused as unknown work.
    let ids: Vec<&str> = batch.events.iter().map(|e| e.work_id.as_str()).collect();
    let works: HashMap<String, Work> = state
        .store
        .get_works(&ids)
        .await?
        .into_iter()
        .filter(|w| w.host_id == auth.host_id)
        .map(|w| (w.id.clone(), w))
        .collect();
    let mut taken = 0;
    for e in batch.events {
        let applied = match works.get(&e.work_id) {
            Some(work) => apply_event_to(&state, work, e.event).await,
            None => Err(StoreError::NotFound(format!("Work {} could not be found.", e.work_id)).into()),
        };
        match applied {
            Ok(()) => {}
            Err(err) if err.status.is_client_error() => {
                tracing::warn!(work = %e.work_id, error = %err.message, "work event refused");
            }
            Err(err) => return Ok(axum::Json(EventBatchResult { taken, error: Some(err.message) })),
        }
        taken += 1;
    }
    Ok(axum::Json(EventBatchResult { taken, error: None }))
}

async fn apply_event_to(state: &AppState, work: &Work, event: WorkEvent) -> ApiResult<()> {
    if !matches!(work.state.as_str(), "pending" | "delivered") {
        // A repeat of an acknowledged item (or one cancelled meanwhile): nothing to do.
        return Ok(());
    }
    conductor::on_event(state, work, event).await.map_err(|e| match e {
        conductor::ConductError::Store(s) => ApiError::from(s),
        conductor::ConductError::Invalid(m) => ApiError::bad_request(m),
        other => ApiError::internal(other),
    })
}

/// Whether an open build of the host needs image `id` (its root disk, kernel or ramdisk), or an
/// open volume create of the host is made from it.
async fn image_needed(state: &AppState, host_id: &str, id: &str) -> ApiResult<bool> {
    let actions = state.store.open_work_actions(host_id, id).await?;
    Ok(actions.iter().any(|a| match serde_json::from_str::<Action>(a) {
        // A migration's destination rebuilds the disk's backing file from the same image.
        Ok(
            Action::Build(spec)
            | Action::MigrateIn { spec, .. }
            | Action::LiveMigrateIn { spec, .. }
            | Action::ResizeLocal { spec, .. },
        ) => {
            spec.image.id == id
                || ["kernel_id", "ramdisk_id"].iter().any(|k| spec.image.properties.get(*k).is_some_and(|v| v == id))
        }
        Ok(Action::VolumeCreate { source: Some(VolumeSource::Image { image }), .. }) => image.id == id,
        // A rebuild's new root disk (and its kernel / ramdisk); a rescue's rescue image.
        Ok(Action::Rebuild(spec)) => {
            spec.image.id == id
                || ["kernel_id", "ramdisk_id"].iter().any(|k| spec.image.properties.get(*k).is_some_and(|v| v == id))
        }
        Ok(Action::Rescue { image, .. }) => image.id == id,
        _ => false,
    }))
}

/// Image data from an agent: only into an image that an open `VolumeUploadImage` of the
/// caller's host names (404 for any other, as for downloads). Stored exactly as Glance's
/// upload stores it (checksum, `os_hash_value`, size); the image is then `active`.
async fn image_upload(
    State(state): State<AppState>,
    auth: HostAuth,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<axum::http::StatusCode> {
    let actions = state.store.open_work_actions(&auth.host_id, &id).await?;
    // A volume's upload, or an instance's snapshot (createImage, createBackup, shelve).
    let named = actions.iter().any(|a| {
        matches!(serde_json::from_str::<Action>(a), Ok(Action::VolumeUploadImage { image_id, .. }
            | Action::ImageCreate { image_id, .. }) if image_id == id)
    });
    if !named {
        return Err(ApiError::not_found(format!("Image {id} could not be found.")));
    }
    let img = state.store.get_image(&id).await?;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    crate::image::data::store_data(&state, &img, declared, body).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Image data for an agent's cache (agents hold no Keystone token): only images an open build
/// of the caller's host needs. Any other is 404, as if it did not exist: a host learns no image
/// ids beyond its own work's.
async fn image_file(State(state): State<AppState>, auth: HostAuth, Path(id): Path<String>) -> ApiResult<Response> {
    if !image_needed(&state, &auth.host_id, &id).await? {
        return Err(ApiError::not_found(format!("Image {id} could not be found.")));
    }
    let img = state.store.get_image(&id).await?;
    if !matches!(img.status.as_str(), "active" | "deactivated") {
        return Err(ApiError::conflict(format!("Image {id} has no data (status {}).", img.status)));
    }
    let path = crate::image::data::image_path(&state, &id);
    let file =
        tokio::fs::File::open(&path).await.map_err(|e| ApiError::internal(format!("opening image data: {e}")))?;
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/octet-stream"));
    h.insert(axum::http::header::CONTENT_LENGTH, axum::http::HeaderValue::from(len));
    if let Some(md5) = img.checksum.as_deref().and_then(|c| axum::http::HeaderValue::from_str(c).ok()) {
        h.insert("content-md5", md5);
    }
    Ok(resp)
}
