//! The controller: carries out one [`Work`] item against the hypervisor.
//!
//! Each item starts by reading the domain's state and asking [`lifecycle::decide`] whether the
//! operation may run; rejected operations fail with the reason, operations whose outcome
//! already holds succeed without side effects. Hypervisor calls run on blocking threads.
//!
//! Per instance, the agent keeps `instances/<id>/` in the state directory: `disk` (the qcow2
//! overlay), `console.log`, and `instance.json` (the images and network plugs to undo on
//! delete).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_common::agent::{
    Action, BuildSpec, ExtendAttached, ImageSpec, InstanceReport, PowerState, VolumeSource, VolumeSpec, WorkEvent,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use crate::config_drive::{self, ConfigDriveError, DriveContext};
use crate::disk::{self, DiskError};
use crate::hypervisor::{DomainState, HvError, Hypervisor};
use crate::image_cache::{ImageCache, ImageError, ImageRef, Lease};
use crate::lifecycle::{self, Decision, InstanceState, Rejected};
use crate::metadata_proxy::MetadataProxies;
use crate::storage::file::FileStorage;
use crate::storage::{CloneSource, Storage};
use crate::work::Work;
use crate::xml::{self, DiskBus, DomainSpec, KernelBoot, NetworkSpec, NicXml, VirtType};

mod live_migration;
mod rescue;

pub use live_migration::MigrationEndpoint;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error("invalid build request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Hypervisor(#[from] HvError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("cannot build the config drive")]
    ConfigDrive(#[from] ConfigDriveError),
    #[error("cannot write the instance's files")]
    Files(#[source] std::io::Error),
    #[error("cannot set up the network's firewall")]
    Firewall(#[source] crate::firewall::FirewallError),
    #[error("{0}")]
    PortFilters(String),
    #[error("a hypervisor call panicked")]
    Panicked,
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("volume {volume} is in use by domain {domain}; it is not deleted")]
    VolumeInUse { volume: String, domain: String },
    #[error("cannot send volume {volume}'s bytes to image {image}")]
    Upload {
        volume: String,
        image: String,
        #[source]
        source: meridian_common::client::ClientError,
    },
    #[error("cannot send the instance's disk to image {image}")]
    ImageUpload {
        image: String,
        #[source]
        source: meridian_common::client::ClientError,
    },
    #[error("cannot move the disk of migration {migration} through the server")]
    Relay {
        migration: String,
        #[source]
        source: meridian_common::client::ClientError,
    },
    #[error("the guest did not release volume {volume} (device {device}) within {secs} s")]
    NotReleased { volume: String, device: String, secs: u64 },
    #[error("the guest did not release the interface with MAC {mac} within {secs} s")]
    InterfaceNotReleased { mac: String, secs: u64 },
}

impl ActionError {
    /// Whether the same work may succeed if tried again.
    pub fn retryable(&self) -> bool {
        match self {
            ActionError::Image(e) => e.retryable(),
            ActionError::Files(_) => true,
            // Another host may have its filters in time.
            ActionError::PortFilters(_) => true,
            _ => false,
        }
    }

    /// The `Failed` event for this error: the whole cause chain as the message.
    pub fn to_event(&self) -> WorkEvent {
        WorkEvent::Failed { message: chain(self), details: format!("{self:?}"), retryable: self.retryable() }
    }
}

/// "outer: cause: cause" for any error.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// What a build set up that delete must undo.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct InstanceRecord {
    images: Vec<String>,
    plugs: Vec<Plug>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Plug {
    network: String,
    mac: String,
}

/// Where a build's root disk comes from.
#[derive(Clone, Debug)]
enum RootDisk {
    /// A new overlay on the image (a build).
    New,
    /// The instance's own disk, kept and grown to the flavor (a resize in place).
    Keep,
    /// A disk another host sent (a migration), moved into place, rebased on this host's copy
    /// of the image and grown to the flavor.
    Incoming(PathBuf),
}

/// How the controller is set up.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// `STATE_DIR/instances`.
    pub instances_dir: PathBuf,
    pub virt_type: VirtType,
    pub arch: String,
    pub supports_networks: bool,
    /// How long a graceful shutdown may take before the domain is destroyed.
    pub stop_timeout: Duration,
    /// Whether every instance gets a config drive; otherwise only those whose user asked.
    pub config_drive_always: bool,
    pub config_drive_format: config_drive::Format,
    /// Written into the config drive's metadata.
    pub availability_zone: String,
    /// When the agent filters traffic: each network's bridge gets conntrack for bridged
    /// traffic as soon as it exists (the port filters may have been applied before it did),
    /// and a build starts its guest only once its ports' filters are in force.
    pub firewall: Option<Arc<crate::firewall::Enforcer>>,
    /// Domain names and libvirt UUIDs (`--domain-tag`).
    pub naming: xml::Naming,
    /// Where this host receives live guests; `None`: it receives none.
    pub migration: Option<MigrationEndpoint>,
}

/// How long a build waits for the server's port filters to name its ports (Nova's
/// `vif_plugging_timeout` is 300 s; the feed answers within a second of the placement).
const PORT_FILTER_WAIT: Duration = Duration::from_secs(30);

/// Runs work items. Shared as `Arc<Controller>`.
pub struct Controller {
    hv: Arc<dyn Hypervisor>,
    images: Arc<ImageCache>,
    cfg: ControllerConfig,
    /// Serialises network set-up and tear-down across instances.
    net_lock: tokio::sync::Mutex<()>,
    /// The metadata proxies of this host's networks (none on the test driver: no bridges).
    metadata: Option<Arc<MetadataProxies>>,
    /// Where volumes' bytes live.
    storage: Arc<dyn Storage>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("cfg", &self.cfg).finish()
    }
}

/// The copy of the root disk a resize in place keeps for a revert (in the instance's directory).
const RESIZE_BACKUP: &str = "disk.resize-backup";
/// The largest console log tail read (from the end of the file).
const CONSOLE_MAX_BYTES: u64 = 1 << 20;
const STATE_POLL: Duration = Duration::from_millis(250);
/// How long a guest may take to release a volume being detached.
const DETACH_WAIT: Duration = Duration::from_secs(60);

/// What a finished action hands back besides the power state: `Done.console` (the console
/// log) or `Done.data` (diagnostics, the live migration's answers).
enum Output {
    Nothing,
    Console(String),
    Data(serde_json::Value),
}

impl Controller {
    /// Opens the instances directory and pins, in the image cache, the images every recorded
    /// instance's disk uses.
    pub fn new(hv: Arc<dyn Hypervisor>, images: Arc<ImageCache>, cfg: ControllerConfig) -> std::io::Result<Controller> {
        std::fs::create_dir_all(&cfg.instances_dir)?;
        for entry in std::fs::read_dir(&cfg.instances_dir)?.filter_map(Result::ok) {
            let instance = entry.file_name().to_string_lossy().into_owned();
            let Ok(bytes) = std::fs::read(entry.path().join("instance.json")) else { continue };
            match serde_json::from_slice::<InstanceRecord>(&bytes) {
                Ok(record) => record.images.iter().for_each(|image| images.pin(image, &instance)),
                Err(e) => warn!(%instance, error = %e, "unreadable instance record; its images are not pinned"),
            }
        }
        // Volumes sit beside the instances directory (`STATE_DIR/volumes`) unless
        // [`Controller::with_storage`] picks another backend.
        let storage = Arc::new(FileStorage::open(&cfg.instances_dir.with_file_name("volumes"))?);
        Ok(Controller { hv, images, cfg, net_lock: tokio::sync::Mutex::new(()), metadata: None, storage })
    }

    /// Runs a metadata proxy on every network the controller plugs (see [`crate::metadata_proxy`]).
    pub fn with_metadata_proxies(self, proxies: Arc<MetadataProxies>) -> Controller {
        Controller { metadata: Some(proxies), ..self }
    }

    /// Starts the metadata proxies of the networks this host's instances use (after an agent
    /// restart: the bridges outlive the agent, its listeners do not).
    pub async fn restore_metadata_proxies(&self) {
        let Some(proxies) = &self.metadata else { return };
        for network in self.networks_in_use(&Uuid::nil()).await {
            let Some(id) = network.strip_prefix(xml::NAME_PREFIX) else { continue };
            if let Err(e) = proxies.ensure(id, &xml::bridge_name(id)).await {
                warn!(network = id, error = %chain(&e), "no metadata service for this network's guests");
            }
        }
    }

    /// Uses another volume backend.
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Controller {
        self.storage = storage;
        self
    }

    /// Runs a blocking storage call off the executor.
    async fn store<T, F>(&self, f: F) -> Result<T, ActionError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Storage) -> Result<T, crate::storage::StorageError> + Send + 'static,
    {
        let s = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || f(s.as_ref()))
            .await
            .map_err(|_| ActionError::Panicked)?
            .map_err(ActionError::from)
    }

    /// Volume-only work (keyed by the volume's id, no domain involved).
    async fn volume_work(&self, action: &Action) -> Result<(), ActionError> {
        match action {
            Action::VolumeCreate { volume, source: Some(VolumeSource::Image { image }) } => {
                self.volume_from_image(volume, image).await
            }
            Action::VolumeCreate { volume, source: Some(VolumeSource::Snapshot { snapshot_id }) } => {
                let (v, id) = (volume.clone(), snapshot_id.clone());
                self.store(move |s| s.create_from(&v, CloneSource::Snapshot(&id))).await
            }
            Action::VolumeCreate { volume, source: Some(VolumeSource::Volume { volume_id }) } => {
                let (v, id) = (volume.clone(), volume_id.clone());
                self.store(move |s| s.create_from(&v, CloneSource::Volume(&id))).await
            }
            Action::SnapshotCreate { volume, snapshot_id, instance_id } => {
                self.snapshot(&volume.id, snapshot_id, instance_id.as_deref()).await
            }
            Action::SnapshotDelete { snapshot_id, .. } => {
                let id = snapshot_id.clone();
                self.store(move |s| s.snapshot_delete(&id)).await
            }
            Action::VolumeRevert { volume, snapshot_id } => {
                let (v, id) = (volume.id.clone(), snapshot_id.clone());
                self.store(move |s| s.revert(&v, &id)).await
            }
            Action::VolumeUploadImage { volume, image_id, disk_format } => {
                self.upload_image(&volume.id, image_id, disk_format).await
            }
            Action::VolumeCreate { volume, source: None } => {
                let v = volume.clone();
                self.store(move |s| s.create(&v)).await
            }
            Action::VolumeExtend { volume, attached } => {
                let v = volume.clone();
                self.store(move |s| s.extend(&v)).await?;
                match attached {
                    Some(att) => self.resize_in_guest(volume, att).await,
                    None => Ok(()),
                }
            }
            Action::VolumeDelete { volume } => {
                // Never while any domain (running or only defined) still has it.
                let id = volume.id.clone();
                let locator = self.store(move |s| s.locator(&id)).await?;
                for d in self.hv(|hv| hv.domains()).await? {
                    let name = d.name.clone();
                    let xml = self.hv(move |hv| hv.domain_config_xml(&name)).await.unwrap_or_default();
                    if xml::disks(&xml).iter().any(|(_, src)| *src == locator) {
                        return Err(ActionError::VolumeInUse { volume: volume.id.clone(), domain: d.name });
                    }
                }
                let id = volume.id.clone();
                self.store(move |s| s.delete(&id)).await
            }
            _ => Err(ActionError::Invalid("not volume work".into())),
        }
    }

    /// After an extend of an attached volume: a running guest that has the disk is told its
    /// new size (block resize), so the guest sees it at once; a stopped or absent domain reads
    /// the grown file when it starts, so there is nothing to tell.
    async fn resize_in_guest(&self, v: &VolumeSpec, att: &ExtendAttached) -> Result<(), ActionError> {
        let id = Uuid::parse_str(&att.instance_id)
            .map_err(|_| ActionError::Invalid(format!("instance id {} is not a uuid", att.instance_id)))?;
        let name = self.cfg.naming.domain(&id);
        let state = self.state(&name).await?;
        if !matches!(state, InstanceState::Running | InstanceState::Paused) {
            return Ok(());
        }
        let (in_live, _) = self.has_disk(&name, &att.device).await?;
        if !in_live {
            return Ok(());
        }
        let (n, dev, bytes) = (name.clone(), att.device.clone(), v.size_gb.saturating_mul(1 << 30));
        if !self.hv(move |hv| hv.block_resize(&n, &dev, bytes)).await? {
            tracing::info!(domain = %name, device = %att.device, "driver cannot resize a live disk; the guest sees the size at its next start");
        }
        Ok(())
    }

    /// Copies a volume as a snapshot. With `instance` (the volume is in use) a running guest is
    /// paused for the copy, so the snapshot is crash-consistent, and resumed afterwards (also
    /// when the copy failed).
    async fn snapshot(&self, volume: &str, snapshot: &str, instance: Option<&str>) -> Result<(), ActionError> {
        let (v, s) = (volume.to_string(), snapshot.to_string());
        let copy = move |st: &dyn Storage| st.snapshot_create(&v, &s);
        let domain = instance.and_then(|i| Uuid::parse_str(i).ok()).map(|id| self.cfg.naming.domain(&id));
        let Some(name) = domain else { return self.store(copy).await };
        let paused = match self.state(&name).await? {
            InstanceState::Running => {
                let n = name.clone();
                self.hv(move |hv| hv.pause(&n)).await?;
                true
            }
            // Already paused, or not running: nothing writes meanwhile.
            _ => false,
        };
        let copied = self.store(copy).await;
        if paused {
            let n = name.clone();
            if let Err(e) = self.hv(move |hv| hv.unpause(&n)).await {
                warn!(domain = %name, error = %chain(&e), "guest not resumed after its volume's snapshot");
                copied?;
                return Err(e);
            }
        }
        copied
    }

    /// Sends a volume's bytes (as `disk_format`) to the server as image `image`'s data,
    /// streamed from a blocking reader thread.
    async fn upload_image(&self, volume: &str, image: &str, disk_format: &str) -> Result<(), ActionError> {
        let (id, fmt) = (volume.to_string(), disk_format.to_string());
        let export = self.store(move |s| s.export(&id, &fmt)).await?;
        let len = export.len;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(8);
        let mut reader = export.reader;
        let pump = tokio::task::spawn_blocking(move || {
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match std::io::Read::read(&mut reader, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        let sent = self.images.server().upload_image(image, reqwest::Body::wrap_stream(stream), len).await;
        // The reader thread ends once the body is dropped (its sends fail).
        let _ = pump.await;
        sent.map_err(|source| ActionError::Upload { volume: volume.to_string(), image: image.to_string(), source })
    }

    /// A new volume holding an image: the image comes through the cache (as a build's base,
    /// checksum checked), is converted to raw into the volume and grown to its size.
    async fn volume_from_image(&self, volume: &VolumeSpec, image: &ImageSpec) -> Result<(), ActionError> {
        let format = disk::qemu_format(&image.disk_format)?;
        let lease = self
            .images
            .acquire(&ImageRef {
                id: image.id.clone(),
                checksum: Some(image.checksum.clone()).filter(|c| !c.is_empty()),
                size: Some(image.size).filter(|s| *s > 0),
            })
            .await?;
        let (v, path) = (volume.clone(), lease.path().to_path_buf());
        // The lease keeps the cached image from eviction until the copy is made.
        let made = self.store(move |s| s.create_from_image(&v, &path, format)).await;
        drop(lease);
        made
    }

    /// Plugs a volume into the domain: the definition always, the guest when it runs. A repeat
    /// (the device already there) changes nothing.
    async fn attach_volume(
        &self,
        name: &str,
        state: InstanceState,
        v: &VolumeSpec,
        dev: &str,
    ) -> Result<(), ActionError> {
        let id = v.id.clone();
        if !self.store(move |s| s.exists(&id)).await? {
            return Err(crate::storage::StorageError::Missing(v.id.clone()).into());
        }
        let running = matches!(state, InstanceState::Running | InstanceState::Paused);
        let (in_live, in_config) = self.has_disk(name, dev).await?;
        let live = running && !in_live;
        if !live && in_config {
            return Ok(());
        }
        let (spec, device) = (v.clone(), dev.to_string());
        let disk = self.store(move |s| crate::storage::disk_xml(s, &spec, &device)).await?;
        let n = name.to_string();
        self.hv(move |hv| hv.attach_device(&n, &disk, live, !in_config)).await
    }

    /// Whether the domain has a disk `dev`: (in the running guest, in its definition).
    async fn has_disk(&self, name: &str, dev: &str) -> Result<(bool, bool), ActionError> {
        let n = name.to_string();
        let live = self.hv(move |hv| hv.domain_xml(&n)).await?;
        let n = name.to_string();
        let config = self.hv(move |hv| hv.domain_config_xml(&n)).await?;
        let has = |xml: &str| xml::disks(xml).iter().any(|(d, _)| d == dev);
        Ok((has(&live), has(&config)))
    }

    /// Unplugs a volume: asks libvirt (definition and guest), then waits for the guest to let
    /// go of it, up to [`DETACH_WAIT`] (the guest must answer the unplug, as with Nova).
    async fn detach_volume(
        &self,
        name: &str,
        state: InstanceState,
        v: &VolumeSpec,
        dev: &str,
    ) -> Result<(), ActionError> {
        let running = matches!(state, InstanceState::Running | InstanceState::Paused);
        let (in_live, in_config) = self.has_disk(name, dev).await?;
        let live = running && in_live;
        if !live && !in_config {
            return Ok(());
        }
        let (spec, device) = (v.clone(), dev.to_string());
        let disk = self.store(move |s| crate::storage::disk_xml(s, &spec, &device)).await?;
        let n = name.to_string();
        let unplugging = self.hv(move |hv| hv.detach_device(&n, &disk, live, in_config)).await?;
        if !unplugging {
            return Ok(());
        }
        let deadline = Instant::now() + DETACH_WAIT;
        loop {
            let n = name.to_string();
            let xml = self.hv(move |hv| hv.domain_xml(&n)).await?;
            if !xml::disks(&xml).iter().any(|(d, _)| d == dev) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ActionError::NotReleased {
                    volume: v.id.clone(),
                    device: dev.to_string(),
                    secs: DETACH_WAIT.as_secs(),
                });
            }
            tokio::time::sleep(STATE_POLL).await;
        }
    }

    /// Whether the domain has an interface with `mac`: (in the running guest, in its definition).
    async fn has_interface(&self, name: &str, mac: &str) -> Result<(bool, bool), ActionError> {
        let n = name.to_string();
        let live = self.hv(move |hv| hv.domain_xml(&n)).await?;
        let n = name.to_string();
        let config = self.hv(move |hv| hv.domain_config_xml(&n)).await?;
        let has = |x: &str| xml::interfaces(x).iter().any(|(m, _)| m.eq_ignore_ascii_case(mac));
        Ok((has(&live), has(&config)))
    }

    /// Hot plugs a port: the host side as a build sets it up ([`Self::plug_nic`]), then the
    /// `<interface>` into the running guest and the definition. What is there already is not
    /// added again (a redelivered attach is a no-op).
    async fn attach_interface(
        &self,
        name: &str,
        state: InstanceState,
        nic: &meridian_common::agent::NicSpec,
    ) -> Result<(), ActionError> {
        let mac = nic.mac_address.to_ascii_lowercase();
        let n = name.to_string();
        let current = self.hv(move |hv| hv.domain_config_xml(&n)).await?;
        // The model the guest's other NICs have (the image's `hw_vif_model` at build).
        let model = xml::interface_model(&current).unwrap_or("virtio");
        let iface = {
            let _net = self.net_lock.lock().await;
            xml::interface_xml(&self.plug_nic(nic, model).await?)
        };
        let running = matches!(state, InstanceState::Running | InstanceState::Paused);
        let (in_live, in_config) = self.has_interface(name, &mac).await?;
        let live = running && !in_live;
        if !live && in_config {
            return Ok(());
        }
        let n = name.to_string();
        self.hv(move |hv| hv.attach_device(&n, &iface, live, !in_config)).await
    }

    /// Unplugs the interface with `mac` from the guest and the definition, waits for the guest
    /// to let go of it (up to [`DETACH_WAIT`]), then drops its DHCP entry. Gone already: done.
    async fn detach_interface(&self, name: &str, state: InstanceState, mac: &str) -> Result<(), ActionError> {
        let mac = mac.to_ascii_lowercase();
        let n = name.to_string();
        let config = self.hv(move |hv| hv.domain_config_xml(&n)).await?;
        let n = name.to_string();
        let live_xml = self.hv(move |hv| hv.domain_xml(&n)).await?;
        let network = xml::interface_network(&config, &mac).or_else(|| xml::interface_network(&live_xml, &mac));
        let running = matches!(state, InstanceState::Running | InstanceState::Paused);
        let (in_live, in_config) = self.has_interface(name, &mac).await?;
        let live = running && in_live;
        if live || in_config {
            let iface = format!("<interface type='network'><mac address='{}'/></interface>", xml::esc(&mac));
            let n = name.to_string();
            let unplugging = self.hv(move |hv| hv.detach_device(&n, &iface, live, in_config)).await?;
            if unplugging {
                let deadline = Instant::now() + DETACH_WAIT;
                loop {
                    let (still, _) = self.has_interface(name, &mac).await?;
                    if !still {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(ActionError::InterfaceNotReleased { mac, secs: DETACH_WAIT.as_secs() });
                    }
                    tokio::time::sleep(STATE_POLL).await;
                }
            }
        }
        if let Some(net) = network.filter(|_| self.cfg.supports_networks) {
            let _net = self.net_lock.lock().await;
            let m = mac.clone();
            self.hv(move |hv| hv.remove_dhcp_host(&net, &m)).await?;
        }
        Ok(())
    }

    /// Nova's diagnostics from libvirt's counters: the 2.48 body, with the libvirt driver's
    /// flat dict of older microversions under `legacy`.
    async fn diagnostics(&self, id: &Uuid, name: &str) -> Result<serde_json::Value, ActionError> {
        let n = name.to_string();
        let st = self.hv(move |hv| hv.domain_stats(&n)).await?;
        let config_drive = self.instance_dir(id).join("disk.config").exists();
        let uptime = self.uptime_secs(id);
        Ok(crate::diagnostics::diagnostics_body(&st, self.cfg.virt_type.as_str(), config_drive, uptime))
    }

    /// Seconds since the guest's console log was started (the domain's start), if known.
    fn uptime_secs(&self, id: &Uuid) -> Option<u64> {
        let meta = std::fs::metadata(self.console_log_path(id)).ok()?;
        let created = meta.created().or_else(|_| meta.modified()).ok()?;
        created.elapsed().ok().map(|d| d.as_secs())
    }

    /// How this agent names its domains.
    pub fn naming(&self) -> &xml::Naming {
        &self.cfg.naming
    }

    pub fn hypervisor(&self) -> &Arc<dyn Hypervisor> {
        &self.hv
    }

    /// Runs a blocking hypervisor call off the executor.
    async fn hv<T, F>(&self, f: F) -> Result<T, ActionError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Hypervisor) -> Result<T, HvError> + Send + 'static,
    {
        let hv = Arc::clone(&self.hv);
        tokio::task::spawn_blocking(move || f(hv.as_ref()))
            .await
            .map_err(|_| ActionError::Panicked)?
            .map_err(ActionError::from)
    }

    async fn state(&self, name: &str) -> Result<InstanceState, ActionError> {
        let name = name.to_string();
        let s = self.hv(move |hv| hv.state(&name)).await?;
        Ok(InstanceState::from_domain(s))
    }

    fn instance_dir(&self, id: &Uuid) -> PathBuf {
        self.cfg.instances_dir.join(id.to_string())
    }

    /// Where an instance's serial console is logged.
    pub fn console_log_path(&self, id: &Uuid) -> PathBuf {
        self.instance_dir(id).join("console.log")
    }

    /// Every Meridian domain on the host with its power state (for heartbeats).
    pub async fn instances(&self) -> Result<Vec<InstanceReport>, ActionError> {
        let domains = self.hv(|hv| hv.domains()).await?;
        Ok(domains
            .into_iter()
            .filter_map(|d| {
                let id = self.cfg.naming.instance_of(&d.name)?;
                Some(InstanceReport {
                    instance_id: id.to_string(),
                    power_state: InstanceState::from_domain(Some(d.state)).power_state(),
                })
            })
            .collect())
    }

    /// Carries out `work` and returns its final event (`Done` or `Failed`). `progress` gets
    /// the build's task states as they are reached.
    pub async fn execute(&self, work: &Work, progress: &(dyn Fn(&str) + Send + Sync)) -> WorkEvent {
        let started = Instant::now();
        let result = self.run(work, progress).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let kind = work.op().name();
        metrics::histogram!("meridian_agent_work_duration_seconds", "kind" => kind)
            .record(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "done" } else { "failed" };
        metrics::counter!("meridian_agent_work_items_total", "kind" => kind, "outcome" => outcome).increment(1);
        match result {
            Ok((power_state, output)) => {
                info!(work = %work.id, instance = %work.instance_id, op = work.op().name(), elapsed_ms, "work done");
                // The server reports `config_drive` for instances built with one.
                let config_drive = matches!(work.action, Action::Build(_))
                    && self.instance_dir(&work.instance_id).join("disk.config").exists();
                let (console, data) = match output {
                    Output::Nothing => (None, None),
                    Output::Console(text) => (Some(text), None),
                    Output::Data(value) => (None, Some(value)),
                };
                WorkEvent::Done { power_state, console, config_drive, data }
            }
            Err(e) => {
                let event = e.to_event();
                warn!(work = %work.id, instance = %work.instance_id, op = work.op().name(), elapsed_ms, error = %chain(&e), "work failed");
                event
            }
        }
    }

    async fn run(
        &self,
        work: &Work,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(PowerState, Output), ActionError> {
        let id = work.instance_id;
        if work.action.is_volume_only() {
            self.volume_work(&work.action).await?;
            return Ok((PowerState::NoState, Output::Nothing));
        }
        let name = self.cfg.naming.domain(&id);
        let state = self.state(&name).await?;
        match lifecycle::decide(state, work.op()) {
            Decision::Reject(r) => return Err(r.into()),
            Decision::AlreadyDone => return Ok((state.power_state(), Output::Nothing)),
            Decision::Proceed => {}
        }
        match &work.action {
            Action::Build(spec) => {
                if state == InstanceState::Shutoff {
                    // Defined by an earlier delivery that stopped before starting it.
                    self.start(&name, state).await?;
                } else {
                    progress("block_device_mapping");
                    if let Err(e) = self.build(id, spec, progress).await {
                        // Leave nothing half-built behind; the error is what gets reported.
                        if let Err(c) = self.teardown(id).await {
                            warn!(instance = %id, error = %chain(&c), "cleanup after failed build");
                        }
                        return Err(e);
                    }
                }
            }
            Action::Stop => self.stop(&name, state).await?,
            Action::Start => self.start(&name, state).await?,
            Action::Pause => {
                let n = name.clone();
                self.hv(move |hv| hv.pause(&n)).await?
            }
            Action::Unpause => {
                let n = name.clone();
                self.hv(move |hv| hv.unpause(&n)).await?
            }
            // Nova's libvirt suspend: the guest's memory goes to a managed save image and its
            // process ends; resume is a start, which libvirt makes a restore from that image.
            Action::Suspend => {
                let n = name.clone();
                self.hv(move |hv| hv.managed_save(&n)).await?
            }
            Action::Resume => {
                let n = name.clone();
                self.hv(move |hv| hv.start(&n)).await?
            }
            // Nova's compute manager steps: pending when the host takes the request, started
            // once the hypervisor is rebooting the guest.
            Action::Reboot { hard: false } => {
                progress("reboot_pending");
                progress("reboot_started");
                self.reboot_soft(&name).await?
            }
            Action::Reboot { hard: true } => {
                progress("reboot_pending_hard");
                progress("reboot_started_hard");
                self.reboot_hard(&name, state).await?
            }
            Action::Delete => {
                self.teardown(id).await?;
                return Ok((PowerState::NoState, Output::Nothing));
            }
            Action::ConsoleLog { lines } => {
                let text = self.console_log(&id, *lines).await?;
                return Ok((state.power_state(), Output::Console(text)));
            }
            // Sessions run beside the work queues (`console.rs`), never as work.
            Action::Console { .. } => return Err(ActionError::Invalid("a console is not a work item".into())),
            Action::VolumeAttach { volume, device, create, .. } => {
                if *create {
                    let v = volume.clone();
                    self.store(move |s| s.create(&v)).await?;
                }
                self.attach_volume(&name, state, volume, device).await?
            }
            Action::VolumeDetach { volume, device, .. } => self.detach_volume(&name, state, volume, device).await?,
            Action::VolumeCreate { .. }
            | Action::VolumeExtend { .. }
            | Action::VolumeDelete { .. }
            | Action::SnapshotCreate { .. }
            | Action::SnapshotDelete { .. }
            | Action::VolumeUploadImage { .. }
            | Action::VolumeRevert { .. } => {
                return Err(ActionError::Invalid("volume work runs before the domain is looked at".into()));
            }
            // Rebuild, rescue and unrescue: `controller::rescue`.
            Action::Rebuild(spec) => self.rebuild(id, spec, progress).await?,
            Action::Rescue { image, .. } => self.rescue(id, state, image).await?,
            Action::Unrescue => self.unrescue(id).await?,
            Action::InterfaceAttach { nic } => self.attach_interface(&name, state, nic).await?,
            Action::InterfaceDetach { mac_address, .. } => self.detach_interface(&name, state, mac_address).await?,
            Action::Diagnostics => {
                let body = self.diagnostics(&id, &name).await?;
                return Ok((state.power_state(), Output::Data(body)));
            }
            Action::ImageCreate { image_id, disk_format, shelving } => {
                self.image_create(id, &name, state, image_id, disk_format, *shelving, progress).await?
            }
            Action::MigrateOut { migration_id } => self.migrate_out(id, &name, state, migration_id).await?,
            Action::MigrateIn { migration_id, spec, power_on } => {
                progress("resize_finish");
                self.migrate_in(id, migration_id, spec, *power_on, progress).await?
            }
            Action::ResizeLocal { spec, power_on, .. } => {
                progress("resize_migrating");
                self.resize_local(id, &name, state, spec, *power_on, progress).await?
            }
            Action::ResizeLocalRevert { spec, power_on, .. } => {
                self.resize_local_revert(id, &name, state, spec, *power_on, progress).await?
            }
            Action::MigrateRevert { power_on, .. } => {
                if *power_on && state != InstanceState::Running {
                    self.start(&name, state).await?;
                }
            }
            Action::LiveMigrateIn { spec, .. } => {
                let target = self.live_migrate_in(id, spec).await?;
                return Ok((PowerState::NoState, Output::Data(target)));
            }
            Action::LiveMigrateOut { migration_id, target, timeout_secs } => {
                let timeout = Duration::from_secs(*timeout_secs);
                let moved = self.live_migrate_out(id, &name, state, migration_id, target, timeout).await?;
                return Ok((state.power_state(), Output::Data(moved)));
            }
            Action::MigrateCleanup { remove, .. } => {
                if *remove {
                    self.teardown(id).await?;
                    return Ok((PowerState::NoState, Output::Nothing));
                }
                match tokio::fs::remove_file(self.instance_dir(&id).join(RESIZE_BACKUP)).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ActionError::Files(e)),
                }
            }
        }
        let power = self.state(&name).await?.power_state();
        if self.cfg.virt_type == VirtType::Test {
            self.log_test_power_on(&id, work).await;
        }
        Ok((power, Output::Nothing))
    }

    /// Copies the instance's root disk (overlay and base, as one standalone image) to image
    /// `image` in `disk_format` and uploads it. A running guest is paused for the copy and
    /// resumed (also on failure); a shelve powers the guest off first, as Nova's does. The
    /// temporary copy is removed whatever happens.
    #[allow(clippy::too_many_arguments)]
    async fn image_create(
        &self,
        id: Uuid,
        name: &str,
        state: InstanceState,
        image: &str,
        disk_format: &str,
        shelving: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), ActionError> {
        let format = match disk_format {
            "raw" => "raw",
            "qcow2" => "qcow2",
            other => return Err(ActionError::Invalid(format!("cannot write a snapshot as {other}"))),
        };
        let dir = self.instance_dir(&id);
        let disk_path = dir.join("disk");
        if !tokio::fs::try_exists(&disk_path).await.unwrap_or(false) {
            return Err(ActionError::Invalid("the instance has no image disk on this host to copy".into()));
        }
        let mut paused = false;
        if shelving {
            if matches!(state, InstanceState::Running | InstanceState::Paused | InstanceState::ShuttingDown) {
                self.stop(name, state).await?;
            }
        } else {
            progress("image_snapshot");
            if state == InstanceState::Running {
                let n = name.to_string();
                self.hv(move |hv| hv.pause(&n)).await?;
                paused = true;
            }
        }
        progress(if shelving { "shelving_image_pending_upload" } else { "image_pending_upload" });
        let tmp = dir.join(format!(".image-{image}.part"));
        let copied = disk::convert(&disk_path, format, &tmp).await.map_err(ActionError::from);
        if paused {
            let n = name.to_string();
            if let Err(e) = self.hv(move |hv| hv.unpause(&n)).await {
                warn!(domain = %name, error = %chain(&e), "guest not resumed after its snapshot");
                remove_quietly(&tmp).await;
                copied?;
                return Err(e);
            }
        }
        if let Err(e) = copied {
            remove_quietly(&tmp).await;
            return Err(e);
        }
        progress(if shelving { "shelving_image_uploading" } else { "image_uploading" });
        let sent = self.send_file(&tmp, image).await;
        remove_quietly(&tmp).await;
        sent
    }

    /// Streams a file to the server as image `image`'s data.
    async fn send_file(&self, path: &Path, image: &str) -> Result<(), ActionError> {
        let file = tokio::fs::File::open(path).await.map_err(ActionError::Files)?;
        let len = file.metadata().await.map_err(ActionError::Files)?.len();
        let stream = futures_util::stream::unfold(Some(file), |file| async move {
            let mut f = file?;
            let mut buf = vec![0u8; 1 << 20];
            match tokio::io::AsyncReadExt::read(&mut f, &mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), Some(f)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
        self.images
            .server()
            .upload_image(image, reqwest::Body::wrap_stream(stream), len)
            .await
            .map_err(|source| ActionError::ImageUpload { image: image.to_string(), source })
    }

    async fn build(
        &self,
        id: Uuid,
        spec: &BuildSpec,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), ActionError> {
        self.build_from(id, spec, progress, RootDisk::New, true, Vec::new()).await
    }

    /// A build whose root disk is made new, kept as it is, or taken from a migration (see
    /// [`RootDisk`]); the domain is defined from `spec` and started when `start`. `kept`:
    /// `<disk>` elements of volumes already plugged into the instance (a rebuild keeps them),
    /// added after the spec's own.
    async fn build_from(
        &self,
        id: Uuid,
        spec: &BuildSpec,
        progress: &(dyn Fn(&str) + Send + Sync),
        root: RootDisk,
        start: bool,
        kept: Vec<String>,
    ) -> Result<(), ActionError> {
        let domain_xml = self.prepare(id, spec, progress, root, kept).await?;
        let name = self.cfg.naming.domain(&id);
        self.hv(move |hv| {
            hv.define(&domain_xml)?;
            if start { hv.start(&name) } else { Ok(()) }
        })
        .await?;
        info!(instance = %id, start, "domain defined");
        Ok(())
    }

    /// Everything of a build but the domain itself: images, disks, config drive, ports
    /// plugged and filtered. Answers the definition to give libvirt.
    async fn prepare(
        &self,
        id: Uuid,
        spec: &BuildSpec,
        progress: &(dyn Fn(&str) + Send + Sync),
        root: RootDisk,
        kept: Vec<String>,
    ) -> Result<String, ActionError> {
        let plan = plan_build(spec)?;
        let dir = self.instance_dir(&id);
        tokio::fs::create_dir_all(&dir).await.map_err(ActionError::Files)?;

        // Volumes first: a missing one fails the build before anything is fetched.
        let (root_volume, mut volumes) = self.block_device_disks(spec).await?;
        volumes.extend(kept);
        // Images: the root disk's base (none when a volume is the root disk), and the kernel /
        // ramdisk for direct boot.
        let base = match root_volume {
            Some(_) => None,
            None => Some(
                self.images
                    .acquire(&ImageRef {
                        id: spec.image.id.clone(),
                        checksum: Some(spec.image.checksum.clone()),
                        size: Some(spec.image.size),
                    })
                    .await?,
            ),
        };
        let kernel = self.fetch_by_id(plan.kernel_id.as_deref()).await?;
        let ramdisk = self.fetch_by_id(plan.ramdisk_id.as_deref()).await?;
        let leases: Vec<&Lease> = [base.as_ref(), kernel.as_ref(), ramdisk.as_ref()].into_iter().flatten().collect();
        let record = InstanceRecord {
            images: leases.iter().map(|l| l.id().to_string()).collect(),
            plugs: if self.cfg.supports_networks {
                spec.nics
                    .iter()
                    .map(|n| Plug {
                        network: xml::network_name(&n.network_id),
                        mac: n.mac_address.to_ascii_lowercase(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        };
        // The record (durable) says which images back the disk; the cache's pins follow it.
        self.write_record(&id, &record).await?;
        for image in &record.images {
            self.images.pin(image, &id.to_string());
        }

        let disk_path = dir.join("disk");
        // The overlay and the config drive are independent: made side by side (each is a
        // short external process), which takes one of them off the boot's critical path.
        let overlay = async {
            match (&base, &root) {
                (Some(base), RootDisk::New) => {
                    disk::create_overlay(base.path(), plan.base_format, &disk_path, spec.flavor.disk_gb).await
                }
                (Some(base), RootDisk::Incoming(incoming)) => {
                    if incoming.exists() {
                        tokio::fs::rename(incoming, &disk_path).await.map_err(DiskError::Io)?;
                    }
                    disk::rebase(&disk_path, base.path(), plan.base_format).await?;
                    disk::grow(&disk_path, spec.flavor.disk_gb).await
                }
                (Some(_), RootDisk::Keep) => disk::grow(&disk_path, spec.flavor.disk_gb).await,
                (None, _) => Ok(()),
            }
        };
        let drive = async {
            if !(self.cfg.config_drive_always || spec.config_drive) {
                return Ok(None);
            }
            let format = self.cfg.config_drive_format;
            let drive = dir.join("disk.config");
            let ctx = DriveContext { instance_id: id, availability_zone: &self.cfg.availability_zone };
            config_drive::build(&ctx, spec, format, &dir.join("config-drive.d"), &drive).await?;
            Ok::<_, ActionError>(Some(drive))
        };
        let (overlay, config_drive) = tokio::join!(overlay, drive);
        overlay?;
        let config_drive = config_drive?;
        // The ephemeral and swap disks (the flavor's, or those the server's mappings asked
        // for): made once, then kept (a rebuild) or brought to the flavor (a resize); a
        // migration's or an evacuation's destination makes them new and empty (the relay
        // carries the root disk only).
        let (wanted, swap_mb) = match &spec.local_disks {
            Some(l) => {
                let mut out = Vec::new();
                for (index, e) in l.ephemerals.iter().enumerate() {
                    let fs = disk::Fs::parse(e.guest_format.as_deref()).map_err(ActionError::Invalid)?;
                    out.push((disk::LocalDisk::Ephemeral { index, fs }, e.size_gb));
                }
                (out, l.swap_mb)
            }
            None => (vec![(disk::LocalDisk::FLAVOR_EPHEMERAL, spec.flavor.ephemeral_gb)], spec.flavor.swap_mb),
        };
        let mut ephemerals = Vec::new();
        for (kind, gb) in wanted.into_iter().filter(|(_, gb)| *gb > 0) {
            let path = dir.join(kind.file_name());
            disk::ensure_local(&path, kind, gb.saturating_mul(1 << 30)).await?;
            ephemerals.push(path);
        }
        let mut swap = None;
        if swap_mb > 0 {
            let path = dir.join(disk::LocalDisk::Swap.file_name());
            disk::ensure_local(&path, disk::LocalDisk::Swap, swap_mb.saturating_mul(1 << 20)).await?;
            swap = Some(path);
        }

        progress("spawning");
        let nics = self.plug(spec, &plan).await?;
        if let Some(fw) = &self.cfg.firewall {
            let ports: Vec<String> = spec.nics.iter().map(|n| n.port_id.clone()).collect();
            fw.wait_for_ports(&ports, PORT_FILTER_WAIT).await.map_err(ActionError::PortFilters)?;
        }
        let domain = DomainSpec {
            instance_id: id,
            naming: self.cfg.naming.clone(),
            display_name: spec.name.clone(),
            project_id: spec.project_id.clone(),
            virt_type: self.cfg.virt_type,
            arch: self.cfg.arch.clone(),
            machine: plan.machine,
            memory_mb: spec.flavor.ram_mb,
            vcpus: spec.flavor.vcpus,
            disk: disk_path,
            disk_bus: plan.disk_bus,
            console_log: self.console_log_path(&id),
            nics,
            kernel: kernel.as_ref().map(|k| KernelBoot {
                kernel: k.path().to_path_buf(),
                initrd: ramdisk.as_ref().map(|r| r.path().to_path_buf()),
                cmdline: plan.cmdline.clone(),
            }),
            config_drive,
            root_volume,
            volumes,
            ephemerals,
            swap,
        };
        let mut domain_xml = xml::domain_xml(&domain);
        // Flavor/image CPU topology (Nova's `get_best_cpu_topology`); impossible fails the build.
        if crate::topology::requested(&spec.flavor.extra_specs, &spec.image.properties) {
            let t = crate::topology::best(spec.flavor.vcpus, &spec.flavor.extra_specs, &spec.image.properties)
                .map_err(ActionError::Invalid)?;
            domain_xml = crate::topology::with_topology(&domain_xml, t);
        }
        Ok(domain_xml)
    }

    /// The `<disk>` elements of a build's volumes (`block_devices`): the root one (boot index
    /// 0) and the others. Each must already be on this host (the server made it here).
    async fn block_device_disks(&self, spec: &BuildSpec) -> Result<(Option<String>, Vec<String>), ActionError> {
        let (mut root, mut others) = (None, Vec::new());
        for bd in &spec.block_devices {
            let (v, dev) = (bd.volume.clone(), bd.device.clone());
            let disk = self
                .store(move |s| {
                    if !s.exists(&v.id)? {
                        return Err(crate::storage::StorageError::Missing(v.id.clone()));
                    }
                    crate::storage::disk_xml(s, &v, &dev)
                })
                .await?;
            if bd.boot_index == Some(0) && root.is_none() {
                root = Some(disk);
            } else {
                others.push(disk);
            }
        }
        Ok((root, others))
    }

    /// A kernel or ramdisk referenced by image id only (no checksum in the build spec; the
    /// cache checks the server's `Content-MD5` when it sends one).
    async fn fetch_by_id(&self, id: Option<&str>) -> Result<Option<Lease>, ActionError> {
        let Some(id) = id else { return Ok(None) };
        let lease = self.images.acquire(&ImageRef { id: id.to_string(), checksum: None, size: None }).await?;
        Ok(Some(lease))
    }

    /// Writes the instance's record and flushes it: the image cache's pins are rebuilt from
    /// these records at start, so a record must not be lost while its disk exists.
    fn record_path(&self, id: &Uuid) -> PathBuf {
        self.instance_dir(id).join("instance.json")
    }

    async fn write_record(&self, id: &Uuid, record: &InstanceRecord) -> Result<(), ActionError> {
        let path = self.record_path(id);
        let body = serde_json::to_vec_pretty(record).map_err(|e| ActionError::Files(e.into()))?;
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&path)?;
            f.write_all(&body)?;
            f.sync_data()
        })
        .await
        .map_err(|_| ActionError::Panicked)?
        .map_err(ActionError::Files)
    }

    async fn read_record(&self, id: &Uuid) -> Option<InstanceRecord> {
        let bytes = tokio::fs::read(self.record_path(id)).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Sets up a libvirt network and a DHCP entry per NIC (when the driver has networks).
    async fn plug(&self, spec: &BuildSpec, plan: &BuildPlan) -> Result<Vec<NicXml>, ActionError> {
        let _net = self.net_lock.lock().await;
        let mut nics = Vec::new();
        for nic in &spec.nics {
            nics.push(self.plug_nic(nic, plan.nic_model).await?);
        }
        Ok(nics)
    }

    /// Sets up the host side of one port (its network, DHCP entry, conntrack, metadata proxy)
    /// and answers the `<interface>` to give the domain. The caller holds `net_lock`.
    async fn plug_nic(
        &self,
        nic: &meridian_common::agent::NicSpec,
        model: &'static str,
    ) -> Result<NicXml, ActionError> {
        let mac = nic.mac_address.to_ascii_lowercase();
        let mtu = (nic.mtu > 0).then_some(nic.mtu);
        if !self.cfg.supports_networks {
            return Ok(NicXml { mac, network: None, model, mtu, tap: None });
        }
        let network = xml::network_name(&nic.network_id);
        let ipv4 = first_ipv4(nic)?;
        let net_spec = NetworkSpec {
            name: network.clone(),
            bridge: xml::bridge_name(&nic.network_id),
            mtu,
            ip: ipv4.map(|(_, gw, prefix)| (gw, prefix)),
            hosts: ipv4.map(|(addr, _, _)| vec![(mac.clone(), addr.to_string())]).unwrap_or_default(),
        };
        let net_xml = xml::network_xml(&net_spec);
        let (n, m) = (network.clone(), mac.clone());
        self.hv(move |hv| {
            hv.ensure_network(&n, &net_xml)?;
            if let Some((addr, _, _)) = ipv4 {
                hv.set_dhcp_host(&n, &m, &addr.to_string())?;
            }
            Ok(())
        })
        .await?;
        if let Some(fw) = self.cfg.firewall.as_ref().map(|e| e.firewall().clone()) {
            let bridge = net_spec.bridge.clone();
            let done = tokio::task::spawn_blocking(move || fw.enable_bridge_conntrack(&bridge)).await;
            match done {
                Ok(Ok(_)) => {}
                // The guest's return traffic would be dropped: not a guest to start.
                Ok(Err(e)) => return Err(ActionError::Firewall(e)),
                Err(_) => return Err(ActionError::Panicked),
            }
        }
        if let Some(proxies) = &self.metadata {
            // Guests without a config drive depend on it, but a boot does not fail for it
            // (Nova boots whether or not its metadata service is up).
            if let Err(e) = proxies.ensure(&nic.network_id, &net_spec.bridge).await {
                warn!(network = %nic.network_id, error = %chain(&e), "no metadata service for this network's guests");
            }
        }
        // The tap's name is the port's (as Nova's), so the port filters can match it.
        let tap = Some(crate::firewall::tap_name(&nic.port_id));
        Ok(NicXml { mac, network: Some(network), model, mtu, tap })
    }

    /// Removes an instance completely: domain, DHCP entries (and networks nobody else uses),
    /// files, image pins. Every step tolerates what is already gone.
    async fn teardown(&self, id: Uuid) -> Result<(), ActionError> {
        let name = self.cfg.naming.domain(&id);
        let n = name.clone();
        self.hv(move |hv| {
            match hv.state(&n)? {
                None => return Ok(()),
                Some(s) if s.is_active() => hv.destroy(&n)?,
                Some(_) => {}
            }
            hv.undefine(&n)
        })
        .await?;

        if let Some(record) = self.read_record(&id).await {
            let _net = self.net_lock.lock().await;
            let networks: BTreeSet<String> = record.plugs.iter().map(|p| p.network.clone()).collect();
            let mut still_used = self.networks_in_use(&id).await;
            // Another agent on this daemon (the other end of a cold migration between two hosts
            // on one machine) may run a guest with the same port: its DHCP entry and network stay.
            let others = self.hv(|hv| Ok(Self::daemon_plugs(hv))).await?;
            still_used.extend(others.iter().map(|(net, _)| net.clone()));
            let plugs: Vec<Plug> = record
                .plugs
                .iter()
                .filter(|p| !others.contains(&(p.network.clone(), p.mac.clone())))
                .cloned()
                .collect();
            let unused: Vec<String> = networks.difference(&still_used).cloned().collect();
            let removed = unused.clone();
            self.hv(move |hv| {
                for p in &plugs {
                    hv.remove_dhcp_host(&p.network, &p.mac)?;
                }
                for net in &removed {
                    info!(network = %net, "removing network: its last instance is gone");
                    hv.remove_network(net)?;
                }
                Ok(())
            })
            .await?;
            if let Some(proxies) = &self.metadata {
                for net in &unused {
                    proxies.remove(net.strip_prefix(xml::NAME_PREFIX).unwrap_or(net));
                }
            }
            // The record goes while the lock is held: a delete of another instance on these
            // networks waiting for it must not find this record, or each of two concurrent
            // deletes keeps the network for the other and it outlives both.
            match tokio::fs::remove_file(self.record_path(&id)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ActionError::Files(e)),
            }
        }

        match tokio::fs::remove_dir_all(self.instance_dir(&id)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ActionError::Files(e)),
        }
        let images = Arc::clone(&self.images);
        let instance = id.to_string();
        tokio::task::spawn_blocking(move || images.unpin_instance(&instance))
            .await
            .map_err(|_| ActionError::Panicked)?;
        Ok(())
    }

    /// (network, MAC) of every interface of every domain defined on the daemon (this agent's, once
    /// the one being removed is gone, and any other agent's on the same daemon). A domain that
    /// vanishes while it is read is skipped.
    fn daemon_plugs(hv: &dyn Hypervisor) -> BTreeSet<(String, String)> {
        let Ok(domains) = hv.domains() else { return BTreeSet::new() };
        let mut plugs = BTreeSet::new();
        for d in domains {
            let Ok(x) = hv.domain_xml(&d.name) else { continue };
            for (mac, _) in xml::interfaces(&x) {
                if let Some(net) = xml::interface_network(&x, &mac) {
                    plugs.insert((net, mac));
                }
            }
        }
        plugs
    }

    /// Networks plugged by every instance but `except`, from their records.
    async fn networks_in_use(&self, except: &Uuid) -> BTreeSet<String> {
        let mut used = BTreeSet::new();
        let Ok(mut dir) = tokio::fs::read_dir(&self.cfg.instances_dir).await else {
            return used;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let Some(other) = entry.file_name().to_str().and_then(|s| Uuid::parse_str(s).ok()) else {
                continue;
            };
            if other == *except {
                continue;
            }
            if let Some(r) = self.read_record(&other).await {
                used.extend(r.plugs.into_iter().map(|p| p.network));
            }
        }
        used
    }

    /// Powers the guest off if it is on (a migration's first step).
    async fn power_off(&self, name: &str, state: InstanceState) -> Result<(), ActionError> {
        if matches!(state, InstanceState::Shutoff | InstanceState::Absent) {
            return Ok(());
        }
        self.stop(name, state).await
    }

    /// The source of a resize or cold migration: the guest off, its root disk sent through the
    /// server's relay. The domain and the disk stay (a revert starts them again).
    async fn migrate_out(
        &self,
        id: Uuid,
        name: &str,
        state: InstanceState,
        migration: &str,
    ) -> Result<(), ActionError> {
        self.power_off(name, state).await?;
        let disk = self.instance_dir(&id).join("disk");
        let file = tokio::fs::File::open(&disk).await.map_err(ActionError::Files)?;
        let len = file.metadata().await.map_err(ActionError::Files)?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        self.images
            .server()
            .put_migration_disk(migration, body, len)
            .await
            .map_err(|source| ActionError::Relay { migration: migration.to_string(), source })?;
        info!(instance = %id, %migration, bytes = len, "root disk sent");
        Ok(())
    }

    /// The destination of a resize or cold migration: the disk fetched from the relay, then a
    /// build on it (the same ports, the new flavor), started when `power_on`.
    async fn migrate_in(
        &self,
        id: Uuid,
        migration: &str,
        spec: &BuildSpec,
        power_on: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), ActionError> {
        let dir = self.instance_dir(&id);
        tokio::fs::create_dir_all(&dir).await.map_err(ActionError::Files)?;
        let incoming = dir.join("disk.incoming");
        let relay = |source| ActionError::Relay { migration: migration.to_string(), source };
        let mut resp = self.images.server().migration_disk(migration).await.map_err(relay)?;
        let expected = resp.content_length();
        let mut file = tokio::fs::File::create(&incoming).await.map_err(ActionError::Files)?;
        let mut got = 0u64;
        loop {
            let chunk = resp.chunk().await.map_err(|e| {
                relay(meridian_common::client::ClientError::Transport { url: migration.to_string(), source: e })
            })?;
            let Some(chunk) = chunk else { break };
            got += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await.map_err(ActionError::Files)?;
        }
        file.sync_all().await.map_err(ActionError::Files)?;
        drop(file);
        if expected.is_some_and(|n| n != got) {
            return Err(ActionError::Invalid(format!(
                "the migration disk ended after {got} of {} bytes",
                expected.unwrap_or_default()
            )));
        }
        let built = self.build_from(id, spec, progress, RootDisk::Incoming(incoming), power_on, Vec::new()).await;
        if let Err(e) = built {
            // Nothing half-made stays behind; the source still has the disk.
            if let Err(c) = self.teardown(id).await {
                warn!(instance = %id, error = %chain(&c), "cleanup after a failed migration");
            }
            return Err(e);
        }
        Ok(())
    }

    /// A resize on this host: the guest off, the disk copied aside for a revert (once: a
    /// repeat keeps the first copy), then the domain redefined from `spec` on the grown disk.
    async fn resize_local(
        &self,
        id: Uuid,
        name: &str,
        state: InstanceState,
        spec: &BuildSpec,
        power_on: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), ActionError> {
        self.power_off(name, state).await?;
        let dir = self.instance_dir(&id);
        let (disk, backup) = (dir.join("disk"), dir.join(RESIZE_BACKUP));
        if disk.exists() && !backup.exists() {
            let tmp = dir.join(format!("{RESIZE_BACKUP}.tmp"));
            tokio::fs::copy(&disk, &tmp).await.map_err(ActionError::Files)?;
            tokio::fs::rename(&tmp, &backup).await.map_err(ActionError::Files)?;
        }
        progress("resize_finish");
        self.build_from(id, spec, progress, RootDisk::Keep, power_on, Vec::new()).await
    }

    /// Undo of [`Controller::resize_local`]: the kept disk back, the old definition, started
    /// when `power_on`.
    async fn resize_local_revert(
        &self,
        id: Uuid,
        name: &str,
        state: InstanceState,
        spec: &BuildSpec,
        power_on: bool,
        progress: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<(), ActionError> {
        self.power_off(name, state).await?;
        let dir = self.instance_dir(&id);
        let backup = dir.join(RESIZE_BACKUP);
        if backup.exists() {
            tokio::fs::rename(&backup, dir.join("disk")).await.map_err(ActionError::Files)?;
        }
        self.build_from(id, spec, progress, RootDisk::Keep, power_on, Vec::new()).await
    }

    /// Graceful shutdown within the timeout, then the plug.
    async fn stop(&self, name: &str, state: InstanceState) -> Result<(), ActionError> {
        if state == InstanceState::Saved {
            // Off already; stopped means its saved memory is not restored by the next start.
            let n = name.to_string();
            return self.hv(move |hv| hv.discard_save(&n)).await;
        }
        if matches!(state, InstanceState::Running | InstanceState::ShuttingDown) {
            if self.shutdown_and_wait(name).await? {
                return Ok(());
            }
            warn!(domain = name, timeout = ?self.cfg.stop_timeout, "guest did not shut down in time; destroying it");
        }
        let n = name.to_string();
        self.hv(move |hv| hv.destroy(&n)).await
    }

    /// Asks the guest to shut down and waits; true when it is off within the timeout.
    async fn shutdown_and_wait(&self, name: &str) -> Result<bool, ActionError> {
        let n = name.to_string();
        if let Err(e) = self.hv(move |hv| hv.shutdown(&n)).await {
            // Already going down, or no ACPI: the wait (or the destroy after it) settles it.
            warn!(domain = name, error = %chain(&e), "graceful shutdown request failed");
        }
        let deadline = Instant::now() + self.cfg.stop_timeout;
        loop {
            let s = self.state(name).await?;
            if matches!(s, InstanceState::Shutoff | InstanceState::Absent) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(STATE_POLL).await;
        }
    }

    async fn start(&self, name: &str, state: InstanceState) -> Result<(), ActionError> {
        let n = name.to_string();
        let crashed = state == InstanceState::Crashed;
        self.hv(move |hv| {
            // A crashed domain kept for inspection is still active: power it off first.
            if crashed && hv.state(&n)?.is_some_and(DomainState::is_active) {
                hv.destroy(&n)?;
            }
            hv.start(&n)
        })
        .await
    }

    /// Asks the guest to reboot; without guest cooperation, shutdown then start.
    async fn reboot_soft(&self, name: &str) -> Result<(), ActionError> {
        let n = name.to_string();
        match self.hv(move |hv| hv.reboot(&n)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                warn!(domain = name, error = %chain(&e), "guest reboot failed; shutting down and starting");
                if !self.shutdown_and_wait(name).await? {
                    let n = name.to_string();
                    self.hv(move |hv| hv.destroy(&n)).await?;
                }
                let n = name.to_string();
                self.hv(move |hv| hv.start(&n)).await
            }
        }
    }

    /// Power-cycles: reset a running domain, else (or if reset fails) destroy and start.
    async fn reboot_hard(&self, name: &str, state: InstanceState) -> Result<(), ActionError> {
        let n = name.to_string();
        let running = state == InstanceState::Running;
        self.hv(move |hv| {
            if running {
                match hv.reset(&n) {
                    Ok(()) => return Ok(()),
                    Err(e) => warn!(domain = %n, error = %chain(&e), "reset failed; destroying and starting"),
                }
            }
            if hv.state(&n)?.is_some_and(DomainState::is_active) {
                hv.destroy(&n)?;
            }
            // A suspended guest boots afresh (its saved memory would otherwise be restored).
            hv.discard_save(&n)?;
            hv.start(&n)
        })
        .await
    }

    /// libvirt's test driver runs no guest, so nothing writes a serial console: the agent
    /// appends what it did to the domain to the console log instead (as Nova's fake driver
    /// answers console requests with its own lines), so `os-getConsoleOutput` has content.
    async fn log_test_power_on(&self, id: &Uuid, work: &Work) {
        use std::io::Write;
        let mut lines = vec![
            format!(
                "meridian-agent: {} powered on by {} (work {})",
                self.cfg.naming.domain(id),
                work.op().name(),
                work.id
            ),
            "meridian-agent: libvirt test driver: no guest runs; this log records the domain's lifecycle".to_string(),
        ];
        if let Action::Build(spec) = &work.action {
            lines.push(format!(
                "meridian-agent: {} vCPU(s), {} MiB RAM, {} GiB disk from image {}",
                spec.flavor.vcpus, spec.flavor.ram_mb, spec.flavor.disk_gb, spec.image.id
            ));
            for nic in &spec.nics {
                let ips: Vec<&str> = nic.ips.iter().map(|ip| ip.address.as_str()).collect();
                lines.push(format!(
                    "meridian-agent: nic {} on network {}: {}",
                    nic.mac_address,
                    nic.network_id,
                    ips.join(" ")
                ));
            }
        }
        lines.push(format!("meridian-agent: {} is running", self.cfg.naming.domain(id)));
        let path = self.console_log_path(id);
        let text = lines.join("\n") + "\n";
        let written = tokio::task::spawn_blocking(move || {
            std::fs::OpenOptions::new().create(true).append(true).open(&path)?.write_all(text.as_bytes())
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            warn!(instance = %id, "cannot write the test driver's console log");
        }
    }

    /// The last `lines` lines of the serial console log (all of its last MiB when `None`).
    async fn console_log(&self, id: &Uuid, lines: Option<u32>) -> Result<String, ActionError> {
        let path = self.console_log_path(id);
        tokio::task::spawn_blocking(move || tail(&path, lines))
            .await
            .map_err(|_| ActionError::Panicked)?
            .map_err(ActionError::Files)
    }
}

/// The last `lines` lines of a file (as Nova counts them), reading at most its last [`CONSOLE_MAX_BYTES`].
fn tail(path: &Path, lines: Option<u32>) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(CONSOLE_MAX_BYTES);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    // Drop a line cut in half by the byte limit.
    let text = if start > 0 { text.split_once('\n').map_or("", |(_, rest)| rest) } else { &text };
    Ok(match lines {
        None => text.to_string(),
        // Nova's `_tail_log`: the last `n` pieces of the text split at newlines, so a log
        // ending in a newline counts its empty last piece (`a\nb\n`, 2 → `b\n`); clients
        // count `output.split('\n')` against the length they asked for.
        Some(0) => String::new(),
        Some(n) => {
            let all: Vec<&str> = text.split('\n').collect();
            let from = all.len().saturating_sub(n as usize);
            all[from..].join("\n")
        }
    })
}

/// A build spec checked and turned into the choices the domain needs.
#[derive(Debug)]
struct BuildPlan {
    base_format: &'static str,
    disk_bus: DiskBus,
    nic_model: &'static str,
    machine: Option<String>,
    kernel_id: Option<String>,
    ramdisk_id: Option<String>,
    cmdline: Option<String>,
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn plan_build(spec: &BuildSpec) -> Result<BuildPlan, ActionError> {
    let invalid = ActionError::Invalid;
    if spec.flavor.vcpus == 0 {
        return Err(invalid("the flavor has no vCPUs".into()));
    }
    if spec.flavor.ram_mb < 16 {
        return Err(invalid(format!("the flavor's {} MB of RAM is too little", spec.flavor.ram_mb)));
    }
    for nic in &spec.nics {
        if !valid_mac(&nic.mac_address) {
            return Err(invalid(format!("port {} has a bad MAC address {:?}", nic.port_id, nic.mac_address)));
        }
        if nic.network_id.is_empty() {
            return Err(invalid(format!("port {} has no network", nic.port_id)));
        }
    }
    let props = &spec.image.properties;
    let prop = |k: &str| props.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let base_format = disk::qemu_format(&spec.image.disk_format).map_err(|e| invalid(e.to_string()))?;
    let kernel_id = prop("kernel_id").map(str::to_string);
    let ramdisk_id = prop("ramdisk_id").map(str::to_string);
    if ramdisk_id.is_some() && kernel_id.is_none() {
        return Err(invalid("the image has a ramdisk_id but no kernel_id".into()));
    }
    let disk_bus = DiskBus::from_property(prop("hw_disk_bus")).map_err(invalid)?;
    Ok(BuildPlan {
        base_format,
        disk_bus,
        nic_model: xml::nic_model(prop("hw_vif_model")).map_err(invalid)?,
        machine: xml::machine_type(prop("hw_machine_type")).map_err(invalid)?,
        // Nova's libvirt driver: the image's `os_command_line`, else the root device plus
        // every console, so a kernel booted this way still talks on the serial port.
        cmdline: kernel_id.as_ref().map(|_| {
            prop("os_command_line").map_or_else(
                || format!("root=/dev/{} console=tty0 console=ttyS0 console=hvc0", disk_bus.root_dev()),
                str::to_string,
            )
        }),
        kernel_id,
        ramdisk_id,
    })
}

/// The port's first IPv4 address with its gateway (the subnet's first host when none) and
/// prefix length.
fn first_ipv4(nic: &meridian_common::agent::NicSpec) -> Result<Option<(Ipv4Addr, Ipv4Addr, u8)>, ActionError> {
    for ip in &nic.ips {
        let Ok(addr) = ip.address.parse::<Ipv4Addr>() else {
            continue;
        };
        let net: ipnet::Ipv4Net = ip
            .cidr
            .parse()
            .map_err(|_| ActionError::Invalid(format!("port {} has a bad CIDR {:?}", nic.port_id, ip.cidr)))?;
        let gateway = match ip.gateway.as_deref().map(str::parse::<Ipv4Addr>) {
            Some(Ok(g)) => g,
            Some(Err(_)) => {
                return Err(ActionError::Invalid(format!("port {} has a bad gateway {:?}", nic.port_id, ip.gateway)));
            }
            None => net.hosts().next().unwrap_or(net.network()),
        };
        return Ok(Some((addr, gateway, net.prefix_len())));
    }
    Ok(None)
}

/// Removes a temporary file (absent is fine; anything else is logged).
async fn remove_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "cannot remove a temporary file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("log");
        assert_eq!(tail(&p, Some(3)).expect("missing is empty"), "");
        std::fs::write(&p, "a\nb\nc\nd\n").expect("write");
        assert_eq!(tail(&p, Some(2)).expect("tail"), "d\n");
        assert_eq!(tail(&p, Some(3)).expect("tail").split('\n').count(), 3);
        assert_eq!(tail(&p, None).expect("all"), "a\nb\nc\nd\n");
        assert_eq!(tail(&p, Some(0)).expect("none"), "");
    }

    #[test]
    fn ipv4_gateway_defaults_to_the_first_host() {
        let nic = |gw: Option<&str>| meridian_common::agent::NicSpec {
            port_id: "p".into(),
            mac_address: "fa:16:3e:00:00:01".into(),
            network_id: "n".into(),
            mtu: 1500,
            ips: vec![
                meridian_common::agent::FixedIp {
                    address: "fd00::5".into(),
                    cidr: "fd00::/64".into(),
                    gateway: None,
                    dns_nameservers: vec![],
                },
                meridian_common::agent::FixedIp {
                    address: "10.1.2.5".into(),
                    cidr: "10.1.2.0/24".into(),
                    gateway: gw.map(str::to_string),
                    dns_nameservers: vec![],
                },
            ],
        };
        assert_eq!(
            first_ipv4(&nic(None)).expect("ok"),
            Some((Ipv4Addr::new(10, 1, 2, 5), Ipv4Addr::new(10, 1, 2, 1), 24))
        );
        assert_eq!(
            first_ipv4(&nic(Some("10.1.2.254"))).expect("ok"),
            Some((Ipv4Addr::new(10, 1, 2, 5), Ipv4Addr::new(10, 1, 2, 254), 24))
        );
        assert!(first_ipv4(&nic(Some("nope"))).is_err());
    }

    #[test]
    fn macs_are_checked() {
        assert!(valid_mac("fa:16:3e:00:AB:01"));
        assert!(!valid_mac("fa:16:3e:00:ab"));
        assert!(!valid_mac("fa:16:3e:00:ab:0g"));
        assert!(!valid_mac("fa:16:3e:00:ab:01'/>"));
    }
}
