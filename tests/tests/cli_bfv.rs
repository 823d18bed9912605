//! The unmodified `openstack` CLI on volumes made from images and servers booted from volumes,
//! against a real agent (`test:///default`: volumes are real files in its state dir, the image
//! really converted into them).

use meridian_e2e::{Agent, Cli, Server, prepare_cloud};

fn volume_gone(cli: &Cli, id: &str) -> bool {
    for _ in 0..240 {
        let list = cli.json(&["volume", "list"]);
        if !list.to_string().contains(id) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    false
}

/// The root volume of a server (its only attached volume).
fn root_volume(cli: &Cli, server: &str) -> String {
    let s = cli.json(&["server", "show", server]);
    let attached = s["volumes_attached"].as_array().cloned().unwrap_or_default();
    assert_eq!(attached.len(), 1, "{s}");
    attached[0]["id"].as_str().expect("volume id").to_string()
}

#[tokio::test]
async fn volumes_from_images_and_boot_from_volume_with_the_cli() {
    let server = Server::start();
    let agent = Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    let cli = server.admin_cli();
    let pattern: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();

    // A volume from an image: the image's bytes at its start, bootable, the image remembered.
    cli.json(&["volume", "create", "--image", "tiny", "--size", "2", "fromimg"]);
    let v = cli.wait_volume("fromimg", "available");
    assert_eq!(v["bootable"], true, "{v}");
    assert!(v["volume_image_metadata"].to_string().contains("tiny"), "{v}");
    let id = v["id"].as_str().expect("id").to_string();
    let file = agent.state_dir.join("volumes").join(format!("{id}.raw"));
    let bytes = std::fs::read(&file).expect("the agent made the volume");
    assert_eq!(bytes.len(), 2 << 30);
    assert!(bytes[..pattern.len()] == pattern[..], "the image is not in the volume");
    assert!(bytes[pattern.len()..].iter().all(|b| *b == 0));
    drop(bytes);
    cli.run(&["volume", "set", "--image-property", "os_distro=cirros", "fromimg"]);
    let v = cli.json(&["volume", "show", "fromimg"]);
    assert!(v["volume_image_metadata"].to_string().contains("cirros"), "{v}");
    cli.run(&["volume", "unset", "--image-property", "os_distro", "fromimg"]);
    let v = cli.json(&["volume", "show", "fromimg"]);
    assert!(!v["volume_image_metadata"].to_string().contains("cirros"), "{v}");

    // Boot from a new volume made from the image; the volume outlives the server.
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
        "bfv1",
    ]);
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    let shown = cli.json(&["server", "show", "bfv1"]);
    assert_eq!(shown["image"], "N/A (booted from volume)", "{shown}");
    let root = root_volume(&cli, "bfv1");
    let rv = cli.wait_volume(&root, "in-use");
    assert_eq!(rv["bootable"], true, "{rv}");
    assert!(rv["attachments"].to_string().contains("/dev/vda"), "{rv}");
    let root_file = agent.state_dir.join("volumes").join(format!("{root}.raw"));
    let head = std::fs::read(&root_file).expect("root volume");
    assert!(head[..pattern.len()] == pattern[..], "the image is not in the root volume");
    drop(head);
    let listed = cli.json(&["server", "volume", "list", "bfv1"]);
    assert!(listed.to_string().contains(&root), "{listed}");
    cli.run(&["server", "delete", "--wait", "bfv1"]);
    cli.wait_volume(&root, "available");
    assert!(root_file.exists());

    // The kept volume boots a new server (`--volume`), and outlives it too.
    let vm2 =
        cli.json(&["server", "create", "--wait", "--volume", &root, "--flavor", "m1.nano", "--network", "net", "bfv2"]);
    assert_eq!(vm2["status"], "ACTIVE", "{vm2}");
    assert_eq!(root_volume(&cli, "bfv2"), root);
    cli.run(&["server", "delete", "--wait", "bfv2"]);
    cli.wait_volume(&root, "available");

    // The `--block-device` form, and delete_on_termination: the volume goes with the server.
    let bd = format!("source_type=volume,uuid={id},boot_index=0,delete_on_termination=true");
    let vm3 = cli.json(&[
        "server",
        "create",
        "--wait",
        "--block-device",
        &bd,
        "--flavor",
        "m1.nano",
        "--network",
        "net",
        "bfv3",
    ]);
    assert_eq!(vm3["status"], "ACTIVE", "{vm3}");
    cli.wait_volume("fromimg", "in-use");
    cli.run(&["server", "delete", "--wait", "bfv3"]);
    assert!(volume_gone(&cli, &id), "the delete_on_termination volume stayed");
    assert!(!file.exists(), "its file stayed");
    // The first root volume is still there.
    cli.wait_volume(&root, "available");
}
