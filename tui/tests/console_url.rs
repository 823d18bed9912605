//! The worker asking a cloud for a serial console, on the wire: `POST …/remote-consoles` with
//! the negotiated microversion (2.6+), the `os-getSerialConsole` action on a cloud below 2.6, and
//! Nova's refusals (400 serial consoles disabled, 409 not running) sorted for the pane. The cloud
//! is a bare HTTP listener answering as Nova's API reference says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_tui::config::Profile;
use meridian_tui::console_pane::UrlError;
use meridian_tui::worker::{ProfileBox, Request, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// What the stub saw of each console request: method, path, microversion header, body.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>, Value)>>>;

/// A cloud whose compute API goes up to `max`.
async fn stub_cloud(max: &'static str) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let (b, s) = (base.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (base, seen) = (b.clone(), s.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let header = |name: &str| {
                    head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                while buf.len() < head_end + len {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
                let line = head.lines().next().unwrap_or_default().to_string();
                let mut parts = line.split(' ');
                let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                let fault =
                    |code: u16, kind: &str, msg: &str| json!({kind: {"code": code, "message": msg}}).to_string();
                let (status, extra, out) = if path.ends_with("/auth/tokens") {
                    let ep = |t: &str, u: String| json!({"type": t, "endpoints": [{"interface": "public", "url": u}]});
                    let token = json!({"token": {
                        "project": {"id": "p1", "name": "demo"}, "user": {"id": "u1", "name": "alice"},
                        "roles": [{"name": "member"}], "expires_at": "2099-01-01T00:00:00Z",
                        "catalog": [ep("compute", format!("{base}/compute/v2.1"))],
                    }});
                    ("201 Created", "X-Subject-Token: tok\r\n", token.to_string())
                } else if method == "GET" && path == "/compute/v2.1" {
                    let v =
                        json!({"version": {"id": "v2.1", "status": "CURRENT", "version": max, "min_version": "2.1"}});
                    ("200 OK", "", v.to_string())
                } else if method == "POST" && path.starts_with("/compute/v2.1/servers/") {
                    let id = path.split('/').nth(4).unwrap_or_default().to_string();
                    seen.lock().expect("lock").push((
                        method.to_string(),
                        path.to_string(),
                        header("openstack-api-version"),
                        body.clone(),
                    ));
                    match (id.as_str(), path.ends_with("/remote-consoles")) {
                        ("off", _) => {
                            ("409 Conflict", "", fault(409, "conflictingRequest", "Instance off is not running."))
                        }
                        ("noserial", _) => {
                            ("400 Bad Request", "", fault(400, "badRequest", "Unavailable console type serial."))
                        }
                        (_, true) => (
                            "200 OK",
                            "",
                            json!({"remote_console": {"protocol": "serial", "type": "serial",
                                "url": "ws://proxy:6083/?token=new"}})
                            .to_string(),
                        ),
                        (_, false) => (
                            "200 OK",
                            "",
                            json!({"console": {"type": "serial", "url": "ws://proxy:6083/?token=old"}}).to_string(),
                        ),
                    }
                } else {
                    ("404 Not Found", "", fault(404, "itemNotFound", "no"))
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                    out.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (base, seen)
}

async fn logged_in(base: &str) -> (UnboundedSender<Request>, UnboundedReceiver<Response>) {
    let (ui_tx, mut ui) = tokio::sync::mpsc::unbounded_channel();
    let worker = meridian_tui::worker::spawn(ui_tx, false);
    let profile = Profile {
        name: "stub".into(),
        auth_url: format!("{base}/identity"),
        username: "alice".into(),
        password: Some("pw".into()),
        project_name: "demo".into(),
        user_domain: "Default".into(),
        project_domain: "Default".into(),
        ..Profile::default()
    };
    worker.send(Request::Login(Box::new(ProfileBox(profile)))).expect("send");
    assert!(matches!(next(&mut ui).await, Response::LoggedIn(_)));
    (worker, ui)
}

async fn next(ui: &mut UnboundedReceiver<Response>) -> Response {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(20), ui.recv()).await.expect("a response").expect("open");
        if !matches!(r, Response::LiveMode(_) | Response::ServerUpdate(_) | Response::Listed(_)) {
            return r;
        }
    }
}

async fn console_url(worker: &UnboundedSender<Request>, ui: &mut UnboundedReceiver<Response>, id: &str) -> Response {
    worker.send(Request::SerialConsole { id: id.into() }).expect("send");
    next(ui).await
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_consoles_at_2_6_and_up_and_refusals_in_words() {
    let (base, seen) = stub_cloud("2.96").await;
    let (worker, mut ui) = logged_in(&base).await;
    match console_url(&worker, &mut ui, "s1").await {
        Response::ConsoleUrl { id, result } => {
            assert_eq!((id.as_str(), result), ("s1", Ok("ws://proxy:6083/?token=new".to_string())))
        }
        other => panic!("{other:?}"),
    }
    let (method, path, version, body) = seen.lock().expect("lock")[0].clone();
    assert_eq!((method.as_str(), path.as_str()), ("POST", "/compute/v2.1/servers/s1/remote-consoles"));
    assert_eq!(version.as_deref(), Some("compute 2.79"), "the negotiated microversion (≥ 2.6) is sent");
    assert_eq!(body, json!({"remote_console": {"protocol": "serial", "type": "serial"}}));

    for (id, want) in [("off", UrlError::NotRunning), ("noserial", UrlError::NoSerial)] {
        match console_url(&worker, &mut ui, id).await {
            Response::ConsoleUrl { result, .. } => assert_eq!(result, Err(want)),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn below_2_6_the_os_get_serial_console_action() {
    let (base, seen) = stub_cloud("2.5").await;
    let (worker, mut ui) = logged_in(&base).await;
    match console_url(&worker, &mut ui, "s1").await {
        Response::ConsoleUrl { result, .. } => assert_eq!(result, Ok("ws://proxy:6083/?token=old".to_string())),
        other => panic!("{other:?}"),
    }
    let (_, path, version, body) = seen.lock().expect("lock")[0].clone();
    assert_eq!(path, "/compute/v2.1/servers/s1/action");
    assert_eq!(version.as_deref(), Some("compute 2.5"));
    assert_eq!(body, json!({"os-getSerialConsole": {"type": "serial"}}));
}
