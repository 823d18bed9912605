//! Benchmark of block storage (figures, not a test), against the real server and an agent on
//! `qemu:///system`:
//!
//! - volume create: `POST /volumes` → `available` for an empty 10 GiB volume, and for a 1 GiB
//!   volume from a 1 GiB raw image of non-zero bytes (the first from a cold image cache: the
//!   agent downloads the image; then warm);
//! - attach and detach latency on a running guest: `POST os-volume_attachments` → `in-use`,
//!   `DELETE` → `available` (the guest must release the disk);
//! - sequential write throughput: `dd oflag=direct` of 256 MiB inside the guest to the attached
//!   volume, against the same `dd` on the host to a file in the agent's volume directory.
//!
//! Run: `cargo build -p meridian-e2e --bin bench-volume && target/debug/bench-volume` (a debug
//! build of the server and agent is fine: the time goes to I/O, qemu-img and the guest).
//! `BENCH_RUNS` changes the default 3 runs per figure.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::{Value, json};

const GIB: usize = 1 << 30;
const DD_MIB: u64 = 256;

fn p50(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() { f64::NAN } else { s[s.len() / 2] }
}

async fn wait_volume(admin: &Client, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v = admin.get("block-storage", &format!("/volumes/{id}")).await.expect("volume")["volume"].clone();
        if v["status"] == want {
            return v;
        }
        assert!(!v["status"].as_str().unwrap_or_default().starts_with("error"), "volume {id}: {v}");
        assert!(Instant::now() < deadline, "volume {id} never reached {want}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds from `POST /volumes` with `body` until the volume is available; its id.
async fn create_volume(admin: &Client, body: Value) -> (f64, String) {
    let t0 = Instant::now();
    let r = admin.post("block-storage", "/volumes", &json!({"volume": body})).await.expect("create volume");
    let id = r["volume"]["id"].as_str().expect("id").to_string();
    wait_volume(admin, &id, "available").await;
    (t0.elapsed().as_secs_f64(), id)
}

async fn delete_volume(admin: &Client, id: &str) {
    admin.delete("block-storage", &format!("/volumes/{id}")).await.expect("delete volume");
    let deadline = Instant::now() + Duration::from_secs(120);
    while admin.get("block-storage", &format!("/volumes/{id}")).await.is_ok() {
        assert!(Instant::now() < deadline, "volume {id} was never deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 1 GiB of non-zero, non-repeating bytes (xorshift), so nothing is skipped as a hole.
fn image_bytes() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(GIB);
    while out.len() < GIB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend(x.to_le_bytes().iter().map(|b| b | 1));
    }
    out
}

/// `dd` of DD_MIB MiB of zeros to `target` with O_DIRECT on the host: MiB/s.
fn host_dd(target: &Path) -> f64 {
    let t0 = Instant::now();
    let out = std::process::Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.display()))
        .args(["bs=1M", &format!("count={DD_MIB}"), "oflag=direct", "conv=fsync"])
        .output()
        .expect("dd");
    assert!(out.status.success(), "host dd: {}", String::from_utf8_lossy(&out.stderr));
    DD_MIB as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let libvirt_ok = vm::virsh(&["version"]).status.success();
    let kvm = Path::new("/dev/kvm").exists();
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let uri = if libvirt_ok { vm::URI } else { "test:///default" };
    let agent = Agent::start_opts(&server, &format!("bench-vol-{}", std::process::id()), uri, &[]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    println!(
        "bench-volume: debug build, {runs} runs per figure, agent on {uri} ({})",
        if kvm { "KVM available" } else { "no KVM: TCG" }
    );

    // Empty 10 GiB volumes.
    let mut empty = Vec::new();
    for _ in 0..runs {
        let (t, id) = create_volume(&admin, json!({"size": 10})).await;
        empty.push(t);
        delete_volume(&admin, &id).await;
    }
    println!("volume create, empty 10 GiB:            p50 {:8.3} s  (runs {empty:.3?})", p50(&empty));

    // From a 1 GiB raw image with real content.
    let img = admin
        .post(
            "image",
            "/v2/images",
            &json!({"name": "bench-1g", "disk_format": "raw", "container_format": "bare", "visibility": "public"}),
        )
        .await
        .expect("image");
    let img_id = img["id"].as_str().expect("id").to_string();
    // 1 GiB through a debug server on a busy host: longer than the client's default timeout.
    let resp = admin
        .request(reqwest::Method::PUT, "image", &format!("/v2/images/{img_id}/file"))
        .expect("url")
        .header("content-type", "application/octet-stream")
        .timeout(Duration::from_secs(1200))
        .body(image_bytes())
        .send()
        .await
        .expect("upload");
    assert!(resp.status().is_success(), "upload: {}", resp.status());
    let mut from_image = Vec::new();
    for _ in 0..runs {
        let (t, id) = create_volume(&admin, json!({"size": 1, "imageRef": img_id})).await;
        from_image.push(t);
        delete_volume(&admin, &id).await;
    }
    let warm = &from_image[1..];
    println!(
        "volume create, 1 GiB from a 1 GiB image: cold cache {:8.3} s, warm p50 {:8.3} s  (runs {from_image:.3?})",
        from_image[0],
        p50(warm)
    );

    if !libvirt_ok {
        println!("attach/detach and guest dd: skipped (qemu:///system does not answer, so no real guest)");
        return;
    }

    // A running guest that, once a volume appears as vdc (the config drive is vdb), writes to it.
    let image_dir = vm::image_dir();
    let guest_img = vm::upload_image(&admin, "meridian-guest", &image_dir.join("disk.qcow2"), "qcow2", json!({})).await;
    let flavor = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "bench.vol", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor")["flavor"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (net, _) = vm::network(&admin, "benchvol", &vm::private_subnet(13)).await;
    guard.network(&format!("meridian-{net}"));
    let script = format!(
        "#!/bin/sh\ni=0; while [ ! -b /dev/vdc ] && [ $i -lt 1200 ]; do sleep 0.5; i=$((i+1)); done\n\
         t0=$(cut -d' ' -f1 /proc/uptime)\n\
         dd if=/dev/zero of=/dev/vdc bs=1M count={DD_MIB} oflag=direct 2>/tmp/dd.err; rc=$?\n\
         t1=$(cut -d' ' -f1 /proc/uptime)\n\
         echo \"bench-dd rc=$rc t0=$t0 t1=$t1 $(tail -n 1 /tmp/dd.err)\"\n"
    );
    let body = json!({"server": {"name": "bench-vol", "imageRef": guest_img, "flavorRef": flavor,
        "networks": [{"uuid": net}], "user_data": base64::engine::general_purpose::STANDARD.encode(script)}});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let sid = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{sid}"));
    let s = wait_server(&admin, &sid, &["ACTIVE", "ERROR"], 300).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    // Its user data now waits for the volume (the banner comes after it): up is enough.
    vm::wait_console(&admin, &sid, 300, |c| c.contains("meridian-guest: ssh=")).await;

    let (_, vid) = create_volume(&admin, json!({"size": 1, "name": "bench-data"})).await;
    let (mut attach, mut detach) = (Vec::new(), Vec::new());
    let mut guest_mibs = f64::NAN;
    for run in 0..runs {
        let t0 = Instant::now();
        let body = json!({"volumeAttachment": {"volumeId": vid}});
        admin.post("compute", &format!("/servers/{sid}/os-volume_attachments"), &body).await.expect("attach");
        wait_volume(&admin, &vid, "in-use").await;
        attach.push(t0.elapsed().as_secs_f64());
        if run == 0 {
            let log = vm::wait_console(&admin, &sid, 300, |c| c.contains("bench-dd ")).await;
            let line = log.lines().find(|l| l.contains("bench-dd ")).unwrap_or_default().to_string();
            let field = |k: &str| -> f64 {
                line.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
            };
            assert!(line.contains("rc=0"), "the guest's dd failed: {line}");
            guest_mibs = DD_MIB as f64 / (field("t1=") - field("t0="));
            println!("guest dd line: {line}");
        }
        let t0 = Instant::now();
        admin.delete("compute", &format!("/servers/{sid}/os-volume_attachments/{vid}")).await.expect("detach");
        wait_volume(&admin, &vid, "available").await;
        detach.push(t0.elapsed().as_secs_f64());
    }
    println!("attach (API → in-use), running guest:    p50 {:8.3} s  (runs {attach:.3?})", p50(&attach));
    println!("detach (API → available), running guest: p50 {:8.3} s  (runs {detach:.3?})", p50(&detach));

    let host_file = agent.state_dir.join("volumes").join("bench-host-dd.raw");
    let host_mibs = host_dd(&host_file);
    let _ = std::fs::remove_file(&host_file);
    println!(
        "sequential write, {DD_MIB} MiB dd oflag=direct: guest → volume {guest_mibs:8.1} MiB/s, host → file {host_mibs:8.1} MiB/s ({:.0} %)",
        100.0 * guest_mibs / host_mibs
    );

    admin.delete("compute", &format!("/servers/{sid}")).await.expect("delete server");
    wait_server(&admin, &sid, &["DELETED"], 300).await;
    delete_volume(&admin, &vid).await;
}
