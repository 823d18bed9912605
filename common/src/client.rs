//! An OpenStack client: password or application-credential authentication (Keystone v3), the service catalog, and JSON
//! requests to a service by type with the compute microversion header where asked.
//!
//! Errors carry the HTTP status and the message from the service's fault body, whichever of the
//! four OpenStack fault formats it used, so callers can show words rather than raw JSON.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Everything that can go wrong talking to a cloud.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{status}: {message}")]
    Api {
        status: StatusCode,
        message: String,
        /// The service's `X-OpenStack-Request-Id`: what its log lines for this request carry.
        request_id: Option<String>,
    },
    #[error("the service catalog has no {0} endpoint")]
    NoEndpoint(String),
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Credentials for a project-scoped token: a password, or an application credential (when
/// `app_cred` is set, `password` is unused and the project is the credential's own).
#[derive(Clone)]
pub struct Credentials {
    pub auth_url: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub user_domain: String,
    pub project_domain: String,
    pub app_cred: Option<AppCredential>,
}

/// An application credential (clouds.yaml `auth_type: v3applicationcredential`): by id, or by
/// name with the owner's `username` and `user_domain`.
#[derive(Clone)]
pub struct AppCredential {
    pub id: Option<String>,
    pub name: Option<String>,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("project_name", &self.project_name)
            .field("app_cred", &self.app_cred.as_ref().map(|a| a.id.as_ref().or(a.name.as_ref())))
            .finish()
    }
}

/// A token and the catalog it came with. `Debug` redacts the token.
#[derive(Clone)]
pub struct Session {
    pub token: String,
    /// The token document (`token` object) as Keystone returned it.
    pub body: Value,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("token", &"<redacted>").field("body", &self.body).finish()
    }
}

impl Session {
    pub fn project_id(&self) -> Option<&str> {
        self.body["project"]["id"].as_str()
    }
    pub fn user_id(&self) -> Option<&str> {
        self.body["user"]["id"].as_str()
    }
    pub fn expires_at(&self) -> Option<&str> {
        self.body["expires_at"].as_str()
    }
    pub fn roles(&self) -> Vec<String> {
        self.body["roles"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }
    /// The public endpoint of a service type (`compute`, `image`, `network`, `identity`).
    pub fn endpoint(&self, service_type: &str) -> Result<String, ClientError> {
        self.body["catalog"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["type"] == service_type)
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .find(|e| e["interface"] == "public")
            .and_then(|e| e["url"].as_str().map(|u| u.trim_end_matches('/').to_string()))
            .ok_or_else(|| ClientError::NoEndpoint(service_type.to_string()))
    }
}

/// A thin, cloneable HTTP client bound to one session.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    pub session: Session,
    /// Compute microversion to request (`None`: the server's minimum).
    pub compute_version: Option<String>,
}

impl Client {
    /// Authenticates with a password and returns a client scoped to the project.
    pub async fn login(creds: &Credentials) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Transport { url: creds.auth_url.clone(), source: e })?;
        let session = password_token(&http, creds).await?;
        Ok(Client { http, session, compute_version: None })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `service_type`'s endpoint joined with `path` (which starts with `/`).
    pub fn url(&self, service_type: &str, path: &str) -> Result<String, ClientError> {
        Ok(format!("{}{}", self.session.endpoint(service_type)?, path))
    }

    /// Like [`Client::login`], but scoped to a project by ID (a project switch: the user's
    /// project list gives IDs, and names are only unique within a domain).
    pub async fn login_to_project(creds: &Credentials, project_id: &str) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Transport { url: creds.auth_url.clone(), source: e })?;
        let session = password_token_scoped(&http, creds, json!({"project": {"id": project_id}})).await?;
        Ok(Client { http, session, compute_version: None })
    }

    /// A request with the token (and microversion for compute) set.
    pub fn request(
        &self,
        method: Method,
        service_type: &str,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, ClientError> {
        Ok(self.request_url(method, service_type, &self.url(service_type, path)?))
    }

    /// A request to a full URL (a pagination `next` link, or a service root the catalog gives
    /// versioned or not), with the token and, for `service_type` compute, the microversion.
    pub fn request_url(&self, method: Method, service_type: &str, url: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, url).header("x-auth-token", &self.session.token);
        if service_type == "compute"
            && let Some(v) = &self.compute_version
        {
            rb = rb.header("openstack-api-version", format!("compute {v}"));
        }
        rb
    }

    /// Sends a JSON request; returns the decoded body (`Null` for empty bodies).
    ///
    /// An idempotent request that fails before any response (typically a pooled connection the
    /// server closed by restarting) is sent once more on a fresh connection.
    pub async fn send(
        &self,
        method: Method,
        service_type: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        self.send_url(method, service_type, &self.url(service_type, path)?, body).await
    }

    /// [`Client::send`] to a full URL (see [`Client::request_url`]).
    pub async fn send_url(
        &self,
        method: Method,
        service_type: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let path = url;
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE);
        let build = || -> Result<reqwest::RequestBuilder, ClientError> {
            let mut rb = self.request_url(method.clone(), service_type, url);
            if let Some(b) = body {
                let ct = if service_type == "image" && b.is_array() {
                    "application/openstack-images-v2.1-json-patch"
                } else {
                    "application/json"
                };
                rb = rb.header("content-type", ct).body(b.to_string());
            }
            Ok(rb)
        };
        let resp = match build()?.send().await {
            Ok(r) => r,
            Err(e) if idempotent && (e.is_request() || e.is_connect()) => {
                build()?.send().await.map_err(|e| ClientError::Transport { url: path.to_string(), source: e })?
            }
            Err(e) => {
                return Err(ClientError::Transport { url: path.to_string(), source: e });
            }
        };
        decode(resp).await
    }

    pub async fn get(&self, service_type: &str, path: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, service_type, path, None).await
    }
    pub async fn post(&self, service_type: &str, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::POST, service_type, path, Some(body)).await
    }
    pub async fn put(&self, service_type: &str, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(Method::PUT, service_type, path, Some(body)).await
    }
    pub async fn delete(&self, service_type: &str, path: &str) -> Result<Value, ClientError> {
        self.send(Method::DELETE, service_type, path, None).await
    }
}

async fn password_token(http: &reqwest::Client, c: &Credentials) -> Result<Session, ClientError> {
    let scope = json!({"project": {"name": c.project_name, "domain": {"name": c.project_domain}}});
    password_token_scoped(http, c, scope).await
}

async fn password_token_scoped(http: &reqwest::Client, c: &Credentials, scope: Value) -> Result<Session, ClientError> {
    let base = c.auth_url.trim_end_matches('/');
    let url = if base.ends_with("/v3") { format!("{base}/auth/tokens") } else { format!("{base}/v3/auth/tokens") };
    let body = match &c.app_cred {
        // The credential carries its own project: no scope is sent.
        Some(a) => {
            let cred = match &a.id {
                Some(id) => json!({"id": id, "secret": a.secret}),
                None => json!({"name": a.name, "secret": a.secret,
                               "user": {"name": c.username, "domain": {"name": c.user_domain}}}),
            };
            json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": cred}}})
        }
        None => json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": c.username, "domain": {"name": c.user_domain}, "password": c.password}}},
            "scope": scope,
        }}),
    };
    let resp =
        http.post(&url).json(&body).send().await.map_err(|e| ClientError::Transport { url: url.clone(), source: e })?;
    let token = resp.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let doc = decode(resp).await?;
    let token = token.ok_or_else(|| ClientError::Decode("no X-Subject-Token header".into()))?;
    Ok(Session { token, body: doc["token"].clone() })
}

/// Turns a response into its JSON body or a [`ClientError::Api`] with the fault's message.
pub async fn decode(resp: reqwest::Response) -> Result<Value, ClientError> {
    let status = resp.status();
    let request_id = resp.headers().get("x-openstack-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = resp.bytes().await.map_err(|e| ClientError::Decode(e.to_string()))?;
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    if status.is_success() || status == StatusCode::MULTIPLE_CHOICES {
        return Ok(body);
    }
    Err(ClientError::Api { status, message: fault_message(&body), request_id })
}

/// The human message inside any OpenStack fault body.
pub fn fault_message(body: &Value) -> String {
    if let Some(m) = body["error"]["message"].as_str() {
        return m.to_string(); // Keystone / keystonemiddleware
    }
    if let Some(m) = body["NeutronError"]["message"].as_str() {
        return m.to_string();
    }
    if let Some(m) = body["message"].as_str() {
        return m.to_string(); // Glance
    }
    if let Some(obj) = body.as_object() {
        // Nova: {"itemNotFound": {"code": 404, "message": "..."}}
        if let Some(m) = obj.values().find_map(|v| v["message"].as_str()) {
            return m.to_string();
        }
    }
    match body {
        Value::String(s) => s.clone(),
        Value::Null => "no details".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_messages_of_every_service() {
        assert_eq!(fault_message(&json!({"error": {"code": 401, "message": "auth"}})), "auth");
        assert_eq!(fault_message(&json!({"itemNotFound": {"code": 404, "message": "gone"}})), "gone");
        assert_eq!(fault_message(&json!({"NeutronError": {"type": "X", "message": "net"}})), "net");
        assert_eq!(fault_message(&json!({"code": "404 Not Found", "title": "Not Found", "message": "img"})), "img");
        assert_eq!(fault_message(&Value::String("plain".into())), "plain");
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let session = Session { token: "tok-s3cret".into(), body: json!({"expires_at": "x"}) };
        let creds = Credentials {
            auth_url: "http://x/identity".into(),
            username: "alice".into(),
            password: "pw-s3cret".into(),
            project_name: "demo".into(),
            user_domain: "Default".into(),
            project_domain: "Default".into(),
            app_cred: Some(AppCredential { id: Some("abc".into()), name: None, secret: "ac-s3cret".into() }),
        };
        let text = format!("{session:?} {creds:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<redacted>") && text.contains("alice"), "{text}");
    }

    #[test]
    fn endpoints_come_from_the_catalog() {
        let s = Session {
            token: "t".into(),
            body: json!({"catalog": [{"type": "compute", "endpoints": [
                {"interface": "internal", "url": "http://i/"},
                {"interface": "public", "url": "http://p/compute/v2.1/"}]}]}),
        };
        assert_eq!(s.endpoint("compute").expect("compute"), "http://p/compute/v2.1");
        assert!(matches!(s.endpoint("image"), Err(ClientError::NoEndpoint(_))));
    }
}
