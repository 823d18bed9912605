//! The unmodified `openstack` CLI on block storage: volumes made by a real agent
//! (`test:///default`, files in its state dir), types, attach/detach through Nova, quotas and
//! limits.

use meridian_e2e::{Agent, Cli, Server, prepare_cloud};
use serde_json::Value;

#[tokio::test]
async fn volumes_with_the_cli() {
    let server = Server::start();
    let agent = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    let cli = server.admin_cli();

    let types = cli.json(&["volume", "type", "list"]);
    assert!(types.as_array().expect("list").iter().any(|t| t["Name"] == "__DEFAULT__"), "{types}");
    let gold = cli.json(&["volume", "type", "create", "--property", "tier=1", "gold"]);
    assert_eq!(gold["name"], "gold", "{gold}");

    let created = cli.json(&["volume", "create", "--size", "1", "v1"]);
    assert_eq!(created["size"], 1, "{created}");
    let v1 = cli.wait_volume("v1", "available");
    let id = v1["id"].as_str().expect("id").to_string();
    let file = agent.state_dir.join("volumes").join(format!("{id}.raw"));
    assert_eq!(std::fs::metadata(&file).expect("the agent made the volume").len(), 1 << 30);
    cli.json(&["volume", "create", "--size", "2", "--type", "gold", "v2"]);
    cli.wait_volume("v2", "available");
    let listed = cli.json(&["volume", "list"]);
    assert_eq!(listed.as_array().expect("list").len(), 2, "{listed}");

    cli.run(&["volume", "set", "--name", "data", "--description", "kept", "--property", "k=v", "v1"]);
    let shown = cli.json(&["volume", "show", "data"]);
    assert_eq!((shown["description"].as_str(), shown["type"].as_str()), (Some("kept"), Some("__DEFAULT__")), "{shown}");
    assert!(shown["properties"].to_string().contains("k"), "{shown}");
    cli.run(&["volume", "set", "--size", "3", "data"]);
    let shown = cli.wait_volume("data", "available");
    assert_eq!(shown["size"], 3, "{shown}");
    assert_eq!(std::fs::metadata(&file).expect("volume").len(), 3 << 30);

    let vm =
        cli.json(&["server", "create", "--wait", "--image", "tiny", "--flavor", "m1.nano", "--network", "net", "vm"]);
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    cli.run(&["server", "add", "volume", "vm", "data"]);
    let attached = cli.wait_volume("data", "in-use");
    assert!(attached["attachments"].to_string().contains(vm["id"].as_str().expect("id")), "{attached}");
    let server = cli.json(&["server", "show", "vm"]);
    assert!(server["volumes_attached"].to_string().contains(&id), "{server}");
    // Extend while attached (Cinder 3.42) and the attachments API (3.27), as the CLI asks them.
    cli.run(&["--os-volume-api-version", "3.42", "volume", "set", "--size", "4", "data"]);
    let grown = cli.wait_volume("data", "in-use");
    assert_eq!(grown["size"], 4, "{grown}");
    assert_eq!(std::fs::metadata(&file).expect("volume").len(), 4 << 30);
    let atts = cli.json(&["--os-volume-api-version", "3.27", "volume", "attachment", "list"]);
    assert!(atts.to_string().contains(vm["id"].as_str().expect("id")), "{atts}");
    // In use: the CLI's delete fails and the bytes stay.
    let out = cli.output(&["volume", "delete", "data"]);
    assert!(!out.status.success(), "an in-use volume was deleted");
    assert!(file.exists());
    cli.run(&["server", "remove", "volume", "vm", "data"]);
    cli.wait_volume("data", "available");

    let quota = cli.json(&["quota", "show"]);
    assert!(quota.to_string().contains("gigabytes"), "{quota}");
    let limits = cli.json(&["limits", "show", "--absolute"]);
    let used = limits.as_array().expect("list").iter().find(|l| l["Name"] == "total_gigabytes_used").cloned();
    assert_eq!(used.map(|l| l["Value"].clone()), Some(Value::from(6)), "{limits}");

    cli.run(&["server", "delete", "--wait", "vm"]);
    cli.run(&["volume", "delete", "data", "v2"]);
    for _ in 0..240 {
        if cli.json(&["volume", "list"]).as_array().is_some_and(Vec::is_empty) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(cli.json(&["volume", "list"]).as_array().is_some_and(Vec::is_empty));
    assert!(!file.exists(), "the agent removed the volume's file");
}

/// The first `len` bytes of a file.
fn head(path: &std::path::Path, len: usize) -> Vec<u8> {
    let mut b = std::fs::read(path).expect("read");
    b.truncate(len);
    b
}

fn wait_status(cli: &Cli, args: &[&str], want: &str) -> Value {
    for _ in 0..480 {
        let v = cli.json(args);
        if v["status"] == want {
            return v;
        }
        assert!(!v["status"].as_str().unwrap_or_default().starts_with("error"), "{args:?}: {v}");
        assert_ne!(v["status"], "killed", "{args:?}: {v}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("{args:?} never reached {want}");
}

fn wait_gone(cli: &Cli, args: &[&str]) {
    for _ in 0..240 {
        if !cli.output(args).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("{args:?} still there");
}

/// Snapshots, volumes made from them and from other volumes, and volumes uploaded to images,
/// with the unmodified CLI; the bytes checked on the agent's host and in the image store.
#[tokio::test]
async fn snapshots_clones_and_uploads_with_the_cli() {
    use md5::Digest;
    use std::os::unix::fs::FileExt;
    let server = Server::start();
    let agent = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    let cli = server.admin_cli();
    let vols = agent.state_dir.join("volumes");

    cli.json(&["volume", "create", "--size", "1", "src"]);
    let src = cli.wait_volume("src", "available")["id"].as_str().expect("id").to_string();
    let src_file = vols.join(format!("{src}.raw"));
    // What a guest would have written: a pattern at the start and deep inside.
    let f = std::fs::OpenOptions::new().write(true).open(&src_file).expect("open volume");
    f.write_all_at(b"meridian volume data, first sector", 0).expect("write");
    f.write_all_at(&[0x5a; 65536], 300 << 20).expect("write");
    f.sync_all().expect("sync");
    drop(f);
    let src_bytes = std::fs::read(&src_file).expect("volume");

    // A snapshot: a copy beside the volume, listed and shown.
    cli.json(&["volume", "snapshot", "create", "--volume", "src", "--property", "why=test", "snap1"]);
    let snap = wait_status(&cli, &["volume", "snapshot", "show", "snap1"], "available");
    let snap_id = snap["id"].as_str().expect("id").to_string();
    assert_eq!((snap["volume_id"].as_str(), snap["size"].as_i64()), (Some(&*src), Some(1)), "{snap}");
    let listed = cli.json(&["volume", "snapshot", "list"]);
    assert!(listed.as_array().expect("list").iter().any(|s| s["ID"] == snap_id.as_str()), "{listed}");
    let snap_file = vols.join("snapshots").join(format!("{snap_id}.raw"));
    assert!(std::fs::read(&snap_file).expect("the snapshot's copy") == src_bytes, "the snapshot is the volume's bytes");
    // The volume moves on; the snapshot keeps what it had.
    let f = std::fs::OpenOptions::new().write(true).open(&src_file).expect("open volume");
    f.write_all_at(b"MERIDIAN", 0).expect("write");
    drop(f);
    // With a snapshot the volume cannot go.
    assert!(!cli.output(&["volume", "delete", "src"]).status.success(), "deleted with a snapshot");

    // From the snapshot (grown) and from the volume: the same bytes on the host.
    let made = cli.json(&["volume", "create", "--snapshot", "snap1", "--size", "2", "fromsnap"]);
    assert_eq!(made["snapshot_id"], snap_id.as_str(), "{made}");
    let fromsnap = cli.wait_volume("fromsnap", "available");
    assert_eq!(fromsnap["size"], 2, "{fromsnap}");
    let fromsnap_file = vols.join(format!("{}.raw", fromsnap["id"].as_str().expect("id")));
    assert_eq!(std::fs::metadata(&fromsnap_file).expect("made").len(), 2 << 30);
    assert!(head(&fromsnap_file, src_bytes.len()) == src_bytes, "the volume from the snapshot has its bytes");
    cli.json(&["volume", "create", "--source", "src", "clone"]);
    let clone = cli.wait_volume("clone", "available");
    assert_eq!(clone["source_volid"], src.as_str(), "{clone}");
    let clone_file = vols.join(format!("{}.raw", clone["id"].as_str().expect("id")));
    let now_src = std::fs::read(&src_file).expect("volume");
    assert!(std::fs::read(&clone_file).expect("clone") == now_src, "the clone has the volume's current bytes");
    assert_eq!(&now_src[..8], b"MERIDIAN");

    // Deleting the snapshot leaves the volume and what was made from it.
    cli.run(&["volume", "snapshot", "delete", "snap1"]);
    wait_gone(&cli, &["volume", "snapshot", "show", "snap1"]);
    assert!(!snap_file.exists());
    assert!(std::fs::read(&src_file).expect("volume") == now_src);
    assert!(head(&fromsnap_file, src_bytes.len()) == src_bytes);

    // Upload to an image: raw is the volume's bytes (Glance's checksum is their MD5), qcow2 a
    // conversion; the volume is available again after each.
    let md5 = hex::encode(md5::Md5::digest(&now_src));
    drop(now_src);
    cli.json(&["image", "create", "--volume", "src", "--disk-format", "raw", "from-volume"]);
    let img = wait_status(&cli, &["image", "show", "from-volume"], "active");
    assert_eq!((img["checksum"].as_str(), img["size"].as_u64()), (Some(&*md5), Some(1 << 30)), "{img}");
    assert_eq!(img["disk_format"], "raw", "{img}");
    cli.wait_volume("src", "available");
    cli.json(&["image", "create", "--volume", "clone", "--disk-format", "qcow2", "from-clone"]);
    let img = wait_status(&cli, &["image", "show", "from-clone"], "active");
    assert_eq!(img["disk_format"], "qcow2", "{img}");
    assert!(img["size"].as_u64().is_some_and(|s| s < 64 << 20), "a sparse volume converts small: {img}");
    cli.wait_volume("clone", "available");
    let bad = cli.output(&["image", "create", "--volume", "clone", "--disk-format", "vmdk", "nope"]);
    assert!(!bad.status.success(), "vmdk is not offered");

    cli.run(&["image", "delete", "from-volume", "from-clone"]);
    cli.run(&["volume", "delete", "src", "clone", "fromsnap"]);
    for name in ["src", "clone", "fromsnap"] {
        wait_gone(&cli, &["volume", "show", name]);
    }
    assert!(!src_file.exists() && !clone_file.exists() && !fromsnap_file.exists());
}
