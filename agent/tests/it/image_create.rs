//! `ImageCreate` on `test:///default`: the instance's overlay (with what the "guest" wrote
//! into it) and its base copied through real `qemu-img` into one standalone image, uploaded
//! through the agent's image route; the guest's power state kept (or, for a shelve, off);
//! the temporary copy removed whatever happens.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_agent::config_drive;
use meridian_agent::controller::{Controller, ControllerConfig};
use meridian_agent::hypervisor::{DomainState, Hypervisor};
use meridian_agent::image_cache::ImageCache;
use meridian_agent::work::Work;
use meridian_agent::xml::{self, VirtType};
use meridian_common::agent::{Action, PowerState, WorkEvent};
use uuid::Uuid;

use crate::fixtures::{Cleanup, build_spec, client, libvirt, mac, nic, raw_image, start_server};

async fn exec(ctl: &Controller, id: Uuid, action: Action) -> (WorkEvent, Vec<String>) {
    let work = Work { id: Uuid::new_v4().to_string(), instance_id: id, attempt: 1, action };
    let seen = Mutex::new(Vec::new());
    let progress = |s: &str| seen.lock().expect("lock").push(s.to_string());
    let ev = ctl.execute(&work, &progress).await;
    (ev, seen.into_inner().expect("lock"))
}

fn power(ev: &WorkEvent) -> PowerState {
    match ev {
        WorkEvent::Done { power_state, .. } => *power_state,
        other => panic!("expected Done, got {other:?}"),
    }
}

/// The raw bytes of an image file in `format` (through qemu-img, as a guest would read them).
fn raw_of(dir: &Path, file: &Path, format: &str) -> Vec<u8> {
    let out = dir.join("check.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", format, "-O", "raw"])
        .arg(file)
        .arg(&out)
        .status()
        .expect("qemu-img");
    assert!(st.success());
    std::fs::read(&out).expect("read")
}

fn parts(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .filter(|n| n.ends_with(".part"))
        .collect()
}

#[tokio::test]
async fn the_root_disk_goes_to_the_image_through_qemu_img_and_the_upload_route() {
    let hv = libvirt();
    let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
    let (url, server) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let images = Arc::new(ImageCache::open(&dir.path().join("images"), client(&url), u64::MAX).expect("cache"));
    let cfg = ControllerConfig {
        instances_dir: dir.path().join("instances"),
        virt_type: VirtType::Test,
        arch: "x86_64".into(),
        supports_networks: true,
        stop_timeout: Duration::from_millis(600),
        config_drive_always: false,
        config_drive_format: config_drive::Format::Iso9660,
        availability_zone: "nova".into(),
        firewall: None,
        naming: Default::default(),
        migration: None,
    };
    let ctl = Controller::new(dyn_hv, images, cfg).expect("controller");
    let id = Uuid::new_v4();
    let net = Uuid::new_v4().to_string();
    let _cleanup = Cleanup { hv: hv.clone(), instances: vec![id], networks: vec![net.clone()] };
    let name = xml::Naming::default().domain(&id);
    let data = raw_image(4);
    server.add_image("base", data.clone());
    let mut spec = build_spec("base", &data, vec![nic(&net, &mac(), "10.77.9.5")]);
    spec.flavor.disk_gb = 0; // the disk keeps the image's size
    let (ev, _) = exec(&ctl, id, Action::Build(Box::new(spec))).await;
    assert_eq!(power(&ev), PowerState::Running, "{ev:?}");

    // The "guest" writes into its overlay: the snapshot must carry it, over the base's bytes.
    let inst_dir = dir.path().join("instances").join(id.to_string());
    let disk = inst_dir.join("disk");
    let st = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x42 4096 4096"])
        .arg(&disk)
        .status()
        .expect("qemu-io");
    assert!(st.success());
    let mut want = data.clone();
    want[4096..8192].fill(0x42);

    // A snapshot of the running guest: qcow2, progress as Nova's, the guest running after.
    let take = Action::ImageCreate { image_id: "snap-1".into(), disk_format: "qcow2".into(), shelving: false };
    let (ev, progress) = exec(&ctl, id, take).await;
    assert_eq!(power(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(progress, ["image_snapshot", "image_pending_upload", "image_uploading"]);
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Running), "resumed after the copy");
    let uploaded = server.uploads.lock().expect("lock").get("snap-1").cloned().expect("uploaded");
    assert_eq!(&uploaded[..4], b"QFI\xfb", "a qcow2 image");
    let file = dir.path().join("snap-1.qcow2");
    std::fs::write(&file, &uploaded).expect("write");
    let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&file).output().expect("info");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert!(info.get("backing-filename").is_none(), "standalone, no backing file: {info}");
    assert_eq!(raw_of(dir.path(), &file, "qcow2"), want, "the base and the guest's writes");
    assert!(parts(&inst_dir).is_empty(), "the temporary copy is gone");

    // Raw when asked; a paused guest stays paused.
    let n = name.clone();
    hv.pause(&n).expect("pause");
    let take = Action::ImageCreate { image_id: "snap-raw".into(), disk_format: "raw".into(), shelving: false };
    let (ev, _) = exec(&ctl, id, take).await;
    assert_eq!(power(&ev), PowerState::Paused, "{ev:?}");
    let uploaded = server.uploads.lock().expect("lock").get("snap-raw").cloned().expect("uploaded");
    assert_eq!(uploaded, want);
    hv.unpause(&n).expect("unpause");

    // A format the host cannot write fails; nothing left behind, the guest still running.
    let take = Action::ImageCreate { image_id: "snap-x".into(), disk_format: "vmdk".into(), shelving: false };
    let (ev, _) = exec(&ctl, id, take).await;
    assert!(matches!(ev, WorkEvent::Failed { .. }), "{ev:?}");
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Running));

    // An upload the server refuses (no such route for the image: the fake's credential is
    // replaced) fails the work, and the temporary copy still goes.
    let saved = server.credential.lock().expect("lock").clone();
    *server.credential.lock().expect("lock") = "someone-else".into();
    let take = Action::ImageCreate { image_id: "snap-denied".into(), disk_format: "qcow2".into(), shelving: false };
    let (ev, _) = exec(&ctl, id, take).await;
    assert!(matches!(ev, WorkEvent::Failed { .. }), "{ev:?}");
    assert!(parts(&inst_dir).is_empty(), "the temporary copy is gone after a failed upload");
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Running), "resumed after a failure");
    *server.credential.lock().expect("lock") = saved;

    // A shelve powers the guest off first and reports the shelving task states.
    let take = Action::ImageCreate { image_id: "shelved".into(), disk_format: "qcow2".into(), shelving: true };
    let (ev, progress) = exec(&ctl, id, take).await;
    assert_eq!(power(&ev), PowerState::Shutdown, "{ev:?}");
    assert_eq!(progress, ["shelving_image_pending_upload", "shelving_image_uploading"]);
    assert!(server.uploads.lock().expect("lock").contains_key("shelved"));
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Shutoff));
}
