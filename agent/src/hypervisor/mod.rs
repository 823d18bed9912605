//! The hypervisor seam: what the controller needs from libvirt, as a small blocking trait.
//!
//! Every method blocks (libvirt calls are synchronous): call them from `spawn_blocking`, never
//! on the async executor. Domains and networks are addressed by name; a missing domain is
//! `Ok(None)` from [`Hypervisor::state`], never an error.

pub mod libvirt;
pub mod timed;

pub use libvirt::Libvirt;

/// A domain's run state, as libvirt reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    NoState,
    Running,
    /// Running but blocked on a resource; still running for every purpose here.
    Blocked,
    Paused,
    /// In the middle of a guest shutdown.
    ShuttingDown,
    Shutoff,
    Crashed,
    /// Suspended by guest power management (S3/S4).
    Suspended,
    /// Shut off with its memory saved to disk (libvirt's managed save): the next start
    /// restores the guest where it was.
    Saved,
}

impl DomainState {
    /// Whether the domain has a live process (libvirt's "active").
    pub fn is_active(self) -> bool {
        !matches!(self, DomainState::Shutoff | DomainState::Saved)
    }
}

/// What the host offers, read from the connection.
#[derive(Clone, Debug, PartialEq)]
pub struct HostInfo {
    pub vcpus: u32,
    pub memory_mb: u64,
    /// `QEMU`, `Test`, …
    pub hypervisor_type: String,
    /// libvirt's encoding: major * 1,000,000 + minor * 1,000 + release.
    pub hypervisor_version: u64,
    /// The host CPU architecture from the capabilities (`x86_64`, `aarch64`, …).
    pub arch: String,
    /// The canonical URI of the connection.
    pub uri: String,
    /// Whether libvirt networks (NAT + DHCP) can be created on this connection.
    pub supports_networks: bool,
}

/// One domain on the connection.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainSummary {
    pub name: String,
    pub state: DomainState,
}

/// A failed hypervisor operation: which one, on what, and libvirt's error as the source.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    #[error("cannot connect to libvirt at {uri}")]
    Connect {
        uri: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot read host information")]
    HostInfo(#[source] virt::error::Error),
    #[error("cannot list domains")]
    ListDomains(#[source] virt::error::Error),
    #[error("cannot look up domain {name}")]
    Lookup {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("domain {0} does not exist")]
    NoDomain(String),
    #[error("cannot read the state of domain {name}")]
    State {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot define domain")]
    Define(#[source] virt::error::Error),
    #[error("cannot start domain {name}")]
    Start {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot shut down domain {name}")]
    Shutdown {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot destroy domain {name}")]
    Destroy {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot reboot domain {name}")]
    Reboot {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot pause domain {name}")]
    Suspend {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot reset domain {name}")]
    Reset {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot undefine domain {name}")]
    Undefine {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot read the XML of domain {name}")]
    DomainXml {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("network {0} does not exist")]
    NoNetwork(String),
    #[error("cannot set up network {name}")]
    Network {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot update the DHCP hosts of network {name}")]
    DhcpHost {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot read the XML of network {name}: {message}")]
    NetworkXml { name: String, message: String },
    #[error("cannot remove network {name}")]
    RemoveNetwork {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot open the serial console of domain {name}")]
    OpenConsole {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("this hypervisor has no serial console to open")]
    NoConsole,
    #[error("cannot attach a device to domain {name}")]
    AttachDevice {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot detach a device from domain {name}")]
    DetachDevice {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("this hypervisor cannot plug devices")]
    NoDevices,
    #[error("cannot resize disk {disk} of domain {name}")]
    BlockResize {
        name: String,
        disk: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot pause domain {name}")]
    Pause {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot unpause domain {name}")]
    Unpause {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot save the memory of domain {name}")]
    Save {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot discard the saved memory of domain {name}")]
    DiscardSave {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("this hypervisor cannot {0}")]
    Unsupported(&'static str),
    #[error("cannot live-migrate domain {name}")]
    Migrate {
        name: String,
        #[source]
        source: virt::error::Error,
    },
    #[error("cannot abort the job of domain {name}: {message}")]
    AbortJob { name: String, message: String },
    #[error("cannot read the statistics of domain {name}")]
    Stats {
        name: String,
        #[source]
        source: virt::error::Error,
    },
}

/// A live migration to another libvirt daemon (peer to peer: the source's daemon connects
/// to the destination's itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveMigration {
    /// The destination daemon's URI, as the source's daemon reaches it.
    pub dest_uri: String,
    /// Where QEMU sends the data (`tcp://ADDR`); `None`: the destination's host name.
    pub migrate_uri: Option<String>,
    pub dest_name: String,
    /// The definition the guest gets there (the source's, with the destination's paths).
    pub dest_xml: String,
    /// Target devices of the local disks copied along (block migration).
    pub disks: Vec<String>,
    /// Keep the guest paused on arrival (it was paused when the migration began).
    pub paused: bool,
}

/// How far a domain's running job (a migration) is, in bytes (libvirt's job statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobProgress {
    pub memory_total: u64,
    pub memory_processed: u64,
    pub memory_remaining: u64,
    pub disk_total: u64,
    pub disk_processed: u64,
    pub disk_remaining: u64,
}

/// One disk's counters (libvirt's `virDomainBlockStats`), by its `<target dev>`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DiskStats {
    pub dev: String,
    pub read_bytes: i64,
    pub read_requests: i64,
    pub write_bytes: i64,
    pub write_requests: i64,
    pub errors: i64,
}

/// One interface's counters (`virDomainInterfaceStats`), by its MAC and host-side device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NicStats {
    pub mac: String,
    pub dev: String,
    pub rx_bytes: i64,
    pub rx_packets: i64,
    pub rx_errors: i64,
    pub rx_drop: i64,
    pub tx_bytes: i64,
    pub tx_packets: i64,
    pub tx_errors: i64,
    pub tx_drop: i64,
}

/// What Nova's libvirt driver reads for a server's diagnostics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DomainStats {
    pub running: bool,
    pub max_memory_kib: u64,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub cpu_time_ns: u64,
    pub disks: Vec<DiskStats>,
    pub nics: Vec<NicStats>,
}

/// A domain's serial console, open full duplex. Blocking and thread-safe: one thread reads
/// while another writes; [`SerialConsole::abort`] ends a read blocked in another thread.
pub trait SerialConsole: Send + Sync {
    /// Guest output; 0 at the end (the guest stopped, or another attach took over).
    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize>;
    /// Sends all of `data` to the guest.
    fn write_all(&self, data: &[u8]) -> std::io::Result<()>;
    fn abort(&self);
}

/// The operations the controller drives. Implementations are blocking and thread-safe.
pub trait Hypervisor: Send + Sync + 'static {
    /// Host totals and identity (read fresh each call).
    fn host_info(&self) -> Result<HostInfo, HvError>;
    /// Every domain on the connection, running or only defined.
    fn domains(&self) -> Result<Vec<DomainSummary>, HvError>;
    /// The state of one domain; `None` when it does not exist.
    fn state(&self, name: &str) -> Result<Option<DomainState>, HvError>;
    /// The live XML of a domain.
    fn domain_xml(&self, name: &str) -> Result<String, HvError>;
    /// Defines (persistently) a domain from XML; redefining an existing one updates it.
    fn define(&self, xml: &str) -> Result<(), HvError>;
    /// Boots a defined, shut-off domain.
    fn start(&self, name: &str) -> Result<(), HvError>;
    /// Asks the guest to shut down (ACPI); returns before it has.
    fn shutdown(&self, name: &str) -> Result<(), HvError>;
    /// Pulls the plug. A domain that is already off is not an error.
    fn destroy(&self, name: &str) -> Result<(), HvError>;
    /// Asks the guest to reboot.
    fn reboot(&self, name: &str) -> Result<(), HvError>;
    /// Resets the virtual machine at once, like the reset button.
    fn reset(&self, name: &str) -> Result<(), HvError>;
    /// Removes the definition (and any managed save / NVRAM). Missing is not an error.
    fn undefine(&self, name: &str) -> Result<(), HvError>;
    /// Defines and starts the network from `xml` unless it exists; starts it if inactive.
    fn ensure_network(&self, name: &str, xml: &str) -> Result<(), HvError>;
    /// Adds or updates (by MAC) a static DHCP host entry in a network. An entry left over
    /// with the same IP and another MAC is replaced.
    fn set_dhcp_host(&self, network: &str, mac: &str, ip: &str) -> Result<(), HvError>;
    /// Removes the DHCP host entry with this MAC, if present; a missing network is fine.
    fn remove_dhcp_host(&self, network: &str, mac: &str) -> Result<(), HvError>;
    /// Stops and undefines a network; a missing one is fine.
    fn remove_network(&self, name: &str) -> Result<(), HvError>;
    /// Attaches to the first serial console, taking it over from any other attach (as Nova
    /// does; virtlogd keeps logging it).
    fn open_serial(&self, name: &str) -> Result<std::sync::Arc<dyn SerialConsole>, HvError> {
        let _ = name;
        Err(HvError::NoConsole)
    }
    /// Adds a device (`<disk>` XML) to the running guest (`live`) and/or the domain's
    /// persistent definition (`config`): libvirt's `attachDeviceFlags` with LIVE / CONFIG.
    fn attach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HvError> {
        let _ = (name, xml, live, config);
        Err(HvError::NoDevices)
    }
    /// Asks for a device's removal from the guest (`live`) and/or the definition (`config`).
    /// Returns once libvirt has asked; the guest releases it in its own time. `Ok(false)`: the
    /// driver cannot unplug from a running guest (the test driver), only the definition
    /// changed, so there is nothing to wait for.
    fn detach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<bool, HvError> {
        let _ = (name, xml, live, config);
        Err(HvError::NoDevices)
    }
    /// Tells a running guest that its disk `disk` (the `<target dev>`, `vdb`) now has `bytes`
    /// (libvirt's `virDomainBlockResize`, after the storage grew). `Ok(false)`: the driver
    /// cannot (the test driver); the guest sees the size at its next start.
    fn block_resize(&self, name: &str, disk: &str, bytes: u64) -> Result<bool, HvError> {
        let _ = (name, disk, bytes);
        Ok(false)
    }
    /// The persistent (inactive) XML of a domain.
    fn domain_config_xml(&self, name: &str) -> Result<String, HvError> {
        self.domain_xml(name)
    }
    /// Stops the guest's vCPUs, keeping it in memory (libvirt's `virDomainSuspend`).
    fn pause(&self, name: &str) -> Result<(), HvError> {
        let _ = name;
        Err(HvError::Unsupported("pause a guest"))
    }
    /// Lets a paused guest run on (`virDomainResume`).
    fn unpause(&self, name: &str) -> Result<(), HvError> {
        let _ = name;
        Err(HvError::Unsupported("unpause a guest"))
    }
    /// Saves the guest's memory and stops it (`virDomainManagedSave`); [`Hypervisor::start`]
    /// restores it.
    fn managed_save(&self, name: &str) -> Result<(), HvError> {
        let _ = name;
        Err(HvError::Unsupported("save a guest's memory"))
    }
    /// Throws a managed save away, so the next start boots afresh. None is not an error.
    fn discard_save(&self, name: &str) -> Result<(), HvError> {
        let _ = name;
        Ok(())
    }
    /// The running domain's definition as another daemon can take it (libvirt's migratable
    /// XML: no run-time-only parts).
    fn migratable_xml(&self, name: &str) -> Result<String, HvError> {
        let _ = name;
        Err(HvError::Unsupported("describe a guest for migration"))
    }
    /// Moves the running or paused guest to another daemon, memory and `disks` copied while
    /// it runs; blocks until it is there (and undefined here) or failed (still here).
    fn migrate_live(&self, name: &str, migration: &LiveMigration) -> Result<(), HvError> {
        let _ = (name, migration);
        Err(HvError::Unsupported("live-migrate a guest"))
    }
    /// The progress of the domain's running job; `None` when it has none.
    fn job_progress(&self, name: &str) -> Result<Option<JobProgress>, HvError> {
        let _ = name;
        Ok(None)
    }
    /// Cancels the domain's running job (a migration ends with the guest still here).
    fn abort_job(&self, name: &str) -> Result<(), HvError> {
        let _ = name;
        Err(HvError::Unsupported("abort a guest's job"))
    }
    /// The domain's counters for diagnostics: info, each disk's and interface's statistics
    /// (a device whose counters cannot be read is listed with zeros).
    fn domain_stats(&self, name: &str) -> Result<DomainStats, HvError> {
        let _ = name;
        Err(HvError::Unsupported("read a guest's statistics"))
    }
}
