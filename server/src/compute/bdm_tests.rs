//! Volumes from images and boot from volume inside the server: `block_device_mapping_v2`
//! parsing and Nova's messages, Cinder's checks of `imageRef`, the agent's image route for a
//! volume create, the build's block_device_mapping phase (volumes made, waited for with a
//! deadline, attached, handed to the agent), locality, and delete_on_termination.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::bdm::{self, Requested};
use crate::store::bfv::Bdm;
use crate::testing::{Reply, TestApp};

fn req(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn parse_err(v: Value, image_given: bool) -> String {
    bdm::parse(&req(v), image_given).expect_err("refused").message
}

#[test]
fn mappings_are_parsed_as_nova_checks_them() {
    let one = |m: Value| json!({"block_device_mapping_v2": [m]});
    let e = parse_err(one(json!({"source_type": "volume", "uuid": "v", "destination_type": "invalid"})), true);
    assert!(e.contains("destination_type") && e.contains("'invalid' is not one of"), "{e}");
    let e = parse_err(one(json!({"source_type": "blank", "uuid": "v", "destination_type": "volume"})), true);
    assert_eq!(e, "Block Device Mapping is Invalid: Invalid device UUID.");
    let e = parse_err(one(json!({"source_type": "volume", "destination_type": "volume"})), true);
    assert_eq!(e, "Block Device Mapping is Invalid: Missing device UUID.");
    let e = parse_err(
        one(json!({"source_type": "image", "uuid": "i", "destination_type": "local", "boot_index": 0})),
        false,
    );
    assert_eq!(e, "Block Device Mapping is Invalid: Mapping image to local is not supported.");
    let e = parse_err(one(json!({"source_type": "volume", "uuid": "v", "bogus": 1})), true);
    assert!(e.contains("Additional properties are not allowed ('bogus' was unexpected)"), "{e}");
    let e = parse_err(one(json!({"source_type": "image", "uuid": "i", "volume_size": 0})), true);
    assert!(e.contains("volume_size"), "{e}");
    let e = parse_err(one(json!({"source_type": "volume", "uuid": "v", "boot_index": "first"})), true);
    assert!(e.contains("boot_index"), "{e}");

    // What the CLI's --block-device sends: strings for numbers and booleans.
    let got = bdm::parse(
        &req(one(json!({"source_type": "volume", "uuid": "v1", "boot_index": "0", "delete_on_termination": "true"}))),
        false,
    )
    .expect("parsed");
    assert_eq!(
        got,
        vec![Requested {
            source_type: "volume".into(),
            destination_type: "volume".into(),
            uuid: Some("v1".into()),
            boot_index: Some(0),
            volume_size: None,
            delete_on_termination: true,
            device_name: None,
            guest_format: None,
        }]
    );
    assert!(bdm::volume_boot(&got));
    // The image boot the CLI sends beside imageRef is no volume boot.
    let image_local = json!({"source_type": "image", "uuid": "i", "destination_type": "local", "boot_index": 0});
    let got = bdm::parse(&req(one(image_local)), true).expect("parsed");
    assert!(!bdm::volume_boot(&got));

    // Boot indexes: 0, 1, … with the image boot counting as 0 when imageRef is given.
    let with = |idx: &[Option<i64>]| -> Vec<Requested> {
        idx.iter().map(|i| Requested { boot_index: *i, ..got_volume() }).collect()
    };
    assert!(bdm::check_boot_sequence(&with(&[Some(0), Some(1)]), false).is_ok());
    assert!(bdm::check_boot_sequence(&with(&[None]), true).is_ok());
    assert!(bdm::check_boot_sequence(&with(&[Some(1)]), true).is_ok());
    for bad in [with(&[None]), with(&[Some(1)]), with(&[Some(0), Some(2)]), with(&[Some(0), Some(0)])] {
        let e = bdm::check_boot_sequence(&bad, false).expect_err("refused").message;
        assert!(e.starts_with("Block Device Mapping is Invalid: Boot sequence"), "{e}");
    }
}

fn got_volume() -> Requested {
    Requested {
        source_type: "volume".into(),
        destination_type: "volume".into(),
        uuid: Some("v".into()),
        boot_index: None,
        volume_size: None,
        delete_on_termination: false,
        device_name: None,
        guest_format: None,
    }
}

#[test]
fn devices_follow_the_boot_volume_and_a_requested_config_drive() {
    let b = |position: i64, boot_index: Option<i64>| Bdm {
        instance_id: "i".into(),
        position,
        source_type: "volume".into(),
        source_id: None,
        volume_id: None,
        volume_size: None,
        boot_index,
        device_name: None,
        delete_on_termination: 0,
        attachment_id: None,
        created_at: String::new(),
    };
    assert_eq!(bdm::devices(&[b(0, Some(0)), b(1, None), b(2, Some(1))], false), ["vda", "vdb", "vdc"]);
    assert_eq!(bdm::devices(&[b(0, Some(0)), b(1, None)], true), ["vda", "vdc"]);
    // An image boot: the image disk is vda, the volumes follow.
    assert_eq!(bdm::devices(&[b(0, None)], false), ["vdb"]);
    // After the flavor's ephemeral and swap disks and the config drive.
    assert_eq!(bdm::devices_after(&[b(0, None)], bdm::local_devices(1, 512, true)), ["vde"]);
}

// ---- through the API, with agents answered here ----

struct Host {
    name: String,
    credential: String,
}

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

async fn register(app: &TestApp, name: &str, disk_gb: u64, memory_mb: u64) -> Host {
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let body = json!({"host": name, "agent_version": "test", "inventory": {
        "vcpus": 8, "memory_mb": memory_mb, "disk_gb": disk_gb, "reserved_vcpus": 0, "reserved_memory_mb": 0,
        "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1, "cpu_arch": "x86_64",
        "libvirt_uri": "test:///default", "host_ip": "127.0.0.1", "supports_networks": true,
        "availability_zone": "nova"}});
    let r = agent(app, Method::POST, "/register", &join, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    Host { name: name.into(), credential: r.body["credential"].as_str().expect("credential").into() }
}

/// The host's open work now (one poll).
async fn work_now(app: &TestApp, host: &Host) -> Vec<Value> {
    let r = agent(app, Method::GET, &format!("/hosts/{}/work?wait=0", host.name), &host.credential, Value::Null).await;
    r.body.as_array().cloned().unwrap_or_default()
}

/// The host's open work, waiting up to 5 s for some to arrive.
async fn work(app: &TestApp, host: &Host) -> Vec<Value> {
    for _ in 0..250 {
        let r =
            agent(app, Method::GET, &format!("/hosts/{}/work?wait=0", host.name), &host.credential, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let items = r.body.as_array().cloned().unwrap_or_default();
        if !items.is_empty() {
            return items;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Vec::new()
}

/// Takes the host's one work item, checks its type, answers it with `event`.
async fn answer(app: &TestApp, host: &Host, kind: &str, event: Value) -> Value {
    let items = work(app, host).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let item = items[0].clone();
    assert_eq!(item["action"]["type"], kind, "{item}");
    reply(app, host, &item, event).await;
    item
}

/// Answers a work item already taken.
async fn reply(app: &TestApp, host: &Host, item: &Value, event: Value) {
    let batch = json!({"events": [{"work_id": item["id"], "event": event}]});
    let r = agent(app, Method::POST, "/events", &host.credential, batch).await;
    assert_eq!(r.body["taken"], 1, "{}", r.body);
}

fn done() -> Value {
    json!({"type": "done", "power_state": "running", "console": null})
}

async fn nova(app: &TestApp, method: Method, path: &str, body: Value) -> Reply {
    let (b, mut h): (Body, Vec<(&str, &str)>) = if body.is_null() {
        (Body::empty(), vec![])
    } else {
        (Body::from(body.to_string()), vec![("content-type", "application/json")])
    };
    h.push(("openstack-api-version", "compute 2.79"));
    app.call(method, &format!("/compute/v2.1{path}"), Some(&app.admin_token), &h, b).await
}

async fn cinder(app: &TestApp, method: Method, rest: &str, body: Value) -> Reply {
    let pid = admin_project(app).await;
    app.json(method, &format!("/volume/v3/{pid}/{rest}"), &app.admin_token, body).await
}

async fn admin_project(app: &TestApp) -> String {
    let r = app.json(Method::GET, "/identity/v3/projects?name=admin", &app.admin_token, Value::Null).await;
    r.body["projects"][0]["id"].as_str().expect("project").to_string()
}

/// An active raw image of `bytes` bytes with `min_disk`.
async fn image(app: &TestApp, bytes: usize, min_disk: i64) -> String {
    let t = app.admin_token.clone();
    let body = json!({"name": "img", "disk_format": "raw", "container_format": "bare", "visibility": "public",
        "min_disk": min_disk, "os_distro": "cirros"});
    let img = app.json(Method::POST, "/image/v2/images", &t, body).await;
    let id = img.body["id"].as_str().expect("image id").to_string();
    let up = app
        .call(
            Method::PUT,
            &format!("/image/v2/images/{id}/file"),
            Some(&t),
            &[("content-type", "application/octet-stream")],
            Body::from(vec![7u8; bytes]),
        )
        .await;
    assert_eq!(up.status, StatusCode::NO_CONTENT);
    id
}

async fn server_status(app: &TestApp, id: &str, want: &str) -> Value {
    for _ in 0..500 {
        let r = nova(app, Method::GET, &format!("/servers/{id}"), Value::Null).await;
        if r.body["server"]["status"] == want {
            return r.body["server"].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{id} never reached {want}");
}

async fn volume(app: &TestApp, id: &str) -> Value {
    let r = cinder(app, Method::GET, &format!("volumes/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["volume"].clone()
}

#[tokio::test]
async fn a_volume_from_an_image_is_made_by_the_agent_that_may_fetch_it() {
    let app = TestApp::new().await;
    let a = register(&app, "bfv-a", 100, 16384).await;
    let img = image(&app, 4096, 2).await;

    // Cinder's checks: the image exists, fits, its min_disk met.
    let r = cinder(&app, Method::POST, "volumes", json!({"volume": {"imageRef": "nope", "size": 2}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["badRequest"]["message"], "Invalid image identifier or unable to access requested image.");
    let r = cinder(&app, Method::POST, "volumes", json!({"volume": {"imageRef": img, "size": 1}})).await;
    assert_eq!(
        r.body["badRequest"]["message"],
        "Invalid input received: Volume size 1GB cannot be smaller than the image minDisk size 2GB."
    );
    // Without a size: the image's min_disk.
    let r = cinder(&app, Method::POST, "volumes", json!({"volume": {"imageRef": img, "name": "fi"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!((r.body["volume"]["size"].as_i64(), r.body["volume"]["bootable"].as_str()), (Some(2), Some("true")));
    let vid = r.body["volume"]["id"].as_str().expect("id").to_string();

    // The agent's work names the image; the agent may fetch it while the work is open.
    let items = work(&app, &a).await;
    let source = &items[0]["action"]["source"];
    assert_eq!((source["type"].as_str(), source["image"]["id"].as_str()), (Some("image"), Some(img.as_str())));
    let r = agent(&app, Method::GET, &format!("/images/{img}/file"), &a.credential, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.bytes.len(), 4096);
    reply(&app, &a, &items[0], done()).await;
    let r = agent(&app, Method::GET, &format!("/images/{img}/file"), &a.credential, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no open work needs it any more");

    let v = volume(&app, &vid).await;
    assert_eq!(v["status"], "available");
    let meta = &v["volume_image_metadata"];
    assert_eq!((meta["image_id"].as_str(), meta["min_disk"].as_str()), (Some(img.as_str()), Some("2")), "{v}");
    assert_eq!((meta["size"].as_str(), meta["os_distro"].as_str()), (Some("4096"), Some("cirros")), "{v}");

    // The image metadata actions.
    let path = format!("volumes/{vid}/action");
    let act = |body: Value| cinder(&app, Method::POST, &path, body);
    let r = act(json!({"os-set_image_metadata": {"metadata": {"k": "v"}}})).await;
    assert_eq!((r.status, r.body["metadata"]["k"].as_str()), (StatusCode::OK, Some("v")), "{}", r.body);
    let r = act(json!({"os-show_image_metadata": null})).await;
    assert_eq!(r.body["metadata"]["image_id"], img.as_str(), "{}", r.body);
    let r = act(json!({"os-unset_image_metadata": {"key": "k"}})).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = act(json!({"os-unset_image_metadata": {"key": "k"}})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert!(volume(&app, &vid).await["volume_image_metadata"].get("k").is_none());
}

#[tokio::test]
async fn a_server_boots_from_a_new_volume_and_takes_it_along_when_deleted() {
    let app = TestApp::new().await;
    let a = register(&app, "bfv-a", 100, 16384).await;
    let img = image(&app, 4096, 0).await;
    // Nova's checks of the mapping against the services.
    let boot = |m: Value| {
        json!({"server": {"name": "b", "imageRef": "", "flavorRef": "1", "networks": "none",
        "block_device_mapping_v2": [m]}})
    };
    let r = nova(
        &app,
        Method::POST,
        "/servers",
        boot(json!({"source_type": "image", "uuid": img, "boot_index": 0, "destination_type": "volume"})),
    )
    .await;
    assert_eq!(
        r.body["badRequest"]["message"],
        "Images with destination_type 'volume' need to have a non-zero size specified"
    );
    let r = nova(
        &app,
        Method::POST,
        "/servers",
        boot(json!({"source_type": "volume", "uuid": "00000000-0000-0000-0000-000000000000", "boot_index": 0})),
    )
    .await;
    assert_eq!(r.body["badRequest"]["message"], "Volume 00000000-0000-0000-0000-000000000000 could not be found.");
    let r = nova(
        &app,
        Method::POST,
        "/servers",
        boot(json!({"source_type": "snapshot", "uuid": "s1", "boot_index": 0, "volume_size": 1})),
    )
    .await;
    assert_eq!(r.body["badRequest"]["message"], "Block Device Mapping is Invalid: failed to get snapshot s1.");

    let body = boot(json!({"source_type": "image", "uuid": img, "boot_index": 0, "destination_type": "volume",
        "volume_size": 3, "delete_on_termination": true}));
    let r = nova(&app, Method::POST, "/servers", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();

    // The block_device_mapping phase: the volume made on the build's host from the image…
    let create = answer(&app, &a, "volume_create", done()).await;
    assert_eq!(create["action"]["volume"]["size_gb"], 3);
    assert_eq!(create["action"]["source"]["image"]["id"], img.as_str());
    // …then the build, with the volume as its root disk.
    let build = work(&app, &a).await;
    assert_eq!(build[0]["action"]["type"], "build", "{build:?}");
    let devices = build[0]["action"]["block_devices"].as_array().cloned().expect("block devices");
    let vid = create["instance_id"].as_str().expect("volume id").to_string();
    assert_eq!(devices.len(), 1);
    assert_eq!((devices[0]["device"].as_str(), devices[0]["boot_index"].as_i64()), (Some("vda"), Some(0)));
    assert_eq!(devices[0]["volume"]["id"], vid.as_str());
    let v = volume(&app, &vid).await;
    assert_eq!((v["status"].as_str(), v["attachments"][0]["device"].as_str()), (Some("in-use"), Some("/dev/vda")));
    reply(&app, &a, &build[0], done()).await;
    let s = server_status(&app, &id, "ACTIVE").await;
    assert_eq!(s["image"], "", "{s}");
    assert_eq!(s["os-extended-volumes:volumes_attached"], json!([{"id": vid, "delete_on_termination": true}]));
    let states: Vec<Option<String>> = app
        .state
        .store
        .transitions_after(&id, None, "")
        .await
        .expect("timeline")
        .into_iter()
        .map(|t| t.task_state)
        .collect();
    assert!(states.contains(&Some("block_device_mapping".into())), "{states:?}");
    let r = nova(&app, Method::GET, &format!("/servers/{id}/os-volume_attachments"), Value::Null).await;
    assert_eq!(r.body["volumeAttachments"][0]["volumeId"], vid.as_str(), "{}", r.body);
    assert_eq!(r.body["volumeAttachments"][0]["delete_on_termination"], true, "{}", r.body);
    let r = nova(&app, Method::GET, &format!("/servers/{id}/os-volume_attachments/{vid}"), Value::Null).await;
    assert_eq!(r.body["volumeAttachment"]["delete_on_termination"], true, "{}", r.body);
    let r = nova(&app, Method::DELETE, &format!("/servers/{id}/os-volume_attachments/{vid}"), Value::Null).await;
    assert_eq!(r.body["badRequest"]["message"], "Cannot detach a root device volume", "{}", r.body);

    // Deleting the server deletes the volume too.
    let r = nova(&app, Method::DELETE, &format!("/servers/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    answer(&app, &a, "delete", done()).await;
    let del =
        answer(&app, &a, "volume_delete", json!({"type": "done", "power_state": "no_state", "console": null})).await;
    assert_eq!(del["instance_id"], vid.as_str());
    let r = cinder(&app, Method::GET, &format!("volumes/{vid}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_instance_goes_where_its_volume_is_and_a_kept_volume_outlives_it() {
    let app = TestApp::new().await;
    // The scheduler prefers a (more RAM); volumes go to b (more disk).
    let a = register(&app, "bfv-a", 100, 65536).await;
    let b = register(&app, "bfv-b", 400, 16384).await;
    let img = image(&app, 4096, 0).await;
    let r = cinder(&app, Method::POST, "volumes", json!({"volume": {"imageRef": img, "size": 1}})).await;
    let vid = r.body["volume"]["id"].as_str().expect("id").to_string();
    answer(&app, &b, "volume_create", done()).await;

    let body = json!({"server": {"name": "b", "flavorRef": "1", "networks": "none",
        "block_device_mapping_v2": [{"source_type": "volume", "uuid": vid, "boot_index": 0, "destination_type": "volume"}]}});
    let r = nova(&app, Method::POST, "/servers", body.clone()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();
    // Reserved at once: a second server cannot take it.
    let r2 = nova(&app, Method::POST, "/servers", body).await;
    assert_eq!(r2.status, StatusCode::BAD_REQUEST, "{}", r2.body);
    assert!(r2.body["badRequest"]["message"].as_str().unwrap_or_default().contains("status must be 'available'"));

    let build = answer(&app, &b, "build", done()).await;
    assert_eq!(build["action"]["block_devices"][0]["volume"]["id"], vid.as_str());
    assert!(work_now(&app, &a).await.is_empty(), "nothing for the other host");
    let s = server_status(&app, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "bfv-b", "{s}");
    assert_eq!(s["os-extended-volumes:volumes_attached"], json!([{"id": vid, "delete_on_termination": false}]));

    let r = nova(&app, Method::DELETE, &format!("/servers/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    answer(&app, &b, "delete", done()).await;
    assert_eq!(volume(&app, &vid).await["status"], "available");
    // Its work is all done: a kept volume is not deleted.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(work_now(&app, &b).await.is_empty(), "a kept volume is not deleted");
    assert!(app.state.store.instance_bdms(&id).await.expect("bdms").is_empty());
}

#[tokio::test]
async fn volumes_on_two_hosts_and_a_volume_never_made_end_the_build_with_a_fault() {
    let app = TestApp::with_config(|c| c.compute.build_timeout_secs = 2).await;
    let a = register(&app, "bfv-a", 100, 16384).await;
    let b = register(&app, "bfv-b", 100, 16384).await;
    let img = image(&app, 4096, 0).await;
    // Two volumes, one per host (each goes where there is most room).
    let mut vols = Vec::new();
    let mut on = Vec::new();
    for _ in 0..2 {
        let r = cinder(&app, Method::POST, "volumes", json!({"volume": {"size": 1}})).await;
        let vid = r.body["volume"]["id"].as_str().expect("id").to_string();
        let host = app.state.store.get_volume(&vid).await.expect("volume").host_id.expect("placed");
        let agent_host = if app.state.store.get_host(&host).await.expect("host").name == a.name { &a } else { &b };
        answer(&app, agent_host, "volume_create", done()).await;
        on.push(host);
        vols.push(vid);
    }
    assert_ne!(on[0], on[1], "each volume went where there was most room");
    let body = json!({"server": {"name": "split", "imageRef": img, "flavorRef": "1", "networks": "none",
        "block_device_mapping_v2": [
            {"source_type": "volume", "uuid": vols[0], "destination_type": "volume"},
            {"source_type": "volume", "uuid": vols[1], "destination_type": "volume"}]}});
    let r = nova(&app, Method::POST, "/servers", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let s = server_status(&app, r.body["server"]["id"].as_str().expect("id"), "ERROR").await;
    assert!(s["fault"]["message"].as_str().unwrap_or_default().contains("stored on different compute hosts"), "{s}");

    // A new volume whose creation never finishes: the build's deadline ends the wait.
    let body = json!({"server": {"name": "stuck", "imageRef": "", "flavorRef": "1", "networks": "none",
        "block_device_mapping_v2": [{"source_type": "blank", "boot_index": 1, "destination_type": "volume", "volume_size": 1},
            {"source_type": "image", "uuid": img, "boot_index": 0, "destination_type": "volume", "volume_size": 1}]}});
    let r = nova(&app, Method::POST, "/servers", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let s = server_status(&app, r.body["server"]["id"].as_str().expect("id"), "ERROR").await;
    let fault = s["fault"]["message"].as_str().unwrap_or_default();
    assert!(fault.contains("did not finish being created") && fault.contains("creating"), "{s}");
}

/// The flavor's ephemeral and swap disks take vdb and vdc (Nova's order), the config drive
/// the next name, volumes the names after them: as the agent lays the domain out.
#[test]
fn volumes_follow_the_flavors_local_disks() {
    assert_eq!(bdm::local_devices(0, 0, false), ["vda"]);
    assert_eq!(bdm::local_devices(1, 512, true), ["vda", "vdb", "vdc", "vdd"]);
    assert_eq!(bdm::local_devices(0, 512, false), ["vda", "vdb"]);
}

// ---- snapshots of volume-backed servers (Nova's snapshot_volume_backed) ----

/// A server booted from a new 1 GB volume made from `img` (delete_on_termination), ACTIVE on
/// `host`; returns (server id, volume id).
async fn volume_backed_server(app: &TestApp, host: &Host, img: &str) -> (String, String) {
    let body = json!({"server": {"name": "vb", "imageRef": "", "flavorRef": "1", "networks": "none",
        "block_device_mapping_v2": [{"source_type": "image", "uuid": img, "boot_index": 0,
            "destination_type": "volume", "volume_size": 1, "delete_on_termination": true}]}});
    let r = nova(app, Method::POST, "/servers", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();
    let create = answer(app, host, "volume_create", done()).await;
    answer(app, host, "build", done()).await;
    server_status(app, &id, "ACTIVE").await;
    (id, create["instance_id"].as_str().expect("volume id").to_string())
}

async fn create_image_as(app: &TestApp, version: &str, id: &str, name: &str) -> Reply {
    let body = json!({"createImage": {"name": name, "metadata": {"purpose": "test"}}});
    let h = [("content-type", "application/json"), ("openstack-api-version", version)];
    let path = format!("/compute/v2.1/servers/{id}/action");
    app.call(Method::POST, &path, Some(&app.admin_token), &h, Body::from(body.to_string())).await
}

async fn glance_image(app: &TestApp, id: &str) -> Reply {
    app.json(Method::GET, &format!("/image/v2/images/{id}"), &app.admin_token, Value::Null).await
}

async fn snapshots_named(app: &TestApp, name: &str) -> Vec<Value> {
    let r = cinder(app, Method::GET, "snapshots/detail", Value::Null).await;
    r.body["snapshots"].as_array().cloned().unwrap_or_default().into_iter().filter(|s| s["name"] == name).collect()
}

async fn action_events(app: &TestApp, id: &str, action: &str) -> (Value, Vec<Value>) {
    let r = nova(app, Method::GET, &format!("/servers/{id}/os-instance-actions"), Value::Null).await;
    let actions = r.body["instanceActions"].as_array().cloned().unwrap_or_default();
    let a = actions.into_iter().find(|a| a["action"] == action).expect("action");
    let req = a["request_id"].as_str().expect("request id");
    let r = nova(app, Method::GET, &format!("/servers/{id}/os-instance-actions/{req}"), Value::Null).await;
    (r.body["instanceAction"].clone(), r.body["instanceAction"]["events"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn a_volume_backed_server_snapshots_its_volumes_and_a_server_boots_from_the_image() {
    let app = TestApp::new().await;
    let a = register(&app, "bfv-a", 100, 16384).await;
    let img = image(&app, 4096, 0).await;
    let (id, vid) = volume_backed_server(&app, &a, &img).await;

    // createBackup: Nova's refusal.
    let r = nova(
        &app,
        Method::POST,
        &format!("/servers/{id}/action"),
        json!({"createBackup": {"name": "b", "backup_type": "daily", "rotation": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["badRequest"]["message"], "Backup is not supported for volume-backed instances.");

    // createImage: a forced snapshot of the in-use volume, which the request waits for.
    let (r, snap_work) = tokio::join!(create_image_as(&app, "compute 2.45", &id, "snap1"), async {
        let item = answer(&app, &a, "snapshot_create", done()).await;
        assert_eq!(item["action"]["volume"]["id"], vid.as_str(), "{item}");
        assert_eq!(item["action"]["instance_id"], id.as_str(), "the guest is paused for the copy: {item}");
        item
    });
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let image_id = r.body["image_id"].as_str().expect("image id").to_string();
    let snaps = snapshots_named(&app, "snapshot for snap1").await;
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let snap_id = snaps[0]["id"].as_str().expect("snapshot id").to_string();
    assert_eq!(snap_work["action"]["snapshot_id"], snap_id.as_str());
    assert_eq!((snaps[0]["volume_id"].as_str(), snaps[0]["status"].as_str()), (Some(vid.as_str()), Some("available")));

    // The image: no data, active, Nova's properties.
    let g = glance_image(&app, &image_id).await.body;
    assert_eq!((g["status"].as_str(), g["size"].as_i64()), (Some("active"), Some(0)), "{g}");
    assert_eq!((g["disk_format"].as_str(), g["container_format"].as_str()), (Some("raw"), Some("bare")), "{g}");
    assert_eq!(g["checksum"], "d41d8cd98f00b204e9800998ecf8427e", "the checksum of no data: {g}");
    assert_eq!((g["bdm_v2"].as_str(), g["root_device_name"].as_str()), (Some("True"), Some("/dev/vda")), "{g}");
    assert_eq!((g["os_distro"].as_str(), g["purpose"].as_str()), (Some("cirros"), Some("test")), "{g}");
    assert_eq!(g["base_image_ref"], "", "{g}");
    for absent in ["image_type", "instance_uuid", "image_location"] {
        assert!(g.get(absent).is_none(), "Nova's volume-backed snapshot has no {absent}: {g}");
    }
    let expected = format!(
        "[{{\"source_type\": \"snapshot\", \"destination_type\": \"volume\", \"guest_format\": null, \
         \"device_type\": \"disk\", \"disk_bus\": \"virtio\", \"boot_index\": 0, \"device_name\": \"/dev/vda\", \
         \"delete_on_termination\": true, \"snapshot_id\": \"{snap_id}\", \"volume_id\": null, \"volume_size\": 1, \
         \"image_id\": null, \"no_device\": null, \"tag\": null, \"volume_type\": null, \"encrypted\": null, \
         \"encryption_secret_uuid\": null, \"encryption_format\": null, \"encryption_options\": null}}]"
    );
    assert_eq!(g["block_device_mapping"], expected.as_str());

    // No task state on the server; the action has Nova's api event.
    let s = server_status(&app, &id, "ACTIVE").await;
    assert_eq!(s["OS-EXT-STS:task_state"], Value::Null, "{s}");
    let (act, events) = action_events(&app, &id, "createImage").await;
    assert_eq!(act["message"], Value::Null, "{act}");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["event"].as_str(), events[0]["result"].as_str()),
        (Some("api_snapshot_instance"), Some("Success"))
    );

    // Booting from the image: a new volume from the snapshot, beside it, as the root disk.
    let body = json!({"server": {"name": "again", "imageRef": image_id, "flavorRef": "1", "networks": "none"}});
    let r = nova(&app, Method::POST, "/servers", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id2 = r.body["server"]["id"].as_str().expect("id").to_string();
    let create = answer(&app, &a, "volume_create", done()).await;
    assert_eq!(create["action"]["source"], json!({"type": "snapshot", "snapshot_id": snap_id}), "{create}");
    assert_eq!(create["action"]["volume"]["size_gb"], 1);
    let vid2 = create["instance_id"].as_str().expect("volume id").to_string();
    let build = work(&app, &a).await;
    assert_eq!(build[0]["action"]["type"], "build", "{build:?}");
    let devices = build[0]["action"]["block_devices"].as_array().cloned().expect("block devices");
    assert_eq!((devices.len(), devices[0]["boot_index"].as_i64()), (1, Some(0)), "{devices:?}");
    assert_eq!(devices[0]["volume"]["id"], vid2.as_str());
    reply(&app, &a, &build[0], done()).await;
    let s2 = server_status(&app, &id2, "ACTIVE").await;
    assert_eq!(s2["image"]["id"], image_id.as_str(), "{s2}");
    assert_eq!(s2["os-extended-volumes:volumes_attached"], json!([{"id": vid2, "delete_on_termination": true}]));
    let v2 = volume(&app, &vid2).await;
    assert_eq!((v2["snapshot_id"].as_str(), v2["bootable"].as_str()), (Some(snap_id.as_str()), Some("true")), "{v2}");
    assert_eq!(v2["volume_image_metadata"]["image_id"], img.as_str(), "Cinder copies the image metadata: {v2}");

    // That server is volume-backed too, though it has an image.
    let r = nova(
        &app,
        Method::POST,
        &format!("/servers/{id2}/action"),
        json!({"createBackup": {"name": "b", "backup_type": "daily", "rotation": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // Deleting the image leaves the snapshot alone.
    let r = app.json(Method::DELETE, &format!("/image/v2/images/{image_id}"), &app.admin_token, Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = cinder(&app, Method::GET, &format!("snapshots/{snap_id}"), Value::Null).await;
    assert_eq!(r.body["snapshot"]["status"], "available", "{}", r.body);
}

#[tokio::test]
async fn a_failed_or_late_volume_snapshot_makes_no_image_and_its_snapshots_go() {
    let app = TestApp::with_config(|c| c.compute.action_timeout_secs = 1).await;
    let a = register(&app, "bfv-a", 100, 16384).await;
    let img = image(&app, 4096, 0).await;
    let (id, _vid) = volume_backed_server(&app, &a, &img).await;
    let images_named = |name: &'static str| {
        let app = &app;
        async move {
            let r =
                app.json(Method::GET, &format!("/image/v2/images?name={name}"), &app.admin_token, Value::Null).await;
            r.body["images"].as_array().map_or(0, Vec::len)
        }
    };

    // The copy fails: the request's fault, the failed snapshot deleted, no image.
    let failed = json!({"type": "failed", "message": "cp: no space", "details": "cp: no space", "retryable": false});
    let (r, _) = tokio::join!(create_image_as(&app, "compute 2.45", &id, "bad"), async {
        answer(&app, &a, "snapshot_create", failed.clone()).await
    });
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    let msg = r.body["computeFault"]["message"].as_str().expect("fault").to_string();
    assert!(msg.contains("failed (status error); no image was created"), "{msg}");
    answer(&app, &a, "snapshot_delete", done()).await;
    assert!(snapshots_named(&app, "snapshot for bad").await.is_empty());
    assert_eq!(images_named("bad").await, 0);
    let (act, events) = action_events(&app, &id, "createImage").await;
    assert_eq!(act["message"], "Error", "{act}");
    assert_eq!(events[0]["result"], "Error", "{events:?}");

    // Nova's up-front snapshot quota check: nothing is made.
    let pid = admin_project(&app).await;
    let r = cinder(&app, Method::PUT, &format!("os-quota-sets/{pid}"), json!({"quota_set": {"snapshots": 0}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = create_image_as(&app, "compute 2.45", &id, "over").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["forbidden"]["message"], "Quota exceeded for resources: snapshots");
    assert_eq!(images_named("over").await, 0);
    let r = cinder(&app, Method::PUT, &format!("os-quota-sets/{pid}"), json!({"quota_set": {"snapshots": -1}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // The copy outlives the deadline: the fault at once; the snapshot goes once it is made.
    let r = create_image_as(&app, "compute 2.45", &id, "late").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    let msg = r.body["computeFault"]["message"].as_str().expect("fault").to_string();
    assert!(msg.contains("did not finish within 1 seconds"), "{msg}");
    assert_eq!(images_named("late").await, 0);
    answer(&app, &a, "snapshot_create", done()).await;
    answer(&app, &a, "snapshot_delete", done()).await;
    assert!(snapshots_named(&app, "snapshot for late").await.is_empty());
}

/// Nova's legacy `block_device_mapping` (v1), converted as `from_legacy_mapping` does with the
/// root device `vda`: a volume named `vda` is the root disk of a server without an image.
#[tokio::test]
async fn a_legacy_mapping_boots_from_an_existing_volume() {
    let app = TestApp::new().await;
    let a = register(&app, "legacy-a", 100, 16384).await;
    let r = cinder(&app, Method::POST, "volumes", json!({"volume": {"size": 1, "name": "root"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let vid = r.body["volume"]["id"].as_str().expect("id").to_string();
    answer(&app, &a, "volume_create", done()).await;
    let boot = |image: &str, legacy: Value| {
        json!({"server": {"name": "lg", "imageRef": image, "flavorRef": "1", "networks": "none",
            "block_device_mapping": legacy}})
    };
    let img = image(&app, 4096, 0).await;
    let cases = [
        (
            json!({"server": {"name": "lg", "imageRef": "", "flavorRef": "1", "networks": "none",
                "block_device_mapping": [{"volume_id": vid, "device_name": "vda"}],
                "block_device_mapping_v2": []}}),
            "Using different block_device_mapping syntaxes is not allowed.",
        ),
        (
            boot("", json!([{"volume_id": vid, "device_name": "vda", "boot_index": 0}])),
            "Additional properties are not allowed ('boot_index' was unexpected)",
        ),
        (
            boot(&img, json!([{"volume_id": vid, "device_name": "/dev/vda"}])),
            "The volume cannot be assigned the same device name as the root device vda",
        ),
        (
            boot("", json!([{"volume_id": vid, "device_name": "vdb"}])),
            "Block Device Mapping is Invalid: Boot sequence for the instance and image/block device mapping \
             combination is not valid.",
        ),
        (boot("", json!([{"device_name": "vda"}])), "Block Device Mapping is Invalid: Unrecognized legacy format."),
    ];
    for (body, msg) in cases {
        let r = nova(&app, Method::POST, "/servers", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        let got = r.body["badRequest"]["message"].as_str().unwrap_or_default();
        assert!(got.contains(msg), "{body}: {got}");
    }
    assert_eq!(volume(&app, &vid).await["status"], "available", "no refusal reserved the volume");
    let r = nova(&app, Method::POST, "/servers", boot("", json!([{"volume_id": vid, "device_name": "vda"}]))).await;
    assert_eq!(r.body["badRequest"]["message"], format!("Block Device {vid} is not bootable."));
    let set = json!({"os-set_bootable": {"bootable": true}});
    let r = cinder(&app, Method::POST, &format!("volumes/{vid}/action"), set).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r =
        nova(&app, Method::POST, "/servers", boot("", json!([{"volume_id": vid, "device_name": "/dev/vda"}]))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();
    let build = work(&app, &a).await;
    assert_eq!(build[0]["action"]["type"], "build", "{build:?}");
    let devices = build[0]["action"]["block_devices"].as_array().cloned().expect("block devices");
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["volume"]["id"], vid.as_str());
    assert_eq!((devices[0]["device"].as_str(), devices[0]["boot_index"].as_i64()), (Some("vda"), Some(0)));
    reply(&app, &a, &build[0], done()).await;
    let s = server_status(&app, &id, "ACTIVE").await;
    assert_eq!(s["image"], "", "volume-backed: {s}");
    assert_eq!(volume(&app, &vid).await["status"], "in-use");
}
