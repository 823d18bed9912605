//! `GET /compute/v2.1/os-meridian-events`: a server-sent event stream of server changes, our
//! extension beyond Nova so dashboards see every state transition as it happens instead of
//! polling `changes-since`.
//!
//! Each change yields one `transition` event per state transition recorded since the last one
//! delivered (`server_id`, `seq`, `vm_state`, `task_state`, `power_state`, `at`), then one
//! `server` event. Each `server` event carries exactly the object `GET /servers/detail` returns at the requested
//! microversion (deleted servers included, with status `DELETED`, as `changes-since` shows them).
//! The stream reads the database, not in-process state, so it works behind several replicas: a
//! local change wakes it at once, changes made by another replica are seen by a short poll.
//! Event ids are resumable cursors (`Last-Event-ID`).
//!
//! A cursor older than the retention window (`[retention] deleted_instances_secs`: what is
//! kept of deleted servers and their transitions) (or well ahead of this server's clock) is not
//! replayed: the stream starts from now with a `reset` event, and the client reloads its list.
//! A backlog is read [`PAGE`] servers at a time, so memory does not grow with history. When the
//! server shuts down, every stream ends with a `reconnect` event.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::microversion::ApiVersion;
use super::servers::{Shape, render};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;
use crate::store::{fmt_time, parse_time};

/// How far back each query looks before the cursor, so a change committed late (a slower
/// transaction, another replica's clock) is still delivered; duplicates are filtered by id and
/// `updated_at`.
const OVERLAP: Duration = Duration::from_secs(2);
/// Without a local wake-up, how often to look for changes made by other replicas.
const POLL: Duration = Duration::from_secs(1);
/// Lets a burst of transitions land before reading, so one query covers them.
const SETTLE: Duration = Duration::from_millis(15);
/// How often a long-lived stream re-checks that its token is still valid.
const REAUTH: Duration = Duration::from_secs(30);
/// Servers read per backlog query.
pub const PAGE: i64 = 100;
/// How soon clients are told to reconnect when the server shuts down (another replica, or this
/// one restarted).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub async fn stream(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    headers: HeaderMap,
    q: Query,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    ctx.require_reader("os_compute_api:servers:index")?;
    let all_tenants = q.bool("all_tenants")?.unwrap_or(false);
    let project = if all_tenants {
        ctx.require_admin("os_compute_api:servers:index:get_all_tenants")?;
        None
    } else {
        Some(ctx.project_id()?.to_string())
    };
    let resume = headers.get("last-event-id").and_then(|h| h.to_str().ok()).map(str::to_string);
    let resume = resume.or_else(|| q.get("since").map(str::to_string));
    let requested = match resume {
        Some(c) => Some(parse_time(&c).ok_or_else(|| ApiError::bad_request(format!("Invalid event cursor {c}.")))?),
        None => None,
    };
    let feed = Feed::new(state, ctx, v, project, requested);
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keepalive")))
}

/// Where a stream starts: the client's cursor when its history is still kept and it is not
/// ahead of this server's clock by more than [`OVERLAP`] (a replica's skew; clamped to now),
/// otherwise now, with the reason for a `reset` event (the client missed an unknown number of
/// changes and must reload its list).
fn start_at(
    requested: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    retained: Duration,
) -> (DateTime<Utc>, Option<&'static str>) {
    let horizon = chrono::Duration::from_std(retained).unwrap_or(chrono::Duration::MAX);
    let skew = chrono::Duration::from_std(OVERLAP).unwrap_or_default();
    match requested {
        None => (now, None),
        Some(c) if c < now - horizon => (now, Some("cursor older than the retained history")),
        Some(c) if c > now + skew => (now, Some("cursor ahead of the server's clock")),
        Some(c) => (c.min(now), None),
    }
}

/// The final event of a stream when the server shuts down: reconnect (with `Last-Event-ID`)
/// after `retry_ms`, to this server once it is back or to another replica.
fn reconnect_event() -> Event {
    let retry_ms = u64::try_from(RECONNECT_AFTER.as_millis()).unwrap_or(u64::MAX);
    Event::default()
        .event("reconnect")
        .retry(RECONNECT_AFTER)
        .data(json!({"reason": "server shutting down", "retry_ms": retry_ms}).to_string())
}

/// A read of everything changed since a point, in pages: the position after the last row read.
struct Pass {
    /// `cursor - OVERLAP` when the pass began: transitions older than this were seen before.
    since: String,
    after_at: String,
    after_id: String,
}

impl Pass {
    fn from(cursor: DateTime<Utc>) -> Pass {
        let since = fmt_time(cursor - chrono::Duration::from_std(OVERLAP).unwrap_or_default());
        Pass { after_at: since.clone(), after_id: String::new(), since }
    }
}

struct Feed {
    state: AppState,
    ctx: Ctx,
    v: ApiVersion,
    project: Option<String>,
    /// The newest `updated_at` delivered so far.
    cursor: DateTime<Utc>,
    /// Where this stream began (connect time, or the client's resume cursor): transitions up to
    /// it were delivered on an earlier connection, or predate the client's interest.
    start: String,
    /// Instance id → the `updated_at` and transition `seq` last delivered for it (`None`: none
    /// seen yet), within the overlap window.
    sent: HashMap<String, (String, Option<i64>)>,
    pending: VecDeque<Event>,
    /// The read under way, if any: the next page is read without waiting for a change.
    pass: Option<Pass>,
    rx: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
    checked_at: Instant,
    /// The final event was queued; the stream ends once `pending` is empty.
    ended: bool,
    /// Counted in `meridian_event_stream_clients` while the stream lives.
    _client: crate::ops::StreamClient,
}

impl Feed {
    /// A stream for `project` (`None`: all) from the `requested` cursor (`None`: now).
    fn new(
        state: AppState,
        ctx: Ctx,
        v: ApiVersion,
        project: Option<String>,
        requested: Option<DateTime<Utc>>,
    ) -> Feed {
        let (cursor, reset) =
            start_at(requested, Utc::now(), Duration::from_secs(state.cfg.retention.deleted_instances_secs));
        let mut pending =
            VecDeque::from([Event::default().event("ready").data(json!({"cursor": fmt_time(cursor)}).to_string())]);
        if let Some(reason) = reset {
            pending.push_back(
                Event::default()
                    .event("reset")
                    .id(fmt_time(cursor))
                    .data(json!({"reason": reason, "cursor": fmt_time(cursor)}).to_string()),
            );
        }
        Feed {
            rx: state.store.watch_instances(),
            shutdown: state.shutdown.clone(),
            state,
            ctx,
            v,
            project,
            cursor,
            start: fmt_time(cursor),
            sent: HashMap::new(),
            pending,
            // The backlog since the cursor is read at once, page by page; then changes as they
            // come.
            pass: Some(Pass::from(cursor)),
            checked_at: Instant::now(),
            ended: false,
            _client: crate::ops::StreamClient::open(),
        }
    }

    /// The next event, or `None` to end the stream (token no longer valid, server shutting
    /// down after its `reconnect` event).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            if self.shutdown.is_cancelled() {
                self.ended = true;
                return Some(reconnect_event());
            }
            if self.checked_at.elapsed() >= REAUTH {
                self.checked_at = Instant::now();
                match crate::auth::validate(&self.state, &self.ctx.token.id).await {
                    Ok(Some(_)) => {}
                    _ => return None,
                }
            }
            if self.pass.is_none() {
                // A local change wakes at once; otherwise poll for other replicas' changes.
                tokio::select! {
                    () = self.shutdown.cancelled() => continue,
                    woken = tokio::time::timeout(POLL, self.rx.changed()) => {
                        if let Ok(Ok(())) = woken {
                            tokio::time::sleep(SETTLE).await;
                            self.rx.borrow_and_update();
                        }
                    }
                }
                self.pass = Some(Pass::from(self.cursor));
            }
            if let Err(e) = self.page().await {
                tracing::warn!(error = %e.message, "event stream query failed");
                // Start over from the cursor after the next wait.
                self.pass = None;
            }
        }
    }

    /// Reads the next page of the pass under way and queues its events; the pass ends with a
    /// page that is not full.
    async fn page(&mut self) -> ApiResult<()> {
        let Some(pass) = self.pass.as_mut() else { return Ok(()) };
        let rows = self
            .state
            .store
            .instances_changed_page(self.project.as_deref(), (&pass.after_at, &pass.after_id), PAGE)
            .await?;
        let since_at = pass.since.clone();
        match rows.last() {
            Some(last) if rows.len() >= usize::try_from(PAGE).unwrap_or(usize::MAX) => {
                pass.after_at = last.updated_at.clone();
                pass.after_id = last.id.clone();
            }
            _ => self.pass = None,
        }
        for inst in rows {
            if self.sent.get(&inst.id).is_some_and(|(at, _)| *at == inst.updated_at) {
                continue;
            }
            // Every transition since the last one delivered, so a client sees each phase even
            // when several happened between two reads.
            let last_seq = self.sent.get(&inst.id).and_then(|(_, seq)| *seq);
            let mut seq_now = last_seq;
            for t in self.state.store.transitions_after(&inst.id, last_seq, &since_at).await? {
                if last_seq.is_some() || t.at > self.start {
                    let data = json!({
                        "server_id": t.instance_id, "seq": t.seq, "vm_state": t.vm_state,
                        "task_state": t.task_state, "power_state": t.power_state, "at": t.at,
                    });
                    self.pending.push_back(Event::default().event("transition").data(data.to_string()));
                }
                seq_now = Some(seq_now.map_or(t.seq, |s| s.max(t.seq)));
            }
            let body = json!({"server": render(&self.state, &self.ctx, self.v, &inst, Shape::Detail).await?});
            if let Some(t) = parse_time(&inst.updated_at)
                && t > self.cursor
            {
                self.cursor = t;
            }
            self.pending.push_back(Event::default().event("server").id(fmt_time(self.cursor)).data(body.to_string()));
            self.sent.insert(inst.id, (inst.updated_at, seq_now));
        }
        let horizon = fmt_time(self.cursor - chrono::Duration::from_std(OVERLAP).unwrap_or_default());
        self.sent.retain(|_, (at, _)| *at >= horizon);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use axum::body::{Body, BodyDataStream};
    use axum::http::{Method, Request, StatusCode};
    use chrono::{DateTime, Utc};
    use futures_util::StreamExt;
    use meridian_common::sse::{SseEvent, SseParser};
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::{Feed, PAGE};
    use crate::compute::microversion::MAX;
    use crate::store::fmt_time;
    use crate::store::instances::Instance;
    use crate::testing::TestApp;

    /// The admin's project and user ids.
    async fn admin_ids(app: &TestApp) -> (String, String) {
        let t = app.admin_token.clone();
        let r = app
            .call(Method::GET, "/identity/v3/auth/tokens", Some(&t), &[("x-subject-token", &t)], Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let id = |v: &Value| v["id"].as_str().expect("id").to_string();
        (id(&r.body["token"]["project"]), id(&r.body["token"]["user"]))
    }

    /// A server of the admin's project last changed at `at` (its creation is its one transition).
    async fn server_changed_at(app: &TestApp, at: DateTime<Utc>) -> String {
        let (project_id, user_id) = admin_ids(app).await;
        let ts = fmt_time(at);
        let id = crate::store::new_uuid();
        let inst = Instance {
            id: id.clone(),
            name: format!("old-{ts}"),
            hostname: "old".into(),
            description: None,
            project_id,
            user_id,
            flavor_id: "1".into(),
            flavor: json!({"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1}).to_string(),
            image_id: crate::store::new_uuid(),
            key_name: None,
            key_data: None,
            user_data: None,
            metadata: "{}".into(),
            tags: "[]".into(),
            availability_zone: None,
            config_drive: String::new(),
            reservation_id: "r-test".into(),
            launch_index: 0,
            host_id: None,
            alternates: "[]".into(),
            tried_hosts: "[]".into(),
            claimed: 0,
            requested_networks: "[]".into(),
            owned_ports: "[]".into(),
            vm_state: "error".into(),
            task_state: None,
            power_state: 0,
            fault: None,
            locked: 0,
            build_deadline: None,
            created_at: ts.clone(),
            updated_at: ts,
            launched_at: None,
            terminated_at: None,
            deleted: 0,
            access_ip_v4: None,
            access_ip_v6: None,
        };
        app.state.store.create_instance(&inst, None).await.expect("instance");
        id
    }

    /// An open event stream through the whole application, read with the shared SSE parser.
    struct Events {
        body: BodyDataStream,
        parser: SseParser,
        ready: VecDeque<SseEvent>,
    }

    impl Events {
        async fn open(app: &TestApp, query: &str) -> Events {
            let req = Request::builder()
                .uri(format!("/compute/v2.1/os-meridian-events{query}"))
                .header("x-auth-token", &app.admin_token)
                .body(Body::empty())
                .expect("request");
            let resp = crate::app(app.state.clone()).oneshot(req).await.expect("response");
            assert_eq!(resp.status(), StatusCode::OK);
            Events { body: resp.into_body().into_data_stream(), parser: SseParser::new(None), ready: VecDeque::new() }
        }

        /// The next event within `wait`: `Ok(None)` when the stream ended, `Err` on silence.
        async fn next(&mut self, wait: Duration) -> Result<Option<SseEvent>, ()> {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                if let Some(e) = self.ready.pop_front() {
                    return Ok(Some(e));
                }
                match tokio::time::timeout_at(deadline, self.body.next()).await {
                    Err(_) => return Err(()),
                    Ok(None) => return Ok(None),
                    Ok(Some(chunk)) => self.ready.extend(self.parser.feed(&chunk.expect("body"))),
                }
            }
        }

        async fn event(&mut self) -> SseEvent {
            self.next(Duration::from_secs(10)).await.expect("an event in time").expect("stream open")
        }
    }

    /// A cursor from before the retained history (`since=1970`) with history present, even for
    /// all projects: `ready` from now, then `reset`, and none of the history; new changes still
    /// arrive. A cursor far in the future is treated the same.
    #[tokio::test]
    async fn an_ancient_or_future_cursor_resets_instead_of_replaying_history() {
        let app = TestApp::new().await;
        let long_ago = Utc::now() - chrono::Duration::days(30);
        let mut old = Vec::new();
        for i in 0..5 {
            old.push(server_changed_at(&app, long_ago + chrono::Duration::seconds(i)).await);
        }
        for since in ["1970-01-01T00:00:00Z", "2999-01-01T00:00:00Z"] {
            let mut events = Events::open(&app, &format!("?all_tenants=1&since={since}")).await;
            let ready = events.event().await;
            assert_eq!(ready.event, "ready", "{ready:?}");
            let cursor: Value = serde_json::from_str(&ready.data).expect("json");
            let cursor = cursor["cursor"].as_str().and_then(crate::store::parse_time).expect("cursor");
            assert!((Utc::now() - cursor).num_seconds().abs() < 60, "starts from now, not {since}: {cursor}");
            let reset = events.event().await;
            assert_eq!(reset.event, "reset", "{reset:?}");
            assert!(reset.data.contains("reason"), "{reset:?}");
            // No backlog: none of the history (only, on the second round, the first round's
            // fresh server, which is within the overlap window of now).
            while let Ok(e) = events.next(Duration::from_millis(2500)).await {
                let e = e.expect("stream open");
                assert!(!old.iter().any(|id| e.data.contains(id)), "{since}: history was replayed: {e:?}");
            }
            let fresh = server_changed_at(&app, Utc::now()).await;
            let next = events.event().await;
            assert!(next.data.contains(&fresh), "the new change arrives: {next:?}");
        }
    }

    /// A backlog several pages long arrives whole, in `updated_at` order, each server once,
    /// while the stream never holds more than a page of events.
    #[tokio::test]
    async fn a_backlog_longer_than_a_page_arrives_complete_in_order_and_paged() {
        let app = TestApp::new().await;
        let n = usize::try_from(PAGE).expect("page") * 2 + 37;
        let from = Utc::now() - chrono::Duration::hours(1);
        let mut want = Vec::new();
        for i in 0..n {
            let at = from + chrono::Duration::milliseconds(i64::try_from(i).expect("i") * 3);
            want.push(server_changed_at(&app, at).await);
        }
        let ctx = crate::auth::validate(&app.state, &app.admin_token).await.expect("validate").expect("token");
        let project = Some(admin_ids(&app).await.0);
        let mut feed = Feed::new(app.state.clone(), ctx, MAX, project, Some(from - chrono::Duration::seconds(1)));
        let mut got = Vec::new();
        let mut transitions = 0;
        let mut most_buffered = 0;
        while got.len() < n {
            let e = tokio::time::timeout(Duration::from_secs(10), feed.next()).await.expect("in time").expect("open");
            most_buffered = most_buffered.max(feed.pending.len());
            // axum's Event is write-only; its Debug shows the bytes it will send.
            let body = format!("{e:?}");
            if body.contains("event: server") {
                let id = want.iter().find(|id| body.contains(id.as_str())).expect("a known server").clone();
                got.push(id);
            } else if body.contains("event: transition") {
                transitions += 1;
            }
        }
        assert_eq!(got, want, "every server once, oldest change first");
        assert_eq!(transitions, n, "each server's recorded transition, once");
        let bound = usize::try_from(PAGE).expect("page") * 2;
        assert!(most_buffered <= bound, "{most_buffered} events held at once; a page is at most {bound}");
    }

    /// Shutdown ends an open stream with a `reconnect` event, and an agent's long poll answers
    /// at once instead of after its wait.
    #[tokio::test]
    async fn shutdown_ends_streams_with_reconnect_and_long_polls_at_once() {
        let app = TestApp::new().await;
        let mut events = Events::open(&app, "").await;
        assert_eq!(events.event().await.event, "ready");

        let token = app.state.store.setting("agent_token").await.expect("setting").expect("agent token");
        let bearer = format!("Bearer {token}");
        let register =
            json!({"host": "c1", "inventory": meridian_common::agent::Inventory::default(), "agent_version": "t"});
        let r = app
            .call(
                Method::POST,
                "/agent/v1/register",
                None,
                &[("authorization", &bearer), ("content-type", "application/json")],
                Body::from(register.to_string()),
            )
            .await;
        assert!(r.status.is_success(), "{} {}", r.status, r.body);
        // The join token only registers; the host's own credential polls.
        let bearer = format!("Bearer {}", r.body["credential"].as_str().expect("credential"));
        let poll = {
            let app_state = app.state.clone();
            let bearer = bearer.clone();
            tokio::spawn(async move {
                let req = Request::builder()
                    .uri("/agent/v1/hosts/c1/work?wait=60")
                    .header("authorization", bearer)
                    .body(Body::empty())
                    .expect("request");
                crate::app(app_state).oneshot(req).await.expect("response")
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "the long poll waits for work");

        app.state.shutdown.cancel();
        let last = events.event().await;
        assert_eq!(last.event, "reconnect", "{last:?}");
        let data: Value = serde_json::from_str(&last.data).expect("json");
        assert_eq!(data["reason"], "server shutting down");
        assert!(data["retry_ms"].as_u64().is_some(), "{data}");
        assert_eq!(events.parser.retry_ms(), data["retry_ms"].as_u64());
        assert_eq!(events.next(Duration::from_secs(5)).await, Ok(None), "the stream ends after it");
        let answered =
            tokio::time::timeout(Duration::from_secs(5), poll).await.expect("answered at once").expect("task");
        assert_eq!(answered.status(), StatusCode::OK);
        let body = axum::body::to_bytes(answered.into_body(), usize::MAX).await.expect("body");
        assert_eq!(&body[..], b"[]");
    }
}
