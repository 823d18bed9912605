//! Command-line flags (each also readable from a `MERIDIAN_AGENT_*` variable).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

/// The Meridian compute agent: runs libvirt domains for the work a meridian-server hands out.
#[derive(Clone, Parser)]
#[command(name = "meridian-agent", version, about)]
pub struct Args {
    /// The server's base URL (the agent API lives under `/agent/v1`).
    #[arg(long, env = "MERIDIAN_AGENT_SERVER")]
    pub server: String,

    /// This host's name as the server knows it [default: the system host name].
    #[arg(long, env = "MERIDIAN_AGENT_HOST")]
    pub host: Option<String>,

    /// The libvirt connection.
    #[arg(long, env = "MERIDIAN_AGENT_LIBVIRT_URI", default_value = "qemu:///system")]
    pub libvirt_uri: String,

    /// Where the agent keeps instance disks, console logs, the image cache and its work log.
    #[arg(long, env = "MERIDIAN_AGENT_STATE_DIR", default_value = "/var/lib/meridian-agent")]
    pub state_dir: PathBuf,

    /// The join token (the server's `agent-token`): registers this host, which gets its own
    /// credential (kept in the state dir) for everything else. Needed only until then.
    #[arg(long, env = "MERIDIAN_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// vCPUs held back for the host itself.
    #[arg(long, env = "MERIDIAN_AGENT_RESERVED_VCPUS", default_value_t = 0)]
    pub reserved_vcpus: u32,

    /// RAM (MiB) held back for the host itself.
    #[arg(long, env = "MERIDIAN_AGENT_RESERVED_MEMORY_MB", default_value_t = 512)]
    pub reserved_memory_mb: u64,

    /// Disk (GiB) held back for the host itself.
    #[arg(long, env = "MERIDIAN_AGENT_RESERVED_DISK_GB", default_value_t = 0)]
    pub reserved_disk_gb: u64,

    /// The availability zone this host is in.
    #[arg(long, env = "MERIDIAN_AGENT_AVAILABILITY_ZONE", default_value = "nova")]
    pub availability_zone: String,

    /// Size limit of the image cache; unused images beyond it are evicted (LRU).
    #[arg(long, env = "MERIDIAN_AGENT_IMAGE_CACHE_MAX_GB", default_value_t = 20)]
    pub image_cache_max_gb: u64,

    /// The address other hosts reach this one at [default: the local address of the route to
    /// the server].
    #[arg(long, env = "MERIDIAN_AGENT_HOST_IP")]
    pub host_ip: Option<IpAddr>,

    /// Seconds one long-poll for work waits on the server.
    #[arg(long, env = "MERIDIAN_AGENT_POLL_WAIT", default_value_t = 30)]
    pub poll_wait_secs: u64,

    /// Seconds a graceful stop may take before the domain is destroyed.
    #[arg(long, env = "MERIDIAN_AGENT_STOP_TIMEOUT", default_value_t = 60)]
    pub stop_timeout_secs: u64,

    /// When instances get a config drive (their metadata, keys and user data, as the metadata
    /// service at 169.254.169.254 also serves them): `auto` on real hypervisors but not on the
    /// test driver.
    #[arg(long, env = "MERIDIAN_AGENT_CONFIG_DRIVE", value_enum, default_value_t = ConfigDriveMode::Auto)]
    pub config_drive: ConfigDriveMode,

    /// The config drive's filesystem, as Nova's `config_drive_format`.
    #[arg(long, env = "MERIDIAN_AGENT_CONFIG_DRIVE_FORMAT", value_enum, default_value_t = crate::config_drive::Format::Iso9660)]
    pub config_drive_format: crate::config_drive::Format,

    /// Security groups and anti-spoofing on this host's guests: `nftables`, `none`, or `auto`
    /// (nftables on qemu/kvm, none on libvirt's test driver, which has no tap devices).
    #[arg(long, env = "MERIDIAN_AGENT_FIREWALL", value_enum, default_value_t = crate::firewall::Mode::Auto)]
    pub firewall: crate::firewall::Mode,

    /// The name of the agent's nftables tables (`table bridge NAME`, `table inet NAME`); agents
    /// sharing one machine need one each.
    #[arg(long, env = "MERIDIAN_AGENT_FIREWALL_TABLE", default_value = crate::firewall::ruleset::TABLE, value_parser = table_name)]
    pub firewall_table: String,

    /// A tag in this agent's libvirt domain names (`meridian-TAG-<instance id>`) and UUIDs, for
    /// agents that share one libvirt daemon (one machine running several hosts): each needs its
    /// own, or a cold migration between them collides on the domain. Lowercase letters and
    /// digits, at most 16; none by default (`meridian-<instance id>`). Never change it while the
    /// host has instances: the agent finds its domains by these names.
    #[arg(long, env = "MERIDIAN_AGENT_DOMAIN_TAG", value_parser = domain_tag)]
    pub domain_tag: Option<String>,

    /// The libvirt URI other hosts' daemons reach this host's at to send it a live guest
    /// (peer to peer) [default: `qemu+tcp://HOST_IP/system`, as Nova's]. libvirtd must listen
    /// there (`listen_tcp`, or TLS with `qemu+tls://`).
    #[arg(long, env = "MERIDIAN_AGENT_MIGRATION_URI")]
    pub migration_uri: Option<String>,

    /// The address QEMU receives a live guest's memory and disks at (`tcp://ADDR`, a port
    /// libvirt picks from its migration range) [default: HOST_IP].
    #[arg(long, env = "MERIDIAN_AGENT_MIGRATION_ADDRESS")]
    pub migration_address: Option<String>,

    /// Apply the firewall inside this network namespace (`ip netns exec`) instead of the
    /// host's: for tests, whose "guests" are namespaces.
    #[arg(long, env = "MERIDIAN_AGENT_FIREWALL_NETNS", hide = true)]
    pub firewall_netns: Option<String>,

    /// Address for `/healthz`, `/readyz` and `/metrics` (e.g. `0.0.0.0:9180`); off when unset.
    #[arg(long, env = "MERIDIAN_AGENT_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

fn domain_tag(s: &str) -> Result<String, String> {
    crate::xml::Naming::new(Some(s)).map(|_| s.to_string())
}

/// Whether instances get a config drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigDriveMode {
    /// On qemu/kvm, not on libvirt's test driver (no guest would read it).
    Auto,
    Always,
    /// Only for instances whose user asked for one (`config_drive: true`).
    Never,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("server", &self.server)
            .field("host", &self.host)
            .field("libvirt_uri", &self.libvirt_uri)
            .field("state_dir", &self.state_dir)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A host name the server and file names can carry.
pub fn valid_host(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// An nftables table name: a letter, then letters, digits or `_`, at most 32 characters.
fn table_name(value: &str) -> Result<String, String> {
    let mut chars = value.chars();
    let ok = value.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not a table name (a letter, then letters, digits or _)"))
    }
}

/// The system's host name.
pub fn system_host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_defaults() {
        let a = Args::try_parse_from([
            "meridian-agent",
            "--server",
            "http://127.0.0.1:8774",
            "--host",
            "c1",
            "--token",
            "s3cret",
            "--reserved-vcpus",
            "2",
            "--image-cache-max-gb",
            "5",
        ])
        .expect("parse");
        assert_eq!(a.libvirt_uri, "qemu:///system");
        assert_eq!(a.availability_zone, "nova");
        assert_eq!(a.reserved_vcpus, 2);
        assert_eq!(a.image_cache_max_gb, 5);
        assert_eq!(a.firewall, crate::firewall::Mode::Auto);
        assert_eq!(a.firewall_table, "meridian");
        let base = ["meridian-agent", "--server", "http://s", "--firewall", "none", "--firewall-table"];
        let b = Args::try_parse_from(base.iter().copied().chain(["meridian_t1"])).expect("parse");
        assert_eq!((b.firewall, b.firewall_table.as_str()), (crate::firewall::Mode::None, "meridian_t1"));
        assert!(Args::try_parse_from(base.iter().copied().chain(["x; flush ruleset"])).is_err());
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(valid_host("compute-1.example"));
        assert!(!valid_host("a/b"));
    }
}
