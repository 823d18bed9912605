//! The unmodified `openstack` CLI on block storage: volumes made by a real agent
//! (`test:///default`, files in its state dir), types, attach/detach through Nova, quotas and
//! limits.

use meridian_e2e::{Agent, Cli, Server, prepare_cloud};
use serde_json::Value;

fn wait_volume(cli: &Cli, name: &str, want: &str) -> Value {
    for _ in 0..240 {
        let v = cli.json(&["volume", "show", name]);
        if v["status"] == want {
            return v;
        }
        assert!(!v["status"].as_str().unwrap_or_default().starts_with("error"), "{name}: {v}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("{name} never reached {want}");
}

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
    let v1 = wait_volume(&cli, "v1", "available");
    let id = v1["id"].as_str().expect("id").to_string();
    let file = agent.state_dir.join("volumes").join(format!("{id}.raw"));
    assert_eq!(std::fs::metadata(&file).expect("the agent made the volume").len(), 1 << 30);
    cli.json(&["volume", "create", "--size", "2", "--type", "gold", "v2"]);
    wait_volume(&cli, "v2", "available");
    let listed = cli.json(&["volume", "list"]);
    assert_eq!(listed.as_array().expect("list").len(), 2, "{listed}");

    cli.run(&["volume", "set", "--name", "data", "--description", "kept", "--property", "k=v", "v1"]);
    let shown = cli.json(&["volume", "show", "data"]);
    assert_eq!((shown["description"].as_str(), shown["type"].as_str()), (Some("kept"), Some("__DEFAULT__")), "{shown}");
    assert!(shown["properties"].to_string().contains("k"), "{shown}");
    cli.run(&["volume", "set", "--size", "3", "data"]);
    let shown = wait_volume(&cli, "data", "available");
    assert_eq!(shown["size"], 3, "{shown}");
    assert_eq!(std::fs::metadata(&file).expect("volume").len(), 3 << 30);

    let vm =
        cli.json(&["server", "create", "--wait", "--image", "tiny", "--flavor", "m1.nano", "--network", "net", "vm"]);
    assert_eq!(vm["status"], "ACTIVE", "{vm}");
    cli.run(&["server", "add", "volume", "vm", "data"]);
    let attached = wait_volume(&cli, "data", "in-use");
    assert!(attached["attachments"].to_string().contains(vm["id"].as_str().expect("id")), "{attached}");
    let server = cli.json(&["server", "show", "vm"]);
    assert!(server["volumes_attached"].to_string().contains(&id), "{server}");
    // Extend while attached (Cinder 3.42) and the attachments API (3.27), as the CLI asks them.
    cli.run(&["--os-volume-api-version", "3.42", "volume", "set", "--size", "4", "data"]);
    let grown = wait_volume(&cli, "data", "in-use");
    assert_eq!(grown["size"], 4, "{grown}");
    assert_eq!(std::fs::metadata(&file).expect("volume").len(), 4 << 30);
    let atts = cli.json(&["--os-volume-api-version", "3.27", "volume", "attachment", "list"]);
    assert!(atts.to_string().contains(vm["id"].as_str().expect("id")), "{atts}");
    // In use: the CLI's delete fails and the bytes stay.
    let out = cli.output(&["volume", "delete", "data"]);
    assert!(!out.status.success(), "an in-use volume was deleted");
    assert!(file.exists());
    cli.run(&["server", "remove", "volume", "vm", "data"]);
    wait_volume(&cli, "data", "available");

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
