//! Rebuild, rescue, reset state and soft delete in-process (real SQLite, no agents): schemas per
//! microversion, refusals in Nova's words, reset state's action, the reclaim by the tick and the
//! quota a soft-deleted server holds. The walks with a host are in `tests/tests/rebuild_rescue.rs`.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::testing::{Reply, TestApp, instance};

async fn act(app: &TestApp, id: &str, version: &str, body: Value) -> Reply {
    let h = [("openstack-api-version", version), ("content-type", "application/json")];
    app.call(
        Method::POST,
        &format!("/compute/v2.1/servers/{id}/action"),
        Some(&app.admin_token),
        &h,
        Body::from(body.to_string()),
    )
    .await
}

fn message(r: &Reply) -> String {
    r.body
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|f| f["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

const ID: &str = "11111111-2222-4333-8444-555555555555";
const IMG: &str = "00000000-0000-4000-8000-000000000001";

#[tokio::test]
async fn rebuild_schema_follows_the_microversion() {
    let app = TestApp::new().await;
    app.state.store.create_instance(&instance(ID), None).await.expect("instance");
    let cases = [
        ("compute 2.1", json!({"rebuild": {}}), "'imageRef' is a required property"),
        ("compute 2.1", json!({"rebuild": {"imageRef": "not-a-uuid"}}), "is not a 'uuid'"),
        ("compute 2.1", json!({"rebuild": {"imageRef": IMG, "description": "d"}}), "('description' was unexpected)"),
        ("compute 2.53", json!({"rebuild": {"imageRef": IMG, "key_name": "k"}}), "('key_name' was unexpected)"),
        ("compute 2.57", json!({"rebuild": {"imageRef": IMG, "personality": []}}), "('personality' was unexpected)"),
        ("compute 2.57", json!({"rebuild": {"imageRef": IMG, "user_data": "%%%"}}), "is not a 'base64'"),
        ("compute 2.62", json!({"rebuild": {"imageRef": IMG, "trusted_image_certificates": ["a"]}}), "unexpected"),
        ("compute 2.1", json!({"rebuild": {"imageRef": IMG, "name": " padded "}}), "name"),
        ("compute 2.1", json!({"rebuild": {"imageRef": IMG, "OS-DCF:diskConfig": "SOMETIMES"}}), "diskConfig"),
        ("compute 2.1", json!({"rebuild": {"imageRef": IMG, "accessIPv4": "1.2.3"}}), "is not a 'ipv4'"),
        // Schema first, then the image: a well-formed id of no image.
        ("compute 2.79", json!({"rebuild": {"imageRef": IMG}}), "Cannot find image for rebuild"),
    ];
    for (version, body, needle) in cases {
        let r = act(&app, ID, version, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{version} {body}: {}", r.body);
        assert!(message(&r).contains(needle), "{version} {body}: {}", r.body);
    }
    // The state table and the lock come before the image checks.
    let paused = "21111111-2222-4333-8444-555555555555";
    app.state
        .store
        .create_instance(&crate::store::instances::Instance { vm_state: "paused".into(), ..instance(paused) }, None)
        .await
        .expect("paused");
    let r = act(&app, paused, "compute 2.79", json!({"rebuild": {"imageRef": IMG}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(message(&r), format!("Cannot 'rebuild' instance {paused} while it is in vm_state paused"));
    let r = act(&app, paused, "compute 2.79", json!({"rescue": null})).await;
    assert_eq!(message(&r), format!("Cannot 'rescue' instance {paused} while it is in vm_state paused"));
    let r = act(&app, paused, "compute 2.79", json!({"unrescue": null})).await;
    assert_eq!(message(&r), format!("Cannot 'unrescue' instance {paused} while it is in vm_state paused"));
    let r = act(&app, paused, "compute 2.79", json!({"restore": null})).await;
    assert_eq!(message(&r), format!("Cannot 'restore' instance {paused} while it is in vm_state paused"));
    let r = act(&app, ID, "compute 2.79", json!({"rescue": {"rescue_image_ref": IMG}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&r), format!("Requested rescue image '{IMG}' is not supported"));
}

#[tokio::test]
async fn reset_state_sets_the_state_clears_the_task_and_records_the_action() {
    let app = TestApp::new().await;
    let busy = crate::store::instances::Instance { task_state: Some("rebuilding".into()), ..instance(ID) };
    app.state.store.create_instance(&busy, None).await.expect("instance");
    let r = act(&app, ID, "compute 2.79", json!({"os-resetState": {"state": "error"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let inst = app.state.store.get_instance(ID).await.expect("instance");
    assert_eq!((inst.vm_state.as_str(), inst.task_state), ("error", None));
    let actions = app.state.store.list_actions(ID).await.expect("actions");
    assert_eq!(actions[0].action, "resetState");
    assert!(actions[0].finish_time.is_some());
    for bad in [json!({"os-resetState": {"state": "paused"}}), json!({"os-resetState": {"state": "active", "x": 1}})] {
        let r = act(&app, ID, "compute 2.79", bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
    let r = act(
        &app,
        "31111111-2222-4333-8444-555555555555",
        "compute 2.79",
        json!({"os-resetState": {"state": "active"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_tick_reclaims_soft_deleted_servers_after_the_interval_and_quota_is_held_until_then() {
    let app = TestApp::with_config(|c| c.compute.reclaim_instance_interval = 60).await;
    let store = &app.state.store;
    let old = ID;
    let young = "41111111-2222-4333-8444-555555555555";
    for id in [old, young] {
        let row = crate::store::instances::Instance { vm_state: "soft-delete".into(), power_state: 4, ..instance(id) };
        store.create_instance(&row, None).await.expect("instance");
    }
    let long_ago = crate::store::fmt_time(chrono::Utc::now() - chrono::Duration::seconds(120));
    store.set_soft_deleted_at(old, Some(&long_ago)).await.expect("soft deleted long ago");
    store.set_soft_deleted_at(young, Some(&crate::store::now())).await.expect("soft deleted now");
    assert_eq!(store.project_usage("p1").await.expect("usage").0, 2, "soft-deleted servers hold their quota");
    super::conductor::tick(&app.state).await.expect("tick");
    // No host: the reclaim deletes locally, as Nova's does when the compute is gone.
    assert_eq!(store.get_instance(old).await.expect("old").deleted, 1, "reclaimed");
    let y = store.get_instance(young).await.expect("young");
    assert_eq!((y.deleted, y.vm_state.as_str()), (0, "soft-delete"), "not yet");
    assert_eq!(store.project_usage("p1").await.expect("usage").0, 1);
    // Restoring one without a host: back to active at once, no longer reclaimable.
    let r = act(&app, young, "compute 2.79", json!({"restore": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let y = store.get_instance(young).await.expect("young");
    assert_eq!((y.vm_state.as_str(), y.task_state), ("active", None));
    assert_eq!(store.soft_deleted_at(young).await.expect("at"), None);
}
