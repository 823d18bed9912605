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
    use crate::testing::TestApp;
    use axum::body::Body;
    use axum::http::{Method, StatusCode};
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};

    fn id_of(headers: &axum::http::HeaderMap, name: &str) -> String {
        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn every_service_answers_with_a_request_id_faults_included() {
        let app = TestApp::new().await;
        let t = app.admin_token.clone();
        let mut seen = std::collections::HashSet::new();
        for path in [
            "/identity/v3/projects",
            "/compute/v2.1/flavors",
            "/image/v2/images",
            "/network/v2.0/networks",
            "/compute/v2.1/servers/nope",
            "/network/v2.0/nowhere",
            "/",
        ] {
            let r = app.json(Method::GET, path, &t, Value::Null).await;
            let id = id_of(&r.headers, HEADER);
            assert!(well_formed(&id), "{path}: {id:?}");
            assert!(seen.insert(id.clone()), "{path}: ids are unique");
            let compute = id_of(&r.headers, COMPUTE_HEADER);
            if path.starts_with("/compute") {
                assert_eq!(compute, id, "{path}: compute sends the id twice");
            } else {
                assert!(compute.is_empty(), "{path}: only compute sends X-Compute-Request-Id");
            }
        }
        // Unauthenticated and refused requests carry one too.
        let r = app.call(Method::GET, "/compute/v2.1/servers", None, &[], Body::empty()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(well_formed(&id_of(&r.headers, HEADER)));
    }

    #[tokio::test]
    async fn a_global_request_id_is_kept_when_well_formed_and_never_echoed() {
        let app = TestApp::new().await;
        let global = "req-0b3a2a0c-9a5e-4a4f-8f2c-6f5d8f0e9b1a";
        let r = app
            .call(Method::GET, "/compute/v2.1/flavors", Some(&app.admin_token), &[(HEADER, global)], Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let ours = id_of(&r.headers, HEADER);
        assert!(well_formed(&ours));
        assert_ne!(ours, global, "the response carries our own id, as oslo.middleware does");
        let r = app
            .call(Method::GET, "/compute/v2.1/flavors", Some(&app.admin_token), &[(HEADER, "not-an-id")], Body::empty())
            .await;
        assert_eq!(r.status, StatusCode::OK, "a malformed global id is ignored, not refused");
    }

    #[tokio::test]
    async fn an_instance_action_records_the_request_id_of_its_request() {
        let app = TestApp::new().await;
        let t = app.admin_token.clone();
        let img = app
            .json(
                Method::POST,
                "/image/v2/images",
                &t,
                json!({"name": "img", "disk_format": "raw", "container_format": "bare"}),
            )
            .await;
        let image = img.body["id"].as_str().expect("image").to_string();
        let up = app
            .call(
                Method::PUT,
                &format!("/image/v2/images/{image}/file"),
                Some(&t),
                &[("content-type", "application/octet-stream")],
                Body::from(vec![1u8; 512]),
            )
            .await;
        assert_eq!(up.status, StatusCode::NO_CONTENT);
        let server = json!({"server": {"name": "s", "imageRef": image, "flavorRef": "1", "networks": "none"}});
        let r = app
            .call(
                Method::POST,
                "/compute/v2.1/servers",
                Some(&t),
                &[("content-type", "application/json"), ("openstack-api-version", "compute 2.37")],
                Body::from(server.to_string()),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let request_id = id_of(&r.headers, HEADER);
        let id = r.body["server"]["id"].as_str().expect("id");
        let actions =
            app.json(Method::GET, &format!("/compute/v2.1/servers/{id}/os-instance-actions"), &t, Value::Null).await;
        assert_eq!(actions.body["instanceActions"][0]["action"], "create", "{}", actions.body);
        assert_eq!(actions.body["instanceActions"][0]["request_id"], request_id.as_str());
        let one = app
            .json(Method::GET, &format!("/compute/v2.1/servers/{id}/os-instance-actions/{request_id}"), &t, Value::Null)
            .await;
        assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    }

    /// Log lines written inside a request (its faults among them) carry the request's ids.
    #[tokio::test]
    async fn the_request_span_carries_both_ids() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log buffer").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let app = TestApp::new().await;
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let global = "req-11111111-2222-4333-8444-555555555555";
        let r = app
            .call(
                Method::GET,
                "/compute/v2.1/servers/missing",
                Some(&app.admin_token),
                &[(HEADER, global)],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let ours = id_of(&r.headers, HEADER);
        let text = String::from_utf8(buf.0.lock().expect("log buffer").clone()).expect("utf-8");
        let line =
            text.lines().find(|l| l.contains(&ours)).unwrap_or_else(|| panic!("no log line with {ours}:\n{text}"));
        assert!(line.contains(global), "the global id is logged with ours: {line}");
    }

    #[test]
    fn only_req_uuid_is_a_global_id() {
        assert!(well_formed("req-0b3a2a0c-9a5e-4a4f-8f2c-6f5d8f0e9b1a"));
        assert!(!well_formed("req-123"));
        assert!(!well_formed("0b3a2a0c-9a5e-4a4f-8f2c-6f5d8f0e9b1a"));
        assert!(!well_formed("req-0b3a2a0c-9a5e-4a4f-8f2c-6f5d8f0e9b1aXX"));
        assert!(!well_formed(""));
    }
}
