//! The real-VM tier for boot from volume: a volume made from the guest image on
//! `qemu:///system`, a QEMU guest booted from it writes a random token to a file on the
//! volume's own filesystem (the boot partition), the server is deleted and the volume kept, a
//! second server boots from the same volume and reads the file back. Checked from outside:
//! the API, the consoles (`os-getConsoleOutput`), `virsh` and the volume file.
//! `MERIDIAN_SKIP_REAL_VM=1` skips the tier.

use std::time::{Duration, Instant};

use meridian_e2e::vm::{self, BfvRig};
use meridian_e2e::{wait_server, wait_volume};

/// Hang guards only: guests boot in seconds under TCG here.
const SECS: u64 = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_on_a_boot_volume_outlives_its_server() {
    if !vm::enabled("a_file_written_on_a_boot_volume_outlives_its_server") {
        return;
    }
    let rig = BfvRig::start("bfv", 11, SECS).await;
    let (admin, vid) = (&rig.admin, rig.vid.clone());
    assert_eq!(rig.volume["bootable"], "true", "{}", rig.volume);
    let file = rig.agent.state_dir.join("volumes").join(format!("{vid}.raw"));
    assert_eq!(std::fs::metadata(&file).expect("volume file").len(), 1 << 30);

    // Unique per run: the reader cannot have seen it anywhere else.
    let (token, writer, reader) = vm::boot_volume_token("bfv");

    let first = rig.boot_from("bfv-writer", &vid, &writer).await;
    let s = wait_server(admin, &first, &["ACTIVE", "ERROR"], SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    assert_eq!(s["image"], "", "{s}");
    assert!(s["os-extended-volumes:volumes_attached"].to_string().contains(&vid), "{s}");
    assert_eq!(wait_volume(admin, &vid, "in-use", SECS).await["attachments"][0]["device"], "/dev/vda");
    let disks = vm::virsh_ok(&["domblklist", &format!("meridian-{first}")]);
    assert!(disks.contains(&file.display().to_string()), "the volume is not the guest's disk: {disks}");
    vm::wait_console(admin, &first, SECS, |c| c.contains("bfv-written")).await;

    // The server goes; the volume (not delete_on_termination) stays with the file.
    admin.delete("compute", &format!("/servers/{first}")).await.expect("delete");
    wait_server(admin, &first, &["DELETED"], SECS).await;
    wait_volume(admin, &vid, "available", SECS).await;
    assert!(file.exists());

    let second = rig.boot_from("bfv-reader", &vid, &reader).await;
    let s = wait_server(admin, &second, &["ACTIVE", "ERROR"], SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let log = vm::wait_console(admin, &second, SECS, |c| c.contains("bfv-read ")).await;
    assert!(log.contains(&format!("bfv-read {token}")), "{log}");

    admin.delete("compute", &format!("/servers/{second}")).await.expect("delete");
    wait_server(admin, &second, &["DELETED"], SECS).await;
    wait_volume(admin, &vid, "available", SECS).await;
    admin.delete("block-storage", &format!("/volumes/{vid}")).await.expect("delete volume");
    let deadline = Instant::now() + Duration::from_secs(SECS);
    while file.exists() {
        assert!(Instant::now() < deadline, "the volume file stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
