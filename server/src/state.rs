//! The state every handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::Config;
use crate::store::Store;
use crate::store::hosts::{Claim, Host};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub cfg: Arc<Config>,
    /// Wakes long-polling agents (per host id) and waiters on work results (per work id).
    pub signals: Arc<Signals>,
    /// The scheduler's view of the hosts. Its lock serialises scheduling decisions in this
    /// process, so each one sees the claims of the previous (as Nova's scheduler consumes its
    /// in-memory host state). Claims stay atomic in the database across replicas regardless.
    pub hosts: Arc<tokio::sync::Mutex<HostCache>>,
    /// The agent join token as last read from the database (checked on every agent request).
    pub agent_token: Arc<std::sync::RwLock<Option<String>>>,
    /// Recently validated Keystone tokens.
    pub tokens: Arc<crate::auth::TokenCache>,
    /// Cancelled when the server begins to shut down: long-lived responses (event streams,
    /// agents' long polls) end on it, so graceful shutdown does not wait for them.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Whether this process ran continuously (a pause must not make every host look down).
    pub liveness: Arc<crate::compute::conductor::Liveness>,
    /// Recently validated agent host credentials.
    pub agent_creds: Arc<crate::compute::agents::CredentialCache>,
    /// Password hashing pool, per-address rate limits, request timeout.
    pub limits: Arc<crate::limits::Limits>,
    /// Remote console requests waiting for agents, and sessions waiting to be joined.
    pub consoles: Arc<crate::compute::consoles::Consoles>,
}

/// In-process wake-ups; the database stays the source of truth (a missed signal only delays
/// delivery until the next poll).
#[derive(Default)]
pub struct Signals {
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Signals {
    /// The notifier for a key, created on first use.
    pub fn get(&self, key: &str) -> Arc<Notify> {
        let mut map = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }

    /// Wakes whoever waits on `key` now, and the next one to wait if nobody does.
    pub fn notify(&self, key: &str) {
        let map = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(key) {
            n.notify_waiters();
            n.notify_one();
        }
    }
}

/// Hosts as last read from the database, with this process's claims since applied: the
/// scheduler reads them instead of every host row on every decision. Refreshed when older than
/// [`HostCache::MAX_AGE`], after a claim the database refused, and before any "no valid host"
/// answer, so staleness can cost a retry but never a wrong refusal or an overcommit (the
/// database claim is the arbiter).
#[derive(Default)]
pub struct HostCache {
    pub hosts: Vec<Host>,
    pub read_at: Option<std::time::Instant>,
}

impl HostCache {
    pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

    pub fn fresh(&self) -> bool {
        self.read_at.is_some_and(|t| t.elapsed() < Self::MAX_AGE)
    }

    /// Reads every host from the database.
    pub async fn reload(&mut self, store: &Store) -> crate::store::StoreResult<()> {
        self.hosts = store.list_hosts().await?;
        self.read_at = Some(std::time::Instant::now());
        Ok(())
    }

    pub fn invalidate(&mut self) {
        self.read_at = None;
    }

    /// Applies a claim this process just made (the next decision must see it).
    pub fn consume(&mut self, host_id: &str, c: Claim) {
        if let Some(h) = self.hosts.iter_mut().find(|h| h.id == host_id) {
            h.vcpus_used += c.vcpus;
            h.memory_mb_used += c.memory_mb;
            h.disk_gb_used += c.disk_gb;
        }
    }
}

impl AppState {
    pub fn new(store: Store, cfg: Config) -> Self {
        let limits = Arc::new(crate::limits::Limits::new(&cfg.limits));
        Self {
            store,
            cfg: Arc::new(cfg),
            signals: Arc::new(Signals::default()),
            hosts: Arc::new(tokio::sync::Mutex::new(HostCache::default())),
            agent_token: Arc::default(),
            tokens: Arc::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            liveness: Arc::default(),
            agent_creds: Arc::default(),
            limits,
            consoles: Arc::default(),
        }
    }

    /// Public URL of one service root (`identity`, `compute/v2.1`, `image`, `network`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.cfg.public_url, path)
    }
}
