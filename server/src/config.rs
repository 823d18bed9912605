//! Server settings, layered: built-in defaults → optional TOML file → `MERIDIAN_*` environment
//! variables → command-line flags (clap folds the last two together: a flag beats its variable).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Default listen address: Nova's API port, on loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8774";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything `serve` and `admin` need, fully resolved.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// Base URL advertised in the catalog, without a trailing slash.
    pub public_url: String,
    pub token_lifetime_secs: i64,
    pub log_format: LogFormat,
    /// Password given to the bootstrap `admin` user; generated when absent.
    pub admin_password: Option<String>,
    /// Join token compute agents present; generated when absent.
    pub agent_token: Option<String>,
    /// Largest accepted image upload, in bytes (413 beyond).
    pub image_size_cap: u64,
    pub compute: ComputeSettings,
    pub retention: RetentionSettings,
    /// This process's name among the server replicas (its `os-services` host); default: the
    /// system host name.
    pub replica_name: String,
    /// Most items a Neutron list returns in one page (Neutron's `pagination_max_limit`), also
    /// when the request gives no `limit`; the rest is reached through the `next` link. 0 or
    /// less: unlimited, as Neutron's default.
    pub pagination_max_limit: i64,
    /// Abuse limits: password hashing pool, per-address rate limits, request timeout.
    pub limits: LimitSettings,
    /// Keystone's `[security_compliance]` account lockout.
    pub security_compliance: SecurityCompliance,
    /// Remote consoles (serial and VNC through the server's websocket proxy).
    pub console: ConsoleSettings,
}

/// Remote consoles (`[console]` in the file).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleSettings {
    /// How long a console URL's token may wait before it is used (Nova's `[consoleauth]
    /// token_ttl`); a token works once.
    pub token_ttl_secs: u64,
    /// Where noVNC's files are (Debian's `novnc` package), served under `/console/novnc/`.
    pub novnc_dir: PathBuf,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings { token_ttl_secs: 600, novnc_dir: PathBuf::from("/usr/share/novnc") }
    }
}

/// Bounds on what unauthenticated callers can make the server do (`[limits]` in the file).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Password hashes and checks (argon2, ~19 MiB and tens of ms each) running at once.
    pub password_hash_concurrency: usize,
    /// Callers that may wait for one of those; beyond, 503 with `Retry-After`.
    pub password_hash_queue: usize,
    /// Per client address on the endpoints that check a password or secret without a token:
    /// requests allowed at once, then `auth_rate_per_second` (429 with `Retry-After` beyond).
    /// 0 turns the limit off.
    pub auth_rate_burst: u32,
    pub auth_rate_per_second: u32,
    /// Seconds a request may take before it is answered 504 (streams, the agents' long poll
    /// and image data are exempt); 0 turns timeouts off.
    pub request_timeout_secs: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            password_hash_concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            password_hash_queue: 64,
            auth_rate_burst: 100,
            auth_rate_per_second: 20,
            request_timeout_secs: 60,
        }
    }
}

/// Keystone's `[security_compliance]` lockout options, with Keystone's defaults (off).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityCompliance {
    /// Failed password checks after which a user is locked; `None` (the default) never locks.
    pub lockout_failure_attempts: Option<u32>,
    /// Seconds a lock lasts after the last failure (Keystone's default 1800); 0 locks until an
    /// admin updates (re-enables, resets the password of) the user.
    pub lockout_duration: u64,
}

impl Default for SecurityCompliance {
    fn default() -> Self {
        SecurityCompliance { lockout_failure_attempts: None, lockout_duration: 1800 }
    }
}

/// Scheduler, conductor and agent timing.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeSettings {
    /// A host whose last heartbeat is older than this is down (Nova's service_down_time is 60).
    pub host_down_after_secs: u64,
    /// How often agents heartbeat.
    pub heartbeat_interval_secs: u64,
    /// A build not ACTIVE after this long goes to ERROR and releases its claim.
    pub build_timeout_secs: u64,
    /// How long a delivered work item waits for its acknowledgement before it is offered again.
    pub work_lease_secs: u64,
    /// A host-side action (stop, start, reboot, pause, suspend, …) the host has not answered
    /// after this long ends: task cleared, vm_state kept, the action and a fault say why.
    pub action_timeout_secs: u64,
    pub cpu_allocation_ratio: f64,
    pub ram_allocation_ratio: f64,
    pub disk_allocation_ratio: f64,
    pub ram_weight_multiplier: f64,
    pub cpu_weight_multiplier: f64,
    pub disk_weight_multiplier: f64,
    /// Hosts tried per build: the choice plus alternates.
    pub max_attempts: usize,
    /// Nova's `reclaim_instance_interval`: when above 0, a user's DELETE soft-deletes a server
    /// (SOFT_DELETED, still holding its resources and quota; `restore` brings it back) and the
    /// conductor deletes it for good this many seconds later. 0 (Nova's default): deletes are
    /// immediate.
    pub reclaim_instance_interval: u64,
    /// Nova's `shelved_offload_time`: seconds a shelved server stays on its host before the
    /// conductor offloads it; 0 offloads at once (as part of the shelve), -1 never.
    pub shelved_offload_time: i64,
    /// Weigher multiplier for `soft-affinity` groups (Nova's default 1.0; must be ≥ 0).
    pub soft_affinity_weight_multiplier: f64,
    /// Weigher multiplier for `soft-anti-affinity` groups (Nova's default 1.0; must be ≥ 0).
    pub soft_anti_affinity_weight_multiplier: f64,
    /// Whether a resize may stay on the instance's host (Nova's option, default False there;
    /// True here so that a one-host cloud can resize). Cold migration always leaves the host.
    pub allow_resize_to_same_host: bool,
    /// Seconds after which a resize or cold migration waiting in VERIFY_RESIZE is confirmed
    /// by the conductor (Nova's `resize_confirm_window`); 0: never.
    pub resize_confirm_window: u64,
    /// Seconds per GiB of a live migration's RAM plus local disks before the source gives
    /// up and the guest stays where it was (Nova's `live_migration_completion_timeout`, 800);
    /// never less than two minutes. 0: no limit but the conductor's day-long deadline.
    pub live_migration_completion_timeout: u64,
}

impl Default for ComputeSettings {
    fn default() -> Self {
        ComputeSettings {
            host_down_after_secs: 15,
            heartbeat_interval_secs: 3,
            build_timeout_secs: 600,
            work_lease_secs: 60,
            action_timeout_secs: 300,
            cpu_allocation_ratio: 4.0,
            ram_allocation_ratio: 1.0,
            disk_allocation_ratio: 1.0,
            ram_weight_multiplier: 1.0,
            cpu_weight_multiplier: 1.0,
            disk_weight_multiplier: 1.0,
            max_attempts: 3,
            reclaim_instance_interval: 0,
            shelved_offload_time: 0,
            soft_affinity_weight_multiplier: 1.0,
            soft_anti_affinity_weight_multiplier: 1.0,
            allow_resize_to_same_host: true,
            resize_confirm_window: 0,
            live_migration_completion_timeout: 800,
        }
    }
}

/// How long what only grows is kept (`[retention]`), and how the purge paces itself.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Deleted servers (with their actions, timeline and work) and finished work items are
    /// purged this long after they ended; until then `changes-since` and the timeline show them.
    pub deleted_instances_secs: u64,
    /// How often the purge runs.
    pub interval_secs: u64,
    /// Rows purged per transaction (instances with their dependent rows, work items, tokens).
    pub batch_size: u32,
    /// Pause between two batches, so the purge never holds the (SQLite) writer for long.
    pub batch_pause_ms: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            deleted_instances_secs: 7 * 24 * 3600,
            interval_secs: 600,
            batch_size: 500,
            batch_pause_ms: 50,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("public_url", &self.public_url)
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .field("log_format", &self.log_format)
            .field("admin_password", &redacted(&self.admin_password))
            .field("agent_token", &redacted(&self.agent_token))
            .field("image_size_cap", &self.image_size_cap)
            .field("compute", &self.compute)
            .field("retention", &self.retention)
            .field("replica_name", &self.replica_name)
            .field("pagination_max_limit", &self.pagination_max_limit)
            .field("limits", &self.limits)
            .field("security_compliance", &self.security_compliance)
            .field("console", &self.console)
            .finish()
    }
}

/// What `Debug` shows for an optional secret.
fn redacted(s: &Option<String>) -> Option<&'static str> {
    s.as_ref().map(|_| "<redacted>")
}

impl fmt::Debug for FileSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSettings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("public_url", &self.public_url)
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .field("log_format", &self.log_format)
            .field("admin_password", &redacted(&self.admin_password))
            .field("agent_token", &redacted(&self.agent_token))
            .field("image_size_cap", &self.image_size_cap)
            .field("compute", &self.compute)
            .field("retention", &self.retention)
            .field("replica_name", &self.replica_name)
            .field("pagination_max_limit", &self.pagination_max_limit)
            .field("limits", &self.limits)
            .field("security_compliance", &self.security_compliance)
            .field("console", &self.console)
            .finish()
    }
}

impl fmt::Debug for CommonArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommonArgs")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("public_url", &self.public_url)
            .field("token_lifetime", &self.token_lifetime)
            .field("log_format", &self.log_format)
            .field("admin_password", &redacted(&self.admin_password))
            .field("agent_token", &redacted(&self.agent_token))
            .field("image_size_cap", &self.image_size_cap)
            .field("host_down_after", &self.host_down_after)
            .field("build_timeout", &self.build_timeout)
            .field("ram_weight_multiplier", &self.ram_weight_multiplier)
            .field("retention", &self.retention)
            .field("replica_name", &self.replica_name)
            .field("pagination_max_limit", &self.pagination_max_limit)
            .finish()
    }
}

/// Hides the password part of `scheme://user:password@host/db`.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:<redacted>{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Settings as they may appear in the TOML file (all optional). `Debug` redacts the secrets.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub token_lifetime_secs: Option<i64>,
    pub log_format: Option<LogFormat>,
    pub admin_password: Option<String>,
    pub agent_token: Option<String>,
    pub image_size_cap: Option<u64>,
    pub compute: Option<ComputeSettings>,
    pub retention: Option<RetentionSettings>,
    pub replica_name: Option<String>,
    pub pagination_max_limit: Option<i64>,
    pub limits: Option<LimitSettings>,
    pub security_compliance: Option<SecurityCompliance>,
    pub console: Option<ConsoleSettings>,
}

/// Flags shared by every subcommand; each also reads its `MERIDIAN_*` variable. `Debug` redacts
/// the secrets.
#[derive(Default, clap::Args)]
pub struct CommonArgs {
    /// TOML settings file.
    #[arg(long, env = "MERIDIAN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "MERIDIAN_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite database, images and generated secrets.
    #[arg(long, env = "MERIDIAN_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://...`; default: a SQLite file in the data dir.
    #[arg(long, env = "MERIDIAN_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Base URL the catalog advertises (default: http://LISTEN).
    #[arg(long, env = "MERIDIAN_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Token lifetime in seconds (default 3600).
    #[arg(long, env = "MERIDIAN_TOKEN_LIFETIME", global = true)]
    pub token_lifetime: Option<i64>,
    /// Log format.
    #[arg(long, env = "MERIDIAN_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Password for the bootstrap admin user (first start only).
    #[arg(long, env = "MERIDIAN_ADMIN_PASSWORD", global = true, hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Join token for compute agents (first start only).
    #[arg(long, env = "MERIDIAN_AGENT_TOKEN", global = true, hide_env_values = true)]
    pub agent_token: Option<String>,
    /// Largest accepted image upload in bytes (default 64 GiB).
    #[arg(long, env = "MERIDIAN_IMAGE_SIZE_CAP", global = true)]
    pub image_size_cap: Option<u64>,
    /// Seconds without a heartbeat before a compute host counts as down (default 15).
    #[arg(long, env = "MERIDIAN_HOST_DOWN_AFTER", global = true)]
    pub host_down_after: Option<u64>,
    /// Seconds a build may take before it goes to ERROR (default 600).
    #[arg(long, env = "MERIDIAN_BUILD_TIMEOUT", global = true)]
    pub build_timeout: Option<u64>,
    /// RAM weigher multiplier: positive spreads, negative packs (default 1.0).
    #[arg(long, env = "MERIDIAN_RAM_WEIGHT_MULTIPLIER", global = true, allow_hyphen_values = true)]
    pub ram_weight_multiplier: Option<f64>,
    /// Seconds deleted servers and finished work are kept before they are purged (default
    /// 604800, 7 days).
    #[arg(long, env = "MERIDIAN_RETENTION", global = true)]
    pub retention: Option<u64>,
    /// This server's name among replicas sharing one database (default: the host name).
    #[arg(long, env = "MERIDIAN_REPLICA_NAME", global = true)]
    pub replica_name: Option<String>,
    /// Most items per Neutron list page, with or without `limit` (default 1000; 0: unlimited).
    #[arg(long, env = "MERIDIAN_PAGINATION_MAX_LIMIT", global = true, allow_hyphen_values = true)]
    pub pagination_max_limit: Option<i64>,
    /// Password hashes/checks running at once (default: the number of CPUs).
    #[arg(long, env = "MERIDIAN_PASSWORD_HASH_CONCURRENCY", global = true)]
    pub password_hash_concurrency: Option<usize>,
    /// Password checks that may wait for a slot before callers get 503 (default 64).
    #[arg(long, env = "MERIDIAN_PASSWORD_HASH_QUEUE", global = true)]
    pub password_hash_queue: Option<usize>,
    /// Requests per client address allowed at once on login/registration endpoints (default 100; 0: no limit).
    #[arg(long, env = "MERIDIAN_AUTH_RATE_BURST", global = true)]
    pub auth_rate_burst: Option<u32>,
    /// Sustained requests per second per client address on those endpoints (default 20).
    #[arg(long, env = "MERIDIAN_AUTH_RATE_PER_SECOND", global = true)]
    pub auth_rate_per_second: Option<u32>,
    /// Seconds before a request is answered 504 (default 60; 0: no timeout).
    #[arg(long, env = "MERIDIAN_REQUEST_TIMEOUT", global = true)]
    pub request_timeout: Option<u64>,
    /// Failed logins after which a user is locked (Keystone's lockout_failure_attempts; default off).
    #[arg(long, env = "MERIDIAN_LOCKOUT_FAILURE_ATTEMPTS", global = true)]
    pub lockout_failure_attempts: Option<u32>,
    /// Seconds a lockout lasts (Keystone's lockout_duration; default 1800).
    #[arg(long, env = "MERIDIAN_LOCKOUT_DURATION", global = true)]
    pub lockout_duration: Option<u64>,
}

impl CommonArgs {
    /// Resolves the layers into one [`Config`].
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let listen = match self.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        let data_dir = self.data_dir.clone().or(file.data_dir).unwrap_or_else(default_data_dir);
        let database_url = self
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("meridian.db").display()));
        let public_url = self
            .public_url
            .clone()
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        let token_lifetime_secs = self.token_lifetime.or(file.token_lifetime_secs).unwrap_or(3600);
        anyhow::ensure!(token_lifetime_secs > 0, "token lifetime must be positive");
        Ok(Config {
            listen,
            data_dir,
            database_url,
            public_url,
            token_lifetime_secs,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            admin_password: self.admin_password.clone().or(file.admin_password),
            agent_token: self.agent_token.clone().or(file.agent_token),
            image_size_cap: self.image_size_cap.or(file.image_size_cap).unwrap_or(64 << 30),
            compute: self.compute_settings(file.compute)?,
            retention: self.retention_settings(file.retention)?,
            replica_name: self.replica_name.clone().or(file.replica_name).unwrap_or_else(system_host_name),
            pagination_max_limit: self
                .pagination_max_limit
                .or(file.pagination_max_limit)
                .unwrap_or(DEFAULT_PAGINATION_MAX_LIMIT),
            limits: self.limit_settings(file.limits)?,
            security_compliance: self.security_compliance(file.security_compliance)?,
            console: {
                let c = file.console.unwrap_or_default();
                anyhow::ensure!(c.token_ttl_secs > 0, "[console] token_ttl_secs must be positive");
                c
            },
        })
    }

    fn retention_settings(&self, from_file: Option<RetentionSettings>) -> anyhow::Result<RetentionSettings> {
        let mut r = from_file.unwrap_or_default();
        if let Some(v) = self.retention {
            r.deleted_instances_secs = v;
        }
        anyhow::ensure!(r.deleted_instances_secs > 0, "retention must be positive");
        anyhow::ensure!(r.interval_secs > 0, "retention interval_secs must be positive");
        anyhow::ensure!(r.batch_size > 0, "retention batch_size must be positive");
        Ok(r)
    }

    fn limit_settings(&self, from_file: Option<LimitSettings>) -> anyhow::Result<LimitSettings> {
        let mut l = from_file.unwrap_or_default();
        l.password_hash_concurrency = self.password_hash_concurrency.unwrap_or(l.password_hash_concurrency);
        l.password_hash_queue = self.password_hash_queue.unwrap_or(l.password_hash_queue);
        l.auth_rate_burst = self.auth_rate_burst.unwrap_or(l.auth_rate_burst);
        l.auth_rate_per_second = self.auth_rate_per_second.unwrap_or(l.auth_rate_per_second);
        l.request_timeout_secs = self.request_timeout.unwrap_or(l.request_timeout_secs);
        anyhow::ensure!(l.password_hash_concurrency >= 1, "password_hash_concurrency must be at least 1");
        anyhow::ensure!(
            l.auth_rate_burst == 0 || l.auth_rate_per_second >= 1,
            "auth_rate_per_second must be at least 1 when auth_rate_burst is set"
        );
        Ok(l)
    }

    fn security_compliance(&self, from_file: Option<SecurityCompliance>) -> anyhow::Result<SecurityCompliance> {
        let mut s = from_file.unwrap_or_default();
        s.lockout_failure_attempts = self.lockout_failure_attempts.or(s.lockout_failure_attempts);
        s.lockout_duration = self.lockout_duration.unwrap_or(s.lockout_duration);
        // Keystone's option has min=1.
        anyhow::ensure!(s.lockout_failure_attempts != Some(0), "lockout_failure_attempts must be at least 1");
        Ok(s)
    }

    fn compute_settings(&self, from_file: Option<ComputeSettings>) -> anyhow::Result<ComputeSettings> {
        let mut c = from_file.unwrap_or_default();
        if let Some(v) = self.host_down_after {
            c.host_down_after_secs = v;
        }
        if let Some(v) = self.build_timeout {
            c.build_timeout_secs = v;
        }
        if let Some(v) = self.ram_weight_multiplier {
            c.ram_weight_multiplier = v;
        }
        anyhow::ensure!(
            c.host_down_after_secs > c.heartbeat_interval_secs,
            "host_down_after_secs must exceed heartbeat_interval_secs"
        );
        anyhow::ensure!(c.max_attempts >= 1, "max_attempts must be at least 1");
        anyhow::ensure!(
            c.soft_affinity_weight_multiplier >= 0.0 && c.soft_anti_affinity_weight_multiplier >= 0.0,
            "the soft (anti-)affinity weight multipliers must not be negative"
        );
        Ok(c)
    }
}

/// Neutron's is unlimited; a bounded page keeps one list request from reading and rendering
/// every port of a large cloud at once.
pub const DEFAULT_PAGINATION_MAX_LIMIT: i64 = 1000;

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// The system's host name, or `meridian-server` where it cannot be read.
fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "meridian-server".to_string())
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/meridian"),
        None => PathBuf::from("/var/lib/meridian"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\ntoken_lifetime_secs = 60\npublic_url = \"http://x/\"\n")
            .expect("write");
        let args = CommonArgs { config: Some(path), token_lifetime: Some(120), ..Default::default() };
        let cfg = args.resolve().expect("resolve");
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.token_lifetime_secs, 120);
        assert_eq!(cfg.public_url, "http://x");
        assert!(cfg.database_url.starts_with("sqlite://"));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "lisen = \"x\"\n").expect("write");
        let args = CommonArgs { config: Some(path), ..Default::default() };
        assert!(args.resolve().is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let args = CommonArgs {
            admin_password: Some("hunter2".into()),
            database_url: Some("postgres://u:pw@h/db".into()),
            ..Default::default()
        };
        let text = format!("{:?}", args.resolve().expect("resolve"));
        assert!(!text.contains("hunter2") && !text.contains(":pw@"), "{text}");
        let args = CommonArgs { agent_token: Some("join-s3cret".into()), ..args };
        let file = FileSettings {
            admin_password: Some("hunter2".into()),
            agent_token: Some("join-s3cret".into()),
            database_url: Some("postgres://u:pw@h/db".into()),
            ..Default::default()
        };
        for text in [format!("{args:?}"), format!("{file:?}")] {
            assert!(!text.contains("hunter2") && !text.contains("s3cret") && !text.contains(":pw@"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }
}
