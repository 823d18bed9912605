//! The metadata proxy: `http://169.254.169.254` for the guests on every Meridian network of
//! this host, answered by the server's metadata route (`meridian_common::agent`, the `metadata`
//! row).
//!
//! How a guest reaches it: the agent puts `169.254.169.254/32` on a link of its own
//! ([`METADATA_LINK`], a bridge with no ports), never on the networks' bridges, and listens on `169.254.169.254:80` with the
//! socket bound to each network's bridge (`SO_BINDTODEVICE`), one listener per bridge (Linux
//! lets sockets bound to different devices share an address and port, and a bound socket is
//! matched on the interface a packet came in on, whichever interface holds the address). A
//! guest's request to 169.254.169.254 (routed through its gateway, or on-link: the host
//! answers ARP for any of its addresses) is delivered locally, unchanged, to the listener of
//! the bridge it came in on. So the listener names the network, and the TCP peer address is
//! the guest's source address as the host saw it; the guest's own headers (`X-Forwarded-For`
//! included) are never forwarded.
//!
//! Why not on the bridges: libvirt's dnsmasq listens on every address of its bridge, so with
//! the same address on two bridges the second network's dnsmasq cannot bind it and fails on its
//! next restart (DHCP gone). Agents that put it there before are mended: [`listen_on_bridge`]
//! takes it off the bridge.

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

/// The link that holds [`METADATA_IP`] on the host (not a network's bridge: see above).
pub const METADATA_LINK: &str = "meridian-meta";
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

/// Largest body a guest may POST (Nova's password `MAX_SIZE`, 4 × 255 bytes).
const POST_MAX: usize = 1020;

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))], text).into_response()
}

async fn forward(
    State(p): State<Proxy>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    // POST carries the guest's encrypted password (Nova's `handle_password`); nothing else.
    let post = if method == Method::POST {
        if body.len() > POST_MAX {
            return plain(StatusCode::BAD_REQUEST, "Request is too large.");
        }
        Some(body.to_vec())
    } else if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "Only GET and POST are supported.");
    } else {
        None
    };
    // An IPv4 guest on a dual-stack socket shows up as ::ffff:a.b.c.d.
    let guest = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match p.server.metadata_call(&p.network_id, guest, uri.path(), post).await {
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

/// Runs `ip ARGS`; `Ok(false)` when it failed with one of `tolerated` in its message.
fn ip(args: &[&str], tolerated: &[&str], bridge: &str) -> Result<bool, ProxyError> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| ProxyError::Address { bridge: bridge.to_string(), message: e.to_string() })?;
    if out.status.success() {
        return Ok(true);
    }
    let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if tolerated.iter().any(|t| message.contains(t)) {
        return Ok(false);
    }
    Err(ProxyError::Address { bridge: bridge.to_string(), message })
}

/// A listener on `169.254.169.254:80` bound to `bridge`, once the address is on the host's
/// metadata link. Blocking (runs `ip`).
fn listen_on_bridge(bridge: &str) -> Result<std::net::TcpListener, ProxyError> {
    let addr = format!("{METADATA_IP}/32");
    // A port-less bridge: the `dummy` driver is not in every kernel (not in this project's CI's).
    ip(&["link", "add", METADATA_LINK, "type", "bridge"], &["File exists"], bridge)?;
    ip(&["link", "set", METADATA_LINK, "up"], &[], bridge)?;
    ip(&["-4", "addr", "replace", &addr, "dev", METADATA_LINK], &[], bridge)?;
    // An earlier agent put the address on the bridge itself (see the module's notes).
    ip(&["-4", "addr", "del", &addr, "dev", bridge], &["Cannot assign", "not found", "does not exist"], bridge)?;
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

    /// Stops the proxy of `network_id` (its bridge goes with the network; the address stays on the metadata link).
    pub fn remove(&self, network_id: &str) {
        if let Some(task) = self.running.lock().unwrap_or_else(PoisonError::into_inner).remove(network_id) {
            task.abort();
            info!(network = network_id, "metadata proxy stopped");
        }
    }
}
