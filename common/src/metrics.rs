//! The one process-wide Prometheus recorder that the server and the agent each install, with
//! the latency buckets both use. Each keeps the handle in its own `OnceLock` and names its own
//! metrics (`describe`).

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: sub-millisecond reads and libvirt calls up to the agents' long
/// polls, long builds and graceful stops.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Installs a Prometheus recorder as the global one, runs `describe` (the process's metric
/// descriptions) and starts its upkeep; `None` when it cannot be configured or another
/// recorder was installed first. Call it once (from a `OnceLock`).
pub fn install_recorder(describe: fn()) -> Option<PrometheusHandle> {
    let recorder = match PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS) {
        Ok(b) => b.build_recorder(),
        Err(e) => {
            tracing::error!(error = %e, "cannot configure the metrics recorder");
            return None;
        }
    };
    let handle = recorder.handle();
    if let Err(e) = metrics::set_global_recorder(recorder) {
        tracing::error!(error = %e, "cannot install the metrics recorder");
        return None;
    }
    describe();
    // Histogram samples wait in buffers until drained; drain them even if nobody scrapes. A
    // thread rather than a task: the recorder outlives any one runtime.
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
    Some(handle)
}
