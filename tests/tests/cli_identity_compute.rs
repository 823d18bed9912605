//! The unmodified `openstack` CLI against a real server: identity, catalog and compute metadata.

use meridian_e2e::Server;

#[test]
fn token_catalog_and_projects() {
    let server = Server::start();
    let cli = server.admin_cli();
    let token = cli.json(&["token", "issue"]);
    assert!(token["id"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(token["project_id"].as_str().is_some());

    let catalog = cli.json(&["catalog", "list"]);
    let mut types: Vec<&str> = catalog.as_array().expect("list").iter().filter_map(|s| s["Type"].as_str()).collect();
    types.sort();
    assert_eq!(types, ["block-storage", "compute", "identity", "image", "network", "volumev3"]);

    cli.run(&["project", "create", "demo", "--description", "Demo project"]);
    cli.run(&["user", "create", "alice", "--password", "alicepw", "--project", "demo"]);
    cli.run(&["role", "add", "--user", "alice", "--project", "demo", "member"]);
    let projects = cli.json(&["project", "list"]);
    let mut names: Vec<&str> = projects.as_array().expect("list").iter().filter_map(|p| p["Name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["admin", "demo"]);
    let assignments = cli.json(&["role", "assignment", "list", "--user", "alice", "--names"]);
    assert_eq!(assignments[0]["Role"], "member");

    // Alice logs in with her new password and sees only her project.
    let alice = server.cli("alice", "alicepw", "demo");
    let mine = alice.json(&["project", "list", "--my-projects"]);
    assert_eq!(mine.as_array().expect("list").len(), 1);
    let denied = alice.output(&["user", "list"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403"), "{}", String::from_utf8_lossy(&denied.stderr));

    // Revoking Alice's token makes it unusable.
    let t = alice.json(&["token", "issue"]);
    let id = t["id"].as_str().expect("id");
    cli.run(&["token", "revoke", id]);
}

#[test]
fn flavors_keypairs_quotas_limits() {
    let server = Server::start();
    let cli = server.admin_cli();
    let flavors = cli.json(&["flavor", "list"]);
    let names: Vec<&str> = flavors.as_array().expect("list").iter().filter_map(|f| f["Name"].as_str()).collect();
    for want in ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"] {
        assert!(names.contains(&want), "{names:?}");
    }
    let tiny = cli.json(&["flavor", "show", "m1.tiny"]);
    assert_eq!(tiny["ram"], 512);
    assert_eq!(tiny["disk"], 1);
    assert_eq!(tiny["vcpus"], 1);

    let created = cli.json(&[
        "flavor",
        "create",
        "--ram",
        "1024",
        "--disk",
        "5",
        "--vcpus",
        "2",
        "--property",
        "hw:cpu_policy=shared",
        "e2e.flavor",
    ]);
    assert_eq!(created["ram"], 1024);
    let shown = cli.json(&["flavor", "show", "e2e.flavor"]);
    assert_eq!(shown["vcpus"], 2);
    assert!(shown["properties"].to_string().contains("hw:cpu_policy"), "{shown}");
    cli.run(&["flavor", "delete", "e2e.flavor"]);
    assert!(!cli.output(&["flavor", "show", "e2e.flavor"]).status.success());

    // Without --public-key the server generates the pair and the CLI prints the private key.
    let private = cli.run(&["keypair", "create", "k1"]);
    assert!(private.contains("BEGIN OPENSSH PRIVATE KEY"), "{private}");
    let listed = cli.json(&["keypair", "list"]);
    assert_eq!(listed[0]["Name"], "k1");
    let pubfile = server.data_dir.join("k.pub");
    let public = cli.run(&["keypair", "show", "--public-key", "k1"]);
    std::fs::write(&pubfile, public.trim()).expect("write key");
    let imported = cli.json(&["keypair", "create", "--public-key", pubfile.to_str().expect("path"), "k2"]);
    assert_eq!(imported["name"], "k2");
    assert_eq!(cli.json(&["keypair", "list"]).as_array().expect("list").len(), 2);
    cli.run(&["keypair", "delete", "k1", "k2"]);
    assert_eq!(cli.json(&["keypair", "list"]).as_array().expect("list").len(), 0);

    let quota = cli.json(&["quota", "show"]);
    let text = quota.to_string();
    assert!(text.contains("instances") || text.contains("Instances"), "{text}");
    let limits = cli.json(&["limits", "show", "--absolute"]);
    let max_instances = limits
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["Name"] == "max_total_instances")
        .map(|r| r["Value"].clone());
    assert_eq!(max_instances, Some(serde_json::json!(10)), "{limits}");
}

/// Our client (as the TUI uses it) logs in with an application credential, by id and by name,
/// against the real server; the token is the credential's project with its roles.
#[tokio::test]
async fn login_with_an_application_credential() {
    let server = Server::start();
    let admin = server.admin().await;
    let uid = admin.session.user_id().expect("user id").to_string();
    let body = serde_json::json!({"application_credential": {"name": "dashboard", "roles": [{"name": "reader"}]}});
    let created =
        admin.post("identity", &format!("/v3/users/{uid}/application_credentials"), &body).await.expect("create");
    let cred = &created["application_credential"];
    let secret = cred["secret"].as_str().expect("secret").to_string();
    let by_id = meridian_common::AppCredential {
        id: cred["id"].as_str().map(str::to_string),
        name: None,
        secret: secret.clone(),
    };
    let by_name = meridian_common::AppCredential { id: None, name: Some("dashboard".into()), secret };
    for app_cred in [by_id, by_name] {
        let creds = meridian_common::Credentials { app_cred: Some(app_cred), ..server.creds("admin", "", "") };
        let client = meridian_common::Client::login(&creds).await.expect("app cred login");
        assert_eq!(client.session.project_id(), admin.session.project_id());
        assert_eq!(client.session.roles(), ["reader"]);
        client.get("compute", "/flavors").await.expect("a reader lists flavors");
    }
}
