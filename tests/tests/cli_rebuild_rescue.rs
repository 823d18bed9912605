//! The unmodified `openstack` CLI rebuilding, rescuing, soft-deleting and restoring servers
//! and resetting their state, on a real agent (libvirt `test:///default`), with the exact
//! state walks checked through the API's timeline.

use meridian_common::Client;
use meridian_e2e::{Agent, Cli, Server, prepare_cloud, upload_image_data, wait_hosts_up};
use serde_json::{Value, json};

/// The server's (status, vm_state, task_state), as the CLI shows them.
fn states(cli: &Cli, name: &str) -> (String, String, Value) {
    let s = cli.json(&["server", "show", name]);
    (
        s["status"].as_str().unwrap_or_default().to_string(),
        s["OS-EXT-STS:vm_state"].as_str().unwrap_or_default().to_string(),
        s["OS-EXT-STS:task_state"].clone(),
    )
}

fn settle(cli: &Cli, name: &str, status: &str) -> (String, String, Value) {
    for _ in 0..120 {
        let s = states(cli, name);
        if s.0 == status && s.2.is_null() {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("{name} never settled in {status}: {:?}", states(cli, name));
}

/// The (vm_state, task_state) pairs of the timeline after the first `from`, duplicates folded.
async fn walk_since(admin: &Client, id: &str, from: usize) -> Vec<(String, Option<String>)> {
    let t = admin.get("compute", &format!("/servers/{id}/os-meridian-timeline")).await.expect("timeline");
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for row in t["timeline"].as_array().expect("rows") {
        let pair =
            (row["vm_state"].as_str().unwrap_or_default().to_string(), row["task_state"].as_str().map(str::to_string));
        if out.last() != Some(&pair) {
            out.push(pair);
        }
    }
    out.split_off(from.min(out.len()))
}

async fn walk_len(admin: &Client, id: &str) -> usize {
    walk_since(admin, id, 0).await.len()
}

fn pairs(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    list.iter().map(|(v, t)| (v.to_string(), t.map(str::to_string))).collect()
}

#[tokio::test]
async fn rebuild_rescue_restore_and_reset_state_with_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("meridian.toml");
    std::fs::write(&config, "[compute]\nreclaim_instance_interval = 3600\n").expect("config");
    let server = Server::start_opts(None, &["--config", config.to_str().expect("path")]);
    let _c1 = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let img = admin
        .post(
            "image",
            "/v2/images",
            &json!({"name": "tiny2", "disk_format": "raw", "container_format": "bare", "visibility": "public"}),
        )
        .await
        .expect("image");
    let tiny2 = img["id"].as_str().expect("id").to_string();
    upload_image_data(&admin, &tiny2, vec![3u8; 128 * 1024]).await;
    let cli = server.admin_cli();
    let created =
        cli.json(&["server", "create", "--wait", "--image", "tiny", "--flavor", "m1.nano", "--network", "net", "vm1"]);
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let addresses = cli.json(&["server", "show", "vm1"])["addresses"].clone();

    // Rebuild from another image, waiting for it.
    let n = walk_len(&admin, &id).await;
    // `--wait` prints "Complete" before the server: the state is read afterwards.
    let out = cli.run(&["server", "rebuild", "--image", "tiny2", "--wait", "vm1"]);
    assert!(out.contains("Complete"), "{out}");
    let s = cli.json(&["server", "show", "vm1"]);
    assert_eq!(s["status"], "ACTIVE", "{s}");
    assert!(s["image"].to_string().contains(&tiny2), "{s}");
    assert_eq!(s["addresses"], addresses, "same addresses after the rebuild");
    assert_eq!(
        walk_since(&admin, &id, n).await,
        pairs(&[
            ("active", Some("rebuilding")),
            ("active", Some("rebuild_block_device_mapping")),
            ("active", Some("rebuild_spawning")),
            ("active", None),
        ])
    );

    // Rescue and unrescue.
    let n = walk_len(&admin, &id).await;
    cli.run(&["server", "rescue", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "RESCUE"), ("RESCUE".into(), "rescued".into(), Value::Null));
    cli.run(&["server", "unrescue", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "ACTIVE"), ("ACTIVE".into(), "active".into(), Value::Null));
    assert_eq!(
        walk_since(&admin, &id, n).await,
        pairs(&[("active", Some("rescuing")), ("rescued", None), ("rescued", Some("unrescuing")), ("active", None)])
    );

    // With a reclaim interval, delete soft-deletes; restore brings it back.
    let n = walk_len(&admin, &id).await;
    cli.run(&["server", "delete", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "SOFT_DELETED"), ("SOFT_DELETED".into(), "soft-delete".into(), Value::Null));
    cli.run(&["server", "restore", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "ACTIVE"), ("ACTIVE".into(), "active".into(), Value::Null));
    assert_eq!(
        walk_since(&admin, &id, n).await,
        pairs(&[
            ("active", Some("soft-deleting")),
            ("soft-delete", None),
            ("soft-delete", Some("restoring")),
            ("active", None),
        ])
    );

    // os-resetState through `server set --state`.
    cli.run(&["server", "set", "--auto-approve", "--state", "error", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "ERROR"), ("ERROR".into(), "error".into(), Value::Null));
    cli.run(&["server", "set", "--auto-approve", "--state", "active", "vm1"]);
    assert_eq!(settle(&cli, "vm1", "ACTIVE"), ("ACTIVE".into(), "active".into(), Value::Null));
    let actions = cli.json(&["server", "event", "list", "vm1"]);
    let names: Vec<&str> = actions.as_array().expect("list").iter().filter_map(|a| a["Action"].as_str()).collect();
    assert_eq!(names, ["resetState", "resetState", "restore", "delete", "unrescue", "rescue", "rebuild", "create"]);
}
