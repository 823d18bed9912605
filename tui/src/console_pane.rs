//! The interactive serial console's wire side: the URL, the websocket and the bytes of keys.
//!
//! Nova's remote-console API hands out a `ws://`/`wss://` URL with a one-time token
//! (`POST /servers/{id}/remote-consoles`, protocol `serial`, microversion 2.6; the older
//! `os-getSerialConsole` action below that). The websocket carries the guest's serial line as
//! binary frames both ways (subprotocol `binary`, as nova-serialproxy and websockify speak).
//!
//! The split: [`remote_console_url`] runs in the worker; [`spawn_session`] runs the websocket in
//! its own task and reports [`ConsoleEvent`]s on the worker's response channel; the pane that
//! shows them is a view ([`crate::views::console`]). Keys become the bytes an xterm sends
//! ([`key_bytes`]) and go to the task over a channel, so neither the draw nor the update path
//! waits on the network.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use futures_util::{SinkExt, StreamExt};
use meridian_common::{Client, ClientError};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue};

use crate::worker::Response;

/// Why the cloud gave no console URL, in the terms the pane words them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Nova answers 400/404/501 when `[serial_console] enabled = false` (or the driver has none).
    NoSerial,
    /// 409: the instance is not running.
    NotRunning,
    Other(String),
}

/// What the websocket task reports to the app (through the worker's response channel).
#[derive(Clone, Debug)]
pub enum ConsoleEvent {
    /// Connected: keystrokes for the guest go into `input`.
    Opened { session: u64, input: UnboundedSender<Vec<u8>> },
    /// Bytes from the guest's serial line.
    Output { session: u64, bytes: Vec<u8> },
    /// The connection could not be made or has ended; `reason` says why, in words.
    Closed { session: u64, reason: String },
}

/// Asks the cloud for a serial console URL: the remote-consoles API at 2.6+, else the
/// `os-getSerialConsole` action (clouds or negotiated versions below 2.6).
pub async fn remote_console_url(client: &Client, id: &str) -> Result<String, ClientError> {
    let at_least_2_6 = client.compute_version.as_deref().is_some_and(|v| version_at_least(v, (2, 6)));
    let base = client.session.endpoint("compute")?;
    let v = if at_least_2_6 {
        let body = json!({"remote_console": {"protocol": "serial", "type": "serial"}});
        client.send_url(Method::POST, "compute", &format!("{base}/servers/{id}/remote-consoles"), Some(&body)).await?
    } else {
        let body = json!({"os-getSerialConsole": {"type": "serial"}});
        client.send_url(Method::POST, "compute", &format!("{base}/servers/{id}/action"), Some(&body)).await?
    };
    v["remote_console"]["url"]
        .as_str()
        .or_else(|| v["console"]["url"].as_str())
        .map(str::to_string)
        .ok_or_else(|| ClientError::Decode("the console answer holds no url".into()))
}

/// Asks the cloud for a noVNC URL (a web page that draws the guest's screen): the
/// remote-consoles API at 2.6+, else the `os-getVNCConsole` action.
pub async fn novnc_url(client: &Client, id: &str) -> Result<String, ClientError> {
    let at_least_2_6 = client.compute_version.as_deref().is_some_and(|v| version_at_least(v, (2, 6)));
    let base = client.session.endpoint("compute")?;
    let v = if at_least_2_6 {
        let body = json!({"remote_console": {"protocol": "vnc", "type": "novnc"}});
        client.send_url(Method::POST, "compute", &format!("{base}/servers/{id}/remote-consoles"), Some(&body)).await?
    } else {
        let body = json!({"os-getVNCConsole": {"type": "novnc"}});
        client.send_url(Method::POST, "compute", &format!("{base}/servers/{id}/action"), Some(&body)).await?
    };
    v["remote_console"]["url"]
        .as_str()
        .or_else(|| v["console"]["url"].as_str())
        .map(str::to_string)
        .ok_or_else(|| ClientError::Decode("the console answer holds no url".into()))
}

/// A failed noVNC request, in words.
pub fn novnc_error(name: &str, e: &ClientError) -> String {
    match url_error(e) {
        UrlError::NoSerial => "this cloud has no graphical consoles (Nova's [vnc] is disabled)".into(),
        UrlError::NotRunning => format!("{name} is not running; start it for a graphical console"),
        UrlError::Other(m) => format!("no graphical console for {name}: {m}"),
    }
}

pub(crate) fn version_at_least(v: &str, want: (u32, u32)) -> bool {
    let (a, b) = v.split_once('.').unwrap_or((v, "0"));
    (a.parse().unwrap_or(2), b.parse().unwrap_or(0)) >= want
}

/// Sorts a failed console request into what the user is told.
pub fn url_error(e: &ClientError) -> UrlError {
    match e.status() {
        Some(StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::NOT_IMPLEMENTED) => {
            // A 404 can also mean the instance is gone; Nova then says "Instance … could not be found".
            if let ClientError::Api { message, .. } = e
                && message.contains("could not be found")
                && message.to_ascii_lowercase().contains("instance")
            {
                return UrlError::Other(message.clone());
            }
            UrlError::NoSerial
        }
        Some(StatusCode::CONFLICT) => UrlError::NotRunning,
        _ => UrlError::Other(match e {
            ClientError::Api { status, message, .. } => format!("{message} ({})", status.as_u16()),
            other => other.to_string(),
        }),
    }
}

/// Opens the websocket in its own task. Guest output, the opening and the end arrive on `ui` as
/// [`Response::ConsoleEvent`]s tagged with `session` (a later attach ignores an older one's).
pub fn spawn_session(url: String, session: u64, ui: UnboundedSender<Response>) {
    tokio::spawn(async move {
        // Both ends say why in words: a close frame's reason, or the failure.
        let reason = run_session(&url, session, &ui).await.unwrap_or_else(|failure| failure);
        let _ = ui.send(Response::ConsoleEvent(ConsoleEvent::Closed { session, reason }));
    });
}

/// The URL as messages show it: without its query, where the one-time token is.
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

async fn run_session(url: &str, session: u64, ui: &UnboundedSender<Response>) -> Result<String, String> {
    let mut req =
        url.into_client_request().map_err(|e| format!("the console URL {} is not usable: {e}", shown(url)))?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
    let (ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| handshake_words(url, e))?;
    let (mut sink, mut stream) = ws.split();
    let (input, mut keys) = mpsc::unbounded_channel::<Vec<u8>>();
    let _ = ui.send(Response::ConsoleEvent(ConsoleEvent::Opened { session, input }));
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let _ = ui.send(Response::ConsoleEvent(ConsoleEvent::Output { session, bytes: b.to_vec() }));
                }
                Some(Ok(Message::Text(t))) => {
                    let _ = ui.send(Response::ConsoleEvent(ConsoleEvent::Output { session, bytes: t.as_bytes().to_vec() }));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Ok(match frame {
                        Some(f) if !f.reason.is_empty() => format!("the console closed: {} ({})", f.reason, u16::from(f.code)),
                        Some(f) => format!("the console closed ({})", u16::from(f.code)),
                        None => "the console closed".into(),
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("the console connection dropped: {e}")),
                None => return Err("the console connection dropped".into()),
            },
            key = keys.recv() => match key {
                Some(bytes) => {
                    if let Err(e) = sink.send(Message::Binary(bytes.into())).await {
                        return Err(format!("the console connection dropped: {e}"));
                    }
                }
                // The pane detached (Ctrl-]) or was closed: say goodbye properly.
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    return Ok("detached".into());
                }
            },
        }
    }
}

fn handshake_words(url: &str, e: tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status();
            // Meridian gives the reason in a header (nothing may follow a refused upgrade's
            // headers); other proxies may put it in the body.
            let header = resp.headers().get("x-console-error").and_then(|v| v.to_str().ok()).map(str::to_string);
            let body = header
                .unwrap_or_else(|| resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned())
                .trim()
                .to_string();
            let why = if body.is_empty() { String::new() } else { format!(": {body}") };
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                format!(
                    "the console proxy refused the token ({}){why} — tokens are single-use and short-lived",
                    status.as_u16()
                )
            } else {
                format!("the console proxy answered {}{why}", status.as_u16())
            }
        }
        tungstenite::Error::Io(io) => format!("cannot reach the console proxy at {}: {io}", shown(url)),
        other => format!("the console handshake with {} failed: {other}", shown(url)),
    }
}

/// Ctrl-] (0x1d), as telnet and `virsh console` use it; some terminals report it as Ctrl-5.
pub fn is_detach(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char(']') | KeyCode::Char('5'))
}

/// The bytes an xterm sends for a key (`application_cursor`: the guest asked for `ESC O A`
/// arrows, DECCKM). `None` for keys a terminal does not transmit.
pub fn key_bytes(key: &KeyEvent, application_cursor: bool) -> Option<Vec<u8>> {
    let m = key.modifiers;
    let ctrl = m.contains(KeyModifiers::CONTROL);
    let alt = m.contains(KeyModifiers::ALT);
    let shift = m.contains(KeyModifiers::SHIFT);
    // xterm's modifier parameter: 1 + shift + 2·alt + 4·ctrl.
    let param = 1 + u8::from(shift) + 2 * u8::from(alt) + 4 * u8::from(ctrl);
    let csi_letter = |c: char| -> Vec<u8> {
        if param > 1 {
            format!("\x1b[1;{param}{c}").into_bytes()
        } else if application_cursor {
            format!("\x1bO{c}").into_bytes()
        } else {
            format!("\x1b[{c}").into_bytes()
        }
    };
    let tilde = |n: u8| -> Vec<u8> {
        if param > 1 { format!("\x1b[{n};{param}~").into_bytes() } else { format!("\x1b[{n}~").into_bytes() }
    };
    let with_alt = |mut b: Vec<u8>| -> Vec<u8> {
        if alt {
            b.insert(0, 0x1b);
        }
        b
    };
    Some(match key.code {
        KeyCode::Char(c) if ctrl => {
            let b = match c.to_ascii_lowercase() {
                l @ 'a'..='z' => (l as u8) & 0x1f,
                '@' | ' ' | '2' => 0,
                '[' | '3' => 0x1b,
                '\\' | '4' => 0x1c,
                ']' | '5' => 0x1d,
                '^' | '6' => 0x1e,
                '_' | '-' | '7' => 0x1f,
                '?' | '8' => 0x7f,
                _ => return None,
            };
            with_alt(vec![b])
        }
        KeyCode::Char(c) => {
            let mut buf = [0u8; 4];
            with_alt(c.encode_utf8(&mut buf).as_bytes().to_vec())
        }
        KeyCode::Enter => with_alt(vec![b'\r']),
        KeyCode::Backspace if ctrl => with_alt(vec![0x08]),
        KeyCode::Backspace => with_alt(vec![0x7f]),
        KeyCode::Tab => with_alt(vec![b'\t']),
        KeyCode::BackTab => b"\x1b[Z".to_vec(),
        KeyCode::Esc => with_alt(vec![0x1b]),
        KeyCode::Up => csi_letter('A'),
        KeyCode::Down => csi_letter('B'),
        KeyCode::Right => csi_letter('C'),
        KeyCode::Left => csi_letter('D'),
        KeyCode::Home => csi_letter('H'),
        KeyCode::End => csi_letter('F'),
        KeyCode::Insert => tilde(2),
        KeyCode::Delete => tilde(3),
        KeyCode::PageUp => tilde(5),
        KeyCode::PageDown => tilde(6),
        KeyCode::F(n @ 1..=4) => {
            let c = [b'P', b'Q', b'R', b'S'][usize::from(n - 1)];
            if param > 1 { format!("\x1b[1;{param}{}", c as char).into_bytes() } else { vec![0x1b, b'O', c] }
        }
        KeyCode::F(n @ 5..=12) => tilde([15, 17, 18, 19, 20, 21, 23, 24][usize::from(n - 5)]),
        _ => return None,
    })
}

/// Pasted text as the guest should get it: line ends as Enter sends them, wrapped in
/// `ESC [200~ … ESC [201~` when the guest enabled bracketed paste (markers inside are removed so
/// the paste cannot end itself early).
pub fn paste_bytes(text: &str, bracketed: bool) -> Vec<u8> {
    let body = text.replace("\r\n", "\r").replace('\n', "\r");
    if bracketed {
        let body = body.replace("\x1b[200~", "").replace("\x1b[201~", "");
        format!("\x1b[200~{body}\x1b[201~").into_bytes()
    } else {
        body.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: KeyCode, m: KeyModifiers) -> Option<Vec<u8>> {
        key_bytes(&KeyEvent::new(code, m), false)
    }

    #[test]
    fn printable_keys_and_enter_backspace_tab_esc() {
        let n = KeyModifiers::NONE;
        assert_eq!(k(KeyCode::Char('a'), n), Some(b"a".to_vec()));
        assert_eq!(k(KeyCode::Char('A'), KeyModifiers::SHIFT), Some(b"A".to_vec()));
        assert_eq!(k(KeyCode::Char('é'), n), Some("é".as_bytes().to_vec()));
        assert_eq!(k(KeyCode::Enter, n), Some(b"\r".to_vec()));
        assert_eq!(k(KeyCode::Backspace, n), Some(vec![0x7f]));
        assert_eq!(k(KeyCode::Tab, n), Some(b"\t".to_vec()));
        assert_eq!(k(KeyCode::BackTab, KeyModifiers::SHIFT), Some(b"\x1b[Z".to_vec()));
        assert_eq!(k(KeyCode::Esc, n), Some(vec![0x1b]));
    }

    #[test]
    fn control_letters_are_control_codes() {
        let c = KeyModifiers::CONTROL;
        assert_eq!(k(KeyCode::Char('c'), c), Some(vec![0x03]));
        assert_eq!(k(KeyCode::Char('D'), c), Some(vec![0x04]));
        assert_eq!(k(KeyCode::Char('a'), c), Some(vec![0x01]));
        assert_eq!(k(KeyCode::Char('z'), c), Some(vec![0x1a]));
        assert_eq!(k(KeyCode::Char('['), c), Some(vec![0x1b]));
        assert_eq!(k(KeyCode::Char(' '), c), Some(vec![0x00]));
        assert_eq!(k(KeyCode::Char('\\'), c), Some(vec![0x1c]));
    }

    #[test]
    fn alt_prefixes_escape() {
        assert_eq!(k(KeyCode::Char('b'), KeyModifiers::ALT), Some(b"\x1bb".to_vec()));
        assert_eq!(k(KeyCode::Char('x'), KeyModifiers::ALT | KeyModifiers::CONTROL), Some(vec![0x1b, 0x18]));
        assert_eq!(k(KeyCode::Backspace, KeyModifiers::ALT), Some(vec![0x1b, 0x7f]));
    }

    #[test]
    fn cursor_and_editing_keys_follow_xterm() {
        let n = KeyModifiers::NONE;
        assert_eq!(k(KeyCode::Up, n), Some(b"\x1b[A".to_vec()));
        assert_eq!(k(KeyCode::Down, n), Some(b"\x1b[B".to_vec()));
        assert_eq!(k(KeyCode::Right, n), Some(b"\x1b[C".to_vec()));
        assert_eq!(k(KeyCode::Left, n), Some(b"\x1b[D".to_vec()));
        assert_eq!(k(KeyCode::Home, n), Some(b"\x1b[H".to_vec()));
        assert_eq!(k(KeyCode::End, n), Some(b"\x1b[F".to_vec()));
        assert_eq!(k(KeyCode::PageUp, n), Some(b"\x1b[5~".to_vec()));
        assert_eq!(k(KeyCode::PageDown, n), Some(b"\x1b[6~".to_vec()));
        assert_eq!(k(KeyCode::Delete, n), Some(b"\x1b[3~".to_vec()));
        assert_eq!(k(KeyCode::Insert, n), Some(b"\x1b[2~".to_vec()));
        // DECCKM: the guest asked for application cursor keys.
        assert_eq!(key_bytes(&KeyEvent::new(KeyCode::Up, n), true), Some(b"\x1bOA".to_vec()));
        // Modified: CSI 1 ; m.
        assert_eq!(k(KeyCode::Right, KeyModifiers::CONTROL), Some(b"\x1b[1;5C".to_vec()));
        assert_eq!(k(KeyCode::Delete, KeyModifiers::SHIFT), Some(b"\x1b[3;2~".to_vec()));
    }

    #[test]
    fn function_keys() {
        let n = KeyModifiers::NONE;
        assert_eq!(k(KeyCode::F(1), n), Some(b"\x1bOP".to_vec()));
        assert_eq!(k(KeyCode::F(4), n), Some(b"\x1bOS".to_vec()));
        assert_eq!(k(KeyCode::F(5), n), Some(b"\x1b[15~".to_vec()));
        assert_eq!(k(KeyCode::F(10), n), Some(b"\x1b[21~".to_vec()));
        assert_eq!(k(KeyCode::F(12), n), Some(b"\x1b[24~".to_vec()));
        assert_eq!(k(KeyCode::F(20), n), None);
    }

    #[test]
    fn paste_is_bracketed_only_when_the_guest_asked() {
        assert_eq!(paste_bytes("ls\nid", false), b"ls\rid".to_vec());
        assert_eq!(paste_bytes("ls\n", true), b"\x1b[200~ls\r\x1b[201~".to_vec());
        assert_eq!(paste_bytes("a\x1b[201~b", true), b"\x1b[200~ab\x1b[201~".to_vec());
    }

    #[tokio::test]
    async fn unreachable_or_wrong_proxies_are_said_in_words() {
        // A port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        // A port that accepts and hangs up: for wss the TLS client is built (rustls with ring)
        // and its handshake fails in words instead of the task dying.
        let hangup = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let hangup_port = hangup.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((c, _)) = hangup.accept().await {
                drop(c);
            }
        });
        let cases = [
            (format!("ws://127.0.0.1:{port}/?token=t"), "cannot reach the console proxy at"),
            (format!("wss://127.0.0.1:{port}/?token=t"), "cannot reach the console proxy at"),
            (format!("wss://127.0.0.1:{hangup_port}/?token=t"), "127.0.0.1"),
            ("http://example/".to_string(), "http://example/"),
        ];
        for (url, want) in cases {
            let (tx, mut rx) = mpsc::unbounded_channel();
            spawn_session(url.clone(), 7, tx);
            match rx.recv().await {
                Some(Response::ConsoleEvent(ConsoleEvent::Closed { session: 7, reason })) => {
                    assert!(reason.contains(want), "{url}: {reason}");
                    assert!(!reason.contains("token="), "the one-time token is not shown: {reason}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn url_errors_read_as_the_cloud_means_them() {
        let api = |s: u16, m: &str| ClientError::Api {
            status: StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST),
            message: m.into(),
            request_id: None,
        };
        assert_eq!(url_error(&api(400, "Unavailable console type serial.")), UrlError::NoSerial);
        assert_eq!(url_error(&api(501, "Not implemented")), UrlError::NoSerial);
        assert_eq!(url_error(&api(409, "Instance not running")), UrlError::NotRunning);
        assert_eq!(
            url_error(&api(404, "Instance abc could not be found.")),
            UrlError::Other("Instance abc could not be found.".into())
        );
    }
}
