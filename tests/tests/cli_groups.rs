//! The unmodified `openstack` CLI with server groups, scheduler hints, aggregates and
//! availability zones on two real agents (libvirt `test:///default`).

use meridian_e2e::{Agent, Cli, Server, prepare_cloud, wait_hosts_up};
use serde_json::Value;

/// The host a server runs on, once it is ACTIVE (panics on ERROR).
fn host_of(cli: &Cli, name: &str) -> String {
    let s = cli.json(&["server", "show", name]);
    assert_eq!(s["status"], "ACTIVE", "{s}");
    s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string()
}

/// Waits until the server leaves BUILD; its `server show`.
fn settled(cli: &Cli, name: &str) -> Value {
    for _ in 0..240 {
        let s = cli.json(&["server", "show", name]);
        if s["status"] != "BUILD" {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("{name} never left BUILD");
}

#[tokio::test]
async fn groups_hints_aggregates_and_zones_with_the_cli() {
    let server = Server::start();
    let _c1 = Agent::start(&server, "c1");
    let _c2 = Agent::start(&server, "c2");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 2).await;
    let cli = server.admin_cli();
    let boot = ["--image", "tiny", "--flavor", "m1.nano", "--network", "net"];

    // Anti-affinity: two members on two hosts, a third finds no host.
    let g = cli.json(&["server", "group", "create", "--policy", "anti-affinity", "apart"]);
    let gid = g["id"].as_str().expect("group id").to_string();
    let hint = format!("group={gid}");
    let mut args = vec!["server", "create", "--wait", "--hint", &hint, "--min", "2", "--max", "2"];
    args.extend(boot);
    args.push("web");
    cli.run(&args);
    let (a, b) = (settled(&cli, "web-1"), settled(&cli, "web-2"));
    assert_eq!((a["status"].clone(), b["status"].clone()), ("ACTIVE".into(), "ACTIVE".into()), "{a} {b}");
    assert_ne!(host_of(&cli, "web-1"), host_of(&cli, "web-2"), "one member per host");
    let mut args = vec!["server", "create", "--hint", &hint];
    args.extend(boot);
    args.push("web3");
    cli.run(&args);
    let third = settled(&cli, "web3");
    assert_eq!(third["status"], "ERROR", "{third}");
    let fault = third["fault"].to_string();
    assert!(fault.contains("No valid host was found"), "{fault}");
    let shown = cli.json(&["server", "group", "show", "apart"]);
    assert_eq!(
        shown["members"].as_str().map(|m| m.split(',').count()).or(shown["members"].as_array().map(Vec::len)),
        Some(3),
        "{shown}"
    );

    // Affinity: together.
    let g = cli.json(&["server", "group", "create", "--policy", "affinity", "together"]);
    let hint = format!("group={}", g["id"].as_str().expect("id"));
    let mut args = vec!["server", "create", "--wait", "--hint", &hint, "--min", "2", "--max", "2"];
    args.extend(boot);
    args.push("db");
    cli.run(&args);
    settled(&cli, "db-1");
    settled(&cli, "db-2");
    assert_eq!(host_of(&cli, "db-1"), host_of(&cli, "db-2"));

    let groups = cli.json(&["server", "group", "list"]);
    assert_eq!(groups.as_array().map(Vec::len), Some(2), "{groups}");

    // An aggregate with a zone: the zone is listed and a boot asking for it lands there.
    cli.run(&["aggregate", "create", "--zone", "az1", "agg1"]);
    cli.run(&["aggregate", "add", "host", "agg1", "c2"]);
    let zones = cli.json(&["availability", "zone", "list", "--compute"]);
    let names: Vec<&str> = zones.as_array().expect("zones").iter().filter_map(|z| z["Zone Name"].as_str()).collect();
    assert!(names.contains(&"az1") && names.contains(&"nova"), "{zones}");
    let mut args = vec!["server", "create", "--wait", "--availability-zone", "az1"];
    args.extend(boot);
    args.push("zoned");
    cli.run(&args);
    assert_eq!(host_of(&cli, "zoned"), "c2");
    let s = cli.json(&["server", "show", "zoned"]);
    assert_eq!(s["OS-EXT-AZ:availability_zone"], "az1", "{s}");
    // Already in: the CLI reports Nova's 409.
    let out = cli.output(&["aggregate", "add", "host", "agg1", "c2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has host c2"), "{out:?}");

    cli.run(&["aggregate", "set", "--property", "ssd=true", "agg1"]);
    let agg = cli.json(&["aggregate", "show", "agg1"]);
    let props = agg["properties"].to_string();
    assert!(props.contains("ssd"), "{agg}");
    cli.run(&["aggregate", "unset", "--property", "ssd", "agg1"]);
    let agg = cli.json(&["aggregate", "show", "agg1"]);
    assert!(!agg["properties"].to_string().contains("ssd"), "{agg}");
    cli.run(&["aggregate", "remove", "host", "agg1", "c2"]);
    cli.run(&["aggregate", "delete", "agg1"]);
    assert_eq!(cli.json(&["aggregate", "list"]).as_array().map(Vec::len), Some(0));

    cli.run(&["server", "delete", "--wait", "web3"]);
    cli.run(&["server", "group", "delete", "together"]);
    let groups = cli.json(&["server", "group", "list"]);
    assert_eq!(groups.as_array().map(Vec::len), Some(1), "{groups}");
}
