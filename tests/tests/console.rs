//! Remote consoles on a real QEMU guest (`qemu:///system`), through the real server and agent:
//! console URLs from the unmodified `openstack console url show`, the serial console driven
//! over a websocket (log in, run a command), single-use tokens, the noVNC page rendered by
//! headless chromium, and a stop while attached. `MERIDIAN_SKIP_REAL_VM=1` skips the tier.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::json;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

/// Hang guards only, never timing assertions.
const BOOT_SECS: u64 = 180;
const IO_SECS: u64 = 60;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Result<(Ws, Option<String>), tungstenite::Error> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("sec-websocket-protocol", "binary".parse().expect("header"));
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    let proto = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok((ws, proto))
}

/// Reads guest output into `seen` until `pred` holds on it.
async fn read_until(ws: &mut Ws, seen: &mut String, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(IO_SECS);
    while !pred(seen) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => seen.push_str(&String::from_utf8_lossy(&b)),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("waiting for {what}: {other:?}; output so far: {seen:?}"),
            Err(_) => panic!("no {what} within {IO_SECS} s; output so far: {seen:?}"),
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Binary(text.as_bytes().to_vec().into())).await.expect("send keys");
}

/// `openstack console url show --<kind> ID`: the URL.
fn console_url(server: &Server, kind: &str, id: &str) -> String {
    let v = server.admin_cli().json(&["console", "url", "show", kind, id]);
    v["url"].as_str().unwrap_or_else(|| panic!("no url in {v}")).to_string()
}

async fn boot(admin: &Client, guard: &LibvirtGuard, name: &str) -> String {
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "vm.console", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image =
        vm::upload_image(admin, "meridian-guest", &vm::image_dir().join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(admin, "consolenet", &vm::private_subnet(3)).await;
    guard.network(&format!("meridian-{net_id}"));
    let body =
        json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor, "networks": [{"uuid": net_id}]}});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    let s = wait_server(admin, &id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    vm::wait_console(admin, &id, BOOT_SECS, |c| c.contains(vm::READY)).await;
    id
}

/// Distinct colours, and the share of pixels that differ from the most common one, in the
/// part of a PNG below `skip_top` rows.
fn picture_variety(png_bytes: &[u8], skip_top: u32) -> (usize, f64) {
    let decoder = png::Decoder::new(png_bytes);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let channels = info.color_type.samples();
    let mut counts = std::collections::HashMap::<&[u8], usize>::new();
    for y in skip_top..info.height {
        let row = &buf[(y as usize * info.line_size)..((y as usize + 1) * info.line_size)];
        for px in row.chunks(channels) {
            *counts.entry(px).or_default() += 1;
        }
    }
    let total: usize = counts.values().sum();
    let top = counts.values().copied().max().unwrap_or(0);
    (counts.len(), if total == 0 { 0.0 } else { (total - top) as f64 / total as f64 })
}

/// Opens `url` in headless chromium and takes screenshots through the DevTools protocol until
/// the part below noVNC's status bar is not one flat colour (or the hang guard ends); the last
/// screenshot and its variety. (`--screenshot` alone fires before the websocket has drawn.)
async fn screenshot_until_drawn(url: &str) -> (Vec<u8>, usize, f64) {
    use base64::Engine as _;
    let profile = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut chromium = tokio::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=800,600"])
        .arg(format!("--remote-debugging-port={port}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run chromium (scripts/deps.sh installs it)");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(IO_SECS);
    let page_ws = loop {
        assert!(tokio::time::Instant::now() < deadline, "chromium's DevTools never answered");
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await
            && let Ok(targets) = r.json::<serde_json::Value>().await
            && let Some(ws) = targets.as_array().and_then(|t| {
                t.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(String::from))
            })
        {
            break ws;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (mut cdp, _) = tokio_tungstenite::connect_async(page_ws.as_str()).await.expect("DevTools websocket");
    let mut last = (Vec::new(), 0, 0.0);
    for n in 1.. {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        let call = json!({"id": n, "method": "Page.captureScreenshot", "params": {"format": "png"}});
        cdp.send(Message::Text(call.to_string().into())).await.expect("DevTools call");
        let data = loop {
            match tokio::time::timeout_at(deadline, cdp.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                    if v["id"] == n {
                        break v["result"]["data"].as_str().map(String::from);
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => break None,
            }
        };
        let Some(png_bytes) = data.and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok()) else {
            break;
        };
        let (colours, varied) = picture_variety(&png_bytes, 40);
        last = (png_bytes, colours, varied);
        if colours >= 2 && varied > 0.002 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = chromium.kill().await;
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_and_vnc_consoles_of_a_real_guest() {
    if !vm::enabled("serial_and_vnc_consoles_of_a_real_guest") {
        return;
    }
    // Dropped after the agent and server (declared first): removes what they left on failure.
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let host = format!("vm-{}", std::process::id());
    let agent = Agent::start_opts(&server, &host, vm::URI, &["--stop-timeout-secs", "60"]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let id = boot(&admin, &guard, "consolevm").await;

    // Serial: log in and run a command through the websocket.
    let url = console_url(&server, "--serial", &id);
    assert!(url.starts_with(&format!("ws://127.0.0.1:{}/console/serial/?token=", server.port)), "{url}");
    let (mut ws, proto) = connect(&url).await.expect("serial console");
    assert_eq!(proto.as_deref(), Some("binary"));
    let mut seen = String::new();
    send(&mut ws, "\r").await;
    read_until(&mut ws, &mut seen, "the login prompt", |s| s.contains("login:")).await;
    send(&mut ws, "root\r").await;
    read_until(&mut ws, &mut seen, "a shell prompt", |s| s.contains(" # ")).await;
    let mut after = String::new();
    send(&mut ws, "hostname\r").await;
    read_until(&mut ws, &mut after, "the hostname", |s| s.contains("\nconsolevm\r")).await;
    // The same token does not open a second console.
    match connect(&url).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401);
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            assert!(body.contains("already used"), "{body}");
        }
        other => panic!("a used token must be refused: {:?}", other.map(|_| ())),
    }
    let _ = ws.close(None).await;
    // virtlogd kept logging the console meanwhile (what os-getConsoleOutput returns).
    vm::wait_console(&admin, &id, IO_SECS, |c| c.contains("login: root")).await;

    // VNC: the page the URL names is ours, and chromium renders the guest's screen in it.
    let url = console_url(&server, "--novnc", &id);
    let page_prefix = format!("http://127.0.0.1:{}/console/novnc/vnc_lite.html?path=", server.port);
    assert!(url.starts_with(&page_prefix), "{url}");
    let page = reqwest::get(format!("http://127.0.0.1:{}/console/novnc/vnc_lite.html", server.port))
        .await
        .expect("noVNC page");
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.expect("page").contains("noVNC"));
    let (png_bytes, colours, varied) = screenshot_until_drawn(&url).await;
    let kept = vm::root().join("target/console-vnc.png");
    let _ = std::fs::write(&kept, &png_bytes);
    assert!(
        colours >= 2 && varied > 0.002,
        "the VNC canvas stayed blank: {colours} colours, {varied} varied (last screenshot in {})",
        kept.display()
    );

    // A stop while attached: the client is told why its console closed.
    let url = console_url(&server, "--serial", &id);
    let (mut ws, _) = connect(&url).await.expect("serial console");
    let mut seen = String::new();
    send(&mut ws, "\r").await;
    read_until(&mut ws, &mut seen, "the prompt", |s| s.contains('#') || s.contains("login:")).await;
    admin.post("compute", &format!("/servers/{id}/action"), &json!({"os-stop": null})).await.expect("stop");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(BOOT_SECS);
    let reason = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.expect("a close before the hang guard") {
            Some(Ok(Message::Close(Some(frame)))) => break frame.reason.to_string(),
            Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame with a reason, got {other:?}"),
        }
    };
    assert!(reason.contains(&host) && reason.contains("console closed"), "{reason}");
    let s = wait_server(&admin, &id, &["SHUTOFF", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "SHUTOFF", "{s}");
    // A stopped guest has no console: 409 from the CLI's call.
    let out = server.admin_cli().output(&["console", "url", "show", "--serial", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not ready"), "{}", String::from_utf8_lossy(&out.stderr));

    drop(agent);
    drop(server);
}
