//! The agent's main loop: register, heartbeat, long-poll work, hand it to the controller,
//! report events. The server may be away at any time; every call is retried with backoff and
//! nothing the server answers stops the agent.
//!
//! Work for one instance runs in order (one queue per instance); different instances run
//! concurrently. A work id that already finished (per the [`WorkLog`]) is not run again: its
//! recorded outcome is reported again. A work id still running is ignored when re-offered.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use meridian_common::agent::{EventBatch, Heartbeat, Inventory, RegisterRequest, ReportedEvent, WorkEvent, WorkItem};
use meridian_common::client::ClientError;
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::controller::{Controller, chain};
use crate::firewall::Enforcer;
use crate::inventory::{self, HostFacts};
use crate::server::ServerClient;
use crate::work::{Work, WorkLog};

/// Exponential backoff between `min` and `max`, with a little jitter.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }
    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to 10% jitter so a fleet of agents does not reconnect in lockstep.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
        d + d.mul_f64(f64::from(nanos % 100) / 1000.0)
    }
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// What the loop needs besides the controller.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub host: String,
    pub facts: HostFacts,
    pub state_dir: std::path::PathBuf,
    /// Where the host's credential is kept (see [`crate::credential`]).
    pub credential_file: std::path::PathBuf,
    /// How long one long-poll for work waits on the server.
    pub poll_wait: Duration,
}

/// One agent process.
pub struct Agent {
    cfg: AgentConfig,
    server: ServerClient,
    controller: Arc<Controller>,
    log: Arc<WorkLog>,
    /// True while registered with the server (the agent's `/readyz`).
    registered: Arc<std::sync::atomic::AtomicBool>,
    /// The port filters' enforcement, when the host filters traffic.
    firewall: Option<Arc<Enforcer>>,
}

type Events = mpsc::UnboundedSender<(String, WorkEvent)>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the server no longer accepts this host as it is: unknown (404) or its credential
/// unknown or replaced (401). Either way, register again.
fn must_register(e: &ClientError) -> bool {
    matches!(e.status(), Some(StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED))
}

impl Agent {
    pub fn new(cfg: AgentConfig, server: ServerClient, controller: Arc<Controller>, log: Arc<WorkLog>) -> Agent {
        Agent { cfg, server, controller, log, registered: Arc::default(), firewall: None }
    }

    /// Enforces the server's port filters with `enforcer`: applied once after each
    /// registration before the agent reports ready, then followed through their long poll.
    pub fn with_firewall(self, enforcer: Arc<Enforcer>) -> Agent {
        Agent { firewall: Some(enforcer), ..self }
    }

    /// Reports registration through `flag` (set while registered, cleared when the server
    /// forgets this host).
    pub fn with_registered_flag(self, flag: Arc<std::sync::atomic::AtomicBool>) -> Agent {
        Agent { registered: flag, ..self }
    }

    fn set_registered(&self, registered: bool) {
        self.registered.store(registered, std::sync::atomic::Ordering::Release);
        metrics::gauge!("meridian_agent_registered").set(f64::from(u8::from(registered)));
    }

    /// Runs until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let reporter = tokio::spawn(report_loop(self.server.clone(), rx));
        let dispatcher = Arc::new(Dispatcher {
            controller: Arc::clone(&self.controller),
            log: Arc::clone(&self.log),
            events: tx,
            server: self.server.clone(),
            queues: Mutex::default(),
            inflight: Mutex::default(),
        });
        tokio::select! {
            () = self.sessions(&dispatcher) => {}
            () = shutdown => info!("shutting down"),
        }
        reporter.abort();
    }

    /// The current inventory (libvirt and the file system; blocking calls off the executor).
    pub async fn inventory(&self) -> Result<Inventory, String> {
        let hv = Arc::clone(self.controller.hypervisor());
        let dir = self.cfg.state_dir.clone();
        let facts = self.cfg.facts.clone();
        tokio::task::spawn_blocking(move || {
            let info = hv.host_info().map_err(|e| chain(&e))?;
            let disk = inventory::disk_total_gb(&dir).map_err(|e| format!("cannot size {}: {e}", dir.display()))?;
            Ok(inventory::inventory(&info, disk, &facts))
        })
        .await
        .map_err(|_| "inventory collection panicked".to_string())?
    }

    /// Register, then heartbeat and poll until the server forgets this host; forever.
    async fn sessions(&self, dispatcher: &Arc<Dispatcher>) {
        let mut backoff = Backoff::default();
        loop {
            let registered = async {
                let inventory = self.inventory().await?;
                let req = RegisterRequest {
                    host: self.cfg.host.clone(),
                    inventory,
                    agent_version: env!("CARGO_PKG_VERSION").to_string(),
                };
                self.server.register(&req).await.map_err(|e| chain(&e))
            }
            .await;
            let reg = match registered {
                Ok(r) => r,
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!(error = %e, retry_in = ?wait, "cannot register with the server");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            backoff.reset();
            // Kept for the next start (the join token is then not needed). If it cannot be
            // written, this run still works with it; the next start registers again.
            let (file, credential) = (self.cfg.credential_file.clone(), reg.credential.clone());
            match tokio::task::spawn_blocking(move || crate::credential::store(&file, &credential)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, file = %self.cfg.credential_file.display(), "cannot store the host credential")
                }
                Err(_) => warn!("storing the host credential panicked"),
            }
            let interval = Duration::from_secs(reg.heartbeat_interval_secs.clamp(1, 300));
            info!(host = %self.cfg.host, host_id = %reg.host_id, heartbeat = ?interval, "registered");
            // Everything the server says this host must enforce is in force before it is ready.
            if let Some(fw) = &self.firewall
                && !self.first_filters(fw).await
            {
                warn!("the server refused the new credential; registering again");
                continue;
            }
            self.set_registered(true);
            let filters = async {
                match &self.firewall {
                    Some(fw) => self.filter_polls(fw).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.heartbeats(interval) => {}
                () = self.polls(dispatcher) => {}
                () = filters => {}
            }
            self.set_registered(false);
            warn!("the server no longer knows this host or its credential; registering again");
        }
    }

    /// Heartbeats every `interval`; returns when the server answers 404 or 401 (see
    /// [`must_register`]).
    async fn heartbeats(&self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let hb = match self.heartbeat().await {
                Ok(hb) => hb,
                Err(e) => {
                    warn!(error = %e, "cannot collect the heartbeat");
                    continue;
                }
            };
            match self.server.heartbeat(&self.cfg.host, &hb).await {
                Ok(()) => debug!(instances = hb.instances.len(), "heartbeat"),
                Err(e) if must_register(&e) => return,
                Err(e) => warn!(error = %chain(&e), "heartbeat failed"),
            }
        }
    }

    /// The heartbeat body: inventory and every Meridian domain's power state.
    pub async fn heartbeat(&self) -> Result<Heartbeat, String> {
        let inventory = self.inventory().await?;
        let instances = self.controller.instances().await.map_err(|e| chain(&e))?;
        Ok(Heartbeat { inventory, instances })
    }

    /// Long-polls for work; returns when the server answers 404 or 401 (see [`must_register`]).
    async fn polls(&self, dispatcher: &Arc<Dispatcher>) {
        let mut backoff = Backoff::default();
        loop {
            match self.server.poll_work(&self.cfg.host, self.cfg.poll_wait).await {
                Ok(items) => {
                    backoff.reset();
                    for item in items {
                        dispatcher.submit(item);
                    }
                }
                Err(e) if must_register(&e) => return,
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!(error = %chain(&e), retry_in = ?wait, "cannot poll for work");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// How long to wait before asking again a server that has no port-filter feed (404).
const NO_FEED_RETRY: Duration = Duration::from_secs(60);

impl Agent {
    /// Fetches and applies the host's port filters once (retrying until applied); false when
    /// the server answers 401 (register again). A server without the feed (404) is said once
    /// and passed over: nothing newer than what was applied at start is then enforced.
    async fn first_filters(&self, fw: &Enforcer) -> bool {
        let mut backoff = Backoff::default();
        loop {
            let failure = match self.server.port_filters(&self.cfg.host, None, Duration::ZERO).await {
                Ok(filters) => match fw.apply(filters).await {
                    Ok(_) => {
                        fw.set_feed(true);
                        return true;
                    }
                    Err(e) => chain(&e),
                },
                Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => return false,
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                    fw.set_feed(false);
                    warn!(
                        "the server has no port-filter feed (404): security groups are not enforced on this host until it has"
                    );
                    return true;
                }
                Err(e) => chain(&e),
            };
            let wait = backoff.next_delay();
            warn!(error = %failure, retry_in = ?wait, "cannot apply the port filters");
            tokio::time::sleep(wait).await;
        }
    }

    /// Long-polls the port filters and applies each new generation; returns on 401.
    async fn filter_polls(&self, fw: &Enforcer) {
        let mut backoff = Backoff::default();
        let mut said_missing = false;
        loop {
            let applied = fw.generation();
            let wait = match self.server.port_filters(&self.cfg.host, applied, self.cfg.poll_wait).await {
                Ok(filters) if Some(filters.generation) == applied => {
                    backoff.reset();
                    continue;
                }
                Ok(filters) => match fw.apply(filters).await {
                    Ok(_) => {
                        fw.set_feed(true);
                        backoff.reset();
                        continue;
                    }
                    Err(e) => {
                        let wait = backoff.next_delay();
                        tracing::error!(error = %chain(&e), retry_in = ?wait, "cannot apply the port filters");
                        wait
                    }
                },
                Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => return,
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                    fw.set_feed(false);
                    if !said_missing {
                        warn!("the server has no port-filter feed (404); asking again every minute");
                        said_missing = true;
                    }
                    NO_FEED_RETRY
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!(error = %chain(&e), retry_in = ?wait, "cannot poll the port filters");
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Hands work to per-instance queues.
pub struct Dispatcher {
    controller: Arc<Controller>,
    log: Arc<WorkLog>,
    events: Events,
    /// For console sessions, which connect back to the server.
    server: ServerClient,
    queues: Mutex<HashMap<Uuid, mpsc::UnboundedSender<Work>>>,
    inflight: Mutex<HashSet<String>>,
}

/// How long an instance's queue stays open without work.
const QUEUE_IDLE: Duration = Duration::from_secs(60);

impl Dispatcher {
    /// Accepts one work item from the server.
    pub fn submit(self: &Arc<Self>, item: WorkItem) {
        if matches!(item.action, meridian_common::agent::Action::Console { .. }) {
            // Not work: beside the instance's queue (a stop still runs while someone is
            // attached), never logged or reported.
            tokio::spawn(crate::console::run(Arc::clone(&self.controller), self.server.clone(), item));
            return;
        }
        if let Some(event) = self.log.get(&item.id) {
            info!(work = %item.id, attempt = item.attempt, "work already finished; reporting its outcome again");
            let _ = self.events.send((item.id, event));
            return;
        }
        if !lock(&self.inflight).insert(item.id.clone()) {
            debug!(work = %item.id, "work already running");
            return;
        }
        let work_id = item.id.clone();
        let work = match Work::from_item(item) {
            Ok(w) => w,
            Err(message) => {
                warn!(work = %work_id, error = %message, "invalid work");
                let event = WorkEvent::Failed { message, details: String::new(), retryable: false };
                tokio::spawn(Arc::clone(self).finish(work_id, event));
                return;
            }
        };
        info!(work = %work.id, instance = %work.instance_id, op = work.op().name(), attempt = work.attempt, "work received");
        let id = work.instance_id;
        let mut queues = lock(&self.queues);
        let work = match queues.get(&id) {
            Some(tx) => match tx.send(work) {
                Ok(()) => return,
                // That queue has just gone idle: start a new one.
                Err(mpsc::error::SendError(w)) => w,
            },
            None => work,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(work);
        queues.insert(id, tx);
        tokio::spawn(Arc::clone(self).worker(id, rx));
    }

    async fn worker(self: Arc<Self>, id: Uuid, mut rx: mpsc::UnboundedReceiver<Work>) {
        loop {
            match tokio::time::timeout(QUEUE_IDLE, rx.recv()).await {
                Ok(Some(work)) => self.execute(work).await,
                Ok(None) => break,
                Err(_) => {
                    // Idle: refuse new work, but finish what raced in before the close.
                    rx.close();
                    while let Ok(work) = rx.try_recv() {
                        self.execute(work).await;
                    }
                    break;
                }
            }
        }
        let mut queues = lock(&self.queues);
        if queues.get(&id).is_some_and(mpsc::UnboundedSender::is_closed) {
            queues.remove(&id);
        }
    }

    async fn execute(self: &Arc<Self>, work: Work) {
        let events = self.events.clone();
        let work_id = work.id.clone();
        let progress = move |task_state: &str| {
            let _ = events.send((work_id.clone(), WorkEvent::Progress { task_state: task_state.to_string() }));
        };
        let event = self.controller.execute(&work, &progress).await;
        if work.op() == crate::lifecycle::Op::ConsoleLog {
            // A console read changes nothing, so running it again is harmless; recording its
            // answer (up to 1 MiB of guest output, every few seconds while a dashboard
            // follows a console) would only grow the work log.
            lock(&self.inflight).remove(&work.id);
            let _ = self.events.send((work.id, event));
            return;
        }
        Arc::clone(self).finish(work.id, event).await;
    }

    /// Records the final event durably (fsync, off the executor), then queues it for the
    /// server.
    async fn finish(self: Arc<Self>, work_id: String, event: WorkEvent) {
        let log = Arc::clone(&self.log);
        let (id, ev) = (work_id.clone(), event.clone());
        let recorded = tokio::task::spawn_blocking(move || log.record(&id, &ev)).await;
        if let Err(e) = recorded.map_err(std::io::Error::other).and_then(|r| r) {
            warn!(work = %work_id, error = %e, "cannot record finished work; a repeat will run again");
        }
        lock(&self.inflight).remove(&work_id);
        let _ = self.events.send((work_id, event));
    }
}

/// The most events sent in one report.
const MAX_BATCH: usize = 64;
/// Attempts after which a progress event is given up (final events are never given up).
const PROGRESS_TRIES: u32 = 3;

/// Sends events in order, everything waiting at that moment in one request (a build's
/// progress and outcome often go together). Final events are retried until the server takes
/// them (or refuses the whole report for good: it then no longer offers the work either, or
/// offers it again and gets the recorded outcome); progress events are best-effort.
async fn report_loop(server: ServerClient, mut rx: mpsc::UnboundedReceiver<(String, WorkEvent)>) {
    // (work id, event, failed attempts so far)
    let mut pending: std::collections::VecDeque<(String, WorkEvent, u32)> = std::collections::VecDeque::new();
    let mut backoff = Backoff::default();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some((id, ev)) => pending.push_back((id, ev, 0)),
                None => return,
            }
        }
        while let Ok((id, ev)) = rx.try_recv() {
            pending.push_back((id, ev, 0));
        }
        let n = pending.len().min(MAX_BATCH);
        let batch = EventBatch {
            events: pending
                .iter()
                .take(n)
                .map(|(work_id, event, _)| ReportedEvent { work_id: work_id.clone(), event: event.clone() })
                .collect(),
        };
        let failure = match server.report_batch(&batch).await {
            Ok(result) => {
                let taken = result.taken.min(n);
                pending.drain(..taken);
                if taken == n {
                    backoff.reset();
                    continue;
                }
                result.error.unwrap_or_else(|| "the server took only part of the report".into())
            }
            // 401: the credential is being replaced (the session loop registers again); the
            // events wait for the new one rather than being lost.
            Err(e)
                if e.status().is_some_and(|s| {
                    s.is_client_error()
                        && s != StatusCode::REQUEST_TIMEOUT
                        && s != StatusCode::TOO_MANY_REQUESTS
                        && s != StatusCode::UNAUTHORIZED
                }) =>
            {
                warn!(events = n, error = %chain(&e), "the server refused the events; dropping them");
                pending.drain(..n);
                continue;
            }
            Err(e) => chain(&e),
        };
        for (_, _, tries) in pending.iter_mut().take(n) {
            *tries += 1;
        }
        pending.retain(|(work_id, event, tries)| {
            let give_up = matches!(event, WorkEvent::Progress { .. }) && *tries >= PROGRESS_TRIES;
            if give_up {
                warn!(work = %work_id, "dropping a progress event");
            }
            !give_up
        });
        let wait = backoff.next_delay();
        warn!(events = n, error = %failure, retry_in = ?wait, "cannot report work events");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let d: Vec<u64> = (0..6).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 8, 8]);
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(1100));
    }
}
