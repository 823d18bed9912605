//! Two projects, a member of each, every resource type: neither sees nor touches the other's.

use meridian_common::{Client, ClientError};
use meridian_e2e::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn member_of(server: &Server, admin: &Client, user: &str, project: &str) -> Client {
    let p = admin.post("identity", "/v3/projects", &json!({"project": {"name": project}})).await.expect("project");
    let pid = p["project"]["id"].as_str().expect("pid").to_string();
    let u =
        admin.post("identity", "/v3/users", &json!({"user": {"name": user, "password": "pw"}})).await.expect("user");
    let uid = u["user"]["id"].as_str().expect("uid").to_string();
    let roles = admin.get("identity", "/v3/roles?name=member").await.expect("roles");
    let rid = roles["roles"][0]["id"].as_str().expect("rid").to_string();
    admin.put("identity", &format!("/v3/projects/{pid}/users/{uid}/roles/{rid}"), &Value::Null).await.expect("grant");
    Client::login(&server.creds(user, "pw", project)).await.expect("login")
}

fn status(r: Result<Value, ClientError>) -> Option<StatusCode> {
    r.err().and_then(|e| e.status())
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key].as_array().into_iter().flatten().filter_map(|x| x["id"].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn projects_are_isolated() {
    let server = Server::start();
    let admin = server.admin().await;
    let a = member_of(&server, &admin, "ann", "proj-a").await;
    let b = member_of(&server, &admin, "ben", "proj-b").await;
    let pa = a.session.project_id().expect("pid").to_string();

    // Key pairs.
    a.post("compute", "/os-keypairs", &json!({"keypair": {"name": "ka"}})).await.expect("keypair");
    let listed = b.get("compute", "/os-keypairs").await.expect("list");
    assert_eq!(listed["keypairs"], json!([]));
    assert_eq!(status(b.get("compute", "/os-keypairs/ka").await), Some(StatusCode::NOT_FOUND));
    assert_eq!(status(b.delete("compute", "/os-keypairs/ka").await), Some(StatusCode::NOT_FOUND));

    // Quotas of the other project.
    assert_eq!(status(b.get("compute", &format!("/os-quota-sets/{pa}")).await), Some(StatusCode::FORBIDDEN));
    assert_eq!(
        status(b.put("compute", &format!("/os-quota-sets/{pa}"), &json!({"quota_set": {"instances": 1}})).await),
        Some(StatusCode::FORBIDDEN)
    );

    // Images: private to A.
    let img = a
        .post(
            "image",
            "/v2/images",
            &json!({"name": "img-a", "disk_format": "raw", "container_format": "bare", "visibility": "private"}),
        )
        .await
        .expect("image");
    let iid = img["id"].as_str().expect("id").to_string();
    assert!(!ids(&b.get("image", "/v2/images").await.expect("list"), "images").contains(&iid));
    assert_eq!(status(b.get("image", &format!("/v2/images/{iid}")).await), Some(StatusCode::NOT_FOUND));
    assert_eq!(status(b.delete("image", &format!("/v2/images/{iid}")).await), Some(StatusCode::NOT_FOUND));
    let patch = json!([{"op": "replace", "path": "/name", "value": "stolen"}]);
    assert_eq!(
        status(b.send(reqwest::Method::PATCH, "image", &format!("/v2/images/{iid}"), Some(&patch)).await),
        Some(StatusCode::NOT_FOUND)
    );

    // Networks, subnets, ports.
    let net = a.post("network", "/v2.0/networks", &json!({"network": {"name": "net-a"}})).await.expect("network");
    let nid = net["network"]["id"].as_str().expect("id").to_string();
    let sub = a
        .post(
            "network",
            "/v2.0/subnets",
            &json!({"subnet": {"network_id": nid, "cidr": "10.1.0.0/24", "ip_version": 4}}),
        )
        .await
        .expect("subnet");
    let sid = sub["subnet"]["id"].as_str().expect("id").to_string();
    let port = a.post("network", "/v2.0/ports", &json!({"port": {"network_id": nid}})).await.expect("port");
    let portid = port["port"]["id"].as_str().expect("id").to_string();
    assert!(!ids(&b.get("network", "/v2.0/networks").await.expect("list"), "networks").contains(&nid));
    assert!(!ids(&b.get("network", "/v2.0/subnets").await.expect("list"), "subnets").contains(&sid));
    assert!(!ids(&b.get("network", "/v2.0/ports").await.expect("list"), "ports").contains(&portid));
    for path in [format!("/v2.0/networks/{nid}"), format!("/v2.0/subnets/{sid}"), format!("/v2.0/ports/{portid}")] {
        assert_eq!(status(b.get("network", &path).await), Some(StatusCode::NOT_FOUND), "GET {path}");
        assert_eq!(status(b.delete("network", &path).await), Some(StatusCode::NOT_FOUND), "DELETE {path}");
    }
    assert_eq!(
        status(b.put("network", &format!("/v2.0/networks/{nid}"), &json!({"network": {"name": "stolen"}})).await),
        Some(StatusCode::NOT_FOUND)
    );
    // B cannot attach a port to A's private network.
    assert_eq!(
        status(b.post("network", "/v2.0/ports", &json!({"port": {"network_id": nid}})).await),
        Some(StatusCode::NOT_FOUND)
    );

    // The admin sees everything; A's resources are untouched.
    let all = admin.get("network", "/v2.0/networks").await.expect("admin list");
    assert!(ids(&all, "networks").contains(&nid));
    let mine = a.get("image", &format!("/v2/images/{iid}")).await.expect("own image");
    assert_eq!(mine["name"], "img-a");
    let kp = a.get("compute", "/os-keypairs/ka").await.expect("own keypair");
    assert_eq!(kp["keypair"]["name"], "ka");
}
