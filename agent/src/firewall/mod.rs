//! Security groups on the host: per-port stateful packet filtering with nftables.
//!
//! The server sends everything the host must enforce as one [`HostFilters`] (the
//! `port-filters` long poll, `run.rs`); [`ruleset::ruleset`] turns it into Meridian's two
//! nftables tables and [`Firewall::apply`] swaps them in with one `nft -f` transaction. The
//! last applied answer is kept in `STATE_DIR/port-filters.json` and applied again at start,
//! before the agent reports ready (the kernel's tables survive an agent restart, not a reboot).
//! See ARCHITECTURE.md, "Security groups on the host", for why nftables and this layout.

pub mod ruleset;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use meridian_common::agent::HostFilters;
use tracing::{info, warn};

pub use ruleset::{Summary, tap_name};

/// Whether the agent filters its guests' traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// nftables on qemu/kvm hosts; none on libvirt's test driver (it has no tap devices).
    Auto,
    /// Security groups and anti-spoofing enforced with nftables (needs the `nft` command).
    Nftables,
    /// Nothing enforced: the agent says so at start and in `meridian_agent_firewall_enforcing`.
    None,
}

impl Mode {
    /// `Auto` resolved for a host whose libvirt driver is the test driver or not.
    pub fn resolve(self, test_driver: bool) -> Mode {
        match self {
            Mode::Auto if test_driver => Mode::None,
            Mode::Auto => Mode::Nftables,
            m => m,
        }
    }
}

/// Where the commands run: the host's network namespace, or a named one (the tests').
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Netns(pub Option<String>);

impl Netns {
    fn command(&self, program: &str) -> Command {
        match &self.0 {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("the `nft` command is missing: install the nftables package, or run with --firewall none")]
    NftMissing,
    #[error("cannot run {0}")]
    Spawn(&'static str, #[source] std::io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    #[error("cannot set up conntrack on bridge {bridge}: {message}")]
    Bridge { bridge: String, message: String },
    #[error("cannot keep the applied filters in {path}")]
    Save {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `nft` (and `ip` for the bridges' flags) in one network namespace. Blocking.
#[derive(Clone, Debug)]
pub struct Firewall {
    netns: Netns,
    table: String,
}

impl Firewall {
    /// Meridian's tables are `table bridge <table>` and `table inet <table>` in `netns`.
    pub fn new(netns: Netns, table: &str) -> Firewall {
        Firewall { netns, table: table.to_string() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `nft --version`, or why it cannot run.
    pub fn check(&self) -> Result<String, FirewallError> {
        let out = self.netns.command("nft").arg("--version").output().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FirewallError::NftMissing,
            _ => FirewallError::Spawn("nft", e),
        })?;
        if !out.status.success() {
            return Err(FirewallError::Refused(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Replaces Meridian's tables with the ruleset for `filters` (one transaction), after
    /// turning on conntrack for bridged traffic on each of their networks' bridges that exists.
    pub fn apply(&self, filters: &HostFilters) -> Result<Summary, FirewallError> {
        let mut bridges: Vec<String> = filters.ports.iter().map(|p| crate::xml::bridge_name(&p.network_id)).collect();
        bridges.sort();
        bridges.dedup();
        for b in &bridges {
            self.enable_bridge_conntrack(b)?;
        }
        let (text, summary) = ruleset::ruleset(filters, &self.table);
        self.nft_file(&text)?;
        Ok(summary)
    }

    /// Runs `nft -f -` with `text`.
    pub fn nft_file(&self, text: &str) -> Result<(), FirewallError> {
        let mut child = self
            .netns
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => FirewallError::NftMissing,
                _ => FirewallError::Spawn("nft", e),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes()).map_err(|e| FirewallError::Spawn("nft", e))?;
        }
        let out = child.wait_with_output().map_err(|e| FirewallError::Spawn("nft", e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(FirewallError::Refused(first_lines(&String::from_utf8_lossy(&out.stderr), 6)))
        }
    }

    /// Deletes Meridian's tables (and nothing else); no error when they are not there.
    pub fn remove(&self) -> Result<(), FirewallError> {
        let mut text = String::new();
        for family in ["bridge", "inet"] {
            text.push_str(&format!("table {family} {t}\ndelete table {family} {t}\n", t = self.table));
        }
        self.nft_file(&text)
    }

    /// Makes bridged IPv4/IPv6 traffic of `bridge` (a Meridian bridge) pass the inet hooks and
    /// so conntrack (`nf_call_iptables`, per bridge: other bridges keep the system's setting).
    /// `Ok(false)` when the bridge does not exist (yet).
    pub fn enable_bridge_conntrack(&self, bridge: &str) -> Result<bool, FirewallError> {
        let out = self
            .netns
            .command("ip")
            .args(["link", "set", "dev", bridge, "type", "bridge", "nf_call_iptables", "1", "nf_call_ip6tables", "1"])
            .output()
            .map_err(|e| FirewallError::Spawn("ip", e))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.success() {
            true => Ok(true),
            false if stderr.contains("Cannot find device") => Ok(false),
            false => Err(FirewallError::Bridge { bridge: bridge.to_string(), message: stderr.trim().to_string() }),
        }
    }
}

fn first_lines(s: &str, n: usize) -> String {
    s.lines().take(n).collect::<Vec<_>>().join("\n")
}

/// The agent's side: applies [`HostFilters`] in order, remembers the last one (in memory and
/// in the state directory) and reports what is in force.
pub struct Enforcer {
    fw: Firewall,
    file: PathBuf,
    applied: Mutex<Applied>,
    /// Bumped at every apply, so builds waiting for their ports wake up.
    changed: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct Applied {
    generation: Option<u64>,
    /// The ports of the filters in force (port security on or off).
    ports: HashSet<String>,
    /// Whether the server's feed answered since start (a server without it answers 404, and
    /// builds then do not wait for filters that will never come).
    feed: bool,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer").field("firewall", &self.fw).field("generation", &self.generation()).finish()
    }
}

impl Enforcer {
    pub fn new(fw: Firewall, state_dir: &std::path::Path) -> Enforcer {
        metrics::gauge!("meridian_agent_firewall_enforcing").set(0.0);
        Enforcer {
            fw,
            file: state_dir.join("port-filters.json"),
            applied: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Records whether the server has the port-filter feed.
    pub fn set_feed(&self, available: bool) {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner).feed = available;
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits until the filters in force name every port of `ports`, as Nova waits for
    /// Neutron's `network-vif-plugged` before it starts a guest: a tap must never come up
    /// before its filter. Returns at once while the server has no feed.
    pub async fn wait_for_ports(&self, ports: &[String], within: Duration) -> Result<(), String> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let missing: Vec<String> = {
                let a = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
                if !a.feed {
                    return Ok(());
                }
                ports.iter().filter(|p| !a.ports.contains(*p)).cloned().collect()
            };
            if missing.is_empty() {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(format!("no port filter for port(s) {} within {within:?}", missing.join(", "))),
            }
        }
    }

    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }

    /// The generation last applied, if any.
    pub fn generation(&self) -> Option<u64> {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner).generation
    }

    /// Applies the filters saved by the last run, if any (at start, before the server answers).
    pub async fn restore(&self) {
        let Ok(bytes) = tokio::fs::read(&self.file).await else { return };
        match serde_json::from_slice::<HostFilters>(&bytes) {
            Ok(f) => match self.apply(f).await {
                Ok(_) => info!("port filters of the last run applied again"),
                Err(e) => warn!(error = %crate::controller::chain(&e), "cannot apply the saved port filters"),
            },
            Err(e) => warn!(error = %e, file = %self.file.display(), "cannot read the saved port filters"),
        }
    }

    /// Applies `filters` (off the executor), then saves them for the next start.
    pub async fn apply(&self, filters: HostFilters) -> Result<Summary, FirewallError> {
        let fw = self.fw.clone();
        let file = self.file.clone();
        let generation = filters.generation;
        let ports: HashSet<String> = filters.ports.iter().map(|p| p.port_id.clone()).collect();
        let started = Instant::now();
        let summary = tokio::task::spawn_blocking(move || {
            let summary = fw.apply(&filters)?;
            save(&file, &filters)?;
            Ok::<_, FirewallError>(summary)
        })
        .await
        .map_err(|_| FirewallError::Refused("applying the port filters panicked".into()))??;
        {
            let mut a = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
            a.generation = Some(generation);
            a.ports = ports;
        }
        self.changed.send_modify(|n| *n += 1);
        metrics::histogram!("meridian_agent_firewall_apply_seconds").record(started.elapsed().as_secs_f64());
        metrics::gauge!("meridian_agent_firewall_generation").set(generation as f64);
        metrics::gauge!("meridian_agent_firewall_enforcing").set(1.0);
        for e in &summary.invalid {
            warn!(error = %e, "port filter not applied as given");
        }
        info!(
            generation, filtered = summary.filtered, unfiltered = summary.unfiltered, rules = summary.rule_lines,
            took = ?started.elapsed(), "port filters applied"
        );
        Ok(summary)
    }
}

/// Writes `filters` to `file` atomically (temporary file, flushed, renamed).
fn save(file: &std::path::Path, filters: &HostFilters) -> Result<(), FirewallError> {
    let err = |source| FirewallError::Save { path: file.display().to_string(), source };
    let body = serde_json::to_vec(filters).map_err(|e| err(e.into()))?;
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&body).map_err(err)?;
    f.sync_data().map_err(err)?;
    std::fs::rename(&tmp, file).map_err(err)
}
