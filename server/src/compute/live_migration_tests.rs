//! Live migration in process with real SQLite and the real agent routes: scripted agents
//! prepare the destination, move the guest, report progress and obey the control answers, so
//! every walk, claim, port binding and refusal is checked through the API.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::migration_tests::{Agent, action, at, boot, cloud, force_down, migrations, show, used};
use crate::testing::{Reply, TestApp};

/// `os-migrateLive` at `version` as the admin.
async fn live(app: &TestApp, version: &str, id: &str, body: Value) -> Reply {
    let h = [("openstack-api-version", version), ("content-type", "application/json")];
    let body = Body::from(json!({"os-migrateLive": body}).to_string());
    app.call(Method::POST, &format!("/compute/v2.1/servers/{id}/action"), Some(&app.admin_token), &h, body).await
}

async fn at_version(app: &TestApp, version: &str, method: Method, path: &str, body: Value) -> Reply {
    let mut h = vec![("openstack-api-version", version)];
    let b = if body.is_null() {
        Body::empty()
    } else {
        h.push(("content-type", "application/json"));
        Body::from(body.to_string())
    };
    app.call(method, &format!("/compute/v2.1{path}"), Some(&app.admin_token), &h, b).await
}

/// The instance's recorded fault message (the API shows it only in ERROR; Nova records it
/// all the same).
async fn fault(app: &TestApp, id: &str) -> String {
    let f = app.state.store.get_instance(id).await.expect("instance").fault.unwrap_or_default();
    serde_json::from_str::<Value>(&f).ok().and_then(|v| v["message"].as_str().map(String::from)).unwrap_or_default()
}

fn message(r: &Reply) -> String {
    r.body.as_object().and_then(|o| o.values().next()).and_then(|f| f["message"].as_str()).unwrap_or("").to_string()
}

/// What a destination answers to `live_migrate_in`.
fn target() -> Value {
    json!({"libvirt_uri": "qemu+tcp://10.0.0.9/system", "migrate_uri": "tcp://10.0.0.9",
        "domain_name": "instance-b", "disks": {"vda": "/var/lib/meridian/b/disk"}})
}

fn failed(message: &str) -> Value {
    json!({"type": "failed", "message": message, "details": format!("{message} (details)"), "retryable": false})
}

async fn progress(app: &TestApp, agent: &Agent, mid: &str, memory_processed: u64) -> Reply {
    let body = json!({"memory_total_bytes": 1000, "memory_processed_bytes": memory_processed,
        "memory_remaining_bytes": 1000 - memory_processed, "disk_total_bytes": 5000,
        "disk_processed_bytes": 2500, "disk_remaining_bytes": 2500});
    Agent::call(
        app,
        Method::POST,
        &format!("/migrations/{mid}/progress"),
        &agent.cred,
        Body::from(body.to_string()),
        true,
    )
    .await
}

async fn port_host(app: &TestApp, id: &str) -> String {
    let r = app.json(Method::GET, &format!("/network/v2.0/ports?device_id={id}"), &app.admin_token, Value::Null).await;
    r.body["ports"][0]["binding:host_id"].as_str().unwrap_or_default().to_string()
}

/// The port ids in a host's filters feed.
async fn filtered(app: &TestApp, agent: &Agent) -> Vec<String> {
    let path = format!("/hosts/{}/port-filters?wait=0", agent.host);
    let f = Agent::call(app, Method::GET, &path, &agent.cred, Body::empty(), false).await;
    assert_eq!(f.status, StatusCode::OK, "{}", f.body);
    f.body["ports"].as_array().into_iter().flatten().filter_map(|p| p["port_id"].as_str()).map(String::from).collect()
}

/// The events (name, result) of the instance's newest action `name`.
async fn events(app: &TestApp, id: &str, name: &str) -> Vec<(String, String)> {
    let r = at(app, Method::GET, &format!("/servers/{id}/os-instance-actions"), &app.admin_token, Value::Null).await;
    let req = r.body["instanceActions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["action"] == name)
        .and_then(|a| a["request_id"].as_str())
        .unwrap_or_else(|| panic!("no action {name}: {}", r.body))
        .to_string();
    let r =
        at(app, Method::GET, &format!("/servers/{id}/os-instance-actions/{req}"), &app.admin_token, Value::Null).await;
    let mut out: Vec<(String, String)> = r.body["instanceAction"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["event"].as_str().unwrap_or("").into(), e["result"].as_str().unwrap_or("").into()))
        .collect();
    out.sort();
    out
}

fn all(names: &[&str], result: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = names.iter().map(|n| (n.to_string(), result.to_string())).collect();
    v.sort();
    v
}

/// Boots on compute-a, registers compute-b: (app, a, b, server id).
async fn two_hosts() -> (TestApp, Agent, Agent, String) {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let id = boot(&app, &t, &a, &image, &network).await;
    let b = Agent::register(&app, "compute-b").await;
    (app, a, b, id)
}

/// Starts a live migration to compute-b and lets it reach `running`: (work on a, migration uuid, id).
async fn running(app: &TestApp, a: &Agent, b: &Agent, id: &str) -> (Value, String, i64) {
    let r = live(app, "compute 2.79", id, json!({"host": "compute-b", "block_migration": "auto"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let prep = b.expect(app, "live_migrate_in").await;
    b.event(app, &prep, json!({"type": "done", "power_state": "no_state", "console": null, "data": target()})).await;
    let out = a.expect(app, "live_migrate_out").await;
    let uuid = out["action"]["migration_id"].as_str().expect("migration").to_string();
    let mid = app.state.store.get_migration_by_uuid(&uuid).await.expect("migration").id;
    (out, uuid, mid)
}

#[tokio::test]
async fn a_live_migration_moves_the_guest_its_claim_and_ports_and_the_source_cleans_up() {
    let (app, a, b, id) = two_hosts().await;
    let port =
        app.json(Method::GET, &format!("/network/v2.0/ports?device_id={id}"), &app.admin_token, Value::Null).await.body
            ["ports"][0]["id"]
            .as_str()
            .expect("port")
            .to_string();
    assert!(filtered(&app, &b).await.is_empty());

    let r = live(&app, "compute 2.79", &id, json!({"host": null, "block_migration": "auto"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert!(r.bytes.is_empty());
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str()), (Some("MIGRATING"), Some("migrating")));
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((1, 512), (1, 512)));
    let m = &migrations(&app, "").await[0];
    assert_eq!(
        (m["migration_type"].as_str(), m["status"].as_str(), m["source_compute"].as_str(), m["dest_compute"].as_str()),
        (Some("live-migration"), Some("preparing"), Some("compute-a"), Some("compute-b"))
    );
    assert_eq!(m["dest_host"], "10.0.0.9");
    let mid = m["id"].as_i64().expect("id");
    // The destination prepares; its filters name the instance's port from now on.
    let prep = b.expect(&app, "live_migrate_in").await;
    assert_eq!(prep["instance_id"], id.as_str());
    assert_eq!(prep["action"]["spec"]["nics"][0]["port_id"], port.as_str());
    assert_eq!(filtered(&app, &b).await, [port.as_str()]);
    assert_eq!(filtered(&app, &a).await, [port.as_str()]);
    let list = at(&app, Method::GET, &format!("/servers/{id}/migrations"), &app.admin_token, Value::Null).await;
    assert_eq!(list.body["migrations"][0]["status"], "preparing", "{}", list.body);
    b.event(&app, &prep, json!({"type": "done", "power_state": "no_state", "console": null, "data": target()})).await;

    // The source moves the guest to the target the destination named, within Nova's
    // completion timeout (800 s per GiB: 1 GiB disk + 0.5 GiB RAM).
    let out = a.expect(&app, "live_migrate_out").await;
    assert_eq!(out["action"]["target"], target());
    assert_eq!(out["action"]["timeout_secs"], 1200);
    let uuid = out["action"]["migration_id"].as_str().expect("uuid").to_string();
    assert_eq!(migrations(&app, "").await[0]["status"], "running");
    // Only the source reports progress, and only while running.
    assert_eq!(progress(&app, &b, &uuid, 10).await.status, StatusCode::NOT_FOUND);
    assert_eq!(progress(&app, &a, "nope", 10).await.status, StatusCode::NOT_FOUND);
    let bad = Body::from(json!({"memory_total_bytes": "x"}).to_string());
    let r = Agent::call(&app, Method::POST, &format!("/migrations/{uuid}/progress"), &a.cred, bad, true).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = progress(&app, &a, &uuid, 400).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"abort": false, "force_complete": false}));
    let show_m = at(&app, Method::GET, &format!("/servers/{id}/migrations/{mid}"), &app.admin_token, Value::Null).await;
    assert_eq!(show_m.status, StatusCode::OK, "{}", show_m.body);
    let sm = &show_m.body["migration"];
    assert_eq!(
        (
            sm["memory_total_bytes"].as_i64(),
            sm["memory_processed_bytes"].as_i64(),
            sm["memory_remaining_bytes"].as_i64()
        ),
        (Some(1000), Some(400), Some(600))
    );
    assert_eq!((sm["disk_total_bytes"].as_i64(), sm["disk_remaining_bytes"].as_i64()), (Some(5000), Some(2500)));
    assert_eq!(sm["status"], "running");

    // Force completion: the flag reaches the source with its next report.
    let r = at(
        &app,
        Method::POST,
        &format!("/servers/{id}/migrations/{mid}/action"),
        &app.admin_token,
        json!({"force_complete": null}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(progress(&app, &a, &uuid, 900).await.body, json!({"abort": false, "force_complete": true}));

    // The guest arrived.
    let data = json!({"memory_bytes": 1000, "disk_bytes": 5000});
    a.event(&app, &out, json!({"type": "done", "power_state": "running", "console": null, "data": data})).await;
    let s = show(&app, &id).await;
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str(), s["OS-EXT-STS:task_state"].as_str()),
        (Some("ACTIVE"), Some("compute-b"), None)
    );
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((0, 0), (1, 512)));
    assert_eq!(port_host(&app, &id).await, "compute-b");
    assert!(filtered(&app, &a).await.is_empty(), "the source filters it no more");
    let stored = app.state.store.get_migration(mid).await.expect("migration");
    assert_eq!(stored.status, "completed");
    assert_eq!((stored.memory_total, stored.disk_total, stored.disk_remaining), (Some(1000), Some(5000), Some(0)));
    assert_eq!(stored.held_host_id, None);
    let list = at(&app, Method::GET, &format!("/servers/{id}/migrations"), &app.admin_token, Value::Null).await;
    assert_eq!(list.body["migrations"], json!([]), "none in progress");
    // The source removes its copy.
    let clean = a.expect(&app, "migrate_cleanup").await;
    assert_eq!(
        (clean["action"]["migration_id"].as_str(), clean["action"]["remove"].as_bool()),
        (Some(uuid.as_str()), Some(true))
    );
    a.done(&app, &clean, "no_state").await;
    assert!(b.work(&app).await.is_empty());
    assert_eq!(migrations(&app, "").await[0]["status"], "completed");
    assert_eq!(
        events(&app, &id, "live-migration").await,
        all(
            &[
                "conductor_live_migrate_instance",
                "compute_check_can_live_migrate_destination",
                "compute_check_can_live_migrate_source",
                "compute_pre_live_migration",
                "compute_live_migration",
                "compute_post_live_migration_at_destination",
            ],
            "Success"
        )
    );
    assert_eq!(
        events(&app, &id, "live_migration_force_complete").await,
        all(&["compute_live_migration_force_complete"], "Success")
    );
    // Live again, back to compute-a (a forced host before 2.30).
    let r = live(
        &app,
        "compute 2.1",
        &id,
        json!({"host": "compute-a", "block_migration": true, "disk_over_commit": false}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let prep = a.expect(&app, "live_migrate_in").await;
    assert_eq!(prep["instance_id"], id.as_str());
}

#[tokio::test]
async fn live_migration_refusals_follow_the_microversion() {
    let (app, a, b, id) = two_hosts().await;
    let member = app.user_in_project("lm-member", "lm-project", "member").await;
    let cases: [(&str, Value, StatusCode, String); 12] = [
        (
            "compute 2.1",
            json!({"host": null, "block_migration": true}),
            StatusCode::BAD_REQUEST,
            "'disk_over_commit' is a required property".into(),
        ),
        (
            "compute 2.24",
            json!({"host": null, "block_migration": "auto", "disk_over_commit": false}),
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute block_migration".into(),
        ),
        (
            "compute 2.25",
            json!({"host": null, "block_migration": true, "disk_over_commit": false}),
            StatusCode::BAD_REQUEST,
            "('disk_over_commit' was unexpected)".into(),
        ),
        (
            "compute 2.25",
            json!({"block_migration": true}),
            StatusCode::BAD_REQUEST,
            "'host' is a required property".into(),
        ),
        (
            "compute 2.29",
            json!({"host": "compute-b", "block_migration": true, "force": true}),
            StatusCode::BAD_REQUEST,
            "('force' was unexpected)".into(),
        ),
        (
            "compute 2.30",
            json!({"host": null, "block_migration": true, "force": true}),
            StatusCode::BAD_REQUEST,
            "Can't force to a non-provided destination".into(),
        ),
        (
            "compute 2.68",
            json!({"host": "compute-b", "block_migration": true, "force": false}),
            StatusCode::BAD_REQUEST,
            "('force' was unexpected)".into(),
        ),
        (
            "compute 2.79",
            json!({"host": "nowhere", "block_migration": true}),
            StatusCode::BAD_REQUEST,
            "Compute host nowhere could not be found.".into(),
        ),
        (
            "compute 2.79",
            json!({"host": 7, "block_migration": true}),
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute host".into(),
        ),
        ("compute 2.79", json!(true), StatusCode::BAD_REQUEST, "is not of type 'object'".into()),
        ("compute 2.79", json!({"host": null, "block_migration": "maybe"}), StatusCode::BAD_REQUEST, "'auto'".into()),
        // Synchronous before 2.34: the conductor's checks answer 400.
        (
            "compute 2.30",
            json!({"host": "compute-a", "block_migration": true, "force": true}),
            StatusCode::BAD_REQUEST,
            format!("Unable to migrate instance ({id}) to current host (compute-a)."),
        ),
    ];
    for (version, body, status, want) in cases {
        let r = live(&app, version, &id, body.clone()).await;
        assert_eq!(r.status, status, "{version} {body}: {}", r.body);
        assert!(message(&r).contains(&want), "{version} {body}: {}", r.body);
        assert_eq!(show(&app, &id).await["status"], "ACTIVE", "{version} {body}");
    }
    // Admin only (the policy named as Nova's).
    let h = [("openstack-api-version", "compute 2.79"), ("content-type", "application/json")];
    let body = json!({"os-migrateLive": {"host": "compute-b", "block_migration": true}}).to_string();
    let r = app
        .call(Method::POST, &format!("/compute/v2.1/servers/{id}/action"), Some(&member), &h, Body::from(body))
        .await;
    assert!(matches!(r.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND), "{}", r.body);
    // The one synchronous refusal left a migration `error` behind, the server as it was.
    let list = migrations(&app, "?migration_type=live-migration").await;
    assert_eq!(list.len(), 1);
    assert_eq!((list[0]["status"].as_str(), list[0]["source_compute"].as_str()), (Some("error"), Some("compute-a")));
    assert_eq!(events(&app, &id, "live-migration").await, all(&["conductor_live_migrate_instance"], "Error"));
    assert!(fault(&app, &id).await.starts_with("Unable to migrate instance"));

    // Shared storage is refused (Nova's InvalidSharedStorage): 400 before 2.34, an `error`
    // migration and 202 after.
    let want = "compute-a is not on shared storage: Shared storage live-migration requires either shared storage or \
                boot-from-volume with no local disks.";
    let r = live(&app, "compute 2.33", &id, json!({"host": null, "block_migration": false})).await;
    assert_eq!((r.status, message(&r)), (StatusCode::BAD_REQUEST, want.to_string()), "{}", r.body);
    let r = live(&app, "compute 2.34", &id, json!({"host": null, "block_migration": false})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str()), (Some("ACTIVE"), None));
    assert_eq!(fault(&app, &id).await, want);
    assert_eq!(migrations(&app, "").await[0]["status"], "error");
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((1, 512), (0, 0)), "no claim left");
    // A host named without force (2.30+) goes through the scheduler, which never picks the
    // source: NoValidHost.
    let r = live(&app, "compute 2.30", &id, json!({"host": "compute-a", "block_migration": true})).await;
    assert_eq!(
        (r.status, message(&r).as_str()),
        (StatusCode::BAD_REQUEST, "No valid host was found. There are not enough hosts available.")
    );
    // The destination's compute service is down (forced): ComputeServiceUnavailable.
    force_down(&app, "compute-b").await;
    let r = live(
        &app,
        "compute 2.1",
        &id,
        json!({"host": "compute-b", "block_migration": "true", "disk_over_commit": "0"}),
    )
    .await;
    assert_eq!(
        (r.status, message(&r).as_str()),
        (StatusCode::BAD_REQUEST, "Compute service of compute-b is unavailable at this time.")
    );
    // Asynchronous from 2.34: 202, then the migration `error` and the server as it was.
    let r = live(&app, "compute 2.79", &id, json!({"host": null, "block_migration": "auto"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(show(&app, &id).await["status"], "ACTIVE");
    assert_eq!(fault(&app, &id).await, "No valid host was found. There are not enough hosts available.");
    assert!(migrations(&app, "?migration_type=live-migration").await.iter().all(|m| m["status"] == "error"));
    assert!(a.work(&app).await.is_empty() && b.work(&app).await.is_empty(), "no host was asked anything");

    // A stopped server: Nova's 409 naming the action.
    let r = action(&app, &app.admin_token, &id, json!({"os-stop": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let stop = a.expect(&app, "stop").await;
    a.done(&app, &stop, "shutdown").await;
    let r = live(&app, "compute 2.79", &id, json!({"host": null, "block_migration": "auto"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(message(&r), format!("Cannot 'os-migrateLive' instance {id} while it is in vm_state stopped"));
}

#[tokio::test]
async fn a_server_with_a_volume_is_refused() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let id = boot(&app, &app.admin_token.clone(), &a, &image, &network).await;
    let pid =
        app.json(Method::GET, "/identity/v3/projects?name=admin", &app.admin_token, Value::Null).await.body["projects"]
            [0]["id"]
            .as_str()
            .expect("project")
            .to_string();
    let r = app
        .json(Method::POST, &format!("/volume/v3/{pid}/volumes"), &app.admin_token, json!({"volume": {"size": 1}}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let vid = r.body["volume"]["id"].as_str().expect("volume").to_string();
    let create = a.expect(&app, "volume_create").await;
    a.done(&app, &create, "no_state").await;
    let body = json!({"volumeAttachment": {"volumeId": vid}});
    let r = at(&app, Method::POST, &format!("/servers/{id}/os-volume_attachments"), &app.admin_token, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let attach = a.expect(&app, "volume_attach").await;
    a.done(&app, &attach, "running").await;
    let _b = Agent::register(&app, "compute-b").await;
    let r = live(&app, "compute 2.79", &id, json!({"host": null, "block_migration": "auto"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        message(&r),
        format!(
            "Cannot live-migrate instance {id}: its volumes are on compute host compute-a and no other host can reach them."
        )
    );
    assert!(migrations(&app, "?migration_type=live-migration").await.is_empty(), "refused before any record");
}

#[tokio::test]
async fn a_failed_preparation_or_source_leaves_the_guest_on_its_source() {
    let (app, a, b, id) = two_hosts().await;
    // The destination cannot prepare (libvirt's test driver, say).
    let r = live(&app, "compute 2.79", &id, json!({"host": "compute-b", "block_migration": true})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let prep = b.expect(&app, "live_migrate_in").await;
    b.event(&app, &prep, failed("cannot receive a live guest")).await;
    let s = show(&app, &id).await;
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str(), s["OS-EXT-STS:task_state"].as_str()),
        (Some("ACTIVE"), Some("compute-a"), None)
    );
    assert!(fault(&app, &id).await.ends_with("cannot receive a live guest"));
    assert_eq!(migrations(&app, "").await[0]["status"], "error");
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((1, 512), (0, 0)));
    let clean = b.expect(&app, "migrate_cleanup").await;
    assert_eq!(clean["action"]["remove"], true);
    b.done(&app, &clean, "no_state").await;
    assert!(a.work(&app).await.is_empty(), "the source was never asked");
    assert_eq!(
        events(&app, &id, "live-migration").await,
        all(
            &[
                "conductor_live_migrate_instance",
                "compute_check_can_live_migrate_destination",
                "compute_check_can_live_migrate_source",
                "compute_pre_live_migration",
                "compute_rollback_live_migration_at_destination",
            ],
            "Error"
        )
    );
    assert_eq!(port_host(&app, &id).await, "compute-a");
    assert!(filtered(&app, &b).await.is_empty(), "the destination filters it no more");

    // A paused server: the source fails the move; it stays paused on the source.
    let r = action(&app, &app.admin_token, &id, json!({"pause": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let pause = a.expect(&app, "pause").await;
    a.done(&app, &pause, "paused").await;
    let (out, _uuid, _mid) = running(&app, &a, &b, &id).await;
    assert_eq!(show(&app, &id).await["status"], "MIGRATING");
    a.event(&app, &out, failed("migration job failed: connection refused")).await;
    let s = show(&app, &id).await;
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str(), s["OS-EXT-STS:task_state"].as_str()),
        (Some("PAUSED"), Some("compute-a"), None)
    );
    assert_eq!(migrations(&app, "").await[0]["status"], "error");
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((1, 512), (0, 0)));
    let clean = b.expect(&app, "migrate_cleanup").await;
    b.done(&app, &clean, "no_state").await;
    assert!(a.work(&app).await.is_empty());
}

#[tokio::test]
async fn abort_while_running_ends_cancelled_and_at_2_65_while_preparing() {
    let (app, a, b, id) = two_hosts().await;
    let (out, uuid, mid) = running(&app, &a, &b, &id).await;
    let path = format!("/servers/{id}/migrations/{mid}");
    // Before 2.24 there is no such route; force_complete of a paused one is refused.
    assert_eq!(
        at_version(&app, "compute 2.23", Method::DELETE, &path, Value::Null).await.status,
        StatusCode::NOT_FOUND
    );
    let r =
        at_version(&app, "compute 2.24", Method::DELETE, &format!("/servers/{id}/migrations/999"), Value::Null).await;
    assert_eq!((r.status, message(&r)), (StatusCode::NOT_FOUND, format!("Migration 999 not found for instance {id}")));
    let r = at_version(&app, "compute 2.24", Method::DELETE, &path, Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(progress(&app, &a, &uuid, 100).await.body, json!({"abort": true, "force_complete": false}));
    assert_eq!(show(&app, &id).await["status"], "MIGRATING", "until the source has aborted");
    a.event(&app, &out, failed("live migration cancelled")).await;
    let s = show(&app, &id).await;
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str(), s["OS-EXT-STS:task_state"].as_str()),
        (Some("ACTIVE"), Some("compute-a"), None)
    );
    assert_eq!(fault(&app, &id).await, "", "a cancel is no fault");
    assert_eq!(app.state.store.get_migration(mid).await.expect("m").status, "cancelled");
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((1, 512), (0, 0)));
    let clean = b.expect(&app, "migrate_cleanup").await;
    b.done(&app, &clean, "no_state").await;
    assert_eq!(events(&app, &id, "live_migration_cancel").await, all(&["compute_live_migration_abort"], "Success"));
    // Not in progress any more: the abort is refused as Nova's (the task first).
    let r = at_version(&app, "compute 2.24", Method::DELETE, &path, Value::Null).await;
    assert_eq!(
        (r.status, message(&r)),
        (StatusCode::CONFLICT, format!("Cannot 'abort live migration' instance {id} while it is in task_state None"))
    );

    // Preparing: refused before 2.65, cancelled at once from 2.65 (the destination cleaned).
    let r = live(&app, "compute 2.79", &id, json!({"host": null, "block_migration": "auto"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let prep = b.expect(&app, "live_migrate_in").await;
    let mid = migrations(&app, "").await[0]["id"].as_i64().expect("id");
    let path = format!("/servers/{id}/migrations/{mid}");
    let r = at_version(&app, "compute 2.64", Method::DELETE, &path, Value::Null).await;
    assert_eq!(
        (r.status, message(&r)),
        (
            StatusCode::BAD_REQUEST,
            format!(
                "Migration {mid} state of instance {id} is preparing. Cannot abort live migration while the migration \
                 is in this state."
            )
        )
    );
    let r = at_version(&app, "compute 2.65", Method::DELETE, &path, Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str()), (Some("ACTIVE"), None));
    assert_eq!(app.state.store.get_migration(mid).await.expect("m").status, "cancelled");
    assert_eq!(used(&app, "compute-b").await, (0, 0));
    // The late answer of the destination changes nothing; it is told to remove its copy.
    b.event(&app, &prep, json!({"type": "done", "power_state": "no_state", "console": null, "data": target()})).await;
    assert_eq!(app.state.store.get_migration(mid).await.expect("m").status, "cancelled");
    let clean = b.expect(&app, "migrate_cleanup").await;
    b.done(&app, &clean, "no_state").await;
    assert!(a.work(&app).await.is_empty(), "the source never started");
}

#[tokio::test]
async fn force_complete_rules_and_an_overdue_source_are_novas() {
    let (app, a, b, id) = two_hosts().await;
    let (out, uuid, mid) = running(&app, &a, &b, &id).await;
    let path = format!("/servers/{id}/migrations/{mid}/action");
    let fc = json!({"force_complete": null});
    assert_eq!(at_version(&app, "compute 2.21", Method::POST, &path, fc.clone()).await.status, StatusCode::NOT_FOUND);
    let r = at_version(&app, "compute 2.22", Method::POST, &path, json!({"force_complete": 1})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = at_version(&app, "compute 2.22", Method::POST, &format!("/servers/{id}/migrations/77/action"), fc.clone())
        .await;
    assert_eq!((r.status, message(&r)), (StatusCode::BAD_REQUEST, format!("Migration 77 not found for instance {id}")));
    let r = at_version(&app, "compute 2.22", Method::POST, &path, fc.clone()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(progress(&app, &a, &uuid, 10).await.body, json!({"abort": false, "force_complete": true}));

    // The source goes silent past its deadline: the migration `error`, the guest left on the
    // source, the destination cleaned.
    app.state.store.set_instance_deadline(&id, Some("2000-01-01T00:00:00.000000Z")).await.expect("deadline");
    crate::compute::conductor::tick(&app.state).await.expect("tick");
    let s = show(&app, &id).await;
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str(), s["OS-EXT-STS:task_state"].as_str()),
        (Some("ACTIVE"), Some("compute-a"), None)
    );
    assert!(fault(&app, &id).await.contains("did not complete 'live_migration'"), "{s}");
    assert_eq!(app.state.store.get_migration(mid).await.expect("m").status, "error");
    assert_eq!(used(&app, "compute-b").await, (0, 0));
    let clean = b.expect(&app, "migrate_cleanup").await;
    b.done(&app, &clean, "no_state").await;
    // Its late report finds nothing running; its late answer changes nothing.
    assert_eq!(progress(&app, &a, &uuid, 10).await.status, StatusCode::NOT_FOUND);
    a.event(&app, &out, json!({"type": "done", "power_state": "running", "console": null})).await;
    assert_eq!(show(&app, &id).await["OS-EXT-SRV-ATTR:host"], "compute-a");
    // Not running any more: Nova's 409 (the task) then 400 (the migration's state).
    let r = at_version(&app, "compute 2.22", Method::POST, &path, fc.clone()).await;
    assert_eq!(
        (r.status, message(&r)),
        (StatusCode::CONFLICT, format!("Cannot 'force_complete' instance {id} while it is in task_state None"))
    );
}
