//! Abuse limits (issue 13): a bounded pool for password hashing, per-address rate limits on the
//! endpoints that check a password or secret without a token, and request timeouts.
//!
//! Account lockout (Keystone's `[security_compliance]`) is in `identity::lockout`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::auth::HashMemory;
use crate::config::LimitSettings;
use crate::error::{ApiError, ApiResult, Service, fault_response};
use crate::state::AppState;

/// The limits' shared state (in [`AppState::limits`]).
pub struct Limits {
    pub hashing: HashPool,
    auth_rate: Option<AuthRate>,
    timeout: Option<Duration>,
}

impl Limits {
    pub fn new(cfg: &LimitSettings) -> Limits {
        Limits {
            hashing: HashPool::new(cfg.password_hash_concurrency, cfg.password_hash_queue),
            auth_rate: AuthRate::new(cfg.auth_rate_burst, cfg.auth_rate_per_second),
            timeout: (cfg.request_timeout_secs > 0).then(|| Duration::from_secs(cfg.request_timeout_secs)),
        }
    }
}

/// Password hashing and verification: argon2 costs ~19 MiB and tens of milliseconds of a CPU
/// per call, so at most `concurrency` run at once (on the blocking pool) and at most `queue`
/// callers wait for them; anyone beyond gets 503 with `Retry-After` at once, instead of memory
/// and latency growing with the number of callers.
pub struct HashPool {
    /// One permit per hash that may run.
    running: Arc<Semaphore>,
    /// One permit per caller that may be running or waiting (`concurrency + queue`).
    admitted: Arc<Semaphore>,
}

impl HashPool {
    pub fn new(concurrency: usize, queue: usize) -> HashPool {
        let concurrency = concurrency.max(1);
        HashPool {
            running: Arc::new(Semaphore::new(concurrency)),
            admitted: Arc::new(Semaphore::new(concurrency.saturating_add(queue))),
        }
    }

    /// Runs `f` once a slot is free; 503 when the pool and its queue are full.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut HashMemory) -> T + Send + 'static) -> ApiResult<T> {
        let admitted = self.admitted.clone().try_acquire_owned().map_err(|_| busy())?;
        let running = self.running.clone().acquire_owned().await.map_err(ApiError::internal)?;
        // The permits go with the work: a caller that gives up (timeout, closed connection)
        // does not free a slot while its hash still runs. A running slot holds one buffer of
        // the process's spares, so there are never more buffers than slots (plus the few hashes
        // made outside the pool, which run one at a time).
        tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            crate::auth::with_hash_memory(f)
        })
        .await
        .map_err(ApiError::internal)
    }

    /// [`crate::auth::hash_password`] through the pool.
    pub async fn hash(&self, password: String) -> ApiResult<String> {
        self.run(move |mem| crate::auth::hash_password_in(&password, mem)).await?.map_err(ApiError::internal)
    }

    /// [`crate::auth::verify_password`] through the pool.
    pub async fn verify(&self, password: String, hash: String) -> ApiResult<bool> {
        self.run(move |mem| crate::auth::verify_password_in(&password, &hash, mem)).await
    }

    /// Takes every running slot (tests: a pool whose hashes never finish).
    #[cfg(test)]
    pub async fn occupy(&self) -> tokio::sync::OwnedSemaphorePermit {
        let n = u32::try_from(self.running.available_permits()).unwrap_or(u32::MAX);
        self.running.clone().acquire_many_owned(n).await.expect("semaphore open")
    }
}

fn busy() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "Too many password checks are in progress; try again shortly.",
    )
    .retry_after(1)
}

/// Per client address budgets (GCRA: `burst` at once, then `per_second`).
struct AuthRate {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, AuthClock, NoOpMiddleware<Nanos>>,
    clock: AuthClock,
    /// When addresses with a full budget were last dropped from the map.
    last_sweep: std::sync::Mutex<std::time::Instant>,
}

/// More addresses than this in the map start a sweep (at most one a second).
const SWEEP_ABOVE: usize = 10_000;

impl AuthRate {
    fn new(burst: u32, per_second: u32) -> Option<AuthRate> {
        let burst = std::num::NonZeroU32::new(burst)?;
        let per_second = std::num::NonZeroU32::new(per_second)?;
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let clock = AuthClock::default();
        Some(AuthRate {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()),
            clock,
            last_sweep: std::sync::Mutex::new(std::time::Instant::now()),
        })
    }

    /// Ok, or how many seconds to wait.
    fn check(&self, addr: IpAddr) -> Result<(), u64> {
        // Addresses whose budget is full again carry no information: drop them, so a scan
        // from many addresses does not grow the map for good (at most once a second, so a
        // scan cannot make every request pay for a sweep either).
        if self.limiter.len() > SWEEP_ABOVE {
            let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() >= Duration::from_secs(1) {
                self.limiter.retain_recent();
                self.limiter.shrink_to_fit();
                *last = std::time::Instant::now();
            }
        }
        self.limiter.check_key(&client_key(addr)).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The rate limiter's time: monotonic, except that a test may stop it, after which it moves only
/// when told (so whether a budget refills mid-test does not depend on how loaded the machine is).
#[derive(Clone, Debug)]
struct AuthClock {
    start: std::time::Instant,
    /// Nanoseconds after `start` the clock stands at while stopped; `u64::MAX`: running.
    stopped_at: Arc<AtomicU64>,
}

impl Default for AuthClock {
    fn default() -> Self {
        AuthClock { start: std::time::Instant::now(), stopped_at: Arc::new(AtomicU64::new(u64::MAX)) }
    }
}

impl Clock for AuthClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        match self.stopped_at.load(Ordering::Acquire) {
            u64::MAX => Nanos::from(self.start.elapsed()),
            at => Nanos::from(at),
        }
    }
}

#[cfg(test)]
impl Limits {
    /// Stops the rate limiter's clock where it is (no budget refills until it is advanced).
    pub(crate) fn stop_auth_clock(&self) {
        if let Some(r) = &self.auth_rate {
            let now = r.clock.now().as_u64();
            r.clock.stopped_at.store(now, Ordering::Release);
        }
    }

    /// Moves the stopped clock on by `by`.
    pub(crate) fn advance_auth_clock(&self, by: Duration) {
        if let Some(r) = &self.auth_rate {
            let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX - 1);
            let _ = r.clock.stopped_at.fetch_update(Ordering::AcqRel, Ordering::Acquire, |at| {
                (at != u64::MAX).then(|| at.saturating_add(by).min(u64::MAX - 1))
            });
        }
    }
}

/// The budget an address spends: its own for IPv4, its /64 for IPv6 (what one host or site
/// usually holds, so one client cannot take a fresh budget per address).
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

/// Whether a request checks a password or secret without a token: issuing a token, the
/// self-service password change, and agent registration (by path: the credential it takes may
/// change, the endpoint does not).
fn checks_secret(req: &Request) -> bool {
    if req.method() != Method::POST {
        return false;
    }
    let path = req.uri().path();
    path == "/identity/v3/auth/tokens"
        || path == "/agent/v1/register"
        || (path.starts_with("/identity/v3/users/") && path.ends_with("/password"))
}

/// Rate limit per client address on [`checks_secret`] requests: 429 in Keystone's format with
/// `Retry-After`. Requests without a peer address (served without `ConnectInfo`, as handler
/// tests are) share one budget.
pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(rate) = &state.limits.auth_rate
        && checks_secret(&req)
    {
        let addr = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        if let Err(secs) = rate.check(addr) {
            tracing::debug!(%addr, path = req.uri().path(), "rate limited");
            let err = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!("Too many requests from {addr}; retry after {secs} s."),
            )
            .retry_after(secs);
            return fault_response(Service::Identity, &err);
        }
    }
    next.run(req).await
}

/// Requests that may rightly take longer than any timeout: event streams, the agents' work
/// long poll (it has its own deadline) and image data in either direction.
fn timeout_exempt(path: &str) -> bool {
    let image_file = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("/file"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    };
    path.ends_with("/os-meridian-events")
        || image_file("/image/v2/images/")
        || image_file("/agent/v1/images/")
        || path
            .strip_prefix("/agent/v1/hosts/")
            .and_then(|rest| rest.strip_suffix("/work"))
            .is_some_and(|host| !host.is_empty() && !host.contains('/'))
}

/// The service whose fault format a path's answers use.
fn service_of(path: &str) -> Service {
    match path.split('/').nth(1) {
        Some("compute") => Service::Compute,
        Some("image") => Service::Image,
        Some("network") => Service::Network,
        _ => Service::Identity,
    }
}

/// Answers a request that takes longer than `request_timeout_secs` with 504 in its service's
/// fault format (what Apache's proxy in front of OpenStack's uWSGI services answers when the
/// backend is too slow), dropping its work. tower-http's `TimeoutLayer` was not used: it cannot
/// exempt routes, and its bare 408 would need rendering anyway.
pub async fn request_timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(limit) = state.limits.timeout else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_string();
    if timeout_exempt(&path) {
        return next.run(req).await;
    }
    let method = req.method().clone();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%method, %path, secs = limit.as_secs(), "request timed out");
            let err = ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                format!("The request took longer than {} s.", limit.as_secs()),
            );
            fault_response(service_of(&path), &err)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::{Body, Bytes};
    use axum::http::StatusCode;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;
    use crate::testing::{Reply, TestApp};

    fn password_auth(user: &str, password: &str) -> String {
        json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}}}})
        .to_string()
    }

    async fn login(app: &TestApp, user: &str, password: &str) -> Reply {
        let body = Body::from(password_auth(user, password));
        app.call(Method::POST, "/identity/v3/auth/tokens", None, &[("content-type", "application/json")], body).await
    }

    /// A request as `serve` hands it over: with the peer's address in `ConnectInfo`.
    async fn login_from(app: &TestApp, peer: &str) -> StatusCode {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/identity/v3/auth/tokens")
            .header("content-type", "application/json")
            .body(Body::from(password_auth("nobody", "x")))
            .expect("request");
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer.parse().expect("address")));
        crate::app(app.state.clone()).oneshot(req).await.expect("response").status()
    }

    fn retry_after(r: &Reply) -> u64 {
        r.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {:?}", r.headers))
    }

    #[tokio::test]
    async fn hashing_memory_is_one_buffer_per_slot_however_many_logins() {
        let pool = HashPool::new(2, 64);
        let hash = crate::auth::hash_password("pw".into()).await.expect("hash");
        let checks: Vec<_> = (0..12).map(|_| pool.verify("pw".into(), hash.clone())).collect();
        for ok in futures_util::future::join_all(checks).await {
            assert!(ok.expect("admitted"));
        }
        // Twelve checks, two slots: two 19 MiB buffers were made (the first being the one the
        // hash above left) and are kept for the next.
        assert_eq!(crate::auth::spare_memory(), vec![argon2::Params::default().block_count(); 2]);
    }

    #[tokio::test]
    async fn password_checks_beyond_the_pool_and_its_queue_get_503_with_retry_after() {
        let app = Arc::new(
            TestApp::with_config(|c| {
                c.limits.password_hash_concurrency = 1;
                c.limits.password_hash_queue = 2;
            })
            .await,
        );
        // The one running slot is taken, so every login waits in the queue or is refused.
        let slot = app.state.limits.hashing.occupy().await;
        let logins: Vec<_> = (0..6)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move { login(&app, "admin", "adminpw").await })
            })
            .collect();
        // 1 slot + 2 queued are admitted; the other 3 are refused at once.
        while app.state.limits.hashing.admitted.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut refused = 0;
        while refused < 3 {
            refused = logins.iter().filter(|t| t.is_finished()).count();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(slot);
        let mut statuses = Vec::new();
        for t in logins {
            let r = t.await.expect("login task");
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(retry_after(&r), 1);
                assert_eq!(r.body["error"]["code"], 503, "{}", r.body);
                assert_eq!(r.body["error"]["title"], "Service Unavailable", "{}", r.body);
            }
            statuses.push(r.status.as_u16());
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 201, 201, 503, 503, 503]);
        // Hashing a new password goes through the same pool.
        let slot = app.state.limits.hashing.occupy().await;
        let _queued: Vec<_> = (0..3)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move { login(&app, "admin", "adminpw").await })
            })
            .collect();
        while app.state.limits.hashing.admitted.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let admin = app.admin_token.clone();
        let r =
            app.json(Method::POST, "/identity/v3/users", &admin, json!({"user": {"name": "u", "password": "p"}})).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        drop(slot);
    }

    #[tokio::test]
    async fn login_endpoints_are_rate_limited_per_client_address() {
        let app = TestApp::with_config(|c| {
            c.limits.auth_rate_burst = 3;
            c.limits.auth_rate_per_second = 1;
        })
        .await;
        // The budgets refill only when the test moves the limiter's clock on, however slowly
        // a loaded machine runs it.
        app.state.limits.stop_auth_clock();
        for _ in 0..3 {
            assert_eq!(login_from(&app, "192.0.2.1:5000").await, StatusCode::UNAUTHORIZED);
        }
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/identity/v3/auth/tokens")
            .header("content-type", "application/json")
            .body(Body::from(password_auth("admin", "adminpw")))
            .expect("request");
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>("192.0.2.1:5001".parse().expect("address")));
        let resp = crate::app(app.state.clone()).oneshot(req).await.expect("response");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = resp.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
        assert_eq!(wait, 1, "one token back a second from now");
        let body: Value = serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body"))
            .expect("json");
        assert_eq!(body["error"]["code"], 429, "{body}");
        assert_eq!(body["error"]["title"], "Too Many Requests", "{body}");
        // A second later exactly one token is back.
        app.state.limits.advance_auth_clock(Duration::from_secs(1));
        assert_eq!(login_from(&app, "192.0.2.1:5000").await, StatusCode::UNAUTHORIZED);
        assert_eq!(login_from(&app, "192.0.2.1:5000").await, StatusCode::TOO_MANY_REQUESTS);
        // Another address has its own budget.
        assert_eq!(login_from(&app, "192.0.2.2:5000").await, StatusCode::UNAUTHORIZED);
        // Requests without an address share one budget (which TestApp's own login used).
        let mut r = login(&app, "nobody", "x").await;
        for _ in 0..5 {
            if r.status == StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            r = login(&app, "nobody", "x").await;
        }
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
        assert!(retry_after(&r) >= 1);
        // Agent registration and the password change count too; other requests do not.
        let r = app
            .call(Method::POST, "/agent/v1/register", None, &[("content-type", "application/json")], Body::from("{}"))
            .await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
        let r = app.call(Method::POST, "/identity/v3/users/x/password", None, &[], Body::from("{}")).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
        let r = app.json(Method::GET, "/identity/v3/auth/tokens", &app.admin_token, Value::Null).await;
        assert_ne!(r.status, StatusCode::TOO_MANY_REQUESTS);
        let r = app.json(Method::GET, "/compute/v2.1/flavors", &app.admin_token, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK);
    }

    /// Over a real socket, `serve` gives the limiter each peer's address: one loopback address
    /// spending its budget leaves another's untouched.
    #[tokio::test]
    async fn serve_keys_the_rate_limit_on_the_peer_address() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let app = TestApp::with_config(|c| {
            c.limits.auth_rate_burst = 2;
            c.limits.auth_rate_per_second = 1;
        })
        .await;
        app.state.limits.stop_auth_clock();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve(listener, app.state.clone(), async {
            let _ = stopped.await;
        }));
        let status_from = |from: &'static str| async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(format!("{from}:0").parse().expect("local")).expect("bind local");
            let mut conn = socket.connect(addr).await.expect("connect");
            let body = password_auth("nobody", "x");
            let req = format!(
                "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(req.as_bytes()).await.expect("write");
            let mut out = String::new();
            conn.read_to_string(&mut out).await.expect("read");
            out.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()).expect("status line")
        };
        assert_eq!(status_from("127.0.0.1").await, 401);
        assert_eq!(status_from("127.0.0.1").await, 401);
        assert_eq!(status_from("127.0.0.1").await, 429);
        assert_eq!(status_from("127.0.0.2").await, 401);
        let _ = stop.send(());
        let _ = server.await;
    }

    #[tokio::test]
    async fn slow_requests_get_504_in_their_service_fault_but_image_data_is_exempt() {
        let app = TestApp::with_config(|c| c.limits.request_timeout_secs = 1).await;
        let member = app.user_in_project("alice", "proj-a", "member").await;
        // A login that waits for a hashing slot that never frees.
        let slot = app.state.limits.hashing.occupy().await;
        let r = login(&app, "admin", "adminpw").await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.body);
        assert_eq!(r.body["error"]["code"], 504, "{}", r.body);
        assert_eq!(r.body["error"]["message"], "The request took longer than 1 s.");
        assert!(r.headers.contains_key("x-openstack-request-id"));
        drop(slot);
        // An upload whose body takes longer than the timeout is not cut.
        let img = app
            .json(
                Method::POST,
                "/image/v2/images",
                &member,
                json!({"name": "slow", "disk_format": "raw", "container_format": "bare"}),
            )
            .await;
        let id = img.body["id"].as_str().expect("id").to_string();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        });
        let feed = async move {
            tx.send(Bytes::from(vec![1u8; 1000])).await.expect("send");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            tx.send(Bytes::from(vec![2u8; 1000])).await.expect("send");
        };
        let file = format!("/image/v2/images/{id}/file");
        let upload = app.call(
            Method::PUT,
            &file,
            Some(&member),
            &[("content-type", "application/octet-stream")],
            Body::from_stream(body),
        );
        let (r, ()) = tokio::join!(upload, feed);
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    }

    /// Keystone's lockout: K failures lock the account (401 naming the user, even with the
    /// right password) until `lockout_duration` has passed or an admin updates the user.
    #[tokio::test]
    async fn repeated_failures_lock_the_account_until_the_duration_or_an_admin_reset() {
        let app = TestApp::with_config(|c| {
            c.security_compliance.lockout_failure_attempts = Some(3);
            c.security_compliance.lockout_duration = 2;
        })
        .await;
        app.user_in_project("bob", "proj-b", "member").await;
        let admin = app.admin_token.clone();
        let r = app.json(Method::GET, "/identity/v3/users?name=bob", &admin, Value::Null).await;
        let uid = r.body["users"][0]["id"].as_str().expect("id").to_string();
        let locked = format!("The account is locked for user: {uid}.");
        for _ in 0..3 {
            let r = login(&app, "bob", "nope").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            assert_eq!(r.body["error"]["message"], "The request you have made requires authentication.");
        }
        let r = login(&app, "bob", "pw").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert_eq!(r.body["error"]["message"], locked.as_str(), "{}", r.body);
        // The self-service password change is a login too.
        let change = json!({"user": {"original_password": "pw", "password": "pw2"}}).to_string();
        let r = app
            .call(
                Method::POST,
                &format!("/identity/v3/users/{uid}/password"),
                None,
                &[("content-type", "application/json")],
                Body::from(change),
            )
            .await;
        assert_eq!(r.body["error"]["message"], locked.as_str(), "{}", r.body);
        // The lock ends `lockout_duration` after the last failure.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(login(&app, "bob", "pw").await.status, StatusCode::CREATED);
        // A success forgets earlier failures: two more do not lock.
        for _ in 0..2 {
            login(&app, "bob", "nope").await;
        }
        assert_eq!(login(&app, "bob", "pw").await.status, StatusCode::CREATED);
        assert_eq!(app.state.store.failed_auth(&uid).await.expect("read").failed_auth_count, 0);
        // Locked again; an admin's password reset unlocks at once.
        for _ in 0..3 {
            login(&app, "bob", "nope").await;
        }
        assert_eq!(login(&app, "bob", "pw").await.body["error"]["message"], locked.as_str());
        let r = app
            .json(Method::PATCH, &format!("/identity/v3/users/{uid}"), &admin, json!({"user": {"password": "pw3"}}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(login(&app, "bob", "pw3").await.status, StatusCode::CREATED);
    }

    #[tokio::test]
    async fn lockout_is_off_by_default() {
        let app = TestApp::new().await;
        for _ in 0..5 {
            assert_eq!(login(&app, "admin", "nope").await.status, StatusCode::UNAUTHORIZED);
        }
        assert_eq!(login(&app, "admin", "adminpw").await.status, StatusCode::CREATED);
    }

    /// The agent API reads its JSON bodies through the same capped reader as the services:
    /// 413 in its (Keystone) fault format, announced or streamed.
    #[tokio::test]
    async fn agent_bodies_over_the_limit_are_413() {
        let app = TestApp::new().await;
        let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
        let join = format!("Bearer {join}");
        // The join token registers; the host's credential reaches everything else.
        let register =
            json!({"host": "h", "inventory": meridian_common::agent::Inventory::default(), "agent_version": "t"});
        let headers = [("content-type", "application/json"), ("authorization", join.as_str())];
        let r = app.call(Method::POST, "/agent/v1/register", None, &headers, Body::from(register.to_string())).await;
        assert!(r.status.is_success(), "{} {}", r.status, r.body);
        let host = format!("Bearer {}", r.body["credential"].as_str().expect("credential"));
        let big = json!({"host": "h", "pad": "x".repeat(3 << 20)}).to_string();
        let len = big.len().to_string();
        for path in ["/agent/v1/register", "/agent/v1/hosts/h/heartbeat", "/agent/v1/events", "/agent/v1/work/w/events"]
        {
            let bearer = if path == "/agent/v1/register" { &join } else { &host };
            for announced in [false, true] {
                let mut headers = vec![("content-type", "application/json"), ("authorization", bearer.as_str())];
                if announced {
                    headers.push(("content-length", len.as_str()));
                }
                let r = app.call(Method::POST, path, None, &headers, Body::from(big.clone())).await;
                assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {}", r.body);
                assert_eq!(r.body["error"]["code"], 413, "{path}: {}", r.body);
                assert_eq!(r.body["error"]["message"], "Request is too large.");
            }
        }
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        let key = |s: &str| client_key(s.parse().expect("address"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
    }

    #[test]
    fn exempt_paths_are_exactly_the_streams_the_poll_and_image_data() {
        for p in [
            "/compute/v2.1/os-meridian-events",
            "/compute/v2/os-meridian-events",
            "/image/v2/images/abc/file",
            "/agent/v1/images/abc/file",
            "/agent/v1/hosts/h1/work",
        ] {
            assert!(timeout_exempt(p), "{p}");
        }
        for p in [
            "/image/v2/images/abc",
            "/image/v2/images/abc/members",
            "/agent/v1/hosts/h1/heartbeat",
            "/agent/v1/register",
            "/identity/v3/auth/tokens",
            "/compute/v2.1/servers",
        ] {
            assert!(!timeout_exempt(p), "{p}");
        }
    }
}
