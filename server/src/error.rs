//! One error type for every API, rendered as the fault body of the service that answered.
//!
//! Handlers return [`ApiError`]; it becomes an empty response carrying a [`Fault`] extension.
//! Each service's router has a [`render_faults`] layer that turns the fault (or any bare 4xx/5xx
//! axum produced itself, such as an unknown route) into that service's JSON body. 5xx causes are
//! logged here and never sent to the client.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which OpenStack service's fault format to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Identity,
    Compute,
    Image,
    Network,
    /// Cinder: the same fault names as Nova (`cinder/api/openstack/wsgi.py` `Fault`).
    Volume,
}

/// An API error: an HTTP status and a message for the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Neutron's `type` field (e.g. `NetworkNotFound`); derived from the status when absent.
    pub kind: Option<&'static str>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

/// The response extension the per-service renderer picks up.
#[derive(Debug, Clone)]
pub struct Fault(pub ApiError);

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), kind: None, retry_after: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }
    /// A server-side failure: the cause is logged, the client sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "An unexpected error occurred; see the server log.")
    }
    /// Asks the client to wait this many seconds before trying again (`Retry-After`).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    /// Sets Neutron's fault `type`.
    pub fn kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
        self
    }
    /// The policy refusal every service uses.
    pub fn policy(action: &str) -> Self {
        Self::forbidden(format!("Policy doesn't allow {action} to be performed."))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match err {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(what) => ApiError::conflict(what),
            StoreError::Other(cause) => match db_unavailable(&cause) {
                Some(message) => {
                    tracing::error!(error = %format!("{cause:#}"), "database unavailable");
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
                }
                None => ApiError::internal(cause),
            },
        }
    }
}

/// The 503 message for a database that cannot take the request right now (its storage full,
/// or the server unreachable or restarting), so clients see a fault that says to retry later
/// rather than a 500. `None`: another failure (a bug, bad data), which stays a 500.
pub(crate) fn db_unavailable(cause: &anyhow::Error) -> Option<&'static str> {
    const FULL: &str =
        "The database's storage is full; the request was not carried out. Try again when space is freed.";
    const DOWN: &str = "The database is unavailable; the request was not carried out. Try again later.";
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        return (io.kind() == std::io::ErrorKind::StorageFull).then_some(FULL);
    }
    match cause.downcast_ref::<sqlx::Error>()? {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => {
            Some(DOWN)
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite result codes (the low byte of the extended code): 13 SQLITE_FULL; 10
            // SQLITE_IOERR (ENOSPC during a write can surface as an I/O error).
            let sqlite = code.parse::<i32>().ok().map(|c| c & 0xff);
            if sqlite == Some(13) || code == "53100" {
                Some(FULL)
            } else if sqlite == Some(10)
                // PostgreSQL: connection exceptions (class 08), the server shutting down or
                // starting (57P01-57P03), out of resources (class 53).
                || code.starts_with("08")
                || code.starts_with("53")
                || ["57P01", "57P02", "57P03"].contains(&code.as_ref())
            {
                Some(DOWN)
            } else {
                None
            }
        }
        _ => None,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = self.status;
        resp.extensions_mut().insert(Fault(self));
        resp
    }
}

/// Axum middleware body: renders faults for `service`.
pub async fn render_faults(service: Service, resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let mut allow = resp.headers().get(header::ALLOW).cloned();
    let fault = match resp.extensions().get::<Fault>() {
        Some(Fault(err)) => err.clone(),
        // Nova's router matches the method with the path (a `routes` condition), so a path
        // without that method is no route at all: 404 (`DELETE /v2.1/images/`, a blank id).
        None if service == Service::Compute && status == StatusCode::METHOD_NOT_ALLOWED => {
            allow = None;
            ApiError::not_found("The resource could not be found.")
        }
        None => {
            // A response axum built itself (unknown route, 405, extractor rejection): keep its
            // text as the message, in our format.
            let (_parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            let message = if text.is_empty() { status.canonical_reason().unwrap_or("Error").to_string() } else { text };
            ApiError::new(status, message)
        }
    };
    let mut out = fault_response(service, &fault);
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// The body and headers of one fault in `service`'s style.
pub fn fault_response(service: Service, err: &ApiError) -> Response {
    let code = err.status.as_u16();
    let title = err.status.canonical_reason().unwrap_or("Error");
    // keystonemiddleware answers 401 the same way in front of every service.
    let keystone_style = err.status == StatusCode::UNAUTHORIZED || service == Service::Identity;
    let body = match service {
        _ if keystone_style => {
            json!({"error": {"code": code, "title": title, "message": err.message}})
        }
        Service::Identity | Service::Compute | Service::Volume => {
            json!({ nova_fault_name(code): {"code": code, "message": err.message} })
        }
        Service::Image => {
            json!({"code": format!("{code} {title}"), "title": title, "message": err.message})
        }
        Service::Network => json!({"NeutronError": {
            "type": err.kind.unwrap_or_else(|| neutron_default_type(code)),
            "message": err.message,
            "detail": "",
        }}),
    };
    let mut resp = (err.status, axum::Json(body)).into_response();
    if err.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Keystone uri=\"/identity\""));
    }
    if let Some(secs) = err.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// Nova's `Fault._fault_names`.
fn nova_fault_name(code: u16) -> &'static str {
    match code {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

fn neutron_default_type(code: u16) -> &'static str {
    match code {
        400 => "HTTPBadRequest",
        403 => "HTTPForbidden",
        404 => "HTTPNotFound",
        405 => "HTTPMethodNotAllowed",
        409 => "HTTPConflict",
        413 => "HTTPRequestEntityTooLarge",
        503 => "HTTPServiceUnavailable",
        _ => "HTTPInternalServerError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn each_service_has_its_fault_shape() {
        let err = ApiError::not_found("Flavor 9 could not be found.");
        let nova = body_json(render_faults(Service::Compute, err.clone().into_response()).await).await;
        assert_eq!(nova["itemNotFound"]["code"], 404);
        let ks = body_json(render_faults(Service::Identity, err.clone().into_response()).await).await;
        assert_eq!(ks["error"]["title"], "Not Found");
        let neutron =
            body_json(render_faults(Service::Network, err.clone().kind("NetworkNotFound").into_response()).await).await;
        assert_eq!(neutron["NeutronError"]["type"], "NetworkNotFound");
        let glance = body_json(render_faults(Service::Image, err.into_response()).await).await;
        assert_eq!(glance["code"], "404 Not Found");
    }

    /// A real SQLITE_FULL (through the `Any` driver, as the store sees it) is a 503 that says
    /// the storage is full; other database failures stay 500s.
    #[tokio::test]
    async fn a_full_database_is_a_503_other_failures_a_500() {
        use sqlx::{Connection, Executor};

        use crate::store::StoreError;
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
        conn.execute("CREATE TABLE t (x TEXT); PRAGMA max_page_count = 4;").await.expect("setup");
        let mut full = None;
        for _ in 0..100 {
            if let Err(e) = sqlx::query("INSERT INTO t VALUES ($1)").bind("x".repeat(4000)).execute(&mut conn).await {
                full = Some(e);
                break;
            }
        }
        let err = ApiError::from(StoreError::from(full.expect("the database filled up")));
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
        assert!(err.message.contains("storage is full"), "{err}");
        let body = body_json(render_faults(Service::Compute, err.into_response()).await).await;
        assert_eq!(body["serviceUnavailable"]["code"], 503);

        let other = sqlx::query("SELECT * FROM missing").execute(&mut conn).await.expect_err("no such table");
        assert_eq!(ApiError::from(StoreError::from(other)).status, StatusCode::INTERNAL_SERVER_ERROR);
        let pool_gone = ApiError::from(StoreError::from(sqlx::Error::PoolClosed));
        assert_eq!(pool_gone.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn unauthorized_is_keystonemiddleware_style_everywhere() {
        let resp = render_faults(Service::Network, ApiError::unauthorized("no token").into_response()).await;
        assert!(resp.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(body_json(resp).await["error"]["code"], 401);
    }
}
