//! The dashboard's console pane on a real guest: the `meridian` binary inside tmux, against the
//! real server and agent on `qemu:///system` (the server's remote-console API and websocket
//! proxy, the agent attached through libvirt). `a` on the instance, the guest's login prompt in
//! the pane, `root` logged in (the guest image's console asks no password), `hostname` answered
//! by the guest, Ctrl-] back to a dashboard that takes keys; attached again, the instance stopped
//! under the pane ends it with the proxy's reason; `a` on the stopped instance says plainly that
//! it is not running. `MERIDIAN_SKIP_REAL_VM=1` skips the tier; a Drop guard removes the guest and
//! its network even when the test fails.

use std::process::Command;

use meridian_common::Client;
use meridian_e2e::tmux::Tmux;
use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{ADMIN_PASSWORD, Agent, Server, binary, wait_hosts_up, wait_server};
use serde_json::json;

/// Hang guards only (guests boot in ~3–10 s under TCG here).
const BOOT_SECS: u64 = 180;
const IO_SECS: u64 = 60;

/// The pane's inside lines (between its side borders), trimmed, without the pane's cursor
/// block (tui-term draws the guest's cursor as a cell).
fn pane_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter_map(|l| l.strip_prefix('│')?.strip_suffix('│'))
        .map(|l| l.trim_end().trim_end_matches('█').trim())
        .collect()
}

/// Boots `name` on the guest image and waits until the guest says it is ready.
async fn boot(admin: &Client, guard: &LibvirtGuard, name: &str) -> String {
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "vm.tuicon", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image =
        vm::upload_image(admin, "meridian-guest", &vm::image_dir().join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(admin, "tuiconnet", &vm::private_subnet(9)).await;
    guard.network(&format!("meridian-{net_id}"));
    let body =
        json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor, "networks": [{"uuid": net_id}]}});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    let s = wait_server(admin, &id, &["ACTIVE", "ERROR"], BOOT_SECS).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    vm::wait_console(admin, &id, BOOT_SECS, |c| c.contains(vm::READY)).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_log_in_run_hostname_and_detach_from_the_dashboard() {
    if !vm::enabled("attach_log_in_run_hostname_and_detach_from_the_dashboard") {
        return;
    }
    // Dropped after the agent and server (declared first): removes what they left on failure.
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent =
        Agent::start_opts(&server, &format!("tcon-{}", std::process::id()), vm::URI, &["--stop-timeout-secs", "60"]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let id = boot(&admin, &guard, "tuiconvm").await;

    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path().display().to_string();
    let script = dir.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport OS_AUTH_URL='{}' OS_USERNAME=admin OS_PASSWORD='{}' OS_PROJECT_NAME=admin \
             OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default OS_IDENTITY_API_VERSION=3 \
             MERIDIAN_CONFIG_DIR='{d}/config' MERIDIAN_STATE_DIR='{d}/state' MERIDIAN_DATA_DIR='{d}/data' \
             TERM=xterm-256color\n\
             unset OS_CLOUD\ncd '{d}'\n'{}' --log-file '{d}/meridian.log'\necho \"meridian exited: $?\"\nsleep 600\n",
            server.auth_url(),
            ADMIN_PASSWORD,
            binary("meridian").display(),
        ),
    )
    .expect("script");
    Command::new("chmod").arg("+x").arg(&script).status().expect("chmod");
    let tmux = Tmux::start(&script, "console");
    let logs = || {
        format!(
            "meridian log:\n{}\nagent log:\n{}\nserver log:\n{}",
            std::fs::read_to_string(dir.path().join("meridian.log")).unwrap_or_default(),
            agent.log_text(),
            server.log_text()
        )
    };
    tmux.wait_or("the instance", 30, &logs, |s| s.lines().any(|l| l.contains("tuiconvm") && l.contains("ACTIVE")));

    // `a`: the pane opens on the real guest's serial line.
    tmux.type_text("a");
    let s = tmux.wait_or("the console to connect", IO_SECS, &logs, |s| {
        s.contains("Console tuiconvm") && s.contains("connected")
    });
    assert!(s.contains("ctrl-]"), "{s}");
    // The guest printed its prompt before we attached (a serial line replays nothing): Enter
    // asks the getty for it again, as at a real serial terminal.
    tmux.keys(&["Enter"]);
    tmux.wait_or("the login prompt", IO_SECS, &logs, |s| pane_lines(s).iter().any(|l| l.ends_with("login:")));
    tmux.type_text("root");
    tmux.keys(&["Enter"]);
    tmux.wait_or("a shell prompt", IO_SECS, &logs, |s| pane_lines(s).iter().any(|l| l.ends_with('#')));
    tmux.type_text("hostname");
    tmux.keys(&["Enter"]);
    let s = tmux.wait_or("the guest's hostname", IO_SECS, &logs, |s| pane_lines(s).contains(&"tuiconvm"));
    assert!(pane_lines(&s).iter().any(|l| l.ends_with("# hostname")), "the command was echoed: {s}");

    // Ctrl-] detaches: the instances list is back and takes keys again.
    tmux.keys(&["C-]"]);
    let s = tmux.wait_or("the dashboard again", 10, &logs, |s| s.contains("detached from tuiconvm's console"));
    assert!(s.contains("Instances [") && !s.contains("Console tuiconvm"), "{s}");
    tmux.type_text(":keypairs");
    tmux.keys(&["Enter"]);
    tmux.wait_or("the key pairs view", 10, &logs, |s| s.contains("Key pairs ["));
    tmux.type_text(":servers");
    tmux.keys(&["Enter"]);
    tmux.wait_or("the instances view", 10, &logs, |s| s.lines().any(|l| l.contains("tuiconvm")));

    // Attached again (a fresh single-use URL), the instance stops under the pane: the pane
    // shows why the console ended, in the proxy's words, and Esc closes it.
    tmux.type_text("a");
    tmux.wait_or("the second attach", IO_SECS, &logs, |s| s.contains("Console tuiconvm") && s.contains("connected"));
    admin.post("compute", &format!("/servers/{id}/action"), &json!({"os-stop": null})).await.expect("stop");
    let s = tmux.wait_or("the end of the console", BOOT_SECS, &logs, |s| s.contains("the console closed"));
    assert!(s.contains("console of host") && s.contains("the guest's console closed"), "{s}");
    tmux.keys(&["Escape"]);
    tmux.wait_or("SHUTOFF", BOOT_SECS, &logs, |s| s.lines().any(|l| l.contains("tuiconvm") && l.contains("SHUTOFF")));

    // `a` on the stopped instance says plainly why there is no console.
    tmux.type_text("a");
    let s = tmux
        .wait_or("the not-running message", IO_SECS, &logs, |s| s.contains("tuiconvm is SHUTOFF; start it to attach"));
    assert!(s.contains("Console tuiconvm") && s.contains("closed"), "{s}");
    tmux.keys(&["Escape"]);
    tmux.wait_or("the list after Esc", 10, &logs, |s| !s.contains("Console tuiconvm") && s.contains("Instances ["));
    tmux.type_text("q");
    tmux.wait_or("meridian to exit", 10, &logs, |s| s.contains("meridian exited: 0"));

    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], BOOT_SECS).await;
}
