//! The unmodified `openstack` CLI with security groups: groups and rules, servers created in a
//! group and moved between groups, and a port taken out of port security — on SQLite and on
//! PostgreSQL, with a server on a real agent (libvirt `test:///default`).

use meridian_e2e::{Agent, Cli, PgDatabase, Server, prepare_cloud};
use serde_json::Value;

fn names(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|x| x["Name"].as_str().map(str::to_string)).collect()
}

/// The names of the groups `server show` lists (`[{"name": …}]` in JSON output).
fn server_groups(cli: &Cli, server: &str) -> Vec<String> {
    let shown = cli.json(&["server", "show", server]);
    let mut out: Vec<String> = shown["security_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

async fn security_groups_end_to_end(server: &Server) {
    let _agent = Agent::start(server, "c1");
    let admin = server.admin().await;
    prepare_cloud(&admin).await;
    let cli = server.admin_cli();

    let web = cli.json(&["security", "group", "create", "--description", "web tier", "web"]);
    assert_eq!(web["name"], "web", "{web}");
    assert_eq!(web["description"], "web tier");
    let listed = names(&cli.json(&["security", "group", "list"]));
    assert!(listed.contains(&"web".to_string()) && listed.contains(&"default".to_string()), "{listed:?}");
    let shown = cli.json(&["security", "group", "show", "web"]);
    assert_eq!(shown["id"], web["id"]);

    let ssh = cli.json(&[
        "security",
        "group",
        "rule",
        "create",
        "--protocol",
        "tcp",
        "--dst-port",
        "22",
        "--remote-ip",
        "10.0.0.0/8",
        "web",
    ]);
    assert_eq!(ssh["port_range_min"], 22, "{ssh}");
    assert_eq!(ssh["remote_ip_prefix"], "10.0.0.0/8");
    let again = cli.output(&[
        "security",
        "group",
        "rule",
        "create",
        "--protocol",
        "tcp",
        "--dst-port",
        "22",
        "--remote-ip",
        "10.0.0.0/8",
        "web",
    ]);
    assert!(!again.status.success(), "a duplicate rule is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("Security group rule already exists"));
    let rules = cli.json(&["security", "group", "rule", "list", "web"]);
    let ssh_id = ssh["id"].as_str().expect("rule id");
    assert!(rules.to_string().contains(ssh_id), "{rules}");
    assert_eq!(rules.as_array().map(Vec::len), Some(3), "two egress rules and ours: {rules}");
    cli.run(&["security", "group", "rule", "delete", ssh_id]);
    assert!(!cli.json(&["security", "group", "rule", "list", "web"]).to_string().contains(ssh_id));

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
        "--security-group",
        "web",
        "sg-vm",
    ]);
    assert_eq!(created["status"], "ACTIVE", "{created}");
    assert_eq!(server_groups(&cli, "sg-vm"), vec!["web"]);
    let ports = cli.json(&["port", "list", "--server", "sg-vm"]);
    let port = ports[0]["ID"].as_str().expect("port").to_string();
    let p = cli.json(&["port", "show", &port]);
    assert_eq!(p["security_group_ids"], serde_json::json!([web["id"]]), "{p}");
    let busy = cli.output(&["security", "group", "delete", "web"]);
    assert!(!busy.status.success(), "a group in use stays");

    cli.run(&["server", "add", "security", "group", "sg-vm", "default"]);
    assert_eq!(server_groups(&cli, "sg-vm"), vec!["default", "web"]);
    cli.run(&["server", "remove", "security", "group", "sg-vm", "web"]);
    assert_eq!(server_groups(&cli, "sg-vm"), vec!["default"]);
    cli.run(&["security", "group", "delete", "web"]);
    assert!(!names(&cli.json(&["security", "group", "list"])).contains(&"web".to_string()));

    cli.run(&["port", "set", "--no-security-group", "--disable-port-security", &port]);
    let p = cli.json(&["port", "show", &port]);
    assert_eq!(p["port_security_enabled"], false, "{p}");
    assert_eq!(p["security_group_ids"], serde_json::json!([]), "{p}");
    assert!(server_groups(&cli, "sg-vm").is_empty());

    cli.run(&["server", "delete", "--wait", "sg-vm"]);
}

#[tokio::test]
async fn security_groups_with_the_cli() {
    let server = Server::start();
    security_groups_end_to_end(&server).await;
}

#[tokio::test]
async fn security_groups_with_the_cli_on_postgresql() {
    let db = PgDatabase::create().await;
    let server = Server::start_with(Some(db.url.clone()));
    security_groups_end_to_end(&server).await;
}
