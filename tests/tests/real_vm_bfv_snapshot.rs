//! The real-VM tier for snapshots of volume-backed servers: a QEMU guest on `qemu:///system`
//! booted from a volume writes a random token to the volume's boot partition, the server is
//! snapshotted while it runs (`createImage`: a forced snapshot of its volume and an image
//! mapping it), and a second server booted from that image (a new volume made from the
//! snapshot) reads the token back. `MERIDIAN_SKIP_REAL_VM=1` skips the tier.

use base64::Engine as _;
use meridian_e2e::vm::{self, BfvRig};
use meridian_e2e::{wait_server, wait_volume};
use serde_json::json;

/// Hang guards only: guests boot in seconds under TCG here.
const SECS: u64 = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_booted_from_a_volume_backed_snapshot_reads_what_the_first_wrote() {
    if !vm::enabled("a_server_booted_from_a_volume_backed_snapshot_reads_what_the_first_wrote") {
        return;
    }
    let rig = BfvRig::start("vbs", 12, SECS).await;
    let (admin, vid, flavor, net_id) = (&rig.admin, rig.vid.clone(), rig.flavor.clone(), rig.net_id.clone());
    let (token, writer, reader) = vm::boot_volume_token("vbs");

    let first = rig.boot_from("vbs-writer", &vid, &writer).await;
    let s = wait_server(admin, &first, &["ACTIVE", "ERROR"], SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    vm::wait_console(admin, &first, SECS, |c| c.contains("vbs-written")).await;

    // The snapshot of the running server: the request returns once the volume's is made.
    let mut v245 = admin.clone();
    v245.compute_version = Some("2.45".into());
    let r = v245
        .post("compute", &format!("/servers/{first}/action"), &json!({"createImage": {"name": "vbs-snap"}}))
        .await
        .expect("createImage");
    let snap_image = r["image_id"].as_str().expect("image id").to_string();
    let img = admin.get("image", &format!("/v2/images/{snap_image}")).await.expect("image");
    assert_eq!((img["status"].as_str(), img["size"].as_i64()), (Some("active"), Some(0)), "{img}");
    let mapping: serde_json::Value =
        serde_json::from_str(img["block_device_mapping"].as_str().expect("mapping")).expect("json");
    let snap_id = mapping[0]["snapshot_id"].as_str().expect("snapshot id").to_string();
    let snap = admin.get("block-storage", &format!("/snapshots/{snap_id}")).await.expect("snapshot");
    assert_eq!(
        (snap["snapshot"]["status"].as_str(), snap["snapshot"]["volume_id"].as_str()),
        (Some("available"), Some(vid.as_str()))
    );
    let s = wait_server(admin, &first, &["ACTIVE"], SECS).await;
    assert_eq!(s["OS-EXT-STS:task_state"], serde_json::Value::Null, "{s}");

    // A server from the image: its root volume is a copy of the snapshot, with the token.
    let body = json!({"server": {
        "name": "vbs-reader", "imageRef": snap_image, "flavorRef": flavor, "networks": [{"uuid": net_id}],
        "user_data": base64::engine::general_purpose::STANDARD.encode(&reader),
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot from the snapshot image");
    let second = r["server"]["id"].as_str().expect("id").to_string();
    rig.guard.domain(&format!("meridian-{second}"));
    let s = wait_server(admin, &second, &["ACTIVE", "ERROR"], SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let attached = s["os-extended-volumes:volumes_attached"].as_array().cloned().unwrap_or_default();
    assert_eq!(attached.len(), 1, "{s}");
    let copy = attached[0]["id"].as_str().expect("volume").to_string();
    assert_ne!(copy, vid);
    let v = wait_volume(admin, &copy, "in-use", SECS).await;
    assert_eq!(v["snapshot_id"], snap_id.as_str(), "{v}");
    let log = vm::wait_console(admin, &second, SECS, |c| c.contains("vbs-read ")).await;
    assert!(log.contains(&format!("vbs-read {token}")), "{log}");

    for id in [&first, &second] {
        admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
        wait_server(admin, id, &["DELETED"], SECS).await;
    }
}
