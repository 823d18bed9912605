//! The real-VM tier for block storage: a volume made by the agent on `qemu:///system`, hot
//! plugged into a running QEMU guest that writes a random token to it, unplugged (the guest
//! releases it), plugged into a second running guest that reads the same token back. Checked
//! from outside: the API, the consoles (through `os-getConsoleOutput`), `virsh` and the file.
//! `MERIDIAN_SKIP_REAL_VM=1` skips the tier.

use std::time::{Duration, Instant};

use base64::Engine as _;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server, wait_volume};
use serde_json::json;

/// Hang guards only: guests boot in seconds under TCG here.
const SECS: u64 = 240;

/// The disks of a domain's live definition, from `virsh domblklist`.
fn targets(domain: &str) -> String {
    vm::virsh_ok(&["domblklist", domain])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_written_by_one_guest_is_read_by_another() {
    if !vm::enabled("a_token_written_by_one_guest_is_read_by_another") {
        return;
    }
    let image = vm::image_dir();
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent =
        Agent::start_opts(&server, &format!("vol-{}", std::process::id()), vm::URI, &["--stop-timeout-secs", "60"]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let flavor = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "vol.small", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor")["flavor"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "volnet", &vm::private_subnet(7)).await;
    guard.network(&format!("meridian-{net_id}"));

    let v = admin.post("block-storage", "/volumes", &json!({"volume": {"size": 1, "name": "shared"}})).await;
    let vid = v.expect("volume")["volume"]["id"].as_str().expect("id").to_string();
    wait_volume(&admin, &vid, "available", SECS).await;
    let file = agent.state_dir.join("volumes").join(format!("{vid}.raw"));
    assert_eq!(std::fs::metadata(&file).expect("volume file").len(), 1 << 30);

    // The guests wait for the volume to appear (the config drive is vdb, the volume vdc),
    // then write or read the first bytes of the raw device.
    // Unique per run: the reader cannot have seen it anywhere but on the volume.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let token = format!("meridian-token-{nanos:x}{:x}", std::process::id());
    let wait = "i=0; while [ ! -b /dev/vdc ] && [ $i -lt 600 ]; do sleep 0.5; i=$((i+1)); done\n";
    let writer = format!(
        "#!/bin/sh\n{wait}echo 'volume-seen'\nprintf '%s\\n' '{token}' > /tmp/token\n\
         dd if=/tmp/token of=/dev/vdc bs=512 count=1 conv=sync 2>/dev/null && sync && echo 'volume-written'\n"
    );
    let reader = format!("#!/bin/sh\n{wait}echo \"volume-read $(head -c {} /dev/vdc)\"\n", token.len());
    let mut ids = Vec::new();
    for (name, script) in [("writer", writer), ("reader", reader)] {
        let body = json!({"server": {
            "name": name, "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
            "user_data": base64::engine::general_purpose::STANDARD.encode(script),
        }});
        let r = admin.post("compute", "/servers", &body).await.expect("boot");
        let id = r["server"]["id"].as_str().expect("id").to_string();
        guard.domain(&format!("meridian-{id}"));
        ids.push(id);
    }
    for id in &ids {
        let s = wait_server(&admin, id, &["ACTIVE", "ERROR"], SECS).await;
        assert_eq!(s["status"], "ACTIVE", "{s}");
    }
    let (writer, reader) = (&ids[0], &ids[1]);

    // Hot plug into the running writer; it writes the token.
    let attach = json!({"volumeAttachment": {"volumeId": vid}});
    let r = admin.post("compute", &format!("/servers/{writer}/os-volume_attachments"), &attach).await.expect("attach");
    assert_eq!(r["volumeAttachment"]["device"], "/dev/vdc", "{r}");
    wait_volume(&admin, &vid, "in-use", SECS).await;
    assert!(targets(&format!("meridian-{writer}")).contains(&file.display().to_string()), "not in the live guest");
    vm::wait_console(&admin, writer, SECS, |c| c.contains("volume-written")).await;

    // Unplug: the guest lets go, the domain no longer has it, the bytes are in the file.
    admin.delete("compute", &format!("/servers/{writer}/os-volume_attachments/{vid}")).await.expect("detach");
    wait_volume(&admin, &vid, "available", SECS).await;
    assert!(!targets(&format!("meridian-{writer}")).contains(&file.display().to_string()), "still in the guest");
    let head = std::fs::read(&file).expect("volume file");
    assert!(head.starts_with(token.as_bytes()), "the token is not in the volume file");
    drop(head);

    // Plug into the running reader: it reads the same token.
    admin.post("compute", &format!("/servers/{reader}/os-volume_attachments"), &attach).await.expect("attach");
    wait_volume(&admin, &vid, "in-use", SECS).await;
    let log = vm::wait_console(&admin, reader, SECS, |c| c.contains("volume-read ")).await;
    assert!(log.contains(&format!("volume-read {token}")), "{log}");

    // Deleting the reader releases the volume, which outlives it; then it goes.
    admin.delete("compute", &format!("/servers/{reader}")).await.expect("delete");
    wait_server(&admin, reader, &["DELETED"], SECS).await;
    wait_volume(&admin, &vid, "available", SECS).await;
    assert!(file.exists());
    admin.delete("block-storage", &format!("/volumes/{vid}")).await.expect("delete volume");
    let deadline = Instant::now() + Duration::from_secs(SECS);
    while file.exists() {
        assert!(Instant::now() < deadline, "the volume file stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin.delete("compute", &format!("/servers/{writer}")).await.expect("delete");
    wait_server(&admin, writer, &["DELETED"], SECS).await;
}
