//! SSH into a real guest the way the dashboard does it: a key pair generated through the
//! dashboard's own code (`meridian_tui::keys::create`: Nova generates, the private key is saved
//! 0600 under the keys dir), a real QEMU guest on `qemu:///system` booted with that key pair
//! (the guest image's dropbear takes it from the config drive), and the system `ssh` run with the
//! command line the dashboard builds (`meridian_tui::ssh`), answering `hostname`.

use std::process::Command;
use std::time::{Duration, Instant};

use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{Agent, Server, wait_hosts_up, wait_server};
use meridian_tui::keys::{self, KeySource};
use meridian_tui::ssh::{self, SshCall};
use serde_json::json;

/// Hang guards only (guests boot in ~3–10 s under TCG here).
const BOOT_SECS: u64 = 180;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_into_a_real_guest_with_a_generated_key_pair() {
    if !vm::enabled("ssh_into_a_real_guest_with_a_generated_key_pair") {
        return;
    }
    let image = vm::image_dir();
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let _agent =
        Agent::start_opts(&server, &format!("ssh-{}", std::process::id()), vm::URI, &["--stop-timeout-secs", "30"]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "vm.ssh", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    // As scripts/seed.py uploads it: os_distro busybox, so the dashboard logs in as root.
    let image_id =
        vm::upload_image(&admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({"os_distro": "busybox"}))
            .await;
    let (net_id, _) = vm::network(&admin, "sshnet", &vm::private_subnet(7)).await;
    guard.network(&format!("meridian-{net_id}"));

    // The key pair, generated as the dashboard does; the private key lands 0600 in the keys dir.
    let home = tempfile::tempdir().expect("tmp");
    let keys_dir = home.path().join("keys");
    let created = keys::create(&admin, &keys_dir, "e2e-cloud", "e2e-key", &KeySource::Generate).await.expect("create");
    let key_file = ssh::key_path(&keys_dir, "e2e-cloud", "e2e-key");
    assert_eq!(created.saved, Some(Ok(key_file.clone())));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).expect("key file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Never overwritten: the same name again is refused before the cloud is asked.
    let again = keys::create(&admin, &keys_dir, "e2e-cloud", "e2e-key", &KeySource::Generate).await;
    assert!(again.is_err_and(|e| e.to_string().contains("already exists")));

    let body = json!({"server": {
        "name": "sshvm", "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
        "key_name": "e2e-key",
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let log = vm::wait_console(&admin, &id, BOOT_SECS, |c| c.contains(vm::READY)).await;
    assert!(log.contains("meridian-guest: ssh=dropbear keys=1"), "the guest took the key: {log}");

    // The command line the dashboard runs for `x` on this instance.
    let server_json = admin.get("compute", &format!("/servers/{id}")).await.expect("server");
    let image_json = admin.get("image", &format!("/v2/images/{image_id}")).await.expect("image");
    let mut call = SshCall {
        server_name: "sshvm".into(),
        user: ssh::login_user(&image_json).expect("a login user from os_distro"),
        address: ssh::address(&server_json["server"]).expect("an address"),
        cloud: "e2e-cloud".into(),
        keypair: Some("e2e-key".into()),
        key: None,
    };
    call.find_key(&keys_dir);
    assert_eq!(call.key.as_deref(), Some(key_file.as_path()));
    assert_eq!(call.user, "root");

    // dropbear starts before `ready`; the retries cover only the host's first connection.
    let known_hosts = home.path().join("known_hosts");
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = Command::new("ssh")
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
            .args(call.args())
            .arg("hostname")
            .output()
            .expect("run ssh");
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        out.status.success(),
        "ssh {} failed: {}\nconsole:\n{log}",
        call.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sshvm");
    // accept-new recorded the guest's host key.
    assert!(std::fs::read_to_string(&known_hosts).expect("known_hosts").contains(&call.address));

    // Another key is refused: only the config drive's key gets in.
    let (other, _) = keys::generate_ed25519("other").expect("key");
    let other_file = home.path().join("other");
    keys::save_private_key(&other_file, &other).expect("save");
    let refused = Command::new("ssh")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&other_file)
        .arg(format!("root@{}", call.address))
        .arg("hostname")
        .output()
        .expect("run ssh");
    assert!(!refused.status.success(), "a key not on the config drive must not log in");

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], BOOT_SECS).await;
}
