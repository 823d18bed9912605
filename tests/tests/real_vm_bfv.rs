//! The real-VM tier for boot from volume: a volume made from the guest image on
//! `qemu:///system`, a QEMU guest booted from it writes a random token to a file on the
//! volume's own filesystem (the boot partition), the server is deleted and the volume kept, a
//! second server boots from the same volume and reads the file back. Checked from outside:
//! the API, the consoles (`os-getConsoleOutput`), `virsh` and the volume file.
//! `MERIDIAN_SKIP_REAL_VM=1` skips the tier.

use std::time::{Duration, Instant};

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server, wait_volume};
use serde_json::json;

/// Hang guards only: guests boot in seconds under TCG here.
const SECS: u64 = 240;

/// Boots a server from volume `vid` (existing volume, kept on termination) running `script`.
async fn boot_from(
    admin: &Client,
    guard: &LibvirtGuard,
    name: &str,
    flavor: &str,
    net: &str,
    vid: &str,
    script: &str,
) -> String {
    let body = json!({"server": {
        "name": name, "imageRef": "", "flavorRef": flavor, "networks": [{"uuid": net}],
        "block_device_mapping_v2": [{
            "uuid": vid, "source_type": "volume", "destination_type": "volume",
            "boot_index": 0, "delete_on_termination": false,
        }],
        "user_data": base64::engine::general_purpose::STANDARD.encode(script),
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_on_a_boot_volume_outlives_its_server() {
    if !vm::enabled("a_file_written_on_a_boot_volume_outlives_its_server") {
        return;
    }
    let image = vm::image_dir();
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent =
        Agent::start_opts(&server, &format!("bfv-{}", std::process::id()), vm::URI, &["--stop-timeout-secs", "60"]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    // No root disk: a volume-backed server needs none.
    let flavor = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "bfv.small", "ram": 256, "vcpus": 1, "disk": 0}}))
        .await
        .expect("flavor")["flavor"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "bfvnet", &vm::private_subnet(11)).await;
    guard.network(&format!("meridian-{net_id}"));

    let body = json!({"volume": {"size": 1, "name": "root", "imageRef": image_id}});
    let vid = admin.post("block-storage", "/volumes", &body).await.expect("volume")["volume"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let shown = wait_volume(&admin, &vid, "available", SECS).await;
    assert_eq!(shown["bootable"], "true", "{shown}");
    let file = agent.state_dir.join("volumes").join(format!("{vid}.raw"));
    assert_eq!(std::fs::metadata(&file).expect("volume file").len(), 1 << 30);

    // The guest runs from its initramfs; the boot partition (FAT) on the volume is the file
    // system it can write. Unique per run: the reader cannot have seen it anywhere else.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let token = format!("bfv-token-{nanos:x}{:x}", std::process::id());
    let mount = "mkdir -p /mnt/boot && mount -t vfat /dev/vda1 /mnt/boot";
    let writer = format!(
        "#!/bin/sh\n{mount} && printf '%s\\n' '{token}' > /mnt/boot/token.txt && umount /mnt/boot && sync \
         && echo 'bfv-written'\n"
    );
    let reader = format!("#!/bin/sh\n{mount} && echo \"bfv-read $(cat /mnt/boot/token.txt)\"\n");

    let first = boot_from(&admin, &guard, "bfv-writer", &flavor, &net_id, &vid, &writer).await;
    let s = wait_server(&admin, &first, &["ACTIVE", "ERROR"], SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    assert_eq!(s["image"], "", "{s}");
    assert!(s["os-extended-volumes:volumes_attached"].to_string().contains(&vid), "{s}");
    assert_eq!(wait_volume(&admin, &vid, "in-use", SECS).await["attachments"][0]["device"], "/dev/vda");
    let disks = vm::virsh_ok(&["domblklist", &format!("meridian-{first}")]);
    assert!(disks.contains(&file.display().to_string()), "the volume is not the guest's disk: {disks}");
    vm::wait_console(&admin, &first, SECS, |c| c.contains("bfv-written")).await;

    // The server goes; the volume (not delete_on_termination) stays with the file.
    admin.delete("compute", &format!("/servers/{first}")).await.expect("delete");
    wait_server(&admin, &first, &["DELETED"], SECS).await;
    wait_volume(&admin, &vid, "available", SECS).await;
    assert!(file.exists());

    let second = boot_from(&admin, &guard, "bfv-reader", &flavor, &net_id, &vid, &reader).await;
    let s = wait_server(&admin, &second, &["ACTIVE", "ERROR"], SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let log = vm::wait_console(&admin, &second, SECS, |c| c.contains("bfv-read ")).await;
    assert!(log.contains(&format!("bfv-read {token}")), "{log}");

    admin.delete("compute", &format!("/servers/{second}")).await.expect("delete");
    wait_server(&admin, &second, &["DELETED"], SECS).await;
    wait_volume(&admin, &vid, "available", SECS).await;
    admin.delete("block-storage", &format!("/volumes/{vid}")).await.expect("delete volume");
    let deadline = Instant::now() + Duration::from_secs(SECS);
    while file.exists() {
        assert!(Instant::now() < deadline, "the volume file stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
