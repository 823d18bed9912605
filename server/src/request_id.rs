//! Request ids, as every OpenStack service sets them (oslo.middleware's `RequestId`): each
//! request gets `req-<uuid>`, answered in `X-OpenStack-Request-Id` (compute also in
//! `X-Compute-Request-Id`), recorded in the request's tracing span and in the instance actions
//! it starts. A caller's `X-OpenStack-Request-ID` is its global request id: kept (and logged)
//! when well-formed, ignored otherwise, as oslo.context does.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The header a request id travels in, both ways.
pub const HEADER: &str = "x-openstack-request-id";
/// Nova's older name for the same id, still sent by compute.
pub const COMPUTE_HEADER: &str = "x-compute-request-id";

/// This request's ids, in the request's extensions for handlers and the trace span.
#[derive(Clone, Debug)]
pub struct RequestId {
    /// Ours: `req-<uuid>`.
    pub local: String,
    /// The caller's, when it sent a well-formed one.
    pub global: Option<String>,
}

impl RequestId {
    fn new(global: Option<String>) -> Self {
        RequestId { local: format!("req-{}", uuid::Uuid::new_v4()), global }
    }
}

/// oslo.context accepts a global request id only in the form `req-<uuid>`.
pub fn well_formed(id: &str) -> bool {
    id.strip_prefix("req-").is_some_and(|u| u.len() == 36 && uuid::Uuid::parse_str(u).is_ok())
}

/// Middleware: assigns the id before anything else runs and stamps it on every response,
/// faults included.
pub async fn assign(mut req: Request, next: Next) -> Response {
    let sent = req.headers().get(HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let global = match sent {
        Some(g) if well_formed(&g) => Some(g),
        Some(g) => {
            tracing::warn!(global_request_id = %g.escape_debug(), "ignoring a malformed global request id");
            None
        }
        None => None,
    };
    let id = RequestId::new(global);
    let compute = req.uri().path().starts_with("/compute");
    let value = HeaderValue::from_str(&id.local);
    req.extensions_mut().insert(id);
    let mut resp = next.run(req).await;
    if let Ok(value) = value {
        if compute {
            resp.headers_mut().insert(COMPUTE_HEADER, value.clone());
        }
        resp.headers_mut().insert(HEADER, value);
    }
    resp
}

/// The request id of a request that went through [`assign`] (a fresh one otherwise, so code
/// called outside the HTTP stack still records something unique).
pub fn of(parts: &axum::http::request::Parts) -> String {
    parts.extensions.get::<RequestId>().map(|r| r.local.clone()).unwrap_or_else(|| RequestId::new(None).local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_req_uuid_is_a_global_id() {
        assert!(well_formed("req-0b3a2a0c-9a5e-4a4f-8f2c-6f5d8f0e9b1a"));
        assert!(!well_formed("req-123"));
        assert!(!well_formed("0b3a2a0c-9a5e-4a4f-8f2c-6f5d8f0e9b1a"));
        assert!(!well_formed("req-0b3a2a0c-9a5e-4a4f-8f2c-6f5d8f0e9b1aXX"));
        assert!(!well_formed(""));
    }
}
