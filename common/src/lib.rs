//! What Meridian's TUI, agent and tests share: the OpenStack wire types they read, the
//! server-sent events parser ([`sse`]) and an async HTTP client that authenticates against
//! Keystone v3 and talks to any catalog service.

pub mod agent;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "metadata")]
pub mod metadata;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod sse;

#[cfg(feature = "client")]
pub use client::{AppCredential, Client, ClientError, Credentials, Session};
