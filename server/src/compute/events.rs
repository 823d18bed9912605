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

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;

use super::microversion::ApiVersion;
use super::servers::{Shape, render};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;
use crate::store::instances::InstanceFilter;
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
    let cursor = match resume {
        Some(c) => parse_time(&c).ok_or_else(|| ApiError::bad_request(format!("Invalid event cursor {c}.")))?,
        None => chrono::Utc::now(),
    };
    let feed = Feed {
        rx: state.store.watch_instances(),
        state,
        ctx,
        v,
        project,
        cursor,
        start: fmt_time(cursor),
        sent: HashMap::new(),
        pending: VecDeque::from([Event::default()
            .event("ready")
            .data(json!({"cursor": fmt_time(cursor)}).to_string())]),
        checked_at: Instant::now(),
        _client: crate::ops::StreamClient::open(),
    };
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(event), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keepalive")))
}

struct Feed {
    state: AppState,
    ctx: Ctx,
    v: ApiVersion,
    project: Option<String>,
    /// The newest `updated_at` delivered so far.
    cursor: chrono::DateTime<chrono::Utc>,
    /// Where this stream began (connect time, or the client's resume cursor): transitions up to
    /// it were delivered on an earlier connection, or predate the client's interest.
    start: String,
    /// Instance id → the `updated_at` and transition `seq` last delivered for it, within the
    /// overlap window.
    sent: HashMap<String, (String, i64)>,
    pending: VecDeque<Event>,
    rx: tokio::sync::watch::Receiver<u64>,
    checked_at: Instant,
    /// Counted in `meridian_event_stream_clients` while the stream lives.
    _client: crate::ops::StreamClient,
}

impl Feed {
    /// The next event, or `None` to end the stream (token no longer valid, store gone).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.checked_at.elapsed() >= REAUTH {
                self.checked_at = Instant::now();
                match crate::auth::validate(&self.state, &self.ctx.token.id).await {
                    Ok(Some(_)) => {}
                    _ => return None,
                }
            }
            // A local change wakes at once; otherwise poll for other replicas' changes.
            if let Ok(Ok(())) = tokio::time::timeout(POLL, self.rx.changed()).await {
                tokio::time::sleep(SETTLE).await;
                self.rx.borrow_and_update();
            }
            if let Err(e) = self.collect().await {
                tracing::warn!(error = %e.message, "event stream query failed");
            }
        }
    }

    async fn collect(&mut self) -> ApiResult<()> {
        let since = self.cursor - chrono::Duration::from_std(OVERLAP).unwrap_or_default();
        let filter = InstanceFilter {
            project_id: self.project.clone(),
            host_id: None,
            changes_since: Some(fmt_time(since)),
            include_deleted: true,
        };
        let mut rows = self.state.store.list_instances(&filter).await?;
        rows.sort_by(|a, b| a.updated_at.cmp(&b.updated_at).then_with(|| a.id.cmp(&b.id)));
        for inst in rows {
            if self.sent.get(&inst.id).is_some_and(|(at, _)| *at == inst.updated_at) {
                continue;
            }
            // Every transition since the last one delivered, so a client sees each phase even
            // when several happened between two reads.
            let last_seq = self.sent.get(&inst.id).map(|(_, seq)| *seq);
            let since_at = fmt_time(since);
            let mut seq_now = last_seq.unwrap_or(0);
            for t in self.state.store.transitions(&inst.id).await? {
                let new = match last_seq {
                    Some(seq) => t.seq > seq,
                    None => t.at >= since_at && t.at > self.start,
                };
                if new {
                    let data = json!({
                        "server_id": t.instance_id, "seq": t.seq, "vm_state": t.vm_state,
                        "task_state": t.task_state, "power_state": t.power_state, "at": t.at,
                    });
                    self.pending.push_back(Event::default().event("transition").data(data.to_string()));
                }
                seq_now = seq_now.max(t.seq);
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
