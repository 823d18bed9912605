//! The API's breadth: microversions (keys and behaviours per version), the attachments API,
//! extend while attached, per-type quotas, and the fault paths of issue 16.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Cloud, answer, done, failed, work};
use crate::testing::Reply;

impl Cloud {
    /// A Cinder call at microversion 3.`minor`, as the member, or as the admin.
    async fn at(&self, minor: u32, method: Method, rest: &str, body: Value) -> Reply {
        self.at_as(&self.token, minor, method, rest, body).await
    }

    async fn at_as(&self, token: &str, minor: u32, method: Method, rest: &str, body: Value) -> Reply {
        let v = format!("volume 3.{minor}");
        let mut h = vec![("openstack-api-version", v.as_str())];
        let b = if body.is_null() {
            Body::empty()
        } else {
            h.push(("content-type", "application/json"));
            Body::from(body.to_string())
        };
        self.app.call(method, &self.url(rest), Some(token), &h, b).await
    }

    /// A volume plugged into a new server through Nova, the agent's attach answered.
    async fn attached(&self, size: u64) -> (String, String) {
        let vid = self.available_volume("plugged", size).await;
        let sid = self.server(&self.host).await;
        let r = self
            .nova(
                Method::POST,
                &format!("servers/{sid}/os-volume_attachments"),
                json!({"volumeAttachment": {"volumeId": vid}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        answer(&self.app, &self.host, "volume_attach", done()).await;
        assert_eq!(self.volume(&vid).await["status"], "in-use");
        (vid, sid)
    }
}

#[tokio::test]
async fn microversions_change_keys_and_behaviours_as_cinders() {
    let c = Cloud::new().await;
    let r = c.app.call(Method::GET, "/volume/v3/", None, &[], Body::empty()).await;
    assert_eq!(r.body["versions"][0]["version"], "3.48", "{}", r.body);
    assert_eq!(r.body["versions"][0]["min_version"], "3.0");
    let latest = [("openstack-api-version", "volume latest")];
    let r = c.app.call(Method::GET, &c.url("volumes"), Some(&c.token), &latest, Body::empty()).await;
    assert_eq!(r.headers["openstack-api-version"], "volume 3.48");
    assert_eq!(c.at(49, Method::GET, "volumes", Value::Null).await.status, StatusCode::NOT_ACCEPTABLE);

    let vid = c.available_volume("keys", 1).await;
    let path = format!("volumes/{vid}");
    let v = c.at(0, Method::GET, &path, Value::Null).await.body["volume"].clone();
    for key in ["group_id", "provider_id", "shared_targets", "service_uuid"] {
        assert!(v.get(key).is_none(), "{key} at 3.0: {v}");
    }
    let v = c.at(13, Method::GET, &path, Value::Null).await.body["volume"].clone();
    assert!(v["group_id"].is_null() && v.get("group_id").is_some() && v.get("shared_targets").is_none(), "{v}");
    let v = c.at(48, Method::GET, &path, Value::Null).await.body["volume"].clone();
    assert_eq!((v["shared_targets"].as_bool(), v.get("provider_id")), (Some(false), None), "{v}");
    assert!(v.get("service_uuid").is_some_and(Value::is_null), "{v}");
    let admin = c.app.admin_token.clone();
    let v = c.at_as(&admin, 21, Method::GET, &path, Value::Null).await.body["volume"].clone();
    assert!(v.get("provider_id").is_some(), "admins see provider_id from 3.21: {v}");
    let r = c.at(48, Method::GET, "volumes/detail", Value::Null).await;
    assert_eq!(r.body["volumes"][0]["shared_targets"], false, "{}", r.body);

    // 3.12 summary (metadata from 3.36); 404 before.
    assert_eq!(c.at(11, Method::GET, "volumes/summary", Value::Null).await.status, StatusCode::NOT_FOUND);
    c.call(Method::PUT, &format!("volumes/{vid}/metadata"), json!({"metadata": {"tier": "gold"}})).await;
    let r = c.at(12, Method::GET, "volumes/summary", Value::Null).await;
    assert_eq!(r.body, json!({"volume-summary": {"total_count": 1, "total_size": 1}}));
    let r = c.at(36, Method::GET, "volumes/summary", Value::Null).await;
    assert_eq!(r.body["volume-summary"]["metadata"], json!({"tier": ["gold"]}), "{}", r.body);

    // 3.31: unknown filters are a 400 for members; before, they are dropped.
    let r = c.at(30, Method::GET, "volumes?colour=red", Value::Null).await;
    assert_eq!(r.body["volumes"].as_array().map(Vec::len), Some(1), "{}", r.body);
    let r = c.at(31, Method::GET, "volumes?colour=red", Value::Null).await;
    assert_eq!(r.body["badRequest"]["message"], "Invalid filters colour are found in query options.", "{}", r.body);
    let r = c.at_as(&admin, 31, Method::GET, "volumes?colour=red&all_tenants=1", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "admins filter on anything: {}", r.body);
    // 3.34: like filters.
    let r = c.at(34, Method::GET, "volumes?name~=EY", Value::Null).await;
    assert_eq!(r.body["volumes"][0]["id"], vid.as_str(), "{}", r.body);
    let r = c.at(34, Method::GET, "volumes?name~=nope", Value::Null).await;
    assert_eq!(r.body["volumes"], json!([]), "{}", r.body);
    // 3.45: with_count.
    let r = c.at(45, Method::GET, "volumes?with_count=true&limit=0", Value::Null).await;
    assert_eq!((r.body["count"].as_u64(), r.body["volumes"].as_array().map(Vec::len)), (Some(1), Some(0)));
    assert!(c.at(44, Method::GET, "volumes?with_count=true", Value::Null).await.body.get("count").is_none());
    // 3.33 resource filters; 3.47 create from a backup names one that does not exist.
    let r = c.at(33, Method::GET, "resource_filters?resource=attachment", Value::Null).await;
    assert_eq!(r.body["resource_filters"][0]["filters"][0], "volume_id", "{}", r.body);
    let r = c.at(47, Method::POST, "volumes", json!({"volume": {"size": 1, "backup_id": vid}})).await;
    assert_eq!(r.body["itemNotFound"]["message"], format!("Backup {vid} could not be found."), "{}", r.body);
    // The extensions listing names only what is served.
    let r = c.call(Method::GET, "extensions", Value::Null).await;
    let aliases: Vec<&str> =
        r.body["extensions"].as_array().expect("list").iter().filter_map(|e| e["alias"].as_str()).collect();
    assert!(aliases.contains(&"os-quota-sets") && !aliases.contains(&"os-hosts"), "{aliases:?}");
    // 3.23: force delete by query, admins only.
    let r = c.at(23, Method::DELETE, &format!("{path}?force=true"), Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}

#[tokio::test]
async fn the_attachments_api_moves_the_volume_as_cinder() {
    let c = Cloud::new().await;
    let vid = c.available_volume("att", 1).await;
    let server = crate::store::new_uuid();
    let body = json!({"attachment": {"volume_uuid": vid, "instance_uuid": server}});
    assert_eq!(c.at(26, Method::POST, "attachments", body.clone()).await.status, StatusCode::NOT_FOUND);
    // Reserve (no connector).
    let r = c.at(27, Method::POST, "attachments", body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let a = r.body["attachment"].clone();
    let aid = a["id"].as_str().expect("id").to_string();
    assert_eq!((a["status"].as_str(), a["instance"].as_str()), (Some("reserved"), Some(server.as_str())), "{a}");
    assert_eq!((a["connection_info"].clone(), a["attached_at"].clone()), (json!({}), json!("")), "{a}");
    assert_eq!(c.volume(&vid).await["status"], "reserved");
    // A second reservation of a non-multiattach volume is refused.
    let r = c.at(27, Method::POST, "attachments", body.clone()).await;
    assert_eq!(
        r.body["badRequest"]["message"],
        format!(
            "Invalid volume: Volume {vid} status must be available or downloading to reserve, but the current status is reserved."
        ),
        "{}",
        r.body
    );
    // Update with a connector: connection info, attaching.
    let conn = json!({"attachment": {"connector": {"host": "h1", "mountpoint": "/dev/vdc", "mode": "rw"}}});
    let r = c.at(27, Method::PUT, &format!("attachments/{aid}"), conn).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let a = &r.body["attachment"];
    assert_eq!((a["status"].as_str(), a["attach_mode"].as_str()), (Some("attaching"), Some("rw")), "{a}");
    assert_eq!(a["connection_info"]["data"]["volume_id"], vid.as_str(), "{a}");
    assert_eq!(c.volume(&vid).await["status"], "attaching");
    // os-complete is 3.44's.
    let complete = json!({"os-complete": {}});
    let r = c.at(43, Method::POST, &format!("attachments/{aid}/action"), complete.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = c.at(44, Method::POST, &format!("attachments/{aid}/action"), complete).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let v = c.volume(&vid).await;
    assert_eq!(v["status"], "in-use");
    assert_eq!(
        (v["attachments"][0]["attachment_id"].as_str(), v["attachments"][0]["device"].as_str()),
        (Some(aid.as_str()), Some("/dev/vdc")),
        "{v}"
    );
    // Lists, detail, show, filters.
    let r = c.at(27, Method::GET, "attachments", Value::Null).await;
    assert_eq!(r.body["attachments"], json!([{"id": aid, "status": "attached", "instance": server, "volume_id": vid}]));
    let r = c.at(27, Method::GET, &format!("attachments/detail?volume_id={vid}"), Value::Null).await;
    assert_eq!(r.body["attachments"][0]["attach_mode"], "rw", "{}", r.body);
    let r = c.at(27, Method::GET, "attachments?status=reserved", Value::Null).await;
    assert_eq!(r.body["attachments"], json!([]));
    let r = c.at(27, Method::GET, &format!("attachments/{aid}"), Value::Null).await;
    assert_eq!(r.body["attachment"]["status"], "attached", "{}", r.body);
    // In use: not deletable.
    let r = c.call(Method::DELETE, &format!("volumes/{vid}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // Delete: the volume is available again; the remaining attachments are answered.
    let r = c.at(27, Method::DELETE, &format!("attachments/{aid}"), Value::Null).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!({"attachments": []})));
    let v = c.volume(&vid).await;
    assert_eq!((v["status"].as_str(), v["attachments"].as_array().map(Vec::len)), (Some("available"), Some(0)));
    let r = c.at(27, Method::GET, &format!("attachments/{aid}"), Value::Null).await;
    assert_eq!(r.body["itemNotFound"]["message"], format!("Volume attachment {aid} could not be found."));
    // Create with a connector connects at once; bad bodies are 400s.
    let r = c
        .at(27, Method::POST, "attachments", json!({"attachment": {"volume_uuid": vid, "connector": {"host": "h"}}}))
        .await;
    assert_eq!(r.body["attachment"]["status"], "attaching", "{}", r.body);
    let r = c.at(27, Method::POST, "attachments", json!({"attachment": {"volume_uuid": "nope"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = c.at(27, Method::POST, "attachments", json!({"attachment": {"instance_uuid": server}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // Nova's attachment is Nova's to end: 409 as Cinder's ConflictNovaUsingAttachment.
    let (pvid, sid) = c.attached(1).await;
    let r = c.at(27, Method::GET, &format!("attachments?instance_id={sid}"), Value::Null).await;
    let naid = r.body["attachments"][0]["id"].as_str().expect("nova's attachment").to_string();
    let r = c.at(27, Method::DELETE, &format!("attachments/{naid}"), Value::Null).await;
    assert_eq!(
        r.body["conflictingRequest"]["message"],
        format!("Detach volume from instance {sid} using the Compute API")
    );
    let r = c.call(Method::POST, &format!("volumes/{pvid}/action"), json!({"os-detach": {}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = c
        .call(Method::POST, &format!("volumes/{pvid}/action"), json!({"os-terminate_connection": {"connector": {}}}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(c.volume(&pvid).await["status"], "in-use");
}

#[tokio::test]
async fn the_legacy_attach_actions_move_the_volume_as_cinder() {
    let c = Cloud::new().await;
    let vid = c.available_volume("legacy", 1).await;
    let act = |body: Value| {
        let path = format!("volumes/{vid}/action");
        let c = &c;
        async move { c.call(Method::POST, &path, body).await }
    };
    assert_eq!(act(json!({"os-reserve": {}})).await.status, StatusCode::ACCEPTED);
    assert_eq!(c.volume(&vid).await["status"], "attaching");
    let r = act(json!({"os-reserve": {}})).await;
    assert_eq!(
        r.body["badRequest"]["message"],
        "Invalid volume: Volume status must be available to reserve, but the status is attaching."
    );
    act(json!({"os-unreserve": {}})).await;
    assert_eq!(c.volume(&vid).await["status"], "available");
    let r = act(json!({"os-initialize_connection": {"connector": {"host": "h"}}})).await;
    assert_eq!(r.body["connection_info"]["driver_volume_type"], "file", "{}", r.body);
    let server = crate::store::new_uuid();
    let r = act(json!({"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(c.volume(&vid).await["attachments"][0]["server_id"], server.as_str());
    assert_eq!(act(json!({"os-begin_detaching": {}})).await.status, StatusCode::ACCEPTED);
    assert_eq!(c.volume(&vid).await["status"], "detaching");
    act(json!({"os-roll_detaching": {}})).await;
    assert_eq!(c.volume(&vid).await["status"], "in-use");
    assert_eq!(act(json!({"os-terminate_connection": {"connector": {}}})).await.status, StatusCode::ACCEPTED);
    assert_eq!(act(json!({"os-detach": {}})).await.status, StatusCode::ACCEPTED);
    assert_eq!(c.volume(&vid).await["status"], "available");
    // Detaching a volume that is not attached changes nothing (Cinder's asynchronous detach).
    assert_eq!(act(json!({"os-detach": {}})).await.status, StatusCode::ACCEPTED);
    assert_eq!(c.volume(&vid).await["status"], "available");
    let r = act(json!({"os-begin_detaching": {}})).await;
    assert_eq!(
        r.body["badRequest"]["message"],
        "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach."
    );
}

#[tokio::test]
async fn an_attached_volume_extends_through_its_agent_from_3_42() {
    let c = Cloud::new().await;
    let (vid, sid) = c.attached(1).await;
    let action = format!("volumes/{vid}/action");
    let extend = |n: u64| json!({"os-extend": {"new_size": n}});
    let r = c.at(41, Method::POST, &action, extend(2)).await;
    assert_eq!(
        r.body["badRequest"]["message"],
        format!("Invalid volume: Volume {vid} status must be '{{'status': 'available'}}' to extend, currently in-use."),
    );
    // Smaller (or equal) is refused whatever the status.
    let r = c.at(42, Method::POST, &action, extend(1)).await;
    assert_eq!(
        r.body["badRequest"]["message"],
        "Invalid input received: New size for extend must be greater than current size. (current: 1, extended: 1)."
    );
    let r = c.at(42, Method::POST, &action, extend(3)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(c.volume(&vid).await["status"], "extending");
    let item = answer(&c.app, &c.host, "volume_extend", done()).await;
    assert_eq!(item["instance_id"], vid.as_str(), "volume work is keyed by the volume");
    assert_eq!(item["action"]["volume"]["size_gb"], 3);
    assert_eq!(item["action"]["attached"], json!({"instance_id": sid, "device": "vdb"}), "{item}");
    let v = c.volume(&vid).await;
    assert_eq!((v["status"].as_str(), v["size"].as_u64()), (Some("in-use"), Some(3)), "{v}");
    // Nova's record of it, as tempest waits for: extend_volume / compute_extend_volume Success.
    let r = c.nova(Method::GET, &format!("servers/{sid}/os-instance-actions"), Value::Null).await;
    let acts = r.body["instanceActions"].as_array().expect("actions").clone();
    let a = acts.iter().find(|a| a["action"] == "extend_volume").expect("extend_volume action").clone();
    let r = c
        .app
        .call(
            Method::GET,
            &format!("/compute/v2.1/servers/{sid}/os-instance-actions/{}", a["request_id"].as_str().expect("req")),
            Some(&c.app.admin_token),
            &[("openstack-api-version", "compute 2.79")],
            Body::empty(),
        )
        .await;
    let ev = &r.body["instanceAction"]["events"][0];
    assert_eq!(
        (ev["event"].as_str(), ev["result"].as_str()),
        (Some("compute_extend_volume"), Some("Success")),
        "{}",
        r.body
    );

    // A failed resize: error_extending, the size unchanged.
    c.at(42, Method::POST, &action, extend(4)).await;
    answer(&c.app, &c.host, "volume_extend", failed("cannot resize")).await;
    let v = c.volume(&vid).await;
    assert_eq!((v["status"].as_str(), v["size"].as_u64()), (Some("error_extending"), Some(3)), "{v}");
}

#[tokio::test]
async fn per_type_quotas_are_listed_and_enforced() {
    let c = Cloud::new().await;
    let admin = c.app.admin_token.clone();
    let r = c.app.json(Method::POST, &c.url("types"), &admin, json!({"volume_type": {"name": "gold"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let quotas = format!("os-quota-sets/{}", c.pid);
    let r = c
        .app
        .json(Method::PUT, &c.url(&quotas), &admin, json!({"quota_set": {"volumes_gold": 1, "gigabytes_gold": 3}}))
        .await;
    assert_eq!(
        (r.body["quota_set"]["volumes_gold"].as_i64(), r.body["quota_set"]["gigabytes_gold"].as_i64()),
        (Some(1), Some(3)),
        "{}",
        r.body
    );
    let r = c.call(Method::GET, &format!("{quotas}/defaults"), Value::Null).await;
    assert_eq!(r.body["quota_set"]["snapshots_gold"], -1, "{}", r.body);
    let gold = |size: u64| json!({"volume": {"size": size, "volume_type": "gold"}});
    // Over the type's gigabytes, within the project's.
    let r = c.call(Method::POST, "volumes", gold(4)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body["overLimit"]["message"].as_str().expect("m").contains("allowed gigabytes_gold quota"), "{}", r.body);
    let r = c.call(Method::POST, "volumes", gold(2)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["volume"]["id"].as_str().expect("id").to_string();
    answer(&c.app, &c.host, "volume_create", done()).await;
    let r = c.call(Method::POST, "volumes", gold(1)).await;
    assert_eq!(
        r.body["overLimit"]["message"],
        "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes_gold'.",
        "{}",
        r.body
    );
    // Other types are not held by gold's limits.
    c.available_volume("plain", 1).await;
    // Extends count against the type's gigabytes too.
    let r = c.call(Method::POST, &format!("volumes/{id}/action"), json!({"os-extend": {"new_size": 4}})).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_eq!(c.volume(&id).await["status"], "available", "a refused extend changes nothing");
    let r = c.call(Method::GET, &format!("{quotas}?usage=true"), Value::Null).await;
    assert_eq!(r.body["quota_set"]["volumes_gold"], json!({"limit": 1, "in_use": 1, "reserved": 0, "allocated": 0}));
    // Beyond the project's own: 413 naming it.
    c.app.json(Method::PUT, &c.url(&quotas), &admin, json!({"quota_set": {"volumes": 2}})).await;
    let r = c.call(Method::POST, "volumes", json!({"volume": {"size": 1}})).await;
    assert_eq!(
        r.body["overLimit"]["message"],
        "VolumeLimitExceeded: Maximum number of volumes allowed (2) exceeded for quota 'volumes'.",
        "{}",
        r.body
    );
    // A null extra_specs body is Cinder's schema 400.
    let tid = c.call(Method::GET, "types", Value::Null).await.body["volume_types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["name"] == "gold")
        .expect("gold")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let r = c
        .app
        .json(Method::POST, &c.url(&format!("types/{tid}/extra_specs")), &admin, json!({"extra_specs": null}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

#[tokio::test]
async fn an_agent_that_never_answers_an_attach_leaves_no_volume_stuck() {
    let c = Cloud::new().await;
    let vid = c.available_volume("orphan", 1).await;
    let sid = c.server(&c.host).await;
    let r = c
        .nova(
            Method::POST,
            &format!("servers/{sid}/os-volume_attachments"),
            json!({"volumeAttachment": {"volumeId": vid}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(work(&c.app, &c.host).await.len(), 1, "the attach is handed out; the agent dies with it");
    // The store's clock passes the deadline (no sleeping): the tick moves the volume on.
    super::super::work::tick(&c.app.state).await.expect("tick");
    assert_eq!(c.volume(&vid).await["status"], "attaching", "nothing before the deadline");
    sqlx::query("UPDATE volumes SET deadline = '2000-01-01T00:00:00.000000Z' WHERE id = $1")
        .bind(&vid)
        .execute(&mut *c.app.state.store.conn().await.expect("conn"))
        .await
        .expect("update");
    super::super::work::tick(&c.app.state).await.expect("tick");
    assert_eq!(c.volume(&vid).await["status"], "error_attaching");
    // Not deletable while Nova's attachment holds it; Nova's detach recovers it (the agent's
    // detach is idempotent), after which it is deletable.
    let r = c.call(Method::DELETE, &format!("volumes/{vid}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = c.nova(Method::DELETE, &format!("servers/{sid}/os-volume_attachments/{vid}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // The restarted agent works through the queue: the old attach, then the detach.
    let items = work(&c.app, &c.host).await;
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["action"]["type"].as_str()).collect();
    assert!(kinds.contains(&"volume_detach"), "{kinds:?}");
    for i in &items {
        let batch = json!({"events": [{"work_id": i["id"], "event": done()}]});
        let auth = format!("Bearer {}", c.host.credential);
        c.app
            .call(
                Method::POST,
                "/agent/v1/events",
                None,
                &[("authorization", auth.as_str()), ("content-type", "application/json")],
                Body::from(batch.to_string()),
            )
            .await;
    }
    let v = c.volume(&vid).await;
    assert_eq!((v["status"].as_str(), v["attachments"].as_array().map(Vec::len)), (Some("available"), Some(0)), "{v}");
    let r = c.call(Method::DELETE, &format!("volumes/{vid}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
}

#[tokio::test]
async fn metadata_etags_bootable_filters_limits_and_revert_follow_their_versions() {
    let c = Cloud::new().await;
    let vid = c.available_volume("tagged", 1).await;
    let meta = format!("volumes/{vid}/metadata");
    c.call(Method::POST, &meta, json!({"metadata": {"a": "1"}})).await;
    // 3.15: an Etag on the metadata; a stale If-Match is a 412 and changes nothing.
    assert!(c.at(14, Method::GET, &meta, Value::Null).await.headers.get("etag").is_none());
    let r = c.at(15, Method::GET, &meta, Value::Null).await;
    let tag = r.headers.get("etag").and_then(|h| h.to_str().ok()).expect("etag").to_string();
    let put = |tag: String, body: Value| {
        let c = &c;
        let meta = meta.clone();
        async move {
            let h = [
                ("openstack-api-version", "volume 3.15"),
                ("content-type", "application/json"),
                ("if-match", tag.as_str()),
            ];
            c.app.call(Method::PUT, &c.url(&meta), Some(&c.token), &h, Body::from(body.to_string())).await
        }
    };
    let r = put(format!("\"{tag}\""), json!({"metadata": {"b": "2"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = put(format!("\"{tag}\""), json!({"metadata": {"c": "3"}})).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "the tag is stale now: {}", r.body);
    assert_eq!(c.call(Method::GET, &meta, Value::Null).await.body["metadata"], json!({"b": "2"}));
    // Before 3.15 If-Match is not looked at.
    let h = [("openstack-api-version", "volume 3.14"), ("content-type", "application/json"), ("if-match", "\"nope\"")];
    let body = json!({"metadata": {"d": "4"}}).to_string();
    let r = c.app.call(Method::PUT, &c.url(&meta), Some(&c.token), &h, Body::from(body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // 3.2: bootable filters are strict words; before, anything but false means true.
    let r = c.at(1, Method::GET, "volumes?bootable=maybe", Value::Null).await;
    assert_eq!(r.body["volumes"], json!([]), "'maybe' meant true and the volume is not bootable: {}", r.body);
    let r = c.at(1, Method::GET, "volumes?bootable=false", Value::Null).await;
    assert_eq!(r.body["volumes"][0]["id"], vid.as_str(), "{}", r.body);
    let r = c.at(2, Method::GET, "volumes?bootable=maybe", Value::Null).await;
    assert_eq!(r.body["badRequest"]["message"], "Invalid input received: 'bootable = maybe'", "{}", r.body);
    let r = c.at(2, Method::GET, "volumes?bootable=0", Value::Null).await;
    assert_eq!(r.body["volumes"][0]["id"], vid.as_str(), "{}", r.body);

    // 3.39: an admin reads another project's limits; a member's project_id is ignored.
    let admin = c.app.admin_token.clone();
    let path = format!("limits?project_id={}", c.pid);
    let r = c.at_as(&admin, 39, Method::GET, &path, Value::Null).await;
    assert_eq!(r.body["limits"]["absolute"]["totalVolumesUsed"], 1, "{}", r.body);
    let r = c.at_as(&admin, 38, Method::GET, &path, Value::Null).await;
    assert_eq!(r.body["limits"]["absolute"]["totalVolumesUsed"], 0, "the admin's own project: {}", r.body);

    // 3.40: revert needs a snapshot, and none exists (the rest: `tests_revert.rs`).
    let action = format!("volumes/{vid}/action");
    let revert = json!({"revert": {"snapshot_id": vid}});
    let r = c.at(40, Method::POST, &action, revert.clone()).await;
    assert_eq!(r.body["badRequest"]["message"], format!("Volume {vid} doesn't have any snapshots."), "{}", r.body);
    let r = c.at(39, Method::POST, &action, revert).await;
    assert_eq!(r.body["badRequest"]["message"], "There is no such action: revert", "{}", r.body);
}

#[tokio::test]
async fn a_server_deleted_during_an_attached_extend_leaves_the_volume_consistent() {
    let c = Cloud::new().await;
    let (vid, sid) = c.attached(1).await;
    let r = c.at(42, Method::POST, &format!("volumes/{vid}/action"), json!({"os-extend": {"new_size": 2}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    crate::compute::conductor::complete_delete(&c.app.state, &sid).await.expect("delete");
    let v = c.volume(&vid).await;
    assert_eq!((v["status"].as_str(), v["attachments"].as_array().map(Vec::len)), (Some("extending"), Some(0)), "{v}");
    let row = c.app.state.store.get_volume(&vid).await.expect("row");
    assert!(row.deadline.is_some(), "the extend keeps its deadline");
    // The agent's answer lands with no attachment left: available at the new size.
    answer(&c.app, &c.host, "volume_extend", done()).await;
    let v = c.volume(&vid).await;
    assert_eq!((v["status"].as_str(), v["size"].as_u64()), (Some("available"), Some(2)), "{v}");
}

#[path = "tests_revert.rs"]
mod revert;
