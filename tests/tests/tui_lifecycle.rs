//! The dashboard's worker sending the lifecycle actions of issue 17 to the real server with two
//! real agents (libvirt `test:///default`): rebuild with a new name, rescue/unrescue, resize →
//! revert and resize → confirm, a refused resize in words, cold migration to a chosen host,
//! reset state, soft delete → restore, and evacuate's body (the answer in words). Every final
//! state is read back through the API; every wait has a deadline that only guards against hangs.

use std::time::Duration;

use meridian_e2e::worker::{admin_worker, next as answer};
use meridian_e2e::{Agent, Server, prepare_cloud, upload_image_data, wait_hosts_up, wait_settled};
use meridian_tui::worker::{Kind, Listing, Request, Response, ServerCall, ServerOp};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Sends `req` and expects the cloud to accept `op` for `id`.
async fn accepted(worker: &UnboundedSender<Request>, ui: &mut UnboundedReceiver<Response>, req: Request, op: ServerOp) {
    worker.send(req).expect("send");
    match answer(ui).await {
        Response::Accepted { op: got, .. } => assert_eq!(got, op),
        other => panic!("{op:?} not accepted: {other:?}"),
    }
}

/// Sends `req` and returns the refusal's sentence.
async fn refused(worker: &UnboundedSender<Request>, ui: &mut UnboundedReceiver<Response>, req: Request) -> String {
    worker.send(req).expect("send");
    match answer(ui).await {
        Response::Failed { message, .. } => message,
        other => panic!("expected a refusal: {other:?}"),
    }
}

fn call(id: &str, call: ServerCall) -> Request {
    Request::ServerCall { id: id.to_string(), call }
}

fn action(id: &str, op: ServerOp) -> Request {
    Request::Action { id: id.to_string(), op }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_drives_the_whole_server_lifecycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("meridian.toml");
    // With a reclaim interval a delete soft-deletes, so restore has something to bring back.
    std::fs::write(&config, "[compute]\nreclaim_instance_interval = 3600\n").expect("config");
    let server = Server::start_opts(None, &["--config", config.to_str().expect("path")]);
    let _c1 = Agent::start(&server, "c1");
    let _c2 = Agent::start(&server, "c2");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 2).await;
    let img = admin
        .post(
            "image",
            "/v2/images",
            &json!({"name": "tiny2", "disk_format": "raw", "container_format": "bare", "visibility": "public"}),
        )
        .await
        .expect("image");
    let tiny2 = img["id"].as_str().expect("id").to_string();
    upload_image_data(&admin, &tiny2, vec![3u8; 128 * 1024]).await;
    let created = admin
        .post(
            "compute",
            "/servers",
            &json!({"server": {"name": "vm1", "imageRef": cloud.image_id, "flavorRef": "42",
                "networks": [{"uuid": cloud.network_id}]}}),
        )
        .await
        .expect("create");
    let id = created["server"]["id"].as_str().expect("id").to_string();
    let before = wait_settled(&admin, &id, "ACTIVE", 60).await;
    let (worker, mut ui) = admin_worker(&server).await;

    // Rebuild from another image with a new name: same addresses.
    let rebuild = ServerCall::Rebuild { image_id: tiny2.clone(), name: Some("vm1b".into()) };
    accepted(&worker, &mut ui, call(&id, rebuild), ServerOp::Rebuild).await;
    let s = wait_settled(&admin, &id, "ACTIVE", 60).await;
    assert_eq!((s["name"].as_str(), s["image"]["id"].as_str()), (Some("vm1b"), Some(tiny2.as_str())), "{s}");
    assert_eq!(s["addresses"], before["addresses"], "the ports are kept");

    // Rescue with the default image, then unrescue.
    worker.send(call(&id, ServerCall::Rescue { image_id: None })).expect("send");
    match answer(&mut ui).await {
        Response::Rescued { admin_pass, .. } => assert!(!admin_pass.is_empty()),
        other => panic!("rescue not accepted: {other:?}"),
    }
    wait_settled(&admin, &id, "RESCUE", 60).await;
    accepted(&worker, &mut ui, action(&id, ServerOp::Unrescue), ServerOp::Unrescue).await;
    wait_settled(&admin, &id, "ACTIVE", 60).await;

    // Resize to the same flavor: Nova's 400 in words.
    let same = refused(&worker, &mut ui, call(&id, ServerCall::Resize { flavor_id: "42".into() })).await;
    assert_eq!(same, "resize failed: When resizing, instances must change flavor! (400)");

    // A smaller disk: the cloud's 400 in its own words (a second server on m1.small, 20 GB).
    let big = admin
        .post(
            "compute",
            "/servers",
            &json!({"server": {"name": "vm2", "imageRef": cloud.image_id, "flavorRef": "2",
                "networks": [{"uuid": cloud.network_id}]}}),
        )
        .await
        .expect("create");
    let big = big["server"]["id"].as_str().expect("id").to_string();
    wait_settled(&admin, &big, "ACTIVE", 60).await;
    let smaller = refused(&worker, &mut ui, call(&big, ServerCall::Resize { flavor_id: "84".into() })).await;
    assert_eq!(
        smaller,
        "resize failed: Flavor's disk is smaller than the current disk. Flavor disk is 1073741824 bytes, current \
         disk is 21474836480 bytes. (400)"
    );
    wait_settled(&admin, &big, "ACTIVE", 60).await;

    // Resize → revert: the old flavor back.
    let micro = || ServerCall::Resize { flavor_id: "84".into() };
    accepted(&worker, &mut ui, call(&id, micro()), ServerOp::Resize).await;
    let s = wait_settled(&admin, &id, "VERIFY_RESIZE", 60).await;
    assert_eq!(s["flavor"]["id"], "84", "m1.micro: {s}");
    accepted(&worker, &mut ui, action(&id, ServerOp::RevertResize), ServerOp::RevertResize).await;
    let s = wait_settled(&admin, &id, "ACTIVE", 60).await;
    assert_eq!(s["flavor"]["id"], "42", "m1.nano: {s}");

    // Resize → confirm: the new flavor stays.
    accepted(&worker, &mut ui, call(&id, micro()), ServerOp::Resize).await;
    wait_settled(&admin, &id, "VERIFY_RESIZE", 60).await;
    accepted(&worker, &mut ui, action(&id, ServerOp::ConfirmResize), ServerOp::ConfirmResize).await;
    let s = wait_settled(&admin, &id, "ACTIVE", 60).await;
    assert_eq!(s["flavor"]["id"], "84", "m1.micro: {s}");

    // Cold migration to the other host, named ({"migrate": {"host": …}} at 2.79), confirmed.
    // The target as the dialog offers it: the compute service host of a hypervisor the worker listed.
    let from = s["OS-EXT-SRV-ATTR:host"].as_str().expect("host").to_string();
    worker.send(Request::List(Kind::Hypervisors)).expect("send");
    let Response::Listed(Listing::Hypervisors(hypervisors)) = answer(&mut ui).await else { panic!("hypervisors") };
    let hosts: Vec<String> =
        hypervisors.iter().filter_map(|h| h.raw["service"]["host"].as_str().map(str::to_string)).collect();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    let to = hosts.iter().find(|h| **h != from).expect("another host").clone();
    let to = to.as_str();
    let migrate = ServerCall::Migrate { host: Some(to.into()) };
    accepted(&worker, &mut ui, call(&id, migrate), ServerOp::Migrate).await;
    let s = wait_settled(&admin, &id, "VERIFY_RESIZE", 60).await;
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], to, "{s}");
    accepted(&worker, &mut ui, action(&id, ServerOp::ConfirmResize), ServerOp::ConfirmResize).await;
    let s = wait_settled(&admin, &id, "ACTIVE", 60).await;
    assert_eq!((s["OS-EXT-SRV-ATTR:host"].as_str(), s["flavor"]["id"].as_str()), (Some(to), Some("84")), "{s}");

    // Evacuate from a host that is up: Nova's body, and the cloud's refusal in words.
    let evacuate = refused(&worker, &mut ui, call(&id, ServerCall::Evacuate { host: None })).await;
    eprintln!("evacuate from a host that is up: {evacuate}");
    assert!(evacuate.starts_with("evacuate failed: ") && evacuate.ends_with(')'), "{evacuate}");
    wait_settled(&admin, &id, "ACTIVE", 60).await;

    // Reset state: error, then active again (the database only).
    accepted(&worker, &mut ui, call(&id, ServerCall::ResetState { error: true }), ServerOp::ResetState).await;
    wait_settled(&admin, &id, "ERROR", 60).await;
    accepted(&worker, &mut ui, call(&id, ServerCall::ResetState { error: false }), ServerOp::ResetState).await;
    wait_settled(&admin, &id, "ACTIVE", 60).await;

    // Soft delete, then restore.
    accepted(&worker, &mut ui, action(&id, ServerOp::Delete), ServerOp::Delete).await;
    wait_settled(&admin, &id, "SOFT_DELETED", 60).await;
    accepted(&worker, &mut ui, action(&id, ServerOp::Restore), ServerOp::Restore).await;
    wait_settled(&admin, &id, "ACTIVE", 60).await;

    let acts = admin.get("compute", &format!("/servers/{id}/os-instance-actions")).await.expect("actions");
    let names: Vec<&str> =
        acts["instanceActions"].as_array().expect("list").iter().filter_map(|a| a["action"].as_str()).collect();
    for want in ["rebuild", "rescue", "unrescue", "resize", "revertResize", "confirmResize", "migrate", "restore"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

/// `ctrl-k`'s request: a soft-deleted server is deleted for good by `forceDelete` (not by the
/// reclaim, an hour away): it is gone from the API.
#[tokio::test(flavor = "multi_thread")]
async fn the_worker_force_deletes_a_soft_deleted_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("meridian.toml");
    std::fs::write(&config, "[compute]\nreclaim_instance_interval = 3600\n").expect("config");
    let server = Server::start_opts(None, &["--config", config.to_str().expect("path")]);
    let _c1 = Agent::start(&server, "c1");
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let created = admin
        .post(
            "compute",
            "/servers",
            &json!({"server": {"name": "doomed", "imageRef": cloud.image_id, "flavorRef": "42",
                "networks": [{"uuid": cloud.network_id}]}}),
        )
        .await
        .expect("create");
    let id = created["server"]["id"].as_str().expect("id").to_string();
    wait_settled(&admin, &id, "ACTIVE", 60).await;
    let (worker, mut ui) = admin_worker(&server).await;

    accepted(&worker, &mut ui, action(&id, ServerOp::Delete), ServerOp::Delete).await;
    wait_settled(&admin, &id, "SOFT_DELETED", 60).await;
    accepted(&worker, &mut ui, action(&id, ServerOp::ForceDelete), ServerOp::ForceDelete).await;
    let mut gone = false;
    for _ in 0..600 {
        match admin.get("compute", &format!("/servers/{id}")).await {
            Err(e) if e.status().map(|s| s.as_u16()) == Some(404) => {
                gone = true;
                break;
            }
            Ok(s) => assert_ne!(s["server"]["status"], "ERROR", "{s}"),
            Err(e) => panic!("show: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "{id} was never deleted");
    // It went as `forceDelete` (a second DELETE would delete a soft-deleted server too): one
    // DELETE (the soft delete), then the action.
    let log = server.log_text();
    let deletes = log.lines().filter(|l| l.contains(r#"method=DELETE route="/compute/v2.1/servers/{id}""#)).count();
    let actions = log
        .lines()
        .filter(|l| l.contains(r#"method=POST route="/compute/v2.1/servers/{id}/action""#) && l.contains("status=202"))
        .count();
    assert_eq!((deletes, actions), (1, 1), "{log}");
    let list = admin.get("compute", "/servers/detail?all_tenants=1").await.expect("list");
    assert_eq!(list["servers"].as_array().map(Vec::len), Some(0), "{list}");
    // Once gone, a second force delete is Nova's 404, in words.
    let again = refused(&worker, &mut ui, action(&id, ServerOp::ForceDelete)).await;
    assert!(again.starts_with("force delete failed: ") && again.ends_with("(404)"), "{again}");
}
