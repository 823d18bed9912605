//! createImage, createBackup, shelve, shelveOffload and unshelve through the API, with the
//! agent's side answered here over its real routes: task walks, Nova's image properties, the
//! 2.45 bodies, backup rotation, failures and deadlines (image deleted, task cleared), the
//! lock, the offload/unshelve placement, and volumes attached to and detached from an offloaded
//! server (Nova 2.20), plugged into the domain the unshelve builds.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::testing::{Reply, TestApp};

struct Host {
    name: String,
    credential: String,
}

async fn agent(app: &TestApp, method: Method, path: &str, bearer: &str, body: Body, json_body: bool) -> Reply {
    let auth = format!("Bearer {bearer}");
    let mut h = vec![("authorization", auth.as_str())];
    if json_body {
        h.push(("content-type", "application/json"));
    }
    app.call(method, &format!("/agent/v1{path}"), None, &h, body).await
}

async fn register(app: &TestApp, name: &str) -> Host {
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let body = json!({"host": name, "agent_version": "test", "inventory": {
        "vcpus": 8, "memory_mb": 16384, "disk_gb": 100, "reserved_vcpus": 0, "reserved_memory_mb": 0,
        "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1, "cpu_arch": "x86_64",
        "libvirt_uri": "test:///default", "host_ip": "127.0.0.1", "supports_networks": true,
        "availability_zone": "nova"}});
    let r = agent(app, Method::POST, "/register", &join, Body::from(body.to_string()), true).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    Host { name: name.into(), credential: r.body["credential"].as_str().expect("credential").into() }
}

/// The host's open work, waiting up to 5 s for one item.
async fn take(app: &TestApp, host: &Host, kind: &str) -> Value {
    for _ in 0..250 {
        let path = format!("/hosts/{}/work?wait=0", host.name);
        let r = agent(app, Method::GET, &path, &host.credential, Body::empty(), false).await;
        let items = r.body.as_array().cloned().unwrap_or_default();
        if let Some(item) = items.first() {
            assert_eq!(items.len(), 1, "{items:?}");
            assert_eq!(item["action"]["type"], kind, "{item}");
            return item.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no {kind} work for {}", host.name);
}

async fn send(app: &TestApp, host: &Host, item: &Value, event: Value) {
    let batch = json!({"events": [{"work_id": item["id"], "event": event}]});
    let r = agent(app, Method::POST, "/events", &host.credential, Body::from(batch.to_string()), true).await;
    assert_eq!(r.body["taken"], 1, "{}", r.body);
}

fn progress(task: &str) -> Value {
    json!({"type": "progress", "task_state": task})
}

fn done(power: &str) -> Value {
    json!({"type": "done", "power_state": power, "console": null})
}

fn failed(message: &str) -> Value {
    json!({"type": "failed", "message": message, "details": "qemu-img: boom", "retryable": false})
}

async fn upload(app: &TestApp, host: &Host, image: &str, bytes: Vec<u8>) -> StatusCode {
    agent(app, Method::PUT, &format!("/images/{image}/file"), &host.credential, Body::from(bytes), false).await.status
}

async fn nova_as(app: &TestApp, token: &str, version: &str, method: Method, path: &str, body: Value) -> Reply {
    let (b, mut h): (Body, Vec<(&str, &str)>) = if body.is_null() {
        (Body::empty(), vec![])
    } else {
        (Body::from(body.to_string()), vec![("content-type", "application/json")])
    };
    let v = format!("compute {version}");
    h.push(("openstack-api-version", v.as_str()));
    app.call(method, &format!("/compute/v2.1{path}"), Some(token), &h, b).await
}

async fn nova(app: &TestApp, version: &str, method: Method, path: &str, body: Value) -> Reply {
    nova_as(app, &app.admin_token.clone(), version, method, path, body).await
}

async fn act(app: &TestApp, version: &str, id: &str, body: Value) -> Reply {
    nova(app, version, Method::POST, &format!("/servers/{id}/action"), body).await
}

async fn glance(app: &TestApp, id: &str) -> Reply {
    app.json(Method::GET, &format!("/image/v2/images/{id}"), &app.admin_token, Value::Null).await
}

/// An active qcow2 base image with properties Nova inherits (and one it must not).
async fn base_image(app: &TestApp) -> String {
    let t = app.admin_token.clone();
    let body = json!({"name": "base", "disk_format": "qcow2", "container_format": "bare", "visibility": "public",
        "min_disk": 0, "min_ram": 64, "os_distro": "cirros", "hw_disk_bus": "virtio", "cache_in_nova": "true",
        "img_signature": "sig"});
    let img = app.json(Method::POST, "/image/v2/images", &t, body).await;
    assert_eq!(img.status, StatusCode::CREATED, "{}", img.body);
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

async fn server(app: &TestApp) -> Value {
    let r = nova(app, "2.79", Method::GET, "/servers/detail", Value::Null).await;
    r.body["servers"][0].clone()
}

async fn show(app: &TestApp, id: &str) -> Value {
    nova(app, "2.79", Method::GET, &format!("/servers/{id}"), Value::Null).await.body["server"].clone()
}

fn walk(s: &Value) -> (String, String, Option<String>) {
    (
        s["status"].as_str().unwrap_or_default().to_string(),
        s["OS-EXT-STS:vm_state"].as_str().unwrap_or_default().to_string(),
        s["OS-EXT-STS:task_state"].as_str().map(str::to_string),
    )
}

fn st(status: &str, vm: &str, task: Option<&str>) -> (String, String, Option<String>) {
    (status.into(), vm.into(), task.map(str::to_string))
}

/// A host and an ACTIVE server "vm1" on it (built by answering the build here).
async fn active_server(app: &TestApp, host: &Host, token: Option<&str>) -> String {
    let image = base_image(app).await;
    let body = json!({"server": {"name": "vm1", "imageRef": image, "flavorRef": "1", "networks": "none"}});
    let token = token.map(str::to_string).unwrap_or_else(|| app.admin_token.clone());
    let r = nova_as(app, &token, "2.79", Method::POST, "/servers", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();
    let build = take(app, host, "build").await;
    send(app, host, &build, done("running")).await;
    assert_eq!(walk(&show(app, &id).await), st("ACTIVE", "active", None));
    id
}

async fn events_of(app: &TestApp, id: &str, action: &str) -> (Value, Vec<String>) {
    let r = nova(app, "2.79", Method::GET, &format!("/servers/{id}/os-instance-actions"), Value::Null).await;
    let a = r.body["instanceActions"]
        .as_array()
        .and_then(|l| l.iter().find(|a| a["action"] == action).cloned())
        .unwrap_or_else(|| panic!("no {action} action: {}", r.body));
    let req = a["request_id"].as_str().expect("request id");
    let r = nova(app, "2.79", Method::GET, &format!("/servers/{id}/os-instance-actions/{req}"), Value::Null).await;
    let events = r.body["instanceAction"]["events"]
        .as_array()
        .map(|l| l.iter().map(|e| format!("{}:{}", e["event"].as_str().unwrap_or(""), e["result"])).collect())
        .unwrap_or_default();
    (r.body["instanceAction"].clone(), events)
}

#[tokio::test]
async fn create_image_walks_nova_states_and_makes_the_image_with_its_properties() {
    let app = TestApp::new().await;
    let a = register(&app, "img-a").await;
    let id = active_server(&app, &a, None).await;
    let base = show(&app, &id).await["image"]["id"].as_str().expect("image").to_string();

    // Nova's schema and quota checks.
    let r = act(&app, "2.44", &id, json!({"createImage": {}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body["badRequest"]["message"].as_str().unwrap_or("").contains("'name' is a required property"));
    let r = act(&app, "2.44", &id, json!({"createImage": {"name": " x"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let many: serde_json::Map<String, Value> = (0..129).map(|i| (format!("k{i}"), json!("v"))).collect();
    let r = act(&app, "2.38", &id, json!({"createImage": {"name": "s", "metadata": many}})).await;
    assert_eq!(
        (r.status, r.body["forbidden"]["message"].as_str()),
        (StatusCode::FORBIDDEN, Some("Image metadata limit exceeded"))
    );
    let r = act(&app, "2.44", &id, json!({"createImage": {"name": "s", "metadata": {"k": 1}}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // Before 2.45: 202, no body, the image in Location.
    let r = act(&app, "2.44", &id, json!({"createImage": {"name": "snap-1", "metadata": {"purpose": "test"}}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(r.bytes.is_empty());
    let loc = r.headers["location"].to_str().expect("location").to_string();
    let image = loc.rsplit('/').next().expect("id").to_string();
    assert_eq!(loc, format!("http://meridian.test/image/images/{image}"));
    assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", Some("image_snapshot_pending")));

    // The image exists at once, queued, with Nova's properties.
    let img = glance(&app, &image).await.body;
    assert_eq!(img["status"], "queued", "{img}");
    assert_eq!((img["name"].as_str(), img["visibility"].as_str()), (Some("snap-1"), Some("private")));
    assert_eq!((img["disk_format"].as_str(), img["container_format"].as_str()), (Some("qcow2"), Some("bare")));
    assert_eq!(img["image_type"], "snapshot");
    assert_eq!(img["instance_uuid"], id.as_str());
    assert_eq!(img["base_image_ref"], base.as_str());
    assert_eq!(img["image_location"], "snapshot");
    assert_eq!(img["purpose"], "test");
    assert_eq!(img["os_distro"], "cirros", "inherited from the base image");
    assert_eq!(img["hw_disk_bus"], "virtio");
    assert!(img.get("cache_in_nova").is_none(), "non-inheritable: {img}");
    assert!(img.get("img_signature").is_none(), "non-inheritable: {img}");
    assert_eq!(
        (img["min_ram"].as_i64(), img["min_disk"].as_i64()),
        (Some(64), Some(1)),
        "min_disk is the flavor's root"
    );
    assert!(img["user_id"].is_string() && img["boot_roles"].as_str().unwrap_or("").contains("admin"), "{img}");

    // One task at a time; snapshots do not check the lock (Nova's note), shelve does.
    let r = act(&app, "2.44", &id, json!({"createImage": {"name": "snap-2"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'createImage' instance {id} while it is in task_state image_snapshot_pending")
    );

    // The agent may upload only the image its open work names.
    assert_eq!(upload(&app, &a, &base, vec![1; 8]).await, StatusCode::NOT_FOUND);
    let item = take(&app, &a, "image_create").await;
    assert_eq!(item["action"]["image_id"], image.as_str());
    assert_eq!(item["action"]["disk_format"], "qcow2");
    for (task, want) in [
        ("image_snapshot", "image_snapshot"),
        ("image_pending_upload", "image_pending_upload"),
        ("image_uploading", "image_uploading"),
    ] {
        send(&app, &a, &item, progress(task)).await;
        assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", Some(want)));
    }
    assert_eq!(upload(&app, &a, &image, vec![9; 10_000]).await, StatusCode::NO_CONTENT);
    send(&app, &a, &item, done("running")).await;
    assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", None));
    let img = glance(&app, &image).await.body;
    assert_eq!((img["status"].as_str(), img["size"].as_i64()), (Some("active"), Some(10_000)), "{img}");
    assert!(img["checksum"].is_string());
    assert_eq!(upload(&app, &a, &image, vec![1; 8]).await, StatusCode::NOT_FOUND, "the work is over");

    let (action, events) = events_of(&app, &id, "createImage").await;
    assert_eq!(events, ["compute_snapshot_instance:\"Success\""], "{action}");
    assert!(action["finish_time"].is_string() || action["events"][0]["finish_time"].is_string());

    // From 2.45: the id in the body, no Location.
    let r = act(&app, "2.45", &id, json!({"createImage": {"name": "snap-3"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(r.headers.get("location").is_none());
    let image3 = r.body["image_id"].as_str().expect("image_id").to_string();
    assert_eq!(glance(&app, &image3).await.body["name"], "snap-3");
}

#[tokio::test]
async fn a_failed_snapshot_deletes_the_image_and_clears_the_task() {
    let app = TestApp::new().await;
    let a = register(&app, "img-a").await;
    let id = active_server(&app, &a, None).await;
    let r = act(&app, "2.45", &id, json!({"createImage": {"name": "doomed"}})).await;
    let image = r.body["image_id"].as_str().expect("image_id").to_string();
    let item = take(&app, &a, "image_create").await;
    send(&app, &a, &item, progress("image_pending_upload")).await;
    send(&app, &a, &item, failed("cannot copy the disk")).await;
    assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", None));
    assert_eq!(glance(&app, &image).await.status, StatusCode::NOT_FOUND, "the image goes with the failure");
    let (_, events) = events_of(&app, &id, "createImage").await;
    assert_eq!(events, ["compute_snapshot_instance:\"Error\""]);
    let fault = app.state.store.get_instance(&id).await.expect("row").fault.expect("fault");
    assert!(fault.contains("cannot copy the disk"), "{fault}");

    // A host that says done without uploading: the same end.
    let r = act(&app, "2.45", &id, json!({"createImage": {"name": "empty"}})).await;
    let image = r.body["image_id"].as_str().expect("image_id").to_string();
    let item = take(&app, &a, "image_create").await;
    send(&app, &a, &item, done("running")).await;
    assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", None));
    assert_eq!(glance(&app, &image).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_snapshot_past_its_deadline_ends_with_the_image_deleted() {
    let app = TestApp::with_config(|c| c.compute.action_timeout_secs = 0).await;
    let a = register(&app, "img-a").await;
    let id = active_server(&app, &a, None).await;
    let r = act(&app, "2.45", &id, json!({"createImage": {"name": "late"}})).await;
    let image = r.body["image_id"].as_str().expect("image_id").to_string();
    let item = take(&app, &a, "image_create").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    super::conductor::tick(&app.state).await.expect("tick");
    assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", None));
    assert_eq!(glance(&app, &image).await.status, StatusCode::NOT_FOUND);
    let fault = app.state.store.get_instance(&id).await.expect("row").fault.expect("fault");
    assert!(fault.contains("did not complete 'createImage'"), "{fault}");
    // The late answer changes nothing and the late upload is refused.
    assert_eq!(upload(&app, &a, &image, vec![1; 8]).await, StatusCode::NOT_FOUND);
    send(&app, &a, &item, done("running")).await;
    assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", None));
}

async fn backup(app: &TestApp, a: &Host, id: &str, version: &str, rotation: Value) -> (Reply, String) {
    let r =
        act(app, version, id, json!({"createBackup": {"name": "bk", "backup_type": "daily", "rotation": rotation}}))
            .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let item = take(app, a, "image_create").await;
    let image = item["action"]["image_id"].as_str().expect("image").to_string();
    assert_eq!(walk(&show(app, id).await), st("ACTIVE", "active", Some("image_backup")));
    send(app, a, &item, progress("image_snapshot")).await;
    assert_eq!(walk(&show(app, id).await).2.as_deref(), Some("image_backup"), "a backup never shows image_snapshot");
    send(app, a, &item, progress("image_pending_upload")).await;
    send(app, a, &item, progress("image_uploading")).await;
    assert_eq!(upload(app, a, &image, vec![3; 512]).await, StatusCode::NO_CONTENT);
    send(app, a, &item, done("running")).await;
    assert_eq!(walk(&show(app, id).await), st("ACTIVE", "active", None));
    (r, image)
}

#[tokio::test]
async fn backups_rotate_oldest_first_and_rotation_zero_keeps_none() {
    let app = TestApp::new().await;
    let a = register(&app, "img-a").await;
    let id = active_server(&app, &a, None).await;
    let r = act(&app, "2.45", &id, json!({"createBackup": {"name": "bk", "backup_type": "daily"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r =
        act(&app, "2.45", &id, json!({"createBackup": {"name": "bk", "backup_type": "daily", "rotation": -1}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let (r, first) = backup(&app, &a, &id, "2.44", json!(2)).await;
    assert!(r.headers["location"].to_str().expect("loc").ends_with(&first));
    let img = glance(&app, &first).await.body;
    assert_eq!((img["image_type"].as_str(), img["backup_type"].as_str()), (Some("backup"), Some("daily")), "{img}");
    let (_, second) = backup(&app, &a, &id, "2.45", json!("2")).await;
    let (r, third) = backup(&app, &a, &id, "2.45", json!(2)).await;
    assert_eq!(r.body["image_id"], third.as_str());
    assert_eq!(glance(&app, &first).await.status, StatusCode::NOT_FOUND, "the oldest beyond rotation 2 goes");
    assert_eq!(glance(&app, &second).await.status, StatusCode::OK);
    assert_eq!(glance(&app, &third).await.status, StatusCode::OK);
    let (_, events) = events_of(&app, &id, "createBackup").await;
    assert_eq!(events, ["compute_backup_instance:\"Success\""]);

    // Rotation 0 (pre-2.45: no Location then): every daily backup goes, the new one too.
    let (r, fourth) = backup(&app, &a, &id, "2.44", json!(0)).await;
    assert!(r.headers.get("location").is_none());
    for img in [&second, &third, &fourth] {
        assert_eq!(glance(&app, img).await.status, StatusCode::NOT_FOUND, "{img}");
    }
}

#[tokio::test]
async fn shelve_offloads_at_once_and_unshelve_builds_from_the_shelved_image() {
    let app = TestApp::new().await;
    let a = register(&app, "img-a").await;
    let member = app.user_in_project("shelver", "shelf-project", "member").await;
    let id = active_server(&app, &a, Some(&member)).await;

    // A locked server refuses shelve to its non-admin owner (Nova's check_instance_lock).
    assert_eq!(act(&app, "2.79", &id, json!({"lock": null})).await.status, StatusCode::ACCEPTED);
    let r =
        nova_as(&app, &member, "2.79", Method::POST, &format!("/servers/{id}/action"), json!({"shelve": null})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["conflictingRequest"]["message"], format!("Instance {id} is locked"));
    assert_eq!(act(&app, "2.79", &id, json!({"unlock": null})).await.status, StatusCode::ACCEPTED);
    // Offload is admin-only; unshelve needs a shelved server.
    let r =
        nova_as(&app, &member, "2.79", Method::POST, &format!("/servers/{id}/action"), json!({"shelveOffload": null}))
            .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r =
        nova_as(&app, &member, "2.79", Method::POST, &format!("/servers/{id}/action"), json!({"unshelve": null})).await;
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'unshelve' instance {id} while it is in vm_state active")
    );

    let r =
        nova_as(&app, &member, "2.79", Method::POST, &format!("/servers/{id}/action"), json!({"shelve": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", Some("shelving")));
    let item = take(&app, &a, "image_create").await;
    assert_eq!(item["action"]["shelving"], true);
    let image = item["action"]["image_id"].as_str().expect("image").to_string();
    let img = glance(&app, &image).await.body;
    assert_eq!((img["name"].as_str(), img["image_type"].as_str()), (Some("vm1-shelved"), Some("snapshot")), "{img}");
    for task in ["shelving_image_pending_upload", "shelving_image_uploading"] {
        send(&app, &a, &item, progress(task)).await;
        assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", Some(task)));
    }
    assert_eq!(upload(&app, &a, &image, vec![5; 2048]).await, StatusCode::NO_CONTENT);
    send(&app, &a, &item, done("shutdown")).await;
    assert_eq!(walk(&show(&app, &id).await), st("SHELVED", "shelved", Some("shelving_offloading")));
    let used = |app: &TestApp| {
        let s = app.state.clone();
        async move { s.store.list_hosts().await.expect("hosts")[0].memory_mb_used }
    };
    assert!(used(&app).await > 0);
    let offload = take(&app, &a, "delete").await;
    send(&app, &a, &offload, done("no_state")).await;
    let s = show(&app, &id).await;
    assert_eq!(walk(&s), st("SHELVED_OFFLOADED", "shelved_offloaded", None));
    assert!(s["OS-EXT-SRV-ATTR:host"].is_null(), "{s}");
    assert_eq!(used(&app).await, 0, "the host's resources are free");
    let (_, events) = events_of(&app, &id, "shelve").await;
    assert_eq!(events, ["compute_shelve_instance:\"Success\""]);

    // Unshelve: scheduled anew, built from the shelved image; the image goes afterwards.
    let r =
        nova_as(&app, &member, "2.79", Method::POST, &format!("/servers/{id}/action"), json!({"unshelve": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let build = take(&app, &a, "build").await;
    assert_eq!(build["action"]["image"]["id"], image.as_str());
    assert_eq!(walk(&show(&app, &id).await), st("SHELVED_OFFLOADED", "shelved_offloaded", Some("unshelving")));
    send(&app, &a, &build, progress("block_device_mapping")).await;
    send(&app, &a, &build, progress("spawning")).await;
    assert_eq!(walk(&show(&app, &id).await), st("SHELVED_OFFLOADED", "shelved_offloaded", Some("spawning")));
    send(&app, &a, &build, done("running")).await;
    let s = show(&app, &id).await;
    assert_eq!(walk(&s), st("ACTIVE", "active", None));
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "img-a");
    assert!(used(&app).await > 0);
    assert_eq!(glance(&app, &image).await.status, StatusCode::NOT_FOUND, "the shelved image is deleted");
    let (_, events) = events_of(&app, &id, "unshelve").await;
    assert_eq!(events, ["compute_unshelve_instance:\"Success\""]);
}

#[tokio::test]
async fn without_offload_unshelve_powers_on_and_shelve_offload_frees_the_host() {
    let app = TestApp::with_config(|c| c.compute.shelved_offload_time = -1).await;
    let a = register(&app, "img-a").await;
    let id = active_server(&app, &a, None).await;
    assert_eq!(act(&app, "2.79", &id, json!({"shelve": {}})).await.status, StatusCode::ACCEPTED);
    let item = take(&app, &a, "image_create").await;
    let image = item["action"]["image_id"].as_str().expect("image").to_string();
    assert_eq!(upload(&app, &a, &image, vec![5; 64]).await, StatusCode::NO_CONTENT);
    send(&app, &a, &item, done("shutdown")).await;
    let s = show(&app, &id).await;
    assert_eq!(walk(&s), st("SHELVED", "shelved", None));
    assert_eq!(s["OS-EXT-STS:power_state"], 4);

    // Not offloaded: unshelve is a power on (Nova's conductor: powering-on, then start).
    let r = act(&app, "2.77", &id, json!({"unshelve": {"availability_zone": "nova"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "an AZ needs an offloaded server: {}", r.body);
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!(
            "Specifying an availability zone or a host when unshelving server \"{id}\" with status \"shelved\" \
             is not supported. The server status must be SHELVED_OFFLOADED."
        )
    );
    assert_eq!(act(&app, "2.79", &id, json!({"unshelve": null})).await.status, StatusCode::ACCEPTED);
    assert_eq!(walk(&show(&app, &id).await), st("SHELVED", "shelved", Some("powering-on")));
    let start = take(&app, &a, "start").await;
    send(&app, &a, &start, done("running")).await;
    assert_eq!(walk(&show(&app, &id).await), st("ACTIVE", "active", None));
    assert_eq!(glance(&app, &image).await.status, StatusCode::NOT_FOUND);
    let (_, events) = events_of(&app, &id, "unshelve").await;
    assert_eq!(events, ["compute_start_instance:\"Success\""]);

    // Shelve again, then offload by an admin.
    assert_eq!(act(&app, "2.79", &id, json!({"shelve": null})).await.status, StatusCode::ACCEPTED);
    let item = take(&app, &a, "image_create").await;
    let image = item["action"]["image_id"].as_str().expect("image").to_string();
    assert_eq!(upload(&app, &a, &image, vec![5; 64]).await, StatusCode::NO_CONTENT);
    send(&app, &a, &item, done("shutdown")).await;
    let r = act(&app, "2.79", &id, json!({"shelveOffload": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(walk(&show(&app, &id).await), st("SHELVED", "shelved", Some("shelving_offloading")));
    let offload = take(&app, &a, "delete").await;
    send(&app, &a, &offload, done("no_state")).await;
    assert_eq!(walk(&show(&app, &id).await), st("SHELVED_OFFLOADED", "shelved_offloaded", None));
    let (_, events) = events_of(&app, &id, "shelveOffload").await;
    assert_eq!(events, ["compute_shelve_offload_instance:\"Success\""]);
    let r = act(&app, "2.79", &id, json!({"shelveOffload": null})).await;
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'shelveOffload' instance {id} while it is in vm_state shelved_offloaded")
    );
    // An unshelve to a zone that does not exist (2.77) is refused; to ours it works.
    let r = act(&app, "2.77", &id, json!({"unshelve": {"availability_zone": "nowhere"}})).await;
    assert_eq!(r.body["badRequest"]["message"], "The requested availability zone is not available", "{}", r.body);
    let r = act(&app, "2.77", &id, json!({"unshelve": {"availability_zone": "nova"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let build = take(&app, &a, "build").await;
    send(&app, &a, &build, failed("no room after all")).await;
    let s = show(&app, &id).await;
    assert_eq!(walk(&s), st("SHELVED_OFFLOADED", "shelved_offloaded", None), "a failed unshelve stays offloaded");
    assert!(s["OS-EXT-SRV-ATTR:host"].is_null());
    assert_eq!(glance(&app, &image).await.status, StatusCode::OK, "the shelved image is kept for the next try");
    // Deleting the shelved server takes its image along.
    let r = nova(&app, "2.79", Method::DELETE, &format!("/servers/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(glance(&app, &image).await.status, StatusCode::NOT_FOUND);
    let _ = server(&app).await;
}

#[tokio::test]
async fn an_image_lists_no_import_tasks() {
    let app = TestApp::new().await;
    let image = base_image(&app).await;
    let r = app.json(Method::GET, &format!("/image/v2/images/{image}/tasks"), &app.admin_token, Value::Null).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({"tasks": []})));
    let r = app.json(Method::GET, "/image/v2/images/nope/tasks", &app.admin_token, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Shelves server `id` on host `a` and answers the snapshot and the offload.
async fn offload(app: &TestApp, a: &Host, id: &str) {
    assert_eq!(act(app, "2.79", id, json!({"shelve": null})).await.status, StatusCode::ACCEPTED);
    let item = take(app, a, "image_create").await;
    let image = item["action"]["image_id"].as_str().expect("image").to_string();
    assert_eq!(upload(app, a, &image, vec![5; 2048]).await, StatusCode::NO_CONTENT);
    send(app, a, &item, done("shutdown")).await;
    let offload = take(app, a, "delete").await;
    send(app, a, &offload, done("no_state")).await;
    assert_eq!(walk(&show(app, id).await), st("SHELVED_OFFLOADED", "shelved_offloaded", None));
}

async fn cinder(app: &TestApp, method: Method, rest: &str, body: Value) -> Reply {
    let r = app.json(Method::GET, "/identity/v3/projects?name=admin", &app.admin_token, Value::Null).await;
    let pid = r.body["projects"][0]["id"].as_str().expect("project").to_string();
    app.json(method, &format!("/volume/v3/{pid}/{rest}"), &app.admin_token, body).await
}

/// A 1 GiB volume made by whichever of `hosts` it was placed on; returns its id and host name.
async fn new_volume(app: &TestApp, hosts: &[&Host]) -> (String, String) {
    let r = cinder(app, Method::POST, "volumes", json!({"volume": {"size": 1}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let vid = r.body["volume"]["id"].as_str().expect("id").to_string();
    let host_id = app.state.store.get_volume(&vid).await.expect("volume").host_id.expect("placed");
    let name = app.state.store.get_host(&host_id).await.expect("host").name;
    let host = hosts.iter().find(|h| h.name == name).expect("one of ours");
    let item = take(app, host, "volume_create").await;
    send(app, host, &item, done("no_state")).await;
    assert_eq!(volume_status(app, &vid).await, ("available".into(), "detached".into()));
    (vid, name)
}

async fn volume_status(app: &TestApp, vid: &str) -> (String, String) {
    let v = cinder(app, Method::GET, &format!("volumes/{vid}"), Value::Null).await.body["volume"].clone();
    let stored = app.state.store.get_volume(vid).await.expect("volume");
    (v["status"].as_str().unwrap_or("").into(), stored.attach_status)
}

#[tokio::test]
async fn volumes_attach_to_and_detach_from_an_offloaded_server_and_follow_it_on_unshelve() {
    let app = TestApp::new().await;
    let a = register(&app, "shv-a").await;
    let id = active_server(&app, &a, None).await;
    // A second host, emptier than the server's: the new volume is placed there.
    let b = register(&app, "shv-b").await;
    let (vid, home) = new_volume(&app, &[&a, &b]).await;
    assert_eq!(home, "shv-b");
    offload(&app, &a, &id).await;
    let attachments = format!("/servers/{id}/os-volume_attachments");
    let body = json!({"volumeAttachment": {"volumeId": vid}});

    // Before 2.20 a shelved server takes no attach or detach (Nova's _check_request_version).
    let r = nova(&app, "2.19", Method::POST, &attachments, body.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'attach_volume' instance {id} while it is in vm_state shelved_offloaded")
    );

    // From 2.20: reserved and completed at once, in-use with no device until the unshelve.
    let r = nova(&app, "2.79", Method::POST, &attachments, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["volumeAttachment"],
        json!({"id": vid, "serverId": id, "volumeId": vid, "device": null, "tag": null,
            "delete_on_termination": false})
    );
    assert_eq!(volume_status(&app, &vid).await, ("in-use".into(), "attached".into()));
    let r = nova(&app, "2.79", Method::GET, &attachments, Value::Null).await;
    let listed = &r.body["volumeAttachments"][0];
    assert_eq!(listed["volumeId"], vid.as_str());
    assert!(listed.get("device").is_none(), "no device key before the unshelve: {listed}");
    let (_, events) = events_of(&app, &id, "attach_volume").await;
    assert!(events.is_empty(), "{events:?}");
    let r = nova(&app, "2.79", Method::POST, &attachments, body.clone()).await;
    assert_eq!(r.body["badRequest"]["message"], format!("Invalid volume: volume {vid} already attached"));

    // A volume of another host than the server's other volumes could never be plugged in with
    // them: refused.
    let (other, other_home) = new_volume(&app, &[&a, &b]).await;
    assert_eq!(other_home, "shv-a");
    let r = nova(&app, "2.79", Method::POST, &attachments, json!({"volumeAttachment": {"volumeId": other}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(volume_status(&app, &other).await, ("available".into(), "detached".into()));

    // Detach: before 2.20 refused; from 2.20 at once, the volume available again.
    let r = nova(&app, "2.19", Method::DELETE, &format!("{attachments}/{vid}"), Value::Null).await;
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Cannot 'detach_volume' instance {id} while it is in vm_state shelved_offloaded")
    );
    let r = nova(&app, "2.79", Method::DELETE, &format!("{attachments}/{vid}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(volume_status(&app, &vid).await, ("available".into(), "detached".into()));
    let r = nova(&app, "2.79", Method::GET, &attachments, Value::Null).await;
    assert_eq!(r.body["volumeAttachments"], json!([]));

    // Attached again, the unshelve goes to the volume's host (not the emptier, former one) and
    // plugs it into the new domain after the root disk.
    assert_eq!(nova(&app, "2.79", Method::POST, &attachments, body).await.status, StatusCode::OK);
    assert_eq!(act(&app, "2.79", &id, json!({"unshelve": null})).await.status, StatusCode::ACCEPTED);
    let build = take(&app, &b, "build").await;
    let devices = &build["action"]["block_devices"];
    assert_eq!(devices.as_array().map(Vec::len), Some(1), "{devices}");
    assert_eq!((devices[0]["volume"]["id"].as_str(), devices[0]["device"].as_str()), (Some(vid.as_str()), Some("vdb")));
    send(&app, &b, &build, done("running")).await;
    let s = show(&app, &id).await;
    assert_eq!((walk(&s), s["OS-EXT-SRV-ATTR:host"].as_str()), (st("ACTIVE", "active", None), Some("shv-b")));
    let r = nova(&app, "2.79", Method::GET, &format!("{attachments}/{vid}"), Value::Null).await;
    assert_eq!(r.body["volumeAttachment"]["device"], "/dev/vdb", "{}", r.body);
    assert_eq!(volume_status(&app, &vid).await, ("in-use".into(), "attached".into()));
    let att = app.state.store.instance_attachments(&id).await.expect("attachments");
    let b_id =
        app.state.store.list_hosts().await.expect("hosts").into_iter().find(|h| h.name == "shv-b").expect("b").id;
    assert_eq!(att[0].host_id.as_deref(), Some(b_id.as_str()), "the attachment records its host");
}

#[tokio::test]
async fn a_volume_attached_before_the_shelve_is_plugged_in_again_on_unshelve() {
    let app = TestApp::new().await;
    let a = register(&app, "shv-one").await;
    let id = active_server(&app, &a, None).await;
    let (vid, _) = new_volume(&app, &[&a]).await;
    let attachments = format!("/servers/{id}/os-volume_attachments");
    let r = nova(&app, "2.79", Method::POST, &attachments, json!({"volumeAttachment": {"volumeId": vid}})).await;
    assert_eq!(r.body["volumeAttachment"]["device"], "/dev/vdb", "{}", r.body);
    let item = take(&app, &a, "volume_attach").await;
    send(&app, &a, &item, done("running")).await;
    offload(&app, &a, &id).await;
    assert_eq!(volume_status(&app, &vid).await, ("in-use".into(), "attached".into()), "it stays attached");
    assert_eq!(act(&app, "2.79", &id, json!({"unshelve": null})).await.status, StatusCode::ACCEPTED);
    let build = take(&app, &a, "build").await;
    let devices = &build["action"]["block_devices"];
    assert_eq!((devices[0]["volume"]["id"].as_str(), devices[0]["device"].as_str()), (Some(vid.as_str()), Some("vdb")));
}

/// Nova's router matches the method with the path: `DELETE /images/` (a blank id) is no
/// route, 404, as tempest's test_delete_image_blank_id expects.
#[tokio::test]
async fn a_method_the_compute_path_lacks_is_not_found() {
    let app = TestApp::new().await;
    for path in ["/images/", "/images", "/servers"] {
        let r = nova(&app, "2.79", Method::DELETE, path, Value::Null).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "DELETE {path}: {}", r.body);
        assert_eq!(r.body["itemNotFound"]["message"], "The resource could not be found.");
    }
}
