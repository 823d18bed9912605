//! The metadata proxy: `http://169.254.169.254` for the guests on every Meridian network of
//! this host, answered by the server's metadata route (`meridian_common::agent`, the `metadata`
//! row).
//!
//! How a guest reaches it: the agent adds `169.254.169.254/32` to the network's bridge and
//! listens on `169.254.169.254:80` with the socket bound to that bridge (`SO_BINDTODEVICE`),
//! one listener per bridge (Linux lets sockets bound to different devices share an address and
//! port). A guest's request to 169.254.169.254 (routed through its gateway, or on-link: the
//! host answers ARP for its own address) is delivered locally, unchanged, to the listener of
//! the bridge it came in on. So the listener names the network, and the TCP peer address is the
//! guest's source address as the host saw it; the guest's own headers (`X-Forwarded-For`
//! included) are never forwarded. The address goes away with the bridge when libvirt removes
//! the network, and [`MetadataProxies::ensure`] adds it again for existing networks when the
//! agent starts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tracing::{debug, info, warn};

use crate::server::ServerClient;

/// The metadata service's address, as on every OpenStack cloud.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_PORT: u16 = 80;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot add {METADATA_IP} to bridge {bridge}: {message}")]
    Address { bridge: String, message: String },
    #[error("cannot listen on {METADATA_IP}:{METADATA_PORT} on bridge {bridge}")]
    Listen {
        bridge: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Proxy {
    network_id: String,
    server: ServerClient,
}

/// Serves one network's guests on `listener` until the task is dropped. Each request is
/// forwarded to the server with the network and the TCP peer's address, nothing else.
pub async fn serve(listener: tokio::net::TcpListener, network_id: String, server: ServerClient) {
    let app = Router::new().fallback(forward).with_state(Proxy { network_id, server });
    if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await {
        warn!(error = %e, "metadata proxy stopped");
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))], text).into_response()
}

async fn forward(
    State(p): State<Proxy>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported.");
    }
    // An IPv4 guest on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let guest = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match p.server.metadata(&p.network_id, guest, uri.path()).await {
        Ok((status, content_type, body)) => {
            debug!(network = %p.network_id, %guest, path = uri.path(), %status, "metadata request");
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let ct = content_type.and_then(|c| HeaderValue::from_str(&c).ok());
            resp.headers_mut().insert(header::CONTENT_TYPE, ct.unwrap_or(HeaderValue::from_static("text/plain")));
            resp
        }
        Err(e) => {
            warn!(network = %p.network_id, %guest, error = %crate::controller::chain(&e), "metadata request failed");
            plain(StatusCode::BAD_GATEWAY, "The metadata service is not available; try again.")
        }
    }
}

/// A listener on `169.254.169.254:80` bound to `bridge`, after adding the address to it.
/// Blocking (runs `ip`).
fn listen_on_bridge(bridge: &str) -> Result<std::net::TcpListener, ProxyError> {
    let out = std::process::Command::new("ip")
        .args(["-4", "addr", "replace", &format!("{METADATA_IP}/32"), "dev", bridge])
        .output()
        .map_err(|e| ProxyError::Address { bridge: bridge.to_string(), message: e.to_string() })?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(ProxyError::Address { bridge: bridge.to_string(), message });
    }
    let listen = || -> std::io::Result<std::net::TcpListener> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind_device(Some(bridge.as_bytes()))?;
        s.bind(&SocketAddr::from((METADATA_IP, METADATA_PORT)).into())?;
        s.listen(128)?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    listen().map_err(|source| ProxyError::Listen { bridge: bridge.to_string(), source })
}

/// One proxy per Meridian network on this host.
pub struct MetadataProxies {
    server: ServerClient,
    running: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for MetadataProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataProxies").finish_non_exhaustive()
    }
}

impl MetadataProxies {
    pub fn new(server: ServerClient) -> Arc<MetadataProxies> {
        Arc::new(MetadataProxies { server, running: Mutex::default() })
    }

    /// Starts the proxy of `network_id` on `bridge` unless it runs. Idempotent.
    pub async fn ensure(&self, network_id: &str, bridge: &str) -> Result<(), ProxyError> {
        if self.running.lock().unwrap_or_else(PoisonError::into_inner).get(network_id).is_some_and(|t| !t.is_finished())
        {
            return Ok(());
        }
        let b = bridge.to_string();
        let std_listener = tokio::task::spawn_blocking(move || listen_on_bridge(&b))
            .await
            .map_err(|e| ProxyError::Address { bridge: bridge.to_string(), message: e.to_string() })??;
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|source| ProxyError::Listen { bridge: bridge.to_string(), source })?;
        let task = tokio::spawn(serve(listener, network_id.to_string(), self.server.clone()));
        info!(network = network_id, bridge, "metadata proxy listening on {METADATA_IP}:{METADATA_PORT}");
        if let Some(old) =
            self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(network_id.to_string(), task)
        {
            old.abort();
        }
        Ok(())
    }

    /// Stops the proxy of `network_id` (its bridge, and the address on it, go with the network).
    pub fn remove(&self, network_id: &str) {
        if let Some(task) = self.running.lock().unwrap_or_else(PoisonError::into_inner).remove(network_id) {
            task.abort();
            info!(network = network_id, "metadata proxy stopped");
        }
    }
}
