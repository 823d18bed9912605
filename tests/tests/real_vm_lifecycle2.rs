//! The real-VM tier for issue 17's disk-moving actions: real TCG guests on `qemu:///system`
//! through the real server and two agents sharing that one daemon (the second with its own
//! `--domain-tag`, so a cold migration between them does not collide on the domain).
//!
//! One guest, whose user data runs at every boot: it writes a token at 900 MiB of its root
//! disk unless the token is there already (`token=yes|new`), prints it with its boot id, RAM, vCPUs and
//! CPU topology (`probe-boot: …`), and keeps printing its network interfaces (`probe-tick …`). Its
//! snapshot boots as a second server that finds the token; a resize to a bigger flavor with
//! `hw:cpu_threads=2` shows the new RAM, vCPUs and threads after the confirm; a cold migration
//! to the other agent and a shelve, offload and unshelve keep the token; a hot-plugged port
//! shows up as `eth1`. `MERIDIAN_SKIP_REAL_VM=1` skips.

use std::time::Duration;

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::{Value, json};

/// Hang guards only.
const BOOT_SECS: u64 = 240;
const TOKEN: &str = "meridian-moved-token-7117";
const TAG: &str = "lc2b";
const PROBE: &str = "probe-boot:";

async fn act(client: &Client, id: &str, body: Value) -> Value {
    client.post("compute", &format!("/servers/{id}/action"), &body).await.expect("server action")
}

/// Waits for `status` with no task. An action that fails puts the server back where it was
/// with no task (and an error event on the action): that ends the wait at once, with the event.
async fn settled(client: &Client, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    let mut busy = false;
    for _ in 0..(BOOT_SECS * 4) {
        let s = client.get("compute", &format!("/servers/{id}")).await.expect("show");
        let idle = s["server"]["OS-EXT-STS:task_state"].is_null();
        if s["server"]["status"] == status && idle {
            return s["server"].clone();
        }
        if busy && idle {
            let actions = client.get("compute", &format!("/servers/{id}/os-instance-actions")).await.expect("actions");
            let req = actions["instanceActions"][0]["request_id"].as_str().unwrap_or_default().to_string();
            let action = client.get("compute", &format!("/servers/{id}/os-instance-actions/{req}")).await;
            panic!("{id} settled in {} instead of {status}: {action:?}", s["server"]["status"]);
        }
        busy |= !idle;
        assert_ne!(s["server"]["status"], "ERROR", "{id} went to ERROR instead of {status}: {}", s["server"]["fault"]);
        last = s;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{id} did not settle in {status}: {last}");
}

/// The values after `tag` on each line that has it, in order.
fn lines<'a>(console: &'a str, tag: &str) -> Vec<&'a str> {
    console.lines().filter_map(|l| l.split(tag).nth(1)).map(str::trim).collect()
}

/// `key=value` of a probe line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn number(line: &str, key: &str) -> Option<u64> {
    field(line, key).and_then(|v| v.parse().ok())
}

/// Waits for the probe line of a boot other than `previous` (the kernel's boot id: a migrated
/// or unshelved guest's console log starts afresh on its new host, so lines are not counted).
async fn next_boot(admin: &Client, id: &str, previous: &str) -> String {
    let log = vm::wait_console(admin, id, BOOT_SECS, |c| {
        lines(c, PROBE).last().and_then(|l| field(l, "boot")).is_some_and(|b| b != previous)
    })
    .await;
    lines(&log, PROBE).last().map(|s| s.to_string()).unwrap_or_default()
}

fn host_of(server: &Value) -> String {
    server["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

fn defined_domains() -> String {
    vm::virsh_ok(&["list", "--all", "--name"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_resize_migrate_shelve_and_hot_plug_keep_a_real_guest_data() {
    if !vm::enabled("snapshot_resize_migrate_shelve_and_hot_plug_keep_a_real_guest_data") {
        return;
    }
    let image = vm::image_dir();
    // Dropped after the agents and the server (declared first): removes what they left.
    let guard = LibvirtGuard::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("server.toml");
    // Shelved servers stay on their host until `shelveOffload` (Nova's -1), so both steps run.
    std::fs::write(&config, "[compute]\nshelved_offload_time = -1\n").expect("config");
    let server = Server::start_opts(None, &["--config", config.to_str().expect("path")]);
    let pid = std::process::id();
    let (host_a, host_b) = (format!("lc2a-{pid}"), format!("lc2b-{pid}"));
    let _a = Agent::start_opts(&server, &host_a, vm::URI, &["--stop-timeout-secs", "30"]);
    let _b = Agent::start_opts(&server, &host_b, vm::URI, &["--stop-timeout-secs", "30", "--domain-tag", TAG]);
    let domain_on = |host: &str, id: &str| {
        if host == host_b { format!("meridian-{TAG}-{id}") } else { format!("meridian-{id}") }
    };
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    wait_hosts_up(&admin, 2).await;

    let flavor = |name: &str, ram: u64, vcpus: u64| {
        let admin = &admin;
        let name = name.to_string();
        async move {
            let f = admin
                .post("compute", "/flavors", &json!({"flavor": {"name": name, "ram": ram, "vcpus": vcpus, "disk": 1}}))
                .await
                .expect("flavor");
            f["flavor"]["id"].as_str().expect("id").to_string()
        }
    };
    let small = flavor("vm.small", 256, 1).await;
    let big = flavor("vm.big", 384, 2).await;
    admin
        .post("compute", &format!("/flavors/{big}/os-extra_specs"), &json!({"extra_specs": {"hw:cpu_threads": "2"}}))
        .await
        .expect("extra specs");
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "movenet", &vm::private_subnet(23)).await;
    guard.network(&format!("meridian-{net_id}"));

    let user_data = format!(
        "#!/bin/sh\n\
         if dd if=/dev/vda bs=1M skip=900 count=1 2>/dev/null | grep -q {TOKEN}; then t=yes; \
         else echo {TOKEN} | dd of=/dev/vda bs=1M seek=900 conv=fsync 2>/dev/null; t=new; fi\n\
         echo \"{PROBE} boot=$(cat /proc/sys/kernel/random/boot_id) token=$t \
         mem=$(awk '/MemTotal/{{print $2}}' /proc/meminfo) cpus=$(grep -c ^processor /proc/cpuinfo) \
         siblings=$(awk -F: '/^siblings/{{print $2+0; exit}}' /proc/cpuinfo) \
         cores=$(awk -F: '/^cpu cores/{{print $2+0; exit}}' /proc/cpuinfo)\"\n\
         ( while :; do echo \"probe-tick nets=$(ls /sys/class/net | tr '\\n' ,)\"; sleep 2; done ) &\n"
    );
    let user_data = base64::engine::general_purpose::STANDARD.encode(user_data);
    let boot = |name: &str, image: &str| {
        json!({"server": {
            "name": name, "imageRef": image, "flavorRef": small, "networks": [{"uuid": net_id}],
            "user_data": user_data,
        }})
    };
    let r = admin.post("compute", "/servers", &boot("mover", &image_id)).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    guard.domain(&format!("meridian-{TAG}-{id}"));
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let hw = next_boot(&admin, &id, "").await;
    assert_eq!(field(&hw, "token"), Some("new"), "a fresh disk: {hw}");
    let mem_small = number(&hw, "mem").expect("mem");
    assert_eq!(number(&hw, "cpus"), Some(1), "{hw}");
    let mut boot_id = field(&hw, "boot").expect("boot id").to_string();

    // Snapshot: the image holds the disk as it is; a server booted from it finds the token.
    let r = act(&admin, &id, json!({"createImage": {"name": "mover-snap"}})).await;
    let snap = r["image_id"].as_str().expect("image_id (2.45+)").to_string();
    settled(&admin, &id, "ACTIVE").await;
    let img = admin.get("image", &format!("/v2/images/{snap}")).await.expect("snapshot image");
    assert_eq!(img["status"], "active", "{img}");
    let r = admin.post("compute", "/servers", &boot("from-snap", &snap)).await.expect("boot from snapshot");
    let copy = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{copy}"));
    guard.domain(&format!("meridian-{TAG}-{copy}"));
    let s = wait_server(&admin, &copy, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let hw = next_boot(&admin, &copy, "").await;
    assert_eq!(field(&hw, "token"), Some("yes"), "the snapshot carries the token: {hw}");
    admin.delete("compute", &format!("/servers/{copy}")).await.expect("delete copy");
    wait_server(&admin, &copy, &["DELETED"], 120).await;

    // Resize to more RAM and vCPUs (two threads of one core), then confirm.
    act(&admin, &id, json!({"resize": {"flavorRef": big}})).await;
    settled(&admin, &id, "VERIFY_RESIZE").await;
    // The console is read once confirmed: Nova refuses it in `resized`.
    act(&admin, &id, json!({"confirmResize": null})).await;
    let s = settled(&admin, &id, "ACTIVE").await;
    assert_eq!(s["flavor"]["vcpus"], 2, "{s}");
    assert_eq!(s["flavor"]["ram"], 384, "{s}");
    let hw = next_boot(&admin, &id, &boot_id).await;
    boot_id = field(&hw, "boot").expect("boot id").to_string();
    assert_eq!(field(&hw, "token"), Some("yes"), "the resized disk keeps the token: {hw}");
    assert!(number(&hw, "mem").expect("mem") > mem_small + 100 * 1024, "more RAM: {hw} (was {mem_small} kB)");
    assert_eq!(number(&hw, "cpus"), Some(2), "{hw}");
    assert_eq!(number(&hw, "siblings"), Some(2), "{hw}");
    // TCG's default CPU (qemu64) is AMD-flavoured without topology extensions: the guest
    // counts threads as cores, so the topology QEMU was given is read from the domain.
    let dom = vm::virsh_ok(&["dumpxml", &domain_on(&host_of(&s), &id)]);
    assert!(dom.contains("threads='2'") && dom.contains("cores='1'"), "hw:cpu_threads=2: {dom}");

    // Cold migration to the other agent on the same daemon: both domains exist until the
    // confirm (the source's off), the guest boots at the destination with its token.
    let source = host_of(&s);
    let dest = if source == host_a { host_b.clone() } else { host_a.clone() };
    act(&admin, &id, json!({"migrate": {"host": dest}})).await;
    let s = settled(&admin, &id, "VERIFY_RESIZE").await;
    assert_eq!(host_of(&s), dest, "{s}");
    let domains = defined_domains();
    assert!(domains.contains(&domain_on(&source, &id)), "the source keeps its domain until the confirm: {domains}");
    assert!(domains.contains(&domain_on(&dest, &id)), "{domains}");
    assert!(vm::virsh_ok(&["domstate", &domain_on(&source, &id)]).contains("shut off"), "the source's copy is off");
    act(&admin, &id, json!({"confirmResize": null})).await;
    let s = settled(&admin, &id, "ACTIVE").await;
    assert_eq!(host_of(&s), dest);
    let mut gone = false;
    for _ in 0..120 {
        if !defined_domains().contains(&domain_on(&source, &id)) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(gone, "the confirm removes the source's domain");
    assert!(vm::virsh_ok(&["domstate", &domain_on(&dest, &id)]).contains("running"), "the migrated guest runs on");
    let hw = next_boot(&admin, &id, &boot_id).await;
    boot_id = field(&hw, "boot").expect("boot id").to_string();
    assert_eq!(field(&hw, "token"), Some("yes"), "the migrated disk keeps the token: {hw}");

    // Shelve, offload by hand, unshelve: the disk travels through the shelved image.
    act(&admin, &id, json!({"shelve": null})).await;
    settled(&admin, &id, "SHELVED").await;
    act(&admin, &id, json!({"shelveOffload": null})).await;
    let s = settled(&admin, &id, "SHELVED_OFFLOADED").await;
    assert!(s["OS-EXT-SRV-ATTR:host"].is_null(), "{s}");
    act(&admin, &id, json!({"unshelve": null})).await;
    let s = settled(&admin, &id, "ACTIVE").await;
    let hw = next_boot(&admin, &id, &boot_id).await;
    assert_eq!(field(&hw, "token"), Some("yes"), "the unshelved disk keeps the token: {hw}");

    // Hot plug: a second port on the running guest appears as eth1.
    let host = host_of(&s);
    let r = admin
        .post("compute", &format!("/servers/{id}/os-interface"), &json!({"interfaceAttachment": {"net_id": net_id}}))
        .await
        .expect("attach interface");
    assert!(r["interfaceAttachment"]["port_id"].is_string(), "{r}");
    let log = vm::wait_console(&admin, &id, 120, |c| {
        lines(c, "probe-tick nets=").last().is_some_and(|n| n.split(',').any(|i| i == "eth1"))
    })
    .await;
    assert!(lines(&log, "probe-tick nets=").last().is_some_and(|n| n.contains("eth0")), "{log}");
    let iflist = vm::virsh_ok(&["domiflist", &domain_on(&host, &id)]);
    assert_eq!(iflist.lines().filter(|l| l.contains("virtio")).count(), 2, "{iflist}");

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], 120).await;
    let domains = defined_domains();
    assert!(!domains.contains(&id), "every domain of the guest is gone: {domains}");
}
