//! The unmodified `openstack` CLI resizing and cold-migrating servers between two real agents
//! (libvirt `test:///default`, each with its own driver): resize with confirm and revert, cold
//! migration with confirm, the migration list, with the exact states checked through the API.

use meridian_e2e::{Agent, Cli, Server, prepare_cloud, wait_hosts_up};
use serde_json::Value;

/// (status, vm_state, task_state, host, flavor name) as the CLI shows them.
fn states(cli: &Cli, name: &str) -> (String, String, Value, String, String) {
    let s = cli.json(&["--os-compute-api-version", "2.79", "server", "show", name]);
    let flavor = match &s["flavor"] {
        Value::String(f) => f.split(' ').next().unwrap_or_default().to_string(),
        Value::Object(o) => o.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        other => other.to_string(),
    };
    (
        s["status"].as_str().unwrap_or_default().to_string(),
        s["OS-EXT-STS:vm_state"].as_str().unwrap_or_default().to_string(),
        s["OS-EXT-STS:task_state"].clone(),
        s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or_default().to_string(),
        flavor,
    )
}

fn settle(cli: &Cli, name: &str, status: &str) -> (String, String, Value, String, String) {
    for _ in 0..240 {
        let s = states(cli, name);
        if s.0 == status && s.2.is_null() {
            return s;
        }
        assert_ne!(s.0, "ERROR", "{name} went to ERROR");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("{name} never settled in {status}: {:?}", states(cli, name));
}

fn migration_rows(cli: &Cli) -> Vec<Value> {
    cli.json(&["--os-compute-api-version", "2.59", "server", "migration", "list"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn resize_and_cold_migrate_with_the_cli() {
    let server = Server::start();
    let _c1 = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let cli = server.admin_cli();
    let created =
        cli.json(&["server", "create", "--wait", "--image", "tiny", "--flavor", "m1.nano", "--network", "net", "vm1"]);
    assert_eq!(created["status"], "ACTIVE", "{created}");

    // One host: the resize stays on it (allow_resize_to_same_host), then reverts.
    cli.run(&["server", "resize", "--flavor", "m1.micro", "--wait", "vm1"]);
    let s = settle(&cli, "vm1", "VERIFY_RESIZE");
    assert_eq!((s.1.as_str(), s.3.as_str(), s.4.as_str()), ("resized", "c1", "m1.micro"), "{s:?}");
    cli.run(&["server", "resize", "revert", "vm1"]);
    let s = settle(&cli, "vm1", "ACTIVE");
    assert_eq!((s.1.as_str(), s.3.as_str(), s.4.as_str()), ("active", "c1", "m1.nano"), "{s:?}");

    // Cold migration with no other host: Nova's 400.
    let out = cli.output(&["server", "migrate", "vm1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No valid host was found") && err.contains("400"), "{err}");

    // A second host: the resize goes there (spread), then is confirmed.
    let _c2 = Agent::start(&server, "c2");
    wait_hosts_up(&admin, 2).await;
    cli.run(&["server", "resize", "--flavor", "m1.micro", "--wait", "vm1"]);
    let s = settle(&cli, "vm1", "VERIFY_RESIZE");
    assert_eq!((s.3.as_str(), s.4.as_str()), ("c2", "m1.micro"), "{s:?}");
    cli.run(&["server", "resize", "confirm", "vm1"]);
    let s = settle(&cli, "vm1", "ACTIVE");
    assert_eq!((s.1.as_str(), s.3.as_str(), s.4.as_str()), ("active", "c2", "m1.micro"), "{s:?}");

    // Cold migration back to c1, confirmed.
    cli.run(&["server", "migrate", "--wait", "vm1"]);
    let s = settle(&cli, "vm1", "VERIFY_RESIZE");
    assert_eq!(s.3, "c1", "{s:?}");
    cli.run(&["server", "resize", "confirm", "vm1"]);
    let s = settle(&cli, "vm1", "ACTIVE");
    assert_eq!((s.3.as_str(), s.4.as_str()), ("c1", "m1.micro"), "{s:?}");

    // A stopped server migrates and stays stopped; a revert brings it back, stopped.
    cli.run(&["server", "stop", "vm1"]);
    settle(&cli, "vm1", "SHUTOFF");
    cli.run(&["server", "migrate", "--wait", "vm1"]);
    let s = settle(&cli, "vm1", "VERIFY_RESIZE");
    assert_eq!(s.3, "c2", "{s:?}");
    cli.run(&["server", "resize", "revert", "vm1"]);
    let s = settle(&cli, "vm1", "SHUTOFF");
    assert_eq!((s.1.as_str(), s.3.as_str()), ("stopped", "c1"), "{s:?}");

    let rows = migration_rows(&cli);
    let statuses: Vec<&str> = rows.iter().filter_map(|r| r["Status"].as_str()).collect();
    assert_eq!(statuses, ["reverted", "confirmed", "confirmed", "reverted"], "{rows:?}");
    let types: Vec<&str> = rows.iter().filter_map(|r| r["Type"].as_str()).collect();
    assert_eq!(types, ["migration", "migration", "resize", "resize"], "{rows:?}");

    let events = cli.json(&["server", "event", "list", "vm1"]);
    let actions: Vec<&str> = events.as_array().expect("list").iter().filter_map(|e| e["Action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "revertResize",
            "migrate",
            "stop",
            "confirmResize",
            "migrate",
            "confirmResize",
            "resize",
            "revertResize",
            "resize",
            "create"
        ],
        "{events}"
    );
    cli.run(&["server", "delete", "--wait", "vm1"]);
}
