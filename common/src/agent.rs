//! The wire protocol between `meridian-server` and `meridian-agent`.
//!
//! The agent always connects out (a compute host behind NAT works): it registers, heartbeats
//! with its inventory and the power state of its domains, long-polls for work, and reports
//! progress and results.
//!
//! Authentication: `register` carries `Authorization: Bearer <join token>` (the cluster's
//! agent token) or the host's current credential; its answer holds a new credential for that
//! host alone, which replaces the previous one. Every other call carries
//! `Authorization: Bearer <host credential>` and may act only for that host: its own heartbeat
//! and work, events of its own work items, images its open builds (or open volume creates from
//! an image) need. A 401 means the credential is unknown or replaced (register again); a call
//! naming another host is 403; another host's work item or an image no open work of the host
//! needs is 404.
//!
//! Work is stored by the server before it is offered and is offered again until acknowledged
//! (at least once); the agent handles a repeated work id idempotently.
//!
//! | call | path |
//! | --- | --- |
//! | register | `POST {server}/agent/v1/register` → [`RegisterResponse`] |
//! | heartbeat | `POST {server}/agent/v1/hosts/{host}/heartbeat` ([`Heartbeat`]) → 204 |
//! | poll work | `GET {server}/agent/v1/hosts/{host}/work?wait=SECS` → `[WorkItem]` (empty after `wait`) |
//! | report | `POST {server}/agent/v1/work/{work_id}/events` ([`WorkEvent`]) → 204 |
//! | report several | `POST {server}/agent/v1/events` ([`EventBatch`]) → [`EventBatchResult`] |
//! | image data | `GET {server}/agent/v1/images/{image_id}/file` → the image bytes |
//! | image upload | `PUT {server}/agent/v1/images/{image_id}/file` (the bytes) → 204, for an open [`Action::VolumeUploadImage`] or [`Action::ImageCreate`] of the host |
//! | migration disk | `PUT`/`GET {server}/agent/v1/migrations/{migration_id}/disk`: the source of an open [`Action::MigrateOut`] sends the root disk, the destination of an open [`Action::MigrateIn`] reads it |
//! | live migration progress | `POST {server}/agent/v1/migrations/{migration_id}/progress` ([`LiveMigrationProgress`]) → [`LiveMigrationControl`], by the source of an open [`Action::LiveMigrateOut`] while the guest moves |
//! | console | websocket `GET {server}/agent/v1/consoles/{session}` (after an [`Action::Console`]) |
//! | port filters | `GET {server}/agent/v1/hosts/{host}/port-filters?after=GEN&wait=SECS` → [`HostFilters`] |
//! | metadata | `GET {server}/agent/v1/metadata/{path}` with [`METADATA_NETWORK_HEADER`] and [`METADATA_ADDRESS_HEADER`] → the guest's metadata |
//!
//! Volume work (block storage): [`Action::VolumeCreate`], [`Action::VolumeExtend`] and
//! [`Action::VolumeDelete`] concern the volume alone, so their `WorkItem.instance_id` is the
//! **volume's** id (a UUID too): the agent queues a volume's work in order like an instance's.
//! [`Action::VolumeAttach`] and [`Action::VolumeDetach`] change a domain, so they carry the
//! **instance's** id and run in order with its other work. Where a volume's bytes live is the
//! agent's business (its storage backend); the server names only the volume and its size. A
//! `Done` for create/extend means the bytes exist at that size; for delete, that they are gone;
//! for attach, that the guest's definition (and the running guest) has the disk; for detach,
//! that neither has it any more. [`Action::SnapshotCreate`], [`Action::SnapshotDelete`],
//! [`Action::VolumeRevert`] and [`Action::VolumeUploadImage`] are volume-only work too (keyed by the volume's id); the
//! upload's `Done` means the image's bytes were accepted (the server makes the image active).
//! A volume made from a source ([`VolumeSource`]) finds a snapshot or volume source on its own
//! host: the server places such volumes beside their source.
//!
//! A console request ([`Action::Console`]) is not durable work: it is handed out once by the
//! long poll, never acknowledged with events, and the agent runs it beside the instance's
//! queue. The agent opens a websocket to the session's route (host credential) and carries the
//! console's bytes in binary frames both ways until either side closes; a close frame's reason
//! says why a console could not be opened or ended.

use serde::{Deserialize, Serialize};

/// Prefix of every agent call.
pub const AGENT_API: &str = "/agent/v1";

/// What a host offers, as read from libvirt, after reservations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
    /// Held back for the host itself. Already subtracted from `vcpus`, `memory_mb` and
    /// `disk_gb` by the agent: the scheduler uses those as they are.
    pub reserved_vcpus: u32,
    pub reserved_memory_mb: u64,
    pub reserved_disk_gb: u64,
    /// `QEMU` for qemu:///system, `test` for test:///default.
    pub hypervisor_type: String,
    pub hypervisor_version: u64,
    /// `x86_64`, `aarch64`, …
    pub cpu_arch: String,
    pub libvirt_uri: String,
    /// Address other hosts reach this one at.
    pub host_ip: String,
    /// Whether the agent can create libvirt networks (NAT + DHCP) for Meridian networks.
    pub supports_networks: bool,
    pub availability_zone: String,
    /// The host's `uptime` line (what Nova's `os-hypervisors/{id}/uptime` shows); empty when
    /// the agent could not read it.
    #[serde(default)]
    pub uptime: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub host: String,
    pub inventory: Inventory,
    pub agent_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub host_id: String,
    pub heartbeat_interval_secs: u64,
    /// The host's credential for every other call (a random 256-bit secret; the server keeps
    /// only its hash). It replaces the one any earlier registration returned.
    pub credential: String,
}

/// Nova's power states (the numbers are part of the API: `OS-EXT-STS:power_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    NoState,
    Running,
    Paused,
    Shutdown,
    Crashed,
    Suspended,
}

impl PowerState {
    pub fn code(self) -> i64 {
        match self {
            PowerState::NoState => 0,
            PowerState::Running => 1,
            PowerState::Paused => 3,
            PowerState::Shutdown => 4,
            PowerState::Crashed => 6,
            PowerState::Suspended => 7,
        }
    }
}

/// One domain the agent knows about.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceReport {
    pub instance_id: String,
    pub power_state: PowerState,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub inventory: Inventory,
    pub instances: Vec<InstanceReport>,
}

/// A unit of work for one instance on one host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkItem {
    pub id: String,
    pub instance_id: String,
    /// Delivery attempt, from 1; a repeat means an earlier delivery was not acknowledged.
    pub attempt: u32,
    pub action: Action,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    Build(Box<BuildSpec>),
    Stop,
    Start,
    Reboot {
        hard: bool,
    },
    Delete,
    /// Freeze the guest's vCPUs in memory (libvirt suspend); `Done` with power state paused.
    Pause,
    /// Let a paused guest run on (libvirt resume).
    Unpause,
    /// Save the guest's memory to disk and stop its process (libvirt managed save); `Done`
    /// with power state shutdown, as Nova's libvirt driver reports a saved guest.
    Suspend,
    /// Restore a suspended guest from its managed save, running on where it was (not a boot).
    Resume,
    /// Return the last `lines` lines of the serial console log (all when `None`).
    ConsoleLog {
        lines: Option<u32>,
    },
    /// Connect an interactive console to the server's session `session`
    /// (`{server}/agent/v1/consoles/{session}`). The work item's id is the session id.
    Console {
        session: String,
        protocol: ConsoleProtocol,
    },
    /// Make the volume's storage of `volume.size_gb` (keyed by the volume's id): empty, or
    /// holding `source`'s bytes (then grown to `size_gb`).
    VolumeCreate {
        volume: VolumeSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<VolumeSource>,
    },
    /// Copy the volume's bytes as snapshot `snapshot_id`, kept on this host beside it (keyed
    /// by the volume's id). When `instance_id` is set the volume is in use by that domain
    /// (Cinder's `force`): the guest is paused for the copy so the snapshot is crash-consistent.
    SnapshotCreate {
        volume: VolumeSpec,
        snapshot_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance_id: Option<String>,
    },
    /// Remove snapshot `snapshot_id` of the volume (keyed by the volume's id). The volume's own
    /// bytes are never touched; a missing snapshot is fine.
    SnapshotDelete {
        volume: VolumeSpec,
        snapshot_id: String,
    },
    /// Write the volume's bytes to image `image_id` as `disk_format` (raw or qcow2, converted
    /// on the host) through [`AGENT_API`]`/images/{image_id}/file` (keyed by the volume's id).
    VolumeUploadImage {
        volume: VolumeSpec,
        image_id: String,
        disk_format: String,
    },
    /// Grow the volume's storage to `volume.size_gb` (keyed by the volume's id). When
    /// `attached` names a domain using it (Cinder 3.42, extend while in use), the running
    /// guest is told the new size too (libvirt's block resize). Added compatibly: absent from
    /// an older server, ignored by an older agent (which grows the bytes only).
    VolumeExtend {
        volume: VolumeSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attached: Option<ExtendAttached>,
    },
    /// Put snapshot `snapshot_id`'s bytes back as the volume's (Cinder 3.40's revert; keyed
    /// by the volume's id). The volume is not attached (the server asks for an available one);
    /// the snapshot stays. Added compatibly: an older server never sends it.
    VolumeRevert {
        volume: VolumeSpec,
        snapshot_id: String,
    },
    /// Remove the volume's storage (keyed by the volume's id). Refused while a domain uses it.
    VolumeDelete {
        volume: VolumeSpec,
    },
    /// Plug the volume into the instance's domain as `device` (`vdb`, …): the live guest and
    /// its persistent definition (keyed by the instance's id).
    VolumeAttach {
        volume: VolumeSpec,
        attachment_id: String,
        device: String,
        /// Make the volume (empty) first when this host does not have it: a blank volume,
        /// never attached, that the server moved to the instance's host.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        create: bool,
    },
    /// Unplug the volume from the instance's domain, waiting for the guest to release it.
    VolumeDetach {
        volume: VolumeSpec,
        attachment_id: String,
        device: String,
    },
    /// Copy the instance's root disk (the image disk, never volumes) to image `image_id` as
    /// `disk_format` (raw or qcow2) through [`AGENT_API`]`/images/{image_id}/file`: Nova's
    /// `createImage`, `createBackup` and shelve. A running guest is paused for the copy (the
    /// image is crash-consistent) and resumed, also on failure; a stopped one stays stopped.
    /// `Progress` reports `image_pending_upload` then `image_uploading` (the shelve variants
    /// when `shelving`; a snapshot reports `image_snapshot` first). A shelve (`shelving`) powers
    /// the guest off before the copy, as Nova's shelve does, and leaves it off.
    ImageCreate {
        image_id: String,
        disk_format: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        shelving: bool,
    },
    /// Replace the instance's root disk with `spec.image`'s bytes and boot it again with the
    /// same ports (Nova's rebuild; `Progress`: `rebuild_block_device_mapping`,
    /// `rebuild_spawning`). On a host that never had the instance (evacuate) it is a build.
    Rebuild(Box<BuildSpec>),
    /// Boot `image` as the first disk with the instance's own root disk as the second
    /// (Nova's rescue); the instance's definition is kept to go back to.
    Rescue {
        image: ImageSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        admin_password: Option<String>,
    },
    /// Boot the instance's own definition again after a rescue (the rescue disk is removed).
    Unrescue,
    /// Hot-plug a port into the instance's domain (live guest and persistent definition).
    InterfaceAttach {
        nic: NicSpec,
    },
    /// Unplug the port with `mac_address` from the instance's domain.
    InterfaceDetach {
        port_id: String,
        mac_address: String,
    },
    /// Read the domain's diagnostics; `Done.data` holds Nova 2.48's body
    /// (`state`, `driver`, `uptime`, `num_cpus`, `cpu_details`, `nic_details`, `disk_details`, …).
    Diagnostics,
    /// Resize / cold migration, source side: power the guest off (gracefully, then destroy)
    /// and send its root disk through the server's relay, `PUT`
    /// [`AGENT_API`]`/migrations/{migration_id}/disk` (the instance's qcow2 overlay as it is;
    /// its backing file is the instance's image, which the destination has or fetches). The
    /// domain and its disk stay here, defined and off, until [`Action::MigrateCleanup`]: a
    /// revert starts them again. (The server counts the disk's bytes as the relay takes them.)
    MigrateOut {
        migration_id: String,
    },
    /// Resize / cold migration, destination side: fetch the disk the source sent (`GET` on the
    /// same route), rebase it on this host's copy of `spec.image`, grow it to the flavor's
    /// root disk (never shrink), define the domain from `spec` (the new flavor, the same
    /// ports) and start it when `power_on`. `Progress`: `resize_finish`.
    MigrateIn {
        migration_id: String,
        spec: Box<BuildSpec>,
        power_on: bool,
    },
    /// A resize on the host the instance is on: power off, keep a copy of the root disk for a
    /// revert (`disk.resize-backup`), grow the disk to the new flavor, redefine the domain from
    /// `spec` (the new flavor, the same ports) and start it when `power_on`.
    ResizeLocal {
        migration_id: String,
        spec: Box<BuildSpec>,
        power_on: bool,
    },
    /// Undo of a [`Action::ResizeLocal`]: power off, put the kept disk back, redefine the
    /// domain from `spec` (the old flavor) and start it when `power_on`.
    ResizeLocalRevert {
        migration_id: String,
        spec: Box<BuildSpec>,
        power_on: bool,
    },
    /// The source side of a revert of a cold migration: start the domain kept here (old
    /// flavor, disk untouched) when `power_on`, else leave it off.
    MigrateRevert {
        migration_id: String,
        power_on: bool,
    },
    /// Live migration, destination side (Nova's `pre_live_migration`): get this host ready to
    /// receive the running guest of `spec` without defining a domain (libvirt defines it when
    /// the guest arrives): the image cached, the local disks (root over this host's copy of
    /// the image, ephemeral, swap) made empty at `spec`'s sizes for the block migration to
    /// fill, the config drive made again from `spec`, the ports plugged (network, DHCP entry).
    /// `Done.data` is a [`LiveMigrationTarget`]. A host whose hypervisor cannot receive a
    /// live guest (libvirt's test driver) fails it, leaving nothing behind; so does any other
    /// failure (the server then asks [`Action::MigrateCleanup`] with `remove` anyway).
    LiveMigrateIn {
        migration_id: String,
        spec: Box<BuildSpec>,
    },
    /// Live migration, source side: move the running or paused guest to `target` with
    /// libvirt's peer-to-peer live migration: memory and the local disks copied while the
    /// guest runs (block migration; volumes are never local to two hosts, so the server
    /// refuses servers with volumes), the definition moved and undefined here. While it runs
    /// the agent posts a [`LiveMigrationProgress`] to
    /// `{server}/agent/v1/migrations/{migration_id}/progress` about every second and obeys the
    /// [`LiveMigrationControl`] answered (abort; force completion by pausing the guest, as
    /// Nova does without post-copy), and aborts by itself after `timeout_secs` (Nova's
    /// `live_migration_completion_timeout`). `Done`: the guest runs on the destination and
    /// no domain is left here; its files stay until [`Action::MigrateCleanup`]. `Done.data`:
    /// `{"memory_bytes": N, "disk_bytes": N}` moved. `Failed`: the guest runs on here as
    /// before (libvirt's guarantee); an abort's message says it was cancelled.
    LiveMigrateOut {
        migration_id: String,
        target: LiveMigrationTarget,
        timeout_secs: u64,
    },
    /// The end of a migration on one host. `remove`: take the instance's domain and files off
    /// this host (the source at confirm, the destination at a revert or a failure; the server
    /// also asks this of a host that comes back after an evacuation); otherwise only drop the
    /// copy a [`Action::ResizeLocal`] kept. Done when there is nothing (left) to remove.
    MigrateCleanup {
        migration_id: String,
        remove: bool,
    },
}

/// Where and how a live guest reaches its destination: what the destination's
/// [`Action::LiveMigrateIn`] answers, handed to the source's [`Action::LiveMigrateOut`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMigrationTarget {
    /// The destination's libvirt daemon as the source's daemon reaches it (peer to peer), e.g.
    /// `qemu+tcp://10.0.0.2/system` (the agent's `--migration-uri`).
    pub libvirt_uri: String,
    /// Where QEMU sends memory and disks, e.g. `tcp://10.0.0.2` (libvirt picks the port);
    /// `None` lets libvirt use the destination's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_uri: Option<String>,
    /// The domain's name on the destination (agents sharing a daemon name them apart).
    pub domain_name: String,
    /// The destination's file for each local disk, by target device (`vda`, `vdb`, …, the
    /// config drive's too): the source rewrites its definition with them.
    pub disks: std::collections::BTreeMap<String, String>,
    /// The destination's serial console log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_log: Option<String>,
}

/// How far a live migration is (libvirt's job statistics), as Nova's migration record shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMigrationProgress {
    pub memory_total_bytes: u64,
    pub memory_processed_bytes: u64,
    pub memory_remaining_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_processed_bytes: u64,
    pub disk_remaining_bytes: u64,
}

/// What the server wants of a running live migration (the answer to a progress report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveMigrationControl {
    /// Cancel it (`DELETE /servers/{id}/migrations/{migration_id}`): the guest stays here.
    #[serde(default)]
    pub abort: bool,
    /// Finish it now (`force_complete`): the agent pauses the guest so the copy converges; it
    /// runs again on the destination.
    #[serde(default)]
    pub force_complete: bool,
}

/// Where a new volume's first bytes come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VolumeSource {
    /// An image's bytes, fetched like a build's image (`image data`) and converted to raw.
    Image { image: ImageSpec },
    /// A snapshot of another volume of this host (`SnapshotCreate` made it here).
    Snapshot { snapshot_id: String },
    /// Another volume of this host (a clone).
    Volume { volume_id: String },
}

/// A volume given to a build (`block_device_mapping_v2`): made and placed on the build's host
/// before the build is offered; the agent plugs it into the new domain as `device`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub volume: VolumeSpec,
    /// `vda` for the boot volume, then `vdb`, … in the mapping's order.
    pub device: String,
    /// Nova's `boot_index`: `Some(0)` is the root disk (the build then makes no image disk).
    #[serde(default)]
    pub boot_index: Option<u32>,
    /// The volume attachment's id (Cinder's), as for [`Action::VolumeAttach`].
    pub attachment_id: String,
}

/// The domain an extended volume is plugged into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendAttached {
    pub instance_id: String,
    /// The guest's device (`vdb`, …), the `<target dev>` of the disk.
    pub device: String,
}

/// A volume as the agent needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub id: String,
    pub size_gb: u64,
    #[serde(default)]
    pub readonly: bool,
}

impl Action {
    /// Work on a volume alone, keyed by the volume's id.
    pub fn is_volume_only(&self) -> bool {
        matches!(
            self,
            Action::VolumeCreate { .. }
                | Action::VolumeExtend { .. }
                | Action::VolumeDelete { .. }
                | Action::SnapshotCreate { .. }
                | Action::SnapshotDelete { .. }
                | Action::VolumeUploadImage { .. }
                | Action::VolumeRevert { .. }
        )
    }
}

/// Which console of a domain an [`Action::Console`] opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleProtocol {
    /// The first serial port, through libvirt (`virDomainOpenConsole`).
    Serial,
    /// The domain's VNC server (raw RFB over TCP on the host's loopback).
    Vnc,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BuildSpec {
    pub name: String,
    pub hostname: String,
    pub flavor: FlavorSpec,
    pub image: ImageSpec,
    pub nics: Vec<NicSpec>,
    /// Base64, as the API received it.
    pub user_data: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub public_key: Option<String>,
    /// The key pair's name (`public_keys` and `keys` in the metadata are keyed by it).
    #[serde(default)]
    pub key_name: Option<String>,
    pub project_id: String,
    /// Nova's reservation id (`r-…`) and the instance's place in its multi-create request.
    #[serde(default)]
    pub reservation_id: String,
    #[serde(default)]
    pub launch_index: u32,
    /// The user asked for a config drive: attach one whatever the host's own policy.
    #[serde(default)]
    pub config_drive: bool,
    /// Names of the instance's security groups (the metadata's `security-groups`).
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Volumes of the build's `block_device_mapping_v2`, already on this host. One with
    /// `boot_index: Some(0)` is the root disk: `image` then only lends its properties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_devices: Vec<BlockDevice>,
    /// The local disks beside the root disk that `block_device_mapping_v2` asked for (`blank`
    /// → `local`), replacing the flavor's ephemeral and swap disks; `None`: the flavor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_disks: Option<LocalDisks>,
}

/// A server's own local disks (Nova's ephemeral and swap block device mappings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalDisks {
    /// In request order: `disk.eph0`, `disk.eph1`, … after the root disk.
    pub ephemerals: Vec<EphemeralDisk>,
    /// The swap disk after them, 0 for none.
    pub swap_mb: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EphemeralDisk {
    pub size_gb: u64,
    /// The file system to make (`ext2`, `ext3`, `ext4`, `xfs`, as Nova's libvirt driver);
    /// `None`: ext4.
    #[serde(default)]
    pub guest_format: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlavorSpec {
    /// The flavor's name (EC2 metadata's `instance-type`).
    #[serde(default)]
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub ephemeral_gb: u64,
    pub swap_mb: u64,
    pub extra_specs: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageSpec {
    pub id: String,
    pub size: u64,
    /// MD5 hex, as Glance's `checksum`.
    pub checksum: String,
    pub disk_format: String,
    /// Glance properties (`hw_*`, `kernel_id`, `ramdisk_id`, `os_command_line`, …).
    pub properties: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NicSpec {
    pub port_id: String,
    pub mac_address: String,
    pub network_id: String,
    pub mtu: u32,
    /// The port's fixed addresses with their subnet's CIDR and gateway.
    pub ips: Vec<FixedIp>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FixedIp {
    pub address: String,
    pub cidr: String,
    pub gateway: Option<String>,
    pub dns_nameservers: Vec<String>,
}

/// Events of any work items, oldest first: what an agent has to report at once goes in one
/// request. The server applies them in order and stops at the first it cannot apply now.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EventBatch {
    pub events: Vec<ReportedEvent>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportedEvent {
    pub work_id: String,
    pub event: WorkEvent,
}

/// How many events of a batch, from the first, the server took (applied, or refused for good
/// as a repeat or for an unknown work item). The rest are to be sent again.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EventBatchResult {
    pub taken: usize,
    /// Why the server stopped before the end, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Progress and outcome of a work item. The last event of an item is `Done` or `Failed`; it
/// acknowledges the item.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkEvent {
    /// A build moved on: `block_device_mapping` (image cached, disk made) or `spawning`.
    Progress {
        task_state: String,
    },
    Done {
        power_state: PowerState,
        console: Option<String>,
        /// A build that attached a config drive (the server then reports `config_drive`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        config_drive: bool,
        /// What an action answers besides its state (diagnostics, a migration's details).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<serde_json::Value>,
    },
    Failed {
        message: String,
        details: String,
        retryable: bool,
    },
}

/// Everything one host must enforce on its guests' ports, as of `generation`.
///
/// The agent long-polls `port-filters?after=<the generation it applied>`: the server answers at
/// once when its generation differs (any change to a group, rule, port or instance placement
/// moves it), else after `wait` seconds with the same generation. The agent replaces its whole
/// ruleset with the answer (one atomic nftables transaction), so a missed change cannot stick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFilters {
    pub generation: u64,
    /// Every port of every instance placed on the host (built or building), whatever its state.
    pub ports: Vec<PortFilter>,
}

/// One port's filter: who it may claim to be and what may reach it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortFilter {
    pub port_id: String,
    pub instance_id: String,
    pub network_id: String,
    pub mac_address: String,
    /// The port's fixed IP addresses (no prefix).
    pub fixed_ips: Vec<String>,
    /// Extra (IP or CIDR, MAC) pairs the guest may send as (Neutron's `allowed_address_pairs`;
    /// the MAC is the port's own when the pair gave none).
    #[serde(default)]
    pub allowed_address_pairs: Vec<AddressPair>,
    /// `false`: no filtering and no anti-spoofing at all for this port.
    pub port_security_enabled: bool,
    /// The union of the rules of the port's security groups, remote groups already resolved.
    /// Empty with `port_security_enabled`: nothing in, nothing out (but DHCP and metadata).
    pub rules: Vec<FilterRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    pub ip_address: String,
    pub mac_address: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EtherType {
    IPv4,
    IPv6,
}

/// One security group rule as the host applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    pub direction: Direction,
    pub ethertype: EtherType,
    /// IP protocol number (`tcp` is 6, `icmp` 1, `ipv6-icmp` 58); `None`: any protocol.
    pub protocol: Option<u8>,
    /// TCP/UDP/SCTP: the destination port range; ICMP: `port_range_min` is the type and
    /// `port_range_max` the code.
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    /// The peer: `None` is anyone; `Some(list)` is these prefixes only (a `remote_ip_prefix`, or
    /// the addresses of a remote group's or address group's members; an empty list matches
    /// nobody).
    pub remote: Option<Vec<String>>,
    /// From a stateful group (conntrack return traffic allowed); stateless groups' rules are
    /// matched both ways by the rules alone.
    pub stateful: bool,
}

/// Headers the agent's metadata proxy adds when it forwards a guest's request: the Meridian
/// network the request came in on and the guest's source address, both as the host saw them.
/// The server identifies the instance by this pair alone (as Neutron's metadata proxy does).
pub const METADATA_NETWORK_HEADER: &str = "x-meridian-network-id";
pub const METADATA_ADDRESS_HEADER: &str = "x-forwarded-for";
