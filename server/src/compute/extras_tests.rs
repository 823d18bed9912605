//! Slice F's compute API: quota classes, server password (API and the metadata service's POST),
//! simple tenant usage, `/ips` of an unknown network, and the lock on volume attach/detach.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::store::instances::Instance;
use crate::testing::{Reply, TestApp};

async fn at(app: &TestApp, method: Method, path: &str, token: &str, version: &str, body: Value) -> Reply {
    let (b, ct) =
        if body.is_null() { (Body::empty(), None) } else { (Body::from(body.to_string()), Some("application/json")) };
    let mut h = vec![("openstack-api-version", version)];
    h.extend(ct.map(|c| ("content-type", c)));
    app.call(method, &format!("/compute/v2.1{path}"), Some(token), &h, b).await
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

#[tokio::test]
async fn quota_class_keys_per_microversion_policy_and_defaults() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let r = at(&app, Method::GET, "/os-quota-class-sets/default", &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let set = &r.body["quota_class_set"];
    assert_eq!(set["id"], "default");
    assert_eq!(set["instances"], 10);
    assert!(set.get("server_groups").is_none() && set.get("floating_ips").is_some(), "{set}");
    let r = at(&app, Method::GET, "/os-quota-class-sets/default", &admin, "compute 2.50", Value::Null).await;
    let set = &r.body["quota_class_set"];
    assert!(set.get("server_groups").is_some() && set.get("floating_ips").is_none(), "{set}");
    assert!(set.get("injected_files").is_some(), "{set}");
    let r = at(&app, Method::GET, "/os-quota-class-sets/default", &admin, "compute 2.57", Value::Null).await;
    assert_eq!(
        keys(&r.body["quota_class_set"]),
        ["cores", "id", "instances", "key_pairs", "metadata_items", "ram", "server_group_members", "server_groups"]
    );

    // Members may neither read nor write classes (admin-only in Nova's policy).
    let member = app.user_in_project("qc-member", "qc-project", "member").await;
    let r = at(&app, Method::GET, "/os-quota-class-sets/default", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let body = json!({"quota_class_set": {"instances": 3}});
    let r = at(&app, Method::PUT, "/os-quota-class-sets/default", &member, "compute 2.1", body.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Bad input: unknown or filtered keys, values out of range.
    for (version, bad) in [
        ("compute 2.1", json!({"quota_class_set": {"bogus": 1}})),
        ("compute 2.50", json!({"quota_class_set": {"floating_ips": 1}})),
        ("compute 2.57", json!({"quota_class_set": {"injected_files": 1}})),
        ("compute 2.1", json!({"quota_class_set": {"cores": -2}})),
        ("compute 2.1", json!({"quota_class_set": {"cores": "x"}})),
        ("compute 2.1", json!({"other": {}})),
    ] {
        let r = at(&app, Method::PUT, "/os-quota-class-sets/default", &admin, version, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{version} {bad}: {}", r.body);
        assert!(r.body["badRequest"]["message"].is_string(), "{}", r.body);
    }

    // An update answers without `id`, and becomes every project's default.
    let r = at(&app, Method::PUT, "/os-quota-class-sets/default", &admin, "compute 2.1", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["quota_class_set"]["instances"], 3);
    assert!(r.body["quota_class_set"].get("id").is_none(), "{}", r.body);
    let r = at(&app, Method::GET, "/os-quota-sets/someproject", &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["instances"], 3, "{}", r.body);
    let r = at(&app, Method::GET, "/os-quota-sets/someproject/defaults", &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["instances"], 3, "{}", r.body);
    let r = at(&app, Method::GET, "/limits", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["limits"]["absolute"]["maxTotalInstances"], 3, "{}", r.body);
    // A project's own limit still wins over the class.
    let r = at(
        &app,
        Method::PUT,
        "/os-quota-sets/someproject",
        &admin,
        "compute 2.1",
        json!({"quota_set": {"instances": 7}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = at(&app, Method::GET, "/os-quota-sets/someproject", &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["instances"], 7);
    // Another class is stored and shown, not applied.
    let r = at(
        &app,
        Method::PUT,
        "/os-quota-class-sets/gold",
        &admin,
        "compute 2.1",
        json!({"quota_class_set": {"cores": "40"}}),
    )
    .await;
    assert_eq!(r.body["quota_class_set"]["cores"], 40, "{}", r.body);
    let r = at(&app, Method::GET, "/os-quota-sets/other", &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["cores"], 20);
}

/// Stores an instance directly (no build) with the given lifetime.
async fn stored(app: &TestApp, id: &str, project: &str, launched: Option<&str>, terminated: Option<&str>) {
    let i = Instance {
        project_id: project.into(),
        launched_at: launched.map(str::to_string),
        terminated_at: terminated.map(str::to_string),
        deleted: i64::from(terminated.is_some()),
        vm_state: if terminated.is_some() { "deleted".into() } else { "active".into() },
        flavor: r#"{"id":"42","name":"m1.small","vcpus":2,"ram":1024,"disk":10,"ephemeral":5,"swap":0}"#.into(),
        ..crate::testing::instance(id)
    };
    app.state.store.create_instance(&i, None).await.expect("instance");
}

#[tokio::test]
async fn simple_tenant_usage_hours_paging_and_policy() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    // a: ran 2 h inside the window; b: deleted after 1 h inside; c: launched after the window;
    // d: another project, terminated before the window.
    stored(&app, "aaaaaaaa-0000-0000-0000-000000000001", "p1", Some("2026-01-01T10:00:00.000000Z"), None).await;
    stored(
        &app,
        "aaaaaaaa-0000-0000-0000-000000000002",
        "p1",
        Some("2026-01-01T11:00:00.000000Z"),
        Some("2026-01-01T12:00:00.000000Z"),
    )
    .await;
    stored(&app, "aaaaaaaa-0000-0000-0000-000000000003", "p1", Some("2026-02-01T00:00:00.000000Z"), None).await;
    stored(
        &app,
        "aaaaaaaa-0000-0000-0000-000000000004",
        "p2",
        Some("2025-01-01T00:00:00.000000Z"),
        Some("2025-01-02T00:00:00.000000Z"),
    )
    .await;
    stored(&app, "aaaaaaaa-0000-0000-0000-000000000005", "p2", Some("2026-01-01T11:30:00.000000Z"), None).await;
    let q = "start=2026-01-01T10:00:00&end=2026-01-01T12:00:00.000000";
    let r = at(&app, Method::GET, &format!("/os-simple-tenant-usage/p1?{q}"), &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let u = &r.body["tenant_usage"];
    assert_eq!(u["tenant_id"], "p1");
    assert_eq!(u["total_hours"], 3.0);
    assert_eq!(u["total_vcpus_usage"], 6.0);
    assert_eq!(u["total_memory_mb_usage"], 3072.0);
    assert_eq!(u["total_local_gb_usage"], 45.0);
    assert_eq!(u["start"], "2026-01-01T10:00:00");
    assert_eq!(u["stop"], "2026-01-01T12:00:00");
    let servers = u["server_usages"].as_array().expect("server_usages");
    assert_eq!(servers.len(), 2, "{u}");
    assert_eq!(servers[0]["state"], "active");
    assert_eq!(servers[0]["flavor"], "m1.small");
    assert_eq!(servers[0]["local_gb"], 15);
    assert_eq!(servers[0]["ended_at"], Value::Null);
    assert_eq!(servers[0]["started_at"], "2026-01-01T10:00:00");
    assert_eq!(servers[1]["state"], "terminated");
    assert_eq!(servers[1]["ended_at"], "2026-01-01T12:00:00");
    assert_eq!(servers[1]["uptime"], 3600);
    assert_eq!(
        keys(&servers[0]),
        [
            "ended_at",
            "flavor",
            "hours",
            "instance_id",
            "local_gb",
            "memory_mb",
            "name",
            "started_at",
            "state",
            "tenant_id",
            "uptime",
            "vcpus"
        ]
    );

    // The list (admin): every project, summaries only unless detailed=1.
    let r = at(&app, Method::GET, &format!("/os-simple-tenant-usage?{q}"), &admin, "compute 2.1", Value::Null).await;
    let list = r.body["tenant_usages"].as_array().expect("list");
    assert_eq!(list.len(), 2, "{}", r.body);
    assert_eq!((list[0]["tenant_id"].clone(), list[1]["total_hours"].clone()), (json!("p1"), json!(0.5)));
    assert!(list[0].get("server_usages").is_none());
    let r =
        at(&app, Method::GET, &format!("/os-simple-tenant-usage?{q}&detailed=1"), &admin, "compute 2.1", Value::Null)
            .await;
    assert_eq!(r.body["tenant_usages"][1]["server_usages"][0]["hours"], 0.5);

    // 2.40 paging: a full page links to the next, which carries on from the marker.
    let r = at(&app, Method::GET, &format!("/os-simple-tenant-usage?{q}&limit=2"), &admin, "compute 2.40", Value::Null)
        .await;
    let next = r.body["tenant_usages_links"][0]["href"].as_str().expect("next link").to_string();
    assert!(next.contains("marker=aaaaaaaa-0000-0000-0000-000000000002") && next.contains("limit=2"), "{next}");
    let path = next.split("/compute/v2.1").nth(1).expect("path");
    let r = at(&app, Method::GET, path, &admin, "compute 2.40", Value::Null).await;
    assert_eq!(r.body["tenant_usages"][0]["tenant_id"], "p2", "{}", r.body);
    let r =
        at(&app, Method::GET, &format!("/os-simple-tenant-usage?{q}&marker=nope"), &admin, "compute 2.40", Value::Null)
            .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Bad dates and an inverted window are 400s.
    for bad in ["start=yesterday", "start=2026-01-02T00:00:00&end=2026-01-01T00:00:00", "end=2026-13-01T00:00:00"] {
        let r = at(&app, Method::GET, &format!("/os-simple-tenant-usage/p1?{bad}"), &admin, "compute 2.1", Value::Null)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // A member sees its own project only, and no list.
    let member = app.user_in_project("usage-member", "usage-project", "member").await;
    let r = at(&app, Method::GET, "/os-simple-tenant-usage/p1", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = at(&app, Method::GET, "/os-simple-tenant-usage", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let pid =
        app.json(Method::GET, "/identity/v3/projects?name=usage-project", &admin, Value::Null).await.body["projects"]
            [0]["id"]
            .as_str()
            .expect("pid")
            .to_string();
    let r = at(&app, Method::GET, &format!("/os-simple-tenant-usage/{pid}"), &member, "compute 2.1", Value::Null).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({"tenant_usage": {}})));
}

#[tokio::test]
async fn server_password_api_and_ips_of_an_unknown_network() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let id = "bbbbbbbb-0000-0000-0000-000000000001";
    let pid = app.json(Method::GET, "/identity/v3/projects?name=admin", &admin, Value::Null).await.body["projects"][0]
        ["id"]
        .as_str()
        .expect("pid")
        .to_string();
    let i = Instance { project_id: pid, ..crate::testing::instance(id) };
    app.state.store.create_instance(&i, None).await.expect("instance");
    let r =
        at(&app, Method::GET, &format!("/servers/{id}/os-server-password"), &admin, "compute 2.1", Value::Null).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({"password": ""})));
    assert!(app.state.store.set_instance_password_once(id, "c2VjcmV0").await.expect("set"));
    assert!(!app.state.store.set_instance_password_once(id, "other").await.expect("set again"));
    let r =
        at(&app, Method::GET, &format!("/servers/{id}/os-server-password"), &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.body, json!({"password": "c2VjcmV0"}));
    let r = at(&app, Method::DELETE, &format!("/servers/{id}/os-server-password"), &admin, "compute 2.1", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r =
        at(&app, Method::GET, &format!("/servers/{id}/os-server-password"), &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.body, json!({"password": ""}));
    // Another project's member cannot see the server at all.
    let member = app.user_in_project("pw-member", "pw-project", "member").await;
    let r =
        at(&app, Method::GET, &format!("/servers/{id}/os-server-password"), &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = at(&app, Method::GET, "/servers/nope/os-server-password", &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = at(&app, Method::GET, &format!("/servers/{id}/ips/nonet"), &admin, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["message"], "Instance is not a member of specified network");
}

#[tokio::test]
async fn volume_attach_and_detach_on_a_locked_server_are_refused_for_members() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let member = app.user_in_project("lock-member", "lock-project", "member").await;
    let pid =
        app.json(Method::GET, "/identity/v3/projects?name=lock-project", &admin, Value::Null).await.body["projects"][0]
            ["id"]
            .as_str()
            .expect("pid")
            .to_string();
    let id = "cccccccc-0000-0000-0000-000000000001";
    let i = Instance { project_id: pid, locked: 1, ..crate::testing::instance(id) };
    app.state.store.create_instance(&i, None).await.expect("instance");
    let vol = "dddddddd-0000-0000-0000-000000000001";
    let body = json!({"volumeAttachment": {"volumeId": vol}});
    let r = at(&app, Method::POST, &format!("/servers/{id}/os-volume_attachments"), &member, "compute 2.1", body).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["conflictingRequest"]["message"], format!("Instance {id} is locked"));
    let r = at(
        &app,
        Method::DELETE,
        &format!("/servers/{id}/os-volume_attachments/{vol}"),
        &member,
        "compute 2.1",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["conflictingRequest"]["message"], format!("Instance {id} is locked"));
    // An admin passes the lock (and then meets the missing volume).
    let body = json!({"volumeAttachment": {"volumeId": vol}});
    let r = at(&app, Method::POST, &format!("/servers/{id}/os-volume_attachments"), &admin, "compute 2.1", body).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
}

#[tokio::test]
async fn interface_and_diagnostics_validation_lock_state_and_policy() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let member = app.user_in_project("if-member", "if-project", "member").await;
    let pid = app.json(Method::GET, "/identity/v3/projects?name=if-project", &admin, Value::Null).await.body
        ["projects"][0]["id"]
        .as_str()
        .expect("pid")
        .to_string();
    let id = "eeeeeeee-0000-0000-0000-000000000001";
    let i = Instance { project_id: pid.clone(), ..crate::testing::instance(id) };
    app.state.store.create_instance(&i, None).await.expect("instance");
    let path = format!("/servers/{id}/os-interface");
    let net = "11111111-0000-0000-0000-000000000001";
    let port = "22222222-0000-0000-0000-000000000001";
    for (version, body, want) in [
        (
            "compute 2.1",
            json!({"interfaceAttachment": {"net_id": net, "port_id": port}}),
            "Must not input both network_id and port_id",
        ),
        (
            "compute 2.1",
            json!({"interfaceAttachment": {"fixed_ips": [{"ip_address": "10.0.0.5"}]}}),
            "Must input network_id when request IP address",
        ),
        ("compute 2.1", json!({"interfaceAttachment": {"net_id": "nope"}}), "is not a 'uuid'"),
        ("compute 2.48", json!({"interfaceAttachment": {"net_id": net, "tag": "t"}}), "'tag' was unexpected"),
        ("compute 2.49", json!({"interfaceAttachment": {"net_id": net, "tag": "a/b"}}), "tag"),
        ("compute 2.1", json!({"interfaceAttachment": {"net_id": net, "fixed_ips": []}}), "fixed_ips"),
    ] {
        let r = at(&app, Method::POST, &path, &member, version, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        let msg = r.body["badRequest"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    // No interfaces yet; an unknown port is not the server's.
    let r = at(&app, Method::GET, &path, &member, "compute 2.70", Value::Null).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({"interfaceAttachments": []})));
    let r = at(&app, Method::DELETE, &format!("{path}/{port}"), &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // Locked: members get Nova's 409 on attach and detach.
    sqlx::query("UPDATE instances SET locked = 1 WHERE id = $1")
        .bind(id)
        .execute(&mut *app.state.store.conn().await.expect("conn"))
        .await
        .expect("lock");
    let body = json!({"interfaceAttachment": {"net_id": net}});
    let r = at(&app, Method::POST, &path, &member, "compute 2.1", body.clone()).await;
    assert_eq!(r.body["conflictingRequest"]["message"], format!("Instance {id} is locked"), "{}", r.body);
    let r = at(&app, Method::DELETE, &format!("{path}/{port}"), &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["conflictingRequest"]["message"], format!("Instance {id} is locked"), "{}", r.body);
    // A task in progress: the state table's 409 (an admin passes the lock).
    sqlx::query("UPDATE instances SET task_state = 'pausing' WHERE id = $1")
        .bind(id)
        .execute(&mut *app.state.store.conn().await.expect("conn"))
        .await
        .expect("task");
    let r = at(&app, Method::POST, &path, &admin, "compute 2.1", body).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'attach_interface' instance {id} while it is in task_state pausing")
    );

    // Diagnostics: admin only; a server without a host is not ready; a stopped one 409s.
    let d = format!("/servers/{id}/diagnostics");
    let r = at(&app, Method::GET, &d, &member, "compute 2.48", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = at(&app, Method::GET, &d, &admin, "compute 2.48", Value::Null).await;
    assert_eq!(r.body["conflictingRequest"]["message"], format!("Instance {id} is not ready"), "{}", r.body);
    let inv = crate::store::hosts::HostInventory {
        availability_zone: "nova".into(),
        hypervisor_type: "test".into(),
        cpu_arch: "x86_64".into(),
        libvirt_uri: "test:///default".into(),
        host_ip: "127.0.0.1".into(),
        vcpus: 8,
        memory_mb: 8192,
        disk_gb: 100,
        ..Default::default()
    };
    let host = app.state.store.register_host("h1", &inv).await.expect("host");
    sqlx::query("UPDATE instances SET host_id = $2, power_state = 4 WHERE id = $1")
        .bind(id)
        .bind(host)
        .execute(&mut *app.state.store.conn().await.expect("conn"))
        .await
        .expect("stopped");
    let r = at(&app, Method::GET, &d, &admin, "compute 2.1", Value::Null).await;
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'get_diagnostics' instance {id} while it is in power_state 4"),
        "{}",
        r.body
    );
}
