//! Resize, cold migration, confirm/revert and the migration records, in process with real
//! SQLite and the real agent routes: a scripted agent per host polls its work, moves the disk
//! through the relay and answers, so every walk and claim is checked through the API. Also the
//! servers' own local disks (`blank` → `local` mappings): Nova's rules, the build's layout, and
//! the resize that would shrink them.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::testing::{Reply, TestApp};

const V: &str = "compute 2.79";

pub(super) async fn at(app: &TestApp, method: Method, path: &str, token: &str, body: Value) -> Reply {
    let (b, ct) =
        if body.is_null() { (Body::empty(), None) } else { (Body::from(body.to_string()), Some("application/json")) };
    let mut h = vec![("openstack-api-version", V)];
    if let Some(ct) = ct {
        h.push(("content-type", ct));
    }
    app.call(method, &format!("/compute/v2.1{path}"), Some(token), &h, b).await
}

/// One scripted agent: its host name and credential.
pub(super) struct Agent {
    pub(super) host: String,
    pub(super) cred: String,
}

impl Agent {
    pub(super) async fn register(app: &TestApp, host: &str) -> Agent {
        let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
        let body = json!({"host": host, "agent_version": "test", "inventory": {
            "vcpus": 8, "memory_mb": 16384, "disk_gb": 100, "reserved_vcpus": 0, "reserved_memory_mb": 0,
            "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1, "cpu_arch": "x86_64",
            "libvirt_uri": "test:///default", "host_ip": "10.0.0.9", "supports_networks": true,
            "availability_zone": "nova"}});
        let r = Agent::call(app, Method::POST, "/register", &join, Body::from(body.to_string()), true).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        Agent { host: host.into(), cred: r.body["credential"].as_str().expect("credential").into() }
    }

    pub(super) async fn call(app: &TestApp, method: Method, path: &str, bearer: &str, body: Body, json: bool) -> Reply {
        let auth = format!("Bearer {bearer}");
        let mut h = vec![("authorization", auth.as_str())];
        if json {
            h.push(("content-type", "application/json"));
        } else {
            h.push(("content-type", "application/octet-stream"));
        }
        app.call(method, &format!("/agent/v1{path}"), None, &h, body).await
    }

    /// The host's pending work items.
    pub(super) async fn work(&self, app: &TestApp) -> Vec<Value> {
        let r = Agent::call(
            app,
            Method::GET,
            &format!("/hosts/{}/work?wait=0", self.host),
            &self.cred,
            Body::empty(),
            false,
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body.as_array().cloned().unwrap_or_default()
    }

    /// Waits for exactly one work item of `kind`; returns it.
    pub(super) async fn expect(&self, app: &TestApp, kind: &str) -> Value {
        for _ in 0..100 {
            let items = self.work(app).await;
            if let Some(w) = items.iter().find(|w| w["action"]["type"] == kind) {
                return w.clone();
            }
            assert!(items.is_empty(), "{} got {items:?} while waiting for {kind}", self.host);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{} never got {kind}", self.host);
    }

    pub(super) async fn event(&self, app: &TestApp, work: &Value, event: Value) {
        let id = work["id"].as_str().expect("work id");
        let r = Agent::call(
            app,
            Method::POST,
            &format!("/work/{id}/events"),
            &self.cred,
            Body::from(event.to_string()),
            true,
        )
        .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    }

    pub(super) async fn done(&self, app: &TestApp, work: &Value, power: &str) {
        self.event(app, work, json!({"type": "done", "power_state": power, "console": null})).await;
    }

    async fn put_disk(&self, app: &TestApp, migration: &str, bytes: Vec<u8>) -> Reply {
        let len = bytes.len().to_string();
        let auth = format!("Bearer {}", self.cred);
        let h = [("authorization", auth.as_str()), ("content-length", len.as_str())];
        app.call(Method::PUT, &format!("/agent/v1/migrations/{migration}/disk"), None, &h, Body::from(bytes)).await
    }

    async fn get_disk(&self, app: &TestApp, migration: &str) -> Reply {
        Agent::call(app, Method::GET, &format!("/migrations/{migration}/disk"), &self.cred, Body::empty(), false).await
    }
}

/// An image with data and a shared network.
pub(super) async fn cloud(app: &TestApp) -> (String, String) {
    app.image_and_network(0).await
}

pub(super) async fn show(app: &TestApp, id: &str) -> Value {
    at(app, Method::GET, &format!("/servers/{id}"), &app.admin_token, Value::Null).await.body["server"].clone()
}

/// Boots a server with flavor 1 (m1.tiny) as `token` and lets `agent` build it: ACTIVE.
pub(super) async fn boot(app: &TestApp, token: &str, agent: &Agent, image: &str, network: &str) -> String {
    let body = json!({"server": {"name": "s1", "imageRef": image, "flavorRef": "1", "networks": [{"uuid": network}]}});
    let r = at(app, Method::POST, "/servers", token, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();
    let build = agent.expect(app, "build").await;
    agent.done(app, &build, "running").await;
    assert_eq!(show(app, &id).await["status"], "ACTIVE");
    id
}

pub(super) async fn action(app: &TestApp, token: &str, id: &str, body: Value) -> Reply {
    at(app, Method::POST, &format!("/servers/{id}/action"), token, body).await
}

/// (vcpus_used, memory_mb_used) of a host.
pub(super) async fn used(app: &TestApp, host: &str) -> (i64, i64) {
    let h = app.state.store.get_host_by_name(host).await.expect("host");
    (h.vcpus_used, h.memory_mb_used)
}

pub(super) async fn migrations(app: &TestApp, query: &str) -> Vec<Value> {
    let r = at(app, Method::GET, &format!("/os-migrations{query}"), &app.admin_token, Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["migrations"].as_array().cloned().expect("list")
}

#[tokio::test]
async fn resize_in_place_walks_to_verify_resize_and_back_by_revert_then_confirm() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let id = boot(&app, &t, &a, &image, &network).await;
    assert_eq!(used(&app, "compute-a").await, (1, 512));

    let r = action(&app, &t, &id, json!({"resize": {"flavorRef": "3"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str()), (Some("RESIZE"), Some("resize_migrating")));
    // Both flavors are claimed on the one host until the resize is confirmed or reverted.
    assert_eq!(used(&app, "compute-a").await, (3, 4608));
    let w = a.expect(&app, "resize_local").await;
    assert_eq!(w["action"]["spec"]["flavor"]["ram_mb"], 4096);
    assert_eq!(w["action"]["power_on"], true);
    a.event(&app, &w, json!({"type": "progress", "task_state": "resize_finish"})).await;
    assert_eq!(show(&app, &id).await["OS-EXT-STS:task_state"], "resize_finish");
    a.done(&app, &w, "running").await;
    let s = show(&app, &id).await;
    assert_eq!(s["status"], "VERIFY_RESIZE");
    assert_eq!(s["OS-EXT-STS:vm_state"], "resized");
    assert_eq!(s["flavor"]["original_name"], "m1.medium");
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "compute-a");
    let list = migrations(&app, "").await;
    assert_eq!(list.len(), 1);
    let m = &list[0];
    assert_eq!((m["status"].as_str(), m["migration_type"].as_str()), (Some("finished"), Some("resize")));
    assert_eq!((m["source_compute"].as_str(), m["dest_compute"].as_str()), (Some("compute-a"), Some("compute-a")));
    assert_eq!((m["old_instance_type_id"].as_i64(), m["new_instance_type_id"].as_i64()), (Some(1), Some(3)));
    assert_eq!(m["instance_uuid"], id.as_str());

    // Revert: the old flavor again, the new claim freed.
    let r = action(&app, &t, &id, json!({"revertResize": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(show(&app, &id).await["status"], "REVERT_RESIZE");
    let w = a.expect(&app, "resize_local_revert").await;
    assert_eq!(w["action"]["spec"]["flavor"]["ram_mb"], 512);
    a.done(&app, &w, "running").await;
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["flavor"]["original_name"].as_str()), (Some("ACTIVE"), Some("m1.tiny")));
    assert_eq!(used(&app, "compute-a").await, (1, 512));
    assert_eq!(migrations(&app, "").await[0]["status"], "reverted");

    // Resize again and confirm: the copy kept for a revert is dropped, the old claim freed.
    let r = action(&app, &t, &id, json!({"resize": {"flavorRef": "3", "OS-DCF:diskConfig": "AUTO"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let w = a.expect(&app, "resize_local").await;
    a.done(&app, &w, "running").await;
    let r = action(&app, &t, &id, json!({"confirmResize": null})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let w = a.expect(&app, "migrate_cleanup").await;
    assert_eq!(w["action"]["remove"], false, "the one host keeps its guest");
    a.done(&app, &w, "running").await;
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["flavor"]["original_name"].as_str()), (Some("ACTIVE"), Some("m1.medium")));
    assert_eq!(used(&app, "compute-a").await, (2, 4096));
    let statuses: Vec<Value> = migrations(&app, "").await.iter().map(|m| m["status"].clone()).collect();
    assert_eq!(statuses, [json!("confirmed"), json!("reverted")], "newest first");

    // Instance actions with Nova's names and events.
    let r = at(&app, Method::GET, &format!("/servers/{id}/os-instance-actions"), &t, Value::Null).await;
    let names: Vec<&str> =
        r.body["instanceActions"].as_array().expect("actions").iter().filter_map(|a| a["action"].as_str()).collect();
    assert_eq!(names, ["confirmResize", "resize", "revertResize", "resize", "create"]);
}

#[tokio::test]
async fn resize_refusals_are_novas() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let member = app.user_in_project("alice", "demo", "member").await;
    let id = boot(&app, &member, &a, &image, &network).await;
    let cases = [
        (json!({"resize": {"flavorRef": "1"}}), 400, "When resizing, instances must change flavor!"),
        (json!({"resize": {"flavorRef": "nope"}}), 400, "Flavor nope could not be found."),
        (json!({"resize": {}}), 400, "flavorRef"),
        (json!({"resize": {"flavorRef": "2", "bogus": 1}}), 400, "Additional properties are not allowed"),
        (json!({"resize": {"flavorRef": "2", "OS-DCF:diskConfig": "x"}}), 400, "OS-DCF:diskConfig"),
        // m1.nano's root disk (1 GB) is m1.tiny's: resize to m1.micro is fine; shrinking is not.
        (json!({"confirmResize": null}), 409, "Cannot 'confirm_resize' instance"),
        (json!({"revertResize": null}), 409, "Cannot 'revert_resize' instance"),
        // Cold migration is admin-only.
        (json!({"migrate": null}), 403, "os_compute_api:os-migrate-server:migrate"),
    ];
    for (body, code, msg) in cases {
        let r = action(&app, &member, &id, body.clone()).await;
        assert_eq!(r.status.as_u16(), code, "{body}: {}", r.body);
        assert!(r.body.to_string().contains(msg), "{body}: {}", r.body);
    }
    // Quota: cores over the limit → 403.
    let pid = show(&app, &id).await["tenant_id"].as_str().expect("tenant").to_string();
    let q =
        at(&app, Method::PUT, &format!("/os-quota-sets/{pid}"), &app.admin_token, json!({"quota_set": {"cores": 1}}))
            .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.body);
    let r = action(&app, &member, &id, json!({"resize": {"flavorRef": "3"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(
        r.body["forbidden"]["message"].as_str().expect("msg").starts_with("Quota exceeded for cores"),
        "{}",
        r.body
    );
    // A smaller root disk: m1.small (20 GB) then back to m1.tiny (1 GB).
    let q =
        at(&app, Method::PUT, &format!("/os-quota-sets/{pid}"), &app.admin_token, json!({"quota_set": {"cores": 20}}))
            .await;
    assert_eq!(q.status, StatusCode::OK);
    let r = action(&app, &member, &id, json!({"resize": {"flavorRef": "2"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let w = a.expect(&app, "resize_local").await;
    a.done(&app, &w, "running").await;
    let r = action(&app, &member, &id, json!({"confirmResize": null})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let w = a.expect(&app, "migrate_cleanup").await;
    a.done(&app, &w, "running").await;
    let r = action(&app, &member, &id, json!({"resize": {"flavorRef": "1"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.body["badRequest"]["message"],
        "Flavor's disk is smaller than the current disk. Flavor disk is 1073741824 bytes, current disk is 21474836480 bytes."
    );
    // Locked by an admin: the member gets Nova's 409, the admin may still resize.
    let r = action(&app, &app.admin_token, &id, json!({"lock": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = action(&app, &member, &id, json!({"resize": {"flavorRef": "3"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["conflictingRequest"]["message"], format!("Instance {id} is locked"));
    // Cold migration with no other host.
    let r = action(&app, &app.admin_token, &id, json!({"migrate": null})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["badRequest"]["message"], "No valid host was found. No valid host found for cold migrate");
    assert_eq!(show(&app, &id).await["status"], "ACTIVE", "nothing changed");
    assert!(migrations(&app, "").await.iter().all(|m| m["status"] == "confirmed"));
}

#[tokio::test]
async fn cold_migration_moves_the_disk_through_the_relay_and_confirm_frees_the_source() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let id = boot(&app, &t, &a, &image, &network).await;
    let b = Agent::register(&app, "compute-b").await;

    let r = action(&app, &t, &id, json!({"migrate": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(used(&app, "compute-b").await, (1, 512), "the destination is claimed at once");
    let out = a.expect(&app, "migrate_out").await;
    let mid = out["action"]["migration_id"].as_str().expect("migration").to_string();
    assert_eq!(show(&app, &id).await["OS-EXT-STS:task_state"], "resize_migrating");
    // Only the source may send, only the destination may read, and only at their step.
    assert_eq!(b.put_disk(&app, &mid, vec![1; 10]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(b.get_disk(&app, &mid).await.status, StatusCode::NOT_FOUND);
    let disk: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(a.put_disk(&app, &mid, disk.clone()).await.status, StatusCode::NO_CONTENT);
    a.done(&app, &out, "shutdown").await;
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str()), (Some("RESIZE"), Some("resize_migrated")));
    let inbound = b.expect(&app, "migrate_in").await;
    assert_eq!(inbound["action"]["migration_id"], mid.as_str());
    assert_eq!(inbound["instance_id"], id.as_str());
    let port = inbound["action"]["spec"]["nics"][0]["port_id"].as_str().expect("the same port").to_string();
    // The destination starts the guest only once its port is filtered: the filters it polls
    // name the port while the migration is open (the source's still do too).
    for agent in [&a, &b] {
        let path = format!("/hosts/{}/port-filters?wait=0", agent.host);
        let f = Agent::call(&app, Method::GET, &path, &agent.cred, Body::empty(), false).await;
        assert_eq!(f.status, StatusCode::OK, "{}", f.body);
        let ports: Vec<&str> =
            f.body["ports"].as_array().into_iter().flatten().filter_map(|p| p["port_id"].as_str()).collect();
        assert_eq!(ports, [port.as_str()], "{}: {}", agent.host, f.body);
    }
    // The destination may fetch the image its disk is backed by (its cache may not have it).
    let img = Agent::call(&app, Method::GET, &format!("/images/{image}/file"), &b.cred, Body::empty(), false).await;
    assert_eq!(img.status, StatusCode::OK, "{}", img.body);
    let got = b.get_disk(&app, &mid).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, disk, "the destination reads exactly what the source sent");
    assert_eq!(a.get_disk(&app, &mid).await.status, StatusCode::NOT_FOUND);
    b.done(&app, &inbound, "running").await;
    let s = show(&app, &id).await;
    assert_eq!(s["status"], "VERIFY_RESIZE");
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "compute-b");
    let p = app.json(Method::GET, &format!("/network/v2.0/ports/{port}"), &t, Value::Null).await;
    assert_eq!(p.body["port"]["binding:host_id"], "compute-b", "the port follows the instance");
    // The staged disk is gone once the guest runs at its destination.
    assert!(!app.state.cfg.data_dir.join("migrations").join(&mid).exists());
    let m = &migrations(&app, "?migration_type=migration").await[0];
    assert_eq!((m["status"].as_str(), m["dest_compute"].as_str()), (Some("finished"), Some("compute-b")));
    assert_eq!(m["dest_host"], "10.0.0.9");
    assert!(migrations(&app, "?migration_type=resize").await.is_empty());
    assert_eq!(migrations(&app, "?host=compute-b").await.len(), 1);
    assert!(migrations(&app, "?status=error").await.is_empty());
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((1, 512), (1, 512)));

    let r = action(&app, &t, &id, json!({"confirmResize": null})).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(show(&app, &id).await["status"], "VERIFY_RESIZE", "until the source is clean");
    let clean = a.expect(&app, "migrate_cleanup").await;
    assert_eq!(clean["action"]["remove"], true);
    a.done(&app, &clean, "no_state").await;
    assert_eq!(show(&app, &id).await["status"], "ACTIVE");
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((0, 0), (1, 512)));
    assert_eq!(migrations(&app, "").await[0]["status"], "confirmed");
    // Paging from 2.59: uuid and a next link.
    let r = app
        .call(
            Method::GET,
            "/compute/v2.1/os-migrations?limit=1",
            Some(&t),
            &[("openstack-api-version", "compute 2.59")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.body["migrations"][0]["uuid"], mid.as_str());
    assert_eq!(r.body["migrations_links"][0]["rel"], "next");
    // Below 2.23: no migration_type.
    let r = app.call(Method::GET, "/compute/v2.1/os-migrations", Some(&t), &[], Body::empty()).await;
    assert!(r.body["migrations"][0].get("migration_type").is_none(), "{}", r.body);
    // Non-admins may not list.
    let member = app.user_in_project("bob", "demo", "member").await;
    let r = at(&app, Method::GET, "/os-migrations", &member, Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn cold_migration_revert_brings_the_guest_back_to_the_source() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let id = boot(&app, &t, &a, &image, &network).await;
    let b = Agent::register(&app, "compute-b").await;
    // 2.56: the admin names the host.
    let r = app
        .call(
            Method::POST,
            &format!("/compute/v2.1/servers/{id}/action"),
            Some(&t),
            &[("openstack-api-version", "compute 2.56"), ("content-type", "application/json")],
            Body::from(json!({"migrate": {"host": "compute-a"}}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "its own host: {}", r.body);
    let r = app
        .call(
            Method::POST,
            &format!("/compute/v2.1/servers/{id}/action"),
            Some(&t),
            &[("openstack-api-version", "compute 2.56"), ("content-type", "application/json")],
            Body::from(json!({"migrate": {"host": "compute-b"}}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let out = a.expect(&app, "migrate_out").await;
    let mid = out["action"]["migration_id"].as_str().expect("migration").to_string();
    assert_eq!(a.put_disk(&app, &mid, vec![3; 1000]).await.status, StatusCode::NO_CONTENT);
    a.done(&app, &out, "shutdown").await;
    let inbound = b.expect(&app, "migrate_in").await;
    b.done(&app, &inbound, "running").await;
    assert_eq!(show(&app, &id).await["status"], "VERIFY_RESIZE");

    let r = action(&app, &t, &id, json!({"revertResize": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(show(&app, &id).await["status"], "REVERT_RESIZE");
    let clean = b.expect(&app, "migrate_cleanup").await;
    assert_eq!(clean["action"]["remove"], true);
    b.done(&app, &clean, "no_state").await;
    let back = a.expect(&app, "migrate_revert").await;
    assert_eq!(back["action"]["power_on"], true);
    a.done(&app, &back, "running").await;
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str()), (Some("ACTIVE"), Some("compute-a")));
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((1, 512), (0, 0)));
    assert_eq!(migrations(&app, "").await[0]["status"], "reverted");
}

#[tokio::test]
async fn a_migration_whose_host_never_answers_is_rolled_back_to_the_source() {
    let app = TestApp::with_config(|c| c.compute.action_timeout_secs = 0).await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let id = boot(&app, &t, &a, &image, &network).await;
    let b = Agent::register(&app, "compute-b").await;
    let r = action(&app, &t, &id, json!({"migrate": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let out = a.expect(&app, "migrate_out").await;
    let mid = out["action"]["migration_id"].as_str().expect("migration").to_string();
    assert_eq!(a.put_disk(&app, &mid, vec![3; 1000]).await.status, StatusCode::NO_CONTENT);
    a.done(&app, &out, "shutdown").await;
    // The destination's agent dies: its MigrateIn is never answered.
    let _lost = b.expect(&app, "migrate_in").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    crate::compute::conductor::tick(&app.state).await.expect("tick");
    let s = show(&app, &id).await;
    assert_eq!(s["OS-EXT-SRV-ATTR:host"], "compute-a", "still on its source");
    assert_eq!((s["OS-EXT-STS:vm_state"].as_str(), s["OS-EXT-STS:task_state"].as_str()), (Some("active"), None));
    assert_eq!(migrations(&app, "").await[0]["status"], "error");
    assert_eq!(used(&app, "compute-b").await, (0, 0), "the destination's claim is freed");
    // The source starts its guest again (its disk was never touched); the destination removes
    // whatever it made, once it is back.
    let back = a.expect(&app, "migrate_revert").await;
    a.done(&app, &back, "running").await;
    let clean = b.expect(&app, "migrate_cleanup").await;
    assert_eq!(clean["action"]["remove"], true);
    assert!(!app.state.cfg.data_dir.join("migrations").join(&mid).exists(), "the staged disk is removed");
    let r = at(&app, Method::GET, &format!("/servers/{id}/os-instance-actions"), &t, Value::Null).await;
    let migrate = &r.body["instanceActions"][0];
    assert_eq!(migrate["action"], "migrate");
    let rid = migrate["request_id"].as_str().expect("request id");
    let r = at(&app, Method::GET, &format!("/servers/{id}/os-instance-actions/{rid}"), &t, Value::Null).await;
    let events: Vec<&str> = r.body["instanceAction"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["result"].as_str())
        .collect();
    assert!(events.iter().all(|r| *r == "Error"), "{}", r.body);
}

#[tokio::test]
async fn a_failed_destination_build_reverts_to_the_source_and_auto_confirm_confirms() {
    let app = TestApp::with_config(|c| c.compute.resize_confirm_window = 1).await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let id = boot(&app, &t, &a, &image, &network).await;
    let b = Agent::register(&app, "compute-b").await;
    let r = action(&app, &t, &id, json!({"migrate": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let out = a.expect(&app, "migrate_out").await;
    let mid = out["action"]["migration_id"].as_str().expect("migration").to_string();
    assert_eq!(a.put_disk(&app, &mid, vec![3; 1000]).await.status, StatusCode::NO_CONTENT);
    a.done(&app, &out, "shutdown").await;
    let inbound = b.expect(&app, "migrate_in").await;
    b.event(
        &app,
        &inbound,
        json!({"type": "failed", "message": "no room", "details": "disk full", "retryable": false}),
    )
    .await;
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str()), (Some("ACTIVE"), Some("compute-a")));
    assert_eq!(migrations(&app, "").await[0]["status"], "error");
    let back = a.expect(&app, "migrate_revert").await;
    a.done(&app, &back, "running").await;
    let _ = b.expect(&app, "migrate_cleanup").await;

    // Again, to VERIFY_RESIZE; the window passes and the tick confirms.
    let r = action(&app, &t, &id, json!({"migrate": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let out = a.expect(&app, "migrate_out").await;
    let mid = out["action"]["migration_id"].as_str().expect("migration").to_string();
    assert_eq!(a.put_disk(&app, &mid, vec![3; 1000]).await.status, StatusCode::NO_CONTENT);
    a.done(&app, &out, "shutdown").await;
    let inbound = b.expect(&app, "migrate_in").await;
    b.done(&app, &inbound, "running").await;
    assert_eq!(show(&app, &id).await["status"], "VERIFY_RESIZE");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    crate::compute::conductor::tick(&app.state).await.expect("tick");
    let clean = a.expect(&app, "migrate_cleanup").await;
    a.done(&app, &clean, "no_state").await;
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str()), (Some("ACTIVE"), Some("compute-b")));
    assert_eq!(migrations(&app, "").await[0]["status"], "confirmed");
}

// ---- evacuate ----

async fn evacuate_at(app: &TestApp, version: &str, id: &str, body: Value) -> Reply {
    let h = [("openstack-api-version", version), ("content-type", "application/json")];
    let body = Body::from(json!({"evacuate": body}).to_string());
    app.call(Method::POST, &format!("/compute/v2.1/servers/{id}/action"), Some(&app.admin_token), &h, body).await
}

pub(super) async fn force_down(app: &TestApp, host: &str) {
    let h = app.state.store.get_host_by_name(host).await.expect("host");
    app.state.store.set_host_forced_down(&h.id, true).await.expect("forced down");
}

pub(super) async fn fault(app: &TestApp, id: &str) -> String {
    show(app, id).await["fault"]["message"].as_str().unwrap_or_default().to_string()
}

/// The whole walk: refused while the source is up, the new host rebuilds the server from its
/// image with the same port, the migration goes accepted → pre-migrating → done, the claims
/// follow, and the source, when it registers again, removes its copy: `completed`.
#[tokio::test]
async fn evacuate_rebuilds_on_another_host_and_the_source_cleans_up_when_back() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let id = boot(&app, &t, &a, &image, &network).await;
    let b = Agent::register(&app, "compute-b").await;

    let r = evacuate_at(&app, V, &id, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["badRequest"]["message"], "Compute service of compute-a is still in use.");
    let member = app.user_in_project("bob", "demo", "member").await;
    let r = at(&app, Method::POST, &format!("/servers/{id}/action"), &member, json!({"evacuate": {}})).await;
    assert!(matches!(r.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND), "admin only: {}", r.body);

    force_down(&app, "compute-a").await;
    let r = evacuate_at(&app, V, &id, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.bytes.is_empty(), "no body from 2.14: {}", r.body);
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str()), (Some("REBUILD"), Some("rebuilding")));
    let m = &migrations(&app, "?migration_type=evacuation").await[0];
    assert_eq!(
        (m["status"].as_str(), m["source_compute"].as_str(), m["dest_compute"].as_str()),
        (Some("pre-migrating"), Some("compute-a"), Some("compute-b"))
    );
    assert_eq!(used(&app, "compute-b").await, (1, 512), "the new host is claimed at once");
    // A second evacuate meanwhile is Nova's 409.
    let r = evacuate_at(&app, V, &id, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body["conflictingRequest"]["message"].as_str().is_some_and(|m| m.contains("task_state rebuilding")));

    let work = b.expect(&app, "rebuild").await;
    let port = work["action"]["nics"][0]["port_id"].as_str().expect("the same port").to_string();
    let p = app.json(Method::GET, &format!("/network/v2.0/ports/{port}"), &t, Value::Null).await;
    assert_eq!(p.body["port"]["binding:host_id"], "compute-b", "the port is bound to the new host first");
    for step in ["rebuild_block_device_mapping", "rebuild_spawning"] {
        b.event(&app, &work, json!({"type": "progress", "task_state": step})).await;
        assert_eq!(show(&app, &id).await["OS-EXT-STS:task_state"], step);
    }
    b.done(&app, &work, "running").await;
    let s = show(&app, &id).await;
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str(), s["OS-EXT-STS:task_state"].as_str()),
        (Some("ACTIVE"), Some("compute-b"), None)
    );
    let m = &migrations(&app, "?migration_type=evacuation").await[0];
    assert_eq!(m["status"], "done");
    assert_eq!(
        (used(&app, "compute-a").await, used(&app, "compute-b").await),
        ((1, 512), (1, 512)),
        "the dead source's claim is held until it removed its copy"
    );
    let r = at(&app, Method::GET, &format!("/servers/{id}/os-instance-actions"), &t, Value::Null).await;
    assert_eq!(r.body["instanceActions"][0]["action"], "evacuate");

    // The source comes back: told to remove its copy, then the evacuation is completed.
    let a = Agent::register(&app, "compute-a").await;
    let clean = a.expect(&app, "migrate_cleanup").await;
    assert_eq!((clean["instance_id"].as_str(), clean["action"]["remove"].as_bool()), (Some(id.as_str()), Some(true)));
    // Asked once: a heartbeat meanwhile queues no second cleanup.
    let hb = json!({"inventory": {"vcpus": 8, "memory_mb": 16384, "disk_gb": 100, "reserved_vcpus": 0,
        "reserved_memory_mb": 0, "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1,
        "cpu_arch": "x86_64", "libvirt_uri": "test:///default", "host_ip": "10.0.0.9", "supports_networks": true,
        "availability_zone": "nova"}, "instances": [{"instance_id": id, "power_state": "running"}]});
    let r =
        Agent::call(&app, Method::POST, "/hosts/compute-a/heartbeat", &a.cred, Body::from(hb.to_string()), true).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(a.work(&app).await.is_empty(), "one cleanup at a time");
    a.done(&app, &clean, "no_state").await;
    assert_eq!(migrations(&app, "?migration_type=evacuation").await[0]["status"], "completed");
    assert_eq!((used(&app, "compute-a").await, used(&app, "compute-b").await), ((0, 0), (1, 512)));
    assert_eq!(show(&app, &id).await["status"], "ACTIVE", "the copy on the new host is untouched");
    // Nothing more to remove at the next registration.
    let a = Agent::register(&app, "compute-a").await;
    assert!(a.work(&app).await.is_empty());
}

/// Bodies and answers per microversion, and every refusal, worded as Nova's.
#[tokio::test]
async fn evacuate_bodies_and_faults_follow_the_microversion() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let id = boot(&app, &t, &a, &image, &network).await;
    let b = Agent::register(&app, "compute-b").await;
    force_down(&app, "compute-a").await;
    let msg = |r: &Reply| {
        r.body.as_object().and_then(|o| o.values().next()).map(|f| f["message"].as_str().unwrap_or("").to_string())
    };
    let cases: [(&str, Value, StatusCode, &str); 10] = [
        ("compute 2.1", json!({}), StatusCode::BAD_REQUEST, "'onSharedStorage' is a required property"),
        (
            "compute 2.13",
            json!({"onSharedStorage": true, "adminPass": "x"}),
            StatusCode::BAD_REQUEST,
            "admin password can't be changed on existing disk",
        ),
        ("compute 2.13", json!({"onSharedStorage": "maybe"}), StatusCode::BAD_REQUEST, "onSharedStorage"),
        (
            "compute 2.14",
            json!({"onSharedStorage": false}),
            StatusCode::BAD_REQUEST,
            "('onSharedStorage' was unexpected)",
        ),
        ("compute 2.29", json!({"force": true}), StatusCode::BAD_REQUEST, "Can't force to a non-provided destination"),
        (
            "compute 2.68",
            json!({"host": "compute-b", "force": true}),
            StatusCode::BAD_REQUEST,
            "('force' was unexpected)",
        ),
        ("compute 2.79", json!({"host": "nowhere"}), StatusCode::NOT_FOUND, "Compute host nowhere not found."),
        (
            "compute 2.79",
            json!({"host": "compute-a"}),
            StatusCode::BAD_REQUEST,
            "The target host can't be the same one.",
        ),
        ("compute 2.79", json!({"host": 5}), StatusCode::BAD_REQUEST, "Invalid input for field/attribute host"),
        ("compute 2.79", json!({"adminPass": 5}), StatusCode::BAD_REQUEST, "adminPass"),
    ];
    for (version, body, status, want) in cases {
        let r = evacuate_at(&app, version, &id, body.clone()).await;
        assert_eq!(r.status, status, "{version} {body}: {}", r.body);
        assert!(msg(&r).is_some_and(|m| m.contains(want)), "{version} {body}: {}", r.body);
    }
    assert_eq!(show(&app, &id).await["OS-EXT-STS:task_state"], Value::Null, "refusals change nothing");
    assert!(migrations(&app, "?migration_type=evacuation").await.is_empty());

    // Before 2.14 the answer carries the password (the given one).
    let r = evacuate_at(&app, "compute 2.13", &id, json!({"onSharedStorage": "False", "adminPass": "s3cret"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"adminPass": "s3cret"}));
    let work = b.expect(&app, "rebuild").await;
    // The new host fails the rebuild: ERROR with the fault, still on its source, the new
    // host's claim freed and its partial copy removed.
    b.event(&app, &work, json!({"type": "failed", "message": "no room", "details": "disk full", "retryable": false}))
        .await;
    let s = show(&app, &id).await;
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str(), s["OS-EXT-STS:task_state"].as_str()),
        (Some("ERROR"), Some("compute-a"), None)
    );
    assert_eq!(fault(&app, &id).await, "no room");
    assert_eq!(migrations(&app, "?migration_type=evacuation").await[0]["status"], "failed");
    assert_eq!(used(&app, "compute-b").await, (0, 0));
    let clean = b.expect(&app, "migrate_cleanup").await;
    b.done(&app, &clean, "no_state").await;
    assert_eq!(migrations(&app, "?migration_type=evacuation").await[0]["status"], "failed", "not the source's");
    // The source coming back keeps its (only) copy of a server whose evacuation failed.
    let a = Agent::register(&app, "compute-a").await;
    assert!(a.work(&app).await.is_empty());
    force_down(&app, "compute-a").await;

    // From ERROR it can be evacuated again; a forced host (2.29) skips the filters. The
    // rebuild times out there: ERROR again, the migration failed.
    let r = evacuate_at(&app, "compute 2.29", &id, json!({"host": "compute-b", "force": true})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.bytes.is_empty());
    let _lost = b.expect(&app, "rebuild").await;
    app.state.store.set_instance_deadline(&id, Some("2000-01-01T00:00:00.000000Z")).await.expect("deadline");
    crate::compute::conductor::tick(&app.state).await.expect("tick");
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-STS:task_state"].as_str()), (Some("ERROR"), None));
    assert!(fault(&app, &id).await.contains("did not complete 'evacuate'"), "{s}");
    assert_eq!(migrations(&app, "?migration_type=evacuation").await[0]["status"], "failed");
    assert_eq!(used(&app, "compute-b").await, (0, 0));

    // No other host that is up: 200 (the scheduling is Nova's conductor's), then ERROR with
    // NoValidHost and the migration `error`.
    force_down(&app, "compute-b").await;
    let r = evacuate_at(&app, V, &id, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let s = show(&app, &id).await;
    assert_eq!((s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str()), (Some("ERROR"), Some("compute-a")));
    assert!(fault(&app, &id).await.starts_with("No valid host was found"), "{s}");
    assert_eq!(migrations(&app, "?migration_type=evacuation").await[0]["status"], "error");
}

/// A stopped server is rebuilt on the new host, powered off again there, and stays SHUTOFF.
#[tokio::test]
async fn an_evacuated_stopped_server_stays_stopped() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let id = boot(&app, &t, &a, &image, &network).await;
    let r = action(&app, &t, &id, json!({"os-stop": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let stop = a.expect(&app, "stop").await;
    a.done(&app, &stop, "shutdown").await;
    assert_eq!(show(&app, &id).await["status"], "SHUTOFF");
    let b = Agent::register(&app, "compute-b").await;
    force_down(&app, "compute-a").await;
    assert_eq!(evacuate_at(&app, V, &id, json!({"host": "compute-b"})).await.status, StatusCode::OK);
    let work = b.expect(&app, "rebuild").await;
    b.done(&app, &work, "running").await;
    assert_eq!(show(&app, &id).await["OS-EXT-STS:task_state"], "rebuild_spawning", "powered off again first");
    let stop = b.expect(&app, "stop").await;
    b.done(&app, &stop, "shutdown").await;
    let s = show(&app, &id).await;
    assert_eq!(
        (s["status"].as_str(), s["OS-EXT-SRV-ATTR:host"].as_str(), s["OS-EXT-STS:task_state"].as_str()),
        (Some("SHUTOFF"), Some("compute-b"), None)
    );
    assert_eq!(migrations(&app, "?migration_type=evacuation").await[0]["status"], "done");
}

/// An admin-made flavor with local disks: `ephemeral` GiB and `swap` MiB.
async fn flavor(app: &TestApp, id: &str, ephemeral: i64, swap: i64) {
    let body = json!({"flavor": {"id": id, "name": id, "ram": 64, "vcpus": 1, "disk": 1,
        "OS-FLV-EXT-DATA:ephemeral": ephemeral, "swap": swap}});
    let r = at(app, Method::POST, "/flavors", &app.admin_token, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

fn blank_local(size: Option<i64>, format: Option<&str>) -> Value {
    let mut m = json!({"source_type": "blank", "destination_type": "local", "boot_index": -1,
        "delete_on_termination": true});
    if let Some(s) = size {
        m["volume_size"] = json!(s);
    }
    if let Some(f) = format {
        m["guest_format"] = json!(f);
    }
    m
}

fn create_body(image: &str, network: &str, flavor: &str, mappings: Vec<Value>) -> Value {
    let mut all = vec![json!({"source_type": "image", "destination_type": "local", "uuid": image, "boot_index": 0})];
    all.extend(mappings);
    json!({"server": {"name": "eph", "imageRef": image, "flavorRef": flavor, "networks": [{"uuid": network}],
        "block_device_mapping_v2": all}})
}

#[tokio::test]
async fn blank_local_mappings_follow_novas_rules_and_shape_the_build() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "eph-a").await;
    let t = app.admin_token.clone();
    flavor(&app, "eph2", 2, 512).await;

    // Nova's `_validate_bdm`, against the flavor's ephemeral (2 GiB) and swap (512 MiB).
    let cases: Vec<(Vec<Value>, &str)> = vec![
        (
            vec![blank_local(Some(3), None)],
            "Ephemeral disks requested are larger than the instance type allows. If no size is given in one block \
             device mapping, flavor ephemeral size will be used.",
        ),
        // A mapping without a size takes the flavor's: 2 + 1 > 2.
        (
            vec![blank_local(None, Some("ext4")), blank_local(Some(1), None)],
            "Ephemeral disks requested are larger than the instance type allows. If no size is given in one block \
             device mapping, flavor ephemeral size will be used.",
        ),
        (vec![blank_local(Some(1024), Some("swap"))], "Swap drive requested is larger than instance type allows."),
        (
            vec![blank_local(Some(128), Some("swap")), blank_local(Some(128), Some("swap"))],
            "Block Device Mapping is Invalid: More than one swap drive requested.",
        ),
        // The image's root disk counts: 4 local disks > max_local_block_devices (3).
        (
            vec![blank_local(Some(1), None), blank_local(Some(1), None), blank_local(Some(128), Some("swap"))],
            "Block Device Mapping is Invalid: You specified more local devices than the limit allows",
        ),
        (
            vec![json!({"source_type": "blank", "destination_type": "volume", "boot_index": -1})],
            "Blank volumes (source: 'blank', dest: 'volume') need to have non-zero size",
        ),
    ];
    for (mappings, msg) in cases {
        let r = at(&app, Method::POST, "/servers", &t, create_body(&image, &network, "eph2", mappings.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{mappings:?}: {}", r.body);
        assert_eq!(r.body["badRequest"]["message"], msg, "{mappings:?}");
    }

    // Two ephemeral disks of 1 GiB (ext3, and the default) and no swap mapping: the flavor's
    // swap stays. The build carries the layout; the server keeps it for its devices.
    let mappings = vec![blank_local(Some(1), Some("ext3")), blank_local(Some(1), None)];
    let r = at(&app, Method::POST, "/servers", &t, create_body(&image, &network, "eph2", mappings)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();
    let build = a.expect(&app, "build").await;
    assert_eq!(
        build["action"]["local_disks"],
        json!({"ephemerals": [{"size_gb": 1, "guest_format": "ext3"}, {"size_gb": 1, "guest_format": null}],
            "swap_mb": 512})
    );
    a.done(&app, &build, "running").await;
    let inst = app.state.store.get_instance(&id).await.expect("instance");
    let devices = super::bdm::instance_local_devices(&app.state, &inst).await.expect("devices");
    assert_eq!(devices, ["vda", "vdb", "vdc", "vdd"], "root, two ephemeral disks, swap");

    // A swap mapping alone: the flavor's ephemeral disk stays, the swap is the mapping's.
    let r = at(
        &app,
        Method::POST,
        "/servers",
        &t,
        create_body(&image, &network, "eph2", vec![blank_local(Some(256), Some("swap"))]),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let build = a.expect(&app, "build").await;
    assert_eq!(
        build["action"]["local_disks"],
        json!({"ephemerals": [{"size_gb": 2, "guest_format": null}], "swap_mb": 256})
    );
    a.done(&app, &build, "running").await;

    // No local mapping: the flavor's disks, and no layout in the build.
    let body = json!({"server": {"name": "plain", "imageRef": image, "flavorRef": "eph2",
        "networks": [{"uuid": network}]}});
    assert_eq!(at(&app, Method::POST, "/servers", &t, body).await.status, StatusCode::ACCEPTED);
    let build = a.expect(&app, "build").await;
    assert!(build["action"].get("local_disks").is_none(), "{}", build["action"]);
    a.done(&app, &build, "running").await;

    // Deleting the server removes its layout.
    assert_eq!(
        at(&app, Method::DELETE, &format!("/servers/{id}"), &t, Value::Null).await.status,
        StatusCode::NO_CONTENT
    );
    let gone = a.expect(&app, "delete").await;
    a.done(&app, &gone, "no_state").await;
    for _ in 0..100 {
        if app.state.store.instance_local_disks(&id).await.expect("rows").is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the deleted server's local disks are still recorded");
}

#[tokio::test]
async fn resize_refuses_a_smaller_ephemeral_disk_as_novas_libvirt_driver() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "eph-r").await;
    let t = app.admin_token.clone();
    flavor(&app, "eph2", 2, 0).await;
    flavor(&app, "eph1", 1, 0).await;
    flavor(&app, "eph3", 3, 0).await;
    // The flavor's ephemeral disk (2 GiB), then one of the mappings' (1 + 1 GiB).
    let plain =
        json!({"server": {"name": "p", "imageRef": image, "flavorRef": "eph2", "networks": [{"uuid": network}]}});
    let mapped = create_body(&image, &network, "eph2", vec![blank_local(Some(1), None), blank_local(Some(1), None)]);
    for body in [plain, mapped] {
        let r = at(&app, Method::POST, "/servers", &t, body).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let id = r.body["server"]["id"].as_str().expect("id").to_string();
        let build = a.expect(&app, "build").await;
        a.done(&app, &build, "running").await;
        let r = action(&app, &t, &id, json!({"resize": {"flavorRef": "eph1"}})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.body["badRequest"]["message"], "Resize error: Unable to resize disk down.");
        assert_eq!(show(&app, &id).await["status"], "ACTIVE", "nothing changed");
        let r = action(&app, &t, &id, json!({"resize": {"flavorRef": "eph3"}})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        let w = a.expect(&app, "resize_local").await;
        a.done(&app, &w, "running").await;
        assert_eq!(action(&app, &t, &id, json!({"confirmResize": null})).await.status, StatusCode::NO_CONTENT);
        let w = a.expect(&app, "migrate_cleanup").await;
        a.done(&app, &w, "running").await;
    }
}
