//! Issue 17's rebuild, rescue / unrescue, `os-resetState`, and soft delete with `restore` /
//! `forceDelete` end to end: the real server and real agents on libvirt's `test:///default`,
//! the exact state walks (from the timeline), bodies per microversion, instance actions with
//! their events, every refusal in Nova's words, a host failure ending in a defined state, and
//! the reclaim of soft-deleted servers by the conductor's tick with their quota held until then.

use meridian_common::{Client, ClientError};
use meridian_e2e::{Agent, Cloud, Server, prepare_cloud, upload_image_data, wait_hosts_up, wait_server};
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
    let mut c = Client::login(&server.creds(user, "pw", project)).await.expect("login");
    c.compute_version = Some("2.79".into());
    c
}

async fn cloud(server: &Server, hosts: usize) -> (Client, Cloud) {
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, hosts).await;
    (admin, cloud)
}

async fn image(admin: &Client, name: &str, disk_format: &str) -> String {
    let img = admin
        .post(
            "image",
            "/v2/images",
            &json!({"name": name, "disk_format": disk_format, "container_format": "bare", "visibility": "public"}),
        )
        .await
        .expect("image");
    let id = img["id"].as_str().expect("id").to_string();
    upload_image_data(admin, &id, vec![9u8; 256 * 1024]).await;
    id
}

async fn boot(client: &Client, cloud: &Cloud, name: &str) -> String {
    let server = json!({"name": name, "imageRef": cloud.image_id, "flavorRef": "42",
                        "networks": [{"uuid": cloud.network_id}]});
    let r = client.post("compute", "/servers", &json!({"server": server})).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    wait_server(client, &id, &["ACTIVE"], 60).await;
    id
}

async fn act(client: &Client, id: &str, body: Value) -> Result<Value, ClientError> {
    client.post("compute", &format!("/servers/{id}/action"), &body).await
}

fn refused(r: Result<Value, ClientError>, want: StatusCode) -> String {
    match r {
        Err(ClientError::Api { status, message, .. }) if status == want => message,
        other => panic!("expected a {want}, got {other:?}"),
    }
}

/// Waits until the server shows `status` with no task; its body.
async fn settled(client: &Client, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let s = client.get("compute", &format!("/servers/{id}")).await.expect("show");
        if s["server"]["status"] == status && s["server"]["OS-EXT-STS:task_state"].is_null() {
            return s["server"].clone();
        }
        last = s;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{id} did not settle in {status}: {last}");
}

/// The (vm_state, task_state) pairs of the timeline, duplicates folded.
async fn walk(client: &Client, id: &str) -> Vec<(String, Option<String>)> {
    let t = client.get("compute", &format!("/servers/{id}/os-meridian-timeline")).await.expect("timeline");
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for row in t["timeline"].as_array().expect("rows") {
        let pair =
            (row["vm_state"].as_str().unwrap_or_default().to_string(), row["task_state"].as_str().map(str::to_string));
        if out.last() != Some(&pair) {
            out.push(pair);
        }
    }
    out
}

fn pairs(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
    list.iter().map(|(v, t)| (v.to_string(), t.map(str::to_string))).collect()
}

/// The newest instance action and its events.
async fn last_action(client: &Client, id: &str) -> Value {
    let actions = client.get("compute", &format!("/servers/{id}/os-instance-actions")).await.expect("actions");
    let req = actions["instanceActions"][0]["request_id"].as_str().expect("request id").to_string();
    client.get("compute", &format!("/servers/{id}/os-instance-actions/{req}")).await.expect("action")["instanceAction"]
        .clone()
}

#[tokio::test]
async fn rebuild_walks_novas_states_and_keeps_the_ports() {
    let server = Server::start();
    let _agent = Agent::start(&server, "c1");
    let (admin, cloud) = cloud(&server, 1).await;
    let member = member_of(&server, &admin, "m", "pm").await;
    let other = image(&admin, "other", "raw").await;
    let id = boot(&member, &cloud, "rb").await;
    let before = member.get("compute", &format!("/servers/{id}")).await.expect("show")["server"].clone();
    let mut want = walk(&admin, &id).await;

    // 2.79: the full body (2.75+), the new image, name and metadata, the password given.
    let r = act(
        &member,
        &id,
        json!({"rebuild": {"imageRef": other, "name": "rb2", "metadata": {"k": "v"}, "adminPass": "s3cret",
                           "description": "fresh"}}),
    )
    .await
    .expect("rebuild");
    let s = &r["server"];
    assert_eq!(s["image"]["id"], other.as_str(), "{r}");
    assert_eq!((s["name"].as_str(), s["adminPass"].as_str()), (Some("rb2"), Some("s3cret")), "{r}");
    assert_eq!(s["metadata"], json!({"k": "v"}));
    assert_eq!(s["description"], "fresh");
    assert_eq!(s["status"], "REBUILD", "{r}");
    assert!(s.get("OS-EXT-STS:task_state").is_some(), "2.75 shows every attribute: {r}");
    let after = settled(&member, &id, "ACTIVE").await;
    assert_eq!(after["image"]["id"], other.as_str());
    assert_eq!(after["addresses"], before["addresses"], "same ports, same addresses");
    want.extend(pairs(&[
        ("active", Some("rebuilding")),
        ("active", Some("rebuild_block_device_mapping")),
        ("active", Some("rebuild_spawning")),
        ("active", None),
    ]));
    assert_eq!(walk(&admin, &id).await, want, "rebuild");
    let a = last_action(&member, &id).await;
    assert_eq!(a["action"], "rebuild", "{a}");
    assert_eq!(a["events"][0]["event"], "compute_rebuild_instance", "{a}");
    assert_eq!(a["events"][0]["result"], "Success", "{a}");
    // The metadata service sees the new name.
    let meta = admin.get("compute", &format!("/servers/{id}")).await.expect("show")["server"].clone();
    assert_eq!(meta["name"], "rb2");

    // Before 2.75 the reduced body, and a password is made when none is given.
    let mut old = member_of(&server, &admin, "m2", "pm2").await;
    old.compute_version = Some("2.1".into());
    let id_old = boot(&old, &cloud, "rb-old").await;
    let r = act(&old, &id_old, json!({"rebuild": {"imageRef": cloud.image_id}})).await.expect("rebuild 2.1");
    assert!(r["server"]["adminPass"].as_str().is_some_and(|p| !p.is_empty()), "{r}");
    assert!(r["server"].get("OS-EXT-STS:vm_state").is_none(), "{r}");
    settled(&old, &id_old, "ACTIVE").await;
    // 2.1 refuses what later microversions add.
    let msg = refused(
        act(&old, &id_old, json!({"rebuild": {"imageRef": cloud.image_id, "description": "x"}})).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(msg.contains("Additional properties are not allowed"), "{msg}");

    // Image checks, in Nova's words.
    let missing = "00000000-0000-4000-8000-000000000000";
    let msg = refused(act(&member, &id, json!({"rebuild": {"imageRef": missing}})).await, StatusCode::BAD_REQUEST);
    assert_eq!(msg, "Cannot find image for rebuild");
    let msg = refused(act(&member, &id, json!({"rebuild": {"imageRef": "nope"}})).await, StatusCode::BAD_REQUEST);
    assert!(msg.contains("imageRef"), "{msg}");
    let queued = admin
        .post("image", "/v2/images", &json!({"name": "q", "disk_format": "raw", "container_format": "bare"}))
        .await
        .expect("queued image");
    let qid = queued["id"].as_str().expect("id");
    let msg = refused(act(&admin, &id, json!({"rebuild": {"imageRef": qid}})).await, StatusCode::BAD_REQUEST);
    assert_eq!(msg, format!("Image {qid} is not active."));
    let big = admin
        .post(
            "image",
            "/v2/images",
            &json!({"name": "big", "disk_format": "raw", "container_format": "bare", "visibility": "public", "min_ram": 100000}),
        )
        .await
        .expect("big image");
    let bid = big["id"].as_str().expect("id").to_string();
    upload_image_data(&admin, &bid, vec![1u8; 1024]).await;
    let msg = refused(act(&member, &id, json!({"rebuild": {"imageRef": bid}})).await, StatusCode::BAD_REQUEST);
    assert_eq!(msg, "Flavor's memory is too small for requested image.");

    // A stopped server is rebuilt and ends stopped.
    act(&member, &id, json!({"os-stop": null})).await.expect("stop");
    settled(&member, &id, "SHUTOFF").await;
    let mut want = walk(&admin, &id).await;
    act(&member, &id, json!({"rebuild": {"imageRef": cloud.image_id}})).await.expect("rebuild stopped");
    let s = settled(&member, &id, "SHUTOFF").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    assert_eq!(s["image"]["id"], cloud.image_id.as_str());
    want.extend(pairs(&[
        ("stopped", Some("rebuilding")),
        ("stopped", Some("rebuild_block_device_mapping")),
        ("stopped", Some("rebuild_spawning")),
        ("stopped", None),
    ]));
    assert_eq!(walk(&admin, &id).await, want, "rebuild of a stopped server");
    assert_eq!(last_action(&member, &id).await["action"], "rebuild");

    // Locked: non-admins get Nova's 409; a paused server is in the wrong state.
    act(&admin, &id, json!({"lock": null})).await.expect("lock");
    let msg = refused(act(&member, &id, json!({"rebuild": {"imageRef": other}})).await, StatusCode::CONFLICT);
    assert_eq!(msg, format!("Instance {id} is locked"));
    act(&admin, &id, json!({"unlock": null})).await.expect("unlock");
    act(&member, &id, json!({"os-start": null})).await.expect("start");
    settled(&member, &id, "ACTIVE").await;
    act(&member, &id, json!({"pause": null})).await.expect("pause");
    settled(&member, &id, "PAUSED").await;
    let msg = refused(act(&member, &id, json!({"rebuild": {"imageRef": other}})).await, StatusCode::CONFLICT);
    assert_eq!(msg, format!("Cannot 'rebuild' instance {id} while it is in vm_state paused"));
    act(&member, &id, json!({"unpause": null})).await.expect("unpause");
    settled(&member, &id, "ACTIVE").await;

    // The host fails the rebuild (an image format it cannot use): ERROR with a fault, the
    // action in error; a rebuild from ERROR then ends ACTIVE.
    let iso = image(&admin, "iso", "iso").await;
    act(&member, &id, json!({"rebuild": {"imageRef": iso}})).await.expect("rebuild accepted");
    let s = settled(&admin, &id, "ERROR").await;
    assert!(s["fault"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{s}");
    let a = last_action(&admin, &id).await;
    assert_eq!((a["action"].as_str(), a["message"].as_str()), (Some("rebuild"), Some("Error")), "{a}");
    act(&member, &id, json!({"rebuild": {"imageRef": other}})).await.expect("rebuild from error");
    let s = settled(&member, &id, "ACTIVE").await;
    assert_eq!(s["addresses"], before["addresses"]);
}

#[tokio::test]
async fn rescue_and_unrescue_walk_novas_states() {
    let server = Server::start();
    let _agent = Agent::start(&server, "c1");
    let (admin, cloud) = cloud(&server, 1).await;
    let member = member_of(&server, &admin, "m", "pr").await;
    let rescue_image = image(&admin, "rescue", "raw").await;
    let id = boot(&member, &cloud, "rs").await;
    let mut want = walk(&admin, &id).await;

    // 200 with the password (Nova's answer), then RESCUE.
    let r = act(&member, &id, json!({"rescue": {"adminPass": "pw1"}})).await.expect("rescue");
    assert_eq!(r, json!({"adminPass": "pw1"}));
    let s = settled(&member, &id, "RESCUE").await;
    assert_eq!(s["OS-EXT-STS:vm_state"], "rescued");
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    want.extend(pairs(&[("active", Some("rescuing")), ("rescued", None)]));
    assert_eq!(walk(&admin, &id).await, want, "rescue");
    let a = last_action(&member, &id).await;
    assert_eq!(
        (a["action"].as_str(), a["events"][0]["event"].as_str()),
        (Some("rescue"), Some("compute_rescue_instance"))
    );
    for (body, method) in [
        (json!({"rescue": null}), "rescue"),
        (json!({"rebuild": {"imageRef": cloud.image_id}}), "rebuild"),
        (json!({"pause": null}), "pause"),
        (json!({"os-stop": null}), "stop"),
    ] {
        let msg = refused(act(&member, &id, body).await, StatusCode::CONFLICT);
        assert_eq!(msg, format!("Cannot '{method}' instance {id} while it is in vm_state rescued"));
    }

    act(&member, &id, json!({"unrescue": null})).await.expect("unrescue");
    let s = settled(&member, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    want.extend(pairs(&[("rescued", Some("unrescuing")), ("active", None)]));
    assert_eq!(walk(&admin, &id).await, want, "unrescue");
    let msg = refused(act(&member, &id, json!({"unrescue": null})).await, StatusCode::CONFLICT);
    assert_eq!(msg, format!("Cannot 'unrescue' instance {id} while it is in vm_state active"));

    // Another rescue image; a generated password; a stopped server may be rescued too.
    act(&member, &id, json!({"os-stop": null})).await.expect("stop");
    settled(&member, &id, "SHUTOFF").await;
    let r = act(&member, &id, json!({"rescue": {"rescue_image_ref": rescue_image}})).await.expect("rescue image");
    assert!(r["adminPass"].as_str().is_some_and(|p| !p.is_empty()), "{r}");
    settled(&member, &id, "RESCUE").await;
    act(&member, &id, json!({"unrescue": null})).await.expect("unrescue");
    settled(&member, &id, "ACTIVE").await;

    // Bad input and a locked server.
    let msg = refused(
        act(&member, &id, json!({"rescue": {"rescue_image_ref": "00000000-0000-4000-8000-000000000000"}})).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(msg, "Requested rescue image '00000000-0000-4000-8000-000000000000' is not supported");
    let msg = refused(act(&member, &id, json!({"rescue": {"bogus": 1}})).await, StatusCode::BAD_REQUEST);
    assert!(msg.contains("Additional properties"), "{msg}");
    act(&admin, &id, json!({"lock": null})).await.expect("lock");
    let msg = refused(act(&member, &id, json!({"rescue": null})).await, StatusCode::CONFLICT);
    assert_eq!(msg, format!("Instance {id} is locked"));
    // An admin may act on a locked server.
    act(&admin, &id, json!({"rescue": null})).await.expect("admin rescue");
    settled(&admin, &id, "RESCUE").await;
    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete rescued");
    wait_server(&admin, &id, &["DELETED"], 60).await;
}

#[tokio::test]
async fn reset_state_is_for_admins_and_records_its_action() {
    let server = Server::start();
    let _agent = Agent::start(&server, "c1");
    let (admin, cloud) = cloud(&server, 1).await;
    let member = member_of(&server, &admin, "m", "px").await;
    let id = boot(&member, &cloud, "rst").await;
    let msg = refused(act(&member, &id, json!({"os-resetState": {"state": "error"}})).await, StatusCode::FORBIDDEN);
    assert!(msg.contains("reset_state"), "{msg}");
    act(&admin, &id, json!({"os-resetState": {"state": "error"}})).await.expect("reset to error");
    let s = settled(&admin, &id, "ERROR").await;
    assert_eq!(s["OS-EXT-STS:vm_state"], "error");
    let a = last_action(&admin, &id).await;
    assert_eq!(a["action"], "resetState", "{a}");
    assert!(a["events"].as_array().is_some_and(Vec::is_empty), "{a}");
    for bad in [json!({"os-resetState": {"state": "paused"}}), json!({"os-resetState": {}})] {
        refused(act(&admin, &id, bad).await, StatusCode::BAD_REQUEST);
    }
    act(&admin, &id, json!({"os-resetState": {"state": "active"}})).await.expect("reset to active");
    settled(&admin, &id, "ACTIVE").await;
    let w = walk(&admin, &id).await;
    assert_eq!(w[w.len() - 2..], pairs(&[("error", None), ("active", None)]));
}

#[tokio::test]
async fn soft_delete_restore_force_delete_and_reclaim() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("meridian.toml");
    std::fs::write(&config, "[compute]\nreclaim_instance_interval = 4\n").expect("config");
    let server = Server::start_opts(None, &["--config", config.to_str().expect("path")]);
    let _agent = Agent::start(&server, "c1");
    let (admin, cloud) = cloud(&server, 1).await;
    let member = member_of(&server, &admin, "m", "ps").await;
    let id = boot(&member, &cloud, "sd").await;
    let used = |limits: &Value| limits["limits"]["absolute"]["totalInstancesUsed"].as_i64();
    let mut want = walk(&admin, &id).await;

    // A user's DELETE soft-deletes: SOFT_DELETED, powered off, its quota still held.
    member.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    let s = settled(&member, &id, "SOFT_DELETED").await;
    assert_eq!(s["OS-EXT-STS:vm_state"], "soft-delete");
    assert_eq!(s["OS-EXT-STS:power_state"], 4);
    assert_eq!(used(&member.get("compute", "/limits").await.expect("limits")), Some(1));
    want.extend(pairs(&[("active", Some("soft-deleting")), ("soft-delete", None)]));
    assert_eq!(walk(&admin, &id).await, want, "soft delete");
    let a = last_action(&member, &id).await;
    assert_eq!(
        (a["action"].as_str(), a["events"][0]["event"].as_str()),
        (Some("delete"), Some("compute_soft_delete_instance"))
    );
    let msg = refused(act(&member, &id, json!({"os-start": null})).await, StatusCode::CONFLICT);
    assert_eq!(msg, format!("Cannot 'start' instance {id} while it is in vm_state soft-delete"));

    // Restore brings it back running.
    act(&member, &id, json!({"restore": null})).await.expect("restore");
    let s = settled(&member, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:power_state"], 1);
    want.extend(pairs(&[("soft-delete", Some("restoring")), ("active", None)]));
    assert_eq!(walk(&admin, &id).await, want, "restore");
    assert_eq!(last_action(&member, &id).await["action"], "restore");
    let msg = refused(act(&member, &id, json!({"restore": null})).await, StatusCode::CONFLICT);
    assert_eq!(msg, format!("Cannot 'restore' instance {id} while it is in vm_state active"));

    // forceDelete deletes at once.
    member.delete("compute", &format!("/servers/{id}")).await.expect("delete again");
    settled(&member, &id, "SOFT_DELETED").await;
    act(&member, &id, json!({"forceDelete": null})).await.expect("force delete");
    wait_server(&member, &id, &["DELETED"], 60).await;

    // Left alone, the tick reclaims it after the interval; the quota is free then.
    let id2 = boot(&member, &cloud, "sd2").await;
    member.delete("compute", &format!("/servers/{id2}")).await.expect("delete");
    settled(&member, &id2, "SOFT_DELETED").await;
    assert_eq!(used(&member.get("compute", "/limits").await.expect("limits")), Some(1));
    wait_server(&member, &id2, &["DELETED"], 60).await;
    assert_eq!(used(&member.get("compute", "/limits").await.expect("limits")), Some(0));
}
