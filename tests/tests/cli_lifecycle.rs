//! The unmodified `openstack` CLI pausing, suspending, locking and tagging servers on a real
//! agent (libvirt `test:///default`), with the exact states checked through the API.

use meridian_e2e::{Agent, Cli, Server, prepare_cloud, wait_hosts_up};
use serde_json::Value;

/// The server's (status, vm_state, task_state, power_state), as the CLI shows them.
fn states(cli: &Cli, name: &str) -> (String, String, Value, i64) {
    let s = cli.json(&["server", "show", name]);
    (
        s["status"].as_str().unwrap_or_default().to_string(),
        s["OS-EXT-STS:vm_state"].as_str().unwrap_or_default().to_string(),
        s["OS-EXT-STS:task_state"].clone(),
        s["OS-EXT-STS:power_state"].as_i64().or_else(|| power_code(&s["OS-EXT-STS:power_state"])).unwrap_or(-1),
    )
}

/// openstackclient prints power states by name (`Paused`, `Shutdown`, …).
fn power_code(v: &Value) -> Option<i64> {
    Some(match v.as_str()? {
        "NOSTATE" => 0,
        "Running" => 1,
        "Paused" => 3,
        "Shutdown" => 4,
        "Crashed" => 6,
        "Suspended" => 7,
        _ => return None,
    })
}

fn settle(cli: &Cli, name: &str, status: &str) -> (String, String, Value, i64) {
    for _ in 0..120 {
        let s = states(cli, name);
        if s.0 == status && s.2.is_null() {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("{name} never settled in {status}: {:?}", states(cli, name));
}

#[tokio::test]
async fn pause_suspend_lock_and_tags_with_the_cli() {
    let server = Server::start();
    let _c1 = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let cli = server.admin_cli();
    let created =
        cli.json(&["server", "create", "--wait", "--image", "tiny", "--flavor", "m1.nano", "--network", "net", "vm1"]);
    assert_eq!(created["status"], "ACTIVE", "{created}");

    cli.run(&["server", "pause", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "PAUSED"), ("PAUSED".into(), "paused".into(), Value::Null, 3));
    cli.run(&["server", "unpause", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "ACTIVE"), ("ACTIVE".into(), "active".into(), Value::Null, 1));
    cli.run(&["server", "suspend", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "SUSPENDED"), ("SUSPENDED".into(), "suspended".into(), Value::Null, 4));
    // Nova refuses a start of a suspended server; the CLI reports the 409.
    let out = cli.output(&["server", "start", "vm1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("while it is in vm_state suspended") && err.contains("409"), "{err}");
    cli.run(&["server", "resume", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "ACTIVE"), ("ACTIVE".into(), "active".into(), Value::Null, 1));

    // Lock with a reason (2.73); the server shows both.
    cli.run(&["--os-compute-api-version", "2.73", "server", "lock", "--reason", "upgrade", "vm1"]);
    let s = cli.json(&["--os-compute-api-version", "2.73", "server", "show", "vm1"]);
    assert_eq!((s["locked"].clone(), s["locked_reason"].clone()), (Value::Bool(true), "upgrade".into()), "{s}");
    let locked = cli.json(&["--os-compute-api-version", "2.73", "server", "list", "--locked"]);
    assert_eq!(locked.as_array().map(Vec::len), Some(1), "{locked}");
    let unlocked = cli.json(&["--os-compute-api-version", "2.73", "server", "list", "--unlocked"]);
    assert_eq!(unlocked.as_array().map(Vec::len), Some(0), "{unlocked}");
    cli.run(&["server", "unlock", "vm1"]);
    let s = cli.json(&["--os-compute-api-version", "2.73", "server", "show", "vm1"]);
    assert_eq!(s["locked"], Value::Bool(false), "{s}");

    // Tags (2.26): set, list by them, unset.
    cli.run(&["--os-compute-api-version", "2.26", "server", "set", "--tag", "web", "--tag", "prod", "vm1"]);
    let s = cli.json(&["--os-compute-api-version", "2.26", "server", "show", "vm1"]);
    let mut tags: Vec<String> = match &s["tags"] {
        Value::Array(a) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        Value::String(t) => t.split(',').map(|x| x.trim().trim_matches('\'').to_string()).collect(),
        other => panic!("tags: {other}"),
    };
    tags.sort();
    assert_eq!(tags, ["prod", "web"], "{s}");
    let hit = cli.json(&["--os-compute-api-version", "2.26", "server", "list", "--tags", "web"]);
    assert_eq!(hit.as_array().map(Vec::len), Some(1), "{hit}");
    let miss = cli.json(&["--os-compute-api-version", "2.26", "server", "list", "--tags", "db"]);
    assert_eq!(miss.as_array().map(Vec::len), Some(0), "{miss}");
    let not = cli.json(&["--os-compute-api-version", "2.26", "server", "list", "--not-tags", "web"]);
    assert_eq!(not.as_array().map(Vec::len), Some(0), "{not}");
    cli.run(&["--os-compute-api-version", "2.26", "server", "unset", "--tag", "web", "vm1"]);
    let hit = cli.json(&["--os-compute-api-version", "2.26", "server", "list", "--tags", "web"]);
    assert_eq!(hit.as_array().map(Vec::len), Some(0), "{hit}");

    let events = cli.json(&["server", "event", "list", "vm1"]);
    let actions: Vec<&str> = events.as_array().expect("list").iter().filter_map(|e| e["Action"].as_str()).collect();
    assert_eq!(actions, ["unlock", "lock", "resume", "suspend", "unpause", "pause", "create"], "{events}");

    // A paused server deletes.
    cli.run(&["server", "pause", "vm1"]);
    settle(&cli, "vm1", "PAUSED");
    cli.run(&["server", "delete", "--wait", "vm1"]);
    assert!(cli.json(&["server", "list"]).as_array().expect("list").is_empty());
}
