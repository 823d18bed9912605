//! 3.40's revert to the latest snapshot through the agent, and the snapshot keys and list
//! options of later microversions.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::super::{Cloud, agent, answer, done, failed, message, work};

impl Cloud {
    async fn revert(&self, volume: &str, snapshot: &str) -> crate::testing::Reply {
        self.at(40, Method::POST, &format!("volumes/{volume}/action"), json!({"revert": {"snapshot_id": snapshot}}))
            .await
    }

    async fn snapshot_status(&self, id: &str) -> String {
        self.snapshot_of(id).await.body["snapshot"]["status"].as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test]
async fn a_revert_walks_the_volume_and_its_latest_snapshot_through_the_agent() {
    let c = Cloud::new().await;
    let vid = c.available_volume("rev", 1).await;
    let sid = c.available_snapshot(&vid, "s").await;
    let r = c.revert(&vid, &sid).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(c.volume(&vid).await["status"], "reverting");
    assert_eq!(c.snapshot_status(&sid).await, "restoring");
    // Neither may be acted on meanwhile.
    let r = c.revert(&vid, &sid).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = c.call(Method::DELETE, &format!("snapshots/{sid}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let item = answer(&c.app, &c.host, "volume_revert", done()).await;
    assert_eq!(item["instance_id"], vid.as_str(), "keyed by the volume");
    assert_eq!(item["action"]["snapshot_id"], sid.as_str());
    assert_eq!(item["action"]["volume"]["id"], vid.as_str());
    assert_eq!(c.volume(&vid).await["status"], "available");
    assert_eq!(c.snapshot_status(&sid).await, "available");
    let vt = c.app.state.store.volume_transitions(&vid).await.expect("transitions");
    assert_eq!(vt, ["creating", "available", "reverting", "available"]);
    let st = c.app.state.store.snapshot_transitions(&sid).await.expect("transitions");
    assert_eq!(st, ["creating", "available", "restoring", "available"]);

    // The agent fails: the volume is in error, the snapshot (untouched) available again.
    let r = c.revert(&vid, &sid).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    answer(&c.app, &c.host, "volume_revert", failed("disk full")).await;
    assert_eq!(c.volume(&vid).await["status"], "error");
    assert_eq!(c.snapshot_status(&sid).await, "available");
    let vt = c.app.state.store.volume_transitions(&vid).await.expect("transitions");
    assert_eq!(vt[4..], ["reverting", "error"]);
    // Cinder's 409 for a volume that is not available.
    let r = c.revert(&vid, &sid).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(
        message(&r),
        format!(
            "Invalid volume: Can't revert volume {vid} to its latest snapshot {sid}. Volume's status must be 'available'."
        )
    );
    // Before 3.40 there is no such action.
    let r = c.at(39, Method::POST, &format!("volumes/{vid}/action"), json!({"revert": {"snapshot_id": sid}})).await;
    assert_eq!(message(&r), "There is no such action: revert", "{}", r.body);
}

#[tokio::test]
async fn a_revert_is_refused_as_cinder_refuses_it() {
    let c = Cloud::new().await;
    let vid = c.available_volume("rev", 1).await;
    let other = c.available_volume("other", 1).await;
    let older = c.available_snapshot(&vid, "older").await;
    let latest = c.available_snapshot(&vid, "latest").await;
    let foreign = c.available_snapshot(&other, "foreign").await;
    let not_latest = |s: &str| format!("Specified snapshot {s} is None or not the latest one of volume {vid}.");

    // Not the volume's latest snapshot, another volume's snapshot, none given.
    let r = c.revert(&vid, &older).await;
    assert_eq!((r.status, message(&r)), (StatusCode::BAD_REQUEST, not_latest(&older)), "{}", r.body);
    let r = c.revert(&vid, &foreign).await;
    assert_eq!((r.status, message(&r)), (StatusCode::BAD_REQUEST, not_latest(&foreign)), "{}", r.body);
    let r = c.at(40, Method::POST, &format!("volumes/{vid}/action"), json!({"revert": {}})).await;
    assert_eq!((r.status, message(&r)), (StatusCode::BAD_REQUEST, not_latest("None")), "{}", r.body);

    // The latest snapshot not available: 409, and the volume's change rolled back.
    c.app.state.store.set_snapshot_status(&latest, &["available"], "error", None, None).await.expect("status");
    let r = c.revert(&vid, &latest).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(
        message(&r),
        format!(
            "Invalid snapshot: Can't revert volume {vid} to its latest snapshot {latest}. Snapshot's status must be \
             'available'."
        )
    );
    assert_eq!(c.volume(&vid).await["status"], "available", "nothing changed");
    c.app.state.store.set_snapshot_status(&latest, &["error"], "available", None, None).await.expect("status");

    // The volume grew since the snapshot: sizes differ.
    let r = c.call(Method::POST, &format!("volumes/{vid}/action"), json!({"os-extend": {"new_size": 2}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    answer(&c.app, &c.host, "volume_extend", done()).await;
    let r = c.revert(&vid, &latest).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        message(&r),
        format!(
            "Can't revert volume {vid} to its latest snapshot {latest}. The volume size must be equal to the snapshot \
             size."
        )
    );

    // An in-use volume (its snapshot forced while attached).
    let (used, _server) = c.attached(1).await;
    let r =
        c.call(Method::POST, "snapshots", json!({"snapshot": {"volume_id": used, "name": "hot", "force": true}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let hot = r.body["snapshot"]["id"].as_str().expect("id").to_string();
    answer(&c.app, &c.host, "snapshot_create", done()).await;
    let r = c.revert(&used, &hot).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(c.volume(&used).await["status"], "in-use");
    assert_eq!(c.snapshot_status(&hot).await, "available");
    assert!(work(&c.app, &c.host).await.is_empty(), "no work for any refusal");
}

#[tokio::test]
async fn a_revert_past_its_deadline_leaves_the_volume_in_error_and_the_snapshot_available() {
    let c = Cloud::new().await;
    let vid = c.available_volume("rev", 1).await;
    let sid = c.available_snapshot(&vid, "s").await;
    let r = c.revert(&vid, &sid).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let items = work(&c.app, &c.host).await;
    assert_eq!(items.len(), 1, "handed out; the agent dies with it");
    super::super::super::work::tick(&c.app.state).await.expect("tick");
    assert_eq!(c.volume(&vid).await["status"], "reverting", "nothing before the deadline");
    let row = c.app.state.store.get_volume(&vid).await.expect("row");
    assert!(row.deadline.is_some(), "the revert has a deadline");
    sqlx::query("UPDATE volumes SET deadline = '2000-01-01T00:00:00.000000Z' WHERE id = $1")
        .bind(&vid)
        .execute(&mut *c.app.state.store.conn().await.expect("conn"))
        .await
        .expect("update");
    super::super::super::work::tick(&c.app.state).await.expect("tick");
    assert_eq!(c.volume(&vid).await["status"], "error");
    assert_eq!(c.snapshot_status(&sid).await, "available");
    let st = c.app.state.store.snapshot_transitions(&sid).await.expect("transitions");
    assert_eq!(st, ["creating", "available", "restoring", "available"]);
    // The agent's late answer does not revive the volume.
    let batch = json!({"events": [{"work_id": items[0]["id"], "event": done()}]});
    let r = agent(&c.app, Method::POST, "/events", &c.host.credential, batch).await;
    assert_eq!(r.body["taken"], 1, "{}", r.body);
    assert_eq!(c.volume(&vid).await["status"], "error");
}

#[tokio::test]
async fn snapshot_keys_filters_sorting_and_counts_follow_their_versions() {
    let c = Cloud::new().await;
    let vid = c.available_volume("keys", 1).await;
    let sid = c.available_snapshot(&vid, "Alpha").await;
    let s2 = c.available_snapshot(&vid, "beta").await;
    let path = format!("snapshots/{sid}");
    // 3.0: the keys as before.
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        k.sort();
        k
    };
    let base = [
        "created_at",
        "description",
        "id",
        "metadata",
        "name",
        "os-extended-snapshot-attributes:progress",
        "os-extended-snapshot-attributes:project_id",
        "size",
        "status",
        "updated_at",
        "volume_id",
    ];
    let r = c.at(0, Method::GET, &path, Value::Null).await;
    assert_eq!(keys(&r.body["snapshot"]), base, "{}", r.body);
    // 3.14: group_snapshot_id; 3.41: user_id too (show, detailed list, create, update).
    let r = c.at(14, Method::GET, &path, Value::Null).await;
    assert_eq!(r.body["snapshot"]["group_snapshot_id"], Value::Null);
    assert!(r.body["snapshot"].get("user_id").is_none(), "{}", r.body);
    let r = c.at(41, Method::GET, &path, Value::Null).await;
    let user = c.app.state.store.get_snapshot(&sid).await.expect("row").user_id;
    assert_eq!(r.body["snapshot"]["user_id"], user.as_str(), "{}", r.body);
    assert!(r.body["snapshot"].as_object().is_some_and(|o| o.contains_key("group_snapshot_id")));
    let r = c.at(41, Method::GET, "snapshots/detail", Value::Null).await;
    assert_eq!(r.body["snapshots"][0]["user_id"], user.as_str(), "{}", r.body);
    let r = c.at(41, Method::GET, "snapshots", Value::Null).await;
    assert!(r.body["snapshots"][0].get("user_id").is_none(), "the summary list is unchanged: {}", r.body);
    let r = c.at(41, Method::PUT, &path, json!({"snapshot": {"description": "d"}})).await;
    assert_eq!(r.body["snapshot"]["user_id"], user.as_str(), "{}", r.body);
    let r = c.at(0, Method::PUT, &path, json!({"snapshot": {"description": "d"}})).await;
    assert!(r.body["snapshot"].get("user_id").is_none(), "{}", r.body);

    // 3.30: sorting by name.
    let r = c.at(29, Method::GET, "snapshots?sort=name:asc", Value::Null).await;
    assert_eq!(message(&r), "Invalid input received: Invalid sort key name", "{}", r.body);
    let r = c.at(30, Method::GET, "snapshots?sort=name:desc", Value::Null).await;
    let ids: Vec<&str> =
        r.body["snapshots"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, [s2.as_str(), sid.as_str()], "{}", r.body);

    // 3.31: unknown filters are a 400; before, they are ignored. 3.34: like filters.
    let r = c.at(30, Method::GET, "snapshots?foo=bar", Value::Null).await;
    assert_eq!(r.body["snapshots"].as_array().map(Vec::len), Some(2), "{}", r.body);
    let r = c.at(31, Method::GET, "snapshots?foo=bar", Value::Null).await;
    assert_eq!(message(&r), "Invalid filters foo are found in query options.", "{}", r.body);
    let r = c.at(31, Method::GET, "snapshots?name~=alp", Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = c.at(34, Method::GET, "snapshots?name~=alp", Value::Null).await;
    let ids: Vec<&str> =
        r.body["snapshots"].as_array().into_iter().flatten().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(ids, [sid.as_str()], "{}", r.body);

    // 3.45: with_count counts every match, whatever the page.
    let r = c.at(45, Method::GET, "snapshots?with_count=true&limit=1", Value::Null).await;
    assert_eq!((r.body["count"].as_u64(), r.body["snapshots"].as_array().map(Vec::len)), (Some(2), Some(1)));
    let r = c.at(45, Method::GET, "snapshots/detail?with_count=true&name=beta", Value::Null).await;
    assert_eq!(r.body["count"], 1, "{}", r.body);
    let r = c.at(44, Method::GET, "snapshots?with_count=true", Value::Null).await;
    assert!(r.body.get("count").is_none(), "{}", r.body);
    let r = c.at(45, Method::GET, "snapshots", Value::Null).await;
    assert!(r.body.get("count").is_none(), "{}", r.body);
}
