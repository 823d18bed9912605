//! Shared test fixtures: guards for libvirt objects, a fake agent API server, build specs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use md5::{Digest, Md5};
use meridian_agent::hypervisor::{Hypervisor, Libvirt};
use meridian_agent::xml;
use meridian_common::agent::{
    BuildSpec, EventBatch, EventBatchResult, FixedIp, FlavorSpec, Heartbeat, HostFilters, ImageSpec, NicSpec,
    RegisterRequest, RegisterResponse, WorkEvent, WorkItem,
};
use uuid::Uuid;

/// The join token the fake server accepts for registration.
pub const TOKEN: &str = "test-token";
/// The host credential the fake server accepts before any registration (for clients made
/// without one, as the controller tests' image cache).
pub const CREDENTIAL: &str = "host-credential-0";

/// A client of the fake server holding [`CREDENTIAL`].
pub fn client(url: &str) -> meridian_agent::server::ServerClient {
    let c = meridian_agent::server::ServerClient::new(url, TOKEN).expect("client");
    c.set_credential(Some(CREDENTIAL.into()));
    c
}
pub const URI: &str = "test:///default";

pub fn libvirt() -> Arc<Libvirt> {
    Arc::new(Libvirt::open(URI).expect("open test:///default"))
}

/// Destroys and undefines a domain when dropped.
pub struct DomainGuard {
    pub hv: Arc<Libvirt>,
    pub name: String,
}

impl Drop for DomainGuard {
    fn drop(&mut self) {
        let _ = self.hv.destroy(&self.name);
        let _ = self.hv.undefine(&self.name);
    }
}

/// Removes the domain of an instance and the libvirt networks of some Meridian networks.
pub struct Cleanup {
    pub hv: Arc<Libvirt>,
    pub instances: Vec<Uuid>,
    pub networks: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in &self.instances {
            let name = xml::Naming::default().domain(id);
            let _ = self.hv.destroy(&name);
            let _ = self.hv.undefine(&name);
        }
        for n in &self.networks {
            let _ = self.hv.remove_network(&xml::network_name(n));
        }
    }
}

pub fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

/// What the fake server saw and what it will hand out.
pub struct ServerState {
    pub images: Mutex<HashMap<String, Vec<u8>>>,
    pub image_hits: AtomicUsize,
    /// Work offered until a final event arrives, with when it was last offered.
    pub pending: Mutex<VecDeque<(WorkItem, Option<Instant>)>>,
    pub events: Mutex<Vec<(String, WorkEvent)>>,
    pub heartbeats: Mutex<Vec<Heartbeat>>,
    pub registrations: Mutex<Vec<RegisterRequest>>,
    /// Registrations to refuse with 503 first (the server "restarting").
    pub refuse_registrations: AtomicUsize,
    /// Event reports to answer by taking only their first event.
    pub partial_event_reports: AtomicUsize,
    /// The host credential every call but registration needs (the last one registration
    /// handed out).
    pub credential: Mutex<String>,
    /// The bearer token each registration came with.
    pub registered_with: Mutex<Vec<String>>,
    /// The host's port filters; `None`: the server has no such route (404).
    pub filters: Mutex<Option<HostFilters>>,
    /// When each port-filters answer left, with its generation.
    pub filters_served: Mutex<Vec<(Instant, u64)>>,
    /// When each heartbeat arrived.
    pub heartbeat_at: Mutex<Vec<Instant>>,
    /// Image data the agent uploaded (`PUT images/{id}/file`), by image id.
    pub uploads: Mutex<HashMap<String, Vec<u8>>>,
    /// Migration disks the relay holds, by migration id (as the real server stages them).
    pub migration_disks: Mutex<HashMap<String, Vec<u8>>>,
}

impl Default for ServerState {
    fn default() -> ServerState {
        ServerState {
            images: Mutex::default(),
            image_hits: AtomicUsize::default(),
            pending: Mutex::default(),
            events: Mutex::default(),
            heartbeats: Mutex::default(),
            registrations: Mutex::default(),
            refuse_registrations: AtomicUsize::default(),
            partial_event_reports: AtomicUsize::default(),
            credential: Mutex::new(CREDENTIAL.into()),
            registered_with: Mutex::default(),
            filters: Mutex::default(),
            filters_served: Mutex::default(),
            heartbeat_at: Mutex::default(),
            uploads: Mutex::default(),
            migration_disks: Mutex::default(),
        }
    }
}

impl ServerState {
    pub fn add_image(&self, id: &str, data: Vec<u8>) {
        self.images.lock().expect("lock").insert(id.to_string(), data);
    }
    pub fn offer(&self, item: WorkItem) {
        self.pending.lock().expect("lock").push_back((item, None));
    }
    pub fn events_of(&self, work_id: &str) -> Vec<WorkEvent> {
        self.events.lock().expect("lock").iter().filter(|(id, _)| id == work_id).map(|(_, e)| e.clone()).collect()
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::to_string)
}

/// As the real server: every call but registration needs the host's current credential.
fn authorized(s: &ServerState, headers: &HeaderMap) -> Result<(), StatusCode> {
    match bearer(headers) {
        Some(b) if b == *s.credential.lock().expect("lock") => Ok(()),
        _ => Err(StatusCode::UNAUTHORIZED),
    }
}

async fn register(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Json(req): Json<RegisterRequest>,
) -> Result<Json<RegisterResponse>, StatusCode> {
    // The join token, or the host's current credential.
    let given = bearer(&headers).ok_or(StatusCode::UNAUTHORIZED)?;
    if given != TOKEN {
        authorized(&s, &headers)?;
    }
    if s.refuse_registrations.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    s.registrations.lock().expect("lock").push(req);
    s.registered_with.lock().expect("lock").push(given);
    let credential = format!("host-credential-{}", Uuid::new_v4());
    *s.credential.lock().expect("lock") = credential.clone();
    Ok(Json(RegisterResponse { host_id: "host-1".into(), heartbeat_interval_secs: 1, credential }))
}

async fn heartbeat(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(_host): Path<String>,
    Json(hb): Json<Heartbeat>,
) -> Result<StatusCode, StatusCode> {
    authorized(&s, &headers)?;
    s.heartbeat_at.lock().expect("lock").push(Instant::now());
    s.heartbeats.lock().expect("lock").push(hb);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct Wait {
    wait: Option<u64>,
}

async fn work(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(_host): Path<String>,
    Query(q): Query<Wait>,
) -> Result<Json<Vec<WorkItem>>, StatusCode> {
    authorized(&s, &headers)?;
    let deadline = Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(1));
    loop {
        let due: Vec<WorkItem> = {
            let mut pending = s.pending.lock().expect("lock");
            pending
                .iter_mut()
                .filter(|(_, last)| last.is_none_or(|t| t.elapsed() > Duration::from_secs(2)))
                .map(|(item, last)| {
                    if last.is_some() {
                        item.attempt += 1;
                    }
                    *last = Some(Instant::now());
                    item.clone()
                })
                .collect()
        };
        if !due.is_empty() || Instant::now() >= deadline {
            return Ok(Json(due));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Json(batch): Json<EventBatch>,
) -> Result<Json<EventBatchResult>, StatusCode> {
    authorized(&s, &headers)?;
    // A report answered "took only the first" (the server stopping mid-batch): the agent must
    // send the rest again, in order.
    let partial =
        s.partial_event_reports.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let take = if partial { batch.events.len().min(1) } else { batch.events.len() };
    for e in batch.events.into_iter().take(take) {
        if !matches!(e.event, WorkEvent::Progress { .. }) {
            s.pending.lock().expect("lock").retain(|(w, _)| w.id != e.work_id);
        }
        s.events.lock().expect("lock").push((e.work_id, e.event));
    }
    let error = partial.then(|| "stopped".to_string());
    Ok(Json(EventBatchResult { taken: take, error }))
}

async fn image_file(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(HeaderMap, Vec<u8>), StatusCode> {
    authorized(&s, &headers)?;
    s.image_hits.fetch_add(1, Ordering::SeqCst);
    let data = s.images.lock().expect("lock").get(&id).cloned().ok_or(StatusCode::NOT_FOUND)?;
    let mut h = HeaderMap::new();
    h.insert("content-md5", md5_hex(&data).parse().expect("header"));
    Ok((h, data))
}

/// As the real server's upload route: the body is the image's data (here kept in memory).
async fn image_put(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, StatusCode> {
    authorized(&s, &headers)?;
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n != body.len()) {
        return Err(StatusCode::BAD_REQUEST);
    }
    s.uploads.lock().expect("lock").insert(id, body.to_vec());
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct After {
    after: Option<u64>,
    wait: Option<u64>,
}

/// As the real server's long poll: at once when the generation differs from `after`, else
/// when it changes or `wait` (at most 1 s here) runs out.
async fn port_filters(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(_host): Path<String>,
    Query(q): Query<After>,
) -> Result<Json<HostFilters>, StatusCode> {
    authorized(&s, &headers)?;
    let deadline = Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(1));
    loop {
        let current = s.filters.lock().expect("lock").clone().ok_or(StatusCode::NOT_FOUND)?;
        if q.after != Some(current.generation) || Instant::now() >= deadline {
            s.filters_served.lock().expect("lock").push((Instant::now(), current.generation));
            return Ok(Json(current));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The disk relay: a migration's source `PUT`s the disk, its destination `GET`s it.
async fn migration_disk_put(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, StatusCode> {
    authorized(&s, &headers)?;
    s.migration_disks.lock().expect("lock").insert(id, body.to_vec());
    Ok(StatusCode::NO_CONTENT)
}

async fn migration_disk_get(
    State(s): State<Arc<ServerState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Vec<u8>, StatusCode> {
    authorized(&s, &headers)?;
    s.migration_disks.lock().expect("lock").get(&id).cloned().ok_or(StatusCode::NOT_FOUND)
}

/// Starts the fake server on 127.0.0.1:0; returns its base URL and state.
pub async fn start_server() -> (String, Arc<ServerState>) {
    let state = Arc::new(ServerState::default());
    let app = Router::new()
        .route("/agent/v1/register", post(register))
        .route("/agent/v1/hosts/{host}/heartbeat", post(heartbeat))
        .route("/agent/v1/hosts/{host}/work", get(work))
        .route("/agent/v1/events", post(events))
        .route("/agent/v1/hosts/{host}/port-filters", get(port_filters))
        .route("/agent/v1/images/{id}/file", get(image_file).put(image_put))
        .route("/agent/v1/migrations/{id}/disk", get(migration_disk_get).put(migration_disk_put))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

/// A tiny "disk image": raw bytes.
pub fn raw_image(seed: u8) -> Vec<u8> {
    vec![seed; 64 * 1024]
}

pub fn build_spec(image_id: &str, data: &[u8], nics: Vec<NicSpec>) -> BuildSpec {
    BuildSpec {
        name: "vm one".into(),
        hostname: "vm-one".into(),
        flavor: FlavorSpec {
            name: "m1.tiny".into(),
            vcpus: 1,
            ram_mb: 64,
            disk_gb: 1,
            ephemeral_gb: 0,
            swap_mb: 0,
            extra_specs: BTreeMap::new(),
        },
        image: ImageSpec {
            id: image_id.into(),
            size: data.len() as u64,
            checksum: md5_hex(data),
            disk_format: "raw".into(),
            properties: BTreeMap::new(),
        },
        nics,
        user_data: None,
        metadata: BTreeMap::new(),
        public_key: None,
        key_name: None,
        project_id: "p1".into(),
        reservation_id: "r-abc12345".into(),
        launch_index: 0,
        config_drive: false,
        security_groups: Vec::new(),
        block_devices: Vec::new(),
        local_disks: None,
    }
}

pub fn nic(network_id: &str, mac: &str, ip: &str) -> NicSpec {
    NicSpec {
        port_id: Uuid::new_v4().to_string(),
        mac_address: mac.into(),
        network_id: network_id.into(),
        mtu: 1450,
        ips: vec![FixedIp {
            address: ip.into(),
            cidr: "10.77.0.0/24".into(),
            gateway: Some("10.77.0.1".into()),
            dns_nameservers: vec![],
        }],
    }
}

/// A random locally administered MAC.
pub fn mac() -> String {
    let b = Uuid::new_v4().into_bytes();
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}
