//! Benchmark of live migration on a real guest (figures, not a test): two simulated hosts,
//! each a network namespace with its own libvirt daemon ([`meridian_e2e::hosts`], as
//! `tests/tests/real_vm_live_migration.rs` runs them), the real server and agents.
//!
//! The guest (256 MiB RAM) fills 960 MiB of its 1 GiB root disk on its first boot (see
//! [`meridian_e2e::bench::fill_user_data`]), so its qcow2 overlay holds what a block migration
//! copies. Then it is live-migrated back and forth N times: POST `os-migrateLive` → the
//! migration `running` (the destination prepared: image cached, disks made, ports plugged)
//! → the server `ACTIVE` on the destination with no task (libvirt copied the disk and the
//! memory while the guest ran, the server moved the instance). Against, in the same run,
//! `cp` of the overlay file between the two hosts' directories (what a block migration moves
//! at the least), with and without fsync. The guest must keep its boot (no reboot) and data.
//!
//! Run: `cargo build -p meridian-server -p meridian-agent -p meridian-e2e --bin meridian-server
//! --bin meridian-agent --bin bench-live-migration && target/debug/bench-live-migration
//! [--runs 3]` as root (namespaces, daemons). Ctrl-C or a failure still removes everything.

use std::time::{Duration, Instant};

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::bench::{MIB, WAIT_SECS, arg, fill_user_data, header, len, next_boot, row, timed};
use meridian_e2e::hosts::{SimHost, SimNet};
use meridian_e2e::vm;
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::{Value, json};

const POLL: Duration = Duration::from_millis(20);

fn host_of(server: &Value) -> String {
    server["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

/// What the run owns, dropped in this order (also on Ctrl-C or a panic): agents, server, then
/// the hosts (guests, daemons, namespaces) and the bridge.
struct Rig {
    agents: Vec<Agent>,
    server: Server,
    hosts: [SimHost; 2],
    _net: SimNet,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = arg("runs", 3).max(1);
    assert!(vm::enabled("bench-live-migration"), "the benchmark needs QEMU and libvirt (scripts/libvirt.sh)");
    let image = vm::image_dir();
    let net = SimNet::new();
    let hosts = [net.host("ba", 2), net.host("bb", 3)];
    let server = Server::start_on(&net.gateway(), None, &[]);
    let pid = std::process::id();
    let agents =
        hosts.iter().enumerate().map(|(i, h)| h.start_agent(&server, &format!("bench-lm{i}-{pid}"), &[])).collect();
    let rig = Rig { agents, server, hosts, _net: net };
    tokio::select! {
        () = run(&rig, &image, runs) => {}
        r = tokio::signal::ctrl_c() => {
            eprintln!("bench-live-migration: interrupted ({r:?}); removing its hosts");
        }
    }
    drop(rig);
}

async fn show(admin: &Client, id: &str) -> Value {
    admin.get("compute", &format!("/servers/{id}")).await.expect("show")["server"].clone()
}

async fn run(rig: &Rig, image: &std::path::Path, runs: usize) {
    let mut admin = rig.server.admin().await;
    admin.compute_version = Some("2.79".into());
    wait_hosts_up(&admin, 2).await;
    let names: Vec<String> = rig.agents.iter().map(|a| a.host.clone()).collect();
    let agent_of = |host: &str| &rig.agents[usize::from(host != names[0])];

    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "bench.live", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "benchlm", &vm::private_subnet(37)).await;
    let body = json!({"server": {
        "name": "bench-lm", "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
        "user_data": base64::engine::general_purpose::STANDARD.encode(fill_user_data()),
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], WAIT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let (boot, fill) = next_boot(&admin, &id, "").await;
    assert!(fill.starts_with("new:"), "the first boot fills the disk: fill={fill}");
    let domain = format!("meridian-{id}");
    let accel = if rig.hosts[0].virsh(&["dumpxml", &domain]).stdout.starts_with(b"<domain type='kvm'")
        || rig.hosts[1].virsh(&["dumpxml", &domain]).stdout.starts_with(b"<domain type='kvm'")
    {
        "KVM"
    } else {
        "TCG"
    };
    println!(
        "bench-live-migration: {} build, {runs} runs, two hosts with their own libvirt daemons in network \
         namespaces (guest on {accel}, 256 MiB RAM), guest filled {} MiB of its 1 GiB disk",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        meridian_e2e::bench::FILL_MIB
    );

    let (mut total, mut prepare, mut transfer, mut cp, mut cp_sync, mut moved) =
        (vec![], vec![], vec![], vec![], vec![], 0u64);
    for run in 0..runs {
        let s = show(&admin, &id).await;
        let source = host_of(&s);
        let dest = if source == names[0] { names[1].clone() } else { names[0].clone() };
        let disk = agent_of(&source).state_dir.join("instances").join(&id).join("disk");
        moved = len(&disk);
        let out = agent_of(&dest).state_dir.join(format!("bench-cp-{run}"));
        let t = timed("cp", &[disk.as_os_str(), out.as_os_str()]).await;
        let synced = t + timed("sync", &[out.as_os_str()]).await;
        std::fs::remove_file(&out).expect("remove the baseline copy");
        cp.push(t);
        cp_sync.push(synced);

        let t0 = Instant::now();
        admin
            .post(
                "compute",
                &format!("/servers/{id}/action"),
                &json!({"os-migrateLive": {"host": dest, "block_migration": "auto"}}),
            )
            .await
            .expect("live migrate");
        let deadline = t0 + Duration::from_secs(WAIT_SECS);
        let mut running = f64::NAN;
        loop {
            if running.is_nan() {
                let list = admin.get("compute", &format!("/servers/{id}/migrations")).await.expect("migrations");
                if list["migrations"].as_array().is_some_and(|a| a.iter().any(|m| m["status"] == "running")) {
                    running = t0.elapsed().as_secs_f64();
                }
            }
            let s = show(&admin, &id).await;
            if s["status"] == "ACTIVE" && s["OS-EXT-STS:task_state"].is_null() && host_of(&s) == dest {
                break;
            }
            assert!(s["OS-EXT-STS:task_state"] == "migrating", "the migration failed: {s}");
            assert!(Instant::now() < deadline, "never arrived: {s}");
            tokio::time::sleep(POLL).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        total.push(secs);
        prepare.push(running);
        transfer.push(secs - running);
        println!(
            "  run {run} ({source} → {dest}): ACTIVE there after {secs:.3} s (running after {running:.3} s), \
             cp {t:.3} s (+ fsync {synced:.3} s)"
        );
    }
    // Still the first boot: the guest was never restarted.
    let console = vm::console(&admin, &id).await;
    assert!(!console.contains("bench-boot boot=") || console.contains(&boot), "the guest rebooted: {console}");

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete server");
    wait_server(&admin, &id, &["DELETED"], WAIT_SECS).await;

    header();
    println!("live migration, qcow2 overlay of {moved} bytes ({:.0} MiB) + 256 MiB RAM:", moved as f64 / MIB);
    row("  os-migrateLive POST → ACTIVE at destination", &total, Some(moved as f64));
    row("    of which POST → running (prepare)", &prepare, None);
    row("    of which running → ACTIVE (copy, switch)", &transfer, Some(moved as f64));
    row("  cp of the overlay file", &cp, Some(moved as f64));
    row("  cp + fsync of the overlay file", &cp_sync, Some(moved as f64));
}
