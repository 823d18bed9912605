//! Benchmark of issue 17's disk-moving and power actions on a real guest (figures, not a test),
//! through the real server and two agents sharing one `qemu:///system` daemon (the second with
//! `--domain-tag b`, as `tests/tests/real_vm_lifecycle2.rs` runs them):
//!
//! - snapshot: `createImage` of a running guest whose 1 GiB root disk holds 960 MiB of data,
//!   from the POST to the image `active` (the agent pauses the guest, `qemu-img convert -U -O
//!   qcow2` of the overlay and its base, resumes it, streams the file to the image store),
//!   against `qemu-img convert -U -O qcow2` of the same disk file to a temp file, in the same run;
//! - suspend (POST → `SUSPENDED`) and resume (POST → `ACTIVE`), pause and unpause likewise;
//! - cold migration to the other agent: POST `migrate` → `VERIFY_RESIZE` (guest off, its qcow2
//!   overlay relayed through the server, rebased and booted at the destination), then
//!   `confirmResize` → `ACTIVE`, against `cp` (and `cp` + fsync) of the same disk file.
//!
//! The guest fills its disk itself on its first boot (MiB 64 to 1024, past the guest image's
//! 49 MiB: 16 MiB from `/dev/urandom` written 60 times), so the data is in the instance's own
//! overlay, which is what a migration moves and what a snapshot merges with its base. Later
//! boots find a marker and leave the disk alone. Every figure is from `qemu:///system` (TCG
//! when there is no KVM); the figures are min/median/max of N runs.
//!
//! Run: `cargo build -p meridian-server -p meridian-agent -p meridian-e2e --bin meridian-server
//! --bin meridian-agent --bin bench-lifecycle && target/debug/bench-lifecycle [--runs 3]`
//! (`BENCH_RUNS` also sets it; `--release` and `target/release/` work the same; ARCHITECTURE.md
//! has the debug figures). Ctrl-C or a failure still removes every domain, network and file it
//! made.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::bench::{MIB, arg, header, len, row, timed};
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::{Value, json};

const TAG: &str = "b";
use meridian_e2e::bench::{FILL_MIB, WAIT_SECS, fill_user_data, next_boot};
const POLL: Duration = Duration::from_millis(20);

async fn act(client: &Client, id: &str, body: Value) -> Value {
    client.post("compute", &format!("/servers/{id}/action"), &body).await.expect("server action")
}

/// Seconds from `t0` until the server shows `status` with no task left.
async fn settle(client: &Client, id: &str, status: &str, t0: Instant) -> f64 {
    settle_trail(client, id, status, t0, &mut Vec::new()).await
}

/// [`settle`], noting in `trail` when each task state was first seen (seconds from `t0`).
async fn settle_trail(client: &Client, id: &str, status: &str, t0: Instant, trail: &mut Vec<(String, f64)>) -> f64 {
    let deadline = t0 + Duration::from_secs(WAIT_SECS);
    loop {
        let s = client.get("compute", &format!("/servers/{id}")).await.expect("show server");
        let s = &s["server"];
        if s["status"] == status && s["OS-EXT-STS:task_state"].is_null() {
            return t0.elapsed().as_secs_f64();
        }
        note(trail, s, t0);
        assert_ne!(s["status"], "ERROR", "{id} went to ERROR instead of {status}: {}", s["fault"]);
        assert!(Instant::now() < deadline, "{id} never settled in {status}: {s}");
        tokio::time::sleep(POLL).await;
    }
}

/// Notes the server's task state in `trail` the first time it is seen.
fn note(trail: &mut Vec<(String, f64)>, server: &Value, t0: Instant) {
    if let Some(task) = server["OS-EXT-STS:task_state"].as_str()
        && !trail.iter().any(|(t, _)| t == task)
    {
        trail.push((task.to_string(), t0.elapsed().as_secs_f64()));
    }
}

/// When `task` was first seen in `trail` (NaN when the polls missed it).
fn seen(trail: &[(String, f64)], task: &str) -> f64 {
    trail.iter().find(|(t, _)| t == task).map_or(f64::NAN, |(_, s)| *s)
}

fn host_of(server: &Value) -> String {
    server["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

/// What the run owns; dropped in main after the work (also on Ctrl-C or a panic), agents and
/// server before the libvirt guard that removes what they left.
struct Rig {
    server: Server,
    agents: [Agent; 2],
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs = arg("runs", 3).max(1);
    assert!(vm::enabled("bench-lifecycle"), "the benchmark needs qemu:///system (scripts/libvirt.sh)");
    let image = vm::image_dir();
    let guard = LibvirtGuard::default();
    let scratch = tempfile::tempdir().expect("tempdir");
    let server = Server::start();
    let pid = std::process::id();
    let hosts = [format!("bench-lc-a-{pid}"), format!("bench-lc-b-{pid}")];
    let a = Agent::start_opts(&server, &hosts[0], vm::URI, &["--stop-timeout-secs", "30"]);
    let b = Agent::start_opts(&server, &hosts[1], vm::URI, &["--stop-timeout-secs", "30", "--domain-tag", TAG]);
    let rig = Rig { server, agents: [a, b] };
    tokio::select! {
        () = run(&rig, &guard, &image, scratch.path(), runs) => {}
        r = tokio::signal::ctrl_c() => {
            eprintln!("bench-lifecycle: interrupted ({r:?}); removing its guests, networks and files");
        }
    }
    drop(rig);
    drop(guard);
}

async fn run(rig: &Rig, guard: &LibvirtGuard, image: &Path, scratch: &Path, runs: usize) {
    let mut admin = rig.server.admin().await;
    admin.compute_version = Some("2.79".into());
    wait_hosts_up(&admin, 2).await;
    let hosts = [rig.agents[0].host.clone(), rig.agents[1].host.clone()];
    let instances = |host: &str| -> PathBuf {
        let agent = if host == hosts[1] { &rig.agents[1] } else { &rig.agents[0] };
        agent.state_dir.join("instances")
    };

    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "bench.1g", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "benchlc", &vm::private_subnet(31)).await;
    guard.network(&format!("meridian-{net_id}"));

    let user_data = fill_user_data();
    let body = json!({"server": {
        "name": "bench-lc", "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
        "user_data": base64::engine::general_purpose::STANDARD.encode(user_data),
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    guard.domain(&format!("meridian-{TAG}-{id}"));
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], WAIT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let (mut boot, fill) = next_boot(&admin, &id, "").await;
    assert!(fill.starts_with("new:"), "the first boot fills the disk: fill={fill}");
    let fill_secs: f64 = fill
        .trim_start_matches("new:")
        .split_once('-')
        .and_then(|(end, start)| Some(end.parse::<f64>().ok()? - start.parse::<f64>().ok()?))
        .unwrap_or(f64::NAN);
    let host = host_of(&wait_server(&admin, &id, &["ACTIVE"], 60).await);
    let disk = instances(&host).join(&id).join("disk");
    let virtual_bytes = (1u64 << 30) as f64;
    let domain = if host == hosts[1] { format!("meridian-{TAG}-{id}") } else { format!("meridian-{id}") };
    // The agent picks KVM only when it really works (see README), so the domain says which ran.
    let accel = if vm::virsh_ok(&["dumpxml", &domain]).contains("<domain type='kvm'") { "KVM" } else { "TCG" };
    println!(
        "bench-lifecycle: {} build (server and agent beside it), {runs} runs per figure, two agents on {} (guest on {}), guest filled {FILL_MIB} MiB of its \
         1 GiB disk in {fill_secs:.1} s (guest clock), overlay {:.0} MiB",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        vm::URI,
        accel,
        len(&disk) as f64 / MIB
    );

    // 1. Snapshot against qemu-img convert of the same file, alternating.
    let (mut snap, mut snap_copy, mut convert) = (Vec::new(), Vec::new(), Vec::new());
    let (mut snap_bytes, mut convert_bytes) = (0u64, 0u64);
    for run in 0..runs {
        let t0 = Instant::now();
        let r = act(&admin, &id, json!({"createImage": {"name": format!("bench-snap-{run}")}})).await;
        let image = r["image_id"].as_str().expect("image_id (2.45+)").to_string();
        let deadline = t0 + Duration::from_secs(WAIT_SECS);
        let mut trail = Vec::new();
        let img = loop {
            let img = admin.get("image", &format!("/v2/images/{image}")).await.expect("snapshot image");
            if img["status"] == "active" {
                break img;
            }
            note(&mut trail, &admin.get("compute", &format!("/servers/{id}")).await.expect("show")["server"], t0);
            assert!(Instant::now() < deadline && img["status"] != "killed", "snapshot never active: {img}");
            tokio::time::sleep(POLL).await;
        };
        snap.push(t0.elapsed().as_secs_f64());
        // The agent moves to image_uploading once its qemu-img convert is done.
        snap_copy.push(seen(&trail, "image_uploading"));
        snap_bytes = img["size"].as_u64().unwrap_or_default();
        settle(&admin, &id, "ACTIVE", Instant::now()).await;
        admin.delete("image", &format!("/v2/images/{image}")).await.expect("delete snapshot");

        let out = scratch.join(format!("convert-{run}.qcow2"));
        let args = ["convert", "-U", "-O", "qcow2"].map(std::ffi::OsStr::new);
        convert.push(timed("qemu-img", &[&args[..], &[disk.as_os_str(), out.as_os_str()]].concat()).await);
        convert_bytes = len(&out);
        std::fs::remove_file(&out).expect("remove the baseline copy");
        println!(
            "  snapshot run {run}: createImage {:.3} s (image_uploading after {:.3} s), qemu-img convert {:.3} s",
            snap[run], snap_copy[run], convert[run]
        );
    }

    // 2. Suspend/resume and pause/unpause.
    let mut power = Vec::new();
    for (down, down_status, up) in [("suspend", "SUSPENDED", "resume"), ("pause", "PAUSED", "unpause")] {
        let (mut downs, mut ups) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t0 = Instant::now();
            act(&admin, &id, json!({ down: null })).await;
            downs.push(settle(&admin, &id, down_status, t0).await);
            let t0 = Instant::now();
            act(&admin, &id, json!({ up: null })).await;
            ups.push(settle(&admin, &id, "ACTIVE", t0).await);
        }
        println!("  {down}: {downs:.3?} s, {up}: {ups:.3?} s");
        power.push((format!("{down} (POST → {down_status})"), downs));
        power.push((format!("{up} (POST → ACTIVE)"), ups));
    }

    // 3. Cold migration back and forth against cp of the disk file that moves.
    let (mut verify, mut sent, mut confirm, mut cp, mut cp_sync, mut moved) =
        (vec![], vec![], vec![], vec![], vec![], 0u64);
    for run in 0..runs {
        let s = wait_server(&admin, &id, &["ACTIVE"], 60).await;
        let source = host_of(&s);
        let dest = if source == hosts[0] { hosts[1].clone() } else { hosts[0].clone() };
        let disk = instances(&source).join(&id).join("disk");
        moved = len(&disk);
        let out = instances(&dest).join(format!("bench-cp-{run}"));
        let t = timed("cp", &[disk.as_os_str(), out.as_os_str()]).await;
        let synced = t + timed("sync", &[out.as_os_str()]).await;
        std::fs::remove_file(&out).expect("remove the baseline copy");
        cp.push(t);
        cp_sync.push(synced);

        let t0 = Instant::now();
        act(&admin, &id, json!({"migrate": {"host": dest}})).await;
        let mut trail = Vec::new();
        verify.push(settle_trail(&admin, &id, "VERIFY_RESIZE", t0, &mut trail).await);
        // The source has sent the disk to the relay once the task is resize_migrated.
        sent.push(seen(&trail, "resize_migrated"));
        let t0 = Instant::now();
        act(&admin, &id, json!({"confirmResize": null})).await;
        confirm.push(settle(&admin, &id, "ACTIVE", t0).await);
        let s = wait_server(&admin, &id, &["ACTIVE"], 60).await;
        assert_eq!(host_of(&s), dest, "{s}");
        // The guest boots at its destination: let that finish before the next figure.
        let (next, fill) = next_boot(&admin, &id, &boot).await;
        assert_eq!(fill, "kept", "the migrated disk keeps its data");
        boot = next;
        println!(
            "  migration run {run} ({source} → {dest}): VERIFY_RESIZE {:.3} s (resize_migrated after {:.3} s), \
             confirm {:.3} s, cp {:.3} s (+ fsync {:.3} s)",
            verify[run], sent[run], confirm[run], cp[run], cp_sync[run]
        );
    }

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete server");
    wait_server(&admin, &id, &["DELETED"], WAIT_SECS).await;

    header();
    println!("snapshot, 1 GiB virtual ({:.0} MiB written):", snap_bytes as f64 / MIB);
    row("  createImage POST → image active", &snap, Some(virtual_bytes));
    row("    of which POST → image_uploading (copy)", &snap_copy, Some(virtual_bytes));
    row("  qemu-img convert -O qcow2, same disk", &convert, Some(virtual_bytes));
    println!("  (image {snap_bytes} bytes, convert output {convert_bytes} bytes; MiB/s of the virtual 1 GiB)");
    println!("power, real guest (256 MiB RAM):");
    for (name, v) in &power {
        row(&format!("  {name}"), v, None);
    }
    println!("cold migration, qcow2 overlay of {moved} bytes ({:.0} MiB):", moved as f64 / MIB);
    row("  migrate POST → VERIFY_RESIZE", &verify, Some(moved as f64));
    row("    of which POST → resize_migrated (sent)", &sent, Some(moved as f64));
    row("  confirmResize POST → ACTIVE", &confirm, None);
    row("  cp of the same file", &cp, Some(moved as f64));
    row("  cp + fsync of the same file", &cp_sync, Some(moved as f64));
}
