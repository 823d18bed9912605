//! The agent API's credentials: the join token only registers; each host's credential acts
//! for that host alone (its heartbeat and work, its work items' events, its builds' images),
//! and re-registration replaces it.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::testing::{Reply, TestApp};

async fn agent(app: &TestApp, method: Method, path: &str, bearer: &str, body: Value) -> Reply {
    let auth = format!("Bearer {bearer}");
    let mut h = vec![("authorization", auth.as_str())];
    let b = if body.is_null() {
        Body::empty()
    } else {
        h.push(("content-type", "application/json"));
        Body::from(body.to_string())
    };
    app.call(method, &format!("/agent/v1{path}"), None, &h, b).await
}

fn registration(host: &str) -> Value {
    json!({"host": host, "agent_version": "test", "inventory": {
        "vcpus": 8, "memory_mb": 16384, "disk_gb": 100, "reserved_vcpus": 0, "reserved_memory_mb": 0,
        "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1, "cpu_arch": "x86_64",
        "libvirt_uri": "test:///default", "host_ip": "127.0.0.1", "supports_networks": true,
        "availability_zone": "nova"}})
}

/// Registers `host` with `bearer`; its new credential.
async fn register(app: &TestApp, host: &str, bearer: &str) -> String {
    let r = agent(app, Method::POST, "/register", bearer, registration(host)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["credential"].as_str().expect("credential").to_string()
}

fn heartbeat() -> Value {
    json!({"inventory": registration("x")["inventory"], "instances": []})
}

/// An active image with data; its id.
async fn image(app: &TestApp, name: &str) -> String {
    let t = app.admin_token.clone();
    let img = app
        .json(
            Method::POST,
            "/image/v2/images",
            &t,
            json!({"name": name, "disk_format": "raw", "container_format": "bare", "visibility": "public"}),
        )
        .await;
    let id = img.body["id"].as_str().expect("image id").to_string();
    let up = app
        .call(
            Method::PUT,
            &format!("/image/v2/images/{id}/file"),
            Some(&t),
            &[("content-type", "application/octet-stream")],
            Body::from(vec![7u8; 4096]),
        )
        .await;
    assert_eq!(up.status, StatusCode::NO_CONTENT);
    id
}

/// The host a server was placed on.
async fn placed_on(app: &TestApp, id: &str) -> String {
    for _ in 0..250 {
        let r = app
            .call(
                Method::GET,
                &format!("/compute/v2.1/servers/{id}"),
                Some(&app.admin_token),
                &[("openstack-api-version", "compute 2.79")],
                Body::empty(),
            )
            .await;
        let s = &r.body["server"];
        assert_ne!(s["status"], "ERROR", "{s}");
        if let Some(host) = s["OS-EXT-SRV-ATTR:host"].as_str() {
            return host.to_string();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{id} was never placed");
}

#[tokio::test]
async fn the_join_token_only_registers() {
    let app = TestApp::new().await;
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let cred = register(&app, "compute-a", &join).await;
    assert_eq!(cred.len(), 43, "256 random bits, base64url");
    assert_ne!(cred, join);
    let img = image(&app, "img").await;
    for bearer in [join.as_str(), "wrong"] {
        let calls = [
            agent(&app, Method::POST, "/hosts/compute-a/heartbeat", bearer, heartbeat()).await,
            agent(&app, Method::GET, "/hosts/compute-a/work?wait=0", bearer, Value::Null).await,
            agent(&app, Method::POST, "/events", bearer, json!({"events": []})).await,
            agent(&app, Method::POST, "/work/w1/events", bearer, json!({"type": "progress", "task_state": "spawning"}))
                .await,
            agent(&app, Method::GET, &format!("/images/{img}/file"), bearer, Value::Null).await,
        ];
        for r in calls {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
            assert_eq!(r.body["error"]["code"], 401, "{}", r.body);
        }
    }
    // Nor does anything but the join token or the host's own credential register.
    let r = agent(&app, Method::POST, "/register", "wrong", registration("compute-a")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The credential works, and is stored only as its hash.
    let r = agent(&app, Method::POST, "/hosts/compute-a/heartbeat", &cred, heartbeat()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let stored: Option<String> = sqlx::query_scalar("SELECT credential_hash FROM hosts WHERE name = 'compute-a'")
        .fetch_one(&mut *app.state.store.conn().await.expect("conn"))
        .await
        .expect("hash");
    assert_eq!(stored.as_deref(), Some(crate::store::identity::token_hash(&cred).as_str()));
}

#[tokio::test]
async fn a_host_credential_acts_for_its_host_alone() {
    let app = TestApp::new().await;
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let cred_a = register(&app, "compute-a", &join).await;
    let cred_b = register(&app, "compute-b", &join).await;
    let img = image(&app, "img").await;
    let unused = image(&app, "unused").await;
    let r = app
        .call(
            Method::POST,
            "/compute/v2.1/servers",
            Some(&app.admin_token),
            &[("openstack-api-version", "compute 2.79"), ("content-type", "application/json")],
            Body::from(
                json!({"server": {"name": "s1", "imageRef": img, "flavorRef": "1", "networks": "none"}}).to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let server = r.body["server"]["id"].as_str().expect("id").to_string();
    let owner = placed_on(&app, &server).await;
    let (own, other, other_name) =
        if owner == "compute-a" { (&cred_a, &cred_b, "compute-b") } else { (&cred_b, &cred_a, "compute-a") };

    // Another host's heartbeat and work: 403 (the path names a host not the caller's).
    let r = agent(&app, Method::POST, &format!("/hosts/{owner}/heartbeat"), other, heartbeat()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"]["code"], 403, "{}", r.body);
    let r = agent(&app, Method::GET, &format!("/hosts/{owner}/work?wait=0"), other, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    // Its own queue has nothing of the owner's.
    let r = agent(&app, Method::GET, &format!("/hosts/{other_name}/work?wait=0"), other, Value::Null).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!([])));
    // No host may read an image no open build of its own needs: 404.
    let r = agent(&app, Method::GET, &format!("/images/{img}/file"), other, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // The owner leases the build (the work may still be on its way from the conductor).
    let mut work = Vec::new();
    for _ in 0..50 {
        let r = agent(&app, Method::GET, &format!("/hosts/{owner}/work?wait=1"), own, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        work = r.body.as_array().cloned().unwrap_or_default();
        if !work.is_empty() {
            break;
        }
    }
    assert_eq!(work.len(), 1, "{work:?}");
    let work_id = work[0]["id"].as_str().expect("work id").to_string();
    let r = agent(&app, Method::GET, &format!("/images/{img}/file"), own, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.bytes, vec![7u8; 4096]);
    let r = agent(&app, Method::GET, &format!("/images/{unused}/file"), own, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "an image no build needs: {}", r.body);
    let r = agent(&app, Method::GET, &format!("/images/{img}/file"), other, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // Events for the owner's work from the other host: 404 alone, refused (taken, not
    // applied) in a batch. The build stays where it was.
    let failed = json!({"type": "failed", "message": "forged", "details": "", "retryable": false});
    let r = agent(&app, Method::POST, &format!("/work/{work_id}/events"), other, failed.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r =
        agent(&app, Method::POST, "/events", other, json!({"events": [{"work_id": work_id, "event": failed}]})).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({"taken": 1})));
    assert_eq!(app.state.store.get_work(&work_id).await.expect("work").state, "delivered");
    let s = app.state.store.get_instance(&server).await.expect("instance");
    assert_eq!(s.vm_state, "building");

    // The owner's own events are applied.
    let r = agent(
        &app,
        Method::POST,
        "/events",
        own,
        json!({"events": [{"work_id": work_id, "event": {"type": "progress", "task_state": "block_device_mapping"}}]}),
    )
    .await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({"taken": 1})));
    let s = app.state.store.get_instance(&server).await.expect("instance");
    assert_eq!(s.task_state.as_deref(), Some("block_device_mapping"));
}

#[tokio::test]
async fn registering_again_replaces_the_credential() {
    let app = TestApp::new().await;
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let first = register(&app, "compute-a", &join).await;
    let r = agent(&app, Method::POST, "/hosts/compute-a/heartbeat", &first, heartbeat()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    // With the join token: the old credential stops working at once (it was just cached).
    let second = register(&app, "compute-a", &join).await;
    assert_ne!(first, second);
    let r = agent(&app, Method::POST, "/hosts/compute-a/heartbeat", &first, heartbeat()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let r = agent(&app, Method::GET, "/hosts/compute-a/work?wait=0", &first, Value::Null).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    // With the host's own credential (no join token needed once joined), for its host only.
    let r = agent(&app, Method::POST, "/register", &second, registration("compute-b")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "another host's name: {}", r.body);
    let r = agent(&app, Method::POST, "/register", &first, registration("compute-a")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a replaced credential: {}", r.body);
    let third = register(&app, "compute-a", &second).await;
    for (old, status) in [(&second, StatusCode::UNAUTHORIZED), (&third, StatusCode::NO_CONTENT)] {
        let r = agent(&app, Method::POST, "/hosts/compute-a/heartbeat", old, heartbeat()).await;
        assert_eq!(r.status, status, "{}", r.body);
    }
}
