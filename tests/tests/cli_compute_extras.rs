//! The unmodified `openstack` CLI on slice F's compute API against a real agent (libvirt
//! `test:///default`): ports added and removed, a network added, usage, the default quota
//! class, diagnostics, and a flavor with ephemeral and swap disks.

use meridian_e2e::{Cli, Server, prepare_cloud, wait_hosts_up};
use serde_json::Value;

/// The server's ports as `port list --server` shows them: (id, MAC, status).
fn ports(cli: &Cli, server: &str) -> Vec<(String, String, String)> {
    let list = cli.json(&["port", "list", "--server", server]);
    let mut out: Vec<(String, String, String)> = list
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["ID"].as_str().unwrap_or_default().to_string(),
                        p["MAC Address"].as_str().unwrap_or_default().to_string(),
                        p["Status"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The server's instance actions by name, with their events' names and results.
fn action_events(cli: &Cli, server: &str, name: &str) -> Vec<(String, String)> {
    let list = cli.json(&["--os-compute-api-version", "2.51", "server", "event", "list", server]);
    let req = list
        .as_array()
        .and_then(|a| a.iter().find(|e| e["Action"] == name))
        .and_then(|e| e["Request ID"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(!req.is_empty(), "no {name} action: {list}");
    let ev = cli.json(&["--os-compute-api-version", "2.51", "server", "event", "show", server, &req]);
    ev["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["event"].as_str().unwrap_or_default().to_string(),
                        e["result"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn ports_networks_usage_quota_class_and_diagnostics_with_the_cli() {
    let server = Server::start();
    let _c1 = meridian_e2e::Agent::start(&server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let cli = server.admin_cli();
    cli.run(&["network", "create", "net2"]);
    cli.run(&["subnet", "create", "--network", "net2", "--subnet-range", "10.78.0.0/24", "sub2"]);
    let created =
        cli.json(&["server", "create", "--wait", "--image", "tiny", "--flavor", "m1.nano", "--network", "net", "vm1"]);
    assert_eq!(created["status"], "ACTIVE", "{created}");
    let first = ports(&cli, "vm1");
    assert_eq!(first.len(), 1);
    let boot_port = first[0].0.clone();

    // A free port: added (bound, ACTIVE, listed under the server), then removed (free again).
    let port = cli.json(&["port", "create", "--network", "net2", "extra"]);
    let port_id = port["id"].as_str().expect("port id").to_string();
    let mac = port["mac_address"].as_str().expect("mac").to_string();
    cli.run(&["server", "add", "port", "vm1", "extra"]);
    let now = ports(&cli, "vm1");
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains(&(port_id.clone(), mac.clone(), "ACTIVE".into())), "{now:?}");
    let p = cli.json(&["port", "show", "extra"]);
    assert_eq!(p["device_id"], created["id"], "{p}");
    assert_eq!(p["device_owner"], "compute:nova", "{p}");
    assert_eq!(p["binding_host_id"], "c1", "{p}");
    let s = cli.json(&["server", "show", "vm1"]);
    assert!(s["addresses"].to_string().contains("net2"), "{s}");
    assert_eq!(
        action_events(&cli, "vm1", "attach_interface"),
        vec![("compute_attach_interface".to_string(), "Success".to_string())]
    );
    // A port in use cannot be added again (Nova's 409).
    let out = cli.output(&["server", "add", "port", "vm1", "extra"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is still in use") && err.contains("409"), "{err}");

    cli.run(&["server", "remove", "port", "vm1", "extra"]);
    for _ in 0..120 {
        if ports(&cli, "vm1").len() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(ports(&cli, "vm1").len(), 1);
    let p = cli.json(&["port", "show", "extra"]);
    assert_eq!((p["device_id"].clone(), p["status"].clone()), (Value::from(""), Value::from("DOWN")), "{p}");
    assert_eq!(
        action_events(&cli, "vm1", "detach_interface"),
        vec![("compute_detach_interface".to_string(), "Success".to_string())]
    );

    // A network: Nova makes the port, and deletes it when the interface goes.
    cli.run(&["server", "add", "network", "vm1", "net2"]);
    let now = ports(&cli, "vm1");
    assert_eq!(now.len(), 2, "{now:?}");
    let made = now.iter().find(|(id, ..)| *id != boot_port).map(|p| p.0.clone()).expect("made port");
    let made_port = cli.json(&["port", "show", &made]);
    assert!(made_port["fixed_ips"].to_string().contains("10.78.0."), "{made_port}");
    cli.run(&["server", "remove", "network", "vm1", "net2"]);
    for _ in 0..120 {
        if ports(&cli, "vm1").len() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let out = cli.output(&["port", "show", &made]);
    assert!(!out.status.success(), "the port Nova made is deleted with the interface");

    // Diagnostics (admin): openstacksdk reads the 2.48 body.
    let d = cli.json(&["server", "show", "--diagnostics", "vm1"]);
    assert_eq!(
        (d["driver"].clone(), d["state"].clone(), d["num_nics"].clone(), d["num_disks"].clone()),
        ("libvirt".into(), "running".into(), 1.into(), 1.into()),
        "{d}"
    );
    assert_eq!(d["nic_details"][0]["mac_address"], first[0].1.as_str(), "{d}");

    // Usage: the admin project's server shows up, with instance-hours.
    let usage = cli.json(&["usage", "list"]);
    assert_eq!(usage.as_array().map(Vec::len), Some(1), "{usage}");
    let show = cli.json(&["usage", "show", "--project", "admin"]);
    assert_eq!(show["Servers"].as_array().map(Vec::len), Some(1), "{show}");
    assert_eq!(show["Servers"][0]["name"], "vm1", "{show}");
    assert!(show["CPU Hours"].as_f64().is_some_and(|h| h > 0.0), "{show}");

    // The default quota class, changed and read back.
    cli.run(&["quota", "set", "--class", "--instances", "17", "default"]);
    // This openstackclient has no `quota show --class`; the class is what `--default` shows.
    let q = cli.json(&["quota", "show", "--default", "--compute"]);
    let instances = q.as_array().and_then(|a| a.iter().find(|r| r["Resource"] == "instances")).cloned();
    assert_eq!(instances.map(|r| r["Limit"].clone()), Some(17.into()), "{q}");

    // A flavor with ephemeral and swap disks.
    let f =
        cli.json(&["flavor", "create", "--ram", "256", "--disk", "1", "--ephemeral", "1", "--swap", "256", "m1.eph"]);
    assert_eq!((f["OS-FLV-EXT-DATA:ephemeral"].clone(), f["swap"].clone()), (1.into(), 256.into()), "{f}");

    cli.run(&["server", "delete", "--wait", "vm1"]);
}
