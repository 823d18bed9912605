//! The agent's side of the wire protocol (`meridian_common::agent`): typed calls to the server.
//!
//! Registration carries the host's credential when it has one, else (or when the server
//! refuses that) the join token; it hands back a new credential, which every other call
//! carries as its bearer token. Errors are the shared client's [`ClientError`]: transport
//! failures, or the status and fault message the server sent.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use meridian_common::agent::{
    AGENT_API, EventBatch, EventBatchResult, Heartbeat, HostFilters, RegisterRequest, RegisterResponse, WorkItem,
};
use meridian_common::client::{ClientError, decode};
use reqwest::{Method, Url};
use serde::Serialize;

/// A client bound to one server, the join token (empty when the agent was given none) and
/// the host's credential. Cheap to clone; clones share the credential, so a registration
/// renews it for every user (the image cache, the event reporter).
#[derive(Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    base: Url,
    join_token: String,
    credential: Arc<RwLock<Option<String>>>,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient")
            .field("base", &self.base.as_str())
            .field("join_token", &"<redacted>")
            .field("credential", &"<redacted>")
            .finish()
    }
}

/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl ServerClient {
    pub fn new(server: &str, join_token: &str) -> Result<ServerClient, ClientError> {
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
        Ok(ServerClient { http, base, join_token: join_token.trim().to_string(), credential: Arc::default() })
    }

    /// The host's credential, if it has one.
    pub fn credential(&self) -> Option<String> {
        self.credential.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Sets the credential every call but registration carries.
    pub fn set_credential(&self, credential: Option<String>) {
        *self.credential.write().unwrap_or_else(PoisonError::into_inner) = credential;
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The websocket URL of a console session (`ws(s)://…/agent/v1/consoles/{session}`).
    pub fn console_url(&self, session: &str) -> Url {
        let mut url = self.url(&["consoles", session]);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // http → ws and https → wss are both special schemes, which `set_scheme` allows.
        let _ = url.set_scheme(scheme);
        url
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

    /// A request with the host's credential (none before the first registration: the server
    /// answers 401, which sends the agent to register).
    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match self.credential() {
            Some(c) => rb.bearer_auth(c),
            None => rb,
        }
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        self.send_as(self.request(method, url.clone()), url, body, timeout).await
    }

    async fn send_as<B: Serialize>(
        &self,
        rb: reqwest::RequestBuilder,
        url: Url,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let mut rb = rb.timeout(timeout);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.map_err(|e| ClientError::Transport { url: url.to_string(), source: e })?;
        decode(resp).await
    }

    fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ClientError> {
        serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Registers the host with its credential, or with the join token when it has none or the
    /// server refuses it (401: replaced, or the server lost it). The new credential the server
    /// returns is used from then on; storing it is the caller's job.
    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        let url = self.url(&["register"]);
        let post = |bearer: &str| self.http.post(url.clone()).bearer_auth(bearer);
        let answer = match self.credential() {
            Some(c) => match self.send_as(post(&c), url.clone(), Some(req), CALL_TIMEOUT).await {
                Err(e) if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) && !self.join_token.is_empty() => {
                    tracing::info!("the server refused the host credential; registering with the join token");
                    self.send_as(post(&self.join_token), url, Some(req), CALL_TIMEOUT).await
                }
                other => other,
            },
            None => self.send_as(post(&self.join_token), url, Some(req), CALL_TIMEOUT).await,
        };
        let reg: RegisterResponse = Self::parse(answer?)?;
        self.set_credential(Some(reg.credential.clone()));
        Ok(reg)
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

    /// The host's port filters: at once when the server's generation differs from `after`
    /// (always when `after` is `None`), else after `wait` with the same generation.
    pub async fn port_filters(
        &self,
        host: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<HostFilters, ClientError> {
        let mut url = self.url(&["hosts", host, "port-filters"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(g) = after {
                q.append_pair("after", &g.to_string());
            }
            q.append_pair("wait", &wait.as_secs().to_string());
        }
        let v = self.send::<()>(Method::GET, url, None, wait + CALL_TIMEOUT).await?;
        Self::parse(v)
    }

    /// Reports several events in one call; how many the server took, from the first.
    pub async fn report_batch(&self, batch: &EventBatch) -> Result<EventBatchResult, ClientError> {
        let v = self.send(Method::POST, self.url(&["events"]), Some(batch), CALL_TIMEOUT).await?;
        Self::parse(v)
    }

    /// `{server}/agent/v1/metadata/<path>`, the guest's path normalised as Nova does (`.`
    /// and empty segments dropped, `..` going up) but never above `metadata/`: a guest's
    /// `../` must not reach the host's other agent routes with the host's credential.
    fn metadata_url(&self, path: &str) -> Url {
        let mut segments = vec!["metadata"];
        for seg in path.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    if segments.len() > 1 {
                        segments.pop();
                    }
                }
                s => segments.push(s),
            }
        }
        self.url(&segments)
    }

    /// Forwards one guest's metadata request (`path` as the guest asked it): the network it came
    /// in on and its source address go in the protocol's headers, nothing of the guest's own.
    /// Any answer of the server (404 included) is returned as it is: status, content type, body.
    pub async fn metadata(
        &self,
        network_id: &str,
        guest: std::net::IpAddr,
        path: &str,
    ) -> Result<(reqwest::StatusCode, Option<String>, Vec<u8>), ClientError> {
        self.metadata_call(network_id, guest, path, None).await
    }

    /// As [`Self::metadata`], with `Some(body)` a POST (the guest's password).
    pub async fn metadata_call(
        &self,
        network_id: &str,
        guest: std::net::IpAddr,
        path: &str,
        post: Option<Vec<u8>>,
    ) -> Result<(reqwest::StatusCode, Option<String>, Vec<u8>), ClientError> {
        let url = self.metadata_url(path);
        let req = match post {
            Some(body) => self.request(Method::POST, url.clone()).body(body),
            None => self.request(Method::GET, url.clone()),
        };
        let resp = req
            .header(meridian_common::agent::METADATA_NETWORK_HEADER, network_id)
            .header(meridian_common::agent::METADATA_ADDRESS_HEADER, guest.to_string())
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| ClientError::Transport { url: url.to_string(), source: e })?;
        let status = resp.status();
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.bytes().await.map_err(|e| ClientError::Transport { url: url.to_string(), source: e })?;
        Ok((status, content_type, body.to_vec()))
    }

    /// Sends an image's bytes (`len` of them, streamed from `body`) for an open volume upload
    /// of this host. No timeout: a large volume takes as long as it takes.
    pub async fn upload_image(&self, image_id: &str, body: reqwest::Body, len: u64) -> Result<(), ClientError> {
        self.put_stream(self.url(&["images", image_id, "file"]), body, len).await
    }

    /// Starts downloading an image; the response body is the image. Non-2xx answers are errors.
    pub async fn image_file(&self, image_id: &str) -> Result<reqwest::Response, ClientError> {
        self.get_stream(self.url(&["images", image_id, "file"])).await
    }

    /// Sends a migrating instance's root disk (`len` bytes streamed from `body`) to the
    /// server's relay for migration `migration_id`. No timeout: the server's deadline on the
    /// migration bounds it.
    pub async fn put_migration_disk(
        &self,
        migration_id: &str,
        body: reqwest::Body,
        len: u64,
    ) -> Result<(), ClientError> {
        self.put_stream(self.url(&["migrations", migration_id, "disk"]), body, len).await
    }

    /// Starts downloading the disk the source of migration `migration_id` sent.
    pub async fn migration_disk(&self, migration_id: &str) -> Result<reqwest::Response, ClientError> {
        self.get_stream(self.url(&["migrations", migration_id, "disk"])).await
    }

    /// Reports how far live migration `migration_id` is; the answer says whether to abort it
    /// or force it to complete.
    pub async fn live_migration_progress(
        &self,
        migration_id: &str,
        progress: &meridian_common::agent::LiveMigrationProgress,
    ) -> Result<meridian_common::agent::LiveMigrationControl, ClientError> {
        let url = self.url(&["migrations", migration_id, "progress"]);
        let v = self.send(Method::POST, url, Some(progress), CALL_TIMEOUT).await?;
        Self::parse(v)
    }

    /// PUTs `len` bytes streamed from `body` to `url`; a non-2xx answer is the server's error.
    async fn put_stream(&self, url: Url, body: reqwest::Body, len: u64) -> Result<(), ClientError> {
        let resp = self
            .request(Method::PUT, url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| ClientError::Transport { url: url.to_string(), source: e })?;
        Self::success(resp).await.map(drop)
    }

    /// GETs `url`, handing back the response to stream its body; a non-2xx answer is an error.
    async fn get_stream(&self, url: Url) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .request(Method::GET, url.clone())
            .send()
            .await
            .map_err(|e| ClientError::Transport { url: url.to_string(), source: e })?;
        Self::success(resp).await
    }

    async fn success(resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
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
        c.set_credential(Some("cred-s3cret".into()));
        // A guest's path stays under metadata/, whatever it says.
        let m = ServerClient::new("http://h:1", "t").expect("client");
        assert_eq!(m.metadata_url("/openstack/latest/").as_str(), "http://h:1/agent/v1/metadata/openstack/latest");
        assert_eq!(m.metadata_url("/").as_str(), "http://h:1/agent/v1/metadata");
        assert_eq!(m.metadata_url("/a/../../../images/x/file").as_str(), "http://h:1/agent/v1/metadata/images/x/file");
        assert_eq!(m.metadata_url("/%2e%2e/hosts").as_str(), "http://h:1/agent/v1/metadata/%252e%252e/hosts");
        assert!(format!("{c:?}").contains("<redacted>") && !format!("{c:?}").contains("s3cret"));
    }
}
