//! The unmodified `openstack` CLI on a server's own block devices, with a real agent (libvirt
//! `test:///default`): `--ephemeral`/`--swap` mappings made as disks beside the root disk, a
//! blank volume of `--block-device` made and attached (and deleted with the server), and a
//! volume attached to a shelved-offloaded server that the unshelve plugs in.

use std::path::Path;

use meridian_e2e::{Agent, Cli, Server, prepare_cloud, wait_for, wait_hosts_up};
use serde_json::Value;

const V: &str = "2.79";

fn show(cli: &Cli, name: &str) -> Value {
    cli.json(&["--os-compute-api-version", V, "server", "show", name])
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len()
}

#[tokio::test]
async fn ephemeral_swap_blank_volume_and_shelved_attach_with_the_cli() {
    let server = Server::start();
    let agent = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let cli = server.admin_cli();
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
        "2",
        "--swap",
        "1024",
        "m1.loc",
    ]);

    // The server's own local disks (1 GiB ext4, 512 MiB swap: within the flavor's) and a blank
    // 1 GiB volume that goes with it.
    let created = cli.json(&[
        "server",
        "create",
        "--wait",
        "--image",
        "tiny",
        "--flavor",
        "m1.loc",
        "--network",
        "net",
        "--ephemeral",
        "size=1,format=ext4",
        "--swap",
        "512",
        "--block-device",
        "source_type=blank,destination_type=volume,volume_size=1,delete_on_termination=true",
        "loc1",
    ]);
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let dir = agent.state_dir.join("instances").join(&id);
    assert_eq!(file_len(&dir.join("disk.eph0")), 1 << 30, "the mapping's size, not the flavor's 2 GiB");
    assert_eq!(file_len(&dir.join("disk.swap")), 512 << 20);
    let s = show(&cli, "loc1");
    let attached = s["volumes_attached"].as_array().cloned().unwrap_or_default();
    assert_eq!(attached.len(), 1, "{s}");
    assert_eq!(attached[0]["delete_on_termination"], true, "{s}");
    let blank = attached[0]["id"].as_str().expect("volume").to_string();
    let v = cli.json(&["volume", "show", &blank]);
    assert_eq!((v["status"].as_str(), v["size"].as_i64()), (Some("in-use"), Some(1)), "{v}");
    // Root vda, ephemeral vdb, swap vdc: the volume comes after them.
    assert_eq!(v["attachments"][0]["device"], "/dev/vdd", "{v}");

    // Larger than the flavor allows: Nova's refusal.
    let out = cli.output(&[
        "server",
        "create",
        "--image",
        "tiny",
        "--flavor",
        "m1.loc",
        "--network",
        "net",
        "--swap",
        "2048",
        "loc2",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Swap drive requested is larger than instance type allows."), "{err}");

    cli.run(&["server", "delete", "--wait", "loc1"]);
    wait_for("the blank volume deleted with its server", || {
        !cli.json(&["volume", "list"]).to_string().contains(&blank)
    });

    // A volume attached while the server is shelved and offloaded, plugged in by the unshelve.
    let vm =
        cli.json(&["server", "create", "--wait", "--image", "tiny", "--flavor", "m1.nano", "--network", "net", "sh1"]);
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    cli.json(&["volume", "create", "--size", "1", "data"]);
    cli.wait_volume("data", "available");
    cli.run(&["server", "shelve", "sh1"]);
    wait_for("sh1 offloaded", || show(&cli, "sh1")["status"] == "SHELVED_OFFLOADED");
    cli.run(&["--os-compute-api-version", V, "server", "add", "volume", "sh1", "data"]);
    let v = cli.json(&["volume", "show", "data"]);
    assert_eq!(v["status"], "in-use", "at once, with no host: {v}");
    cli.run(&["server", "unshelve", "--wait", "sh1"]);
    let s = show(&cli, "sh1");
    assert_eq!((s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str()), (Some("ACTIVE"), Some("c1")), "{s}");
    let data = cli.json(&["volume", "show", "data"]);
    assert_eq!(data["status"], "in-use", "{data}");
    assert_eq!(data["attachments"][0]["device"], "/dev/vdb", "plugged in after the root disk: {data}");
    assert!(s["volumes_attached"].to_string().contains(data["id"].as_str().expect("id")), "{s}");
    cli.run(&["server", "delete", "--wait", "sh1"]);
}
