//! Meridian's control plane: Keystone, Nova, Glance and Neutron compatible APIs in one process.
//!
//! [`app`] builds the whole HTTP application for a state; [`serve`] runs it with the background
//! tasks until shutdown. The binary (`main.rs`) only parses flags and calls these.

pub mod auth;
pub mod bootstrap;
pub mod compute;
pub mod config;
pub mod error;
pub mod extract;
#[cfg(test)]
mod fuzz_tests;
pub mod identity;
pub mod image;
pub mod limits;
pub mod network;
pub mod ops;
pub mod request_id;
pub mod retention;
pub mod state;
pub mod store;
pub mod supervisor;
#[cfg(test)]
pub mod testing;
pub mod volume;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::map_response;
use axum::routing::get;
use tower::Layer;
use tower::util::{MapRequest, MapRequestLayer};
use tower_http::LatencyUnit;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::error::{Service, render_faults};
use crate::state::AppState;

/// Every route, each service under its devstack-style prefix with its own fault format.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(root))
        .nest(
            "/identity",
            service(identity::router(), Service::Identity, &state)
                .layer(axum::middleware::from_fn_with_state(state.clone(), forget_tokens_after_identity_change)),
        )
        .nest("/compute", service(compute::router(state.clone()), Service::Compute, &state))
        .nest("/image", service(image::router(), Service::Image, &state))
        .nest("/network", service(network::router(), Service::Network, &state))
        .nest("/volume", service(volume::router(), Service::Volume, &state))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
                    let ids = req.extensions().get::<request_id::RequestId>();
                    tracing::info_span!(
                        "http",
                        method = %req.method(),
                        route = route.as_deref().unwrap_or("-"),
                        request_id = ids.map(|i| i.local.as_str()).unwrap_or("-"),
                        global_request_id = ids.and_then(|i| i.global.as_deref()),
                    )
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO).latency_unit(LatencyUnit::Micros)),
        )
        // Agents' heartbeats and long polls would drown the request log; their handlers log
        // what matters (registrations, failures) themselves.
        .nest("/agent/v1", service(compute::agents::router(), Service::Identity, &state))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::request_timeout))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::rate_limit))
        // Probes and metrics for the operator (unauthenticated, see ops.rs), and every request
        // above counted and timed by its matched route (429s and 504s included).
        .merge(ops::router())
        // Console websockets and noVNC's files: long-lived or static, outside the services.
        .merge(compute::consoles::router(&state))
        .layer(axum::middleware::from_fn(ops::track_requests))
        // Outermost, so the trace span, every fault and every response carry the id.
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

/// The router behind path normalisation ([`normalize_path`]).
pub fn app(state: AppState) -> MapRequest<Router, fn(Request) -> Request> {
    MapRequestLayer::new(normalize_path as fn(Request) -> Request).layer(router(state))
}

/// Marks a request whose path ended in `/` before normalisation dropped it, for a service
/// that answers such paths differently (Glance's exact routes: `GET /v2/images/` is a 404).
#[derive(Clone, Copy, Debug)]
pub struct TrailingSlash;

/// Repeated slashes are merged (`/identity/v3//auth/catalog`, which some SDKs send when they
/// join an empty path segment) and a trailing slash is dropped (`/identity/v3/` =
/// `/identity/v3`), as Apache and uWSGI do in front of OpenStack's services; a dropped trailing
/// slash is recorded as [`TrailingSlash`].
fn normalize_path(mut req: Request) -> Request {
    let uri = req.uri();
    let trailing = uri.path().len() > 1 && uri.path().ends_with('/');
    if !trailing && !uri.path().contains("//") {
        return req;
    }
    let mut path = String::with_capacity(uri.path().len());
    for c in uri.path().chars() {
        if !(c == '/' && path.ends_with('/')) {
            path.push(c);
        }
    }
    if path.len() > 1 && path.ends_with('/') {
        path.pop();
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(normalized) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = normalized;
        }
    }
    if trailing {
        req.extensions_mut().insert(TrailingSlash);
    }
    req
}

/// One service's routes with its fallback and fault format, answering a change only once it
/// is durable.
fn service(routes: Router<AppState>, svc: Service, state: &AppState) -> Router<AppState> {
    routes
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), durable_before_reply))
        .layer(map_response(move |r| render_faults(svc, r)))
}

/// Whether a request may change something (anything but a read).
fn may_change(req: &Request) -> bool {
    use axum::http::Method;
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A request that may have changed something is answered once its changes are on disk (the
/// store's group commit: one flush serves every request finishing at the same time).
async fn durable_before_reply(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let changes = may_change(&req);
    let response = next.run(req).await;
    if changes && let Err(e) = state.store.sync().await {
        return error::ApiError::from(e).into_response();
    }
    response
}

/// Any change through the Identity API (a revoked token, a role taken away, a user or project
/// disabled) empties the token cache once it is committed, so it applies to the next request.
/// Issuing a token changes nothing an existing token depends on.
async fn forget_tokens_after_identity_change(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let issuing = req.method() == axum::http::Method::POST && req.uri().path().ends_with("/auth/tokens");
    let changes = may_change(&req) && !issuing;
    let response = next.run(req).await;
    if changes {
        state.tokens.invalidate();
    }
    response
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("The resource could not be found.")
}

async fn root() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "name": "meridian",
        "version": env!("CARGO_PKG_VERSION"),
        "services": {"identity": "/identity", "compute": "/compute", "image": "/image", "network": "/network", "volume": "/volume"},
    }))
}

/// How long in-flight requests may take to finish once shutdown begins; then [`serve`] returns
/// anyway. Event streams and agents' long polls end at once on [`AppState::shutdown`], so this
/// only bounds a request that misbehaves (the 10 s a supervisor such as systemd waits before
/// SIGKILL, less a margin).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Serves until `shutdown` resolves (or [`AppState::shutdown`] is cancelled), then lets
/// in-flight requests finish, for at most [`SHUTDOWN_GRACE`], and closes the store.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let retention = supervisor::supervise("retention", state.clone(), retention::retention_loop);
    let conductor = supervisor::supervise("conductor", state.clone(), conductor_loop);
    let liveness = tokio::spawn(compute::conductor::watch_liveness(state.clone()));
    // With the peer's address, which the per-address rate limits key on.
    let service =
        axum::ServiceExt::<Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(app(state.clone()));
    // The caller's signal becomes the shared token that streams and long polls select on.
    let token = state.shutdown.clone();
    let signal = async move {
        tokio::select! {
            () = shutdown => {}
            () = token.cancelled() => {}
        }
        token.cancel();
    };
    let serving = std::future::IntoFuture::into_future(axum::serve(listener, service).with_graceful_shutdown(signal));
    let draining = state.shutdown.clone();
    let result = tokio::select! {
        r = serving => r,
        () = async move { draining.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still open after the shutdown grace period; stopping anyway");
            Ok(())
        }
    };
    retention.abort();
    conductor.abort();
    liveness.abort();
    state.store.close().await;
    Ok(result?)
}

/// The conductor's periodic pass (timeouts, down hosts, stranded builds), every second.
async fn conductor_loop(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = compute::conductor::tick(&state).await {
            tracing::warn!(error = %e, "conductor pass failed");
        }
        if let Err(e) = volume::work::tick(&state).await {
            tracing::warn!(error = %e, "volume deadline pass failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::Value;

    use crate::testing::TestApp;

    /// The Rust openstack SDK sends `/identity/v3//auth/catalog` when it joins an empty segment;
    /// Apache and uWSGI merge the slashes in front of OpenStack's services, so do we.
    #[tokio::test]
    async fn repeated_and_trailing_slashes_are_normalized() {
        let app = TestApp::new().await;
        let t = app.admin_token.clone();
        let r = app.json(Method::GET, "/identity/v3//auth/catalog", &t, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body["catalog"].is_array());
        let r = app.json(Method::GET, "//compute//v2.1///flavors/?minRam=0", &t, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert!(r.body["flavors"].as_array().is_some_and(|f| !f.is_empty()));
        // Trailing slashes go too, however many; the root stays the root.
        for path in ["/identity/v3/", "/compute/v2.1/flavors//", "/"] {
            let r = app.json(Method::GET, path, &t, Value::Null).await;
            assert!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
        }
    }
}
