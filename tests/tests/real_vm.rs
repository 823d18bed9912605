//! The real-VM tier: the real server and agent on `qemu:///system`, booting the guest image
//! from scripts/build-image.sh under QEMU. Everything is checked from outside the guest the way
//! a user or operator would: the API (status, ports, os-getConsoleOutput), `virsh`, the QEMU
//! process and the agent's state directory. `MERIDIAN_SKIP_REAL_VM=1` skips the tier.

use std::time::Duration;

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard, READY};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::{Value, json};

/// Guests boot in ~3–10 s under TCG on this 2-core machine; these are hang guards only.
const BOOT_SECS: u64 = 180;

async fn small_flavor(admin: &Client) -> String {
    let body = json!({"flavor": {"name": "vm.small", "ram": 256, "vcpus": 1, "disk": 1}});
    let f = admin.post("compute", "/flavors", &body).await.expect("flavor");
    f["flavor"]["id"].as_str().expect("id").to_string()
}

/// The one port of a server: (MAC, fixed IP).
async fn port_of(client: &Client, server_id: &str) -> (String, String) {
    let p = client.get("network", &format!("/v2.0/ports?device_id={server_id}")).await.expect("ports");
    let ports = p["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 1, "{p}");
    let mac = ports[0]["mac_address"].as_str().expect("mac").to_ascii_lowercase();
    let ip = ports[0]["fixed_ips"][0]["ip_address"].as_str().expect("ip").to_string();
    (mac, ip)
}

async fn action(client: &Client, server_id: &str, body: Value) {
    client.post("compute", &format!("/servers/{server_id}/action"), &body).await.expect("server action");
}

fn domain_names() -> Vec<String> {
    vm::virsh_ok(&["list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn network_names() -> Vec<String> {
    vm::virsh_ok(&["net-list", "--all", "--name"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn domstate(domain: &str) -> String {
    vm::virsh_ok(&["domstate", domain]).trim().to_string()
}

fn qemu_processes_of(id: &str) -> String {
    let out = std::process::Command::new("pgrep").args(["-af", id]).output().expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("qemu-system")).collect::<Vec<_>>().join("\n")
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// Waits for the server's status, then for its console to show `boots` banners.
async fn wait_booted(client: &Client, id: &str, boots: usize) -> String {
    let s = wait_server(client, id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    vm::wait_console(client, id, BOOT_SECS, |c| vm::boots(c) >= boots).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_guests_boot_act_on_qemu_and_leave_nothing_behind() {
    if !vm::enabled("two_guests_boot_act_on_qemu_and_leave_nothing_behind") {
        return;
    }
    let image = vm::image_dir();
    // Dropped after the agent and server (declared first): removes what they left on failure.
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent =
        Agent::start_opts(&server, &format!("vm-{}", std::process::id()), vm::URI, &["--stop-timeout-secs", "60"]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let flavor = small_flavor(&admin).await;
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "vmnet", &vm::private_subnet(1)).await;
    let libvirt_net = format!("meridian-{net_id}");
    guard.network(&libvirt_net);

    let user_data = "#!/bin/sh\necho \"user-data ran on $(hostname)\"\n\
                     echo \"meta_data: $(cat /mnt/config/openstack/latest/meta_data.json)\"\n";
    let mut ids = Vec::new();
    for name in ["alpha", "beta"] {
        let body = json!({"server": {
            "name": name, "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
            "metadata": {"role": format!("{name}-role")},
            "user_data": base64::engine::general_purpose::STANDARD.encode(user_data),
        }});
        let r = admin.post("compute", "/servers", &body).await.expect("boot");
        let id = r["server"]["id"].as_str().expect("id").to_string();
        guard.domain(&format!("meridian-{id}"));
        ids.push(id);
    }

    // Both ACTIVE; each console (through the API) shows the guest's own DHCP address, equal to
    // its port's fixed IP, its hostname and uuid from the config drive, and user data that ran
    // and read the metadata.
    let mut ports = Vec::new();
    for (id, name) in ids.iter().zip(["alpha", "beta"]) {
        let log = wait_booted(&admin, id, 1).await;
        let (mac, ip) = port_of(&admin, id).await;
        assert_eq!(vm::banner_field(&log, "ip").as_deref(), Some(ip.as_str()), "{name}: {}", vm::story(&log));
        assert_eq!(vm::banner_field(&log, "hostname").as_deref(), Some(name), "{}", vm::story(&log));
        assert!(log.contains(&format!("config-drive=/dev/vdb uuid={id}")), "{log}");
        assert!(log.contains("boot cmdline=BOOT_IMAGE=/vmlinuz"), "booted from its disk by SYSLINUX: {log}");
        assert!(log.contains(&format!("user-data ran on {name}")), "{log}");
        assert!(log.contains(&format!("\"role\":\"{name}-role\"")), "metadata in meta_data.json: {log}");
        assert!(log.contains("meridian-guest: user-data exit=0"), "{log}");
        ports.push((mac, ip));
    }
    assert_ne!(ports[0].1, ports[1].1);
    // The config drive carries Nova's tree: dated folders beside latest, the ec2 tree,
    // vendor_data2.json, a random seed (read back with isoinfo, as a guest would mount it).
    let drive = agent.state_dir.join("instances").join(&ids[0]).join("disk.config");
    let read = |file: &str| {
        let out = std::process::Command::new("isoinfo")
            .args(["-R", "-i"])
            .arg(&drive)
            .args(["-x", file])
            .output()
            .expect("isoinfo");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let folsom: Value = serde_json::from_str(&read("/openstack/2012-08-10/meta_data.json")).expect("2012-08-10");
    assert_eq!(folsom["uuid"], ids[0]);
    let latest: Value = serde_json::from_str(&read("/openstack/latest/meta_data.json")).expect("latest");
    assert!(latest["random_seed"].as_str().is_some_and(|s| s.len() > 600), "{latest}");
    assert_eq!(read("/openstack/latest/vendor_data2.json"), r#"{"static":{}}"#);
    let ec2: Value = serde_json::from_str(&read("/ec2/latest/meta-data.json")).expect("ec2 meta-data");
    assert_eq!(ec2["hostname"], "alpha", "{ec2}");
    assert_eq!(ec2["local-ipv4"], ports[0].1.as_str(), "{ec2}");
    let net_xml = vm::virsh_ok(&["net-dumpxml", &libvirt_net]);
    for (mac, ip) in &ports {
        assert!(net_xml.contains(&format!("<host mac='{mac}' ip='{ip}'/>")), "DHCP entry {mac} → {ip}: {net_xml}");
    }
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let (dom_a, dom_b) = (format!("meridian-{a}"), format!("meridian-{b}"));

    // Stop: the guest sees the ACPI power button and powers off; the QEMU process is gone.
    let pid_a = vm::qemu_pid(&dom_a).expect("alpha's QEMU runs");
    action(&admin, &a, json!({"os-stop": null})).await;
    let s = wait_server(&admin, &a, &["SHUTOFF", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "SHUTOFF", "{s}");
    assert_eq!(s["OS-EXT-STS:power_state"], 4, "{s}");
    assert_eq!(domstate(&dom_a), "shut off");
    assert_eq!(vm::qemu_pid(&dom_a), None);
    assert!(!std::path::Path::new(&format!("/proc/{pid_a}")).exists(), "QEMU {pid_a} still runs");
    let log = vm::console(&admin, &a).await;
    assert!(log.contains("meridian-guest: power button"), "a graceful (ACPI) stop: {log}");

    // Start: a new QEMU process, a second boot with the same address.
    action(&admin, &a, json!({"os-start": null})).await;
    let log = wait_booted(&admin, &a, 2).await;
    let pid_a2 = vm::qemu_pid(&dom_a).expect("alpha's QEMU runs again");
    assert_ne!(pid_a, pid_a2);
    assert_eq!(vm::banner_field(&log, "ip").as_deref(), Some(ports[0].1.as_str()), "{}", vm::story(&log));

    // Soft reboot: through the guest (power button), the same QEMU process, a new boot.
    let pid_b = vm::qemu_pid(&dom_b).expect("beta's QEMU runs");
    let before = vm::console(&admin, &b).await;
    action(&admin, &b, json!({"reboot": {"type": "SOFT"}})).await;
    let log = wait_booted(&admin, &b, vm::boots(&before) + 1).await;
    assert_eq!(
        count(&log, "meridian-guest: power button"),
        count(&before, "meridian-guest: power button") + 1,
        "{log}"
    );
    assert_eq!(vm::qemu_pid(&dom_b), Some(pid_b), "a soft reboot keeps the process");

    // Hard reboot: the virtual machine is reset without asking the guest.
    let before = log;
    action(&admin, &b, json!({"reboot": {"type": "HARD"}})).await;
    let log = wait_booted(&admin, &b, vm::boots(&before) + 1).await;
    assert_eq!(count(&log, "meridian-guest: power button"), count(&before, "meridian-guest: power button"), "{log}");
    assert_eq!(vm::banner_field(&log, "ip").as_deref(), Some(ports[1].1.as_str()), "{}", vm::story(&log));

    // Delete one: its domain, QEMU, files and DHCP entry go; the network stays for the other.
    let instances = agent.state_dir.join("instances");
    assert!(instances.join(&a).join("disk").exists());
    assert!(instances.join(&a).join("disk.config").exists());
    assert!(instances.join(&a).join("console.log").exists());
    admin.delete("compute", &format!("/servers/{a}")).await.expect("delete");
    wait_server(&admin, &a, &["DELETED"], BOOT_SECS).await;
    assert!(!domain_names().contains(&dom_a), "{:?}", domain_names());
    assert_eq!(qemu_processes_of(&a), "");
    assert!(!instances.join(&a).exists());
    let net_xml = vm::virsh_ok(&["net-dumpxml", &libvirt_net]);
    assert!(!net_xml.contains(&ports[0].0), "alpha's DHCP entry is left: {net_xml}");
    assert!(net_xml.contains(&ports[1].0), "beta's DHCP entry went too: {net_xml}");
    // Its lease is released too (libvirt's lease file drops it), or dnsmasq would refuse the
    // address to a later port that gets it for as long as the lease runs (the guest then
    // waits ~20 s for DHCP, which bench-vm showed).
    let bridge = net_xml.split("<bridge name='").nth(1).and_then(|r| r.split('\'').next()).expect("bridge").to_string();
    let leases = format!("/var/lib/libvirt/dnsmasq/{bridge}.status");
    let mut released = false;
    for _ in 0..50 {
        if !std::fs::read_to_string(&leases).unwrap_or_default().contains(&ports[0].0) {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(released, "alpha's lease is still in {leases}");

    // Delete the other: nothing of either is left, network included.
    admin.delete("compute", &format!("/servers/{b}")).await.expect("delete");
    wait_server(&admin, &b, &["DELETED"], BOOT_SECS).await;
    let domains = domain_names();
    assert!(!domains.iter().any(|d| d == &dom_a || d == &dom_b), "{domains:?}");
    assert_eq!(qemu_processes_of(&b), "");
    assert!(!network_names().contains(&libvirt_net), "{:?}", network_names());
    let left: Vec<_> = std::fs::read_dir(&instances).expect("instances dir").collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!agent.log_text().contains("ERROR"), "agent errors:\n{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_and_ramdisk_images_boot_directly() {
    if !vm::enabled("kernel_and_ramdisk_images_boot_directly") {
        return;
    }
    let image = vm::image_dir();
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent = Agent::start_opts(&server, &format!("vmk-{}", std::process::id()), vm::URI, &[]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let flavor = small_flavor(&admin).await;
    let kernel = vm::upload_image(&admin, "guest-kernel", &image.join("vmlinuz"), "aki", json!({})).await;
    let ramdisk = vm::upload_image(&admin, "guest-ramdisk", &image.join("initrd.img"), "ari", json!({})).await;
    let props = json!({"kernel_id": kernel, "ramdisk_id": ramdisk});
    let image_id = vm::upload_image(&admin, "guest-direct", &image.join("disk.qcow2"), "qcow2", props).await;
    let (net_id, _) = vm::network(&admin, "vmknet", &vm::private_subnet(2)).await;
    guard.network(&format!("meridian-{net_id}"));

    // The guest powers itself off shortly after its banner: power sync must notice.
    let user_data = "#!/bin/sh\n(sleep 3; poweroff) >/dev/null 2>&1 &\n";
    let body = json!({"server": {
        "name": "direct", "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
        "user_data": base64::engine::general_purpose::STANDARD.encode(user_data),
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    let dom = format!("meridian-{id}");
    guard.domain(&dom);

    let log = wait_booted(&admin, &id, 1).await;
    // Nova's default command line for kernel_id images (no os_command_line property).
    assert!(log.contains("boot cmdline=root=/dev/vda console=tty0 console=ttyS0 console=hvc0"), "{log}");
    let (_, ip) = port_of(&admin, &id).await;
    assert_eq!(vm::banner_field(&log, "ip").as_deref(), Some(ip.as_str()), "{}", vm::story(&log));
    let xml = vm::virsh_ok(&["dumpxml", &dom]);
    let cache = agent.state_dir.join("images");
    assert!(xml.contains(&format!("<kernel>{}</kernel>", cache.join(&kernel).display())), "{xml}");
    assert!(xml.contains(&format!("<initrd>{}</initrd>", cache.join(&ramdisk).display())), "{xml}");
    assert!(log.lines().any(|l| l.contains(READY)));

    // Powered off from inside: the heartbeat's power sync makes it SHUTOFF, as Nova's does.
    let s = wait_server(&admin, &id, &["SHUTOFF", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "SHUTOFF", "{s}");
    assert_eq!(vm::qemu_pid(&dom), None);

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], BOOT_SECS).await;
    assert!(!domain_names().contains(&dom));
    assert!(!network_names().contains(&format!("meridian-{net_id}")));
    assert!(!agent.state_dir.join("instances").join(&id).exists());
}
