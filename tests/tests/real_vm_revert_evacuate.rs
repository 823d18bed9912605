//! The real-VM tier for a resize revert and an evacuation (issue 17): a real TCG guest on two
//! simulated hosts, each with its own libvirt daemon in its own network namespace
//! ([`meridian_e2e::hosts`]), through the real server and agents.
//!
//! The guest prints, at every boot, its boot id, its RAM and whether a token it writes at
//! 900 MiB of its root disk at its first boot was already there. A resize to more RAM on the
//! other host, reverted: the guest boots again on its first host with its old RAM and its disk
//! (the token), and the other host's copy is gone. Then its host dies (agent killed, daemon
//! and guest left running, the compute service forced down) and it is evacuated: it boots on
//! the other host from its image (a new disk: local disks die with their host, so no token),
//! with the same ports; when the dead host's agent comes back, its copy is destroyed and the
//! migration completed. `MERIDIAN_SKIP_REAL_VM=1` skips.

use std::time::Duration;

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::hosts::SimNet;
use meridian_e2e::vm;
use meridian_e2e::{Server, wait_hosts_up, wait_server, wait_settled};
use serde_json::{Value, json};

/// Hang guards only.
const BOOT_SECS: u64 = 240;
const TOKEN: &str = "meridian-revert-token-6061";
const PROBE: &str = "probe-boot:";

fn host_of(server: &Value) -> String {
    server["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')).map(str::to_string)
}

fn last_probe(console: &str) -> Option<String> {
    console.lines().filter_map(|l| l.split(PROBE).nth(1)).map(str::trim).next_back().map(str::to_string)
}

/// Waits for the probe line of a boot other than `previous`.
async fn next_boot(admin: &Client, id: &str, previous: &str) -> String {
    let log = vm::wait_console(admin, id, BOOT_SECS, |c| {
        last_probe(c).and_then(|l| field(&l, "boot")).is_some_and(|b| b != previous)
    })
    .await;
    last_probe(&log).unwrap_or_default()
}

async fn act(admin: &Client, id: &str, body: Value) {
    admin.post("compute", &format!("/servers/{id}/action"), &body).await.expect("server action");
}

/// Polls (a hang guard) until `f` holds.
async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..(BOOT_SECS * 4) {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_guest_is_resized_reverted_and_evacuated() {
    if !vm::enabled("a_real_guest_is_resized_reverted_and_evacuated") {
        return;
    }
    let image = vm::image_dir();
    // Dropped last (declared first): the hosts' namespaces, daemons and guests, then the bridge.
    let net = SimNet::new();
    let host_a = net.host("ra", 2);
    let host_b = net.host("rb", 3);
    let server = Server::start_on(&net.gateway(), None, &[]);
    let pid = std::process::id();
    let (name_a, name_b) = (format!("rva-{pid}"), format!("rvb-{pid}"));
    let mut agents = [
        host_a.start_agent(&server, &name_a, &["--stop-timeout-secs", "30"]),
        host_b.start_agent(&server, &name_b, &["--stop-timeout-secs", "30"]),
    ];
    let sim = |name: &str| if name == name_a { &host_a } else { &host_b };
    let index = |name: &str| usize::from(name != name_a);
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    wait_hosts_up(&admin, 2).await;

    let flavor = |name: &'static str, ram: u64| {
        let admin = &admin;
        async move {
            let f = admin
                .post("compute", "/flavors", &json!({"flavor": {"name": name, "ram": ram, "vcpus": 1, "disk": 1}}))
                .await
                .expect("flavor");
            f["flavor"]["id"].as_str().expect("id").to_string()
        }
    };
    let small = flavor("rv.small", 256).await;
    let big = flavor("rv.big", 384).await;
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "rvnet", &vm::private_subnet(43)).await;
    let user_data = format!(
        "#!/bin/sh\n\
         if dd if=/dev/vda bs=1M skip=900 count=1 2>/dev/null | grep -q {TOKEN}; then t=yes; \
         else echo {TOKEN} | dd of=/dev/vda bs=1M seek=900 conv=fsync 2>/dev/null; t=new; fi\n\
         echo \"{PROBE} boot=$(cat /proc/sys/kernel/random/boot_id) token=$t \
         mem=$(awk '/MemTotal/{{print $2}}' /proc/meminfo)\"\n"
    );
    let user_data = base64::engine::general_purpose::STANDARD.encode(user_data);
    let r = admin
        .post(
            "compute",
            "/servers",
            &json!({"server": {"name": "rv", "imageRef": image_id, "flavorRef": small,
                "networks": [{"uuid": net_id}], "user_data": user_data}}),
        )
        .await
        .expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    let domain = format!("meridian-{id}");
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let addresses = s["addresses"].clone();
    let first = next_boot(&admin, &id, "").await;
    assert_eq!(field(&first, "token").as_deref(), Some("new"), "{first}");
    let mem_small: u64 = field(&first, "mem").and_then(|m| m.parse().ok()).expect("mem");
    let boot = field(&first, "boot").expect("boot id");
    let home = host_of(&s);
    let other = if home == name_a { name_b.clone() } else { name_a.clone() };

    // Resize to more RAM, which the scheduler places on the other host, then revert.
    act(&admin, &id, json!({"resize": {"flavorRef": big}})).await;
    let s = wait_settled(&admin, &id, "VERIFY_RESIZE", BOOT_SECS).await;
    assert_eq!(host_of(&s), other, "{s}");
    assert!(sim(&other).virsh_ok(&["domstate", &domain]).contains("running"), "the resized guest runs there");
    assert!(sim(&home).virsh_ok(&["domstate", &domain]).contains("shut off"), "the source's copy waits, off");
    act(&admin, &id, json!({"revertResize": null})).await;
    let s = wait_settled(&admin, &id, "ACTIVE", BOOT_SECS).await;
    assert_eq!(host_of(&s), home, "the revert brings it home: {s}");
    assert_eq!(s["flavor"]["ram"], 256, "{s}");
    let reverted = next_boot(&admin, &id, &boot).await;
    assert_eq!(field(&reverted, "token").as_deref(), Some("yes"), "the source's disk is kept: {reverted}");
    let mem: u64 = field(&reverted, "mem").and_then(|m| m.parse().ok()).expect("mem");
    assert_eq!(mem, mem_small, "the old RAM again: {reverted}");
    wait_for("the other host's copy removed", || !sim(&other).domains().contains(&domain)).await;
    let boot = field(&reverted, "boot").expect("boot id");

    // The home host dies: its agent is killed (its daemon and guest go on, as a host that lost
    // its network would), its compute service forced down, and the server evacuated.
    let dead = home.clone();
    agents[index(&dead)].kill9();
    admin.compute_version = Some("2.53".into());
    let services = admin.get("compute", "/os-services?binary=nova-compute").await.expect("services");
    let service_id = services["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["host"] == dead.as_str()))
        .and_then(|s| s["id"].as_str())
        .expect("the dead host's service")
        .to_string();
    admin
        .put("compute", &format!("/os-services/{service_id}"), &json!({"forced_down": true}))
        .await
        .expect("force down");
    admin.compute_version = Some("2.79".into());
    act(&admin, &id, json!({"evacuate": {}})).await;
    let s = wait_settled(&admin, &id, "ACTIVE", BOOT_SECS).await;
    assert_eq!(host_of(&s), other, "{s}");
    assert_eq!(s["addresses"], addresses, "the same ports and addresses");
    let evacuated = next_boot(&admin, &id, &boot).await;
    assert_eq!(
        field(&evacuated, "token").as_deref(),
        Some("new"),
        "a new disk from the image (the old one died with its host): {evacuated}"
    );
    assert!(sim(&other).virsh_ok(&["domstate", &domain]).contains("running"));
    assert!(sim(&dead).domains().contains(&domain), "the dead host's guest is still there while it is down");

    // The dead host's agent comes back: its copy is destroyed, the evacuation completed.
    agents[index(&dead)].restart();
    wait_for("the dead host's copy destroyed", || !sim(&dead).domains().contains(&domain)).await;
    let mut completed = false;
    for _ in 0..(BOOT_SECS * 4) {
        let list = admin
            .get("compute", &format!("/os-migrations?instance_uuid={id}&migration_type=evacuation"))
            .await
            .expect("os-migrations");
        if list["migrations"][0]["status"] == "completed" {
            completed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(completed, "the evacuation record is completed once the source cleaned up");

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], 120).await;
    assert!(!sim(&other).domains().contains(&domain));
}
