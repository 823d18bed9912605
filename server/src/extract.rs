//! Request extractors that fail with our fault bodies instead of axum's plain text.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest JSON body accepted (image data goes through the streaming upload, not here).
pub const MAX_JSON: usize = 1 << 20;

/// A JSON body of at most [`MAX_JSON`] bytes (413 beyond, see [`read_body`]); malformed or
/// mistyped input is a 400 naming the problem.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, MAX_JSON).await?;
        parse_json(&bytes).map(Json)
    }
}

/// A raw body of at most [`MAX_JSON`] bytes (413 beyond), for handlers that parse it themselves
/// (Glance's JSON-patch `PATCH`).
pub struct LimitedBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_body(req, MAX_JSON).await.map(LimitedBytes)
    }
}

/// Reads a whole body of at most `limit` bytes. More, announced in `Content-Length` or streamed,
/// is a 413 "Request is too large." (what oslo's `RequestBodySizeLimiter` answers in front of
/// every OpenStack service), rendered in the service's own fault format. The body is read
/// directly, so axum's `DefaultBodyLimit` (whose rejection was a 400 here) plays no part.
pub async fn read_body(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let too_large = || ApiError::too_large("Request is too large.");
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut stream = Body::into_data_stream(req.into_body());
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("Could not read the request body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Parses a JSON body with a message that names the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("The request body is empty; a JSON document is required."));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error_lite(de)
}

fn serde_path_to_error_lite<'de, T: DeserializeOwned>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, ApiError> {
    let value =
        T::deserialize(&mut *de).map_err(|e| ApiError::bad_request(format!("Invalid input for request body: {e}")))?;
    de.end().map_err(|e| ApiError::bad_request(format!("Invalid input for request body: {e}")))?;
    Ok(value)
}

/// The query string as ordered key/value pairs (OpenStack repeats keys: `?id=a&id=b`).
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        Ok(Query(form_urlencoded::parse(q.as_bytes()).into_owned().collect()))
    }
}

impl Query {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }
    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
    /// An integer parameter; a non-integer is a 400 naming it.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "Invalid input for query parameters {key}. Value: {v}. '{v}' is not an integer"
                    ))
                })
            })
            .transpose()
    }
    /// A non-negative integer parameter.
    pub fn uint(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.int(key)? {
            Some(n) if n < 0 => Err(ApiError::bad_request(format!(
                "Invalid input for query parameters {key}. Value: {n}. {n} is less than the minimum of 0"
            ))),
            other => Ok(other),
        }
    }
    /// A boolean parameter as OpenStack services accept them.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key)
            .map(|v| {
                parse_bool(v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Invalid input for query parameters {key}. Value: {v}. '{v}' is not a boolean"
                    ))
                })
            })
            .transpose()
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_is_a_bad_request() {
        let err = parse_json::<serde_json::Value>(b"{nope").expect_err("error");
        assert_eq!(err.status.as_u16(), 400);
        let err = parse_json::<serde_json::Value>(b"{} trailing").expect_err("error");
        assert_eq!(err.status.as_u16(), 400);
    }

    #[test]
    fn query_integers_are_validated() {
        let q = Query(vec![("limit".into(), "x".into()), ("minRam".into(), "-1".into())]);
        assert_eq!(q.int("limit").err().map(|e| e.status.as_u16()), Some(400));
        assert_eq!(q.uint("minRam").err().map(|e| e.status.as_u16()), Some(400));
        assert_eq!(q.int("absent").ok(), Some(None));
    }
}
