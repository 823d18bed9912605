//! The unmodified `openstack` CLI on snapshots of volume-backed servers (Nova's
//! `snapshot_volume_backed`) and servers booted from them, against a real agent
//! (`test:///default`: volumes and snapshots are real files in its state dir).

use std::io::{Seek, SeekFrom, Write};

use meridian_e2e::{Agent, Cli, Server, prepare_cloud};
use serde_json::Value;

/// The root volume of a server (its only attached volume).
fn root_volume(cli: &Cli, server: &str) -> String {
    let s = cli.json(&["server", "show", server]);
    let attached = s["volumes_attached"].as_array().cloned().unwrap_or_default();
    assert_eq!(attached.len(), 1, "{s}");
    attached[0]["id"].as_str().expect("volume id").to_string()
}

/// Where the token goes in the root volume (past the image's bytes).
const TOKEN_AT: u64 = 512 << 20;
const TOKEN: &[u8] = b"meridian-volume-backed-snapshot-token";

fn read_token(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("volume file");
    let at = usize::try_from(TOKEN_AT).expect("offset");
    bytes[at..at + TOKEN.len()].to_vec()
}

#[tokio::test]
async fn a_volume_backed_server_is_snapshotted_and_booted_again_with_the_cli() {
    let server = Server::start();
    let agent = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    let cli = server.admin_cli();

    let vm = cli.json(&[
        "server",
        "create",
        "--wait",
        "--boot-from-volume",
        "1",
        "--image",
        "tiny",
        "--flavor",
        "m1.nano",
        "--network",
        "net",
        "vb1",
    ]);
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    let root = root_volume(&cli, "vb1");
    let volumes = agent.state_dir.join("volumes");
    // What the guest wrote: a token in its root volume.
    let mut f = std::fs::OpenOptions::new().write(true).open(volumes.join(format!("{root}.raw"))).expect("root file");
    f.seek(SeekFrom::Start(TOKEN_AT)).expect("seek");
    f.write_all(TOKEN).expect("write token");
    f.sync_all().expect("sync");
    drop(f);

    // createBackup: Nova's refusal of a volume-backed server.
    let out = cli.output(&["server", "backup", "create", "--name", "bk", "vb1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Backup is not supported for volume-backed instances."), "{err}");

    // The snapshot: an image without data mapping a snapshot of the root volume.
    let img = cli.json(&["server", "image", "create", "--wait", "--name", "snap1", "vb1"]);
    assert_eq!(img["name"], "snap1", "{img}");
    let shown = cli.json(&["image", "show", "snap1"]);
    assert_eq!((shown["status"].as_str(), shown["size"].as_i64()), (Some("active"), Some(0)), "{shown}");
    assert_eq!(shown["disk_format"], "raw", "{shown}");
    let props = &shown["properties"];
    assert_eq!((props["bdm_v2"].as_str(), props["root_device_name"].as_str()), (Some("True"), Some("/dev/vda")));
    let mapping: Value =
        serde_json::from_str(props["block_device_mapping"].as_str().expect("block_device_mapping")).expect("json");
    let m = &mapping[0];
    assert_eq!((m["source_type"].as_str(), m["destination_type"].as_str()), (Some("snapshot"), Some("volume")));
    assert_eq!((m["boot_index"].as_i64(), m["volume_size"].as_i64()), (Some(0), Some(1)), "{m}");
    assert_eq!(m["device_name"], "/dev/vda", "{m}");
    let snap_id = m["snapshot_id"].as_str().expect("snapshot id").to_string();
    let snaps = cli.json(&["volume", "snapshot", "list", "--long"]);
    let snap = snaps
        .as_array()
        .and_then(|l| l.iter().find(|s| s["ID"] == snap_id.as_str()).cloned())
        .expect("the snapshot is listed");
    assert_eq!((snap["Name"].as_str(), snap["Status"].as_str()), (Some("snapshot for snap1"), Some("available")));
    assert_eq!(snap["Volume"], root.as_str(), "{snap}");

    // Boot from the image, both ways the CLI offers: a new root volume from the snapshot.
    for (name, args) in
        [("vb2", vec!["--boot-from-volume", "1", "--image", "snap1"]), ("vb3", vec!["--image", "snap1"])]
    {
        let mut cmd = vec!["server", "create", "--wait"];
        cmd.extend(args);
        cmd.extend(["--flavor", "m1.nano", "--network", "net", name]);
        let vm = cli.json(&cmd);
        assert_eq!(vm["status"], "ACTIVE", "{name}: {vm}");
        let copy = root_volume(&cli, name);
        assert_ne!(copy, root);
        let v = cli.wait_volume(&copy, "in-use");
        assert_eq!(v["snapshot_id"], snap_id.as_str(), "{name}: {v}");
        assert!(v["attachments"].to_string().contains("/dev/vda"), "{name}: {v}");
        assert_eq!(read_token(&volumes.join(format!("{copy}.raw"))), TOKEN, "{name}: the snapshot's bytes");
    }
    let vb3 = cli.json(&["server", "show", "vb3"]);
    assert!(vb3["image"].to_string().contains("snap1"), "{vb3}");

    // Deleting the image leaves the snapshot.
    cli.run(&["image", "delete", "snap1"]);
    let snaps = cli.json(&["volume", "snapshot", "list"]);
    assert!(snaps.to_string().contains(&snap_id), "{snaps}");
    for name in ["vb1", "vb2", "vb3"] {
        cli.run(&["server", "delete", "--wait", name]);
    }
}
