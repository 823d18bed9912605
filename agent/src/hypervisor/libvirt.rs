//! [`Hypervisor`] over a libvirt connection (the `virt` crate).
//!
//! libvirt connections are thread-safe, so one [`Libvirt`] is shared by the blocking threads
//! the controller runs calls on. Network changes are serialised by a lock so that two builds
//! on the same Meridian network do not both try to define it.

use std::sync::{Mutex, PoisonError, RwLock};

use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::network::Network;
use virt::sys;

use super::{DomainState, DomainSummary, HostInfo, HvError, Hypervisor};

/// A libvirt connection, opened again when it dies (libvirtd restarted).
pub struct Libvirt {
    conn: RwLock<Connect>,
    uri: String,
    net_lock: Mutex<()>,
}

impl std::fmt::Debug for Libvirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libvirt").field("uri", &self.uri).finish()
    }
}

fn is_code(e: &VirtError, code: ErrorNumber) -> bool {
    e.code().is_known_and(|c| c == code)
}

fn map_state(state: virt::domain::DomainStateEnum) -> DomainState {
    use virt::domain::DomainState as S;
    match state.unwrap_or(S::NoState) {
        S::NoState => DomainState::NoState,
        S::Running => DomainState::Running,
        S::Blocked => DomainState::Blocked,
        S::Paused => DomainState::Paused,
        S::Shutdown => DomainState::ShuttingDown,
        S::Shutoff => DomainState::Shutoff,
        S::Crashed => DomainState::Crashed,
        S::PMSuspended => DomainState::Suspended,
    }
}

impl Libvirt {
    /// Opens a read-write connection. libvirt's own printing of errors to stderr is turned off:
    /// every error is returned and logged by the caller.
    pub fn open(uri: &str) -> Result<Libvirt, HvError> {
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|source| HvError::Connect { uri: uri.to_string(), source })?;
        Ok(Libvirt { conn: RwLock::new(conn), uri: uri.to_string(), net_lock: Mutex::new(()) })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether networks here are served by a real dnsmasq (not libvirt's test driver), so
    /// leases exist to release.
    fn has_dnsmasq(&self) -> bool {
        !self.uri.starts_with("test:") && !self.uri.starts_with("test+")
    }

    /// The connection, reopened first if it is no longer alive.
    fn conn(&self) -> Result<Connect, HvError> {
        {
            let conn = self.conn.read().unwrap_or_else(PoisonError::into_inner);
            if conn.is_alive().unwrap_or(false) {
                return Ok(conn.clone());
            }
        }
        let mut conn = self.conn.write().unwrap_or_else(PoisonError::into_inner);
        if !conn.is_alive().unwrap_or(false) {
            tracing::warn!(uri = %self.uri, "the libvirt connection died; opening it again");
            *conn =
                Connect::open(Some(&self.uri)).map_err(|source| HvError::Connect { uri: self.uri.clone(), source })?;
        }
        Ok(conn.clone())
    }

    fn lookup(&self, name: &str) -> Result<Option<Domain>, HvError> {
        match self.conn()?.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is_code(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(source) => Err(HvError::Lookup { name: name.to_string(), source }),
        }
    }

    fn existing(&self, name: &str) -> Result<Domain, HvError> {
        self.lookup(name)?.ok_or_else(|| HvError::NoDomain(name.to_string()))
    }

    fn lookup_network(&self, name: &str) -> Result<Option<Network>, HvError> {
        match self.conn()?.lookup_network_by_name(name) {
            Ok(n) => Ok(Some(n)),
            Err(e) if is_code(&e, ErrorNumber::NoNetwork) => Ok(None),
            Err(source) => Err(HvError::Network { name: name.to_string(), source }),
        }
    }

    /// A network's current definition, parsed.
    fn network_info(&self, name: &str, net: &Network) -> Result<crate::xml::NetworkInfo, HvError> {
        let xml = net.xml_desc(0).map_err(|source| HvError::DhcpHost { name: name.to_string(), source })?;
        crate::xml::NetworkInfo::parse(&xml)
            .map_err(|e| HvError::NetworkXml { name: name.to_string(), message: e.to_string() })
    }

    fn lock_networks(&self) -> std::sync::MutexGuard<'_, ()> {
        self.net_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Live and persistent for a running network, persistent only otherwise.
fn update_flags(net: &Network) -> Result<sys::virNetworkUpdateFlags, VirtError> {
    Ok(if net.is_active()? {
        sys::VIR_NETWORK_UPDATE_AFFECT_LIVE | sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
    } else {
        sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG
    })
}

/// Ends dnsmasq's lease of `ip` to `mac` on `bridge` by sending the DHCPRELEASE the guest
/// never sent (`dhcp_release`, from dnsmasq-utils, as Neutron's DHCP agent does). dnsmasq
/// offers no address still leased to another MAC, even for a static host entry, so without
/// this a port that reuses a deleted port's address gets no DHCP answer until the old lease
/// runs out. Best effort: without the tool, or without a lease, nothing happens.
fn release_lease(bridge: &str, ip: &str, mac: &str) {
    match std::process::Command::new("dhcp_release").args([bridge, ip, mac]).output() {
        Ok(out) if out.status.success() => tracing::debug!(bridge, ip, mac, "released the DHCP lease"),
        Ok(out) => {
            tracing::warn!(bridge, ip, mac, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "dhcp_release failed")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot run dhcp_release (dnsmasq-utils): the lease of {ip} stays until it expires")
        }
    }
}

/// A shut-off domain with a managed save image is [`DomainState::Saved`] (libvirt reports it
/// as shut off; only the image tells them apart).
fn saved_or(d: &Domain, state: DomainState) -> DomainState {
    if state == DomainState::Shutoff && d.has_managed_save(0).unwrap_or(false) { DomainState::Saved } else { state }
}

/// libvirt's `VIR_DOMAIN_AFFECT_*` flags for a device change.
fn affect(live: bool, config: bool) -> u32 {
    (if live { sys::VIR_DOMAIN_AFFECT_LIVE } else { 0 }) | (if config { sys::VIR_DOMAIN_AFFECT_CONFIG } else { 0 })
}

/// Whether an error means "the domain was not running", which destroy treats as done.
fn not_running(e: &VirtError) -> bool {
    is_code(e, ErrorNumber::OperationInvalid)
}

impl Hypervisor for Libvirt {
    fn host_info(&self) -> Result<HostInfo, HvError> {
        let conn = self.conn()?;
        let node = conn.node_info().map_err(HvError::HostInfo)?;
        let mut hypervisor_type = conn.driver_type().map_err(HvError::HostInfo)?;
        // The protocol's names: `QEMU` as libvirt says it, but `test` for the test driver.
        if hypervisor_type.eq_ignore_ascii_case("test") {
            hypervisor_type = "test".into();
        }
        let hypervisor_version = u64::from(conn.hyp_version().map_err(HvError::HostInfo)?);
        let arch = conn
            .capabilities()
            .ok()
            .and_then(|c| crate::xml::host_arch(&c))
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let uri = conn.uri().unwrap_or_else(|_| self.uri.clone());
        // Unprivileged (session) connections cannot create bridges.
        let supports_networks = conn.list_all_networks(0).is_ok() && !uri.trim_end_matches('/').ends_with("/session");
        Ok(HostInfo {
            vcpus: node.cpus,
            memory_mb: node.memory / 1024,
            hypervisor_type,
            hypervisor_version,
            arch,
            uri,
            supports_networks,
        })
    }

    fn domains(&self) -> Result<Vec<DomainSummary>, HvError> {
        let mut out = Vec::new();
        for d in self.conn()?.list_all_domains(0).map_err(HvError::ListDomains)? {
            // A domain undefined between the listing and these calls is simply skipped.
            let (Ok(name), Ok(info)) = (d.name(), d.info()) else {
                continue;
            };
            out.push(DomainSummary { name, state: saved_or(&d, map_state(info.state)) });
        }
        Ok(out)
    }

    fn state(&self, name: &str) -> Result<Option<DomainState>, HvError> {
        let Some(d) = self.lookup(name)? else {
            return Ok(None);
        };
        match d.info() {
            Ok(info) => Ok(Some(saved_or(&d, map_state(info.state)))),
            Err(e) if is_code(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(source) => Err(HvError::State { name: name.to_string(), source }),
        }
    }

    fn open_serial(&self, name: &str) -> Result<std::sync::Arc<dyn super::SerialConsole>, HvError> {
        let fail = |source| HvError::OpenConsole { name: name.to_string(), source };
        let dom = self.existing(name)?;
        let stream = virt::stream::Stream::new(&self.conn()?, 0).map_err(fail)?;
        dom.open_console(None, &stream, sys::VIR_DOMAIN_CONSOLE_FORCE).map_err(fail)?;
        Ok(std::sync::Arc::new(LibvirtConsole { stream }))
    }

    fn attach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<(), HvError> {
        let fail = |source| HvError::AttachDevice { name: name.to_string(), source };
        let dom = self.existing(name)?;
        match dom.attach_device_flags(xml, affect(live, config)) {
            Ok(_) => Ok(()),
            // Drivers without device hot plug (the test driver): the definition is edited
            // instead, which is all a stopped domain needs.
            Err(e) if is_code(&e, ErrorNumber::NoSupport) && config => {
                let current = dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE).map_err(fail)?;
                match crate::xml::with_disk(&current, xml).or_else(|| crate::xml::with_interface(&current, xml)) {
                    Some(updated) => self.conn()?.define_domain_xml(&updated).map(drop).map_err(fail),
                    None => Ok(()),
                }
            }
            Err(e) if is_code(&e, ErrorNumber::NoSupport) => Ok(()),
            Err(source) => Err(fail(source)),
        }
    }

    fn detach_device(&self, name: &str, xml: &str, live: bool, config: bool) -> Result<bool, HvError> {
        let fail = |source| HvError::DetachDevice { name: name.to_string(), source };
        let dom = self.existing(name)?;
        match dom.detach_device_flags(xml, affect(live, config)) {
            Ok(_) => Ok(live),
            Err(e) if is_code(&e, ErrorNumber::NoSupport) => {
                if config {
                    let current = dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE).map_err(fail)?;
                    let updated = crate::xml::without_disk(&current, xml)
                        .or_else(|| crate::xml::without_interface(&current, xml));
                    if let Some(updated) = updated {
                        self.conn()?.define_domain_xml(&updated).map_err(fail)?;
                    }
                }
                Ok(false)
            }
            Err(source) => Err(fail(source)),
        }
    }

    fn block_resize(&self, name: &str, disk: &str, bytes: u64) -> Result<bool, HvError> {
        let dom = self.existing(name)?;
        // VIR_DOMAIN_BLOCK_RESIZE_BYTES: the size is in bytes, not KiB.
        match dom.block_resize(disk, bytes, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES) {
            Ok(()) => Ok(true),
            Err(e) if is_code(&e, ErrorNumber::NoSupport) => Ok(false),
            Err(source) => Err(HvError::BlockResize { name: name.to_string(), disk: disk.to_string(), source }),
        }
    }

    fn pause(&self, name: &str) -> Result<(), HvError> {
        self.existing(name)?.suspend().map_err(|source| HvError::Pause { name: name.to_string(), source })
    }

    fn unpause(&self, name: &str) -> Result<(), HvError> {
        self.existing(name)?.resume().map_err(|source| HvError::Unpause { name: name.to_string(), source })
    }

    fn migratable_xml(&self, name: &str) -> Result<String, HvError> {
        self.existing(name)?
            .xml_desc(sys::VIR_DOMAIN_XML_MIGRATABLE | sys::VIR_DOMAIN_XML_SECURE)
            .map_err(|source| HvError::Migrate { name: name.to_string(), source })
    }

    fn migrate_live(&self, name: &str, m: &super::LiveMigration) -> Result<(), HvError> {
        let dom = self.existing(name)?;
        // Peer to peer: the daemons talk to each other, so the agent needs no connection to
        // the destination. Block migration (`NON_SHARED_INC`): the destination made empty
        // disks over the same backing image; only each disk's own layer is copied. The
        // definition moves with the guest (persistent there, undefined here).
        let mut flags = sys::VIR_MIGRATE_LIVE
            | sys::VIR_MIGRATE_PEER2PEER
            | sys::VIR_MIGRATE_PERSIST_DEST
            | sys::VIR_MIGRATE_UNDEFINE_SOURCE
            | sys::VIR_MIGRATE_NON_SHARED_INC;
        if m.paused {
            flags |= sys::VIR_MIGRATE_PAUSED;
        }
        let params = virt::domain::MigrateParameters {
            dest_name: Some(m.dest_name.clone()),
            dest_xml: Some(m.dest_xml.clone()),
            persist_xml: Some(m.dest_xml.clone()),
            uri: m.migrate_uri.clone(),
            migrate_disks: m.disks.clone(),
            ..Default::default()
        };
        dom.migrate_to_uri3(Some(&m.dest_uri), params, flags)
            .map_err(|source| HvError::Migrate { name: name.to_string(), source })
    }

    fn job_progress(&self, name: &str) -> Result<Option<super::JobProgress>, HvError> {
        let Some(dom) = self.lookup(name)? else { return Ok(None) };
        let Ok(stats) = dom.job_stats(0) else { return Ok(None) };
        if stats.r#type == sys::VIR_DOMAIN_JOB_NONE as i32 {
            return Ok(None);
        }
        Ok(Some(super::JobProgress {
            memory_total: stats.mem_total.unwrap_or(0),
            memory_processed: stats.mem_processed.unwrap_or(0),
            memory_remaining: stats.mem_remaining.unwrap_or(0),
            disk_total: stats.disk_total.unwrap_or(0),
            disk_processed: stats.disk_processed.unwrap_or(0),
            disk_remaining: stats.disk_remaining.unwrap_or(0),
        }))
    }

    fn abort_job(&self, name: &str) -> Result<(), HvError> {
        // The `virt` crate has no binding of virDomainAbortJob and this workspace forbids
        // unsafe code, so libvirt's own client does it (libvirt-clients is a dependency).
        let out = std::process::Command::new("virsh")
            .args(["-q", "-c", &self.uri, "domjobabort", name])
            .output()
            .map_err(|e| HvError::AbortJob { name: name.to_string(), message: e.to_string() })?;
        if out.status.success() {
            return Ok(());
        }
        Err(HvError::AbortJob {
            name: name.to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    fn managed_save(&self, name: &str) -> Result<(), HvError> {
        self.existing(name)?.managed_save(0).map_err(|source| HvError::Save { name: name.to_string(), source })
    }

    fn discard_save(&self, name: &str) -> Result<(), HvError> {
        let Some(d) = self.lookup(name)? else {
            return Ok(());
        };
        if !d.has_managed_save(0).unwrap_or(false) {
            return Ok(());
        }
        d.managed_save_remove(0).map_err(|source| HvError::DiscardSave { name: name.to_string(), source })
    }

    fn domain_config_xml(&self, name: &str) -> Result<String, HvError> {
        self.existing(name)?
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|source| HvError::DomainXml { name: name.to_string(), source })
    }

    fn domain_xml(&self, name: &str) -> Result<String, HvError> {
        self.existing(name)?.xml_desc(0).map_err(|source| HvError::DomainXml { name: name.to_string(), source })
    }

    fn define(&self, xml: &str) -> Result<(), HvError> {
        self.conn()?.define_domain_xml(xml).map(drop).map_err(HvError::Define)
    }

    fn start(&self, name: &str) -> Result<(), HvError> {
        self.existing(name)?.create().map_err(|source| HvError::Start { name: name.to_string(), source })
    }

    fn shutdown(&self, name: &str) -> Result<(), HvError> {
        self.existing(name)?.shutdown().map_err(|source| HvError::Shutdown { name: name.to_string(), source })
    }

    fn destroy(&self, name: &str) -> Result<(), HvError> {
        let Some(d) = self.lookup(name)? else {
            return Err(HvError::NoDomain(name.to_string()));
        };
        match d.destroy() {
            Ok(()) => Ok(()),
            Err(e) if not_running(&e) => Ok(()),
            Err(source) => Err(HvError::Destroy { name: name.to_string(), source }),
        }
    }

    fn reboot(&self, name: &str) -> Result<(), HvError> {
        self.existing(name)?
            .reboot(sys::VIR_DOMAIN_REBOOT_DEFAULT)
            .map_err(|source| HvError::Reboot { name: name.to_string(), source })
    }

    fn reset(&self, name: &str) -> Result<(), HvError> {
        self.existing(name)?.reset().map_err(|source| HvError::Reset { name: name.to_string(), source })
    }

    fn undefine(&self, name: &str) -> Result<(), HvError> {
        let Some(d) = self.lookup(name)? else {
            return Ok(());
        };
        let flags = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
        match d.undefine_flags(flags) {
            Ok(()) => Ok(()),
            Err(e) if is_code(&e, ErrorNumber::NoDomain) => Ok(()),
            // Drivers without those flags: the plain call, which refuses a domain with a
            // managed save (a suspended guest), so that goes first.
            Err(_) => {
                if d.has_managed_save(0).unwrap_or(false) {
                    d.managed_save_remove(0)
                        .map_err(|source| HvError::DiscardSave { name: name.to_string(), source })?;
                }
                d.undefine().map_err(|source| HvError::Undefine { name: name.to_string(), source })
            }
        }
    }

    fn ensure_network(&self, name: &str, xml: &str) -> Result<(), HvError> {
        let _guard = self.lock_networks();
        let err = |source| HvError::Network { name: name.to_string(), source };
        let net = match self.lookup_network(name)? {
            Some(n) => n,
            None => {
                let n = self.conn()?.define_network_xml(xml).map_err(err)?;
                // Autostart is a convenience across host reboots; not every driver has it.
                let _ = n.set_autostart(true);
                n
            }
        };
        if !net.is_active().map_err(err)? {
            net.create().map_err(err)?;
        }
        Ok(())
    }

    fn set_dhcp_host(&self, network: &str, mac: &str, ip: &str) -> Result<(), HvError> {
        let _guard = self.lock_networks();
        let err = |source| HvError::DhcpHost { name: network.to_string(), source };
        let Some(net) = self.lookup_network(network)? else {
            return Err(HvError::NoNetwork(network.to_string()));
        };
        let mac = mac.to_ascii_lowercase();
        let current = self.network_info(network, &net)?;
        let entry = crate::xml::dhcp_host_xml(&mac, ip);
        let flags = update_flags(&net).map_err(err)?;
        let update = |command| net.update(command, sys::VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, &entry, flags);
        if current.host_with_mac(&mac).is_some() {
            return update(sys::VIR_NETWORK_UPDATE_COMMAND_MODIFY).map_err(err);
        }
        if let Some(stale) = current.host_with_ip(ip) {
            // A stale entry (its port is gone) still holds the address, maybe its lease too.
            if let (true, Some(bridge), Some(stale_mac)) =
                (self.has_dnsmasq(), current.bridge.as_deref(), stale.mac.as_deref())
            {
                release_lease(bridge, ip, stale_mac);
            }
            net.update(
                sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
                sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
                -1,
                &format!("<host ip='{}'/>", crate::xml::esc(ip)),
                flags,
            )
            .map_err(err)?;
        }
        update(sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST).map_err(err)
    }

    fn remove_dhcp_host(&self, network: &str, mac: &str) -> Result<(), HvError> {
        let _guard = self.lock_networks();
        let err = |source| HvError::DhcpHost { name: network.to_string(), source };
        let Some(net) = self.lookup_network(network)? else {
            return Ok(());
        };
        let mac = mac.to_ascii_lowercase();
        let current = self.network_info(network, &net)?;
        let Some(entry) = current.host_with_mac(&mac) else {
            return Ok(());
        };
        let flags = update_flags(&net).map_err(err)?;
        net.update(
            sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
            sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            &format!("<host mac='{mac}'/>"),
            flags,
        )
        .map_err(err)?;
        let active = self.has_dnsmasq() && net.is_active().unwrap_or(false);
        if let (true, Some(bridge), Some(ip)) = (active, current.bridge.as_deref(), entry.ip.as_deref()) {
            release_lease(bridge, ip, &mac);
        }
        Ok(())
    }

    fn remove_network(&self, name: &str) -> Result<(), HvError> {
        let _guard = self.lock_networks();
        let err = |source| HvError::RemoveNetwork { name: name.to_string(), source };
        let Some(net) = self.lookup_network(name)? else {
            return Ok(());
        };
        if net.is_active().map_err(err)? {
            net.destroy().map_err(err)?;
        }
        match net.undefine() {
            Ok(()) => Ok(()),
            Err(e) if is_code(&e, ErrorNumber::NoNetwork) => Ok(()),
            Err(source) => Err(err(source)),
        }
    }

    fn domain_stats(&self, name: &str) -> Result<super::DomainStats, HvError> {
        let dom = self.existing(name)?;
        let fail = |source| HvError::Stats { name: name.to_string(), source };
        let info = dom.info().map_err(fail)?;
        let xml = dom.xml_desc(0).map_err(fail)?;
        let disks = crate::xml::disks(&xml)
            .into_iter()
            .map(|(dev, _)| {
                let s = dom.block_stats(&dev).ok();
                super::DiskStats {
                    read_bytes: s.as_ref().map_or(0, |s| s.rd_bytes.max(0)),
                    read_requests: s.as_ref().map_or(0, |s| s.rd_req.max(0)),
                    write_bytes: s.as_ref().map_or(0, |s| s.wr_bytes.max(0)),
                    write_requests: s.as_ref().map_or(0, |s| s.wr_req.max(0)),
                    errors: s.as_ref().map_or(0, |s| s.errs.max(0)),
                    dev,
                }
            })
            .collect();
        let nics = crate::xml::interfaces(&xml)
            .into_iter()
            .map(|(mac, dev)| {
                let s = dev.as_deref().and_then(|d| dom.interface_stats(d).ok());
                let g = |f: fn(&virt::domain::InterfaceStats) -> i64| s.as_ref().map_or(0, |s| f(s).max(0));
                super::NicStats {
                    rx_bytes: g(|s| s.rx_bytes),
                    rx_packets: g(|s| s.rx_packets),
                    rx_errors: g(|s| s.rx_errs),
                    rx_drop: g(|s| s.rx_drop),
                    tx_bytes: g(|s| s.tx_bytes),
                    tx_packets: g(|s| s.tx_packets),
                    tx_errors: g(|s| s.tx_errs),
                    tx_drop: g(|s| s.tx_drop),
                    mac,
                    dev: dev.unwrap_or_default(),
                }
            })
            .collect();
        Ok(super::DomainStats {
            running: map_state(info.state) == DomainState::Running,
            max_memory_kib: info.max_mem,
            memory_kib: info.memory,
            vcpus: info.nr_virt_cpu,
            cpu_time_ns: info.cpu_time,
            disks,
            nics,
        })
    }
}

/// A libvirt stream opened by `virDomainOpenConsole` (blocking: the remote driver lets one
/// thread wait in `recv` while another sends).
struct LibvirtConsole {
    stream: virt::stream::Stream,
}

impl super::SerialConsole for LibvirtConsole {
    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stream.recv(buf).map_err(std::io::Error::other)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let n = self.stream.send(data).map_err(std::io::Error::other)?;
            let n = usize::try_from(n).unwrap_or(0).min(data.len());
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the console took no bytes"));
            }
            data = &data[n..];
        }
        Ok(())
    }

    fn abort(&self) {
        // `abort` consumes a handle; a second reference to the same stream does.
        let _ = self.stream.clone().abort();
    }
}
