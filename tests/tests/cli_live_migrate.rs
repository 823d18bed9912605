//! The unmodified `openstack` CLI live-migrating a server between two real agents (libvirt
//! `test:///default`, each with its own driver). The test driver cannot receive a live guest,
//! so the walk ends as Nova ends a failed live migration: the server ACTIVE on its source with
//! no task, the live-migration record `error`, the instance action's events failed, the
//! destination's claim freed. Plus the CLI's refusals: the same host, a server with a volume,
//! a stopped server.

use meridian_e2e::{Agent, Cli, Server, prepare_cloud, wait_for, wait_hosts_up};
use serde_json::Value;

fn live_rows(cli: &Cli) -> Vec<Value> {
    let rows =
        cli.json(&["--os-compute-api-version", "2.59", "server", "migration", "list", "--type", "live-migration"]);
    rows.as_array().cloned().unwrap_or_default()
}

/// Runs a CLI command that must fail; its stderr.
fn refused(cli: &Cli, args: &[&str]) -> String {
    let out = cli.output(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test]
async fn live_migrate_with_the_cli_ends_on_the_source_when_the_destination_cannot_receive() {
    let server = Server::start();
    let _c1 = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let cli = server.admin_cli();
    for name in ["vm1", "vm2"] {
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
            name,
        ]);
        assert_eq!(created["status"], "ACTIVE", "{created}");
    }
    // vm2 gets a volume (made on c1, the only host yet).
    cli.run(&["volume", "create", "--size", "1", "data"]);
    cli.wait_volume("data", "available");
    cli.run(&["server", "add", "volume", "vm2", "data"]);
    cli.wait_volume("data", "in-use");
    let _c2 = Agent::start(&server, "c2");
    wait_hosts_up(&admin, 2).await;
    let lm = ["--os-compute-api-version", "2.30", "server", "migrate", "--live-migration", "--block-migration"];

    // The same host: the scheduler never picks the source (synchronous before 2.34: 400).
    let err = refused(&cli, &[&lm[..], &["--host", "c1", "vm1"]].concat());
    assert!(
        err.contains("No valid host was found. There are not enough hosts available.") && err.contains("400"),
        "{err}"
    );
    // A server with a volume: its volume stays on c1's disk.
    let vm2 = cli.server_show("vm2")["id"].as_str().expect("id").to_string();
    let err = refused(&cli, &[&lm[..], &["--host", "c2", "vm2"]].concat());
    let want = format!(
        "Cannot live-migrate instance {vm2}: its volumes are on compute host c1 and no other host can reach them."
    );
    assert!(err.contains(&want) && err.contains("400"), "{err}");
    assert_eq!(cli.server_show("vm1")["status"], "ACTIVE");

    // The real walk to c2: accepted, MIGRATING, then back to ACTIVE on c1 with the record `error`.
    cli.run(&[&lm[..], &["--host", "c2", "vm1"]].concat());
    let mut walk = Vec::new();
    wait_for("the live migration to end", || {
        let s = cli.server_show("vm1");
        let step = (s["status"].as_str().unwrap_or("").to_string(), s["OS-EXT-STS:task_state"].clone());
        assert_ne!(step.0, "ERROR", "{s}");
        if walk.last() != Some(&step) {
            walk.push(step.clone());
        }
        step.0 == "ACTIVE" && step.1.is_null() && live_rows(&cli).first().is_some_and(|r| r["Status"] == "error")
    });
    assert!(
        walk.iter().all(|(st, t)| (st == "ACTIVE" && t.is_null()) || (st == "MIGRATING" && t == "migrating")),
        "{walk:?}"
    );
    let s = cli.server_show("vm1");
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str()),
        (Some("ACTIVE"), None, Some("c1")),
        "{s}"
    );
    let rows = live_rows(&cli);
    let errors: Vec<&Value> = rows.iter().filter(|r| r["Dest Compute"] == "c2").collect();
    assert_eq!(errors.len(), 1, "{rows:?}");
    assert_eq!(
        (errors[0]["Status"].as_str(), errors[0]["Source Compute"].as_str(), errors[0]["Type"].as_str()),
        (Some("error"), Some("c1"), Some("live-migration")),
        "{rows:?}"
    );
    // None in progress for the server.
    let listed = cli.json(&["--os-compute-api-version", "2.23", "server", "migration", "list", "--server", "vm1"]);
    assert!(listed.as_array().is_some_and(|l| l.iter().all(|r| r["Status"] == "error")), "{listed}");
    // The action and its failed events, as `server event show` has them.
    let events = cli.json(&["server", "event", "list", "vm1"]);
    assert_eq!(events[0]["Action"], "live-migration", "{events}");
    let req = events[0]["Request ID"].as_str().expect("request id").to_string();
    let ev = cli.json(&["server", "event", "show", "vm1", &req]);
    let text = ev.to_string();
    assert!(text.contains("compute_pre_live_migration") && text.contains("Error"), "{ev}");
    // c2's claim is gone: its hypervisor shows nothing used by vm1.
    let hv = cli.json(&["hypervisor", "show", "c2"]);
    assert_eq!(
        hv["vcpus_used"].as_i64().or_else(|| hv["vcpus_used"].as_str().and_then(|s| s.parse().ok())),
        Some(0),
        "{hv}"
    );

    // A stopped server: Nova's 409 naming the action.
    cli.run(&["server", "stop", "vm1"]);
    wait_for("vm1 to stop", || cli.server_show("vm1")["status"] == "SHUTOFF");
    let err = refused(&cli, &[&lm[..], &["--host", "c2", "vm1"]].concat());
    assert!(
        err.contains("Cannot 'os-migrateLive' instance") && err.contains("vm_state stopped") && err.contains("409"),
        "{err}"
    );
}
