//! The real-VM tier for pause and suspend: a real TCG guest on `qemu:///system` through the
//! real server and agent. The guest's user data prints its `/proc/uptime` on the serial
//! console every second; read through the API, that counter must go on after unpause (the same
//! QEMU process, vCPUs stopped meanwhile) and after resume (a new QEMU process restoring the
//! managed save: the guest runs on, it is not booted again). `MERIDIAN_SKIP_REAL_VM=1` skips.

use std::time::Duration;

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::{Value, json};

const BOOT_SECS: u64 = 180;
const TICK: &str = "uptime-tick ";

/// Every uptime the guest printed, in order.
fn ticks(console: &str) -> Vec<f64> {
    console
        .lines()
        .filter_map(|l| l.split(TICK).nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|v| v.parse().ok())
        .collect()
}

async fn act(client: &Client, id: &str, body: Value) {
    client.post("compute", &format!("/servers/{id}/action"), &body).await.expect("server action");
}

/// Waits for `status` with no task; the server.
async fn settled(client: &Client, id: &str, status: &str) -> Value {
    for _ in 0..(BOOT_SECS * 4) {
        let s = client.get("compute", &format!("/servers/{id}")).await.expect("show");
        if s["server"]["status"] == status && s["server"]["OS-EXT-STS:task_state"].is_null() {
            return s["server"].clone();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{id} did not settle in {status}");
}

fn domstate(domain: &str) -> String {
    vm::virsh_ok(&["domstate", "--reason", domain]).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_suspend_keep_a_real_guest_running_on() {
    if !vm::enabled("pause_and_suspend_keep_a_real_guest_running_on") {
        return;
    }
    let image = vm::image_dir();
    // Dropped after the agent and server (declared first): removes what they left on failure.
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let _agent = Agent::start_opts(&server, &format!("vml-{}", std::process::id()), vm::URI, &[]);
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    wait_hosts_up(&admin, 1).await;
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "vm.pause", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "pausenet", &vm::private_subnet(7)).await;
    guard.network(&format!("meridian-{net_id}"));

    let user_data = format!(
        "#!/bin/sh\n( while :; do echo \"{TICK}$(cut -d' ' -f1 /proc/uptime)\"; sleep 1; done ) >/dev/ttyS0 2>&1 &\n"
    );
    let body = json!({"server": {
        "name": "ticker", "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
        "user_data": base64::engine::general_purpose::STANDARD.encode(user_data),
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    let domain = format!("meridian-{id}");
    guard.domain(&domain);
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let log = vm::wait_console(&admin, &id, BOOT_SECS, |c| vm::boots(c) >= 1 && ticks(c).len() >= 3).await;
    assert_eq!(vm::boots(&log), 1, "{log}");
    let pid = vm::qemu_pid(&domain).expect("qemu runs");

    // Pause: the vCPUs stop in the same process; no tick is printed while paused.
    act(&admin, &id, json!({"pause": null})).await;
    let s = settled(&admin, &id, "PAUSED").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 3);
    assert!(domstate(&domain).starts_with("paused"), "{}", domstate(&domain));
    let before = ticks(&vm::console(&admin, &id).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = ticks(&vm::console(&admin, &id).await);
    assert!(during.len() <= before.len() + 1, "a paused guest kept printing: {before:?} → {during:?}");
    let last_before_pause = *during.last().expect("ticks");

    act(&admin, &id, json!({"unpause": null})).await;
    let s = settled(&admin, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    let seen = during.len();
    let log = vm::wait_console(&admin, &id, 60, |c| ticks(c).len() >= seen + 3).await;
    let after = ticks(&log);
    assert!(after[seen..].iter().all(|u| *u >= last_before_pause), "uptime went back after unpause: {after:?}");
    assert_eq!(vm::boots(&log), 1, "unpause must not reboot: {log}");
    assert_eq!(vm::qemu_pid(&domain), Some(pid), "the same QEMU process runs on");

    // Suspend: memory saved to disk, the QEMU process gone; the guest is "shut off (saved)".
    act(&admin, &id, json!({"suspend": null})).await;
    let s = settled(&admin, &id, "SUSPENDED").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    assert_eq!(domstate(&domain), "shut off (saved)");
    assert_eq!(vm::qemu_pid(&domain), None, "a suspended guest has no process");
    let saved = ticks(&vm::console(&admin, &id).await);
    let last_before_suspend = *saved.last().expect("ticks");
    tokio::time::sleep(Duration::from_secs(2)).await;

    act(&admin, &id, json!({"resume": null})).await;
    let s = settled(&admin, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    assert!(domstate(&domain).starts_with("running"), "{}", domstate(&domain));
    let log = vm::wait_console(&admin, &id, 60, |c| ticks(c).len() >= saved.len() + 3).await;
    let resumed = ticks(&log);
    // A boot would start the counter near zero and print a second banner; a restore goes on.
    assert!(
        resumed[saved.len()..].iter().all(|u| *u >= last_before_suspend),
        "uptime went back after resume (a reboot, not a restore): {resumed:?}"
    );
    assert_eq!(vm::boots(&log), 1, "resume must restore, not boot: {log}");
    assert_ne!(vm::qemu_pid(&domain), Some(pid), "a new QEMU process restored the guest");

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], 120).await;
    assert!(!vm::virsh_ok(&["list", "--all", "--name"]).contains(&domain), "the domain is gone");
}
