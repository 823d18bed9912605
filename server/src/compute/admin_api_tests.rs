//! The admin APIs of `os_hosts`, `audit_log`, `external_events` and `injectNetworkInfo`.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::store::hosts::HostInventory;
use crate::store::instances::Instance;
use crate::testing::{Reply, TestApp, instance};

async fn at(app: &TestApp, method: Method, path: &str, token: &str, version: &str, body: Value) -> Reply {
    let (b, ct) =
        if body.is_null() { (Body::empty(), None) } else { (Body::from(body.to_string()), Some("application/json")) };
    let mut h = vec![("openstack-api-version", version)];
    if let Some(ct) = ct {
        h.push(("content-type", ct));
    }
    app.call(method, &format!("/compute/v2.1{path}"), Some(token), &h, b).await
}

async fn host(app: &TestApp, name: &str) -> String {
    let inv = HostInventory {
        availability_zone: "nova".into(),
        hypervisor_type: "QEMU".into(),
        cpu_arch: "x86_64".into(),
        libvirt_uri: "test:///default".into(),
        host_ip: "127.0.0.1".into(),
        vcpus: 4,
        memory_mb: 2048,
        disk_gb: 10,
        ..Default::default()
    };
    app.state.store.register_host(name, &inv).await.expect("host")
}

#[tokio::test]
async fn os_hosts_lists_shows_and_refuses_as_a_libvirt_nova() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let h = host(&app, "cmp-1").await;
    app.state
        .store
        .create_instance(&Instance { host_id: Some(h.clone()), ..instance("i-1") }, None)
        .await
        .expect("i-1");
    app.state
        .store
        .create_instance(&Instance { host_id: Some(h), project_id: "p2".into(), ..instance("i-2") }, None)
        .await
        .expect("i-2");

    let r = at(&app, Method::GET, "/os-hosts", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let hosts = r.body["hosts"].as_array().expect("hosts").clone();
    assert!(hosts.contains(&json!({"host_name": "cmp-1", "service": "compute", "zone": "nova"})), "{}", r.body);
    let r = at(&app, Method::GET, "/os-hosts?zone=nova", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["hosts"], json!([{"host_name": "cmp-1", "service": "compute", "zone": "nova"}]));
    let r = at(&app, Method::GET, "/os-hosts?zone=nowhere", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["hosts"], json!([]));
    let r = at(&app, Method::GET, "/os-hosts?zone=", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["hosts"].as_array().map(Vec::len), Some(hosts.len()));

    // Totals, used now, the instances' flavors summed, then per project (m1.nano: 1 vCPU,
    // 128 MB, 1 GB each).
    let r = at(&app, Method::GET, "/os-hosts/cmp-1", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let lines: Vec<Value> = r.body["host"].as_array().expect("lines").iter().map(|l| l["resource"].clone()).collect();
    assert_eq!(lines[0], json!({"host": "cmp-1", "project": "(total)", "cpu": 4, "memory_mb": 2048, "disk_gb": 10}));
    assert_eq!(lines[1]["project"], "(used_now)");
    assert_eq!(lines[2], json!({"host": "cmp-1", "project": "(used_max)", "cpu": 2, "memory_mb": 256, "disk_gb": 2}));
    // One line per project, in the order the host's instances are read.
    let mut projects = lines[3..].to_vec();
    projects.sort_by_key(|l| l["project"].as_str().unwrap_or("").to_string());
    assert_eq!(
        projects,
        [
            json!({"host": "cmp-1", "project": "p1", "cpu": 1, "memory_mb": 128, "disk_gb": 1}),
            json!({"host": "cmp-1", "project": "p2", "cpu": 1, "memory_mb": 128, "disk_gb": 1}),
        ]
    );
    let r = at(&app, Method::GET, "/os-hosts/nope", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Removed at 2.43.
    let r = at(&app, Method::GET, "/os-hosts", &t, "compute 2.43", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Updates are validated, then answered as the libvirt driver answers them.
    for (body, want) in [
        (json!({"status": "enable"}), StatusCode::NOT_IMPLEMENTED),
        (json!({"maintenance_mode": " Disable "}), StatusCode::NOT_IMPLEMENTED),
        (json!({"status": "bad-status-value"}), StatusCode::BAD_REQUEST),
        (json!({"maintenance_mode": "invalid"}), StatusCode::BAD_REQUEST),
        (json!({}), StatusCode::BAD_REQUEST),
        (json!({"status": "enable", "what": 1}), StatusCode::BAD_REQUEST),
    ] {
        let r = at(&app, Method::PUT, "/os-hosts/cmp-1", &t, "compute 2.1", body.clone()).await;
        assert_eq!(r.status, want, "{body}: {}", r.body);
    }
    let r = at(&app, Method::PUT, "/os-hosts/nope", &t, "compute 2.1", json!({"status": "enable"})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for action in ["startup", "shutdown", "reboot"] {
        let r = at(&app, Method::GET, &format!("/os-hosts/cmp-1/{action}"), &t, "compute 2.1", Value::Null).await;
        assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED, "{action}");
        let r = at(&app, Method::GET, &format!("/os-hosts/nope/{action}"), &t, "compute 2.1", Value::Null).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{action}");
    }
    let member = app.user_in_project("m", "pm", "member").await;
    for path in ["/os-hosts", "/os-hosts/cmp-1", "/os-hosts/cmp-1/reboot"] {
        let r = at(&app, Method::GET, path, &member, "compute 2.1", Value::Null).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
}

#[test]
fn audit_periods_are_the_last_completed_month() {
    use super::audit_log::last_completed_month;
    let at = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("time");
    assert_eq!(last_completed_month(at("2026-12-07 13:00:00")), (at("2026-11-01 00:00:00"), at("2026-12-01 00:00:00")));
    assert_eq!(last_completed_month(at("2026-01-15 00:00:00")), (at("2025-12-01 00:00:00"), at("2026-01-01 00:00:00")));
    // A period ending exactly now is not completed yet.
    assert_eq!(last_completed_month(at("2026-03-01 00:00:00")), (at("2026-01-01 00:00:00"), at("2026-02-01 00:00:00")));
}

#[tokio::test]
async fn instance_usage_audit_log_lists_every_host_as_not_run() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    host(&app, "cmp-1").await;
    let r = at(&app, Method::GET, "/os-instance_usage_audit_log", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let log = &r.body["instance_usage_audit_logs"];
    assert_eq!(log["num_hosts"], 1);
    assert_eq!(log["hosts_not_run"], json!(["cmp-1"]));
    assert_eq!(log["overall_status"], "0 of 1 hosts done. 0 errors.");
    let r = at(&app, Method::GET, "/os-instance_usage_audit_log/2026-12-07%2013:00:00", &t, "compute 2.1", Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["instance_usage_audit_log"]["period_beginning"], "2026-11-01 00:00:00");
    assert_eq!(r.body["instance_usage_audit_log"]["period_ending"], "2026-12-01 00:00:00");
    let r =
        at(&app, Method::GET, "/os-instance_usage_audit_log/2026-12-07%2013:00:00.5", &t, "compute 2.1", Value::Null)
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = at(&app, Method::GET, "/os-instance_usage_audit_log/yesterday", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["badRequest"]["message"], "Invalid timestamp for date yesterday");
    let member = app.user_in_project("m", "pm", "member").await;
    let r = at(&app, Method::GET, "/os-instance_usage_audit_log", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn external_events_are_answered_per_event() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let h = host(&app, "cmp-1").await;
    app.state.store.create_instance(&Instance { host_id: Some(h), ..instance("on-host") }, None).await.expect("on");
    app.state.store.create_instance(&instance("no-host"), None).await.expect("off");
    let ev = |name: &str, server: &str| json!({"name": name, "server_uuid": server});
    let r = at(
        &app,
        Method::POST,
        "/os-server-external-events",
        &t,
        "compute 2.1",
        json!({"events": [ev("network-changed", "on-host")]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["events"],
        json!([{"name": "network-changed", "server_uuid": "on-host", "status": "completed", "code": 200}])
    );
    let body = json!({"events": [
        ev("network-vif-plugged", "on-host"),
        ev("network-vif-plugged", "gone"),
        ev("network-vif-plugged", "no-host"),
        ev("volume-extended", "on-host"),
    ]});
    let r = at(&app, Method::POST, "/os-server-external-events", &t, "compute 2.51", body).await;
    assert_eq!(r.status, StatusCode::MULTI_STATUS, "{}", r.body);
    let codes: Vec<i64> =
        r.body["events"].as_array().expect("events").iter().map(|e| e["code"].as_i64().unwrap_or(0)).collect();
    assert_eq!(codes, [200, 404, 422, 400]);
    // Names the version does not know, bad statuses, missing keys: 400 before anything else.
    for (version, body) in [
        ("compute 2.50", json!({"events": [ev("volume-extended", "on-host")]})),
        ("compute 2.1", json!({"events": [{"name": "network-changed", "server_uuid": "on-host", "status": "done"}]})),
        ("compute 2.1", json!({"events": [{"name": "network-changed"}]})),
        ("compute 2.1", json!({"events": []})),
    ] {
        let r = at(&app, Method::POST, "/os-server-external-events", &t, version, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
    }
    let member = app.user_in_project("m", "pm", "member").await;
    let r = at(
        &app,
        Method::POST,
        "/os-server-external-events",
        &member,
        "compute 2.1",
        json!({"events": [ev("network-changed", "on-host")]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // injectNetworkInfo: admin only, 202 for a server that exists.
    let r =
        at(&app, Method::POST, "/servers/on-host/action", &t, "compute 2.1", json!({"injectNetworkInfo": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = at(&app, Method::POST, "/servers/gone/action", &t, "compute 2.1", json!({"injectNetworkInfo": null})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn nova_network_proxies_show_neutron_networks_until_2_35() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let member = app.user_in_project("m", "pm", "member").await;
    let r = app.json(Method::POST, "/network/v2.0/networks", &member, json!({"network": {"name": "private"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let id = r.body["network"]["id"].as_str().expect("id").to_string();

    let r = at(&app, Method::GET, "/os-networks", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mine = r.body["networks"].as_array().expect("list").iter().find(|n| n["id"] == id.as_str()).cloned();
    let mine = mine.expect("the project's network is listed");
    assert_eq!(mine["label"], "private");
    assert_eq!(mine["cidr"], Value::Null);
    assert!(mine.get("bridge").is_none(), "admin fields are for admins: {mine}");
    let r = at(&app, Method::GET, &format!("/os-networks/{id}"), &t, "compute 2.35", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["network"]["label"], "private");
    assert!(r.body["network"].get("bridge").is_some_and(Value::is_null), "{}", r.body);
    let r = at(&app, Method::GET, "/os-tenant-networks", &member, "compute 2.1", Value::Null).await;
    assert!(
        r.body["networks"].as_array().expect("list").contains(&json!({"id": id, "cidr": "None", "label": "private"}))
    );
    let r = at(&app, Method::GET, &format!("/os-tenant-networks/{id}"), &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["network"]["label"], "private");

    // Another project does not see it; 2.36 removed the proxies; writes are gone.
    let other = app.user_in_project("o", "po", "member").await;
    let r = at(&app, Method::GET, &format!("/os-networks/{id}"), &other, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["message"], "Network not found");
    let r = at(&app, Method::GET, "/os-networks", &member, "compute 2.36", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = at(&app, Method::GET, "/os-tenant-networks", &member, "compute 2.36", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = at(&app, Method::DELETE, &format!("/os-networks/{id}"), &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::GONE);
}
