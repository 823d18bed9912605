//! SSH into a real guest the way the dashboard does it: a key pair generated through the
//! dashboard's own code (`meridian_tui::keys::create`: Nova generates, the private key is saved
//! 0600 under the keys dir), a real QEMU guest on `qemu:///system` booted with that key pair
//! (the guest image's dropbear takes it from the config drive), and the system `ssh` run with the
//! command line the dashboard builds (`meridian_tui::ssh`), answering `hostname`. The second test
//! does the same by hand in the real dashboard inside tmux: `c` in Keypairs, `x` on the instance,
//! `hostname` typed into the guest's shell, `exit`, and the dashboard is back.

use std::process::Command;
use std::time::{Duration, Instant};

use meridian_common::Client;
use meridian_e2e::tmux::Tmux;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{ADMIN_PASSWORD, Agent, Server, binary, wait_hosts_up, wait_server};
use meridian_tui::keys::{self, KeySource};
use meridian_tui::ssh::{self, SshCall};
use serde_json::json;

/// Hang guards only (guests boot in ~3–10 s under TCG here).
const BOOT_SECS: u64 = 180;

/// A cloud on `qemu:///system` with the guest image (as scripts/seed.py uploads it: os_distro
/// busybox, so the dashboard logs in as root), a flavor, a network, and ssh from the host let
/// in by the default group: (flavor, image, network).
async fn guest_cloud(admin: &Client, guard: &LibvirtGuard, salt: u32) -> (String, String, String) {
    let image = vm::image_dir();
    wait_hosts_up(admin, 1).await;
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "vm.ssh", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image_id =
        vm::upload_image(admin, "meridian-guest", &image.join("disk.qcow2"), "qcow2", json!({"os_distro": "busybox"}))
            .await;
    let (net_id, subnet_id) = vm::network(admin, "sshnet", &vm::private_subnet(salt)).await;
    guard.network(&format!("meridian-{net_id}"));
    // The agent enforces security groups: the admin project's default group admits only its
    // members, so ssh from the host (the subnet's gateway) needs a rule of its own.
    vm::allow_ssh_from_host(admin, &subnet_id).await;
    (flavor, image_id, net_id)
}

/// Boots `name` with `key`; waits until the guest says it is ready; returns (id, console).
async fn boot(
    admin: &Client,
    guard: &LibvirtGuard,
    cloud: &(String, String, String),
    name: &str,
    key: &str,
) -> (String, String) {
    let (flavor, image_id, net_id) = cloud;
    let body = json!({"server": {
        "name": name, "imageRef": image_id, "flavorRef": flavor, "networks": [{"uuid": net_id}],
        "key_name": key,
    }});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    let s = wait_server(admin, &id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let log = vm::wait_console(admin, &id, BOOT_SECS, |c| c.contains(vm::READY)).await;
    assert!(log.contains("meridian-guest: ssh=dropbear keys=1"), "the guest took the key: {log}");
    (id, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_into_a_real_guest_with_a_generated_key_pair() {
    if !vm::enabled("ssh_into_a_real_guest_with_a_generated_key_pair") {
        return;
    }
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let _agent =
        Agent::start_opts(&server, &format!("ssh-{}", std::process::id()), vm::URI, &["--stop-timeout-secs", "30"]);
    let admin = server.admin().await;
    let cloud = guest_cloud(&admin, &guard, 7).await;
    let image_id = cloud.1.clone();

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

    let (id, log) = boot(&admin, &guard, &cloud, "sshvm", "e2e-key").await;

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
    // accept-new recorded the guest's host key (Debian hashes known_hosts: ask ssh-keygen).
    let found = Command::new("ssh-keygen").arg("-F").arg(&call.address).arg("-f").arg(&known_hosts).output();
    assert!(found.expect("ssh-keygen").status.success(), "the host key of {} was recorded", call.address);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_from_the_dashboard_into_a_real_guest_and_back() {
    if !vm::enabled("ssh_from_the_dashboard_into_a_real_guest_and_back") {
        return;
    }
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let _agent =
        Agent::start_opts(&server, &format!("tssh-{}", std::process::id()), vm::URI, &["--stop-timeout-secs", "30"]);
    let admin = server.admin().await;
    let cloud = guest_cloud(&admin, &guard, 8).await;

    // The dashboard as admin from OS_* variables, its keys under this test's data dir. `ssh` on
    // its PATH is the system ssh with this test's known_hosts (guests reuse addresses with new
    // host keys; the user's own file is left alone).
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().display().to_string();
    std::fs::create_dir_all(dir.path().join("bin")).expect("bin");
    let wrapper = dir.path().join("bin/ssh");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec /usr/bin/ssh -o UserKnownHostsFile='{d}/known_hosts' \"$@\"\n"))
        .expect("wrapper");
    let script = dir.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport OS_AUTH_URL='{}' OS_USERNAME=admin OS_PASSWORD='{}' OS_PROJECT_NAME=admin \
             OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default OS_IDENTITY_API_VERSION=3 \
             MERIDIAN_CONFIG_DIR='{d}/config' MERIDIAN_STATE_DIR='{d}/state' MERIDIAN_DATA_DIR='{d}/data' \
             PATH='{d}/bin':\"$PATH\" TERM=xterm-256color MERIDIAN_TUI_LOG=info,meridian=debug\n\
             unset OS_CLOUD\ncd '{d}'\n'{}' --log-file '{d}/meridian.log'\necho \"meridian exited: $?\"\nsleep 600\n",
            server.auth_url(),
            ADMIN_PASSWORD,
            binary("meridian").display(),
        ),
    )
    .expect("script");
    Command::new("chmod").arg("+x").arg(&script).arg(&wrapper).status().expect("chmod");
    let tmux = Tmux::start(&script, "ssh");
    tmux.wait_for("the instance list", 30, |s| s.contains("Instances [0]"));

    // A key pair, generated from the Keypairs view; the private key is shown once with its path.
    tmux.type_text(":keypairs");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the key pairs view", 10, |s| s.contains("Key pairs ["));
    tmux.type_text("c");
    tmux.wait_for("the key pair form", 10, |s| s.contains("Create key pair"));
    tmux.type_text("tui-key");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the private key", 30, |s| s.contains("Private key saved to"));
    assert!(s.contains("BEGIN OPENSSH PRIVATE KEY") && s.contains(&format!("{d}/data/keys/")), "{s}");
    tmux.keys(&["Escape"]);

    let (_, log) = boot(&admin, &guard, &cloud, "tuivm", "tui-key").await;
    let ip = vm::banner_field(&log, "ip").expect("the guest's address");

    // `x` on the instance: ssh takes the terminal; the guest's shell answers.
    tmux.type_text(":servers");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the instance", 30, |s| s.lines().any(|l| l.contains("tuivm") && l.contains("ACTIVE")));
    tmux.type_text("x");
    tmux.wait_for("ssh to start", 20, |s| s.contains(&format!("meridian: ssh -i {d}/data/keys/")));
    // dropbear answers from before `ready`; the shell prompt is the guest's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tmux.type_text("echo marker-$((6*7)) $(hostname)");
        tmux.keys(&["Enter"]);
        let s = tmux.screen();
        if s.contains("marker-42 tuivm") {
            break;
        }
        assert!(Instant::now() < deadline, "no shell in the guest at {ip}; screen:\n{s}");
        std::thread::sleep(Duration::from_secs(1));
    }
    tmux.type_text("exit");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_for("the dashboard again", 20, |s| s.contains(&format!("back from ssh root@{ip}")));
    assert!(s.contains("tuivm"), "{s}");
    tmux.type_text("q");
    // On a failure, the dashboard's log says whether the key arrived (and with what modifiers).
    let log_tail = || {
        let text = std::fs::read_to_string(dir.path().join("meridian.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("meridian.log (tail):\n{}", lines[lines.len().saturating_sub(40)..].join("\n"))
    };
    tmux.wait_or("meridian to exit", 10, &log_tail, |s| s.contains("meridian exited: 0"));
}
