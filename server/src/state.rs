//! The state every handler shares.

use std::sync::Arc;

use crate::config::Config;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub cfg: Arc<Config>,
}

impl AppState {
    pub fn new(store: Store, cfg: Config) -> Self {
        Self {
            store,
            cfg: Arc::new(cfg),
        }
    }

    /// Public URL of one service root (`identity`, `compute/v2.1`, `image`, `network`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.cfg.public_url, path)
    }
}
