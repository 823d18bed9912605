//! The unmodified `openstack` CLI driving servers on real agents (libvirt `test:///default`).

use meridian_e2e::{Agent, Server, prepare_cloud};

#[tokio::test]
async fn server_lifecycle_with_the_cli() {
    let server = Server::start();
    let _c1 = Agent::start(&server, "c1");
    let _c2 = Agent::start(&server, "c2");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    let cli = server.admin_cli();

    let services = cli.json(&["compute", "service", "list"]);
    let computes = services.as_array().expect("list").iter().filter(|s| s["Binary"] == "nova-compute").count();
    assert_eq!(computes, 2, "{services}");
    let hypervisors = cli.json(&["hypervisor", "list"]);
    assert_eq!(hypervisors.as_array().expect("list").len(), 2, "{hypervisors}");

    let created = cli.json(&[
        "server",
        "create",
        "--wait",
        "--image",
        "tiny",
        "--flavor",
        "m1.nano",
        "--network",
        "net",
        "cli-vm",
    ]);
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let listed = cli.json(&["server", "list"]);
    assert_eq!(listed[0]["Name"], "cli-vm");
    assert!(listed[0]["Networks"].to_string().contains("10.77."), "{listed}");
    let shown = cli.json(&["server", "show", "cli-vm"]);
    assert_eq!(shown["OS-EXT-STS:vm_state"], "active");

    cli.run(&["server", "stop", "cli-vm"]);
    wait_status(&cli, "SHUTOFF");
    cli.run(&["server", "start", "cli-vm"]);
    wait_status(&cli, "ACTIVE");
    cli.run(&["server", "reboot", "--wait", "cli-vm"]);
    cli.run(&["server", "reboot", "--hard", "--wait", "cli-vm"]);
    wait_status(&cli, "ACTIVE");
    // The test driver's guest writes nothing; the call itself must work end to end.
    let out = cli.output(&["console", "log", "show", "--lines", "20", "cli-vm"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = cli.json(&["server", "event", "list", "cli-vm"]);
    assert_eq!(events.as_array().expect("list").len(), 5, "{events}");

    cli.run(&["server", "delete", "--wait", "cli-vm"]);
    assert!(cli.json(&["server", "list"]).as_array().expect("list").is_empty());
}

fn wait_status(cli: &meridian_e2e::Cli, want: &str) {
    for _ in 0..120 {
        let s = cli.json(&["server", "show", "cli-vm", "-c", "status", "-c", "OS-EXT-STS:task_state"]);
        if s["status"] == want && s["OS-EXT-STS:task_state"].is_null() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("cli-vm never reached {want}");
}
