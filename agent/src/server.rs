//! The agent's side of the wire protocol (`meridian_common::agent`): typed calls to the server.
//!
//! Every call carries the join token as a bearer token. Errors are the shared client's
//! [`ClientError`]: transport failures, or the status and fault message the server sent.

use std::time::Duration;

use meridian_common::agent::{
    AGENT_API, EventBatch, EventBatchResult, Heartbeat, RegisterRequest, RegisterResponse, WorkItem,
};
use meridian_common::client::{ClientError, decode};
use reqwest::{Method, Url};
use serde::Serialize;

/// A client bound to one server and token. Cheap to clone.
#[derive(Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient").field("base", &self.base.as_str()).field("token", &"<redacted>").finish()
    }
}

/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl ServerClient {
    pub fn new(server: &str, token: &str) -> Result<ServerClient, ClientError> {
        let base = Url::parse(server.trim_end_matches('/'))
            .map_err(|e| ClientError::Decode(format!("bad server URL {server:?}: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Decode(format!("bad server URL {server:?}: not http(s)")));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("meridian-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport { url: server.to_string(), source: e })?;
        Ok(ServerClient { http, base, token: token.to_string() })
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `{server}/agent/v1/<segments…>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            for s in AGENT_API.trim_start_matches('/').split('/') {
                path.push(s);
            }
            path.extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let mut rb = self.request(method, url.clone()).timeout(timeout);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.map_err(|e| ClientError::Transport { url: url.to_string(), source: e })?;
        decode(resp).await
    }

    fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ClientError> {
        serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        let v = self.send(Method::POST, self.url(&["register"]), Some(req), CALL_TIMEOUT).await?;
        Self::parse(v)
    }

    pub async fn heartbeat(&self, host: &str, hb: &Heartbeat) -> Result<(), ClientError> {
        self.send(Method::POST, self.url(&["hosts", host, "heartbeat"]), Some(hb), CALL_TIMEOUT).await.map(drop)
    }

    /// Waits up to `wait` for work; an empty list when none came.
    pub async fn poll_work(&self, host: &str, wait: Duration) -> Result<Vec<WorkItem>, ClientError> {
        let mut url = self.url(&["hosts", host, "work"]);
        url.query_pairs_mut().append_pair("wait", &wait.as_secs().to_string());
        let v = self.send::<()>(Method::GET, url, None, wait + CALL_TIMEOUT).await?;
        if v.is_null() {
            return Ok(Vec::new());
        }
        Self::parse(v)
    }

    /// Reports several events in one call; how many the server took, from the first.
    pub async fn report_batch(&self, batch: &EventBatch) -> Result<EventBatchResult, ClientError> {
        let v = self.send(Method::POST, self.url(&["events"]), Some(batch), CALL_TIMEOUT).await?;
        Self::parse(v)
    }

    /// Starts downloading an image; the response body is the image. Non-2xx answers are errors.
    pub async fn image_file(&self, image_id: &str) -> Result<reqwest::Response, ClientError> {
        let url = self.url(&["images", image_id, "file"]);
        let resp = self
            .request(Method::GET, url.clone())
            .send()
            .await
            .map_err(|e| ClientError::Transport { url: url.to_string(), source: e })?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(decode(resp).await.err().unwrap_or_else(|| ClientError::Decode("unexpected status".into())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_under_the_agent_prefix_and_encoded() {
        let c = ServerClient::new("http://127.0.0.1:8774/", "t").expect("client");
        assert_eq!(
            c.url(&["hosts", "h 1", "heartbeat"]).as_str(),
            "http://127.0.0.1:8774/agent/v1/hosts/h%201/heartbeat"
        );
        let c = ServerClient::new("https://cloud.example/base", "t").expect("client");
        assert_eq!(c.url(&["images", "abc", "file"]).as_str(), "https://cloud.example/base/agent/v1/images/abc/file");
        assert!(ServerClient::new("ftp://x", "t").is_err());
        assert!(format!("{c:?}").contains("<redacted>"));
    }
}
