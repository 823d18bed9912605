//! The host's inventory for registration and heartbeats: libvirt's totals and the state
//! directory's file system, minus what the operator reserved for the host itself.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;

use meridian_common::agent::Inventory;

use crate::hypervisor::HostInfo;

/// Resources held back for the host (flags `--reserved-*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservations {
    pub vcpus: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
}

/// Facts about this host that do not come from libvirt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    pub availability_zone: String,
    pub host_ip: String,
    pub reservations: Reservations,
}

/// Size (used + free) in whole GiB of the file system holding `path`.
pub fn disk_total_gb(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize) >> 30)
}

/// The inventory to report: totals minus reservations (never below zero), with the
/// reservations alongside.
pub fn inventory(info: &HostInfo, disk_gb: u64, facts: &HostFacts) -> Inventory {
    let r = facts.reservations;
    Inventory {
        vcpus: info.vcpus.saturating_sub(r.vcpus),
        memory_mb: info.memory_mb.saturating_sub(r.memory_mb),
        disk_gb: disk_gb.saturating_sub(r.disk_gb),
        reserved_vcpus: r.vcpus,
        reserved_memory_mb: r.memory_mb,
        reserved_disk_gb: r.disk_gb,
        hypervisor_type: info.hypervisor_type.clone(),
        hypervisor_version: info.hypervisor_version,
        cpu_arch: info.arch.clone(),
        libvirt_uri: info.uri.clone(),
        host_ip: facts.host_ip.clone(),
        supports_networks: info.supports_networks,
        availability_zone: facts.availability_zone.clone(),
        uptime: host_uptime().unwrap_or_default(),
    }
}

/// The host's uptime in the shape of the `uptime` command's line, which is what Nova's
/// `os-hypervisors/{id}/uptime` returns: ` 08:32:11 up 3 days, 18:25,  load average: 0.20, 0.12, 0.14`.
/// Read from `/proc` (Linux); `None` elsewhere.
fn host_uptime() -> Option<String> {
    let up = std::fs::read_to_string("/proc/uptime").ok()?;
    let load = std::fs::read_to_string("/proc/loadavg").ok()?;
    let secs = up.split_whitespace().next()?.parse::<f64>().ok()? as u64;
    let loads: Vec<&str> = load.split_whitespace().take(3).collect();
    Some(uptime_line(utc_time_of_day(), secs, &loads))
}

/// The current UTC time of day as (hours, minutes, seconds).
fn utc_time_of_day() -> (u64, u64, u64) {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    (t / 3600, t % 3600 / 60, t % 60)
}

fn uptime_line((h, m, s): (u64, u64, u64), up_secs: u64, loads: &[&str]) -> String {
    let days = up_secs / 86_400;
    let (uh, um) = (up_secs % 86_400 / 3600, up_secs % 3600 / 60);
    let days = match days {
        0 => String::new(),
        1 => "1 day, ".to_string(),
        n => format!("{n} days, "),
    };
    format!(" {h:02}:{m:02}:{s:02} up {days}{uh:2}:{um:02},  load average: {}", loads.join(", "))
}

/// The local address this host uses to reach `host:port` (the server): the address other
/// hosts can most likely reach it at. A UDP "connect" only picks the route; nothing is sent.
/// Blocking (name resolution).
pub fn local_ip_towards(host: &str, port: u16) -> Option<IpAddr> {
    let target: SocketAddr = (host, port).to_socket_addrs().ok()?.next()?;
    let bind: SocketAddr =
        if target.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(target).ok()?;
    Some(sock.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_the_uptime_command() {
        assert_eq!(
            uptime_line((8, 32, 11), 3 * 86_400 + 18 * 3600 + 25 * 60, &["0.20", "0.12", "0.14"]),
            " 08:32:11 up 3 days, 18:25,  load average: 0.20, 0.12, 0.14"
        );
        assert_eq!(uptime_line((0, 0, 5), 65, &["1.00"]), " 00:00:05 up  0:01,  load average: 1.00");
    }

    #[test]
    fn reservations_are_subtracted_and_reported() {
        let info = HostInfo {
            vcpus: 8,
            memory_mb: 16384,
            hypervisor_type: "QEMU".into(),
            hypervisor_version: 8_002_000,
            arch: "x86_64".into(),
            uri: "qemu:///system".into(),
            supports_networks: true,
        };
        let facts = HostFacts {
            availability_zone: "nova".into(),
            host_ip: "192.0.2.10".into(),
            reservations: Reservations { vcpus: 1, memory_mb: 512, disk_gb: 500 },
        };
        let inv = inventory(&info, 100, &facts);
        assert_eq!((inv.vcpus, inv.memory_mb, inv.disk_gb), (7, 15872, 0));
        assert_eq!((inv.reserved_vcpus, inv.reserved_memory_mb, inv.reserved_disk_gb), (1, 512, 500));
        assert_eq!(inv.hypervisor_type, "QEMU");
        assert_eq!(inv.availability_zone, "nova");
    }

    #[test]
    fn disk_size_and_route_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(disk_total_gb(dir.path()).expect("statvfs") > 0);
        assert_eq!(local_ip_towards("127.0.0.1", 8774), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
