//! When a guest's TCP port opens or closes to the host, as the host's own connects see it: for
//! security-group changes made through the API (`security_groups_vm`, `bench-sg-enforce`).
//!
//! A filtered port drops the SYN, so a connect does not fail, it hangs; and one connect's SYN
//! retransmits (1 s, 3 s, …) would measure the kernel's backoff, not the filter. So both probes
//! start a fresh connect (new source port, new SYN, new conntrack entry) every [`EVERY`] and
//! judge each on its own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How often a new connect starts while a probe waits for a change.
pub const EVERY: Duration = Duration::from_millis(20);

/// How long one connect may take before it counts as refused: a dropped SYN is never answered,
/// while a TCG guest answers one in milliseconds.
pub const ATTEMPT: Duration = Duration::from_millis(500);

/// Whether a TCP connect to `addr` completes within `within`.
pub async fn connects(addr: SocketAddr, within: Duration) -> bool {
    matches!(tokio::time::timeout(within, TcpStream::connect(addr)).await, Ok(Ok(_)))
}

/// Starts a connect to `addr` every [`EVERY`] until one completes; returns the time from
/// `since` (e.g. an API call's return) to that completion, or `None` when none completed by
/// `since + limit`.
pub async fn opened(addr: SocketAddr, since: Instant, limit: Duration) -> Option<Duration> {
    let deadline = tokio::time::Instant::from_std(since + limit);
    let mut attempts = JoinSet::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                attempts.spawn(connects(addr, limit));
            }
            Some(done) = attempts.join_next() => {
                if done.unwrap_or(false) {
                    return Some(since.elapsed());
                }
            }
            () = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// Starts a connect to `addr` every [`EVERY`], each given [`ATTEMPT`], until `quiet` of them
/// in a row were refused (or `limit + quiet` after `since`); returns the time from `since` to
/// the start of the first refused connect after which none got through (the moment the port
/// stopped admitting new connections), or `None` when one started later than `limit` still
/// got through.
pub async fn closed(addr: SocketAddr, since: Instant, limit: Duration, quiet: Duration) -> Option<Duration> {
    let end = since + limit + quiet;
    let mut attempts = JoinSet::new();
    let mut results = Vec::new();
    while Instant::now() < end {
        let started = since.elapsed();
        attempts.spawn(async move { (started, connects(addr, ATTEMPT).await) });
        tokio::time::sleep(EVERY).await;
        while let Some(done) = attempts.try_join_next() {
            results.push(done.expect("a probe task"));
        }
        // Judged on finished attempts only; those still running are waited for below, and a
        // late one that got through moves the answer.
        if closed_at(&results).is_some_and(|at| results.iter().any(|(s, _)| *s >= at + quiet)) {
            break;
        }
    }
    results.extend(attempts.join_all().await);
    closed_at(&results).filter(|at| *at <= limit)
}

/// The start of the first refused attempt after the last that got through.
fn closed_at(results: &[(Duration, bool)]) -> Option<Duration> {
    let last_through = results.iter().filter(|(_, ok)| *ok).map(|(at, _)| *at).max();
    results.iter().filter(|(at, ok)| !ok && last_through.is_none_or(|last| *at > last)).map(|(at, _)| *at).min()
}
