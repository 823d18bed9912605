//! The metadata service with real guests: the real server and agent on `qemu:///system` with
//! config drives off (`--config-drive never`), so the guest image (scripts/build-image.sh)
//! reads its hostname, keys and user data from http://169.254.169.254 and prints them on its
//! console. A second guest forges the first's address in `X-Forwarded-For` and still gets its
//! own data. `MERIDIAN_SKIP_REAL_VM=1` skips the tier.

use base64::Engine as _;
use meridian_common::Client;
use meridian_e2e::vm::{self, LibvirtGuard, READY};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use serde_json::json;

/// Hang guards only (guests boot in seconds under TCG here).
const BOOT_SECS: u64 = 180;
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7m0Hfm9C5rQpQWmJmFzWwV1n8kGf7w0qW7dE1yq0mB guest@test";

async fn boot(admin: &Client, guard: &LibvirtGuard, server: serde_json::Value) -> String {
    let r = admin.post("compute", "/servers", &json!({ "server": server })).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    id
}

async fn fixed_ip(admin: &Client, id: &str) -> String {
    let p = admin.get("network", &format!("/v2.0/ports?device_id={id}")).await.expect("ports");
    p["ports"][0]["fixed_ips"][0]["ip_address"].as_str().expect("ip").to_string()
}

async fn booted(admin: &Client, id: &str) -> String {
    let s = wait_server(admin, id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    vm::wait_console(admin, id, BOOT_SECS, |c| c.contains(READY)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_without_a_config_drive_read_their_own_metadata_from_169_254_169_254() {
    if !vm::enabled("guests_without_a_config_drive_read_their_own_metadata_from_169_254_169_254") {
        return;
    }
    let image = vm::image_dir();
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let mut agent =
        Agent::start_opts(&server, &format!("vmmd-{}", std::process::id()), vm::URI, &["--config-drive", "never"]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "vm.md", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "mdnet", &vm::private_subnet(3)).await;
    let libvirt_net = format!("meridian-{net_id}");
    guard.network(&libvirt_net);
    admin
        .post("compute", "/os-keypairs", &json!({"keypair": {"name": "guestkey", "public_key": KEY}}))
        .await
        .expect("key pair");

    // Alpha: a key pair and user data, no config drive.
    let alpha = boot(
        &admin,
        &guard,
        json!({"name": "alpha", "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
               "key_name": "guestkey",
               "user_data": base64::engine::general_purpose::STANDARD.encode("alpha-secret-user-data\nline two\n")}),
    )
    .await;
    let log = booted(&admin, &alpha).await;
    assert!(log.contains("meridian-guest: config-drive=none"), "{log}");
    assert!(!agent.state_dir.join("instances").join(&alpha).join("disk.config").exists());
    assert!(
        log.contains("meridian-guest: metadata hostname=alpha keys=1 user_data=alpha-secret-user-data"),
        "alpha read its metadata from 169.254.169.254: {log}\nagent:\n{}",
        agent.log_text()
    );
    assert_eq!(vm::banner_field(&log, "hostname").as_deref(), Some("alpha"), "{}", vm::story(&log));
    // The SSH server took the key from the metadata service.
    assert!(log.contains("meridian-guest: ssh=dropbear keys=1"), "{log}");
    // Nova's SMBIOS identity, as the guest reads it.
    assert!(
        log.contains(&format!("smbios manufacturer=OpenStack Foundation product=OpenStack Nova serial={alpha}")),
        "{log}"
    );
    let alpha_ip = fixed_ip(&admin, &alpha).await;

    // Beta: no key, no user data; forges alpha's address and still reads only its own.
    let beta = boot(
        &admin,
        &guard,
        json!({"name": "beta", "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
               "metadata": {"probe_xff": alpha_ip}}),
    )
    .await;
    let log = booted(&admin, &beta).await;
    assert!(log.contains("meridian-guest: metadata hostname=beta keys=0 user_data=none"), "{log}");
    assert!(log.contains(&format!("meridian-guest: metadata forged-xff={alpha_ip} uuid={beta}")), "{log}");
    assert!(!log.contains("alpha-secret-user-data"), "beta read alpha's user data: {log}");

    // An agent restart: its listeners die with it and come back for the existing network, so
    // alpha's next boot reads its metadata again.
    agent.restart();
    admin
        .post("compute", &format!("/servers/{alpha}/action"), &json!({"reboot": {"type": "HARD"}}))
        .await
        .expect("reboot");
    let log = vm::wait_console(&admin, &alpha, BOOT_SECS, |c| vm::boots(c) >= 2).await;
    let line = "meridian-guest: metadata hostname=alpha keys=1 user_data=alpha-secret-user-data";
    assert_eq!(log.matches(line).count(), 2, "after the agent restart: {log}\nagent:\n{}", agent.log_text());

    // The metadata address is on the agent's own link, never on the bridge: libvirt's dnsmasq
    // listens on every address of its bridge, and a second network's could not bind it.
    let net_xml = vm::virsh_ok(&["net-dumpxml", &libvirt_net]);
    let bridge = net_xml.split("<bridge name='").nth(1).and_then(|r| r.split('\'').next()).expect("bridge").to_string();
    let addrs = std::process::Command::new("ip").args(["-4", "addr", "show", "dev", &bridge]).output().expect("ip");
    assert!(!String::from_utf8_lossy(&addrs.stdout).contains("169.254.169.254"), "{addrs:?}");
    let link =
        std::process::Command::new("ip").args(["-4", "addr", "show", "dev", "meridian-meta"]).output().expect("ip");
    assert!(String::from_utf8_lossy(&link.stdout).contains("169.254.169.254/32"), "{link:?}");
    for id in [&alpha, &beta] {
        admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
        wait_server(&admin, id, &["DELETED"], BOOT_SECS).await;
    }
    let nets = vm::virsh_ok(&["net-list", "--all", "--name"]);
    assert!(!nets.contains(&libvirt_net), "{nets}");
    let gone = std::process::Command::new("ip").args(["link", "show", "dev", &bridge]).output().expect("ip");
    assert!(!gone.status.success(), "bridge {bridge} outlived its network");
    assert!(!agent.log_text().contains("ERROR"), "agent errors:\n{}", agent.log_text());
}
