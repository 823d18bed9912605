//! Operator endpoints: `/healthz` (alive: 200 while serving), `/readyz` (the database answers
//! and every migration is applied: 200, else 503) and `/metrics` (Prometheus text format).
//!
//! They are unauthenticated, as probes and scrapers expect: bind the server to the operator
//! network or filter these paths at the proxy. Nothing here names a tenant's resources: labels
//! are routes (the matched path template, never the raw path), methods, status codes, build
//! phases and work states, so their number is bounded whatever the cloud holds.
//!
//! Metrics go through the `metrics` facade to one process-wide Prometheus recorder, installed
//! on first use ([`install`]); everything recorded before that is dropped, so [`router`]
//! installs it when the application is built.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::AppState;

/// How long a probe or scrape waits for the database before it answers without it.
const DB_WAIT: Duration = Duration::from_secs(2);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on the first call. `None` when another
/// recorder was installed first (then `/metrics` answers 503).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(|| meridian_common::metrics::install_recorder(describe)).as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("meridian_http_requests_total", "HTTP requests answered, by method, matched route and status.");
    describe_histogram!(
        "meridian_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to the response headers, by method and matched route."
    );
    describe_histogram!(
        "meridian_store_sync_duration_seconds",
        metrics::Unit::Seconds,
        "Store::sync: the wait for the SQLite group commit's flush."
    );
    describe_histogram!(
        "meridian_build_phase_duration_seconds",
        metrics::Unit::Seconds,
        "Time a completed build spent in each phase (scheduling, networking, block_device_mapping, spawning)."
    );
    describe_counter!("meridian_builds_completed_total", "Builds that reached ACTIVE.");
    describe_gauge!("meridian_builds_in_flight", "Instances building, in the whole cloud.");
    describe_gauge!("meridian_work_items", "Open work items by state (pending, delivered), in the whole cloud.");
    describe_gauge!("meridian_agents", "Compute hosts by state (up, down).");
    describe_gauge!("meridian_event_stream_clients", "os-meridian-events streams open on this replica.");
    describe_counter!("meridian_loop_restarts_total", "Supervised background loops that died and were restarted.");
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router() -> Router<AppState> {
    install();
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(render))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(DB_WAIT, state.store.ready()).await {
        Ok(Ok(true)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Ok(false)) => (StatusCode::SERVICE_UNAVAILABLE, "database migrations pending\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database not answering\n").into_response(),
    }
}

async fn render(State(state): State<AppState>) -> Response {
    let Some(handle) = install() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response();
    };
    // The gauges read from the database describe the whole cloud (the same on every replica);
    // a scrape while the database is away still answers, without refreshing them.
    match tokio::time::timeout(DB_WAIT, cloud_gauges(&state)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the cloud's gauges"),
        Err(_) => tracing::warn!("metrics: the database did not answer in time"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

async fn cloud_gauges(state: &AppState) -> crate::store::StoreResult<()> {
    let (building, pending, delivered) = state.store.open_work_counts().await?;
    metrics::gauge!("meridian_builds_in_flight").set(building as f64);
    metrics::gauge!("meridian_work_items", "state" => "pending").set(pending as f64);
    metrics::gauge!("meridian_work_items", "state" => "delivered").set(delivered as f64);
    let hosts = state.store.list_hosts().await?;
    let up = hosts.iter().filter(|h| crate::compute::conductor::host_up(state, h)).count();
    metrics::gauge!("meridian_agents", "state" => "up").set(up as f64);
    metrics::gauge!("meridian_agents", "state" => "down").set((hosts.len() - up) as f64);
    Ok(())
}

/// Counts every request by method, matched route and status, and times it to its response
/// headers (a download or an event stream is timed to its start).
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>() {
        Some(m) => m.as_str().to_string(),
        None => "unmatched".to_string(),
    };
    // Only the standard methods by name: anything else is one label value, not one per spelling.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("meridian_http_request_duration_seconds", "method" => method, "route" => route.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("meridian_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}

/// Records how long a build that just completed spent in each phase, from its recorded
/// transitions (the `instance_transitions` timeline).
pub async fn record_build_phases(state: &AppState, instance_id: &str) {
    let transitions = match state.store.transitions(instance_id).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the build's transitions");
            return;
        }
    };
    metrics::counter!("meridian_builds_completed_total").increment(1);
    // Each stay in a phase lasts until the next transition (a rescheduled build passes through
    // the phases again; each pass counts).
    for pair in transitions.windows(2) {
        let (from, to) = (&pair[0], &pair[1]);
        let phase: &'static str = match from.task_state.as_deref() {
            _ if from.vm_state != "building" => continue,
            Some("scheduling") => "scheduling",
            Some("networking") => "networking",
            Some("block_device_mapping") => "block_device_mapping",
            Some("spawning") => "spawning",
            _ => continue,
        };
        let (Some(a), Some(b)) = (crate::store::parse_time(&from.at), crate::store::parse_time(&to.at)) else {
            continue;
        };
        let secs = (b - a).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
        metrics::histogram!("meridian_build_phase_duration_seconds", "phase" => phase).record(secs);
    }
}

/// Counts an open event stream for as long as it lives.
pub struct StreamClient(());

impl StreamClient {
    pub fn open() -> StreamClient {
        metrics::gauge!("meridian_event_stream_clients").increment(1.0);
        StreamClient(())
    }
}

impl Drop for StreamClient {
    fn drop(&mut self) {
        metrics::gauge!("meridian_event_stream_clients").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Method, StatusCode};
    use serde_json::{Value, json};

    use crate::testing::{Reply, TestApp};

    async fn get(app: &TestApp, path: &str) -> Reply {
        app.call(Method::GET, path, None, &[], Body::empty()).await
    }

    /// `/metrics` parsed by a Prometheus text parser.
    async fn scrape(app: &TestApp) -> prometheus_parse::Scrape {
        let r = get(app, "/metrics").await;
        assert_eq!(r.status, StatusCode::OK);
        let text = String::from_utf8(r.bytes).expect("utf-8");
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
    }

    fn samples<'a>(s: &'a prometheus_parse::Scrape, name: &str) -> Vec<&'a prometheus_parse::Sample> {
        s.samples.iter().filter(|x| x.metric == name).collect()
    }

    #[tokio::test]
    async fn probes_answer_and_readiness_follows_the_database() {
        let app = TestApp::new().await;
        let r = get(&app, "/healthz").await;
        assert_eq!(r.status, StatusCode::OK);
        let r = get(&app, "/readyz").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", String::from_utf8_lossy(&r.bytes));
        app.state.store.close().await;
        let r = get(&app, "/readyz").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK, "alive while it serves");
        // Without the database the scrape still answers, from what the process recorded.
        assert_eq!(get(&app, "/metrics").await.status, StatusCode::OK);
    }

    /// An agent's side of a build, through the agent API: register, take the work, report
    /// the phases and the outcome.
    /// An agent API call with `bearer` (the join token when `None`: it only registers).
    async fn agent_call(app: &TestApp, bearer: Option<&str>, method: Method, path: &str, body: Value) -> Reply {
        let join = app.state.store.setting("agent_token").await.expect("read").expect("join token");
        let auth = format!("Bearer {}", bearer.unwrap_or(&join));
        let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
        let b = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
        app.call(method, &format!("/agent/v1{path}"), None, &h, b).await
    }

    #[tokio::test]
    async fn metrics_cover_requests_builds_work_and_agents() {
        let app = TestApp::new().await;
        let t = app.admin_token.clone();
        let inventory = json!({
            "vcpus": 8, "memory_mb": 16384, "disk_gb": 100, "reserved_vcpus": 0, "reserved_memory_mb": 0,
            "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1, "cpu_arch": "x86_64",
            "libvirt_uri": "test:///default", "host_ip": "127.0.0.1", "supports_networks": true,
            "availability_zone": "nova",
        });
        let r = agent_call(
            &app,
            None,
            Method::POST,
            "/register",
            json!({"host": "metrics-host", "inventory": inventory, "agent_version": "t"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let credential = r.body["credential"].as_str().expect("host credential").to_string();
        let img = app
            .json(
                Method::POST,
                "/image/v2/images",
                &t,
                json!({"name": "img", "disk_format": "raw", "container_format": "bare", "visibility": "public"}),
            )
            .await;
        let image = img.body["id"].as_str().expect("image id").to_string();
        let h = [("content-type", "application/octet-stream")];
        let up = app
            .call(Method::PUT, &format!("/image/v2/images/{image}/file"), Some(&t), &h, Body::from(vec![7u8; 4096]))
            .await;
        assert_eq!(up.status, StatusCode::NO_CONTENT);
        let boot =
            json!({"server": {"name": "tenant-secret-name", "imageRef": image, "flavorRef": "1", "networks": "none"}});
        let r = app
            .call(
                Method::POST,
                "/compute/v2.1/servers",
                Some(&t),
                &[("content-type", "application/json"), ("openstack-api-version", "compute 2.37")],
                Body::from(boot.to_string()),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let server = r.body["server"]["id"].as_str().expect("server id").to_string();
        // Mid-build: one build in flight, its work item pending.
        let mut items = Value::Null;
        for _ in 0..100 {
            let mid = scrape(&app).await;
            if samples(&mid, "meridian_work_items").iter().any(|s| {
                s.labels.get("state") == Some("pending")
                    && matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 1.0)
            }) {
                assert!(
                    samples(&mid, "meridian_builds_in_flight")
                        .iter()
                        .any(|s| matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 1.0))
                );
                items =
                    agent_call(&app, Some(&credential), Method::GET, "/hosts/metrics-host/work?wait=1", Value::Null)
                        .await
                        .body;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let work = items.as_array().and_then(|a| a.first()).expect("the build's work item");
        let work_id = work["id"].as_str().expect("work id");
        let events = json!({"events": [
            {"work_id": work_id, "event": {"type": "progress", "task_state": "block_device_mapping"}},
            {"work_id": work_id, "event": {"type": "progress", "task_state": "spawning"}},
            {"work_id": work_id, "event": {"type": "done", "power_state": "running", "console": null}},
        ]});
        let r = agent_call(&app, Some(&credential), Method::POST, "/events", events).await;
        assert_eq!(r.body["taken"], 3, "{}", r.body);
        let r = app.json(Method::GET, &format!("/compute/v2.1/servers/{server}"), &t, Value::Null).await;
        assert_eq!(r.body["server"]["status"], "ACTIVE", "{}", r.body);

        let s = scrape(&app).await;
        let text = String::from_utf8(get(&app, "/metrics").await.bytes).expect("utf-8");
        assert!(!text.contains(&server) && !text.contains("tenant-secret-name"), "no tenant data in labels");
        // Requests by matched route template and status.
        let boots = samples(&s, "meridian_http_requests_total");
        assert!(
            boots.iter().any(|x| x.labels.get("route") == Some("/compute/v2.1/servers")
                && x.labels.get("method") == Some("POST")
                && x.labels.get("status") == Some("202")),
            "{boots:?}"
        );
        // Templates with parameters: prometheus-parse 0.2 skips lines with `}` inside a label
        // value (valid in the format; Prometheus reads them), so these are checked on the text.
        assert!(text.contains(r#"route="/compute/v2.1/servers/{id}""#), "{text}");
        assert!(text.contains(r#"route="/agent/v1/hosts/{host}/work""#), "{text}");
        let latency = samples(&s, "meridian_http_request_duration_seconds");
        assert!(latency.iter().any(|x| matches!(&x.value, prometheus_parse::Value::Histogram(b) if !b.is_empty())));
        // Every phase of the build was timed.
        let phases: Vec<&str> =
            samples(&s, "meridian_build_phase_duration_seconds").iter().filter_map(|x| x.labels.get("phase")).collect();
        for phase in ["scheduling", "networking", "block_device_mapping", "spawning"] {
            assert!(phases.contains(&phase), "{phase} in {phases:?}");
        }
        let gauge = |name: &str, label: Option<(&str, &str)>| -> f64 {
            samples(&s, name)
                .iter()
                .find(|x| label.is_none_or(|(k, v)| x.labels.get(k) == Some(v)))
                .and_then(|x| match x.value {
                    prometheus_parse::Value::Gauge(v) => Some(v),
                    _ => None,
                })
                .unwrap_or(f64::NAN)
        };
        assert_eq!(gauge("meridian_builds_in_flight", None), 0.0);
        assert_eq!(gauge("meridian_work_items", Some(("state", "pending"))), 0.0);
        assert_eq!(gauge("meridian_work_items", Some(("state", "delivered"))), 0.0);
        assert_eq!(gauge("meridian_agents", Some(("state", "up"))), 1.0);
        assert!(!samples(&s, "meridian_store_sync_duration_seconds").is_empty(), "group commit timed");
        // An open event stream is counted while it lives (the response body is the stream).
        let stream_gauge = |s: &prometheus_parse::Scrape| {
            samples(s, "meridian_event_stream_clients").iter().find_map(|x| match x.value {
                prometheus_parse::Value::Gauge(v) => Some(v),
                _ => None,
            })
        };
        let before = stream_gauge(&s).unwrap_or(0.0);
        let req = axum::http::Request::get("/compute/v2.1/os-meridian-events")
            .header("x-auth-token", t.as_str())
            .body(Body::empty())
            .expect("request");
        let stream = tower::ServiceExt::oneshot(crate::app(app.state.clone()), req).await.expect("response");
        assert_eq!(stream.status(), StatusCode::OK);
        assert_eq!(stream_gauge(&scrape(&app).await), Some(before + 1.0));
        drop(stream);
        assert_eq!(stream_gauge(&scrape(&app).await), Some(before));
    }
}
