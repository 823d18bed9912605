//! The worker against a stub cloud (a bare HTTP listener): each kind's delete goes out as the
//! right method and path, and the cloud's refusal comes back as a sentence; a download the cloud
//! stalls or cuts short is cancelled or fails without leaving a file behind. (The working
//! upload and download, against the real server, are in tests/tests/tui_e2e.rs.)

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
                } else if method == "GET" && path.ends_with("/images/slow") | path.ends_with("/images/short") {
                    let img = json!({"id": "x", "name": "slow", "status": "active", "size": 10 << 20});
                    ("200 OK", "", img.to_string())
                } else if method == "GET" && path.ends_with("/file") {
                    // 64 KiB of a promised 10 MiB, then a stall ("slow") or a hang-up ("short").
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                        10 << 20
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&[7u8; 64 << 10]).await;
                    if path.contains("/slow/") {
                        tokio::time::sleep(Duration::from_secs(300)).await;
                    }
                    return;
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

/// The dashboard's worker, logged in to the stub as alice.
async fn logged_in(base: &str) -> (tokio::sync::mpsc::UnboundedSender<Request>, UnboundedReceiver<Response>) {
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
    (worker, ui)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_is_deleted_with_its_own_call() {
    let (base, seen) = stub_cloud().await;
    let (worker, mut ui) = logged_in(&base).await;

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

/// A download the cloud stalls is cancelled with nothing left on disk; one it cuts short fails
/// the same way, never leaving a short file under the name asked for.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_or_broken_download_leaves_no_file() {
    use meridian_tui::transfer::{DownloadSpec, Phase};
    let (base, _) = stub_cloud().await;
    let (worker, mut ui) = logged_in(&base).await;
    let dir = tempfile::tempdir().expect("tmp");
    for (id, image) in [(1, "slow"), (2, "short")] {
        let file = dir.path().join(format!("{image}.img"));
        let spec = DownloadSpec { image_id: image.into(), name: image.into(), file: file.display().to_string() };
        worker.send(Request::Download { id, spec }).expect("send");
        let end = loop {
            let Response::Transfer(p) = next(&mut ui).await else { continue };
            if p.phase == Phase::Moving && p.done > 0 && image == "slow" {
                // The part file is there while bytes come in.
                assert!(dir.path().join("slow.img.part").exists());
                worker.send(Request::CancelTransfer(id)).expect("send");
            }
            if p.phase.finished() {
                break p;
            }
        };
        match image {
            "slow" => assert_eq!(end.phase, Phase::Cancelled, "{end:?}"),
            _ => assert!(matches!(&end.phase, Phase::Failed(m) if m.contains("receiving")), "{end:?}"),
        }
        assert!(!file.exists(), "{image}: no file under the name asked for");
        assert!(!dir.path().join(format!("{image}.img.part")).exists(), "{image}: the part file is removed");
    }
}
