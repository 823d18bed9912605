//! The real-VM tier for rescue and rebuild: a real TCG guest on `qemu:///system` through the
//! real server and agent. The guest's user data prints what its disks hold at 900 MiB, then
//! writes a token there on its own root disk (`/dev/vda`) when it is not there yet. A rescue
//! boots the rescue image (a fresh `vda`) with the instance's disk as `vdb`: the token is seen
//! on `vdb`. The unrescue boots the original: the token is on `vda`. A rebuild gives a fresh
//! disk (no token on `vda` at boot) with the same IP address. `MERIDIAN_SKIP_REAL_VM=1` skips.

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server, wait_settled};
use serde_json::{Value, json};

const BOOT_SECS: u64 = 180;
const TOKEN: &str = "meridian-rescue-token-4242";

async fn act(client: &Client, id: &str, body: Value) -> Value {
    client.post("compute", &format!("/servers/{id}/action"), &body).await.expect("server action")
}

/// The `<dev>-says:[…]` lines of the console, in order.
fn says(console: &str, dev: &str) -> Vec<String> {
    let tag = format!("{dev}-says:[");
    console
        .lines()
        .filter_map(|l| l.split(&tag).nth(1))
        .filter_map(|r| r.split(']').next())
        .map(str::to_string)
        .collect()
}

fn ip_of(server: &Value) -> String {
    server["addresses"]
        .as_object()
        .and_then(|n| n.values().next())
        .and_then(|l| l[0]["addr"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_sees_the_old_disk_and_rebuild_gives_a_fresh_one() {
    if !vm::enabled("rescue_sees_the_old_disk_and_rebuild_gives_a_fresh_one") {
        return;
    }
    let image = vm::image_dir();
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let _agent = Agent::start_opts(&server, &format!("vmr-{}", std::process::id()), vm::URI, &[]);
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    wait_hosts_up(&admin, 1).await;
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "vm.rescue", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "rescuenet", &vm::private_subnet(11)).await;
    guard.network(&format!("meridian-{net_id}"));

    let read = |dev: &str| {
        format!(
            "echo \"{dev}-says:[$(dd if=/dev/{dev} bs=1M skip=900 count=1 2>/dev/null | tr -cd 'a-z0-9-' | head -c 40)]\" >/dev/ttyS0\n"
        )
    };
    let user_data = format!(
        "#!/bin/sh\n{}{}dd if=/dev/vda bs=1M skip=900 count=1 2>/dev/null | grep -q {TOKEN} || \
         (echo {TOKEN} | dd of=/dev/vda bs=1M seek=900 conv=fsync 2>/dev/null)\necho token-written >/dev/ttyS0\n",
        read("vda"),
        read("vdb")
    );
    let body = json!({"server": {
        "name": "rescuer", "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
        "user_data": base64::engine::general_purpose::STANDARD.encode(user_data),
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let ip = ip_of(&s);
    let log = vm::wait_console(&admin, &id, BOOT_SECS, |c| c.contains("token-written")).await;
    assert_eq!(says(&log, "vda").first().map(String::as_str), Some(""), "a fresh disk: {log}");

    // Rescue: the rescue image boots as vda; the instance's disk, token and all, is vdb.
    let r = act(&admin, &id, json!({"rescue": null})).await;
    assert!(r["adminPass"].is_string(), "{r}");
    wait_settled(&admin, &id, "RESCUE", BOOT_SECS).await;
    let log = vm::wait_console(&admin, &id, BOOT_SECS, |c| says(c, "vdb").iter().any(|t| t == TOKEN)).await;
    let vda = says(&log, "vda");
    assert_eq!(vda.last().map(String::as_str), Some(""), "the rescue disk is fresh: {log}");

    // Unrescue: the original boots again, its token on vda.
    act(&admin, &id, json!({"unrescue": null})).await;
    wait_settled(&admin, &id, "ACTIVE", BOOT_SECS).await;
    let seen = says(&vm::console(&admin, &id).await, "vda").len();
    let log = vm::wait_console(&admin, &id, BOOT_SECS, |c| says(c, "vda").len() > seen).await;
    assert_eq!(says(&log, "vda").last().map(String::as_str), Some(TOKEN), "{log}");

    // Rebuild: a fresh disk (no token at boot), the same address.
    act(&admin, &id, json!({"rebuild": {"imageRef": image_id}})).await;
    let s = wait_settled(&admin, &id, "ACTIVE", BOOT_SECS).await;
    assert_eq!(ip_of(&s), ip, "the same port and address");
    let seen = says(&vm::console(&admin, &id).await, "vda").len();
    let log = vm::wait_console(&admin, &id, BOOT_SECS, |c| says(c, "vda").len() > seen).await;
    assert_eq!(says(&log, "vda").last().map(String::as_str), Some(""), "the rebuilt disk is fresh: {log}");

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], 120).await;
}
