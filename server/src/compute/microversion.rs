//! Compute API microversions: reading the request headers, rejecting what we do not serve,
//! echoing the chosen version in the response.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// A compute microversion, `2.N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

pub const MIN: ApiVersion = ApiVersion { major: 2, minor: 1 };
/// The highest microversion whose every change we implement for the resources we serve.
pub const MAX: ApiVersion = ApiVersion { major: 2, minor: 79 };

impl ApiVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
    /// `self >= 2.minor`
    pub fn at_least(self, minor: u32) -> bool {
        self >= ApiVersion::new(2, minor)
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version a request asks for: `OpenStack-API-Version: compute X` wins over
/// `X-OpenStack-Nova-API-Version: X`; neither means the minimum.
pub fn requested(headers: &HeaderMap) -> Result<ApiVersion, ApiError> {
    let modern = headers.get_all("openstack-api-version").iter().find_map(|v| {
        v.to_str().ok()?.split(',').find_map(|part| {
            let mut words = part.split_whitespace();
            match (words.next(), words.next()) {
                (Some(service), Some(version)) if service.eq_ignore_ascii_case("compute") => Some(version.to_string()),
                _ => None,
            }
        })
    });
    let legacy =
        || headers.get("x-openstack-nova-api-version").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string());
    let Some(text) = modern.or_else(legacy) else {
        return Ok(MIN);
    };
    if text.eq_ignore_ascii_case("latest") {
        return Ok(MAX);
    }
    let parsed = text.split_once('.').and_then(|(a, b)| {
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
        if ok(a) && ok(b) { Some(ApiVersion::new(a.parse().ok()?, b.parse().ok()?)) } else { None }
    });
    let v = parsed.ok_or_else(|| {
        ApiError::bad_request(format!(
            "API Version String {text} is of invalid format. Must be of format MajorNum.MinorNum."
        ))
    })?;
    if v < MIN || v > MAX {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_ACCEPTABLE,
            format!("Version {v} is not supported by the API. Minimum is {MIN} and maximum is {MAX}."),
        ));
    }
    Ok(v)
}

/// Middleware: puts the [`ApiVersion`] into the request and echoes it in both headers.
pub async fn negotiate(mut req: Request, next: Next) -> Response {
    let version = match requested(req.headers()) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(version);
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("compute {version}")) {
        h.insert("openstack-api-version", v);
    }
    if let Ok(v) = HeaderValue::from_str(&version.to_string()) {
        h.insert("x-openstack-nova-api-version", v);
    }
    h.append("vary", HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
        h
    }

    #[test]
    fn negotiation() {
        assert_eq!(requested(&HeaderMap::new()).ok(), Some(MIN));
        assert_eq!(requested(&with("OpenStack-API-Version", "compute 2.55")).ok(), Some(ApiVersion::new(2, 55)));
        assert_eq!(
            requested(&with("OpenStack-API-Version", "image 2.5, compute 2.10")).ok(),
            Some(ApiVersion::new(2, 10))
        );
        assert_eq!(requested(&with("X-OpenStack-Nova-API-Version", "latest")).ok(), Some(MAX));
        assert_eq!(requested(&with("X-OpenStack-Nova-API-Version", "2.x")).err().map(|e| e.status.as_u16()), Some(400));
        assert_eq!(
            requested(&with("X-OpenStack-Nova-API-Version", "2.01")).err().map(|e| e.status.as_u16()),
            Some(400)
        );
        assert_eq!(
            requested(&with("OpenStack-API-Version", "compute 3.0")).err().map(|e| e.status.as_u16()),
            Some(406)
        );
        assert_eq!(
            requested(&with("OpenStack-API-Version", "compute 2.0")).err().map(|e| e.status.as_u16()),
            Some(406)
        );
        // A header for another service only means "no compute version": the minimum.
        assert_eq!(requested(&with("OpenStack-API-Version", "volume 3.5")).ok(), Some(MIN));
    }
}
