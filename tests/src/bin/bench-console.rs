//! Benchmark of the interactive serial console (figures, not a test): a key press sent on the
//! client's websocket → its echo back on the same websocket, through server, agent, libvirt's
//! console stream and the guest's getty at its `login:` prompt, on a real QEMU guest.
//!
//! Each of `BENCH_KEYS` (200) letters is sent alone and timed until it comes back; a backspace
//! after each (untimed) keeps the login line short. Prints p50/p99/max.
//!
//! Run: `cargo build --release --workspace && target/release/bench-console` (needs
//! qemu:///system, see scripts/libvirt.sh).

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads until `seen` ends up containing `want`; what was read.
async fn read_until(ws: &mut Ws, want: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    while !seen.windows(want.len()).any(|w| w == want) {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => seen.extend_from_slice(&b),
            Ok(Some(Ok(_))) => {}
            other => panic!("waiting for {:?}: {other:?}; read {:?}", String::from_utf8_lossy(want), seen),
        }
    }
    seen
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let keys: usize = std::env::var("BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent = Agent::start_opts(&server, "bench-console", vm::URI, &[]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "bench", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image = vm::upload_image(&admin, "guest", &vm::image_dir().join("disk.qcow2"), "qcow2", json!({})).await;
    let (net, _) = vm::network(&admin, "benchnet", &vm::private_subnet(5)).await;
    guard.network(&format!("meridian-{net}"));
    let body =
        json!({"server": {"name": "bench", "imageRef": image, "flavorRef": flavor, "networks": [{"uuid": net}]}});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], 180).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    vm::wait_console(&admin, &id, 180, |c| c.contains(vm::READY)).await;

    let c = admin
        .post("compute", &format!("/servers/{id}/action"), &json!({"os-getSerialConsole": {"type": "serial"}}))
        .await
        .expect("console url");
    let url = c["console"]["url"].as_str().expect("url").to_string();
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await.expect("console websocket");
    ws.send(Message::Binary(b"\r".to_vec().into())).await.expect("send");
    read_until(&mut ws, b"login: ").await;

    let mut took = Vec::with_capacity(keys);
    for i in 0..keys {
        let key = b'a' + (i % 26) as u8;
        let t0 = Instant::now();
        ws.send(Message::Binary(vec![key].into())).await.expect("send");
        read_until(&mut ws, &[key]).await;
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        // Erase it again (getty echoes "\b \b").
        ws.send(Message::Binary(vec![0x7f].into())).await.expect("send");
        read_until(&mut ws, b"\x08").await;
    }
    took.sort_by(f64::total_cmp);
    println!(
        "serial console key → echo over {} keys: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().copied().unwrap_or(f64::NAN)
    );
    let _ = ws.close(None).await;
    drop(agent);
    drop(server);
}
