//! Interactive consoles: an [`Action::Console`] request from the server's long poll becomes a
//! websocket to `/agent/v1/consoles/{session}` joined to the guest's serial console (libvirt's
//! `virDomainOpenConsole`) or to its VNC server (QEMU's loopback TCP port, read from the live
//! domain XML). Bytes go both ways in binary frames; the close frame's reason says why a
//! console could not be opened or why it ended.
//!
//! A session runs beside the instance's work queue (a stop must run while someone is
//! attached) and is never recorded in the work log or reported as an event.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use meridian_common::agent::{Action, ConsoleProtocol, WorkItem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::{info, warn};
use uuid::Uuid;

use crate::controller::{Controller, chain};
use crate::hypervisor::Hypervisor;
use crate::server::ServerClient;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs one console session to its end. Failures are told to the server in the close frame.
pub async fn run(controller: Arc<Controller>, server: ServerClient, item: WorkItem) {
    let Action::Console { session, protocol } = item.action else {
        return;
    };
    let mut ws = match connect(&server, &session).await {
        Ok(ws) => ws,
        Err(e) => {
            warn!(%session, error = %e, "cannot connect the console session to the server");
            return;
        }
    };
    let outcome = match Uuid::parse_str(&item.instance_id) {
        Err(_) => Err(format!("instance id {:?} is not a UUID", item.instance_id)),
        Ok(id) => {
            let name = controller.naming().domain(&id);
            let hv = Arc::clone(controller.hypervisor());
            info!(%session, instance = %id, ?protocol, "console session");
            match allowed(&hv, &name).await {
                Err(reason) => Err(reason),
                Ok(()) => match protocol {
                    ConsoleProtocol::Serial => serial(&mut ws, hv, name).await,
                    ConsoleProtocol::Vnc => vnc(&mut ws, hv, name).await,
                },
            }
        }
    };
    let (code, reason) = match outcome {
        Ok(reason) => (CloseCode::Normal, reason),
        Err(reason) => {
            warn!(%session, error = %reason, "console session failed");
            (CloseCode::Error, reason)
        }
    };
    let _ = ws.close(Some(CloseFrame { code, reason: short(&reason).into() })).await;
    info!(%session, %reason, "console session ended");
}

/// A close reason fits in 123 bytes.
fn short(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

async fn connect(server: &ServerClient, session: &str) -> Result<Ws, String> {
    let url = server.console_url(session);
    let mut req = url.as_str().into_client_request().map_err(|e| e.to_string())?;
    let credential = server.credential().ok_or("not registered")?;
    let value = format!("Bearer {credential}").parse().map_err(|_| "bad credential".to_string())?;
    req.headers_mut().insert("authorization", value);
    // Keystrokes are single bytes: without TCP_NODELAY, Nagle holds them back behind delayed ACKs.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Whether the domain's state allows a console ([`crate::lifecycle::decide`]).
async fn allowed(hv: &Arc<dyn Hypervisor>, name: &str) -> Result<(), String> {
    let n = name.to_string();
    let state = blocking(hv, move |hv| hv.state(&n)).await?;
    match crate::lifecycle::decide(crate::lifecycle::InstanceState::from_domain(state), crate::lifecycle::Op::Console) {
        crate::lifecycle::Decision::Reject(r) => Err(r.to_string()),
        _ => Ok(()),
    }
}

/// Runs a blocking hypervisor call off the executor.
async fn blocking<T: Send + 'static>(
    hv: &Arc<dyn Hypervisor>,
    f: impl FnOnce(&dyn Hypervisor) -> Result<T, crate::hypervisor::HvError> + Send + 'static,
) -> Result<T, String> {
    let hv = Arc::clone(hv);
    tokio::task::spawn_blocking(move || f(hv.as_ref()).map_err(|e| chain(&e)))
        .await
        .map_err(|_| "a hypervisor call panicked".to_string())?
}

/// The serial console: one blocking thread reads the stream, one writes it.
async fn serial(ws: &mut Ws, hv: Arc<dyn Hypervisor>, name: String) -> Result<String, String> {
    let console = blocking(&hv, move |hv| hv.open_serial(&name)).await?;
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let (in_tx, mut in_rx) = mpsc::channel::<Vec<u8>>(64);
    let reader = {
        let console = Arc::clone(&console);
        std::thread::Builder::new()
            .name("console-read".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match console.read(&mut buf) {
                        Ok(0) => return "the guest's console closed (stopped, or another client took it over)".into(),
                        Ok(n) => {
                            if out_tx.blocking_send(buf[..n].to_vec()).is_err() {
                                return String::new();
                            }
                        }
                        Err(e) => return format!("the guest's console failed: {e}"),
                    }
                }
            })
            .map_err(|e| format!("cannot start a console thread: {e}"))?
    };
    let writer = {
        let console = Arc::clone(&console);
        std::thread::Builder::new()
            .name("console-write".into())
            .spawn(move || {
                while let Some(data) = in_rx.blocking_recv() {
                    if console.write_all(&data).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start a console thread: {e}"))?
    };
    let result = loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(data) => {
                    if ws.send(Message::Binary(data.into())).await.is_err() {
                        break Ok("the server went away".to_string());
                    }
                }
                None => break Ok(String::new()),
            },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Binary(b))) => {
                    if in_tx.send(b.to_vec()).await.is_err() {
                        break Err("the guest's console stopped taking input".to_string());
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if in_tx.send(t.as_bytes().to_vec()).await.is_err() {
                        break Err("the guest's console stopped taking input".to_string());
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break Ok("closed by the server".to_string()),
                Some(Ok(_)) => {}
            },
        }
    };
    // Unblock the reader (and a writer stuck in a send), then let both threads go.
    drop(in_tx);
    drop(out_rx);
    console.abort();
    let read_end = tokio::task::spawn_blocking(move || {
        let why = reader.join().unwrap_or_default();
        let _ = writer.join();
        why
    })
    .await
    .unwrap_or_default();
    match result {
        // The stream ended from the guest's side: say why.
        Ok(r) if r.is_empty() => Ok(if read_end.is_empty() { "console closed".into() } else { read_end }),
        other => other,
    }
}

/// The VNC server of a running domain: QEMU listens on the host's loopback (autoport); the
/// live XML has the port.
async fn vnc(ws: &mut Ws, hv: Arc<dyn Hypervisor>, name: String) -> Result<String, String> {
    let xml = blocking(&hv, move |hv| hv.domain_xml(&name)).await?;
    let port = crate::xml::vnc_port(&xml).ok_or("the guest has no VNC display")?;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("cannot reach the guest's VNC server: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = tcp.read(&mut buf) => match n {
                Ok(0) => return Ok("the guest's VNC server closed (the guest stopped)".into()),
                Ok(n) => {
                    if ws.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        return Ok("the server went away".into());
                    }
                }
                Err(e) => return Err(format!("the guest's VNC connection failed: {e}")),
            },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Binary(b))) => {
                    if tcp.write_all(&b).await.is_err() {
                        return Err("the guest's VNC server stopped taking input".into());
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if tcp.write_all(t.as_bytes()).await.is_err() {
                        return Err("the guest's VNC server stopped taking input".into());
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok("closed by the server".into()),
                Some(Ok(_)) => {}
            },
        }
    }
}
