//! The unmodified `openstack` CLI evacuating a server off a dead compute host and booting a
//! server whose flavor has ephemeral and swap disks, with two real agents (libvirt
//! `test:///default`, each process its own driver): the flavor's disks on the host, the
//! compute service forced down, `server evacuate`, the state walk and the migration record
//! checked through the API, and the dead host's copy removed when its agent comes back.

use std::path::Path;

use meridian_e2e::{Agent, Cli, Server, prepare_cloud, wait_for, wait_hosts_up};
use serde_json::Value;

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len()
}

fn evacuations(cli: &Cli) -> Vec<Value> {
    let rows = cli.json(&["--os-compute-api-version", "2.59", "server", "migration", "list", "--type", "evacuation"]);
    rows.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn evacuate_a_server_with_ephemeral_and_swap_disks_with_the_cli() {
    let server = Server::start();
    let mut c1 = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let cli = server.admin_cli();

    // A flavor with a 1 GiB ephemeral disk and 512 MiB of swap: real disks beside the root.
    cli.run(&[
        "flavor",
        "create",
        "--vcpus",
        "1",
        "--ram",
        "64",
        "--disk",
        "1",
        "--ephemeral",
        "1",
        "--swap",
        "512",
        "m1.eph",
    ]);
    let f = cli.json(&["flavor", "show", "m1.eph"]);
    assert_eq!((f["OS-FLV-EXT-DATA:ephemeral"].as_i64(), f["swap"].as_i64()), (Some(1), Some(512)), "{f}");
    let created =
        cli.json(&["server", "create", "--wait", "--image", "tiny", "--flavor", "m1.eph", "--network", "net", "vm1"]);
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let s = cli.server_show("vm1");
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "c1");
    assert_eq!((s["flavor"]["ephemeral"].as_i64(), s["flavor"]["swap"].as_i64()), (Some(1), Some(512)), "{s}");
    let c1_dir = c1.state_dir.join("instances").join(&id);
    assert_eq!(file_len(&c1_dir.join("disk.eph0")), 1 << 30);
    assert_eq!(file_len(&c1_dir.join("disk.swap")), 512 << 20);
    let addresses = s["addresses"].clone();

    // A second host; then c1 dies and the operator marks its compute service down.
    let c2 = Agent::start(&server, "c2");
    wait_hosts_up(&admin, 2).await;
    // While c1 is up the evacuation is refused, as Nova refuses it.
    let out = cli.output(&["server", "evacuate", "vm1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Compute service of c1 is still in use.") && err.contains("400"), "{err}");
    c1.kill9();
    cli.run(&["--os-compute-api-version", "2.53", "compute", "service", "set", "--down", "c1", "nova-compute"]);
    let services = cli.json(&["compute", "service", "list", "--service", "nova-compute"]);
    let c1_row = services.as_array().expect("list").iter().find(|r| r["Host"] == "c1").cloned().expect("c1");
    assert_eq!(c1_row["State"], "down", "{services}");

    // Not `--wait`: OSC 10.5 waits for 'ACTIVE' against a lower-cased status, so it never returns.
    cli.run(&["server", "evacuate", "vm1"]);
    let mut walk = Vec::new();
    wait_for("the evacuation to finish", || {
        let s = cli.server_show("vm1");
        let step = (s["status"].as_str().unwrap_or("").to_string(), s["OS-EXT-STS:task_state"].clone());
        assert_ne!(step.0, "ERROR", "{s}");
        if walk.last() != Some(&step) {
            walk.push(step.clone());
        }
        step.0 == "ACTIVE" && step.1.is_null()
    });
    // Whatever steps the polls caught, in Nova's order.
    let order = ["rebuilding", "rebuild_block_device_mapping", "rebuild_spawning"];
    let seen: Vec<usize> =
        walk.iter().filter_map(|(_, t)| t.as_str()).filter_map(|t| order.iter().position(|o| *o == t)).collect();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{walk:?}");
    assert!(walk.iter().all(|(st, t)| st == "ACTIVE" && t.is_null() || st == "REBUILD"), "{walk:?}");
    let s = cli.server_show("vm1");
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str()),
        (Some("ACTIVE"), None, Some("c2")),
        "{s}"
    );
    assert_eq!(s["id"], id.as_str(), "the same server");
    assert_eq!(s["addresses"], addresses, "the same ports and addresses");
    let rows = evacuations(&cli);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0]["Status"].as_str(), rows[0]["Source Compute"].as_str(), rows[0]["Dest Compute"].as_str()),
        (Some("done"), Some("c1"), Some("c2")),
        "{rows:?}"
    );
    let events = cli.json(&["server", "event", "list", "vm1"]);
    assert_eq!(events[0]["Action"], "evacuate", "{events}");
    // The new host made the flavor's disks (new and empty: they died with c1).
    let c2_dir = c2.state_dir.join("instances").join(&id);
    assert_eq!(file_len(&c2_dir.join("disk.eph0")), 1 << 30);
    assert_eq!(file_len(&c2_dir.join("disk.swap")), 512 << 20);
    // The dead host still has its copy on disk.
    assert!(c1_dir.join("disk.eph0").exists());

    // c1 comes back: it must not keep a second copy. Its copy goes, the record is completed.
    c1.restart();
    wait_for("c1 removing the evacuated copy", || !c1_dir.exists());
    wait_for("the evacuation completed", || evacuations(&cli)[0]["Status"] == "completed");
    cli.run(&["--os-compute-api-version", "2.53", "compute", "service", "set", "--up", "c1", "nova-compute"]);
    wait_hosts_up(&admin, 2).await;
    let s = cli.server_show("vm1");
    assert_eq!((s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str()), (Some("ACTIVE"), Some("c2")));

    // Deleting the server removes the disks on c2.
    cli.run(&["server", "delete", "--wait", "vm1"]);
    assert!(!c2_dir.exists());
}
