//! The agent's operator endpoints, on `--metrics-listen` when set (off by default, so several
//! agents on one machine never compete for a port): `/healthz` (alive: 200 while serving),
//! `/readyz` (registered with the server, its port filters applied when it filters traffic,
//! and the libvirt connection answering: 200, else 503)
//! and `/metrics` (Prometheus text format).
//!
//! Unauthenticated, as probes and scrapers expect: bind it to the operator network. Labels are
//! work kinds, outcomes and libvirt operations, never instance or image ids.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::hypervisor::Hypervisor;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on the first call (`start` calls it before
/// anything is recorded). `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(|| meridian_common::metrics::install_recorder(describe)).as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("meridian_agent_work_items_total", "Work items finished, by kind and outcome (done, failed).");
    describe_histogram!(
        "meridian_agent_work_duration_seconds",
        metrics::Unit::Seconds,
        "Time to carry out a work item, by kind."
    );
    describe_histogram!(
        "meridian_agent_libvirt_call_duration_seconds",
        metrics::Unit::Seconds,
        "libvirt calls, by operation."
    );
    describe_counter!("meridian_agent_image_cache_requests_total", "Image cache lookups by result (hit, miss).");
    describe_gauge!("meridian_agent_image_cache_bytes", metrics::Unit::Bytes, "Bytes held in the image cache.");
    describe_gauge!("meridian_agent_registered", "1 while registered with the server.");
    describe_gauge!(
        "meridian_agent_firewall_enforcing",
        "1 once port filters are applied with nftables; 0 with --firewall none or before the first apply."
    );
    describe_gauge!("meridian_agent_firewall_generation", "Generation of the port filters in force.");
    describe_histogram!(
        "meridian_agent_firewall_apply_seconds",
        metrics::Unit::Seconds,
        "Time to generate and apply the port filters (one nft transaction)."
    );
}

/// What `/readyz` looks at.
#[derive(Clone)]
pub struct Health {
    pub registered: Arc<AtomicBool>,
    pub hv: Arc<dyn Hypervisor>,
}

fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(health)
}

/// Binds `addr` and serves the endpoints in the background; returns the bound address.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<SocketAddr> {
    install();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(health)).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(bound)
}

async fn readyz(State(h): State<Health>) -> Response {
    if !h.registered.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not registered with the server\n").into_response();
    }
    let hv = Arc::clone(&h.hv);
    let probe = tokio::task::spawn_blocking(move || hv.host_info().is_ok());
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(true)) => (StatusCode::OK, "ready\n").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "libvirt not answering\n").into_response(),
    }
}

async fn render() -> Response {
    match install() {
        Some(handle) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response(),
    }
}
