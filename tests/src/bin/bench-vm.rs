//! Benchmark of a real boot (figures, not a test): the hypervisor's own time against Meridian's.
//!
//! - hypervisor: `virsh create` of the very domain XML the agent generated (same disk image,
//!   config drive, network with a static DHCP entry) → the guest's banner in its serial log;
//! - Meridian: `POST /servers` → the same banner in the same kind of log.
//!
//! Both are timed by one observer polling the console log file every 5 ms, so the API's own
//! console polling does not count. The network exists throughout (an anchor guest keeps it), so
//! neither side pays for creating it. Runs alternate between the two sides; p50 of each.
//!
//! Run: `cargo build --release --workspace && target/release/bench-vm` (needs qemu:///system,
//! see scripts/libvirt.sh). `BENCH_RUNS` changes the default 5.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard, READY};
use meridian_e2e::{Agent, Server, wait_server};
use serde_json::json;

fn p50(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() { f64::NAN } else { s[s.len() / 2] }
}

/// Times from `t0` until the QEMU pid file appears and until the banner is in `log`.
struct Timing {
    qemu: f64,
    banner: f64,
    /// The guest's own uptime at its DHCP answer and at its banner (its kernel clock).
    guest_ip: f64,
    guest_ready: f64,
}

/// The `uptime=` the guest printed on its first line containing `marker`.
fn guest_uptime(text: &str, marker: &str) -> f64 {
    text.lines()
        .find(|l| l.contains(marker))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("uptime=")))
        .and_then(|u| u.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn observe(t0: Instant, domain: &str, log: &Path) -> Timing {
    let pid_file = PathBuf::from(format!("/run/libvirt/qemu/{domain}.pid"));
    let mut qemu = None;
    let deadline = t0 + Duration::from_secs(300);
    loop {
        if qemu.is_none() && pid_file.exists() {
            qemu = Some(t0.elapsed().as_secs_f64());
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(READY) {
            let banner = t0.elapsed().as_secs_f64();
            // The banner line may still be half written: read the guest's clock values once
            // it is complete (this does not change the time measured).
            tokio::time::sleep(Duration::from_millis(300)).await;
            let text = std::fs::read_to_string(log).unwrap_or(text);
            return Timing {
                qemu: qemu.unwrap_or(banner),
                banner,
                guest_ip: guest_uptime(&text, "meridian-guest: ip="),
                guest_ready: guest_uptime(&text, READY),
            };
        }
        assert!(Instant::now() < deadline, "no banner in {}", log.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn boot(admin: &Client, name: &str, image: &str, flavor: &str, net: &str) -> String {
    let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor, "networks": [{"uuid": net}]}});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    r["server"]["id"].as_str().expect("id").to_string()
}

/// Replaces the text between `open` and `close` (the first occurrence).
fn replace_between(s: &str, open: &str, close: &str, with: &str) -> String {
    let Some(a) = s.find(open) else { return s.to_string() };
    let Some(b) = s[a + open.len()..].find(close) else { return s.to_string() };
    format!("{}{open}{with}{close}{}", &s[..a], &s[a + open.len() + b + close.len()..])
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    assert!(vm::enabled("bench-vm"), "the benchmark needs qemu:///system");
    let image = vm::image_dir();
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent = Agent::start_opts(&server, "bench-vm", vm::URI, &[]);
    let admin = server.admin().await;
    for _ in 0..300 {
        let s = admin.get("compute", "/os-services?binary=nova-compute").await.expect("services");
        if s["services"].as_array().is_some_and(|a| a.iter().any(|x| x["state"] == "up")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "bench", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let cidr = vm::private_subnet(3);
    let (net_id, _) = vm::network(&admin, "benchnet", &cidr).await;
    let libvirt_net = format!("meridian-{net_id}");
    guard.network(&libvirt_net);
    let instances = agent.state_dir.join("instances");

    // The anchor: caches the image and creates the network, then idles.
    let anchor = boot(&admin, "anchor", &image_id, &flavor, &net_id).await;
    guard.domain(&format!("meridian-{anchor}"));
    let anchor_log = instances.join(&anchor).join("console.log");
    observe(Instant::now(), &format!("meridian-{anchor}"), &anchor_log).await;

    // The baseline guest's own DHCP entry, an address Meridian's IPAM will not hand out in
    // this run (the subnet's last host).
    let prefix = cidr.trim_end_matches(".0/24");
    let base_ip = format!("{prefix}.250");
    let base_mac = "52:54:00:be:0c:01";
    let entry = format!("<host mac='{base_mac}' ip='{base_ip}'/>");
    vm::virsh_ok(&["net-update", &libvirt_net, "add", "ip-dhcp-host", &entry, "--live", "--config"]);
    let scratch = tempfile::tempdir().expect("tempdir");

    let mut hyp = Vec::new();
    let mut mer = Vec::new();
    let mut mer_qemu = Vec::new();
    let mut hyp_qemu = Vec::new();
    for run in 0..runs {
        // Meridian: POST → banner.
        let t0 = Instant::now();
        let id = boot(&admin, &format!("bench-{run}"), &image_id, &flavor, &net_id).await;
        let dom = format!("meridian-{id}");
        guard.domain(&dom);
        let t = observe(t0, &dom, &instances.join(&id).join("console.log")).await;
        mer.push(t.banner);
        mer_qemu.push(t.qemu);
        let mer_guest = (t.guest_ip, t.guest_ready);
        let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], 60).await;
        assert_eq!(s["status"], "ACTIVE", "{s}");

        // The same XML for the hypervisor alone: its own name, disk, drive, log and MAC.
        let xml = vm::virsh_ok(&["dumpxml", "--inactive", &dom]);
        let dir = scratch.path().join(format!("run-{run}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let src = instances.join(&id);
        let disk = dir.join("disk");
        let backing = std::process::Command::new("qemu-img")
            .args(["info", "-U", "--output=json"])
            .arg(src.join("disk"))
            .output()
            .expect("qemu-img info");
        let info: serde_json::Value = serde_json::from_slice(&backing.stdout).expect("json");
        let base = info["full-backing-filename"].as_str().or(info["backing-filename"].as_str()).expect("backing file");
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base])
            .arg(&disk)
            .arg("1G")
            .status()
            .expect("qemu-img create");
        assert!(ok.success());
        std::fs::copy(src.join("disk.config"), dir.join("disk.config")).expect("copy config drive");
        let log = dir.join("console.log");
        let name = format!("bench-baseline-{run}");
        let mut x = replace_between(&xml, "<name>", "</name>", &name);
        x = replace_between(&x, "<uuid>", "</uuid>", &uuid_like(run));
        x = x.replace(&src.join("disk.config").display().to_string(), &dir.join("disk.config").display().to_string());
        x = x.replace(&format!("'{}'", src.join("disk").display()), &format!("'{}'", disk.display()));
        x = x.replace(&src.join("console.log").display().to_string(), &log.display().to_string());
        x = replace_between(&x, "<mac address='", "'", base_mac);
        let xml_path = dir.join("domain.xml");
        std::fs::write(&xml_path, &x).expect("write xml");
        admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
        wait_server(&admin, &id, &["DELETED"], 60).await;

        guard.domain(&name);
        let t0 = Instant::now();
        let out = std::process::Command::new("virsh")
            .args(["-c", vm::URI, "create"])
            .arg(&xml_path)
            .output()
            .expect("virsh create");
        assert!(out.status.success(), "virsh create: {}", String::from_utf8_lossy(&out.stderr));
        let t = observe(t0, &name, &log).await;
        hyp.push(t.banner);
        hyp_qemu.push(t.qemu);
        let hyp_guest = (t.guest_ip, t.guest_ready);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains(&format!("ip={base_ip}")), "the baseline guest got no DHCP lease:\n{text}");
        vm::virsh_ok(&["destroy", &name]);
        println!(
            "run {run}: hypervisor {:.3} s (QEMU after {:.3} s; guest clock: DHCP {:.2} s, banner {:.2} s), \
             Meridian {:.3} s (QEMU after {:.3} s; guest clock: DHCP {:.2} s, banner {:.2} s)",
            hyp[run], hyp_qemu[run], hyp_guest.0, hyp_guest.1, mer[run], mer_qemu[run], mer_guest.0, mer_guest.1
        );
    }
    admin.delete("compute", &format!("/servers/{anchor}")).await.expect("delete anchor");
    wait_server(&admin, &anchor, &["DELETED"], 60).await;

    let (h, m) = (p50(&hyp), p50(&mer));
    let added = m - h;
    // After QEMU starts both sides run the same guest, so the gap in QEMU start times is what
    // Meridian's control plane adds, without the guest's own boot-time noise.
    let (hq, mq) = (p50(&hyp_qemu), p50(&mer_qemu));
    let diffs: Vec<f64> = mer_qemu.iter().zip(&hyp_qemu).map(|(m, h)| m - h).collect();
    let verdict = |a: f64, base: f64| if a <= 0.3 && a / base <= 0.10 { "met" } else { "NOT met" };
    println!("\nboot to banner, p50 of {runs} runs:");
    println!("  hypervisor (virsh create → banner):  {h:.3} s (QEMU process after {hq:.3} s)");
    println!("  Meridian   (POST /servers → banner): {m:.3} s (QEMU process after {mq:.3} s)");
    println!(
        "  Meridian adds, banner to banner: {:.0} ms = {:.1}% (target ≤ 10% and ≤ 300 ms: {})",
        added * 1000.0,
        added / h * 100.0,
        verdict(added, h)
    );
    println!(
        "  Meridian adds, QEMU start to QEMU start: p50 {:.0} ms = {:.1}% of the hypervisor's boot ({})",
        p50(&diffs) * 1000.0,
        p50(&diffs) / h * 100.0,
        verdict(p50(&diffs), h)
    );
    drop(agent);
    drop(server);
    drop(guard);
}

/// A fixed, valid UUID per run for the baseline domains.
fn uuid_like(run: usize) -> String {
    format!("0000bebe-0000-4000-8000-{run:012}")
}
