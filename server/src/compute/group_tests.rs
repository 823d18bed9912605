//! Server groups, scheduler hints, aggregates and availability zones through the API, with real
//! SQLite and hosts registered in the store (no agents: a build is placed, then waits for its
//! host, which is all the scheduler tests need).

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::store::hosts::HostInventory;
use crate::testing::{Reply, TestApp};

async fn at(app: &TestApp, method: Method, path: &str, token: &str, version: &str, body: Value) -> Reply {
    let (b, ct) =
        if body.is_null() { (Body::empty(), None) } else { (Body::from(body.to_string()), Some("application/json")) };
    let mut h = vec![("openstack-api-version", version)];
    if let Some(ct) = ct {
        h.push(("content-type", ct));
    }
    app.call(method, &format!("/compute/v2.1{path}"), Some(token), &h, b).await
}

async fn host(app: &TestApp, name: &str, zone: &str) -> String {
    let inv = HostInventory {
        availability_zone: zone.into(),
        hypervisor_type: "QEMU".into(),
        hypervisor_version: 1,
        cpu_arch: "x86_64".into(),
        libvirt_uri: "test:///default".into(),
        host_ip: "127.0.0.1".into(),
        supports_networks: true,
        agent_version: "test".into(),
        vcpus: 8,
        memory_mb: 16384,
        disk_gb: 100,
        ..Default::default()
    };
    app.state.store.register_host(name, &inv).await.expect("register")
}

/// A public image and a shared network with a subnet.
async fn cloud(app: &TestApp) -> (String, String) {
    app.image_and_network(0).await
}

/// Boots `count` servers (min = max = count) with `extra` merged into the body; their ids.
async fn boot(app: &TestApp, token: &str, image: &str, network: &str, count: i64, extra: Value) -> Reply {
    let mut body = json!({"server": {"name": "g", "imageRef": image, "flavorRef": "1",
        "networks": [{"uuid": network}], "min_count": count, "max_count": count}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if k == "server" {
                if let (Some(s), Some(ev)) = (b.get_mut("server").and_then(Value::as_object_mut), v.as_object()) {
                    s.extend(ev.clone());
                }
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    at(app, Method::POST, "/servers", token, "compute 2.79", body).await
}

/// The servers of a reservation (or every server), by name order.
async fn servers(app: &TestApp) -> Vec<Value> {
    let r = at(app, Method::GET, "/servers/detail", &app.admin_token, "compute 2.79", Value::Null).await;
    let mut list = r.body["servers"].as_array().cloned().unwrap_or_default();
    list.sort_by_key(|s| s["created"].as_str().unwrap_or_default().to_string() + s["id"].as_str().unwrap_or(""));
    list
}

/// Waits until the server is placed (its host) or failed (`None`, with its fault message).
async fn outcome(app: &TestApp, id: &str) -> Result<String, String> {
    for _ in 0..500 {
        let r = at(app, Method::GET, &format!("/servers/{id}"), &app.admin_token, "compute 2.79", Value::Null).await;
        let s = &r.body["server"];
        if s["status"] == "ERROR" {
            return Err(s["fault"]["message"].as_str().unwrap_or_default().to_string());
        }
        if let Some(h) = s["OS-EXT-SRV-ATTR:host"].as_str() {
            return Ok(h.to_string());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{id} neither placed nor failed");
}

async fn group(app: &TestApp, token: &str, policy: &str) -> String {
    let r = at(
        app,
        Method::POST,
        "/os-server-groups",
        token,
        "compute 2.64",
        json!({"server_group": {"name": policy, "policy": policy}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["server_group"]["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn server_group_bodies_follow_the_microversion() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "p1", "member").await;
    let v21 = json!({"server_group": {"name": "web", "policies": ["anti-affinity"]}});
    let r = at(&app, Method::POST, "/os-server-groups", &t, "compute 2.1", v21).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let g = &r.body["server_group"];
    let mut keys: Vec<&str> = g.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["id", "members", "metadata", "name", "policies"]);
    assert_eq!(g["policies"], json!(["anti-affinity"]));
    assert_eq!(g["metadata"], json!({}));
    let id = g["id"].as_str().expect("id").to_string();

    let r = at(&app, Method::GET, &format!("/os-server-groups/{id}"), &t, "compute 2.13", Value::Null).await;
    assert_eq!(r.body["server_group"]["project_id"].as_str().map(str::len), Some(32));
    assert!(r.body["server_group"]["user_id"].is_string());

    let r = at(&app, Method::GET, &format!("/os-server-groups/{id}"), &t, "compute 2.64", Value::Null).await;
    let g = &r.body["server_group"];
    assert_eq!(g["policy"], "anti-affinity");
    assert_eq!(g["rules"], json!({}));
    assert!(g.get("policies").is_none() && g.get("metadata").is_none(), "{g}");

    let with_rules =
        json!({"server_group": {"name": "r", "policy": "anti-affinity", "rules": {"max_server_per_host": 2}}});
    let r = at(&app, Method::POST, "/os-server-groups", &t, "compute 2.64", with_rules).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["server_group"]["rules"], json!({"max_server_per_host": 2}));

    let soft = json!({"server_group": {"name": "s", "policies": ["soft-affinity"]}});
    let r = at(&app, Method::POST, "/os-server-groups", &t, "compute 2.15", soft.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["server_group"]["policies"], json!(["soft-affinity"]));

    let list = at(&app, Method::GET, "/os-server-groups", &t, "compute 2.64", Value::Null).await;
    assert_eq!(list.body["server_groups"].as_array().map(Vec::len), Some(3));
    let page = at(&app, Method::GET, "/os-server-groups?limit=1&offset=1", &t, "compute 2.64", Value::Null).await;
    assert_eq!(page.body["server_groups"].as_array().map(Vec::len), Some(1));

    // Another project sees none of them; an admin sees them with all_projects only.
    let other = app.user_in_project("bob", "p2", "member").await;
    let r = at(&app, Method::GET, "/os-server-groups", &other, "compute 2.64", Value::Null).await;
    assert_eq!(r.body["server_groups"], json!([]));
    let r = at(&app, Method::GET, &format!("/os-server-groups/{id}"), &other, "compute 2.64", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = at(&app, Method::GET, "/os-server-groups", &app.admin_token, "compute 2.64", Value::Null).await;
    assert_eq!(r.body["server_groups"], json!([]));
    let r = at(&app, Method::GET, "/os-server-groups?all_projects=True", &app.admin_token, "compute 2.64", Value::Null)
        .await;
    assert_eq!(r.body["server_groups"].as_array().map(Vec::len), Some(3));

    let r = at(&app, Method::DELETE, &format!("/os-server-groups/{id}"), &t, "compute 2.64", Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = at(&app, Method::GET, &format!("/os-server-groups/{id}"), &t, "compute 2.64", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["message"], format!("Instance group {id} could not be found."));
    let r = at(&app, Method::DELETE, &format!("/os-server-groups/{id}"), &t, "compute 2.64", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn server_group_validation_is_novas() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let cases = [
        ("compute 2.1", json!({"server_group": {"name": "x", "policies": ["soft-affinity"]}}), "is not one of"),
        ("compute 2.1", json!({"server_group": {"name": "x", "policies": ["affinity", "anti-affinity"]}}), "too long"),
        ("compute 2.1", json!({"server_group": {"name": "x", "policies": []}}), "non-empty"),
        ("compute 2.1", json!({"server_group": {"name": "x"}}), "'policies' is a required property"),
        ("compute 2.1", json!({"server_group": {"policies": ["affinity"]}}), "'name' is a required property"),
        ("compute 2.1", json!({"server_group": {"name": " x", "policies": ["affinity"]}}), "whitespace"),
        ("compute 2.1", json!({"server_group": {"name": "", "policies": ["affinity"]}}), "too short"),
        ("compute 2.64", json!({"server_group": {"name": "x", "policies": ["affinity"]}}), "not allowed"),
        ("compute 2.64", json!({"server_group": {"name": "x", "policy": "bogus"}}), "is not one of"),
        (
            "compute 2.64",
            json!({"server_group": {"name": "x", "policy": "affinity", "rules": {"max_server_per_host": 2}}}),
            "Only anti-affinity policy supports rules.",
        ),
        (
            "compute 2.64",
            json!({"server_group": {"name": "x", "policy": "anti-affinity", "rules": {"max_server_per_host": 0}}}),
            "less than the minimum of 1",
        ),
        (
            "compute 2.64",
            json!({"server_group": {"name": "x", "policy": "anti-affinity", "rules": {"other": 1}}}),
            "not allowed",
        ),
        ("compute 2.64", json!({"bogus": {}}), "not allowed"),
        ("compute 2.64", json!({}), "'server_group' is a required property"),
    ];
    for (version, body, want) in cases {
        let r = at(&app, Method::POST, "/os-server-groups", &t, version, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        let msg = r.body["badRequest"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body}: {msg}");
    }
}

#[tokio::test]
async fn server_group_quotas_are_shown_and_enforced() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    host(&app, "c1", "nova").await;
    let t = app.user_in_project("alice", "p1", "member").await;
    let pid = app.state.store.get_project_by_name("default", "p1").await.map(|p| p.id).unwrap_or_default();
    let a = app.admin_token.clone();
    let r = at(
        &app,
        Method::PUT,
        &format!("/os-quota-sets/{pid}"),
        &a,
        "compute 2.56",
        json!({"quota_set": {"server_groups": 1, "server_group_members": 1}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let g = group(&app, &t, "soft-anti-affinity").await;
    let r = at(
        &app,
        Method::POST,
        "/os-server-groups",
        &t,
        "compute 2.64",
        json!({"server_group": {"name": "two", "policy": "affinity"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["forbidden"]["message"], "Quota exceeded, too many server groups.");
    let r = at(&app, Method::GET, &format!("/os-quota-sets/{pid}/detail"), &t, "compute 2.56", Value::Null).await;
    assert_eq!(r.body["quota_set"]["server_groups"]["limit"], 1, "{}", r.body);
    assert_eq!(r.body["quota_set"]["server_groups"]["in_use"], 1, "{}", r.body);
    let lim = at(&app, Method::GET, "/limits", &t, "compute 2.56", Value::Null).await;
    assert_eq!(lim.body["limits"]["absolute"]["totalServerGroupsUsed"], 1);

    // Two members asked for in one request, one allowed.
    let hint = json!({"os:scheduler_hints": {"group": g}});
    let r = boot(&app, &t, &image, &network, 2, hint.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["forbidden"]["message"], "Quota exceeded, too many servers in group");
    let r = boot(&app, &t, &image, &network, 1, hint.clone()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = boot(&app, &t, &image, &network, 1, hint).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
}

#[tokio::test]
async fn hints_are_validated_and_unknown_groups_refused() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    host(&app, "c1", "nova").await;
    let t = app.admin_token.clone();
    let missing = "6f1ab1a2-5fd0-4a4b-9a9a-3f4cdb0a1c11";
    let r = boot(&app, &t, &image, &network, 1, json!({"os:scheduler_hints": {"group": missing}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["badRequest"]["message"], format!("Instance group {missing} could not be found."));
    for bad in [json!({"group": "not-a-uuid"}), json!({"different_host": "nope"}), json!({"same_host": 3})] {
        let r = boot(&app, &t, &image, &network, 1, json!({"os:scheduler_hints": bad})).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
    // Another project's group is not found either (admins may use any).
    let other = app.user_in_project("bob", "p2", "member").await;
    let g = group(&app, &other, "affinity").await;
    let alice = app.user_in_project("alice", "p1", "member").await;
    let r = boot(&app, &alice, &image, &network, 1, json!({"OS-SCH-HNT:scheduler_hints": {"group": g}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = boot(&app, &t, &image, &network, 1, json!({"server": {"availability_zone": "mars"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["badRequest"]["message"], "The requested availability zone is not available");
}

#[tokio::test]
async fn anti_affinity_spreads_then_finds_no_valid_host() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    host(&app, "c1", "nova").await;
    host(&app, "c2", "nova").await;
    let t = app.admin_token.clone();
    let g = group(&app, &t, "anti-affinity").await;
    let r = boot(&app, &t, &image, &network, 2, json!({"os:scheduler_hints": {"group": g}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let list = servers(&app).await;
    assert_eq!(list.len(), 2);
    let mut hosts = Vec::new();
    for s in &list {
        hosts.push(outcome(&app, s["id"].as_str().expect("id")).await.expect("placed"));
    }
    hosts.sort();
    assert_eq!(hosts, ["c1", "c2"], "one member per host");
    let r = at(&app, Method::GET, &format!("/os-server-groups/{g}"), &t, "compute 2.64", Value::Null).await;
    assert_eq!(r.body["server_group"]["members"].as_array().map(Vec::len), Some(2));
    let id0 = list[0]["id"].as_str().expect("id");
    let r = at(&app, Method::GET, &format!("/servers/{id0}"), &t, "compute 2.71", Value::Null).await;
    assert_eq!(r.body["server"]["server_groups"], json!([g]), "2.71 shows the group");
    let r = at(&app, Method::GET, &format!("/servers/{id0}"), &t, "compute 2.70", Value::Null).await;
    assert!(r.body["server"].get("server_groups").is_none());

    let r = boot(&app, &t, &image, &network, 1, json!({"os:scheduler_hints": {"group": g}})).await;
    let third = r.body["server"]["id"].as_str().expect("id").to_string();
    let fault = outcome(&app, &third).await.expect_err("no host left");
    assert_eq!(fault, "No valid host was found. There are not enough hosts available.");
    // The hint is stored with the instance, and the request built for it again applies it.
    let hints = app.state.store.scheduler_hints(&third).await.expect("hints");
    assert_eq!(hints["group"], g);
    let inst = app.state.store.get_instance(&third).await.expect("instance");
    let flavor: Value = serde_json::from_str(&inst.flavor).expect("flavor");
    let req = crate::compute::conductor::request_for_instance(&app.state, &inst, &flavor, None).await.expect("request");
    let placement = req.group.expect("group");
    assert_eq!(placement.policy, crate::compute::scheduler::GroupPolicy::AntiAffinity);
    assert_eq!(placement.members_per_host.values().sum::<i64>(), 2);
}

#[tokio::test]
async fn max_server_per_host_allows_that_many() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    host(&app, "c1", "nova").await;
    let t = app.admin_token.clone();
    let r = at(
        &app,
        Method::POST,
        "/os-server-groups",
        &t,
        "compute 2.64",
        json!({"server_group": {"name": "two", "policy": "anti-affinity", "rules": {"max_server_per_host": 2}}}),
    )
    .await;
    let g = r.body["server_group"]["id"].as_str().expect("id").to_string();
    let r = boot(&app, &t, &image, &network, 3, json!({"os:scheduler_hints": {"group": g}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let mut placed = 0;
    let mut failed = 0;
    for s in servers(&app).await {
        match outcome(&app, s["id"].as_str().expect("id")).await {
            Ok(h) => {
                assert_eq!(h, "c1");
                placed += 1;
            }
            Err(f) => {
                assert!(f.starts_with("No valid host was found"), "{f}");
                failed += 1;
            }
        }
    }
    assert_eq!((placed, failed), (2, 1));
}

#[tokio::test]
async fn racing_anti_affinity_boots_never_share_the_last_host() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    host(&app, "c1", "nova").await;
    let t = app.admin_token.clone();
    let g = group(&app, &t, "anti-affinity").await;
    let hint = json!({"os:scheduler_hints": {"group": g}});
    // Four separate requests at once for the one host.
    let (a, b, c, d) = tokio::join!(
        boot(&app, &t, &image, &network, 1, hint.clone()),
        boot(&app, &t, &image, &network, 1, hint.clone()),
        boot(&app, &t, &image, &network, 1, hint.clone()),
        boot(&app, &t, &image, &network, 1, hint.clone()),
    );
    let mut placed = Vec::new();
    for r in [a, b, c, d] {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        if let Ok(h) = outcome(&app, r.body["server"]["id"].as_str().expect("id")).await {
            placed.push(h);
        }
    }
    assert_eq!(placed, ["c1"], "exactly one member on the one host");
}

#[tokio::test]
async fn affinity_and_host_hints_choose_hosts() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    for h in ["c1", "c2", "c3"] {
        host(&app, h, "nova").await;
    }
    let t = app.admin_token.clone();
    let g = group(&app, &t, "affinity").await;
    let r = boot(&app, &t, &image, &network, 3, json!({"os:scheduler_hints": {"group": g}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let mut hosts = Vec::new();
    let list = servers(&app).await;
    for s in &list {
        hosts.push(outcome(&app, s["id"].as_str().expect("id")).await.expect("placed"));
    }
    hosts.dedup();
    assert_eq!(hosts.len(), 1, "all together: {hosts:?}");
    let first = list[0]["id"].as_str().expect("id").to_string();
    let together = hosts[0].clone();

    let r = boot(&app, &t, &image, &network, 1, json!({"os:scheduler_hints": {"same_host": first}})).await;
    let same = outcome(&app, r.body["server"]["id"].as_str().expect("id")).await.expect("placed");
    assert_eq!(same, together);
    let r = boot(&app, &t, &image, &network, 1, json!({"os:scheduler_hints": {"different_host": [first]}})).await;
    let diff = outcome(&app, r.body["server"]["id"].as_str().expect("id")).await.expect("placed");
    assert_ne!(diff, together);
    // same_host naming a server that does not exist: no host passes (Nova's SameHostFilter).
    let r = boot(
        &app,
        &t,
        &image,
        &network,
        1,
        json!({"os:scheduler_hints": {"same_host": ["0b0b0b0b-0000-4000-8000-000000000000"]}}),
    )
    .await;
    let fault = outcome(&app, r.body["server"]["id"].as_str().expect("id")).await.expect_err("no host");
    assert!(fault.starts_with("No valid host was found"), "{fault}");
}

#[tokio::test]
async fn aggregates_crud_and_zones() {
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    host(&app, "c1", "nova").await;
    host(&app, "c2", "nova").await;
    let t = app.admin_token.clone();
    let member = app.user_in_project("alice", "p1", "member").await;
    let r = at(&app, Method::GET, "/os-aggregates", &member, "compute 2.41", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = at(
        &app,
        Method::POST,
        "/os-aggregates",
        &t,
        "compute 2.41",
        json!({"aggregate": {"name": "a1", "availability_zone": "az1"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let a = &r.body["aggregate"];
    assert_eq!(a["availability_zone"], "az1");
    assert!(a.get("hosts").is_none() && a.get("metadata").is_none(), "{a}");
    assert_eq!(a["uuid"].as_str().map(str::len), Some(36));
    assert_eq!(a["deleted"], false);
    let id = a["id"].as_i64().expect("integer id");
    let r = at(&app, Method::POST, "/os-aggregates", &t, "compute 2.41", json!({"aggregate": {"name": "a1"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["conflictingRequest"]["message"], "Aggregate a1 already exists.");
    let r = at(
        &app,
        Method::POST,
        "/os-aggregates",
        &t,
        "compute 2.41",
        json!({"aggregate": {"name": "x", "availability_zone": "a:b"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = at(&app, Method::GET, &format!("/os-aggregates/{id}"), &t, "compute 2.1", Value::Null).await;
    assert!(r.body["aggregate"].get("uuid").is_none(), "uuid from 2.41 only");
    assert_eq!(r.body["aggregate"]["metadata"], json!({"availability_zone": "az1"}));
    let r = at(&app, Method::GET, "/os-aggregates/abc", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = at(&app, Method::GET, "/os-aggregates/999", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["message"], "Aggregate 999 could not be found.");

    let path = format!("/os-aggregates/{id}/action");
    let action = |body: Value| at(&app, Method::POST, &path, &t, "compute 2.41", body);
    let r = action(json!({"add_host": {"host": "nope"}})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["message"], "Compute host nope could not be found.");
    let r = action(json!({"add_host": {"host": "c1"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["aggregate"]["hosts"], json!(["c1"]));
    let r = action(json!({"add_host": {"host": "c1"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["conflictingRequest"]["message"], format!("Aggregate {id} already has host c1."));

    // The host's zone is the aggregate's: services, zones and the scheduler see it.
    let r = at(&app, Method::GET, "/os-services?binary=nova-compute&host=c1", &t, "compute 2.53", Value::Null).await;
    assert_eq!(r.body["services"][0]["zone"], "az1");
    let r = at(&app, Method::GET, "/os-availability-zone", &member, "compute 2.1", Value::Null).await;
    let zones: Vec<&str> = r.body["availabilityZoneInfo"]
        .as_array()
        .expect("zones")
        .iter()
        .filter_map(|z| z["zoneName"].as_str())
        .collect();
    assert_eq!(zones, ["az1", "nova"]);
    assert!(r.body["availabilityZoneInfo"][0]["hosts"].is_null());
    let r = at(&app, Method::GET, "/os-availability-zone/detail", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = at(&app, Method::GET, "/os-availability-zone/detail", &t, "compute 2.1", Value::Null).await;
    let az1 =
        r.body["availabilityZoneInfo"].as_array().expect("zones").iter().find(|z| z["zoneName"] == "az1").cloned();
    let svc = &az1.expect("az1")["hosts"]["c1"]["nova-compute"];
    assert_eq!((svc["available"].clone(), svc["active"].clone()), (json!(true), json!(true)), "{svc}");
    assert!(svc["updated_at"].is_string());

    let r = boot(&app, &t, &image, &network, 1, json!({"server": {"availability_zone": "az1"}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let sid = r.body["server"]["id"].as_str().expect("id").to_string();
    assert_eq!(outcome(&app, &sid).await, Ok("c1".to_string()));
    let r = at(&app, Method::GET, &format!("/servers/{sid}"), &t, "compute 2.79", Value::Null).await;
    assert_eq!(r.body["server"]["OS-EXT-AZ:availability_zone"], "az1");

    // A host in one zone only.
    let r = at(
        &app,
        Method::POST,
        "/os-aggregates",
        &t,
        "compute 2.41",
        json!({"aggregate": {"name": "a2", "availability_zone": "az2"}}),
    )
    .await;
    let id2 = r.body["aggregate"]["id"].as_i64().expect("id");
    let r = at(
        &app,
        Method::POST,
        &format!("/os-aggregates/{id2}/action"),
        &t,
        "compute 2.41",
        json!({"add_host": {"host": "c1"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert!(r.body["conflictingRequest"]["message"].as_str().unwrap_or_default().contains("['az1']"), "{}", r.body);

    // set_metadata: a null value removes the key; renaming the zone moves the host.
    let r = action(json!({"set_metadata": {"metadata": {"ssd": "true", "gone": null}}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["aggregate"]["metadata"], json!({"availability_zone": "az1", "ssd": "true"}));
    let r = action(json!({"set_metadata": {"metadata": {"ssd": null}}})).await;
    assert_eq!(r.body["aggregate"]["metadata"], json!({"availability_zone": "az1"}));
    let r = at(
        &app,
        Method::PUT,
        &format!("/os-aggregates/{id}"),
        &t,
        "compute 2.41",
        json!({"aggregate": {"name": "renamed", "availability_zone": "az9"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        (r.body["aggregate"]["name"].clone(), r.body["aggregate"]["availability_zone"].clone()),
        (json!("renamed"), json!("az9"))
    );
    assert!(r.body["aggregate"]["updated_at"].is_string());
    let h = app.state.store.get_host_by_name("c1").await.expect("host");
    assert_eq!(h.availability_zone, "az9");

    let r = at(&app, Method::DELETE, &format!("/os-aggregates/{id}"), &t, "compute 2.41", Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "not empty: {}", r.body);
    let r = action(json!({"remove_host": {"host": "c2"}})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["message"], format!("Cannot remove host c2 in aggregate {id}"));
    let r = action(json!({"remove_host": {"host": "c1"}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["aggregate"]["hosts"], json!([]));
    let h = app.state.store.get_host_by_name("c1").await.expect("host");
    assert_eq!(h.availability_zone, "nova", "back to the zone its agent reports");
    let r = at(&app, Method::DELETE, &format!("/os-aggregates/{id}"), &t, "compute 2.41", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = at(&app, Method::GET, "/os-aggregates", &t, "compute 2.41", Value::Null).await;
    assert_eq!(r.body["aggregates"].as_array().map(Vec::len), Some(1));
}
