//! Supervision of the server's background loops (the conductor, housekeeping, …).
//!
//! [`supervise`] runs a loop as a task of its own and, while that task is alive, records a
//! heartbeat for it in the database (`service_heartbeats`, keyed by this replica's name and the
//! service) every `heartbeat_interval_secs`. A loop that panics or returns is logged at error,
//! counted (`meridian_loop_restarts_total`) and started again after a backoff (1 s doubling to
//! 60 s; back to 1 s once a run lasted a minute). Its heartbeat stops meanwhile, so a loop that
//! keeps dying shows as `down` in `os-services` (after `host_down_after_secs`, as compute hosts)
//! rather than silently up. A loop that hangs without dying is not detected here.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::state::AppState;

/// First and longest wait before a dead loop is started again.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The `os-services` rows a loop's heartbeat stands for. The conductor's pass is what keeps
/// builds moving (scheduling included: builds stranded or rescheduled are placed from it), so it
/// answers for both nova-scheduler and nova-conductor; other loops for themselves.
pub fn services_of(name: &'static str) -> Vec<&'static str> {
    match name {
        "conductor" => vec!["nova-scheduler", "nova-conductor"],
        other => vec![other],
    }
}

/// Runs `run(state)` as a supervised loop named `name` until the returned task is aborted
/// (which aborts the loop too).
pub fn supervise<F, Fut>(name: &'static str, state: AppState, run: F) -> JoinHandle<()>
where
    F: Fn(AppState) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let every = Duration::from_secs(state.cfg.compute.heartbeat_interval_secs.max(1));
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            let mut task = tokio::spawn(run(state.clone()));
            // Aborting the supervisor drops this guard, which stops the loop with it.
            let _guard = AbortOnDrop(task.abort_handle());
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let ended = loop {
                tokio::select! {
                    biased;
                    ended = &mut task => break ended,
                    _ = tick.tick() => beat(&state, name).await,
                }
            };
            metrics::counter!("meridian_loop_restarts_total", "loop" => name).increment(1);
            if started.elapsed() >= BACKOFF_MAX {
                backoff = BACKOFF_MIN;
            }
            match ended {
                Err(e) if e.is_panic() => {
                    tracing::error!(loop_name = name, retry_in_secs = backoff.as_secs(), "background loop panicked")
                }
                Err(e) => {
                    tracing::error!(loop_name = name, error = %e, retry_in_secs = backoff.as_secs(), "background loop stopped")
                }
                Ok(()) => {
                    tracing::error!(loop_name = name, retry_in_secs = backoff.as_secs(), "background loop returned")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })
}

/// One heartbeat per service the loop stands for. A failed write is only logged: the loop
/// keeps running, and a database that stays unreachable shows as the service going down.
/// Heartbeats are not flushed to disk on their own (`Store::sync`): one lost to a power cut is
/// replaced by the next.
async fn beat(state: &AppState, name: &'static str) {
    for service in services_of(name) {
        if let Err(e) = state.store.service_heartbeat(&state.cfg.replica_name, service).await {
            tracing::warn!(loop_name = name, error = %e, "cannot record the loop's heartbeat");
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::testing::TestApp;

    /// The state of `app` with heartbeats every second, under a replica name of its own.
    fn fast(app: &TestApp, replica: &str) -> AppState {
        let mut cfg = (*app.state.cfg).clone();
        cfg.compute.heartbeat_interval_secs = 1;
        cfg.replica_name = replica.to_string();
        AppState::new(app.state.store.clone(), cfg)
    }

    async fn last_beat(state: &AppState, service: &str) -> Option<String> {
        let rows = state.store.service_heartbeats().await.expect("heartbeats");
        rows.into_iter().find(|r| r.replica == state.cfg.replica_name && r.service == service).map(|r| r.updated_at)
    }

    #[tokio::test]
    async fn a_loop_that_panics_is_restarted_and_its_heartbeat_resumes() {
        let app = TestApp::new().await;
        let state = fast(&app, "replica-panics");
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let sup = supervise("conductor", state.clone(), move |_| {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if run == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    panic!("the first run dies");
                }
                std::future::pending::<()>().await
            }
        });
        // The first run beat once before it died.
        let deadline = Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the loop was started again after its panic");
        let after_restart = last_beat(&state, "nova-conductor").await.expect("a heartbeat before the panic");
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut resumed = None;
        while Instant::now() < deadline {
            let beat = last_beat(&state, "nova-conductor").await;
            if beat.as_deref() > Some(after_restart.as_str()) {
                resumed = beat;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(resumed.is_some(), "the heartbeat resumed after the restart");
        assert!(last_beat(&state, "nova-scheduler").await.is_some());
        sup.abort();
        assert!(sup.await.is_err_and(|e| e.is_cancelled()));
        // Aborting the supervisor stopped the loop: no heartbeat after it.
        let stopped = last_beat(&state, "nova-conductor").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(last_beat(&state, "nova-conductor").await, stopped);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_loop_that_returns_is_restarted() {
        let app = TestApp::new().await;
        let state = fast(&app, "replica-returns");
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let sup = supervise("housekeeping", state, move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        sup.abort();
        // Returned at once, waited the first backoff (1 s), ran again.
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
