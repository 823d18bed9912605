//! Rebuild, rescue and unrescue through the controller on `test:///default`: the rescue
//! definition boots the rescue disk first with the root disk second and the same NICs; the
//! unrescue puts back exactly the original definition, also after an agent restart in the
//! middle; repeats are done; a rebuild keeps the NICs and plugged volumes and replaces the
//! root disk.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_agent::config_drive;
use meridian_agent::controller::{Controller, ControllerConfig};
use meridian_agent::hypervisor::{DomainState, Hypervisor};
use meridian_agent::image_cache::ImageCache;
use meridian_agent::work::Work;
use meridian_agent::xml::{self, VirtType};
use meridian_common::agent::{Action, PowerState, VolumeSpec, WorkEvent};
use tempfile::TempDir;
use uuid::Uuid;

use crate::fixtures::{Cleanup, build_spec, client, libvirt, mac, nic, raw_image, start_server};

fn config(dir: &TempDir) -> ControllerConfig {
    ControllerConfig {
        instances_dir: dir.path().join("instances"),
        virt_type: VirtType::Test,
        arch: "x86_64".into(),
        supports_networks: true,
        stop_timeout: Duration::from_millis(600),
        config_drive_always: true,
        config_drive_format: config_drive::Format::Iso9660,
        availability_zone: "nova".into(),
        firewall: None,
        naming: Default::default(),
        migration: None,
    }
}

fn controller(hv: &Arc<meridian_agent::hypervisor::Libvirt>, dir: &TempDir, url: &str) -> Controller {
    let images = Arc::new(ImageCache::open(&dir.path().join("images"), client(url), u64::MAX).expect("cache"));
    let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
    Controller::new(dyn_hv, images, config(dir)).expect("controller")
}

async fn exec(ctl: &Controller, instance: Uuid, action: Action) -> (WorkEvent, Vec<String>) {
    let work = Work { id: Uuid::new_v4().to_string(), instance_id: instance, attempt: 1, action };
    let seen = Mutex::new(Vec::new());
    let progress = |s: &str| seen.lock().expect("lock").push(s.to_string());
    let ev = ctl.execute(&work, &progress).await;
    (ev, seen.into_inner().expect("lock"))
}

fn done(ev: &WorkEvent) -> PowerState {
    match ev {
        WorkEvent::Done { power_state, .. } => *power_state,
        other => panic!("expected Done, got {other:?}"),
    }
}

#[tokio::test]
async fn rescue_unrescue_and_rebuild_keep_nics_and_volumes() {
    let hv = libvirt();
    let (url, server) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = controller(&hv, &dir, &url);
    let id = Uuid::new_v4();
    let net_id = Uuid::new_v4().to_string();
    let _cleanup = Cleanup { hv: hv.clone(), instances: vec![id], networks: vec![net_id.clone()] };
    let name = xml::Naming::default().domain(&id);
    let idir = dir.path().join("instances").join(id.to_string());
    let root = idir.join("disk").display().to_string();
    let rescue_disk = idir.join("disk.rescue").display().to_string();
    let the_mac = mac();
    let (data, rescue_data, new_data) = (raw_image(3), raw_image(4), raw_image(5));
    server.add_image("img-a", data.clone());
    server.add_image("img-r", rescue_data.clone());
    server.add_image("img-b", new_data.clone());
    let spec = build_spec("img-a", &data, vec![nic(&net_id, &the_mac, "10.77.4.5")]);
    let nics = spec.nics.clone();
    let (ev, _) = exec(&ctl, id, Action::Build(Box::new(spec))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    // A volume plugged in as vdc.
    let vid = Uuid::new_v4();
    let vol = VolumeSpec { id: vid.to_string(), size_gb: 1, readonly: false };
    done(&exec(&ctl, vid, Action::VolumeCreate { volume: vol.clone(), source: None }).await.0);
    let attach = Action::VolumeAttach { volume: vol, attachment_id: "a1".into(), device: "vdc".into(), create: false };
    done(&exec(&ctl, id, attach).await.0);
    let original = hv.domain_config_xml(&name).expect("config");
    let volume_path = xml::disks(&original).into_iter().find(|(d, _)| d == "vdc").expect("vdc").1;

    // Rescue: the rescue disk as vda, the root disk as vdb, the same NIC; nothing else.
    let rescue_image = build_spec("img-r", &rescue_data, vec![]).image;
    let rescue = Action::Rescue { image: rescue_image, admin_password: Some("pw".into()) };
    let (ev, _) = exec(&ctl, id, rescue.clone()).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    let rescued = hv.domain_config_xml(&name).expect("config");
    assert_eq!(xml::disks(&rescued), vec![("vda".to_string(), rescue_disk.clone()), ("vdb".to_string(), root.clone())]);
    assert!(rescued.contains(&the_mac), "{rescued}");
    assert!(idir.join("disk.rescue").exists() && idir.join("unrescue.xml").exists());
    // A redelivered rescue is done and changes nothing.
    let (ev, _) = exec(&ctl, id, rescue).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(hv.domain_config_xml(&name).expect("config"), rescued);

    // The agent restarts before the unrescue: its files say what to put back.
    drop(ctl);
    let ctl = controller(&hv, &dir, &url);
    let (ev, _) = exec(&ctl, id, Action::Unrescue).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(hv.domain_config_xml(&name).expect("config"), original, "exactly the original definition");
    assert!(!idir.join("disk.rescue").exists() && !idir.join("unrescue.xml").exists());
    let (ev, _) = exec(&ctl, id, Action::Unrescue).await;
    assert_eq!(done(&ev), PowerState::Running, "a repeated unrescue is done");

    // Rebuild from another image: same NIC, the volume still plugged, a new root disk.
    let mut spec = build_spec("img-b", &new_data, nics);
    spec.name = "rebuilt".into();
    let (ev, progress) = exec(&ctl, id, Action::Rebuild(Box::new(spec.clone()))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(progress, ["rebuild_block_device_mapping", "rebuild_spawning"]);
    let rebuilt = hv.domain_config_xml(&name).expect("config");
    assert!(rebuilt.contains(&the_mac), "{rebuilt}");
    assert!(rebuilt.contains("<title>rebuilt</title>"), "{rebuilt}");
    let disks = xml::disks(&rebuilt);
    assert!(disks.contains(&("vdc".to_string(), volume_path.clone())), "{disks:?}");
    assert!(disks.contains(&("vda".to_string(), root.clone())), "{disks:?}");
    assert!(!idir.join("disk.rebuild-old").exists());
    let info =
        std::process::Command::new("qemu-img").args(["info", "--output=json", &root]).output().expect("qemu-img");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("img-b"), "the root disk is an overlay of the new image: {info}");
    assert_eq!(hv.state(&name).expect("state"), Some(DomainState::Running));

    // A rebuild of a stopped domain boots it (the server powers it off after); one on a host
    // without the domain is a build.
    done(&exec(&ctl, id, Action::Stop).await.0);
    let (ev, _) = exec(&ctl, id, Action::Rebuild(Box::new(spec.clone()))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    done(&exec(&ctl, id, Action::Delete).await.0);
    let (ev, _) = exec(&ctl, id, Action::Rebuild(Box::new(spec))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert!(xml::disks(&hv.domain_config_xml(&name).expect("config")).iter().all(|(d, _)| d != "vdc"));
    done(&exec(&ctl, id, Action::Delete).await.0);
    // Unrescue without a domain is refused; rescue too.
    let (ev, _) = exec(&ctl, id, Action::Unrescue).await;
    assert!(matches!(ev, WorkEvent::Failed { .. }), "{ev:?}");
}
