//! The volume API end to end inside the server: Cinder's shapes and faults, the work items an
//! agent gets (answered here as the agent would) and the states they move volumes through, and
//! Nova's os-volume_attachments.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::testing::{Reply, TestApp, instance};

struct Host {
    id: String,
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

async fn register(app: &TestApp, name: &str, disk_gb: u64) -> Host {
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let body = json!({"host": name, "agent_version": "test", "inventory": {
        "vcpus": 8, "memory_mb": 16384, "disk_gb": disk_gb, "reserved_vcpus": 0, "reserved_memory_mb": 0,
        "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1, "cpu_arch": "x86_64",
        "libvirt_uri": "test:///default", "host_ip": "127.0.0.1", "supports_networks": true,
        "availability_zone": "nova"}});
    let r = agent(app, Method::POST, "/register", &join, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    Host {
        id: r.body["host_id"].as_str().expect("host id").into(),
        name: name.into(),
        credential: r.body["credential"].as_str().expect("credential").into(),
    }
}

/// The host's pending work (one poll, no wait).
async fn work(app: &TestApp, host: &Host) -> Vec<Value> {
    let r = agent(app, Method::GET, &format!("/hosts/{}/work?wait=0", host.name), &host.credential, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body.as_array().cloned().unwrap_or_default()
}

/// Takes the one work item of the host, checks its type, answers it with `event`.
async fn answer(app: &TestApp, host: &Host, kind: &str, event: Value) -> Value {
    let items = work(app, host).await;
    assert_eq!(items.len(), 1, "{items:?}");
    let item = items[0].clone();
    assert_eq!(item["action"]["type"], kind, "{item}");
    let batch = json!({"events": [{"work_id": item["id"], "event": event}]});
    let r = agent(app, Method::POST, "/events", &host.credential, batch).await;
    assert_eq!(r.body["taken"], 1, "{}", r.body);
    item
}

fn done() -> Value {
    json!({"type": "done", "power_state": "no_state", "console": null})
}

fn failed(message: &str) -> Value {
    json!({"type": "failed", "message": message, "details": "", "retryable": false})
}

struct Cloud {
    app: TestApp,
    token: String,
    pid: String,
    host: Host,
}

impl Cloud {
    async fn new() -> Cloud {
        let app = TestApp::new().await;
        let host = register(&app, "vol-a", 100).await;
        let token = app.user_in_project("vuser", "vproj", "member").await;
        let r = app.json(Method::GET, "/identity/v3/auth/tokens", &token, Value::Null).await;
        let _ = r;
        let pid = app
            .json(Method::GET, "/identity/v3/projects?name=vproj", &app.admin_token, Value::Null)
            .await
            .body["projects"][0]["id"]
            .as_str()
            .expect("project")
            .to_string();
        Cloud { app, token, pid, host }
    }

    fn url(&self, rest: &str) -> String {
        format!("/volume/v3/{}/{rest}", self.pid)
    }

    async fn call(&self, method: Method, rest: &str, body: Value) -> Reply {
        self.app.json(method, &self.url(rest), &self.token, body).await
    }

    async fn volume(&self, id: &str) -> Value {
        let r = self.call(Method::GET, &format!("volumes/{id}"), Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["volume"].clone()
    }

    /// A volume made on the agent: created, its file reported made, available.
    async fn available_volume(&self, name: &str, size: u64) -> String {
        let r = self.call(Method::POST, "volumes", json!({"volume": {"size": size, "name": name}})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let id = r.body["volume"]["id"].as_str().expect("id").to_string();
        let item = answer(&self.app, &self.host, "volume_create", done()).await;
        assert_eq!(item["instance_id"], id.as_str(), "volume work is keyed by the volume");
        assert_eq!(self.volume(&id).await["status"], "available");
        id
    }

    /// An ACTIVE server of the project on `host`.
    async fn server(&self, host: &Host) -> String {
        let id = crate::store::new_uuid();
        let inst = crate::store::instances::Instance {
            project_id: self.pid.clone(),
            host_id: Some(host.id.clone()),
            ..instance(&id)
        };
        self.app.state.store.create_instance(&inst, None).await.expect("instance");
        id
    }

    async fn nova(&self, method: Method, path: &str, body: Value) -> Reply {
        let (b, mut h): (Body, Vec<(&str, &str)>) = if body.is_null() {
            (Body::empty(), vec![])
        } else {
            (Body::from(body.to_string()), vec![("content-type", "application/json")])
        };
        h.push(("openstack-api-version", "compute 2.79"));
        self.app.call(method, &format!("/compute/v2.1/{path}"), Some(&self.token), &h, b).await
    }
}

#[tokio::test]
async fn discovery_catalog_and_microversions() {
    let c = Cloud::new().await;
    let r = c.app.call(Method::GET, "/volume", None, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(r.body["versions"][0]["id"], "v3.0");
    assert_eq!(r.body["versions"][0]["version"], "3.48");
    let r = c.app.call(Method::GET, "/volume/v3/", None, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r = c.app.json(Method::GET, "/identity/v3/auth/catalog", &c.token, Value::Null).await;
    for kind in ["block-storage", "volumev3"] {
        let svc =
            r.body["catalog"].as_array().expect("catalog").iter().find(|s| s["type"] == kind).expect(kind).clone();
        let url = svc["endpoints"][0]["url"].as_str().expect("url");
        assert_eq!(url, format!("http://meridian.test/volume/v3/{}", c.pid), "{kind}");
    }

    let h = |v: &'static str| [("openstack-api-version", v)];
    let r = c.app.call(Method::GET, &c.url("volumes"), Some(&c.token), &h("volume 3.0"), Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["openstack-api-version"], "volume 3.0");
    let r = c.app.call(Method::GET, &c.url("volumes"), Some(&c.token), &h("volume 3.70"), Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{}", r.body);
    let r = c.app.call(Method::GET, &c.url("volumes"), Some(&c.token), &h("volume 3.x"), Body::empty()).await;
    assert_eq!(r.body["badRequest"]["code"], 400, "{}", r.body);
    let legacy = [("x-openstack-volume-api-version", "3.0")];
    let r = c.app.call(Method::GET, &c.url("volumes"), Some(&c.token), &legacy, Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);

    let r = c.call(Method::GET, "os-availability-zone", Value::Null).await;
    assert_eq!(r.body["availabilityZoneInfo"][0]["zoneName"], "nova", "{}", r.body);
    let r = c.call(Method::GET, "types", Value::Null).await;
    assert_eq!(r.body["volume_types"][0]["name"], "__DEFAULT__", "{}", r.body);
}

#[tokio::test]
async fn a_volume_lives_through_its_agent() {
    let c = Cloud::new().await;
    let r = c.call(Method::POST, "volumes", json!({"volume": {"size": 2, "name": "v1", "metadata": {"k": "v"}}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let v = &r.body["volume"];
    assert_eq!(v["status"], "creating");
    assert_eq!(v["volume_type"], "__DEFAULT__");
    assert_eq!(v["bootable"], "false");
    assert_eq!(v["availability_zone"], "nova");
    let id = v["id"].as_str().expect("id").to_string();
    // Not available until the agent says the bytes exist; a failure is an error volume.
    assert_eq!(c.volume(&id).await["status"], "creating");
    let item = answer(&c.app, &c.host, "volume_create", done()).await;
    assert_eq!(item["action"]["volume"]["size_gb"], 2);
    assert_eq!(c.volume(&id).await["status"], "available");

    // Update, metadata, flags.
    let r = c.call(Method::PUT, &format!("volumes/{id}"), json!({"volume": {"name": "v1b", "description": "d"}})).await;
    assert_eq!(r.body["volume"]["name"], "v1b", "{}", r.body);
    assert_eq!(r.body["volume"]["metadata"]["k"], "v");
    let r = c.call(Method::POST, &format!("volumes/{id}/action"), json!({"os-set_bootable": {"bootable": true}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = c
        .call(Method::POST, &format!("volumes/{id}/action"), json!({"os-update_readonly_flag": {"readonly": true}}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let shown = c.volume(&id).await;
    assert_eq!((shown["bootable"].as_str(), shown["metadata"]["readonly"].as_str()), (Some("true"), Some("True")));

    // Extend: bigger only, through the agent.
    let r = c.call(Method::POST, &format!("volumes/{id}/action"), json!({"os-extend": {"new_size": 1}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body["badRequest"]["message"].as_str().expect("message").contains("must be greater than current size"),
        "{}",
        r.body
    );
    let r = c.call(Method::POST, &format!("volumes/{id}/action"), json!({"os-extend": {"new_size": 5}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(c.volume(&id).await["status"], "extending");
    let item = answer(&c.app, &c.host, "volume_extend", done()).await;
    assert_eq!(item["action"]["volume"]["size_gb"], 5);
    let shown = c.volume(&id).await;
    assert_eq!((shown["status"].as_str(), shown["size"].as_i64()), (Some("available"), Some(5)));

    // Lists: summary, detail with filters, sort, limit/marker paging.
    let other = c.available_volume("v2", 1).await;
    let r = c.call(Method::GET, "volumes", Value::Null).await;
    assert_eq!(r.body["volumes"].as_array().map(Vec::len), Some(2), "{}", r.body);
    let r = c.call(Method::GET, "volumes/detail?name=v2", Value::Null).await;
    assert_eq!(r.body["volumes"][0]["id"], other.as_str(), "{}", r.body);
    assert_eq!(r.body["volumes"].as_array().map(Vec::len), Some(1));
    let r = c.call(Method::GET, "volumes/detail?sort=size:asc", Value::Null).await;
    assert_eq!(r.body["volumes"][0]["size"], 1, "{}", r.body);
    let r = c.call(Method::GET, "volumes?limit=1&sort=size:desc", Value::Null).await;
    assert_eq!(r.body["volumes"][0]["id"], id.as_str());
    let next = r.body["volumes_links"][0]["href"].as_str().expect("next link").to_string();
    let path = next.trim_start_matches("http://meridian.test");
    let r = c.app.json(Method::GET, path, &c.token, Value::Null).await;
    assert_eq!(r.body["volumes"][0]["id"], other.as_str(), "{}", r.body);
    let r = c.call(Method::GET, "volumes?sort=bogus:asc", Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Another project sees nothing; an admin sees it with all_tenants.
    let stranger = c.app.user_in_project("someone", "elsewhere", "member").await;
    let r = c.app.json(Method::GET, &c.url(&format!("volumes/{id}")), &stranger, Value::Null).await;
    assert_eq!(r.body["itemNotFound"]["code"], 404, "{}", r.body);
    let r = c.app.json(Method::GET, &c.url("volumes/detail?all_tenants=1"), &c.app.admin_token, Value::Null).await;
    assert!(r.body["volumes"].as_array().expect("list").iter().any(|v| v["id"] == id.as_str()), "{}", r.body);

    // Delete goes through the agent; a failed delete is error_deleting, deletable again.
    let r = c.call(Method::DELETE, &format!("volumes/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(c.volume(&id).await["status"], "deleting");
    answer(&c.app, &c.host, "volume_delete", failed("disk on fire")).await;
    assert_eq!(c.volume(&id).await["status"], "error_deleting");
    let r =
        c.call(Method::POST, &format!("volumes/{id}/action"), json!({"os-reset_status": {"status": "error"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "only admins reset");
    let r = c
        .app
        .json(Method::POST, &c.url(&format!("volumes/{id}/action")), &c.app.admin_token, json!({"os-force_delete": {}}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    answer(&c.app, &c.host, "volume_delete", done()).await;
    let r = c.call(Method::GET, &format!("volumes/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let history = c.app.state.store.volume_transitions(&id).await.expect("transitions");
    assert_eq!(
        history,
        ["creating", "available", "extending", "available", "deleting", "error_deleting", "deleting", "deleted"],
    );
}

#[tokio::test]
async fn bad_input_gets_cinders_faults() {
    let c = Cloud::new().await;
    for (body, want) in [
        (json!({"volume": {"size": 0}}), "minimum of 1"),
        (json!({"volume": {"size": "big"}}), "size"),
        (json!({"volume": {}}), "required"),
        (json!({"nothing": {}}), "volume"),
        (json!({"volume": {"size": 1, "availability_zone": "mars"}}), "Availability zone 'mars' is invalid"),
    ] {
        let r = c.call(Method::POST, "volumes", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        let m = r.body["badRequest"]["message"].as_str().expect("message");
        assert!(m.contains(want), "{body}: {m}");
    }
    let r = c.call(Method::POST, "volumes", json!({"volume": {"size": 1, "volume_type": "gold"}})).await;
    assert_eq!(r.body["itemNotFound"]["code"], 404, "{}", r.body);
    // Quotas: count and gigabytes, 413 overLimit with Cinder's wording; nothing stored.
    let r = c
        .app
        .json(
            Method::PUT,
            &c.url(&format!("os-quota-sets/{}", c.pid)),
            &c.app.admin_token,
            json!({"quota_set": {"volumes": 2, "gigabytes": 10}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["quota_set"]["volumes"], 2);
    let r = c.call(Method::POST, "volumes", json!({"volume": {"size": 11}})).await;
    assert_eq!(r.body["overLimit"]["code"], 413, "{}", r.body);
    assert!(r.body["overLimit"]["message"].as_str().expect("m").contains("gigabytes quota"), "{}", r.body);
    c.available_volume("a", 4).await;
    c.available_volume("b", 4).await;
    let r = c.call(Method::POST, "volumes", json!({"volume": {"size": 1}})).await;
    assert!(
        r.body["overLimit"]["message"].as_str().expect("m").contains("Maximum number of volumes allowed (2)"),
        "{}",
        r.body
    );
    let r = c.call(Method::GET, &format!("os-quota-sets/{}?usage=True", c.pid), Value::Null).await;
    assert_eq!(
        r.body["quota_set"]["volumes"],
        json!({"limit": 2, "in_use": 2, "reserved": 0, "allocated": 0}),
        "{}",
        r.body
    );
    assert_eq!(r.body["quota_set"]["gigabytes"]["in_use"], 8);
    let r = c.call(Method::GET, "limits", Value::Null).await;
    let abs = &r.body["limits"]["absolute"];
    assert_eq!((abs["maxTotalVolumes"].as_i64(), abs["totalGigabytesUsed"].as_i64()), (Some(2), Some(8)), "{}", r.body);
    // Extending beyond the gigabytes is refused too.
    let list = c.call(Method::GET, "volumes", Value::Null).await;
    let vid = list.body["volumes"][0]["id"].as_str().expect("id").to_string();
    let r = c.call(Method::POST, &format!("volumes/{vid}/action"), json!({"os-extend": {"new_size": 9}})).await;
    assert_eq!(r.body["overLimit"]["code"], 413, "{}", r.body);
    let r = c.call(Method::POST, &format!("volumes/{vid}/action"), json!({"os-nonsense": {}})).await;
    assert_eq!(r.body["badRequest"]["code"], 400);
    // Only admins change quotas and types.
    let r = c.call(Method::PUT, &format!("os-quota-sets/{}", c.pid), json!({"quota_set": {"volumes": 99}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c.call(Method::POST, "types", json!({"volume_type": {"name": "gold"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn types_are_admins_business() {
    let c = Cloud::new().await;
    let admin = c.app.admin_token.clone();
    let r = c
        .app
        .json(
            Method::POST,
            &c.url("types"),
            &admin,
            json!({"volume_type": {"name": "gold", "extra_specs": {"tier": "1"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tid = r.body["volume_type"]["id"].as_str().expect("id").to_string();
    let r = c.app.json(Method::POST, &c.url("types"), &admin, json!({"volume_type": {"name": "gold"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = c
        .app
        .json(
            Method::POST,
            &c.url(&format!("types/{tid}/extra_specs")),
            &admin,
            json!({"extra_specs": {"speed": "fast"}}),
        )
        .await;
    assert_eq!(r.body["extra_specs"]["speed"], "fast", "{}", r.body);
    let r = c.app.json(Method::GET, &c.url(&format!("types/{tid}")), &admin, Value::Null).await;
    assert_eq!(r.body["volume_type"]["extra_specs"], json!({"tier": "1", "speed": "fast"}));
    // A type in use is not deleted; the default never is.
    let r = c.call(Method::POST, "volumes", json!({"volume": {"size": 1, "volume_type": "gold"}})).await;
    assert_eq!(r.body["volume"]["volume_type"], "gold", "{}", r.body);
    let r = c.app.json(Method::DELETE, &c.url(&format!("types/{tid}")), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = c.app.json(Method::DELETE, &c.url("types/__DEFAULT__"), &admin, Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = c.call(Method::GET, "types/default", Value::Null).await;
    assert_eq!(r.body["volume_type"]["name"], "__DEFAULT__");
}

#[tokio::test]
async fn nova_attaches_and_detaches_through_the_agent() {
    let c = Cloud::new().await;
    let vid = c.available_volume("data", 1).await;
    let sid = c.server(&c.host).await;

    let r = c
        .nova(
            Method::POST,
            &format!("servers/{sid}/os-volume_attachments"),
            json!({"volumeAttachment": {"volumeId": vid}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let att = &r.body["volumeAttachment"];
    assert_eq!((att["device"].as_str(), att["volumeId"].as_str()), (Some("/dev/vdb"), Some(vid.as_str())), "{att}");
    assert_eq!(att["delete_on_termination"], false);
    assert_eq!(c.volume(&vid).await["status"], "attaching");
    // In use: not deletable, not attachable again.
    let r = c.call(Method::DELETE, &format!("volumes/{vid}"), Value::Null).await;
    assert_eq!(r.body["badRequest"]["code"], 400, "{}", r.body);
    let item = answer(&c.app, &c.host, "volume_attach", done()).await;
    assert_eq!((item["instance_id"].as_str(), item["action"]["device"].as_str()), (Some(sid.as_str()), Some("vdb")));
    let v = c.volume(&vid).await;
    assert_eq!(v["status"], "in-use");
    assert_eq!(v["attachments"][0]["server_id"], sid.as_str(), "{v}");
    assert_eq!(v["attachments"][0]["device"], "/dev/vdb");
    let r = c.call(Method::DELETE, &format!("volumes/{vid}"), Value::Null).await;
    assert!(r.body["badRequest"]["message"].as_str().expect("m").contains("attached"), "{}", r.body);
    let r = c
        .nova(
            Method::POST,
            &format!("servers/{sid}/os-volume_attachments"),
            json!({"volumeAttachment": {"volumeId": vid}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = c.nova(Method::GET, &format!("servers/{sid}"), Value::Null).await;
    assert_eq!(
        r.body["server"]["os-extended-volumes:volumes_attached"],
        json!([{"id": vid, "delete_on_termination": false}])
    );
    let r = c.nova(Method::GET, &format!("servers/{sid}/os-volume_attachments"), Value::Null).await;
    assert_eq!(r.body["volumeAttachments"][0]["serverId"], sid.as_str(), "{}", r.body);
    let r = c.nova(Method::GET, &format!("servers/{sid}/os-volume_attachments/{vid}"), Value::Null).await;
    assert_eq!(r.body["volumeAttachment"]["device"], "/dev/vdb", "{}", r.body);
    // A second volume gets the next device.
    let second = c.available_volume("more", 1).await;
    let r = c
        .nova(
            Method::POST,
            &format!("servers/{sid}/os-volume_attachments"),
            json!({"volumeAttachment": {"volumeId": second}}),
        )
        .await;
    assert_eq!(r.body["volumeAttachment"]["device"], "/dev/vdc", "{}", r.body);
    // The agent failing an attach puts the volume back, unattached.
    answer(&c.app, &c.host, "volume_attach", failed("no such device")).await;
    assert_eq!(c.volume(&second).await["status"], "available");
    // Detach of a volume that is not attached there: 404 as Nova.
    let r = c.nova(Method::DELETE, &format!("servers/{sid}/os-volume_attachments/{second}"), Value::Null).await;
    assert_eq!(r.body["itemNotFound"]["code"], 404, "{}", r.body);
    // Cinder's os-detach cannot pull a disk out of a guest behind Nova's back.
    let r = c.call(Method::POST, &format!("volumes/{vid}/action"), json!({"os-detach": {}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);

    let r = c.nova(Method::DELETE, &format!("servers/{sid}/os-volume_attachments/{vid}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(c.volume(&vid).await["status"], "detaching");
    // A detach the guest did not finish leaves it in use, to try again.
    answer(&c.app, &c.host, "volume_detach", failed("guest did not release")).await;
    assert_eq!(c.volume(&vid).await["status"], "in-use");
    c.nova(Method::DELETE, &format!("servers/{sid}/os-volume_attachments/{vid}"), Value::Null).await;
    answer(&c.app, &c.host, "volume_detach", done()).await;
    let v = c.volume(&vid).await;
    assert_eq!((v["status"].as_str(), v["attachments"].as_array().map(Vec::len)), (Some("available"), Some(0)));
    let r = c.nova(Method::GET, &format!("servers/{sid}"), Value::Null).await;
    assert_eq!(r.body["server"]["os-extended-volumes:volumes_attached"], json!([]));

    // Attach to a deleted server: 404.
    c.app.state.store.mark_instance_deleted(&sid).await.expect("delete");
    let r = c
        .nova(
            Method::POST,
            &format!("servers/{sid}/os-volume_attachments"),
            json!({"volumeAttachment": {"volumeId": vid}}),
        )
        .await;
    assert_eq!(r.body["itemNotFound"]["code"], 404, "{}", r.body);
}

#[tokio::test]
async fn volumes_stay_on_their_host_and_outlive_servers() {
    let c = Cloud::new().await;
    let vid = c.available_volume("pinned", 1).await;
    let other = register(&c.app, "vol-b", 100).await;
    let far = c.server(&other).await;
    // A blank volume (never attached) follows the instance: made anew on its host, the old
    // copy removed.
    let r = c
        .nova(
            Method::POST,
            &format!("servers/{far}/os-volume_attachments"),
            json!({"volumeAttachment": {"volumeId": vid}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let removed = answer(&c.app, &c.host, "volume_delete", done()).await;
    assert_eq!(removed["instance_id"], vid.as_str());
    let item = answer(&c.app, &other, "volume_attach", done()).await;
    assert_eq!(item["action"]["create"], true, "{item}");
    let r = c.app.json(Method::GET, &c.url(&format!("volumes/{vid}")), &c.app.admin_token, Value::Null).await;
    let v = &r.body["volume"];
    assert_eq!(v["status"], "in-use", "{v}");
    assert!(v["os-vol-host-attr:host"].as_str().expect("host").starts_with(&other.id), "{v}");
    c.nova(Method::DELETE, &format!("servers/{far}/os-volume_attachments/{vid}"), Value::Null).await;
    answer(&c.app, &other, "volume_detach", done()).await;
    assert_eq!(c.volume(&vid).await["status"], "available");

    // Once it may hold data, it stays where its bytes are.
    let near = c.server(&c.host).await;
    let r = c
        .nova(
            Method::POST,
            &format!("servers/{near}/os-volume_attachments"),
            json!({"volumeAttachment": {"volumeId": vid}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(
        r.body["conflictingRequest"]["message"].as_str().expect("m").contains("another compute host"),
        "{}",
        r.body
    );
    assert_eq!(c.volume(&vid).await["status"], "available");
    assert!(work(&c.app, &c.host).await.is_empty(), "nothing queued for a refused attach");

    // Deleting the server releases its volume, which stays with its data.
    c.nova(
        Method::POST,
        &format!("servers/{far}/os-volume_attachments"),
        json!({"volumeAttachment": {"volumeId": vid}}),
    )
    .await;
    let item = answer(&c.app, &other, "volume_attach", done()).await;
    assert!(item["action"].get("create").is_none(), "{item}");
    crate::compute::conductor::complete_delete(&c.app.state, &far).await.expect("delete");
    let v = c.volume(&vid).await;
    assert_eq!((v["status"].as_str(), v["attachments"].as_array().map(Vec::len)), (Some("available"), Some(0)), "{v}");
}

#[tokio::test]
async fn no_volume_stays_in_a_transitional_state_past_its_deadline() {
    let c = Cloud::new().await;
    let r = c.call(Method::POST, "volumes", json!({"volume": {"size": 1}})).await;
    let id = r.body["volume"]["id"].as_str().expect("id").to_string();
    // Nothing happens before the deadline…
    super::work::tick(&c.app.state).await.expect("tick");
    assert_eq!(c.volume(&id).await["status"], "creating");
    // …and past it the volume is in error, never silently available.
    sqlx::query("UPDATE volumes SET deadline = '2000-01-01T00:00:00.000000Z' WHERE id = $1")
        .bind(&id)
        .execute(&mut *c.app.state.store.conn().await.expect("conn"))
        .await
        .expect("update");
    super::work::tick(&c.app.state).await.expect("tick");
    assert_eq!(c.volume(&id).await["status"], "error");
    // The agent's late answer does not revive it; an error volume is deletable.
    answer(&c.app, &c.host, "volume_create", done()).await;
    assert_eq!(c.volume(&id).await["status"], "error");
    let r = c.call(Method::DELETE, &format!("volumes/{id}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    // No host with room: the volume is created in error (Cinder's "No valid backend").
    let r = c.call(Method::POST, "volumes", json!({"volume": {"size": 500}})).await;
    assert_eq!(r.body["volume"]["status"], "error", "{}", r.body);
}

#[path = "tests_breadth.rs"]
mod breadth;
// ---- snapshots, clones, uploads ----

impl Cloud {
    async fn snapshot_of(&self, id: &str) -> Reply {
        self.call(Method::GET, &format!("snapshots/{id}"), Value::Null).await
    }

    /// A snapshot of `volume` the agent reported made.
    async fn available_snapshot(&self, volume: &str, name: &str) -> String {
        let r = self.call(Method::POST, "snapshots", json!({"snapshot": {"volume_id": volume, "name": name}})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let id = r.body["snapshot"]["id"].as_str().expect("id").to_string();
        answer(&self.app, &self.host, "snapshot_create", done()).await;
        assert_eq!(self.snapshot_of(&id).await.body["snapshot"]["status"], "available");
        id
    }

    async fn action(&self, volume: &str, body: Value) -> Reply {
        self.call(Method::POST, &format!("volumes/{volume}/action"), body).await
    }
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
    k.sort();
    k
}

fn message(r: &Reply) -> String {
    r.body.as_object().and_then(|o| o.values().next()).and_then(|f| f["message"].as_str()).unwrap_or("").to_string()
}

#[tokio::test]
async fn snapshots_live_through_the_agent_and_seed_volumes() {
    let c = Cloud::new().await;
    let vol = c.available_volume("origin", 2).await;
    let r = c
        .call(
            Method::POST,
            "snapshots",
            json!({"snapshot": {"volume_id": vol, "name": "s1", "description": "d", "metadata": {"a": "1"}}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let s = &r.body["snapshot"];
    // Cinder 3.0's create view: no extended attributes.
    assert_eq!(
        keys(s),
        ["created_at", "description", "id", "metadata", "name", "size", "status", "updated_at", "volume_id"]
    );
    assert_eq!((s["status"].as_str(), s["size"].as_i64()), (Some("creating"), Some(2)));
    let sid = s["id"].as_str().expect("id").to_string();
    // The copy is the volume's agent work, keyed by the volume; no guest is involved.
    let item = answer(&c.app, &c.host, "snapshot_create", done()).await;
    assert_eq!(item["instance_id"], vol.as_str());
    assert_eq!(item["action"]["snapshot_id"], sid.as_str());
    assert!(item["action"].get("instance_id").is_none(), "{item}");
    let shown = c.snapshot_of(&sid).await.body["snapshot"].clone();
    assert_eq!(shown["status"], "available");
    assert_eq!(shown["os-extended-snapshot-attributes:progress"], "100%");
    assert_eq!(shown["os-extended-snapshot-attributes:project_id"], c.pid.as_str());

    // Lists: the summary has no extended attributes, the detail has; filters and paging.
    let s2 = c.available_snapshot(&vol, "s2").await;
    let r = c.call(Method::GET, "snapshots", Value::Null).await;
    assert_eq!(r.body["snapshots"].as_array().map(Vec::len), Some(2), "{}", r.body);
    assert!(r.body["snapshots"][0].get("os-extended-snapshot-attributes:progress").is_none());
    assert_eq!(r.body["snapshots"][0]["id"], s2.as_str(), "newest first");
    let r = c.call(Method::GET, "snapshots/detail?name=s1", Value::Null).await;
    assert_eq!(r.body["snapshots"][0]["os-extended-snapshot-attributes:progress"], "100%", "{}", r.body);
    assert_eq!(r.body["snapshots"].as_array().map(Vec::len), Some(1));
    let r = c.call(Method::GET, "snapshots?sort_key=display_name&sort_dir=asc&limit=1", Value::Null).await;
    assert_eq!(r.body["snapshots"][0]["id"], sid.as_str(), "{}", r.body);
    assert!(r.body["snapshots_links"][0]["href"].as_str().is_some_and(|h| h.contains(&format!("marker={sid}"))));
    let r = c.call(Method::GET, &format!("snapshots?marker={}", crate::store::new_uuid()), Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = c.call(Method::GET, "snapshots?sort_key=invalid", Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = c.call(Method::GET, "snapshots?limit=invalid", Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Update and metadata.
    let r = c.call(Method::PUT, &format!("snapshots/{sid}"), json!({"snapshot": {"name": "s1b"}})).await;
    assert_eq!(r.body["snapshot"]["name"], "s1b", "{}", r.body);
    let r = c.call(Method::POST, &format!("snapshots/{sid}/metadata"), json!({"metadata": {"b": "2"}})).await;
    assert_eq!(r.body["metadata"], json!({"a": "1", "b": "2"}));
    let r = c.call(Method::PUT, &format!("snapshots/{sid}/metadata/b"), json!({"meta": {"b": "3"}})).await;
    assert_eq!(r.body["meta"], json!({"b": "3"}));
    let r = c.call(Method::DELETE, &format!("snapshots/{sid}/metadata/a"), Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = c.call(Method::GET, &format!("snapshots/{sid}/metadata"), Value::Null).await;
    assert_eq!(r.body["metadata"], json!({"b": "3"}));

    // A volume with snapshots is not deleted.
    let r = c.call(Method::DELETE, &format!("volumes/{vol}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(message(&r).contains("have snapshots"), "{}", r.body);

    // From a snapshot: not smaller, the snapshot's size by default, on its volume's host.
    let r = c.call(Method::POST, "volumes", json!({"volume": {"snapshot_id": sid, "size": 1}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        message(&r),
        "Invalid input received: Volume size '1'GB cannot be smaller than the snapshot size 2GB. They must be >= \
         original snapshot size."
    );
    let r = c.call(Method::POST, "volumes", json!({"volume": {"snapshot_id": sid}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!((r.body["volume"]["snapshot_id"].as_str(), r.body["volume"]["size"].as_i64()), (Some(&*sid), Some(2)));
    let from_snap = r.body["volume"]["id"].as_str().expect("id").to_string();
    let item = answer(&c.app, &c.host, "volume_create", done()).await;
    assert_eq!(item["action"]["source"], json!({"type": "snapshot", "snapshot_id": sid}));
    assert_eq!(c.volume(&from_snap).await["status"], "available");

    // From another volume: the same, with source_volid.
    let r = c.call(Method::POST, "volumes", json!({"volume": {"source_volid": vol, "size": 3}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let clone = r.body["volume"]["id"].as_str().expect("id").to_string();
    let item = answer(&c.app, &c.host, "volume_create", done()).await;
    assert_eq!(item["action"]["source"], json!({"type": "volume", "volume_id": vol}));
    assert_eq!(item["action"]["volume"]["size_gb"], 3);
    let shown = c.volume(&clone).await;
    assert_eq!((shown["source_volid"].as_str(), shown["status"].as_str()), (Some(&*vol), Some("available")));
    let r = c.call(Method::POST, "volumes", json!({"volume": {"source_volid": vol, "size": 1}})).await;
    assert!(message(&r).contains("cannot be smaller than original volume size 2GB"), "{}", r.body);

    // Unknown sources are 404s with Cinder's words.
    let ghost = crate::store::new_uuid();
    let r = c.call(Method::POST, "volumes", json!({"volume": {"snapshot_id": ghost, "size": 1}})).await;
    assert_eq!((r.status, message(&r)), (StatusCode::NOT_FOUND, format!("Snapshot {ghost} could not be found.")));
    let r = c.call(Method::POST, "volumes", json!({"volume": {"source_volid": ghost, "size": 1}})).await;
    assert_eq!((r.status, message(&r)), (StatusCode::NOT_FOUND, format!("Volume {ghost} could not be found.")));
    let r = c.call(Method::POST, "snapshots", json!({"snapshot": {"volume_id": ghost}})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = c.call(Method::POST, "snapshots", json!({"snapshot": {"volume_id": null}})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // Delete: through the agent, never touching the volume; a failure is error_deleting.
    let r = c.call(Method::DELETE, &format!("snapshots/{s2}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(c.snapshot_of(&s2).await.body["snapshot"]["status"], "deleting");
    answer(&c.app, &c.host, "snapshot_delete", failed("disk on fire")).await;
    assert_eq!(c.snapshot_of(&s2).await.body["snapshot"]["status"], "error_deleting");
    let r = c.call(Method::DELETE, &format!("snapshots/{s2}"), Value::Null).await;
    assert!(message(&r).starts_with("Invalid snapshot: Snapshot status must be available or error"), "{}", r.body);
    let admin = |path: String, body: Value| {
        let app = &c.app;
        async move { app.json(Method::POST, &path, &app.admin_token, body).await }
    };
    let r = admin(c.url(&format!("snapshots/{s2}/action")), json!({"os-force_delete": {}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let item = answer(&c.app, &c.host, "snapshot_delete", done()).await;
    assert_eq!(item["instance_id"], vol.as_str());
    assert_eq!(c.snapshot_of(&s2).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        c.app.state.store.snapshot_transitions(&s2).await.expect("transitions"),
        ["creating", "available", "deleting", "error_deleting", "deleting", "deleted"]
    );
    assert_eq!(c.volume(&vol).await["status"], "available");
}

#[tokio::test]
async fn snapshot_force_quotas_cascade_and_deadlines() {
    let c = Cloud::new().await;
    let vol = c.available_volume("v", 1).await;
    // In use (os-attach bookkeeping): only with force, and the agent is told which guest to pause.
    let server = c.server(&c.host).await;
    let r =
        c.action(&vol, json!({"os-attach": {"instance_uuid": server, "mountpoint": "/dev/vdb", "mode": "rw"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = c.call(Method::POST, "snapshots", json!({"snapshot": {"volume_id": vol}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        message(&r),
        format!("Invalid volume: Volume {vol} status must be available, but current status is: in-use.")
    );
    let r = c.call(Method::POST, "snapshots", json!({"snapshot": {"volume_id": vol, "force": true}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let forced = r.body["snapshot"]["id"].as_str().expect("id").to_string();
    let item = answer(&c.app, &c.host, "snapshot_create", done()).await;
    assert_eq!(item["action"]["instance_id"], server.as_str());
    let r = c.action(&vol, json!({"os-detach": {}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    // Quotas: snapshots counted, and gigabytes count volumes and snapshots together.
    let set = |body: Value| {
        let app = &c.app;
        let path = format!("/volume/v3/{}/os-quota-sets/{}", c.pid, c.pid);
        async move { app.json(Method::PUT, &path, &app.admin_token, body).await }
    };
    assert_eq!(set(json!({"quota_set": {"snapshots": 1}})).await.status, StatusCode::OK);
    let r = c.call(Method::POST, "snapshots", json!({"snapshot": {"volume_id": vol}})).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_eq!(message(&r), "SnapshotLimitExceeded: Maximum number of snapshots allowed (1) exceeded");
    assert_eq!(set(json!({"quota_set": {"snapshots": 5, "gigabytes": 2}})).await.status, StatusCode::OK);
    let r = c.call(Method::POST, "snapshots", json!({"snapshot": {"volume_id": vol}})).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(message(&r).contains("quota is 2G and 2G has been consumed"), "{}", r.body);
    assert!(work(&c.app, &c.host).await.is_empty(), "refused snapshots queue nothing");
    let r = c.call(Method::POST, "volumes", json!({"volume": {"size": 1}})).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "a snapshot's gigabytes count for volumes too");
    let r = c.call(Method::GET, &format!("os-quota-sets/{}?usage=true", c.pid), Value::Null).await;
    assert_eq!(r.body["quota_set"]["snapshots"]["in_use"], 1, "{}", r.body);
    assert_eq!(r.body["quota_set"]["gigabytes"]["in_use"], 2, "{}", r.body);
    assert_eq!(set(json!({"quota_set": {"gigabytes": 100}})).await.status, StatusCode::OK);

    // Deadlines: creating → error, deleting → error_deleting; a late answer changes nothing.
    let r = c.call(Method::POST, "snapshots", json!({"snapshot": {"volume_id": vol}})).await;
    let late = r.body["snapshot"]["id"].as_str().expect("id").to_string();
    sqlx::query("UPDATE volume_snapshots SET deadline = '2000-01-01T00:00:00.000000Z' WHERE id = $1")
        .bind(&late)
        .execute(&mut *c.app.state.store.conn().await.expect("conn"))
        .await
        .expect("update");
    super::work::tick(&c.app.state).await.expect("tick");
    assert_eq!(c.snapshot_of(&late).await.body["snapshot"]["status"], "error");
    answer(&c.app, &c.host, "snapshot_create", done()).await;
    assert_eq!(c.snapshot_of(&late).await.body["snapshot"]["status"], "error");

    // Cascade: every snapshot's delete and the volume's, queued together; all gone when done.
    let r = c.call(Method::DELETE, &format!("volumes/{vol}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = c.call(Method::DELETE, &format!("volumes/{vol}?cascade=true"), Value::Null).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(c.snapshot_of(&forced).await.body["snapshot"]["status"], "deleting");
    assert_eq!(c.volume(&vol).await["status"], "deleting");
    let items = work(&c.app, &c.host).await;
    let mut kinds: Vec<&str> = items.iter().filter_map(|i| i["action"]["type"].as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["snapshot_delete", "snapshot_delete", "volume_delete"]);
    let events: Vec<Value> = items.iter().map(|i| json!({"work_id": i["id"], "event": done()})).collect();
    let r = agent(&c.app, Method::POST, "/events", &c.host.credential, json!({"events": events})).await;
    assert_eq!(r.body["taken"], 3, "{}", r.body);
    let r = c.call(Method::GET, &format!("volumes/{vol}"), Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for s in [&forced, &late] {
        assert_eq!(c.snapshot_of(s).await.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn upload_to_image_through_the_agent() {
    let c = Cloud::new().await;
    let vol = c.available_volume("up", 1).await;
    let upload = |args: Value| c.action(&vol, json!({"os-volume_upload_image": args}));
    let r = upload(json!({"image_name": "x", "disk_format": "vmdk"})).await;
    assert_eq!(
        (r.status, message(&r)),
        (
            StatusCode::BAD_REQUEST,
            "Invalid disk-format 'vmdk' is specified. Allowed disk-formats are raw, qcow2.".into()
        )
    );
    let r = upload(json!({"disk_format": "raw"})).await;
    assert_eq!(message(&r), "No image_name was specified in request.");
    let r = upload(json!({"image_name": "vol-image", "disk_format": "qcow2"})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let b = &r.body["os-volume_upload_image"];
    assert_eq!(
        keys(b),
        [
            "container_format",
            "disk_format",
            "display_description",
            "id",
            "image_id",
            "image_name",
            "size",
            "status",
            "updated_at",
            "volume_type"
        ]
    );
    assert_eq!((b["status"].as_str(), b["container_format"].as_str()), (Some("uploading"), Some("bare")));
    assert_eq!(b["volume_type"]["name"], "__DEFAULT__");
    let image = b["image_id"].as_str().expect("image").to_string();
    assert_eq!(c.volume(&vol).await["status"], "uploading");
    let r = c.app.json(Method::GET, &format!("/image/v2/images/{image}"), &c.token, Value::Null).await;
    assert_eq!((r.body["status"].as_str(), r.body["disk_format"].as_str()), (Some("queued"), Some("qcow2")));
    // A second upload waits for the first.
    let r = upload(json!({"image_name": "again"})).await;
    assert_eq!(message(&r), format!("Invalid volume: Volume {vol} status must be available"));

    // The agent's bytes: only into the image its open work names, stored as Glance stores them.
    let items = work(&c.app, &c.host).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["action"]["type"], "volume_upload_image");
    assert_eq!(
        (items[0]["action"]["image_id"].as_str(), items[0]["action"]["disk_format"].as_str()),
        (Some(&*image), Some("qcow2"))
    );
    let bytes = b"QFI\xfb not really a qcow2, but bytes all the same".to_vec();
    let put = |id: String, data: Vec<u8>| {
        let app = &c.app;
        let auth = format!("Bearer {}", c.host.credential);
        async move {
            let h = [("authorization", auth.as_str()), ("content-type", "application/octet-stream")];
            app.call(Method::PUT, &format!("/agent/v1/images/{id}/file"), None, &h, Body::from(data)).await
        }
    };
    let r = put(crate::store::new_uuid(), bytes.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "an image no work names");
    let r = put(image.clone(), bytes.clone()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let batch = json!({"events": [{"work_id": items[0]["id"], "event": done()}]});
    agent(&c.app, Method::POST, "/events", &c.host.credential, batch).await;
    assert_eq!(c.volume(&vol).await["status"], "available");
    let r = c.app.json(Method::GET, &format!("/image/v2/images/{image}"), &c.token, Value::Null).await;
    use md5::Digest;
    let md5 = hex::encode(md5::Md5::digest(&bytes));
    assert_eq!(r.body["status"], "active", "{}", r.body);
    assert_eq!((r.body["checksum"].as_str(), r.body["size"].as_u64()), (Some(&*md5), Some(bytes.len() as u64)));
    assert_eq!(r.body["os_hash_algo"], "sha512");

    // A failed upload returns the volume to where it was and removes the image.
    let r = upload(json!({"image_name": "doomed", "force": true})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let doomed = r.body["os-volume_upload_image"]["image_id"].as_str().expect("image").to_string();
    answer(&c.app, &c.host, "volume_upload_image", failed("qemu-img convert failed")).await;
    assert_eq!(c.volume(&vol).await["status"], "available");
    let r = c.app.json(Method::GET, &format!("/image/v2/images/{doomed}"), &c.token, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // Past its deadline an upload ends the same way (its work closed, so no late bytes land).
    let r = upload(json!({"image_name": "slow"})).await;
    let slow = r.body["os-volume_upload_image"]["image_id"].as_str().expect("image").to_string();
    sqlx::query("UPDATE volumes SET deadline = '2000-01-01T00:00:00.000000Z' WHERE id = $1")
        .bind(&vol)
        .execute(&mut *c.app.state.store.conn().await.expect("conn"))
        .await
        .expect("update");
    super::work::tick(&c.app.state).await.expect("tick");
    assert_eq!(c.volume(&vol).await["status"], "available");
    let r = c.app.json(Method::GET, &format!("/image/v2/images/{slow}"), &c.token, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(put(slow, bytes).await.status, StatusCode::NOT_FOUND);
}
