//! Reaching a guest from the dashboard: the console pane, ssh, key pairs and copy.
//!
//! The console pane runs against a real websocket server on loopback (tokio-tungstenite, speaking
//! what nova-serialproxy speaks: subprotocol `binary`, binary frames, close with a reason). The
//! app's requests are carried out by the worker's own session code (`spawn_session`); only the
//! cloud's URL answer is given by the test. Screens are snapshotted as in `snapshots.rs`.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use futures_util::{SinkExt, StreamExt};
use meridian_tui::app::{App, AppConfig, Screen};
use meridian_tui::console_pane::{UrlError, spawn_session};
use meridian_tui::model::{Image, Server};
use meridian_tui::worker::{Listing, Request, Response, SessionInfo};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request as WsRequest, Response as WsResponse};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const BANNER: &str = "\x1b[1;32mMeridian guest web-1\x1b[0m (busybox, /dev/ttyS0)\r\n\x1b[33mweb-1 login: \x1b[0m";

/// A serial proxy on 127.0.0.1:0: only `?token=good` is let in (401 otherwise), the banner is
/// sent at once, input is echoed, and the line `boom` makes it close with a reason.
async fn serial_proxy() -> (String, UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("ws://{}", listener.local_addr().expect("addr"));
    let (got_tx, got_rx) = unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let got = got_tx.clone();
            tokio::spawn(async move {
                // The shape is tungstenite's handshake callback's, large error and all.
                #[allow(clippy::result_large_err)]
                let check = |req: &WsRequest, mut resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
                    if req.uri().query() != Some("token=good") {
                        let mut e = ErrorResponse::new(Some("Invalid Token".into()));
                        *e.status_mut() = StatusCode::UNAUTHORIZED;
                        return Err(e);
                    }
                    let offered = req.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
                    assert_eq!(offered, Some("binary"), "the client offers the binary subprotocol");
                    resp.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else { return };
                if ws.send(Message::Binary(BANNER.as_bytes().to_vec().into())).await.is_err() {
                    return;
                }
                let mut line = Vec::new();
                while let Some(Ok(msg)) = ws.next().await {
                    let bytes = match msg {
                        Message::Binary(b) => b.to_vec(),
                        Message::Close(_) => {
                            let _ = got.send(b"<closed>".to_vec());
                            return;
                        }
                        _ => continue,
                    };
                    let _ = got.send(bytes.clone());
                    line.extend_from_slice(&bytes);
                    // A terminal line discipline's echo: CR becomes CR LF.
                    let echo: Vec<u8> =
                        bytes.iter().flat_map(|&b| if b == b'\r' { vec![b'\r', b'\n'] } else { vec![b] }).collect();
                    if ws.send(Message::Binary(echo.into())).await.is_err() {
                        return;
                    }
                    if line.ends_with(b"boom\r") {
                        let frame =
                            CloseFrame { code: CloseCode::Away, reason: "the agent's connection was lost".into() };
                        let _ = ws.send(Message::Close(Some(frame))).await;
                        return;
                    }
                    if line.ends_with(b"root\r") {
                        let _ = ws.send(Message::Binary(b"# ".to_vec().into())).await;
                    }
                }
            });
        }
    });
    (base, got_rx)
}

fn id(n: u32) -> String {
    format!("{n:08x}-1111-4222-8333-444455556666")
}

fn server(n: u32, name: &str, status: &str) -> Server {
    server_with(n, name, status, 900, None)
}

fn server_with(n: u32, name: &str, status: &str, image: u32, key: Option<&str>) -> Server {
    let raw = json!({
        "id": id(n), "name": name, "status": status, "OS-EXT-STS:power_state": if status == "ACTIVE" { 1 } else { 4 },
        "addresses": {"net": [{"addr": format!("10.0.0.{n}"), "version": 4, "OS-EXT-IPS:type": "fixed"}]},
        "flavor": {"original_name": "m1.small"}, "image": {"id": id(image)},
        "created": "2026-11-22T02:00:00Z", "key_name": key,
    });
    meridian_tui::model::parse_server(&raw).expect("server")
}

struct Harness {
    app: App,
    rx: UnboundedReceiver<Request>,
    ui_tx: UnboundedSender<Response>,
    ui_rx: UnboundedReceiver<Response>,
    term: Terminal<TestBackend>,
}

impl Harness {
    fn new() -> Harness {
        let (tx, rx) = unbounded_channel();
        let (ui_tx, ui_rx) = unbounded_channel();
        let mut app = App::new(tx, Screen::Main, AppConfig::default());
        app.clock = Utc.with_ymd_and_hms(2026, 11, 22, 3, 0, 0).single();
        app.on_response(Response::LoggedIn(SessionInfo {
            cloud: "devstack".into(),
            auth_url: "http://cloud/identity".into(),
            user: "alice".into(),
            project: "demo".into(),
            project_id: "p1".into(),
            admin: false,
            expires_at: None,
            compute_version: Some("2.79".into()),
        }));
        app.on_response(Response::Listed(Listing::Servers(vec![
            server(1, "web-1", "ACTIVE"),
            server_with(3, "db", "SHUTOFF", 901, Some("laptop")),
        ])));
        let image = |n: u32, name: &str, props: serde_json::Value| {
            let mut raw = json!({"id": id(n), "name": name, "status": "active"});
            if let (Some(o), Some(p)) = (raw.as_object_mut(), props.as_object()) {
                o.extend(p.clone());
            }
            let mut i: Image = serde_json::from_value(raw.clone()).expect("image");
            i.raw = raw;
            i
        };
        app.on_response(Response::Listed(Listing::Images(vec![
            image(900, "meridian-guest", json!({"os_distro": "busybox"})),
            image(901, "appliance", json!({})),
        ])));
        app.on_response(Response::LiveMode("live".into()));
        let mut h = Harness { app, rx, ui_tx, ui_rx, term: Terminal::new(TestBackend::new(80, 16)).expect("terminal") };
        h.requests();
        h
    }

    /// What the app asked the worker; console connects are carried out as the worker does.
    fn requests(&mut self) -> Vec<Request> {
        let mut v = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            if let Request::ConsoleConnect { url, session } = &r {
                spawn_session(url.clone(), *session, self.ui_tx.clone());
            }
            v.push(r);
        }
        v
    }

    /// Feeds the session's events to the app until the screen shows `want`.
    async fn until(&mut self, want: &str) -> String {
        self.until_with(want, |s| s.contains(want)).await
    }

    async fn until_with(&mut self, want: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.requests();
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.ui_rx.recv()).await {
                Ok(Some(r)) => self.app.on_response(r),
                _ => panic!("timed out waiting for {want:?}; screen:\n{s}"),
            }
        }
    }

    fn key(&mut self, code: KeyCode, mods: KeyModifiers) {
        self.app.on_key(KeyEvent::new(code, mods));
    }

    fn chars(&mut self, s: &str) {
        for c in s.chars() {
            self.key(KeyCode::Char(c), KeyModifiers::NONE);
        }
    }

    fn screen(&mut self) -> String {
        self.term.draw(|f| self.app.draw(f)).expect("draw");
        let buf = self.term.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_string()).collect();
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// The colour the screen shows `text` in.
    fn fg_of(&self, text: &str) -> Option<Color> {
        let buf = self.term.backend().buffer();
        for y in 0..buf.area.height {
            let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_string()).collect();
            if let Some(x) = line.find(text) {
                let col = line[..x].chars().count() as u16;
                return Some(buf[(col, y)].fg);
            }
        }
        None
    }

    /// Attaches with `a` to the selected row; the cloud's answer is `result`.
    fn attach(&mut self, result: Result<String, UrlError>) {
        self.chars("a");
        let reqs = self.requests();
        let Some(Request::SerialConsole { id }) = reqs.into_iter().next() else {
            panic!("a asks for a serial console")
        };
        self.app.on_response(Response::ConsoleUrl { id, result });
    }
}

macro_rules! snap {
    ($name:expr, $text:expr) => {
        insta::with_settings!({filters => vec![
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[uuid]"),
            (r"127\.0\.0\.1:[0-9]+", "127.0.0.1:[port]"),
        ]}, {
            insta::assert_snapshot!($name, $text);
        });
    };
}

#[tokio::test]
async fn attach_type_and_detach_over_a_real_websocket() {
    let (base, mut got) = serial_proxy().await;
    let mut h = Harness::new();
    h.attach(Ok(format!("{base}/?token=good")));
    let s = h.until("web-1 login:").await;
    assert!(s.contains("connected"), "{s}");
    // Guest colours reach the screen: the banner in green (SGR 32), the prompt in yellow (33),
    // as the terminal's own palette entries 2 and 3.
    assert_eq!(h.fg_of("Meridian guest web-1"), Some(Color::Indexed(2)));
    assert_eq!(h.fg_of("web-1 login:"), Some(Color::Indexed(3)));
    assert_eq!(h.fg_of("(busybox"), Some(Color::Reset));
    snap!("console_banner", s);

    // Keys go to the guest as a terminal sends them; the echo comes back through the emulator.
    h.chars("root");
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    let s = h.until("# ").await;
    snap!("console_logged_in", s);
    let mut sent = Vec::new();
    while sent.len() < 5 {
        sent.extend(got.recv().await.expect("the proxy got keys"));
    }
    assert_eq!(sent, b"root\r");
    h.key(KeyCode::Up, KeyModifiers::NONE);
    h.key(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(got.recv().await.expect("arrow"), b"\x1b[A");
    assert_eq!(got.recv().await.expect("ctrl-c"), vec![0x03]);

    // Ctrl-] detaches: the socket is closed properly and the list is back.
    h.key(KeyCode::Char(']'), KeyModifiers::CONTROL);
    assert_eq!(got.recv().await.expect("close"), b"<closed>");
    let s = h.screen();
    assert!(s.contains("detached from web-1's console") && s.contains("Instances"), "{s}");
}

#[tokio::test]
async fn a_refused_token_is_said_in_words() {
    let (base, _got) = serial_proxy().await;
    let mut h = Harness::new();
    h.attach(Ok(format!("{base}/?token=used")));
    let s = h.until("refused the token").await;
    assert!(s.contains("(401)"), "{s}");
    snap!("console_token_refused", s);
    // `a` in the closed pane asks the cloud for a fresh URL.
    h.chars("a");
    assert!(matches!(h.requests().as_slice(), [Request::SerialConsole { .. }]));
}

#[tokio::test]
async fn a_dropped_session_shows_the_reason_and_the_dashboard_stays_usable() {
    let (base, _got) = serial_proxy().await;
    let mut h = Harness::new();
    h.attach(Ok(format!("{base}/?token=good")));
    h.until("login:").await;
    h.chars("boom");
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    let s = h.until("the agent's connection was lost").await;
    snap!("console_dropped", s);
    // Esc closes the pane; the table takes keys again.
    h.key(KeyCode::Esc, KeyModifiers::NONE);
    h.chars("j");
    let s = h.screen();
    assert!(s.contains("Instances") && !s.contains("Console web-1"), "{s}");
}

#[tokio::test]
async fn a_cloud_without_serial_consoles_and_a_stopped_instance() {
    let mut h = Harness::new();
    h.attach(Err(UrlError::NoSerial));
    let s = h.screen();
    assert!(s.contains("This cloud has no serial consoles (Nova's [serial_console] is disabled)"), "{s}");
    snap!("console_no_serial", s);
    h.key(KeyCode::Esc, KeyModifiers::NONE);

    h.chars("j");
    h.attach(Err(UrlError::NotRunning));
    let s = h.screen();
    assert!(s.contains("db is SHUTOFF; start it to attach"), "{s}");
    snap!("console_not_running", s);
}

#[tokio::test]
async fn copy_writes_nothing_itself_and_names_what_was_copied() {
    let mut h = Harness::new();
    h.chars("y");
    assert_eq!(h.app.take_clipboard(), Some(id(1)));
    assert!(h.screen().contains("copied id: 00000001-1111-4222-8333-444455556666"));
    assert_eq!(h.app.take_clipboard(), None);
    // In the pane, before connecting, y copies the console URL.
    h.attach(Ok("ws://proxy.example:6083/?token=abc".into()));
    h.key(KeyCode::Char('y'), KeyModifiers::NONE);
    assert_eq!(h.app.take_clipboard().as_deref(), Some("ws://proxy.example:6083/?token=abc"));
}

#[tokio::test]
async fn ssh_takes_the_user_from_the_image_or_asks() {
    let mut h = Harness::new();
    h.chars("x");
    let call = h.app.take_ssh().expect("x asks for ssh");
    assert_eq!((call.user.as_str(), call.address.as_str()), ("root", "10.0.0.1"));
    assert_eq!(call.keypair, None);
    assert_eq!(call.display(), "ssh -o StrictHostKeyChecking=accept-new root@10.0.0.1");
    assert!(h.requests().is_empty(), "ssh needs nothing from the cloud");

    // An image that names no user: a prompt asks.
    h.chars("j");
    h.chars("x");
    assert_eq!(h.app.take_ssh(), None);
    let s = h.screen();
    assert!(s.contains("ssh to db") && s.contains("does not name its login user"), "{s}");
    snap!("ssh_user_prompt", s);
    h.chars("admin");
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    let call = h.app.take_ssh().expect("enter runs ssh");
    assert_eq!((call.user.as_str(), call.address.as_str()), ("admin", "10.0.0.3"));
    assert_eq!((call.cloud.as_str(), call.keypair.as_deref()), ("devstack", Some("laptop")));
    h.app.ssh_finished(&call, Ok(Some(255)));
    let s = h.screen();
    assert!(s.contains("ssh to db exited with status 255"), "{s}");
}

#[tokio::test]
async fn key_pair_form_generates_and_shows_the_private_key_once() {
    let mut h = Harness::new();
    h.app.run_command("keypairs");
    h.requests();
    h.chars("c");
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    assert!(h.screen().contains("a key pair needs a name"));
    h.chars("ops key");
    let s = h.screen();
    snap!("keypair_form", s);
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    let reqs = h.requests();
    assert_eq!(
        reqs,
        vec![Request::CreateKeypair {
            cloud: "devstack".into(),
            name: "ops key".into(),
            source: meridian_tui::keys::KeySource::Generate
        }]
    );
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtz\n-----END OPENSSH PRIVATE KEY-----\n";
    h.app.on_response(Response::KeypairCreated(meridian_tui::keys::Created {
        name: "ops key".into(),
        saved: Some(Ok("/home/alice/.local/share/meridian/keys/devstack/ops key".into())),
        private_key: Some(private.into()),
        generated_by: Some("the cloud"),
    }));
    let s = h.screen();
    assert!(s.contains("Private key saved to") && s.contains("BEGIN OPENSSH PRIVATE KEY"), "{s}");
    snap!("keypair_created", s);
    // Shown once: any key closes it and the list is reloaded.
    assert!(h.requests().contains(&Request::List(meridian_tui::worker::Kind::Keypairs)));
    h.key(KeyCode::Esc, KeyModifiers::NONE);
    assert!(!h.screen().contains("BEGIN OPENSSH"));
}

#[tokio::test]
async fn the_emulator_takes_the_panes_size_and_follows_a_resize() {
    let (base, _got) = serial_proxy().await;
    let mut h = Harness::new();
    h.attach(Ok(format!("{base}/?token=good")));
    h.until("login:").await;
    // 80×16 terminal: the pane's inside is 78 wide; a 100-character line wraps after 78.
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    h.chars(&"q".repeat(100));
    let s = h.until_with("all 100 echoed", |s| s.matches('q').count() == 100).await;
    assert!(s.lines().any(|l| l == format!("│{}│", "q".repeat(78))), "wrapped at 78:\n{s}");
    assert!(s.lines().any(|l| l.starts_with(&format!("│{}█", "q".repeat(22)))), "the rest on the next line:\n{s}");
    // The terminal shrinks to 50×12: the emulator is 48 wide from the next frame on.
    h.term.backend_mut().resize(50, 12);
    h.screen();
    h.key(KeyCode::Enter, KeyModifiers::NONE);
    h.chars(&"z".repeat(60));
    let s = h.until_with("all 60 echoed", |s| s.matches('z').count() == 60).await;
    assert!(s.lines().any(|l| l == format!("│{}│", "z".repeat(48))), "wrapped at 48:\n{s}");
    assert!(s.lines().any(|l| l.starts_with(&format!("│{}█", "z".repeat(12)))), "the rest on the next line:\n{s}");
}
