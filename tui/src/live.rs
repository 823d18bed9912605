//! Live tracking of instances: our server's push stream (`os-meridian-events`, server-sent
//! events, resumed with `Last-Event-ID`), or on any other cloud polling the whole project with
//! `changes-since` (new, changed and deleted servers in one request): every 2 s, stretching to
//! 4 s while nothing changes, as long as the instances list is on screen; otherwise only while
//! something is in transition, backing off as Horizon does, and a slow full refresh.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use meridian_common::Client;
use reqwest::{Method, StatusCode};
use tokio::sync::{mpsc, watch};

use crate::model::{Server, parse_list, parse_server};
use crate::worker::Response;
use meridian_common::sse::SseParser;

/// What the worker tells the tracker.
#[derive(Debug)]
pub enum LiveHint {
    /// Servers the UI now shows (their states tell what to watch).
    Seen(Vec<Server>),
    /// An action was accepted on this server: it is about to move.
    Kick(String),
    /// An admin's lists now cover every project (polls add `all_tenants`).
    AllProjects(bool),
}

/// Horizon's row polling interval: 2.5 s, doubling to at most 30 s, back to 2.5 s on a change.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    current: Duration,
}

impl Backoff {
    pub const START: Duration = Duration::from_millis(2500);
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Backoff {
        Backoff { current: Self::START }
    }
    pub fn current(&self) -> Duration {
        self.current
    }
    /// After a poll: the wait before the next one.
    pub fn next(&mut self, changed: bool) -> Duration {
        if changed {
            self.current = Self::START;
        } else {
            let now = self.current;
            self.current = (self.current * 2).min(Self::MAX);
            return now.max(Self::START);
        }
        self.current
    }
    pub fn reset(&mut self) {
        self.current = Self::START;
    }
    /// As [`Backoff::next`], between other bounds.
    pub fn next_within(&mut self, changed: bool, start: Duration, max: Duration) -> Duration {
        if changed {
            self.current = start;
            return start;
        }
        let now = self.current.max(start);
        self.current = (self.current * 2).min(max);
        now
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Stable lists are refreshed this often when nothing is in transition (polling mode).
const STABLE_REFRESH: Duration = Duration::from_secs(60);
/// The stream sends a keepalive every 15 s; this long without a byte means it is dead.
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// Runs until the worker goes away.
pub async fn run(
    mut client_rx: watch::Receiver<Option<Client>>,
    mut hints: mpsc::UnboundedReceiver<LiveHint>,
    ui: mpsc::UnboundedSender<Response>,
    use_stream: bool,
    mut visible: watch::Receiver<bool>,
) {
    let mut tracker = Tracker::default();
    let mut last_id: Option<String> = None;
    let mut reconnect = Backoff { current: Duration::from_secs(1) };
    loop {
        // Wait for a login.
        let client = loop {
            if let Some(c) = client_rx.borrow_and_update().clone() {
                break c;
            }
            if client_rx.changed().await.is_err() {
                return;
            }
        };
        let end = if use_stream {
            stream(&client, &mut last_id, &mut hints, &mut tracker, &ui, &mut client_rx).await
        } else {
            StreamEnd::NotSupported
        };
        match end {
            StreamEnd::NotSupported => {
                let _ = ui.send(Response::LiveMode("polling".into()));
                if poll(&mut client_rx, &mut hints, &mut visible, &mut tracker, &ui).await.is_err() {
                    return;
                }
            }
            StreamEnd::NewClient => reconnect.reset(),
            StreamEnd::Closed => return,
            StreamEnd::Reconnect(wait) => {
                // The server is going away on purpose (a restart): not an error, so no growing
                // backoff; reconnect shortly with the last event id.
                tracing::info!(?wait, "event stream ended by the server; reconnecting");
                let _ = ui.send(Response::LiveMode("reconnecting (server restarting)".into()));
                reconnect.reset();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    r = client_rx.changed() => if r.is_err() { return },
                }
            }
            StreamEnd::Broken(why) => {
                let wait = reconnect.current();
                tracing::info!(%why, ?wait, "event stream broke; reconnecting");
                let _ = ui.send(Response::LiveMode(format!("reconnecting ({why})")));
                reconnect.next(false);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    r = client_rx.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

enum StreamEnd {
    NotSupported,
    NewClient,
    Closed,
    Broken(String),
    /// The server asked for a reconnect after this delay (its `reconnect` event).
    Reconnect(Duration),
}

/// The longest wait a `reconnect` event may ask for; the default when it names none.
const RECONNECT_MAX: Duration = Duration::from_secs(10);
const RECONNECT_DEFAULT: Duration = Duration::from_secs(1);

/// The delay a `reconnect` event asks for: its `retry_ms`, else the stream's `retry:`.
fn reconnect_delay(data: &str, retry_ms: Option<u64>) -> Duration {
    let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
    v["retry_ms"].as_u64().or(retry_ms).map(Duration::from_millis).unwrap_or(RECONNECT_DEFAULT).min(RECONNECT_MAX)
}

/// What the tracker knows of each server: status, task, power and last update (to tell a change
/// from a repeat; `changes-since` is inclusive, so the newest change comes back again).
type Seen = (String, Option<String>, Option<i64>, Option<DateTime<Utc>>);

#[derive(Default)]
struct Tracker {
    known: HashMap<String, Seen>,
    /// The newest `updated` seen, the cloud's clock: the next `changes-since`.
    since: Option<DateTime<Utc>>,
    /// Polls cover every project (an admin's all-projects view).
    all_projects: bool,
}

impl Tracker {
    /// Records a server; returns whether it changed.
    fn see(&mut self, s: &Server) -> bool {
        if let Some(u) = s.updated {
            self.since = Some(self.since.map_or(u, |x| x.max(u)));
        }
        let now = (s.status.clone(), s.task_state.clone(), s.power_state, s.updated);
        if s.status == "DELETED" {
            return self.known.remove(&s.id).is_some();
        }
        self.known.insert(s.id.clone(), now.clone()) != Some(now)
    }

    fn in_transition(&self) -> bool {
        self.known.values().any(|(status, task, _, _)| {
            task.is_some()
                || !matches!(
                    status.as_str(),
                    "ACTIVE" | "SHUTOFF" | "ERROR" | "PAUSED" | "SUSPENDED" | "SHELVED" | "SHELVED_OFFLOADED"
                )
        })
    }

    fn hint(&mut self, h: LiveHint) {
        match h {
            LiveHint::Seen(list) => {
                for s in &list {
                    self.see(s);
                }
            }
            LiveHint::AllProjects(on) => self.all_projects = on,
            LiveHint::Kick(id) => {
                // Unknown until the next poll says otherwise: in transition.
                self.known.insert(id, ("?".into(), Some("?".into()), None, None));
            }
        }
    }
}

async fn stream(
    client: &Client,
    last_id: &mut Option<String>,
    hints: &mut mpsc::UnboundedReceiver<LiveHint>,
    tracker: &mut Tracker,
    ui: &mpsc::UnboundedSender<Response>,
    client_rx: &mut watch::Receiver<Option<Client>>,
) -> StreamEnd {
    let Ok(url) = client.url("compute", "/os-meridian-events") else {
        return StreamEnd::NotSupported;
    };
    let mut rb = client
        .request_url(Method::GET, "compute", &url)
        .header("accept", "text/event-stream")
        // The client's overall timeout would cut a healthy stream; silence is watched below.
        .timeout(Duration::from_secs(7 * 86400));
    if let Some(id) = last_id.as_deref() {
        rb = rb.header("last-event-id", id);
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => return StreamEnd::Broken(e.to_string()),
    };
    match resp.status() {
        s if s.is_success() => {}
        StatusCode::NOT_FOUND | StatusCode::NOT_IMPLEMENTED | StatusCode::METHOD_NOT_ALLOWED => {
            return StreamEnd::NotSupported;
        }
        StatusCode::UNAUTHORIZED => {
            // The worker renews the token; wait for it.
            return match client_rx.changed().await {
                Ok(()) => StreamEnd::NewClient,
                Err(_) => StreamEnd::Closed,
            };
        }
        other => return StreamEnd::Broken(format!("HTTP {other}")),
    }
    let mut parser = SseParser::new(last_id.clone());
    let mut body = resp.bytes_stream();
    loop {
        tokio::select! {
            chunk = tokio::time::timeout(STREAM_SILENCE, body.next()) => {
                let chunk = match chunk {
                    Err(_) => return StreamEnd::Broken("no keepalive".into()),
                    Ok(None) => return StreamEnd::Broken("closed by the server".into()),
                    Ok(Some(Err(e))) => return StreamEnd::Broken(e.to_string()),
                    Ok(Some(Ok(c))) => c,
                };
                for ev in parser.feed(&chunk) {
                    match ev.event.as_str() {
                        "ready" => { let _ = ui.send(Response::LiveMode("live".into())); }
                        // The cursor was too old (or ahead of the server's clock): what was
                        // missed is unknown, so read the whole list again.
                        "reset" => { let _ = ui.send(Response::ServersStale); }
                        "reconnect" => {
                            *last_id = parser.last_id().map(str::to_string);
                            return StreamEnd::Reconnect(reconnect_delay(&ev.data, parser.retry_ms()));
                        }
                        "server" => {
                            let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
                            if let Some(s) = parse_server(&v["server"]) {
                                tracker.see(&s);
                                let _ = ui.send(Response::ServerUpdate(Box::new(s)));
                            }
                        }
                        "transition" => {
                            let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
                            let server_id = v["server_id"].as_str().unwrap_or_default().to_string();
                            if let Ok(entry) = serde_json::from_value::<crate::model::Transition>(v) {
                                let _ = ui.send(Response::Transition { server_id, entry });
                            }
                        }
                        other => tracing::debug!(event = other, "ignored stream event"),
                    }
                }
                *last_id = parser.last_id().map(str::to_string);
            }
            h = hints.recv() => match h {
                Some(h) => tracker.hint(h),
                None => return StreamEnd::Closed,
            },
            r = client_rx.changed() => return if r.is_ok() { StreamEnd::NewClient } else { StreamEnd::Closed },
        }
    }
}

/// While the instances list is on screen the whole project is polled this often, stretching
/// to [`WATCH_MAX`] while nothing changes (a change elsewhere shows within about 4 s).
pub const WATCH_START: Duration = Duration::from_secs(2);
pub const WATCH_MAX: Duration = Duration::from_secs(4);

/// Polling mode, for clouds without the stream. While the instances list is visible: the whole
/// project with `changes-since` every 2–4 s. Otherwise only while something is in transition
/// (Horizon's backoff), else a slow full refresh. A full list (which also tells which servers
/// are gone without `changes-since`) is read first and at least every [`STABLE_REFRESH`].
async fn poll(
    client_rx: &mut watch::Receiver<Option<Client>>,
    hints: &mut mpsc::UnboundedReceiver<LiveHint>,
    visible: &mut watch::Receiver<bool>,
    tracker: &mut Tracker,
    ui: &mpsc::UnboundedSender<Response>,
) -> Result<(), ()> {
    let mut backoff = Backoff::new();
    let mut watch = Backoff { current: WATCH_START };
    let mut visible_open = true;
    let mut last_full: Option<Instant> = None;
    // The first poll comes at once: the list may already be stale.
    let mut next_at = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_at) => {}
            h = hints.recv() => {
                let Some(h) = h else { return Err(()) };
                let kicked = matches!(h, LiveHint::Kick(_));
                let was_moving = tracker.in_transition();
                tracker.hint(h);
                if kicked || (!was_moving && tracker.in_transition()) {
                    backoff.reset();
                    watch.current = WATCH_START;
                    next_at = next_at.min(Instant::now() + WATCH_START);
                }
                continue;
            }
            r = client_rx.changed() => { if r.is_err() { return Err(()) } continue; }
            r = visible.changed(), if visible_open => {
                match r {
                    // Back on the instances list: look now, then every 2 s.
                    Ok(()) if *visible.borrow_and_update() => watch.current = WATCH_START,
                    Ok(()) => continue,
                    Err(_) => { visible_open = false; continue; }
                }
            }
        }
        let Some(client) = client_rx.borrow().clone() else {
            next_at = Instant::now() + WATCH_START;
            continue;
        };
        let shown = *visible.borrow();
        let full_due = last_full.is_none_or(|t| t.elapsed() >= STABLE_REFRESH);
        let path = match tracker.since {
            // Nova compares `updated_at >= changes-since` and lists deleted servers too (status
            // DELETED); the newest change comes back again, which the tracker sees as no change.
            Some(t) if !full_due => {
                format!("/servers/detail?changes-since={}", t.format("%Y-%m-%dT%H:%M:%SZ"))
            }
            _ => "/servers/detail".to_string(),
        };
        let full = !path.contains("changes-since");
        let path = match (tracker.all_projects, full) {
            (false, _) => path,
            (true, true) => format!("{path}?all_tenants=1"),
            (true, false) => format!("{path}&all_tenants=1"),
        };
        let mut changed = false;
        match client.get("compute", &path).await {
            Ok(v) => {
                let servers: Vec<Server> = parse_list(&v["servers"], |s: &mut Server, raw| s.raw = raw);
                if full {
                    last_full = Some(Instant::now());
                    // A full list also tells which servers are gone.
                    let ids: std::collections::HashSet<&str> = servers.iter().map(|s| s.id.as_str()).collect();
                    let gone: Vec<String> =
                        tracker.known.keys().filter(|k| !ids.contains(k.as_str())).cloned().collect();
                    for id in gone {
                        tracker.known.remove(&id);
                        changed = true;
                        let _ = ui.send(Response::ServerUpdate(Box::new(Server {
                            id,
                            status: "DELETED".into(),
                            ..Server::default()
                        })));
                    }
                }
                for s in servers {
                    if tracker.see(&s) {
                        changed = true;
                        let _ = ui.send(Response::ServerUpdate(Box::new(s)));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "poll failed"),
        }
        let watch_wait = watch.next_within(changed, WATCH_START, WATCH_MAX);
        let wait = backoff.next(changed);
        let moving = tracker.in_transition();
        let sleep = if shown {
            watch_wait
        } else if moving {
            wait
        } else {
            STABLE_REFRESH
        };
        next_at = Instant::now() + sleep;
        let _ = ui.send(Response::LiveMode(if shown || moving {
            format!("polling {:.1}s", sleep.as_secs_f32())
        } else {
            "polling".into()
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_waits_what_the_server_asks_within_bounds() {
        assert_eq!(
            reconnect_delay(r#"{"reason":"server shutting down","retry_ms":1000}"#, None),
            Duration::from_secs(1)
        );
        assert_eq!(reconnect_delay("{}", Some(2500)), Duration::from_millis(2500));
        assert_eq!(reconnect_delay("not json", None), RECONNECT_DEFAULT);
        assert_eq!(reconnect_delay(r#"{"retry_ms":3600000}"#, None), RECONNECT_MAX);
    }

    #[test]
    fn backoff_grows_to_thirty_seconds_and_resets_on_change() {
        let mut b = Backoff::new();
        let waits: Vec<f32> = (0..7).map(|_| b.next(false).as_secs_f32()).collect();
        assert_eq!(waits, [2.5, 5.0, 10.0, 20.0, 30.0, 30.0, 30.0]);
        assert_eq!(b.next(true), Backoff::START);
        assert_eq!(b.next(false), Backoff::START);
        assert_eq!(b.next(false).as_secs_f32(), 5.0);
    }

    fn server(id: &str, status: &str, task: Option<&str>) -> Server {
        Server { id: id.into(), status: status.into(), task_state: task.map(str::to_string), ..Server::default() }
    }

    #[test]
    fn the_watched_list_is_polled_every_two_to_four_seconds() {
        let mut b = Backoff { current: WATCH_START };
        let waits: Vec<f32> = (0..4).map(|_| b.next_within(false, WATCH_START, WATCH_MAX).as_secs_f32()).collect();
        assert_eq!(waits, [2.0, 4.0, 4.0, 4.0]);
        assert_eq!(b.next_within(true, WATCH_START, WATCH_MAX), WATCH_START);
        assert_eq!(b.next_within(false, WATCH_START, WATCH_MAX), WATCH_START);
    }

    #[test]
    fn tracker_tells_changes_from_repeats_and_knows_what_moves() {
        let mut t = Tracker::default();
        assert!(t.see(&server("a", "BUILD", Some("spawning"))));
        assert!(!t.see(&server("a", "BUILD", Some("spawning"))));
        assert!(t.in_transition());
        assert!(t.see(&server("a", "ACTIVE", None)));
        assert!(!t.in_transition());
        t.hint(LiveHint::Kick("a".into()));
        assert!(t.in_transition());
        assert!(t.see(&server("a", "DELETED", None)));
        assert!(!t.in_transition());
    }
}
