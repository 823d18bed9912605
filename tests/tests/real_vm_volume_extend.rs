//! The real-VM tier for extend while attached (Cinder 3.42): a volume hot plugged into a
//! running QEMU guest on `qemu:///system` is extended through the volume API; the agent grows
//! the file and resizes the live disk (libvirt's block resize), and the guest, which prints
//! the disk's size in sectors (`/sys/block/vdc/size`) whenever it changes, shows the new size
//! on its console. `MERIDIAN_SKIP_REAL_VM=1` skips the tier.

use std::time::{Duration, Instant};

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server, wait_volume};
use reqwest::Method;
use serde_json::json;

/// Hang guards only: guests boot in seconds under TCG here.
const SECS: u64 = 240;

/// `os-extend` at microversion `version` (3.42 for an in-use volume): the status and body.
async fn extend(admin: &Client, id: &str, size: u64, version: &str) -> (u16, String) {
    let r = admin
        .request(Method::POST, "block-storage", &format!("/volumes/{id}/action"))
        .expect("url")
        .header("openstack-api-version", format!("volume {version}"))
        .header("content-type", "application/json")
        .body(json!({"os-extend": {"new_size": size}}).to_string())
        .send()
        .await
        .expect("extend");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_sees_its_attached_volume_grow() {
    if !vm::enabled("a_guest_sees_its_attached_volume_grow") {
        return;
    }
    let image = vm::image_dir();
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent =
        Agent::start_opts(&server, &format!("volx-{}", std::process::id()), vm::URI, &["--stop-timeout-secs", "60"]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let flavor = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "volx.small", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor")["flavor"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "volxnet", &vm::private_subnet(8)).await;
    guard.network(&format!("meridian-{net_id}"));

    let v = admin.post("block-storage", "/volumes", &json!({"volume": {"size": 1, "name": "grows"}})).await;
    let vid = v.expect("volume")["volume"]["id"].as_str().expect("id").to_string();
    wait_volume(&admin, &vid, "available", SECS).await;
    let file = agent.state_dir.join("volumes").join(format!("{vid}.raw"));

    // The guest waits for the volume (vdb is the config drive, the volume vdc), then prints the
    // disk's size in 512-byte sectors each time it changes.
    let script = "#!/bin/sh\n\
        i=0; while [ ! -b /dev/vdc ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done\n\
        last=''; while true; do s=$(cat /sys/block/vdc/size 2>/dev/null); \
        if [ \"$s\" != \"$last\" ]; then echo \"vdc-sectors $s\"; last=$s; fi; sleep 0.5; done &\n";
    let body = json!({"server": {
        "name": "grower", "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
        "user_data": base64::engine::general_purpose::STANDARD.encode(script),
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let sid = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{sid}"));
    let s = wait_server(&admin, &sid, &["ACTIVE", "ERROR"], SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");

    let attach = json!({"volumeAttachment": {"volumeId": vid}});
    let r = admin.post("compute", &format!("/servers/{sid}/os-volume_attachments"), &attach).await.expect("attach");
    assert_eq!(r["volumeAttachment"]["device"], "/dev/vdc", "{r}");
    wait_volume(&admin, &vid, "in-use", SECS).await;
    vm::wait_console(&admin, &sid, SECS, |c| c.contains("vdc-sectors 2097152")).await;

    // Before 3.42 an in-use volume cannot be extended; at 3.42 it can.
    let (status, body) = extend(&admin, &vid, 2, "3.41").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = extend(&admin, &vid, 2, "3.42").await;
    assert_eq!(status, 202, "{body}");
    let v = wait_volume(&admin, &vid, "in-use", SECS).await;
    assert_eq!(v["size"], 2, "{v}");
    assert_eq!(std::fs::metadata(&file).expect("volume file").len(), 2 << 30);
    // The running guest sees 2 GiB without a reboot or a re-attach.
    vm::wait_console(&admin, &sid, SECS, |c| c.contains("vdc-sectors 4194304")).await;
    let actions = admin.get("compute", &format!("/servers/{sid}/os-instance-actions")).await.expect("actions");
    assert!(
        actions["instanceActions"].as_array().expect("list").iter().any(|a| a["action"] == "extend_volume"),
        "{actions}"
    );

    admin.delete("compute", &format!("/servers/{sid}")).await.expect("delete");
    wait_server(&admin, &sid, &["DELETED"], SECS).await;
    wait_volume(&admin, &vid, "available", SECS).await;
    admin.delete("block-storage", &format!("/volumes/{vid}")).await.expect("delete volume");
    let deadline = Instant::now() + Duration::from_secs(SECS);
    while file.exists() {
        assert!(Instant::now() < deadline, "the volume file stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
