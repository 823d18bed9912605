//! The conductor: drives each build and action through its states, between the API, the
//! scheduler, the network store and the agents.
//!
//! Everything it does is recorded in the database before the next step, and every step can be
//! run again: [`tick`] (called every second by the server) resumes builds the process was in the
//! middle of when it died, fails builds that outlive their deadline, and reschedules builds on
//! hosts that stopped heartbeating. So no instance stays in BUILD forever.

use std::collections::BTreeMap;

use meridian_common::agent::{Action, BuildSpec, FixedIp, FlavorSpec, ImageSpec, NicSpec, PowerState, WorkEvent};
use serde_json::{Value, json};

use super::scheduler::{self, HostState, Request};
use crate::state::AppState;
use crate::store::hosts::{Claim, Host, Ratios, Work};
use crate::store::image::Image;
use crate::store::instances::{Expect, Instance, NewState};
use crate::store::network::{IpRequest, NetError, NewPort, Port, PortUpdate, Subnet};
use crate::store::{StoreError, fmt_time, now, parse_time};

/// Errors while driving an instance; they end in the instance's fault, never in a panic.
#[derive(Debug, thiserror::Error)]
pub enum ConductError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Network(#[from] NetError),
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, ConductError>;

pub(crate) fn settings(state: &AppState) -> scheduler::Settings {
    let c = &state.cfg.compute;
    scheduler::Settings {
        cpu_allocation_ratio: c.cpu_allocation_ratio,
        ram_allocation_ratio: c.ram_allocation_ratio,
        disk_allocation_ratio: c.disk_allocation_ratio,
        ram_weight_multiplier: c.ram_weight_multiplier,
        cpu_weight_multiplier: c.cpu_weight_multiplier,
        disk_weight_multiplier: c.disk_weight_multiplier,
        max_attempts: c.max_attempts,
        soft_affinity_weight_multiplier: c.soft_affinity_weight_multiplier,
        soft_anti_affinity_weight_multiplier: c.soft_anti_affinity_weight_multiplier,
    }
}

pub(crate) fn ratios(state: &AppState) -> Ratios {
    let c = &state.cfg.compute;
    Ratios { cpu: c.cpu_allocation_ratio, ram: c.ram_allocation_ratio, disk: c.disk_allocation_ratio }
}

/// Whether a host's heartbeat is recent enough (and it is not forced down). Heartbeats cannot
/// arrive while this process is not running, so the time is counted from the later of the
/// heartbeat and the end of the process's last pause ([`Liveness`]).
pub fn host_up(state: &AppState, h: &Host) -> bool {
    let limit = chrono::Duration::seconds(state.cfg.compute.host_down_after_secs as i64);
    let resumed = state.liveness.resumed_at();
    h.forced_down == 0
        && parse_time(&h.last_heartbeat).is_some_and(|t| chrono::Utc::now() - resumed.map_or(t, |r| t.max(r)) <= limit)
}

/// Longest gap between two beats of a running process; a longer one is a pause.
const PAUSE: chrono::TimeDelta = chrono::TimeDelta::seconds(3);
/// How often [`watch_liveness`] beats.
const BEAT: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether this process has been running continuously. A server stopped (SIGSTOP, a stalled
/// VM, a wall-clock step) wakes to heartbeats as old as its pause although its hosts kept
/// working; judging them down would reschedule their builds onto other hosts while the first
/// ones still run them. So after a pause a host counts from the moment the process resumed:
/// it is down only if it then misses `host_down_after_secs` of heartbeats.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Unix ms of the last beat; 0 until [`watch_liveness`] runs (handler tests, offline
    /// commands), where no pause is ever detected.
    last_beat: std::sync::atomic::AtomicI64,
    /// Unix ms when the process last resumed from a pause (0: never paused).
    resumed: std::sync::atomic::AtomicI64,
}

impl Liveness {
    /// Records that the process runs (from [`watch_liveness`]).
    pub fn beat(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        let prev = self.last_beat.swap(now, std::sync::atomic::Ordering::SeqCst);
        self.noticed(prev, now);
    }

    /// When the process last resumed from a pause, noticing one that the beat has not seen yet
    /// (the first task to run after a pause may be any).
    pub fn resumed_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = chrono::Utc::now().timestamp_millis();
        let prev = self.last_beat.load(SeqCst);
        if prev != 0
            && now - prev > PAUSE.num_milliseconds()
            && self.last_beat.compare_exchange(prev, now, SeqCst, SeqCst).is_ok()
        {
            self.noticed(prev, now);
        }
        match self.resumed.load(SeqCst) {
            0 => None,
            ms => chrono::DateTime::from_timestamp_millis(ms),
        }
    }

    fn noticed(&self, prev: i64, now: i64) {
        if prev != 0 && now - prev > PAUSE.num_milliseconds() {
            self.resumed.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(
                paused_ms = now - prev,
                "this process did not run for a while; hosts are judged by their heartbeats from now on"
            );
        }
    }
}

/// Beats [`Liveness`] until aborted (a task beside the HTTP server).
pub async fn watch_liveness(state: AppState) {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        state.liveness.beat();
    }
}

pub(crate) fn host_state(state: &AppState, h: &Host) -> HostState {
    HostState {
        id: h.id.clone(),
        name: h.name.clone(),
        enabled: h.enabled != 0,
        up: host_up(state, h),
        availability_zone: h.availability_zone.clone(),
        hypervisor_type: h.hypervisor_type.clone(),
        cpu_arch: h.cpu_arch.clone(),
        // Agents report capacity already minus their reservations.
        vcpus: h.vcpus,
        memory_mb: h.memory_mb,
        disk_gb: h.disk_gb,
        vcpus_used: h.vcpus_used,
        memory_mb_used: h.memory_mb_used,
        disk_gb_used: h.disk_gb_used,
    }
}

pub(crate) fn flavor_claim(flavor: &Value) -> Claim {
    Claim {
        vcpus: flavor["vcpus"].as_i64().unwrap_or(0),
        memory_mb: flavor["ram"].as_i64().unwrap_or(0),
        disk_gb: flavor["disk"].as_i64().unwrap_or(0) + flavor["ephemeral"].as_i64().unwrap_or(0),
    }
}

pub(crate) fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// Starts (or resumes) a build in the background.
pub fn spawn_build(state: &AppState, instance_id: &str) {
    let (state, id) = (state.clone(), instance_id.to_string());
    tokio::spawn(async move { advance(&state, &id).await });
}

/// Does the next server-side step of a build, whatever step it is at; failures end the build
/// in ERROR with a fault.
pub async fn advance(state: &AppState, id: &str) {
    fail_if_err(state, id, advance_inner(state, id).await).await;
}

async fn fail_if_err(state: &AppState, id: &str, step: Result<()>) {
    if let Err(e) = step {
        if let ConductError::Store(StoreError::Other(cause))
        | ConductError::Network(NetError::Store(StoreError::Other(cause))) = &e
            && crate::error::db_unavailable(cause).is_some()
        {
            // The database is away (restarting, full), not the build at fault: it stays where
            // it is and the tick resumes it once it looks stranded (or fails it at its deadline).
            tracing::warn!(instance = %id, error = %format!("{cause:#}"), "build step deferred: database unavailable");
            return;
        }
        tracing::warn!(instance = %id, error = %e, "build step failed");
        fail_build(state, id, &e.to_string(), &format!("{e:?}")).await;
    }
}

/// Starts the build of an instance the API has just stored, from the row and image it has in
/// hand (no re-reads: the database still guards every step, see [`schedule`]).
pub fn spawn_new_build(state: &AppState, inst: Instance, image: Image) {
    let state = state.clone();
    tokio::spawn(async move {
        let step = schedule_and_dispatch(&state, &inst, Some(image)).await;
        fail_if_err(&state, &inst.id, step).await;
    });
}

async fn advance_inner(state: &AppState, id: &str) -> Result<()> {
    let inst = state.store.get_instance(id).await?;
    if inst.deleted != 0 || inst.vm_state != "building" {
        return Ok(());
    }
    match inst.task_state.as_deref() {
        Some("scheduling") => {
            // One image read serves the scheduler's filters and the build spec.
            let image = state.store.get_image(&inst.image_id).await.ok();
            schedule_and_dispatch(state, &inst, image).await?;
        }
        Some("networking") => dispatch(state, &inst, None, None).await?,
        _ => {}
    }
    Ok(())
}

async fn schedule_and_dispatch(state: &AppState, inst: &Instance, image: Option<Image>) -> Result<()> {
    if let Some((placed, host)) = schedule(state, inst, image.as_ref()).await? {
        dispatch(state, &placed, image, Some(host)).await?;
    }
    Ok(())
}

/// Picks a host and claims on it: the instance as placed and its host, or `None` when the
/// build ended (no valid host) or moved on meanwhile.
async fn schedule(state: &AppState, inst: &Instance, image: Option<&Image>) -> Result<Option<(Instance, Host)>> {
    let flavor: Value = serde_json::from_str(&inst.flavor).map_err(StoreError::from)?;
    let claim = flavor_claim(&flavor);
    let tried = json_list(&inst.tried_hosts);
    // An instance using existing volumes runs on their host (volumes never leave theirs).
    let only_host = match super::bdm::required_host(state, &inst.id).await {
        Ok(h) => h,
        Err(super::bdm::LocalityError::Store(e)) => return Err(e.into()),
        Err(super::bdm::LocalityError::Split(message)) => {
            fail_scheduling(state, &inst.id, &message, "volumes on different hosts").await;
            return Ok(None);
        }
    };
    let s = settings(state);
    let decide = |hosts: &[Host], base: &Request| {
        let snapshot: Vec<HostState> = hosts.iter().map(|h| host_state(state, h)).collect();
        let request = Request {
            ignore_hosts: hosts
                .iter()
                .filter(|h| tried.contains(&h.id) || only_host.as_ref().is_some_and(|o| *o != h.id))
                .map(|h| h.name.clone())
                .collect(),
            ..base.clone()
        };
        scheduler::select(&snapshot, &request, &s)
    };
    // Two rounds: the second, on fresh host data, only when every candidate of the first was
    // refused by the database (claimed meanwhile by another replica or a stale view).
    for round in 0..2 {
        // Read each round: the group's other members may have been placed meanwhile.
        let base = request_for_instance(state, inst, &flavor, image).await?;
        let mut cache = state.hosts.lock().await;
        let mut refreshed = false;
        if round > 0 || !cache.fresh() {
            cache.reload(&state.store).await?;
            refreshed = true;
        }
        let mut decision = decide(&cache.hosts, &base);
        if decision.is_err() && !refreshed {
            // Never refuse on a stale view: capacity may have been freed since it was read.
            cache.reload(&state.store).await?;
            decision = decide(&cache.hosts, &base);
        }
        // Every attempt so far counts against max_attempts (Nova's retry limit).
        let remaining_attempts = s.max_attempts.saturating_sub(tried.len());
        let candidates = match decision {
            Ok(c) if remaining_attempts > 0 => c,
            Ok(_) => {
                drop(cache);
                fail_scheduling(
                    state,
                    &inst.id,
                    "Exceeded maximum number of retries. No valid host was found.",
                    "max_attempts reached",
                )
                .await;
                return Ok(None);
            }
            Err(no) => {
                drop(cache);
                let details = no.rejections.iter().map(|(h, f)| format!("{h}: {f}")).collect::<Vec<_>>().join(", ");
                let message = match &only_host {
                    // Say why: the one host the volumes allow could not take the instance.
                    Some(h) => format!(
                        "{} The instance's volumes are on compute host {h}, which cannot take it ({details}).",
                        no.message()
                    ),
                    None => no.message(),
                };
                fail_scheduling(state, &inst.id, &message, &format!("Filters rejected: {details}")).await;
                return Ok(None);
            }
        };
        // The next decision sees this claim at once; the database claim below is the arbiter.
        if let Some(best) = candidates.first() {
            cache.consume(best, claim);
        }
        // The candidates' rows, from the snapshot they were chosen on (so always there).
        let hosts: Vec<Option<Host>> =
            candidates.iter().map(|id| cache.hosts.iter().find(|h| &h.id == id).cloned()).collect();
        drop(cache);
        // Claim on the best host that still fits (another boot may have taken the room meanwhile).
        for (i, (host_id, host)) in candidates.iter().zip(hosts).enumerate() {
            let Some(host) = host else { continue };
            let mut now_tried = tried.clone();
            now_tried.push(host_id.clone());
            let alternates = json!(candidates[i + 1..]).to_string();
            let placed = state
                .store
                .place_instance(&inst.id, host_id, claim, ratios(state), &alternates, &json!(now_tried).to_string())
                .await?;
            if placed {
                if i > 0 {
                    state.hosts.lock().await.invalidate();
                }
                let placed = Instance {
                    host_id: Some(host_id.clone()),
                    alternates,
                    tried_hosts: json!(now_tried).to_string(),
                    claimed: 1,
                    task_state: Some("networking".into()),
                    ..inst.clone()
                };
                return Ok(Some((placed, host)));
            }
        }
        state.hosts.lock().await.invalidate();
        let fresh = state.store.get_instance(&inst.id).await?;
        if fresh.deleted != 0 || fresh.task_state.as_deref() != Some("scheduling") {
            return Ok(None); // deleted (or moved on) while we were choosing
        }
    }
    fail_scheduling(
        state,
        &inst.id,
        "No valid host was found. There are not enough hosts available.",
        "every candidate was claimed concurrently",
    )
    .await;
    Ok(None)
}

/// Everything the scheduler needs to place an existing instance, as at its boot (Nova's
/// RequestSpec): the flavor's resources, the image's architecture and hypervisor type, the
/// requested availability zone, the scheduler hints stored at boot (`same_host`,
/// `different_host`) resolved to the hosts those instances run on now, and the instance's
/// server group with where its other live members are. `ignore_hosts` is left empty for the
/// caller (the source host of a migration, the hosts already tried). Every scheduling of an
/// instance (build, rebuild on a new host, resize, migrate, evacuate, unshelve) builds its
/// request here, so the same filters apply each time; the placement must then go through a
/// transaction that calls `store::groups::group_admits` (as `Store::place_instance` does).
pub(crate) async fn request_for_instance(
    state: &AppState,
    inst: &Instance,
    flavor: &Value,
    image: Option<&Image>,
) -> std::result::Result<Request, StoreError> {
    let claim = flavor_claim(flavor);
    let props = image.map(properties_of).unwrap_or_default();
    let hints = state.store.scheduler_hints(&inst.id).await?;
    let hosts_of = |key: &str| -> Vec<String> {
        match &hints[key] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => Vec::new(),
        }
    };
    let resolve = async |ids: Vec<String>| -> std::result::Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            match state.store.get_instance(&id).await {
                Ok(i) if i.deleted == 0 => out.extend(i.host_id),
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    };
    let same_host = match hints.get("same_host") {
        Some(_) => Some(resolve(hosts_of("same_host")).await?),
        None => None,
    };
    let different_host = resolve(hosts_of("different_host")).await?;
    let group = match state.store.groups_of_instance(&inst.id).await?.into_iter().next() {
        Some(g) => match scheduler::GroupPolicy::parse(&g.policy) {
            Some(policy) => {
                let mut members_per_host = std::collections::HashMap::new();
                for m in state.store.group_members(&[&g.id]).await? {
                    if m.instance_id != inst.id
                        && let Some(h) = m.host_id
                    {
                        *members_per_host.entry(h).or_insert(0) += 1;
                    }
                }
                Some(scheduler::GroupPlacement {
                    policy,
                    max_server_per_host: g.max_server_per_host(),
                    members_per_host,
                })
            }
            None => None,
        },
        None => None,
    };
    Ok(Request {
        vcpus: claim.vcpus,
        memory_mb: claim.memory_mb,
        disk_gb: claim.disk_gb,
        availability_zone: inst.availability_zone.clone(),
        architecture: props.get("architecture").cloned(),
        hypervisor_type: props.get("img_hv_type").or_else(|| props.get("hypervisor_type")).cloned(),
        ignore_hosts: Vec::new(),
        group,
        same_host,
        different_host,
    })
}

/// An image's free-form properties as strings (what the scheduler and the agent read).
pub(crate) fn properties_of(img: &Image) -> BTreeMap<String, String> {
    img.properties_map()
        .into_iter()
        .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect()
}

/// The requested networks as stored at boot: `{"network_id", "fixed_ip"?}` or `{"port_id"}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct NetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
    /// Security group ids for the port this request creates; empty: the project's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
}

/// Networking, then the build work for the agent (idempotent: ports made before a crash are
/// reused; a live build work item is not queued twice). `placed_on`: the host [`schedule`]
/// has just claimed, on which this build can have no work yet.
async fn dispatch(state: &AppState, inst: &Instance, image: Option<Image>, placed_on: Option<Host>) -> Result<()> {
    let host_id = inst.host_id.clone().ok_or_else(|| ConductError::Invalid("no host chosen".into()))?;
    let fresh = placed_on.is_some();
    let host = match placed_on {
        Some(h) => h,
        None => state.store.get_host(&host_id).await?,
    };
    let nics = ensure_ports(state, inst, &host).await?;
    if !fresh && state.store.live_work(&inst.id, &host_id).await? > 0 {
        return Ok(());
    }
    // The block_device_mapping phase: the build's volumes made and attached on this host.
    let block_devices = super::bdm::prepare(state, inst, &host).await.map_err(ConductError::Invalid)?;
    let mut spec = build_spec(state, inst, nics, image).await?;
    spec.block_devices = block_devices;
    let action = serde_json::to_string(&Action::Build(Box::new(spec))).map_err(StoreError::from)?;
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(state.cfg.compute.build_timeout_secs as i64);
    if state.store.queue_build(&inst.id, &host_id, &host.name, &action, &fmt_time(deadline)).await?.is_none() {
        tracing::debug!(instance = %inst.id, "build already queued on its host (or moved on)");
        return Ok(());
    }
    state.signals.notify(&host_id);
    Ok(())
}

pub(crate) async fn ensure_ports(state: &AppState, inst: &Instance, host: &Host) -> Result<Vec<NicSpec>> {
    let requests: Vec<NetRequest> = serde_json::from_str(&inst.requested_networks).map_err(StoreError::from)?;
    let mut owned = json_list(&inst.owned_ports);
    // Only ports this build made before (recorded in owned_ports) are reused.
    let existing = if owned.is_empty() { Vec::new() } else { state.store.ports_by_device(&inst.id).await? };
    let mut used: Vec<String> = Vec::new();
    let mut nics = Vec::new();
    for r in &requests {
        let nic = if let Some(pid) = &r.port_id {
            let update = PortUpdate {
                device_id: Some(inst.id.clone()),
                device_owner: Some(format!("compute:{}", host.availability_zone)),
                host_id: Some(host.name.clone()),
                ..Default::default()
            };
            nic_of(state, state.store.update_port(pid, &update).await?).await?
        } else {
            let net = r
                .network_id
                .clone()
                .ok_or_else(|| ConductError::Invalid("network request without a network".into()))?;
            let reuse = existing.iter().find(|p| p.network_id == net && owned.contains(&p.id) && !used.contains(&p.id));
            match reuse {
                Some(p) => nic_of(state, state.store.bind_port(&p.id, &host.name).await?).await?,
                None => {
                    let mut np = NewPort::new(&inst.project_id, &net);
                    np.device_id = inst.id.clone();
                    np.device_owner = format!("compute:{}", host.availability_zone);
                    np.host_id = host.name.clone();
                    if !r.security_groups.is_empty() {
                        np.security_groups = Some(r.security_groups.clone());
                    }
                    if let Some(ip) = &r.fixed_ip {
                        let addr =
                            ip.parse().map_err(|_| ConductError::Invalid(format!("Invalid fixed IP address {ip}")))?;
                        np.fixed_ips = Some(vec![IpRequest { subnet_id: None, ip_address: Some(addr) }]);
                    }
                    owned.push(np.id.clone());
                    let made = state.store.create_instance_port(np, &inst.id, &json!(owned).to_string()).await?;
                    nic_spec(&made.port, made.mtu, &made.subnets)?
                }
            }
        };
        used.push(nic.port_id.clone());
        nics.push(nic);
    }
    Ok(nics)
}

/// What a host needs to plug an existing port (its network's MTU, its subnets' settings).
pub(crate) async fn nic_of(state: &AppState, port: Port) -> Result<NicSpec> {
    let network = state.store.get_network(&port.network_id).await?;
    let mut subnets = Vec::new();
    for ip in &port.fixed_ips {
        subnets.push(state.store.get_subnet(&ip.subnet_id).await?);
    }
    nic_spec(&port, network.mtu, &subnets)
}

pub(crate) fn nic_spec(port: &Port, mtu: i64, subnets: &[Subnet]) -> Result<NicSpec> {
    let mut ips = Vec::new();
    for ip in &port.fixed_ips {
        let subnet = subnets
            .iter()
            .find(|s| s.id == ip.subnet_id)
            .ok_or_else(|| ConductError::Invalid(format!("subnet {} of port {} is gone", ip.subnet_id, port.id)))?;
        ips.push(FixedIp {
            address: ip.ip_address.clone(),
            cidr: subnet.cidr.clone(),
            gateway: subnet.gateway_ip.clone(),
            dns_nameservers: subnet.dns_list(),
        });
    }
    Ok(NicSpec {
        port_id: port.id.clone(),
        mac_address: port.mac_address.clone(),
        network_id: port.network_id.clone(),
        mtu: u32::try_from(mtu).unwrap_or(1500),
        ips,
    })
}

/// The build spec of an instance as it is now (its ports as they are, its image even if
/// deleted since): what the metadata service renders, through the same generator as the
/// agent's config drive, which renders the spec the build carried.
pub(crate) async fn current_spec(state: &AppState, inst: &Instance) -> Result<BuildSpec> {
    let filter = crate::store::network::PortFilter { device_id: Some(inst.id.clone()), ..Default::default() };
    let mut nics = Vec::new();
    for port in state.store.list_ports(&filter).await? {
        nics.push(nic_of(state, port).await?);
    }
    let image = match state.store.get_image(&inst.image_id).await {
        Ok(img) => img,
        // Deleting an image does not change what its instances were booted from.
        Err(StoreError::NotFound(_)) => Image { id: inst.image_id.clone(), ..Default::default() },
        Err(e) => return Err(e.into()),
    };
    build_spec(state, inst, nics, Some(image)).await
}

pub(crate) async fn build_spec(
    state: &AppState,
    inst: &Instance,
    nics: Vec<NicSpec>,
    image: Option<Image>,
) -> Result<BuildSpec> {
    let f: Value = serde_json::from_str(&inst.flavor).map_err(StoreError::from)?;
    let img = match image {
        Some(img) => img,
        // A volume-booted instance without an image: the volume's image metadata, if any.
        None if inst.image_id.is_empty() => volume_boot_image(state, inst).await?,
        None => state.store.get_image(&inst.image_id).await?,
    };
    let extra_specs: BTreeMap<String, String> = serde_json::from_value(f["extra_specs"].clone()).unwrap_or_default();
    let metadata: BTreeMap<String, String> = serde_json::from_str(&inst.metadata).unwrap_or_default();
    let as_u64 = |v: &Value| v.as_u64().unwrap_or(0);
    let security_groups =
        state.store.group_names_by_device(&[inst.id.as_str()]).await?.remove(&inst.id).unwrap_or_default();
    Ok(BuildSpec {
        name: inst.name.clone(),
        hostname: inst.hostname.clone(),
        flavor: FlavorSpec {
            name: f["name"].as_str().unwrap_or_default().to_string(),
            vcpus: u32::try_from(as_u64(&f["vcpus"])).unwrap_or(1),
            ram_mb: as_u64(&f["ram"]),
            disk_gb: as_u64(&f["disk"]),
            ephemeral_gb: as_u64(&f["ephemeral"]),
            swap_mb: as_u64(&f["swap"]),
            extra_specs,
        },
        image: ImageSpec {
            id: img.id.clone(),
            size: img.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            checksum: img.checksum.clone().unwrap_or_default(),
            disk_format: img.disk_format.clone().unwrap_or_else(|| "raw".into()),
            properties: properties_of(&img),
        },
        nics,
        user_data: inst.user_data.clone(),
        metadata,
        public_key: inst.key_data.clone(),
        key_name: inst.key_name.clone(),
        project_id: inst.project_id.clone(),
        reservation_id: inst.reservation_id.clone(),
        launch_index: u32::try_from(inst.launch_index).unwrap_or(0),
        config_drive: !inst.config_drive.is_empty(),
        security_groups,
        block_devices: Vec::new(),
        local_disks: super::bdm::local_disks_spec(state, &inst.id).await?,
    })
}

/// The image a volume-booted instance's spec describes: the boot volume's image, as far as
/// its image metadata tells, else a blank raw one.
async fn volume_boot_image(state: &AppState, inst: &Instance) -> Result<Image> {
    let boot = state.store.instance_bdms(&inst.id).await?.into_iter().find(|b| b.boot_index == Some(0));
    let mut img = Image { status: "active".into(), ..Default::default() };
    if let Some(vid) = boot.and_then(|b| b.volume_id)
        && let Some(meta) = state.store.volume_image_metadata(&vid).await?
    {
        let meta: BTreeMap<String, String> = serde_json::from_str(&meta).unwrap_or_default();
        let props: serde_json::Map<String, Value> = meta
            .iter()
            .filter(|(k, _)| !crate::volume::from_image::BASE_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        img.id = meta.get("image_id").cloned().unwrap_or_default();
        img.properties = Value::Object(props).to_string();
    }
    img.disk_format = Some("raw".into());
    Ok(img)
}

/// Ends a build in ERROR with a fault, releases its claim and cancels its work.
pub async fn fail_build(state: &AppState, id: &str, message: &str, details: &str) {
    fail_build_if(state, id, Expect::Any, message, details).await;
}

/// [`fail_build`] for a scheduling decision: only while the instance is still unplaced. Two
/// conductor paths may schedule one build at once (the one that started it and the tick that
/// finds it idle after a pause); the one that lost must not fail the build the other placed.
async fn fail_scheduling(state: &AppState, id: &str, message: &str, details: &str) {
    fail_build_if(state, id, Expect::Task(Some("scheduling")), message, details).await;
}

/// The task states of a build in progress: a deadline or a host's failure report ends only
/// a build still in one of them (not one that finished a moment before).
const BUILD_TASKS: &[&str] = &["scheduling", "networking", "block_device_mapping", "spawning"];

async fn fail_build_if(state: &AppState, id: &str, expect: Expect<'_>, message: &str, details: &str) {
    let result: Result<()> = async {
        let to = NewState { vm_state: "error", task_state: None, power_state: Some(0) };
        let fault = json!({"code": 500, "message": message, "details": details, "created": nova_time(&now())});
        if state.store.transition_with_fault(id, expect, to, &fault.to_string()).await?.is_none() {
            return Ok(()); // moved on meanwhile: not this caller's build to fail
        }
        state.store.cancel_work(id, None).await?;
        state.store.release_instance_claim(id).await?;
        state.store.set_instance_deadline(id, None).await?;
        state.store.finish_named_action(id, "create", "Error", Some("Error"), Some(details)).await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::error!(instance = %id, error = %e, "could not record a build failure");
    }
}

/// Nova's timestamp format in server bodies: `2012-08-20T21:11:09Z`.
pub fn nova_time(stored: &str) -> String {
    parse_time(stored).map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_else(|| stored.to_string())
}

/// Applies one agent event to the work item's instance.
pub async fn on_event(state: &AppState, work: &Work, event: WorkEvent) -> Result<()> {
    let action: Action = serde_json::from_str(&work.action).map_err(StoreError::from)?;
    let id = work.instance_id.as_str();
    // An evacuation's rebuild on its new host (and the power-off after it): `evacuate`.
    if let Some(m) = super::evacuate::owns(state, work, &action).await? {
        return super::evacuate::on_event(state, work, &action, &m, event).await;
    }
    // The power changes of soft delete, restore and a stopped server's rebuild: `rebuild`.
    if matches!(action, Action::Stop | Action::Start) {
        let task = state.store.get_instance(id).await?.task_state;
        if super::rebuild::applies(&action, task.as_deref()) {
            return super::rebuild::on_event(state, work, &action, event).await;
        }
    }
    // Snapshots, backups and shelving (and the offload, unshelve build or start of a shelved
    // server): `server_images` applies them.
    if super::server_images::owns(state, work, &action).await? {
        return super::server_images::on_event(state, work, &action, event).await;
    }
    match (&action, event) {
        // Block storage work: `volume::work` applies it.
        (
            Action::VolumeCreate { .. }
            | Action::VolumeExtend { .. }
            | Action::VolumeDelete { .. }
            | Action::SnapshotCreate { .. }
            | Action::SnapshotDelete { .. }
            | Action::VolumeUploadImage { .. }
            | Action::VolumeRevert { .. }
            | Action::VolumeAttach { .. }
            | Action::VolumeDetach { .. },
            event,
        ) => crate::volume::work::on_event(state, work, &action, event).await?,
        // Pause, unpause, suspend and resume: `lifecycle` applies them.
        (Action::Pause | Action::Unpause | Action::Suspend | Action::Resume, event) => {
            super::lifecycle::on_event(state, work, &action, event).await?
        }
        // Rebuild, rescue and unrescue: `rebuild` applies them.
        (Action::Rebuild(_) | Action::Rescue { .. } | Action::Unrescue, event) => {
            super::rebuild::on_event(state, work, &action, event).await?
        }
        // Interfaces and diagnostics: `interfaces` applies them.
        (Action::InterfaceAttach { .. } | Action::InterfaceDetach { .. } | Action::Diagnostics, event) => {
            super::interfaces::on_event(state, work, &action, event).await?
        }
        // `server_images::owns` took every snapshot it started, above.
        (Action::ImageCreate { .. }, _) => {
            return Err(ConductError::Invalid("no snapshot of this server is waiting for that work".into()));
        }
        // Resize, cold migration and their confirm/revert: `migrations` applies them.
        (
            Action::MigrateOut { .. }
            | Action::MigrateIn { .. }
            | Action::ResizeLocal { .. }
            | Action::ResizeLocalRevert { .. }
            | Action::MigrateRevert { .. }
            | Action::MigrateCleanup { .. },
            event,
        ) => super::migrations::on_event(state, work, &action, event).await?,
        // Live migration's two host steps: `live_migration` applies them.
        (Action::LiveMigrateIn { .. } | Action::LiveMigrateOut { .. }, event) => {
            super::live_migration::on_event(state, work, &action, event).await?
        }
        // Console sessions are never stored as work, so no event can name one.
        (Action::Console { .. }, _) => {
            return Err(ConductError::Invalid("console sessions report no events".into()));
        }
        (Action::Build(_), WorkEvent::Progress { task_state }) => {
            if !matches!(task_state.as_str(), "block_device_mapping" | "spawning") {
                return Err(ConductError::Invalid(format!("unknown build progress '{task_state}'")));
            }
            state.store.build_progress(id, &task_state).await?;
        }
        (_, WorkEvent::Progress { task_state }) => {
            let inst = state.store.get_instance(id).await?;
            if inst.deleted == 0 && inst.task_state.as_deref() != Some("deleting") {
                state
                    .store
                    .transition(
                        id,
                        Expect::Any,
                        NewState { vm_state: &inst.vm_state, task_state: Some(&task_state), power_state: None },
                    )
                    .await?;
            }
        }
        (Action::Build(_), WorkEvent::Done { power_state, config_drive, .. }) => {
            if state.store.complete_build(&work.id, id, power_state.code(), config_drive).await? {
                crate::ops::record_build_phases(state, id).await;
            }
        }
        (Action::Build(_), WorkEvent::Failed { message, details, retryable }) => {
            if state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                reschedule_or_fail(state, id, &message, &details, retryable).await?;
            }
        }
        (Action::Stop, WorkEvent::Done { power_state, .. }) => {
            finish_simple(state, work, "stopped", power_state, "stop").await?;
        }
        (Action::Start, WorkEvent::Done { power_state, .. })
        | (Action::Reboot { .. }, WorkEvent::Done { power_state, .. }) => {
            let name = if matches!(action, Action::Start) { "start" } else { "reboot" };
            finish_simple(state, work, "active", power_state, name).await?;
        }
        (Action::Delete, WorkEvent::Done { .. }) => {
            if state.store.finish_work(&work.id, "done", None).await? {
                complete_delete(state, id).await?;
            }
        }
        (Action::ConsoleLog { .. }, WorkEvent::Done { console, .. }) => {
            state.store.finish_work(&work.id, "done", Some(console.as_deref().unwrap_or(""))).await?;
            state.signals.notify(&work.id);
        }
        (Action::ConsoleLog { .. }, WorkEvent::Failed { message, .. }) => {
            state.store.finish_work(&work.id, "failed", Some(&message)).await?;
            state.signals.notify(&work.id);
        }
        (Action::Delete, WorkEvent::Failed { message, details, .. }) => {
            // The guest could not be removed: ERROR, still deletable again.
            if state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                action_failed(state, id, "delete", "error", &message, &details).await?;
            }
        }
        (_, WorkEvent::Failed { message, details, .. }) => {
            if state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                let inst = state.store.get_instance(id).await?;
                let name = match action {
                    Action::Stop => "stop",
                    Action::Start => "start",
                    _ => "reboot",
                };
                // Like Nova: the task is cleared, the vm_state stays, the action records the error.
                action_failed(state, id, name, &inst.vm_state, &message, &details).await?;
            }
        }
    }
    Ok(())
}

async fn finish_simple(state: &AppState, work: &Work, vm: &str, power: PowerState, name: &str) -> Result<()> {
    if state.store.finish_work(&work.id, "done", None).await? {
        let to = NewState { vm_state: vm, task_state: None, power_state: Some(power.code()) };
        state.store.transition(&work.instance_id, Expect::Any, to).await?;
        state.store.finish_named_action(&work.instance_id, name, "Success", None, None).await?;
    }
    Ok(())
}

async fn action_failed(state: &AppState, id: &str, name: &str, vm: &str, message: &str, details: &str) -> Result<()> {
    state.store.transition(id, Expect::Any, NewState { vm_state: vm, task_state: None, power_state: None }).await?;
    state.store.finish_named_action(id, name, "Error", Some("Error"), Some(details)).await?;
    tracing::warn!(instance = %id, action = name, %message, "action failed on the host");
    Ok(())
}

/// A failed build goes to the next host if attempts remain and the failure may be transient.
async fn reschedule_or_fail(state: &AppState, id: &str, message: &str, details: &str, retryable: bool) -> Result<()> {
    let inst = state.store.get_instance(id).await?;
    if inst.deleted != 0 {
        return Ok(());
    }
    let tried = json_list(&inst.tried_hosts);
    if !retryable || tried.len() >= state.cfg.compute.max_attempts {
        let message = format!("Build of instance {id} failed: {message}");
        fail_build_if(state, id, Expect::OneOf(BUILD_TASKS), &message, details).await;
        return Ok(());
    }
    if let Some(host) = &inst.host_id {
        state.store.cancel_work(id, Some(host)).await?;
        unbind_ports(state, id).await?;
    }
    if state.store.requeue_instance(id).await? {
        tracing::info!(instance = %id, %message, "rescheduling the build on another host");
        spawn_build(state, id);
    }
    Ok(())
}

pub(crate) async fn unbind_ports(state: &AppState, id: &str) -> Result<()> {
    for p in state.store.ports_by_device(id).await? {
        state.store.bind_port(&p.id, "").await?;
    }
    Ok(())
}

/// The end of a delete: ports this server made are deleted, others detached; the claim goes
/// back; the instance is marked deleted.
pub async fn complete_delete(state: &AppState, id: &str) -> Result<()> {
    let inst = state.store.get_instance(id).await?;
    let owned = json_list(&inst.owned_ports);
    for p in state.store.ports_by_device(id).await? {
        if owned.contains(&p.id) {
            match state.store.delete_port(&p.id).await {
                Ok(()) | Err(NetError::Fault { status: 404, .. }) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            let detach = PortUpdate {
                device_id: Some(String::new()),
                device_owner: Some(String::new()),
                host_id: Some(String::new()),
                ..Default::default()
            };
            state.store.update_port(&p.id, &detach).await?;
        }
    }
    state.store.cancel_work(id, None).await?;
    // Its volumes outlive it (the domain that used them is gone).
    crate::volume::work::instance_gone(state, id).await?;
    super::server_images::instance_deleted(state, id).await?;
    // Its migrations end; another host's copy is removed there.
    super::migrations::instance_gone(state, id).await?;
    state.store.mark_instance_deleted(id).await?;
    state.store.finish_named_action(id, "delete", "Success", None, None).await?;
    Ok(())
}

/// Housekeeping every second: resume stranded builds, fail overdue ones, reschedule builds on
/// hosts that went down, and finish deletes on hosts that are gone.
pub async fn tick(state: &AppState) -> Result<()> {
    super::server_images::offload_due(state).await?;
    let hosts = state.store.list_hosts().await?;
    let down: Vec<&Host> = hosts.iter().filter(|h| !host_up(state, h)).collect();
    let now_t = chrono::Utc::now();
    for inst in state.store.unfinished_instances().await? {
        let on_down_host = inst.host_id.as_ref().and_then(|h| down.iter().find(|d| d.id == *h));
        // An unshelve never outlives its deadline either.
        if super::server_images::tick_instance(state, &inst, now_t).await? {
            continue;
        }
        // An evacuation past its deadline fails (the server ERROR, still on its source).
        if super::evacuate::enforce_deadline(state, &inst, now_t).await? {
            continue;
        }
        // A live migration past its deadline ends (the guest stays on its source).
        if super::live_migration::enforce_deadline(state, &inst, now_t).await? {
            continue;
        }
        // A migration step past its deadline is rolled back (the guest back on its source).
        if super::migrations::enforce_deadline(state, &inst, now_t).await? {
            continue;
        }
        // A host-side action (stop, pause, suspend, …) never outlives its deadline.
        if super::lifecycle::enforce_deadline(state, &inst, now_t).await? {
            continue;
        }
        if inst.task_state.as_deref() == Some("deleting") {
            // The host is gone: delete locally, as Nova does when the compute service is down.
            if on_down_host.is_some() || inst.host_id.is_none() {
                complete_delete(state, &inst.id).await?;
            }
            continue;
        }
        if inst.vm_state != "building" {
            continue;
        }
        if inst.build_deadline.as_deref().and_then(parse_time).is_some_and(|d| d < now_t) {
            let msg = format!(
                "Build of instance {} timed out after {} seconds",
                inst.id, state.cfg.compute.build_timeout_secs
            );
            fail_build_if(state, &inst.id, Expect::OneOf(BUILD_TASKS), &msg, "build_timeout_secs exceeded").await;
            continue;
        }
        if let Some(host) = on_down_host {
            let msg = format!("Compute host {} stopped responding during the build", host.name);
            reschedule_or_fail(state, &inst.id, &msg, "host missed its heartbeats", true).await?;
            continue;
        }
        // Stranded before the agent got work (e.g. the server restarted mid-build).
        let idle_for = parse_time(&inst.updated_at).map(|t| now_t - t).unwrap_or_default();
        if idle_for <= chrono::Duration::seconds(2) {
            continue; // moving along (checked first: it costs no query)
        }
        let stranded = match inst.task_state.as_deref() {
            Some("scheduling") => true,
            Some("networking") => match &inst.host_id {
                Some(h) => state.store.live_work(&inst.id, h).await? == 0,
                None => true,
            },
            _ => false,
        };
        if stranded {
            advance(state, &inst.id).await;
        }
    }
    // Soft-deleted servers past `reclaim_instance_interval` are deleted for good.
    super::rebuild::reclaim(state).await?;
    super::migrations::tick(state).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::Liveness;

    #[test]
    fn a_pause_is_noticed_once_and_only_with_a_watchdog() {
        let l = Liveness::default();
        assert!(l.resumed_at().is_none(), "no watchdog: never paused");
        l.beat();
        assert!(l.resumed_at().is_none(), "beating: not paused");
        // The process stopped for 10 s; whoever runs first notices.
        let now = chrono::Utc::now();
        l.last_beat.store(now.timestamp_millis() - 10_000, Ordering::SeqCst);
        let resumed = l.resumed_at().expect("the pause is noticed");
        assert!((resumed - now).num_milliseconds().abs() < 1000, "{resumed} vs {now}");
        l.beat();
        assert_eq!(l.resumed_at(), Some(resumed), "one pause, one resume");
    }
}
