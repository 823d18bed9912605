//! The worker against a stub cloud (a bare HTTP listener): each kind's delete goes out as the
//! right method and path, and the cloud's refusal comes back as a sentence.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_tui::config::Profile;
use meridian_tui::worker::{Kind, ProfileBox, Request, Response};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;

/// Starts the stub; returns its base URL and the `METHOD path` of every request it got.
async fn stub_cloud() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (b, s) = (base.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (base, seen) = (b.clone(), s.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then as much body as Content-Length says.
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
                let len: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let line = head.lines().next().unwrap_or_default();
                let mut parts = line.split(' ');
                let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                seen.lock().expect("lock").push(format!("{method} {path}"));
                let (status, extra, body) = if path.ends_with("/auth/tokens") {
                    let ep = |t: &str, u: String| json!({"type": t, "endpoints": [{"interface": "public", "url": u}]});
                    let token = json!({"token": {
                        "project": {"id": "p1", "name": "demo"}, "user": {"id": "u1", "name": "alice"},
                        "roles": [{"name": "member"}], "expires_at": "2099-01-01T00:00:00Z",
                        "catalog": [
                            ep("compute", format!("{base}/compute/v2.1")),
                            ep("image", format!("{base}/image")),
                            ep("network", format!("{base}/network")),
                        ],
                    }});
                    ("201 Created", "X-Subject-Token: tok\r\n", token.to_string())
                } else if method == "DELETE" && path.contains("/networks/busy") {
                    let fault = json!({"NeutronError": {"type": "NetworkInUse", "detail": "",
                        "message": "Unable to complete operation on network busy. There are one or more ports still in use on the network."}});
                    ("409 Conflict", "", fault.to_string())
                } else if method == "DELETE" {
                    ("204 No Content", "", String::new())
                } else {
                    ("404 Not Found", "", json!({"itemNotFound": {"code": 404, "message": "no"}}).to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (base, seen)
}

/// The next response that is not live-tracking chatter.
async fn next(ui: &mut UnboundedReceiver<Response>) -> Response {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(20), ui.recv()).await.expect("a response").expect("open");
        if !matches!(r, Response::LiveMode(_) | Response::ServerUpdate(_) | Response::Listed(_)) {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_is_deleted_with_its_own_call() {
    let (base, seen) = stub_cloud().await;
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
        region: None,
        ..Profile::default()
    };
    worker.send(Request::Login(Box::new(ProfileBox(profile)))).expect("send");
    assert!(matches!(next(&mut ui).await, Response::LoggedIn(_)));

    let cases = [
        (Kind::Flavors, "f1", "DELETE /compute/v2.1/flavors/f1"),
        (Kind::Images, "i1", "DELETE /image/v2/images/i1"),
        (Kind::Networks, "n1", "DELETE /network/v2.0/networks/n1"),
        (Kind::Keypairs, "my key", "DELETE /compute/v2.1/os-keypairs/my%20key"),
    ];
    for (kind, id, want) in cases {
        worker.send(Request::Delete { kind, id: id.into(), name: id.into() }).expect("send");
        match next(&mut ui).await {
            Response::Deleted { kind: k, id: got, .. } => assert_eq!((k, got.as_str()), (kind, id)),
            other => panic!("expected {kind:?} {id} deleted, got {other:?}"),
        }
        assert!(seen.lock().expect("lock").iter().any(|s| s == want), "{want} not in {:?}", seen.lock());
    }

    // A network still in use: the cloud's 409, in words, with the request to retry.
    let req = Request::Delete { kind: Kind::Networks, id: "busy".into(), name: "private".into() };
    worker.send(req.clone()).expect("send");
    match next(&mut ui).await {
        Response::Failed { request, message } => {
            assert_eq!(request, req);
            assert!(message.starts_with("deleting network private failed: Unable to complete"), "{message}");
            assert!(message.ends_with("(409 — still in use)"), "{message}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}
