//! openstacksdk (the library under Ansible's openstack.cloud collection and many tools) against
//! the real server and an agent: its cloud layer creates a server with its defaults and waits
//! for it, a subnet CIDR with host bits is stored normalised, a requested config drive and admin
//! password are honoured, responses carry request ids (tests/sdk/cloud_layer.py).

use std::process::Command;

use meridian_e2e::{ADMIN_PASSWORD, Agent, Server, openstack_bin, prepare_cloud, wait_hosts_up};
use serde_json::Value;

#[tokio::test]
async fn cloud_layer_create_server_waits_for_active_and_deletes() {
    let server = Server::start();
    let _agent = Agent::start(&server, "compute-1");
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let cloud = prepare_cloud(&admin).await;

    let python = openstack_bin().with_file_name("python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/cloud_layer.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([&server.auth_url(), ADMIN_PASSWORD, &cloud.image_id, &cloud.network_id])
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cloud_layer.py failed ({}):\n{stdout}\n{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("script output");
    assert_eq!(seen["subnet_cidr"], "10.99.0.0/16", "{seen}");
    assert_eq!(seen["status"], "ACTIVE", "{seen}");
    assert_eq!(seen["admin_password"], "Sdk-Pass-123", "the caller's adminPass is used and echoed: {seen}");
    assert_eq!(seen["config_drive"], "True", "a requested config drive is reported as Nova does: {seen}");
    assert_eq!(seen["request_id_header"], true, "{seen}");
    assert_eq!(seen["deleted"], true, "{seen}");
}
