//! The state every handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::Config;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub cfg: Arc<Config>,
    /// Wakes long-polling agents (per host id) and waiters on work results (per work id).
    pub signals: Arc<Signals>,
    /// Serialises scheduling decisions in this process, so each one sees the claims of the
    /// previous (as Nova's scheduler consumes its in-memory host state). Claims stay atomic in
    /// the database across replicas regardless.
    pub schedule_lock: Arc<tokio::sync::Mutex<()>>,
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

impl AppState {
    pub fn new(store: Store, cfg: Config) -> Self {
        Self {
            store,
            cfg: Arc::new(cfg),
            signals: Arc::new(Signals::default()),
            schedule_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Public URL of one service root (`identity`, `compute/v2.1`, `image`, `network`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.cfg.public_url, path)
    }
}
