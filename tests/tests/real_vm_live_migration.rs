//! The real-VM tier for live migration (issue 17): a real TCG guest moved between two hosts
//! that each run their own libvirt daemon in their own network namespace
//! ([`meridian_e2e::hosts`]), through the real server, the real agents and the unmodified
//! `openstack` CLI.
//!
//! The guest writes a token at 900 MiB of its root disk at boot and then, every second,
//! prints its boot id, its uptime and whether the token is on the disk (read past the page
//! cache). A live migration must keep the same boot (no reboot, the uptime goes on) and the
//! token (the block migration copied the disk). Then: a migration slowed down by hand is
//! aborted through the API (the guest stays where it was, running; the migration
//! `cancelled`), and one is forced to complete (the guest is paused on the source until the
//! copy ends, then runs on at the destination). `MERIDIAN_SKIP_REAL_VM=1` skips.

use std::time::Duration;

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::hosts::SimNet;
use meridian_e2e::vm;
use meridian_e2e::{Server, wait_hosts_up, wait_server, wait_settled};
use serde_json::{Value, json};

/// Hang guards only.
const BOOT_SECS: u64 = 240;
const TOKEN: &str = "meridian-live-token-5150";
const TICK: &str = "probe-live:";

fn host_of(server: &Value) -> String {
    server["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

/// The last tick line's `key=value`.
fn last_tick(console: &str) -> Option<String> {
    console.lines().filter_map(|l| l.split(TICK).nth(1)).map(str::trim).next_back().map(str::to_string)
}

fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).map(str::to_string)
}

fn uptime(line: &str) -> f64 {
    field(line, "up").and_then(|u| u.parse().ok()).unwrap_or(0.0)
}

/// Waits for a tick of boot `boot` later than `after` seconds of uptime, with the token read.
async fn tick_after(admin: &Client, id: &str, boot: &str, after: f64) -> String {
    let log = vm::wait_console(admin, id, BOOT_SECS, |c| {
        last_tick(c).is_some_and(|t| field(&t, "boot").as_deref() == Some(boot) && uptime(&t) > after)
    })
    .await;
    last_tick(&log).unwrap_or_default()
}

/// The server's newest live migration record.
async fn live_migration(admin: &Client, id: &str) -> Value {
    let list = admin
        .get("compute", &format!("/os-migrations?instance_uuid={id}&migration_type=live-migration"))
        .await
        .expect("os-migrations");
    let mut all = list["migrations"].as_array().cloned().unwrap_or_default();
    all.sort_by_key(|m| m["id"].as_i64());
    all.pop().unwrap_or(Value::Null)
}

/// Waits for the running live migration of `id` and answers its id.
/// What the instance's last action recorded (for a failure's message).
async fn last_action(admin: &Client, id: &str) -> Value {
    let actions = admin.get("compute", &format!("/servers/{id}/os-instance-actions")).await.expect("actions");
    let req = actions["instanceActions"][0]["request_id"].as_str().unwrap_or_default().to_string();
    admin.get("compute", &format!("/servers/{id}/os-instance-actions/{req}")).await.unwrap_or(Value::Null)
}

/// Waits until the server settles ACTIVE and checks it is on `dest`.
async fn arrived(admin: &Client, id: &str, dest: &str) -> Value {
    let s = wait_settled(admin, id, "ACTIVE", BOOT_SECS).await;
    if host_of(&s) != dest {
        let m = live_migration(admin, id).await;
        panic!(
            "{id} settled on {} instead of {dest}; migration {m}; action {}",
            host_of(&s),
            last_action(admin, id).await
        );
    }
    s
}

async fn running_migration(admin: &Client, id: &str) -> i64 {
    for _ in 0..(BOOT_SECS * 4) {
        let list = admin.get("compute", &format!("/servers/{id}/migrations")).await.expect("server migrations");
        if let Some(m) = list["migrations"].as_array().and_then(|a| a.iter().find(|m| m["status"] == "running")) {
            return m["id"].as_i64().expect("migration id");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no live migration of {id} ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_guest_moves_live_between_two_libvirt_daemons() {
    if !vm::enabled("a_real_guest_moves_live_between_two_libvirt_daemons") {
        return;
    }
    let image = vm::image_dir();
    // Dropped last (declared first): the hosts' namespaces, daemons and guests, then the bridge.
    let net = SimNet::new();
    let host_a = net.host("a", 2);
    let host_b = net.host("b", 3);
    let server = Server::start_on(&net.gateway(), None, &[]);
    let pid = std::process::id();
    let (name_a, name_b) = (format!("lva-{pid}"), format!("lvb-{pid}"));
    let _a = host_a.start_agent(&server, &name_a, &["--stop-timeout-secs", "30"]);
    let _b = host_b.start_agent(&server, &name_b, &["--stop-timeout-secs", "30"]);
    let sim = |name: &str| if name == name_a { &host_a } else { &host_b };
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    wait_hosts_up(&admin, 2).await;

    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "live.small", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "livenet", &vm::private_subnet(41)).await;
    let user_data = format!(
        "#!/bin/sh\n\
         echo {TOKEN} | dd of=/dev/vda bs=1M seek=900 conv=fsync 2>/dev/null\n\
         ( while :; do sync; echo 3 > /proc/sys/vm/drop_caches; \
         if dd if=/dev/vda bs=1M skip=900 count=1 2>/dev/null | grep -q {TOKEN}; then t=yes; else t=no; fi; \
         echo \"{TICK} boot=$(cat /proc/sys/kernel/random/boot_id) up=$(cut -d' ' -f1 /proc/uptime) token=$t\"; \
         sleep 1; done ) &\n"
    );
    let user_data = base64::engine::general_purpose::STANDARD.encode(user_data);
    let r = admin
        .post(
            "compute",
            "/servers",
            &json!({"server": {"name": "live", "imageRef": image_id, "flavorRef": flavor,
                "networks": [{"uuid": net_id}], "user_data": user_data}}),
        )
        .await
        .expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    let domain = format!("meridian-{id}");
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let log = vm::wait_console(&admin, &id, BOOT_SECS, |c| last_tick(c).is_some()).await;
    let boot = last_tick(&log).and_then(|t| field(&t, "boot")).expect("boot id");
    let first = tick_after(&admin, &id, &boot, 0.0).await;
    assert_eq!(field(&first, "token").as_deref(), Some("yes"), "{first}");

    // 1. The unmodified CLI moves it; the same boot runs on at the destination with its disk.
    let source = host_of(&s);
    let dest = if source == name_a { name_b.clone() } else { name_a.clone() };
    let before = uptime(&tick_after(&admin, &id, &boot, uptime(&first)).await);
    let cli = server.admin_cli();
    cli.run(&["--os-compute-api-version", "2.79", "server", "migrate", "--live-migration", "--host", &dest, &id]);
    arrived(&admin, &id, &dest).await;
    let m = live_migration(&admin, &id).await;
    assert_eq!(m["status"], "completed", "{m}");
    assert_eq!(m["source_compute"], source.as_str(), "{m}");
    assert_eq!(m["dest_compute"], dest.as_str(), "{m}");
    assert!(sim(&dest).domains().contains(&domain), "the guest is defined at the destination");
    assert!(!sim(&source).domains().contains(&domain), "and no longer at the source");
    assert!(sim(&dest).virsh_ok(&["domstate", &domain]).contains("running"));
    let after = tick_after(&admin, &id, &boot, before).await;
    assert_eq!(field(&after, "token").as_deref(), Some("yes"), "the disk came along: {after}");
    assert!(uptime(&after) > before, "no reboot: {after} after {before} s");

    // 2. Abort: a migration throttled to 1 MiB/s by hand is cancelled; the guest stays, running.
    let (source, dest) = (dest, source);
    sim(&source).virsh_ok(&["migrate-setspeed", &domain, "1"]);
    admin
        .post(
            "compute",
            &format!("/servers/{id}/action"),
            &json!({"os-migrateLive": {"host": dest, "block_migration": "auto"}}),
        )
        .await
        .expect("live migrate");
    let mid = running_migration(&admin, &id).await;
    admin.delete("compute", &format!("/servers/{id}/migrations/{mid}")).await.expect("abort");
    let s = wait_settled(&admin, &id, "ACTIVE", BOOT_SECS).await;
    assert_eq!(host_of(&s), source, "an aborted migration leaves the guest where it was: {s}");
    let m = live_migration(&admin, &id).await;
    assert_eq!(m["status"], "cancelled", "{m}");
    assert!(sim(&source).virsh_ok(&["domstate", &domain]).contains("running"));
    assert!(!sim(&dest).domains().contains(&domain), "nothing is left at the destination");
    let after_abort = tick_after(&admin, &id, &boot, uptime(&after)).await;
    assert_eq!(field(&after_abort, "token").as_deref(), Some("yes"), "{after_abort}");

    // 3. Force complete: the throttled migration's guest is paused on the source, and once the
    // throttle is lifted it arrives and runs on (still the same boot).
    sim(&source).virsh_ok(&["migrate-setspeed", &domain, "1"]);
    admin
        .post(
            "compute",
            &format!("/servers/{id}/action"),
            &json!({"os-migrateLive": {"host": dest, "block_migration": "auto"}}),
        )
        .await
        .expect("live migrate");
    let mid = running_migration(&admin, &id).await;
    admin
        .post("compute", &format!("/servers/{id}/migrations/{mid}/action"), &json!({"force_complete": null}))
        .await
        .expect("force complete");
    let mut paused = false;
    for _ in 0..120 {
        if sim(&source).virsh_ok(&["domstate", &domain]).contains("paused") {
            paused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(paused, "force_complete pauses the guest on the source");
    sim(&source).virsh_ok(&["migrate-setspeed", &domain, "0"]);
    arrived(&admin, &id, &dest).await;
    assert_eq!(live_migration(&admin, &id).await["status"], "completed");
    assert!(sim(&dest).virsh_ok(&["domstate", &domain]).contains("running"), "it runs again at the destination");
    let last = tick_after(&admin, &id, &boot, uptime(&after_abort)).await;
    assert_eq!(field(&last, "token").as_deref(), Some("yes"), "{last}");

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], 120).await;
    assert!(!sim(&dest).domains().contains(&domain));
}
