//! Everything created survives `kill -9` of the server and a restart, on SQLite and PostgreSQL;
//! SIGTERM shuts down cleanly; later starts never overwrite bootstrap data.

use meridian_common::Client;
use meridian_e2e::{PgDatabase, Server};
use serde_json::{Value, json};

/// Creates one of everything; returns what to look for afterwards.
async fn populate(server: &Server) -> (Client, Value) {
    let admin = server.admin().await;
    let p = admin.post("identity", "/v3/projects", &json!({"project": {"name": "durable"}})).await.expect("project");
    let pid = p["project"]["id"].as_str().expect("pid").to_string();
    let u = admin
        .post("identity", "/v3/users", &json!({"user": {"name": "dora", "password": "dorapw"}}))
        .await
        .expect("user");
    let uid = u["user"]["id"].as_str().expect("uid").to_string();
    let roles = admin.get("identity", "/v3/roles?name=member").await.expect("roles");
    let rid = roles["roles"][0]["id"].as_str().expect("rid").to_string();
    admin.put("identity", &format!("/v3/projects/{pid}/users/{uid}/roles/{rid}"), &Value::Null).await.expect("grant");
    admin
        .post(
            "compute",
            "/flavors",
            &json!({"flavor": {"name": "durable.flavor", "ram": 64, "vcpus": 1, "disk": 0, "id": "durable"}}),
        )
        .await
        .expect("flavor");
    admin
        .put("compute", &format!("/os-quota-sets/{pid}"), &json!({"quota_set": {"instances": 7}}))
        .await
        .expect("quota");
    let dora = Client::login(&server.creds("dora", "dorapw", "durable")).await.expect("dora login");
    dora.post("compute", "/os-keypairs", &json!({"keypair": {"name": "dkey"}})).await.expect("keypair");
    (dora, json!({"project": pid, "user": uid}))
}

async fn verify(server: &Server, dora: &Client, ids: &Value) {
    // The token issued before the crash still works.
    let kp = dora.get("compute", "/os-keypairs/dkey").await.expect("keypair after restart");
    assert_eq!(kp["keypair"]["name"], "dkey");
    let admin = server.admin().await;
    let p = admin
        .get("identity", &format!("/v3/projects/{}", ids["project"].as_str().expect("pid")))
        .await
        .expect("project");
    assert_eq!(p["project"]["name"], "durable");
    let f = admin.get("compute", "/flavors/durable").await.expect("flavor");
    assert_eq!(f["flavor"]["ram"], 64);
    let q = admin
        .get("compute", &format!("/os-quota-sets/{}", ids["project"].as_str().expect("pid")))
        .await
        .expect("quota");
    assert_eq!(q["quota_set"]["instances"], 7);
    // A fresh login with the stored password hash works.
    Client::login(&server.creds("dora", "dorapw", "durable")).await.expect("login after restart");
}

async fn crash_and_restart(mut server: Server) {
    let (dora, ids) = populate(&server).await;
    server.kill9();
    server.restart();
    verify(&server, &dora, &ids).await;
    // Graceful stop: SIGTERM → exit status 0.
    assert!(server.terminate(), "SIGTERM did not stop the server cleanly:\n{}", server.log_text());
    // A later start keeps everything, including the admin password it was first given.
    server.restart();
    verify(&server, &dora, &ids).await;
}

#[tokio::test]
async fn survives_kill_9_on_sqlite() {
    crash_and_restart(Server::start()).await;
}

#[tokio::test]
async fn survives_kill_9_on_postgres() {
    let db = PgDatabase::create().await;
    crash_and_restart(Server::start_with(Some(db.url.clone()))).await;
}

#[tokio::test]
async fn generated_secrets_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    {
        let name = "agent-token";
        let path = server.data_dir.join(name);
        let mode = std::fs::metadata(&path).expect("secret file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    // The admin CLI works offline against the same database.
    let out = server.admin_command(&["create-project", "ops"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = server.admin_command(&["create-user", "olga", "--password", "olgapw", "--project", "ops"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Client::login(&server.creds("olga", "olgapw", "ops")).await.expect("olga can log in");
    let out = server.admin_command(&["reset-password", "olga", "--password", "newpw"]);
    assert!(out.status.success());
    assert!(Client::login(&server.creds("olga", "olgapw", "ops")).await.is_err());
    Client::login(&server.creds("olga", "newpw", "ops")).await.expect("new password works");
}
