//! The controller end to end on `test:///default`: image download, qcow2 overlay, networks,
//! domain lifecycle, idempotent repeats, rejected transitions, cleanup.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_agent::config_drive;
use meridian_agent::controller::{Controller, ControllerConfig};
use meridian_agent::hypervisor::{DomainState, DomainSummary, HostInfo, HvError, Hypervisor, Libvirt};
use meridian_agent::image_cache::ImageCache;
use meridian_agent::work::Work;
use meridian_agent::xml::{self, VirtType};
use meridian_common::agent::{Action, PowerState, WorkEvent};
use tempfile::TempDir;
use uuid::Uuid;

use crate::fixtures::{Cleanup, ServerState, build_spec, client, libvirt, mac, nic, raw_image, start_server};

struct Env {
    ctl: Controller,
    images: Arc<ImageCache>,
    hv: Arc<Libvirt>,
    server: Arc<ServerState>,
    url: String,
    dir: TempDir,
}

async fn env() -> Env {
    let hv = libvirt();
    let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
    env_with(hv, dyn_hv).await
}

async fn env_with(hv: Arc<Libvirt>, dyn_hv: Arc<dyn Hypervisor>) -> Env {
    let (url, server) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = client(&url);
    let images = Arc::new(ImageCache::open(&dir.path().join("images"), client, u64::MAX).expect("cache"));
    let ctl = Controller::new(dyn_hv, images.clone(), controller_config(&dir)).expect("controller");
    Env { ctl, images, hv, server, url, dir }
}

fn controller_config(dir: &TempDir) -> ControllerConfig {
    ControllerConfig {
        instances_dir: dir.path().join("instances"),
        virt_type: VirtType::Test,
        arch: "x86_64".into(),
        supports_networks: true,
        stop_timeout: Duration::from_millis(600),
        // The test driver ignores disk files, but the drive is still built and attached.
        config_drive_always: true,
        config_drive_format: config_drive::Format::Iso9660,
        availability_zone: "nova".into(),
        firewall: None,
        naming: Default::default(),
        migration: None,
    }
}

impl Env {
    async fn exec(&self, instance: Uuid, action: Action) -> (WorkEvent, Vec<String>) {
        let work = Work { id: Uuid::new_v4().to_string(), instance_id: instance, attempt: 1, action };
        let seen = Mutex::new(Vec::new());
        let progress = |s: &str| seen.lock().expect("lock").push(s.to_string());
        let ev = self.ctl.execute(&work, &progress).await;
        (ev, seen.into_inner().expect("lock"))
    }

    fn instance_dir(&self, id: &Uuid) -> PathBuf {
        self.dir.path().join("instances").join(id.to_string())
    }

    async fn power(&self, id: &Uuid) -> Option<PowerState> {
        self.ctl
            .instances()
            .await
            .expect("instances")
            .into_iter()
            .find(|r| r.instance_id == id.to_string())
            .map(|r| r.power_state)
    }
}

fn done(ev: &WorkEvent) -> PowerState {
    match ev {
        WorkEvent::Done { power_state, .. } => *power_state,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn failed(ev: &WorkEvent) -> String {
    match ev {
        WorkEvent::Failed { message, .. } => message.clone(),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn instance_lifecycle() {
    let env = env().await;
    let id = Uuid::new_v4();
    let net_id = Uuid::new_v4().to_string();
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![id], networks: vec![net_id.clone()] };
    let name = xml::Naming::default().domain(&id);
    let data = raw_image(1);
    env.server.add_image("img-a", data.clone());
    let the_mac = mac();
    let spec = build_spec("img-a", &data, vec![nic(&net_id, &the_mac, "10.77.0.5")]);

    // Build: progress, then Done running; disk, domain and network exist.
    let (ev, progress) = env.exec(id, Action::Build(Box::new(spec.clone()))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(progress, ["block_device_mapping", "spawning"]);
    assert!(env.instance_dir(&id).join("disk").exists());
    let drive = env.instance_dir(&id).join("disk.config");
    assert!(drive.exists(), "no config drive");
    assert!(matches!(ev, WorkEvent::Done { config_drive: true, .. }), "the attached drive is reported: {ev:?}");
    // The test driver runs no guest: the agent's own lifecycle lines stand in for its console.
    let console = std::fs::read_to_string(env.ctl.console_log_path(&id)).expect("console log");
    assert!(console.contains("powered on by build") && console.lines().count() > 3, "{console}");
    assert!(!env.instance_dir(&id).join("config-drive.d").exists(), "the staging tree stays behind");
    let dom = env.hv.domain_xml(&name).expect("domain xml");
    assert!(dom.contains(&format!("<source file='{}'/>", drive.display())), "{dom}");
    assert!(dom.contains(&format!("<mac address='{the_mac}'/>")), "{dom}");
    assert!(dom.contains(&format!("<source network='{}'", xml::network_name(&net_id))));
    assert_eq!(env.power(&id).await, Some(PowerState::Running));
    assert!(env.images.is_pinned("img-a"));
    // A restarted agent pins the image again, from the instance's record.
    let client = client(&env.url);
    let images = Arc::new(ImageCache::open(&env.dir.path().join("images"), client, u64::MAX).expect("cache"));
    let dyn_hv: Arc<dyn Hypervisor> = env.hv.clone();
    Controller::new(dyn_hv, images.clone(), controller_config(&env.dir)).expect("controller");
    assert!(images.is_pinned("img-a"), "pins not rebuilt from the instance records");

    // A repeated build (a redelivery) is done without doing anything again.
    let (ev, progress) = env.exec(id, Action::Build(Box::new(spec))).await;
    assert_eq!(done(&ev), PowerState::Running);
    assert!(progress.is_empty());
    assert_eq!(env.server.image_hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Console log: the tail of the file the serial port writes.
    let log = env.ctl.console_log_path(&id);
    std::fs::write(&log, "one\ntwo\nthree\n").expect("console log");
    let (ev, _) = env.exec(id, Action::ConsoleLog { lines: Some(2) }).await;
    let WorkEvent::Done { console, .. } = ev else {
        panic!("console log failed: {ev:?}");
    };
    assert_eq!(console.as_deref(), Some("three\n"), "Nova's tail: the last two pieces of the split");

    // Stop, then stop again (already stopped), soft reboot of a stopped guest is refused.
    let (ev, _) = env.exec(id, Action::Stop).await;
    assert_eq!(done(&ev), PowerState::Shutdown);
    let (ev, _) = env.exec(id, Action::Stop).await;
    assert_eq!(done(&ev), PowerState::Shutdown);
    let (ev, _) = env.exec(id, Action::Reboot { hard: false }).await;
    assert!(failed(&ev).contains("cannot soft reboot an instance that is shut off"));

    // Start, reboots.
    let (ev, _) = env.exec(id, Action::Start).await;
    assert_eq!(done(&ev), PowerState::Running);
    let (ev, _) = env.exec(id, Action::Reboot { hard: false }).await;
    assert_eq!(done(&ev), PowerState::Running);
    let (ev, _) = env.exec(id, Action::Reboot { hard: true }).await;
    assert_eq!(done(&ev), PowerState::Running);

    // The guest powers itself off: the next report says shutdown.
    env.hv.shutdown(&name).expect("guest shutdown");
    assert_eq!(env.power(&id).await, Some(PowerState::Shutdown));
    // A hard reboot brings a stopped instance back.
    let (ev, _) = env.exec(id, Action::Reboot { hard: true }).await;
    assert_eq!(done(&ev), PowerState::Running);

    // Delete removes everything; a second delete is done too.
    let (ev, _) = env.exec(id, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState);
    assert_eq!(env.hv.state(&name).expect("state"), None);
    assert!(!env.instance_dir(&id).exists());
    let conn = virt::connect::Connect::open(Some(crate::fixtures::URI)).expect("connect");
    assert!(conn.lookup_network_by_name(&xml::network_name(&net_id)).is_err(), "network of the last instance kept");
    assert!(!env.images.is_pinned("img-a"), "image of a deleted instance still pinned");
    let (ev, _) = env.exec(id, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState);

    // Nothing to start, stop, reboot or read any more.
    for action in [Action::Start, Action::Stop, Action::Reboot { hard: true }, Action::ConsoleLog { lines: None }] {
        let (ev, _) = env.exec(id, action).await;
        assert!(failed(&ev).contains("not on this host"), "{ev:?}");
    }
}

#[tokio::test]
async fn network_stays_while_another_instance_uses_it() {
    let env = env().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let net_id = Uuid::new_v4().to_string();
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![a, b], networks: vec![net_id.clone()] };
    let data = raw_image(2);
    env.server.add_image("img-b", data.clone());
    let net_name = xml::network_name(&net_id);
    let conn = virt::connect::Connect::open(Some(crate::fixtures::URI)).expect("connect");
    let hosts = || {
        let x = conn.lookup_network_by_name(&net_name).and_then(|n| n.xml_desc(0)).ok()?;
        Some(xml::NetworkInfo::parse(&x).expect("network XML").dhcp_hosts.len())
    };

    // Both built at once: one download, one network, two DHCP entries.
    let spec_a = build_spec("img-b", &data, vec![nic(&net_id, &mac(), "10.77.0.10")]);
    let spec_b = build_spec("img-b", &data, vec![nic(&net_id, &mac(), "10.77.0.11")]);
    let (ra, rb) =
        tokio::join!(env.exec(a, Action::Build(Box::new(spec_a))), env.exec(b, Action::Build(Box::new(spec_b))));
    assert_eq!(done(&ra.0), PowerState::Running, "{:?}", ra.0);
    assert_eq!(done(&rb.0), PowerState::Running, "{:?}", rb.0);
    assert_eq!(env.server.image_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(hosts(), Some(2));

    let (ev, _) = env.exec(a, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState);
    assert_eq!(hosts(), Some(1), "the network went away with a user left");
    let (ev, _) = env.exec(b, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState);
    assert_eq!(hosts(), None);
}

/// The issue's `openstack server delete --wait web1-1 web1-2`: two deletes of one network's
/// instances at once (their queues run in parallel) must not each keep the network for the
/// other. A few rounds, since the interleaving varies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_remove_the_network_of_their_last_instances() {
    let env = env().await;
    let data = raw_image(5);
    env.server.add_image("img-c", data.clone());
    let conn = virt::connect::Connect::open(Some(crate::fixtures::URI)).expect("connect");
    for round in 0..3u8 {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let net_id = Uuid::new_v4().to_string();
        let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![a, b], networks: vec![net_id.clone()] };
        let spec_a = build_spec("img-c", &data, vec![nic(&net_id, &mac(), "10.77.0.10")]);
        let spec_b = build_spec("img-c", &data, vec![nic(&net_id, &mac(), "10.77.0.11")]);
        let (ra, rb) =
            tokio::join!(env.exec(a, Action::Build(Box::new(spec_a))), env.exec(b, Action::Build(Box::new(spec_b))));
        assert_eq!(done(&ra.0), PowerState::Running, "{:?}", ra.0);
        assert_eq!(done(&rb.0), PowerState::Running, "{:?}", rb.0);

        // Instance directories that take a while to remove (a guest's disk with many extents
        // does), as on a real host: a delete's record must not outlive its network decision.
        for id in [a, b] {
            let junk = env.instance_dir(&id).join("zz-slow");
            std::fs::create_dir_all(&junk).expect("mkdir");
            for i in 0..1500 {
                std::fs::write(junk.join(i.to_string()), b"x").expect("write");
            }
        }
        let (da, db) = tokio::join!(env.exec(a, Action::Delete), env.exec(b, Action::Delete));
        assert_eq!(done(&da.0), PowerState::NoState, "{:?}", da.0);
        assert_eq!(done(&db.0), PowerState::NoState, "{:?}", db.0);
        assert!(
            conn.lookup_network_by_name(&xml::network_name(&net_id)).is_err(),
            "round {round}: the network outlived both of its instances"
        );
        assert!(!env.instance_dir(&a).exists() && !env.instance_dir(&b).exists());
    }
}

#[tokio::test]
async fn failed_builds_leave_nothing_behind() {
    let env = env().await;
    let id = Uuid::new_v4();
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![id], networks: vec![] };
    env.server.add_image("img-c", raw_image(3));
    // The spec's checksum is for other bytes.
    let spec = build_spec("img-c", &raw_image(4), vec![]);
    let (ev, _) = env.exec(id, Action::Build(Box::new(spec))).await;
    let WorkEvent::Failed { message, retryable, .. } = &ev else {
        panic!("bad checksum accepted: {ev:?}");
    };
    assert!(message.contains("failed its checksum"), "{message}");
    assert!(!retryable);
    assert_eq!(env.hv.state(&xml::Naming::default().domain(&id)).expect("state"), None);
    assert!(!env.instance_dir(&id).exists());
    assert!(!env.dir.path().join("images/img-c").exists());

    // An image the server does not have.
    let spec = build_spec("img-missing", &raw_image(3), vec![]);
    let (ev, _) = env.exec(id, Action::Build(Box::new(spec))).await;
    assert!(failed(&ev).contains("cannot download image img-missing"), "{ev:?}");

    // A flavor disk smaller than the image's virtual size.
    let mut spec = build_spec("img-c", &raw_image(3), vec![]);
    spec.image.size = 0;
    spec.image.checksum = crate::fixtures::md5_hex(&raw_image(3));
    spec.flavor.disk_gb = 0;
    let (ev, _) = env.exec(id, Action::Build(Box::new(spec.clone()))).await;
    assert_eq!(done(&ev), PowerState::Running, "size 0 keeps the image size");
    let (ev, _) = env.exec(id, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState);

    // Invalid specs are refused before anything is touched.
    spec.nics = vec![nic("n", "not-a-mac", "10.77.0.9")];
    let (ev, progress) = env.exec(id, Action::Build(Box::new(spec))).await;
    assert!(failed(&ev).contains("bad MAC address"), "{ev:?}");
    assert_eq!(progress, ["block_device_mapping"]);
}

#[tokio::test]
async fn direct_kernel_boot_uses_cached_kernel_and_ramdisk() {
    let env = env().await;
    let id = Uuid::new_v4();
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![id], networks: vec![] };
    let disk = raw_image(5);
    env.server.add_image("img-d", disk.clone());
    env.server.add_image("aki-1", b"kernel".to_vec());
    env.server.add_image("ari-1", b"ramdisk".to_vec());
    let mut spec = build_spec("img-d", &disk, vec![]);
    spec.image.properties = BTreeMap::from([
        ("kernel_id".to_string(), "aki-1".to_string()),
        ("ramdisk_id".to_string(), "ari-1".to_string()),
        ("os_command_line".to_string(), "console=ttyS0 root=/dev/vda".to_string()),
    ]);
    let (ev, _) = env.exec(id, Action::Build(Box::new(spec))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    let dom = env.hv.domain_xml(&xml::Naming::default().domain(&id)).expect("domain xml");
    let images = env.dir.path().join("images");
    assert!(dom.contains(&format!("<kernel>{}</kernel>", images.join("aki-1").display())), "{dom}");
    assert!(dom.contains(&format!("<initrd>{}</initrd>", images.join("ari-1").display())));
    assert!(dom.contains("<cmdline>console=ttyS0 root=/dev/vda</cmdline>"));
    let (ev, _) = env.exec(id, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState);

    // Without os_command_line: Nova's default, root device and serial console included.
    let id = Uuid::new_v4();
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![id], networks: vec![] };
    let mut spec = build_spec("img-d", &disk, vec![]);
    spec.image.properties = BTreeMap::from([("kernel_id".to_string(), "aki-1".to_string())]);
    let (ev, _) = env.exec(id, Action::Build(Box::new(spec))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    let dom = env.hv.domain_xml(&xml::Naming::default().domain(&id)).expect("domain xml");
    assert!(dom.contains("<cmdline>root=/dev/vda console=tty0 console=ttyS0 console=hvc0</cmdline>"), "{dom}");
    assert!(!dom.contains("<initrd>"), "{dom}");
    let (ev, _) = env.exec(id, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState);
}

/// The real test driver, but the guest ignores ACPI: shutdown requests do nothing and guest
/// reboots fail, as with an image without ACPI support.
struct DeafGuest(Arc<Libvirt>);

impl Hypervisor for DeafGuest {
    fn host_info(&self) -> Result<HostInfo, HvError> {
        self.0.host_info()
    }
    fn domains(&self) -> Result<Vec<DomainSummary>, HvError> {
        self.0.domains()
    }
    fn state(&self, name: &str) -> Result<Option<DomainState>, HvError> {
        self.0.state(name)
    }
    fn domain_xml(&self, name: &str) -> Result<String, HvError> {
        self.0.domain_xml(name)
    }
    fn define(&self, xml: &str) -> Result<(), HvError> {
        self.0.define(xml)
    }
    fn start(&self, name: &str) -> Result<(), HvError> {
        self.0.start(name)
    }
    fn shutdown(&self, _name: &str) -> Result<(), HvError> {
        Ok(())
    }
    fn destroy(&self, name: &str) -> Result<(), HvError> {
        self.0.destroy(name)
    }
    fn reboot(&self, name: &str) -> Result<(), HvError> {
        Err(HvError::NoDomain(format!("{name} (no ACPI)")))
    }
    fn reset(&self, name: &str) -> Result<(), HvError> {
        self.0.reset(name)
    }
    fn undefine(&self, name: &str) -> Result<(), HvError> {
        self.0.undefine(name)
    }
    fn ensure_network(&self, name: &str, xml: &str) -> Result<(), HvError> {
        self.0.ensure_network(name, xml)
    }
    fn set_dhcp_host(&self, network: &str, mac: &str, ip: &str) -> Result<(), HvError> {
        self.0.set_dhcp_host(network, mac, ip)
    }
    fn remove_dhcp_host(&self, network: &str, mac: &str) -> Result<(), HvError> {
        self.0.remove_dhcp_host(network, mac)
    }
    fn remove_network(&self, name: &str) -> Result<(), HvError> {
        self.0.remove_network(name)
    }
}

#[tokio::test]
async fn a_guest_that_ignores_shutdown_is_destroyed_after_the_timeout() {
    let hv = libvirt();
    let env = env_with(hv.clone(), Arc::new(DeafGuest(hv.clone()))).await;
    let id = Uuid::new_v4();
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![id], networks: vec![] };
    let data = raw_image(6);
    env.server.add_image("img-e", data.clone());
    let (ev, _) = env.exec(id, Action::Build(Box::new(build_spec("img-e", &data, vec![])))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");

    // Stop waits out the timeout, then pulls the plug.
    let started = std::time::Instant::now();
    let (ev, _) = env.exec(id, Action::Stop).await;
    assert_eq!(done(&ev), PowerState::Shutdown);
    assert!(started.elapsed() >= Duration::from_millis(600));

    // A soft reboot the guest cannot do falls back to stop + start.
    let (ev, _) = env.exec(id, Action::Start).await;
    assert_eq!(done(&ev), PowerState::Running);
    let (ev, _) = env.exec(id, Action::Reboot { hard: false }).await;
    assert_eq!(done(&ev), PowerState::Running);

    let (ev, _) = env.exec(id, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState);
}

/// Volumes on test:///default: made as sparse files keyed by the volume, plugged into the
/// domain's definition (and the guest), never deleted while a domain has them, unplugged, gone.
#[tokio::test]
async fn volumes_are_made_attached_detached_and_deleted() {
    use meridian_common::agent::VolumeSpec;
    let env = env().await;
    let id = Uuid::new_v4();
    let net_id = Uuid::new_v4().to_string();
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![id], networks: vec![net_id.clone()] };
    let name = xml::Naming::default().domain(&id);
    let data = raw_image(1);
    env.server.add_image("img-v", data.clone());
    let spec = build_spec("img-v", &data, vec![nic(&net_id, &mac(), "10.77.3.5")]);
    let (ev, _) = env.exec(id, Action::Build(Box::new(spec))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");

    let vid = Uuid::new_v4();
    let vol = VolumeSpec { id: vid.to_string(), size_gb: 3, readonly: false };
    let file = env.dir.path().join("volumes").join(format!("{vid}.raw"));
    let (ev, _) = env.exec(vid, Action::VolumeCreate { volume: vol.clone(), source: None }).await;
    done(&ev);
    assert_eq!(std::fs::metadata(&file).expect("volume file").len(), 3 << 30);
    let (ev, _) = env.exec(vid, Action::VolumeCreate { volume: vol.clone(), source: None }).await;
    done(&ev);

    let attach =
        Action::VolumeAttach { volume: vol.clone(), attachment_id: "a1".into(), device: "vdc".into(), create: false };
    let (ev, _) = env.exec(id, attach.clone()).await;
    done(&ev);
    let disks = |xml: String| xml::disks(&xml).into_iter().filter(|(d, _)| d == "vdc").collect::<Vec<_>>();
    let path = file.display().to_string();
    // The test driver has no hot plug: the definition is what holds the disk here (the
    // real-QEMU tier checks the running guest).
    assert_eq!(disks(env.hv.domain_config_xml(&name).expect("config")), [("vdc".to_string(), path.clone())]);
    let config = env.hv.domain_config_xml(&name).expect("config");
    assert!(config.contains(&format!("<serial>{}</serial>", &vid.to_string()[..20])), "{config}");
    // A repeated attach (redelivery) changes nothing.
    let (ev, _) = env.exec(id, attach).await;
    done(&ev);
    assert_eq!(disks(env.hv.domain_config_xml(&name).expect("config")).len(), 1);
    // A restarted agent finds it where it left it: in the domain's definition.
    let images = Arc::new(ImageCache::open(&env.dir.path().join("images"), client(&env.url), u64::MAX).expect("cache"));
    let dyn_hv: Arc<dyn Hypervisor> = env.hv.clone();
    let restarted = Controller::new(dyn_hv, images, controller_config(&env.dir)).expect("controller");
    drop(restarted);
    assert_eq!(disks(env.hv.domain_config_xml(&name).expect("config")).len(), 1);
    assert!(file.exists());

    // Never deleted while a domain has it; extended in place.
    let (ev, _) = env.exec(vid, Action::VolumeDelete { volume: vol.clone() }).await;
    assert!(failed(&ev).contains("in use"), "{ev:?}");
    assert!(file.exists());
    let bigger = VolumeSpec { size_gb: 5, ..vol.clone() };
    let (ev, _) = env.exec(vid, Action::VolumeExtend { volume: bigger, attached: None }).await;
    done(&ev);
    assert_eq!(std::fs::metadata(&file).expect("volume file").len(), 5 << 30);

    // A stopped guest keeps it in its definition; a detach takes it out of both.
    let (ev, _) = env.exec(id, Action::Stop).await;
    done(&ev);
    assert_eq!(disks(env.hv.domain_config_xml(&name).expect("config")).len(), 1);
    // Started again, the guest has it from its definition; the detach then finishes at once
    // on a driver that cannot unplug live (nothing to wait for).
    let (ev, _) = env.exec(id, Action::Start).await;
    done(&ev);
    assert_eq!(disks(env.hv.domain_xml(&name).expect("live")).len(), 1);
    // Extended while plugged into the running guest (Cinder 3.42): the file grows and the live
    // disk is resized (the test driver cannot resize; the guest then sees it at its next start).
    let att = meridian_common::agent::ExtendAttached { instance_id: id.to_string(), device: "vdc".into() };
    let grown = Action::VolumeExtend { volume: VolumeSpec { size_gb: 6, ..vol.clone() }, attached: Some(att) };
    let (ev, _) = env.exec(vid, grown).await;
    done(&ev);
    assert_eq!(std::fs::metadata(&file).expect("volume file").len(), 6 << 30);
    let detach = Action::VolumeDetach { volume: vol.clone(), attachment_id: "a1".into(), device: "vdc".into() };
    let (ev, _) = env.exec(id, detach.clone()).await;
    done(&ev);
    assert!(disks(env.hv.domain_config_xml(&name).expect("config")).is_empty());
    let (ev, _) = env.exec(id, detach).await;
    done(&ev);

    // Attaching to a domain that does not exist is refused; the volume then goes.
    let missing = Uuid::new_v4();
    let attach =
        Action::VolumeAttach { volume: vol.clone(), attachment_id: "a2".into(), device: "vdb".into(), create: false };
    let (ev, _) = env.exec(missing, attach).await;
    assert!(failed(&ev).contains("no domain"), "{ev:?}");
    let (ev, _) = env.exec(vid, Action::VolumeDelete { volume: vol.clone() }).await;
    done(&ev);
    assert!(!file.exists());
    let (ev, _) = env.exec(vid, Action::VolumeDelete { volume: vol }).await;
    done(&ev);
}

/// Snapshots and clones through the controller on test:///default: an in-use volume's guest is
/// paused for the copy and running again after it; volumes made from the snapshot and from the
/// volume hold its bytes; deleting the snapshot leaves the volume; a volume from an image is
/// not this agent's yet.
#[tokio::test]
async fn snapshots_pause_the_guest_and_seed_new_volumes() {
    use meridian_common::agent::{VolumeSource, VolumeSpec};
    use std::os::unix::fs::FileExt;
    let env = env().await;
    let id = Uuid::new_v4();
    let net_id = Uuid::new_v4().to_string();
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![id], networks: vec![net_id.clone()] };
    let name = xml::Naming::default().domain(&id);
    let data = raw_image(2);
    env.server.add_image("img-s", data.clone());
    let spec = build_spec("img-s", &data, vec![nic(&net_id, &mac(), "10.77.4.5")]);
    let (ev, _) = env.exec(id, Action::Build(Box::new(spec))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");

    let vid = Uuid::new_v4();
    let vol = VolumeSpec { id: vid.to_string(), size_gb: 1, readonly: false };
    let dir = env.dir.path().join("volumes");
    let file = dir.join(format!("{vid}.raw"));
    let (ev, _) = env.exec(vid, Action::VolumeCreate { volume: vol.clone(), source: None }).await;
    done(&ev);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open")
        .write_all_at(b"written by the guest", 4096)
        .expect("write");
    let attach =
        Action::VolumeAttach { volume: vol.clone(), attachment_id: "a1".into(), device: "vdc".into(), create: false };
    let (ev, _) = env.exec(id, attach).await;
    done(&ev);

    // In use: the running guest is paused for the copy and resumed after it.
    let snap = Uuid::new_v4().to_string();
    let take =
        Action::SnapshotCreate { volume: vol.clone(), snapshot_id: snap.clone(), instance_id: Some(id.to_string()) };
    let (ev, _) = env.exec(vid, take).await;
    done(&ev);
    assert_eq!(env.hv.state(&name).expect("state"), Some(DomainState::Running), "resumed");
    let snap_file = dir.join("snapshots").join(format!("{snap}.raw"));
    assert_eq!(std::fs::read(&snap_file).expect("snapshot"), std::fs::read(&file).expect("volume"));

    // A paused guest stays paused (the copy did not resume what it did not pause).
    env.hv.pause(&name).expect("pause");
    let snap2 = Uuid::new_v4().to_string();
    let take =
        Action::SnapshotCreate { volume: vol.clone(), snapshot_id: snap2.clone(), instance_id: Some(id.to_string()) };
    let (ev, _) = env.exec(vid, take).await;
    done(&ev);
    assert_eq!(env.hv.state(&name).expect("state"), Some(DomainState::Paused));
    env.hv.unpause(&name).expect("resume");

    // New volumes from the snapshot (grown) and from the volume.
    let from_snap = VolumeSpec { id: Uuid::new_v4().to_string(), size_gb: 2, readonly: false };
    let source = Some(VolumeSource::Snapshot { snapshot_id: snap.clone() });
    let (ev, _) = env.exec(vid, Action::VolumeCreate { volume: from_snap.clone(), source }).await;
    done(&ev);
    let made = std::fs::read(dir.join(format!("{}.raw", from_snap.id))).expect("from snapshot");
    assert_eq!(made.len(), 2 << 30);
    assert_eq!(&made[4096..4096 + 20], b"written by the guest");
    drop(made);
    let clone = VolumeSpec { id: Uuid::new_v4().to_string(), size_gb: 1, readonly: false };
    let source = Some(VolumeSource::Volume { volume_id: vid.to_string() });
    let (ev, _) = env.exec(vid, Action::VolumeCreate { volume: clone.clone(), source }).await;
    done(&ev);
    assert_eq!(
        std::fs::read(dir.join(format!("{}.raw", clone.id))).expect("clone"),
        std::fs::read(&file).expect("vol")
    );
    // A snapshot that is not here: the create fails, nothing is made.
    let orphan = VolumeSpec { id: Uuid::new_v4().to_string(), size_gb: 1, readonly: false };
    let source = Some(VolumeSource::Snapshot { snapshot_id: Uuid::new_v4().to_string() });
    let (ev, _) = env.exec(vid, Action::VolumeCreate { volume: orphan.clone(), source }).await;
    assert!(failed(&ev).contains("does not exist"), "{ev:?}");
    assert!(!dir.join(format!("{}.raw", orphan.id)).exists());

    let detach = Action::VolumeDetach { volume: vol.clone(), attachment_id: "a1".into(), device: "vdc".into() };
    let (ev, _) = env.exec(id, detach).await;
    done(&ev);
    // A revert of the detached volume (Cinder 3.40): the snapshot's bytes again, the snapshot kept.
    let f = std::fs::OpenOptions::new().write(true).open(&file).expect("open");
    std::os::unix::fs::FileExt::write_all_at(&f, b"overwritten later", 4096).expect("write");
    drop(f);
    let (ev, _) = env.exec(vid, Action::VolumeRevert { volume: vol.clone(), snapshot_id: snap.clone() }).await;
    done(&ev);
    assert_eq!(std::fs::read(&file).expect("volume"), std::fs::read(&snap_file).expect("snapshot"));
    let (ev, _) =
        env.exec(vid, Action::VolumeRevert { volume: vol.clone(), snapshot_id: Uuid::new_v4().to_string() }).await;
    assert!(failed(&ev).contains("does not exist"), "{ev:?}");

    // Deleting the snapshots never touches the volume.
    let before = std::fs::read(&file).expect("volume");
    for s in [&snap, &snap2] {
        let (ev, _) = env.exec(vid, Action::SnapshotDelete { volume: vol.clone(), snapshot_id: s.clone() }).await;
        done(&ev);
    }
    assert!(!snap_file.exists());
    assert_eq!(std::fs::read(&file).expect("volume"), before);
    let (ev, _) = env.exec(id, Action::Delete).await;
    done(&ev);
}

/// Pause/unpause (libvirt suspend/resume) and suspend/resume (managed save, then a start that
/// restores it) on the test driver: the power states Nova reports, repeats that are done
/// without acting again, refusals with the reason, and a saved guest's hard reboot and delete.
#[tokio::test]
async fn pause_and_suspend_with_repeats_and_refusals() {
    let env = env().await;
    let id = Uuid::new_v4();
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![id], networks: vec![] };
    let name = xml::Naming::default().domain(&id);
    let data = raw_image(9);
    env.server.add_image("img-p", data.clone());
    let (ev, _) = env.exec(id, Action::Build(Box::new(build_spec("img-p", &data, vec![])))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");

    let (ev, _) = env.exec(id, Action::Pause).await;
    assert_eq!(done(&ev), PowerState::Paused);
    assert_eq!(env.hv.state(&name).expect("state"), Some(DomainState::Paused));
    assert_eq!(env.power(&id).await, Some(PowerState::Paused));
    // A redelivered pause is done; a paused guest is not started or suspended-from-resume.
    let (ev, _) = env.exec(id, Action::Pause).await;
    assert_eq!(done(&ev), PowerState::Paused);
    let (ev, _) = env.exec(id, Action::Resume).await;
    assert!(failed(&ev).contains("there is no saved guest to resume"), "{ev:?}");
    let (ev, _) = env.exec(id, Action::Unpause).await;
    assert_eq!(done(&ev), PowerState::Running);
    let (ev, _) = env.exec(id, Action::Unpause).await;
    assert_eq!(done(&ev), PowerState::Running, "a repeated unpause is done");

    // Suspend: saved and shut off, reported as Nova's SHUTDOWN; repeats are done.
    let (ev, _) = env.exec(id, Action::Suspend).await;
    assert_eq!(done(&ev), PowerState::Shutdown);
    assert_eq!(env.hv.state(&name).expect("state"), Some(DomainState::Saved));
    assert_eq!(env.power(&id).await, Some(PowerState::Shutdown));
    let (ev, _) = env.exec(id, Action::Suspend).await;
    assert_eq!(done(&ev), PowerState::Shutdown);
    let (ev, _) = env.exec(id, Action::Start).await;
    assert!(failed(&ev).contains("resume it instead"), "{ev:?}");
    let (ev, _) = env.exec(id, Action::Pause).await;
    assert!(failed(&ev).contains("only a running guest can be paused"), "{ev:?}");
    let (ev, _) = env.exec(id, Action::Resume).await;
    assert_eq!(done(&ev), PowerState::Running);
    assert_eq!(env.hv.state(&name).expect("state"), Some(DomainState::Running));
    let (ev, _) = env.exec(id, Action::Resume).await;
    assert_eq!(done(&ev), PowerState::Running, "a repeated resume is done");

    // A saved guest hard reboots afresh (its save thrown away) and deletes.
    let (ev, _) = env.exec(id, Action::Suspend).await;
    assert_eq!(done(&ev), PowerState::Shutdown);
    let (ev, _) = env.exec(id, Action::Reboot { hard: true }).await;
    assert_eq!(done(&ev), PowerState::Running);
    let (ev, _) = env.exec(id, Action::Suspend).await;
    assert_eq!(done(&ev), PowerState::Shutdown);
    let (ev, _) = env.exec(id, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState);
    assert_eq!(env.hv.state(&name).expect("state"), None);
}

/// Interfaces on test:///default: a hot-plugged port lands in the domain's definition with the
/// build's NIC XML (network, tap named after the port, model) and a DHCP entry; a repeated
/// attach changes nothing; detach takes it and its DHCP entry out, and is a no-op when gone.
/// Diagnostics read the domain's counters into Nova's 2.48 body and the legacy dict.
#[tokio::test]
async fn interfaces_are_hot_plugged_and_diagnostics_read() {
    let env = env().await;
    let id = Uuid::new_v4();
    let (net_a, net_b) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let _cleanup = Cleanup { hv: env.hv.clone(), instances: vec![id], networks: vec![net_a.clone(), net_b.clone()] };
    let name = xml::Naming::default().domain(&id);
    let data = raw_image(9);
    env.server.add_image("img-if", data.clone());
    let first_mac = mac();
    let spec = build_spec("img-if", &data, vec![nic(&net_a, &first_mac, "10.77.9.5")]);
    let (ev, _) = env.exec(id, Action::Build(Box::new(spec))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");

    let extra_mac = mac();
    let extra = nic(&net_b, &extra_mac, "10.77.10.7");
    let attach = Action::InterfaceAttach { nic: extra.clone() };
    let (ev, _) = env.exec(id, attach.clone()).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    let config = env.hv.domain_config_xml(&name).expect("config");
    let ifaces = xml::interfaces(&config);
    assert_eq!(ifaces.len(), 2, "{config}");
    let tap = meridian_agent::firewall::tap_name(&extra.port_id);
    assert!(ifaces.contains(&(extra_mac.clone(), Some(tap))), "{ifaces:?}");
    assert_eq!(xml::interface_network(&config, &extra_mac), Some(xml::network_name(&net_b)));
    let conn = virt::connect::Connect::open(Some(crate::fixtures::URI)).expect("connect");
    let net_xml =
        || conn.lookup_network_by_name(&xml::network_name(&net_b)).and_then(|n| n.xml_desc(0)).expect("network XML");
    let net_xml_now = net_xml();
    assert!(net_xml_now.contains(&extra_mac) && net_xml_now.contains("10.77.10.7"), "{net_xml_now}");
    // Redelivered: still one.
    let (ev, _) = env.exec(id, attach).await;
    done(&ev);
    assert_eq!(xml::interfaces(&env.hv.domain_config_xml(&name).expect("config")).len(), 2);

    // Diagnostics: one vCPU, both NICs and the disks, Nova's keys.
    let (ev, _) = env.exec(id, Action::Diagnostics).await;
    let WorkEvent::Done { data: Some(d), console: None, .. } = &ev else { panic!("expected data: {ev:?}") };
    assert_eq!(
        (d["state"].as_str(), d["driver"].as_str(), d["hypervisor"].as_str()),
        (Some("running"), Some("libvirt"), Some("test"))
    );
    // Read from the running guest, which the test driver cannot hot plug into: its one NIC.
    let live = env.hv.domain_xml(&name).expect("live xml");
    assert_eq!(d["num_nics"], xml::interfaces(&live).len(), "{d}");
    assert_eq!(d["num_cpus"], d["cpu_details"].as_array().map(Vec::len).unwrap_or(0), "{d}");
    assert_eq!(d["num_disks"], d["disk_details"].as_array().map(Vec::len).unwrap_or(0), "{d}");
    assert!(
        d["nic_details"].as_array().is_some_and(|n| n.iter().any(|n| n["mac_address"] == first_mac.as_str())),
        "{d}"
    );
    assert!(d["legacy"]["memory"].as_u64().is_some_and(|m| m > 0), "{d}");
    assert!(d["legacy"].get("cpu0_time").is_some(), "{d}");

    let detach = Action::InterfaceDetach { port_id: extra.port_id.clone(), mac_address: extra_mac.clone() };
    let (ev, _) = env.exec(id, detach.clone()).await;
    done(&ev);
    let config = env.hv.domain_config_xml(&name).expect("config");
    assert_eq!(xml::interfaces(&config).len(), 1, "{config}");
    assert_eq!(xml::interfaces(&config)[0].0, first_mac);
    let net_xml_now = net_xml();
    assert!(!net_xml_now.contains(&extra_mac), "{net_xml_now}");
    let (ev, _) = env.exec(id, detach).await;
    done(&ev);

    let (ev, _) = env.exec(id, Action::Delete).await;
    done(&ev);
}

/// A controller of its own on a private test driver (`test:///<file>`: a state of its own,
/// unlike `test:///default`, which every connection of a process shares), as a second host.
fn host(url: &str, dir: &TempDir, name: &str) -> (Controller, Arc<Libvirt>) {
    let node = dir.path().join(format!("{name}.xml"));
    std::fs::write(&node, "<node/>").expect("node file");
    let hv = Arc::new(Libvirt::open(&format!("test://{}", node.display())).expect("private test driver"));
    let images =
        Arc::new(ImageCache::open(&dir.path().join(name).join("images"), client(url), u64::MAX).expect("cache"));
    let mut cfg = controller_config(dir);
    cfg.instances_dir = dir.path().join(name).join("instances");
    cfg.supports_networks = false;
    let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
    (Controller::new(dyn_hv, images, cfg).expect("controller"), hv)
}

async fn run(ctl: &Controller, instance: Uuid, action: Action) -> (WorkEvent, Vec<String>) {
    let work = Work { id: Uuid::new_v4().to_string(), instance_id: instance, attempt: 1, action };
    let seen = Mutex::new(Vec::new());
    let progress = |s: &str| seen.lock().expect("lock").push(s.to_string());
    let ev = ctl.execute(&work, &progress).await;
    (ev, seen.into_inner().expect("lock"))
}

async fn qcow2_size(path: &std::path::Path) -> u64 {
    meridian_agent::disk::virtual_size(path, "qcow2").await.expect("virtual size")
}

#[tokio::test]
async fn resize_in_place_then_migrate_out_and_in_between_two_hosts() {
    let (url, server) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, hv_a) = host(&url, &dir, "a");
    let (b, hv_b) = host(&url, &dir, "b");
    let id = Uuid::new_v4();
    let _ca = Cleanup { hv: hv_a.clone(), instances: vec![id], networks: vec![] };
    let _cb = Cleanup { hv: hv_b.clone(), instances: vec![id], networks: vec![] };
    let name = xml::Naming::default().domain(&id);
    let data = raw_image(9);
    server.add_image("img-m", data.clone());
    let small = build_spec("img-m", &data, vec![]);
    let mut big = small.clone();
    big.flavor.ram_mb = 256;
    big.flavor.vcpus = 2;
    big.flavor.disk_gb = 2;
    let a_dir = dir.path().join("a").join("instances").join(id.to_string());
    let b_dir = dir.path().join("b").join("instances").join(id.to_string());

    let (ev, _) = run(&a, id, Action::Build(Box::new(small.clone()))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(qcow2_size(&a_dir.join("disk")).await, 1 << 30);

    // Resize in place: a copy kept, the disk grown, the domain redefined and running.
    let mid = Uuid::new_v4().to_string();
    let (ev, progress) =
        run(&a, id, Action::ResizeLocal { migration_id: mid.clone(), spec: Box::new(big.clone()), power_on: true })
            .await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(progress, ["resize_migrating", "resize_finish", "spawning"]);
    assert!(a_dir.join("disk.resize-backup").exists());
    assert_eq!(qcow2_size(&a_dir.join("disk")).await, 2 << 30, "grown");
    let dom = hv_a.domain_xml(&name).expect("xml");
    assert!(dom.contains("<memory unit='KiB'>262144</memory>") && dom.contains(">2</vcpu>"), "{dom}");
    // Revert: the kept disk back (1 GiB again), the old flavor.
    let (ev, _) = run(
        &a,
        id,
        Action::ResizeLocalRevert { migration_id: mid.clone(), spec: Box::new(small.clone()), power_on: true },
    )
    .await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert!(!a_dir.join("disk.resize-backup").exists());
    assert_eq!(qcow2_size(&a_dir.join("disk")).await, 1 << 30, "the disk never shrinks: the copy is put back");
    assert!(hv_a.domain_xml(&name).expect("xml").contains("<memory unit='KiB'>65536</memory>"));

    // Migrate out: the guest off, the disk in the relay, the domain kept for a revert.
    let mid = Uuid::new_v4().to_string();
    let (ev, _) = run(&a, id, Action::MigrateOut { migration_id: mid.clone() }).await;
    assert_eq!(done(&ev), PowerState::Shutdown, "{ev:?}");
    let sent = server.migration_disks.lock().expect("lock").get(&mid).cloned().expect("the disk was sent");
    assert_eq!(sent, std::fs::read(a_dir.join("disk")).expect("source disk"), "the overlay as it is");
    assert_eq!(hv_a.state(&name).expect("state"), Some(DomainState::Shutoff));
    // Migrate in on the other host: same bytes, rebased on its own image cache, grown, running.
    let (ev, progress) =
        run(&b, id, Action::MigrateIn { migration_id: mid.clone(), spec: Box::new(big.clone()), power_on: true }).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(progress, ["resize_finish", "spawning"]);
    assert_eq!(qcow2_size(&b_dir.join("disk")).await, 2 << 30);
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(b_dir.join("disk"))
        .output()
        .expect("qemu-img info");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    let backing = info["backing-filename"].as_str().expect("backing file");
    assert!(backing.starts_with(&dir.path().join("b").join("images").display().to_string()), "{backing}");
    assert!(hv_b.domain_xml(&name).expect("xml").contains("<memory unit='KiB'>262144</memory>"));
    // A repeat of the delivery is harmless.
    let (ev, _) =
        run(&b, id, Action::MigrateIn { migration_id: mid.clone(), spec: Box::new(big.clone()), power_on: true }).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    // Confirm: the source is cleaned; a revert would have started it again instead.
    let (ev, _) = run(&a, id, Action::MigrateCleanup { migration_id: mid.clone(), remove: true }).await;
    assert_eq!(done(&ev), PowerState::NoState, "{ev:?}");
    assert_eq!(hv_a.state(&name).expect("state"), None);
    assert!(!a_dir.exists());
    // A revert needs a domain on the source: refused now that it is gone.
    let (ev, _) = run(&a, id, Action::MigrateRevert { migration_id: mid, power_on: true }).await;
    assert!(failed(&ev).contains("there is no domain to migrate or resize"), "{ev:?}");
}

/// A host whose controller shares `hv` (one libvirt daemon) with other hosts, with its own
/// state dir under `dir/<name>` and the domain tag `tag`.
fn host_on(hv: &Arc<Libvirt>, url: &str, dir: &TempDir, name: &str, tag: Option<&str>) -> Controller {
    let images =
        Arc::new(ImageCache::open(&dir.path().join(name).join("images"), client(url), u64::MAX).expect("cache"));
    let mut cfg = controller_config(dir);
    cfg.instances_dir = dir.path().join(name).join("instances");
    cfg.naming = xml::Naming::new(tag).expect("tag");
    let dyn_hv: Arc<dyn Hypervisor> = hv.clone();
    Controller::new(dyn_hv, images, cfg).expect("controller")
}

/// What a cold migration between two agents on one daemon left: (the destination still runs
/// the guest after the source's confirm cleanup, DHCP entries left on the network).
async fn migrate_on_one_daemon(tag_a: Option<&str>, tag_b: Option<&str>) -> (Result<PowerState, String>, bool, usize) {
    let (url, server) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let hv = libvirt();
    let a = host_on(&hv, &url, &dir, "a", tag_a);
    let b = host_on(&hv, &url, &dir, "b", tag_b);
    let id = Uuid::new_v4();
    let net_id = Uuid::new_v4().to_string();
    let _cleanup = Cleanup { hv: hv.clone(), instances: vec![id], networks: vec![net_id.clone()] };
    let names = [a.naming().domain(&id), b.naming().domain(&id)];
    let data = raw_image(4);
    server.add_image("img-s", data.clone());
    let spec = build_spec("img-s", &data, vec![nic(&net_id, &mac(), "10.77.0.20")]);
    let net_name = xml::network_name(&net_id);
    let hosts = || {
        let conn = virt::connect::Connect::open(Some(crate::fixtures::URI)).expect("connect");
        let x = conn.lookup_network_by_name(&net_name).and_then(|n| n.xml_desc(0)).ok();
        x.map_or(0, |x| xml::NetworkInfo::parse(&x).expect("network XML").dhcp_hosts.len())
    };
    let outcome = async {
        let (ev, _) = run(&a, id, Action::Build(Box::new(spec.clone()))).await;
        assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
        let mid = Uuid::new_v4().to_string();
        let (ev, _) = run(&a, id, Action::MigrateOut { migration_id: mid.clone() }).await;
        assert_eq!(done(&ev), PowerState::Shutdown, "{ev:?}");
        let (ev, _) =
            run(&b, id, Action::MigrateIn { migration_id: mid.clone(), spec: Box::new(spec.clone()), power_on: true })
                .await;
        let dest = match ev {
            WorkEvent::Done { power_state, .. } => power_state,
            WorkEvent::Failed { message, .. } => return Err(message),
            other => panic!("{other:?}"),
        };
        // Each agent reports its own domain only: the source's kept one off, the new one on.
        let report = |reports: Vec<meridian_common::agent::InstanceReport>| {
            reports.into_iter().filter(|r| r.instance_id == id.to_string()).map(|r| r.power_state).collect::<Vec<_>>()
        };
        if names[0] != names[1] {
            assert_eq!(report(a.instances().await.expect("a")), [PowerState::Shutdown]);
            assert_eq!(report(b.instances().await.expect("b")), [PowerState::Running]);
        }
        // The confirm: the source removes its copy.
        let (ev, _) = run(&a, id, Action::MigrateCleanup { migration_id: mid, remove: true }).await;
        assert_eq!(done(&ev), PowerState::NoState, "{ev:?}");
        Ok(dest)
    }
    .await;
    let running = b.instances().await.expect("b").iter().any(|r| r.instance_id == id.to_string());
    let dhcp = hosts();
    for n in &names {
        let _ = hv.destroy(n);
        let _ = hv.undefine(n);
    }
    (outcome, running, dhcp)
}

#[tokio::test]
async fn two_agents_on_one_daemon_migrate_without_colliding() {
    // Tagged (one agent may keep the default names): both domains exist side by side until the
    // confirm, which leaves the destination's guest, its DHCP entry and its network alone.
    let (outcome, running, dhcp) = migrate_on_one_daemon(None, Some("hostb")).await;
    assert_eq!(outcome, Ok(PowerState::Running));
    assert!(running, "the migrated guest survives the source's cleanup");
    assert_eq!(dhcp, 1, "the destination's DHCP entry stays");
}

#[tokio::test]
async fn two_untagged_agents_on_one_daemon_collide() {
    // The collision the tag exists for: one name and one UUID for both ends.
    let (outcome, running, _) = migrate_on_one_daemon(None, None).await;
    // The destination's define replaced the source's kept domain and started it; the
    // confirm's cleanup on the source then removed the migrated guest.
    assert_eq!(outcome, Ok(PowerState::Running));
    assert!(!running, "without tags the source's cleanup takes the migrated guest with it");
}

fn disk_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len()
}

/// Reads 8 bytes at `at` of a file.
fn bytes_at(path: &std::path::Path, at: u64) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(path).expect("open");
    f.seek(std::io::SeekFrom::Start(at)).expect("seek");
    let mut buf = vec![0u8; 8];
    f.read_exact(&mut buf).expect("read");
    buf
}

/// A flavor's ephemeral and swap disks: made beside the root disk (raw, sized, formatted),
/// attached as vdb and vdc before the config drive, kept by a rebuild, grown by a resize,
/// made new on another host (an evacuation's rebuild there, or a migration), and removed with
/// the instance (a cleanup of the old host, a delete).
#[tokio::test]
async fn ephemeral_and_swap_disks_live_and_die_with_the_instance() {
    let (url, server) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, hv_a) = host(&url, &dir, "a");
    let (b, hv_b) = host(&url, &dir, "b");
    let id = Uuid::new_v4();
    let _ca = Cleanup { hv: hv_a.clone(), instances: vec![id], networks: vec![] };
    let _cb = Cleanup { hv: hv_b.clone(), instances: vec![id], networks: vec![] };
    let name = xml::Naming::default().domain(&id);
    let data = raw_image(5);
    server.add_image("img-e", data.clone());
    let mut spec = build_spec("img-e", &data, vec![]);
    spec.flavor.ephemeral_gb = 1;
    spec.flavor.swap_mb = 64;
    let a_dir = dir.path().join("a").join("instances").join(id.to_string());
    let b_dir = dir.path().join("b").join("instances").join(id.to_string());

    let (ev, _) = run(&a, id, Action::Build(Box::new(spec.clone()))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    let (eph, swap) = (a_dir.join("disk.eph0"), a_dir.join("disk.swap"));
    assert_eq!(disk_len(&eph), 1 << 30);
    assert_eq!(disk_len(&swap), 64 << 20);
    assert_eq!(bytes_at(&eph, 1144), b"ephemera", "the ext4 label ephemeral0");
    assert_eq!(bytes_at(&swap, 4096 - 8), b"APSPACE2", "mkswap's SWAPSPACE2 signature");
    let disks = xml::disks(&hv_a.domain_xml(&name).expect("xml"));
    let files: Vec<(&str, String)> = disks
        .iter()
        .map(|(d, f)| (d.as_str(), std::path::Path::new(f).file_name().expect("name").to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        files,
        [
            ("vda", "disk".into()),
            ("vdb", "disk.eph0".into()),
            ("vdc", "disk.swap".into()),
            ("vdd", "disk.config".into())
        ],
        "Nova's order, the config drive after the local disks"
    );

    // Data on the ephemeral disk survives a rebuild (only the root disk is replaced).
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&eph).expect("open eph");
        f.seek(std::io::SeekFrom::Start(100 << 20)).expect("seek");
        f.write_all(b"KEEPME!!").expect("write");
    }
    let (ev, _) = run(&a, id, Action::Rebuild(Box::new(spec.clone()))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(bytes_at(&eph, 100 << 20), b"KEEPME!!", "a rebuild keeps the ephemeral disk");

    // A resize in place grows the ephemeral disk (data kept) and makes a new swap.
    let mut big = spec.clone();
    big.flavor.ephemeral_gb = 2;
    big.flavor.swap_mb = 128;
    let mid = Uuid::new_v4().to_string();
    let (ev, _) =
        run(&a, id, Action::ResizeLocal { migration_id: mid, spec: Box::new(big.clone()), power_on: true }).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(disk_len(&eph), 2 << 30);
    assert_eq!(disk_len(&swap), 128 << 20);
    assert_eq!(bytes_at(&eph, 100 << 20), b"KEEPME!!", "a resize keeps the ephemeral data");

    // Another host rebuilding the instance from its image (an evacuation) makes both anew.
    let (ev, progress) = run(&b, id, Action::Rebuild(Box::new(big.clone()))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    assert_eq!(progress, ["rebuild_block_device_mapping", "rebuild_spawning"]);
    assert_eq!(disk_len(&b_dir.join("disk.eph0")), 2 << 30);
    assert_eq!(disk_len(&b_dir.join("disk.swap")), 128 << 20);
    assert_ne!(bytes_at(&b_dir.join("disk.eph0"), 100 << 20), b"KEEPME!!", "new and empty");
    // The old host's copy goes with its cleanup; the new host's with the delete.
    let (ev, _) = run(&a, id, Action::MigrateCleanup { migration_id: Uuid::new_v4().to_string(), remove: true }).await;
    assert_eq!(done(&ev), PowerState::NoState, "{ev:?}");
    assert!(!a_dir.exists());
    assert_eq!(hv_a.state(&name).expect("state"), None);
    let (ev, _) = run(&b, id, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState, "{ev:?}");
    assert!(!b_dir.exists());
}

/// The local disks a server's mappings asked for (`local_disks`) replace the flavor's: each
/// ephemeral disk with its size, file system and label `ephemeral<N>`, then the swap disk, in
/// that order after the root disk and before the config drive; an unsupported file system
/// fails the build (as Nova's libvirt driver).
#[tokio::test]
async fn mapped_ephemeral_and_swap_disks_replace_the_flavors() {
    use meridian_common::agent::{EphemeralDisk, LocalDisks};
    let (url, server) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, hv_a) = host(&url, &dir, "a");
    let id = Uuid::new_v4();
    let bad = Uuid::new_v4();
    let _ca = Cleanup { hv: hv_a.clone(), instances: vec![id, bad], networks: vec![] };
    let name = xml::Naming::default().domain(&id);
    let data = raw_image(5);
    server.add_image("img-m", data.clone());
    let mut spec = build_spec("img-m", &data, vec![]);
    spec.flavor.ephemeral_gb = 4;
    spec.flavor.swap_mb = 512;
    spec.local_disks = Some(LocalDisks {
        ephemerals: vec![
            EphemeralDisk { size_gb: 1, guest_format: Some("ext3".into()) },
            EphemeralDisk { size_gb: 2, guest_format: None },
        ],
        swap_mb: 32,
    });
    let a_dir = dir.path().join("a").join("instances").join(id.to_string());

    let (ev, _) = run(&a, id, Action::Build(Box::new(spec.clone()))).await;
    assert_eq!(done(&ev), PowerState::Running, "{ev:?}");
    let (eph0, eph1, swap) = (a_dir.join("disk.eph0"), a_dir.join("disk.eph1"), a_dir.join("disk.swap"));
    assert_eq!((disk_len(&eph0), disk_len(&eph1), disk_len(&swap)), (1 << 30, 2 << 30, 32 << 20));
    assert_eq!(bytes_at(&eph0, 1144), b"ephemera");
    assert_eq!(bytes_at(&eph0, 1152)[..2], *b"l0", "label ephemeral0");
    assert_eq!(bytes_at(&eph1, 1152)[..2], *b"l1", "label ephemeral1");
    // ext3: no extents (incompat 0x40); ext4 (the default): extents.
    let incompat = |p: &std::path::Path| u32::from_le_bytes(bytes_at(p, 1120)[..4].try_into().expect("4 bytes"));
    assert_eq!(incompat(&eph0) & 0x40, 0, "ext3");
    assert_ne!(incompat(&eph1) & 0x40, 0, "ext4");
    assert_eq!(bytes_at(&swap, 4096 - 8), b"APSPACE2");
    let disks = xml::disks(&hv_a.domain_xml(&name).expect("xml"));
    let files: Vec<(&str, String)> = disks
        .iter()
        .map(|(d, f)| (d.as_str(), std::path::Path::new(f).file_name().expect("name").to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        files,
        [
            ("vda", "disk".into()),
            ("vdb", "disk.eph0".into()),
            ("vdc", "disk.eph1".into()),
            ("vdd", "disk.swap".into()),
            ("vde", "disk.config".into())
        ],
        "the mappings' disks in order, none of the flavor's"
    );

    let mut vfat = spec.clone();
    vfat.local_disks = Some(LocalDisks {
        ephemerals: vec![EphemeralDisk { size_gb: 1, guest_format: Some("vfat".into()) }],
        swap_mb: 0,
    });
    let (ev, _) = run(&a, bad, Action::Build(Box::new(vfat))).await;
    let text = format!("{ev:?}");
    assert!(text.contains("vfat format is not supported"), "{text}");
    let (ev, _) = run(&a, id, Action::Delete).await;
    assert_eq!(done(&ev), PowerState::NoState, "{ev:?}");
}
