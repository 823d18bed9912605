//! Handler tests for the Neutron API, through the whole router.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::store::network::NewPort;
use crate::testing::{Reply, TestApp};

const V2: &str = "/network/v2.0";

fn kind(r: &Reply) -> &str {
    r.body["NeutronError"]["type"].as_str().unwrap_or("")
}

async fn get(app: &TestApp, token: &str, path: &str) -> Reply {
    app.json(Method::GET, &format!("{V2}{path}"), token, Value::Null).await
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Reply {
    app.json(Method::POST, &format!("{V2}{path}"), token, body).await
}

async fn put(app: &TestApp, token: &str, path: &str, body: Value) -> Reply {
    app.json(Method::PUT, &format!("{V2}{path}"), token, body).await
}

async fn delete(app: &TestApp, token: &str, path: &str) -> Reply {
    app.json(Method::DELETE, &format!("{V2}{path}"), token, Value::Null).await
}

async fn network(app: &TestApp, token: &str, body: Value) -> String {
    let r = post(app, token, "/networks", json!({"network": body})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["network"]["id"].as_str().expect("id").to_string()
}

async fn subnet(app: &TestApp, token: &str, net: &str, cidr: &str) -> String {
    let version = if cidr.contains(':') { 6 } else { 4 };
    let r =
        post(app, token, "/subnets", json!({"subnet": {"network_id": net, "cidr": cidr, "ip_version": version}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["subnet"]["id"].as_str().expect("id").to_string()
}

async fn port(app: &TestApp, token: &str, body: Value) -> Reply {
    post(app, token, "/ports", json!({"port": body})).await
}

fn ips(r: &Value) -> Vec<String> {
    r["fixed_ips"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["ip_address"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn ids(r: &Reply, plural: &str) -> Vec<String> {
    r.body[plural]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn discovery_documents() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let r = app.json(Method::GET, "/network/", &t, Value::Null).await;
    assert_eq!(r.body["versions"][0]["id"], "v2.0");
    let r = get(&app, &t, "").await;
    assert_eq!(r.status, StatusCode::OK);
    let names: Vec<&str> =
        r.body["resources"].as_array().expect("list").iter().filter_map(|x| x["collection"].as_str()).collect();
    assert_eq!(names, vec!["networks", "subnets", "ports"]);
    let r = get(&app, &t, "/extensions").await;
    let aliases: Vec<&str> =
        r.body["extensions"].as_array().expect("list").iter().filter_map(|x| x["alias"].as_str()).collect();
    for a in
        ["quotas", "quota_details", "project-id", "standard-attr-timestamp", "standard-attr-tag", "net-mtu", "binding"]
    {
        assert!(aliases.contains(&a), "{a}");
    }
    // No routers or floating IPs: nothing that makes clients look for them.
    for a in ["router", "external-net", "address-group"] {
        assert!(!aliases.contains(&a), "{a}");
    }
    assert_eq!(get(&app, &t, "/extensions/quotas").await.body["extension"]["alias"], "quotas");
    assert_eq!(get(&app, &t, "/extensions/router").await.status, StatusCode::NOT_FOUND);
    let r = app.json(Method::GET, "/network/v2.0/networks", "bogus", Value::Null).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn network_crud() {
    let app = TestApp::new().await;
    let t = app.user_in_project("alice", "pa", "member").await;
    let r = post(&app, &t, "/networks", json!({"network": {"name": "net1"}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let n = &r.body["network"];
    assert_eq!(n["status"], "ACTIVE");
    assert_eq!(n["admin_state_up"], true);
    assert_eq!(n["shared"], false);
    assert_eq!(n["mtu"], 1500);
    // Attributes of extensions that are not loaded are not shown.
    assert!(n.get("router:external").is_none() && n.get("is_default").is_none(), "{n}");
    assert_eq!(n["availability_zones"], json!(["nova"]));
    assert_eq!(n["availability_zone_hints"], json!([]));
    assert_eq!(n["subnets"], json!([]));
    assert_eq!(n["tags"], json!([]));
    assert_eq!(n["port_security_enabled"], true);
    assert_eq!(n["l2_adjacency"], true);
    assert_eq!(n["ipv4_address_scope"], Value::Null);
    assert_eq!(n["revision_number"], 0);
    assert_eq!(n["project_id"], n["tenant_id"]);
    let created = n["created_at"].as_str().expect("time");
    assert_eq!(created.len(), 20, "{created}");
    assert!(created.ends_with('Z'));
    let id = n["id"].as_str().expect("id").to_string();

    let r = get(&app, &t, &format!("/networks/{id}")).await;
    assert_eq!(r.body["network"]["name"], "net1");
    let r = get(&app, &t, &format!("/networks/{id}?fields=id&fields=name")).await;
    assert_eq!(r.body["network"].as_object().map(|o| o.len()), Some(2), "{}", r.body);
    let r = get(&app, &t, "/networks").await;
    assert_eq!(ids(&r, "networks"), vec![id.clone()]);

    let r = put(
        &app,
        &t,
        &format!("/networks/{id}"),
        json!({"network": {"name": "renamed", "mtu": 1450, "description": "d"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["network"]["name"], "renamed");
    assert_eq!(r.body["network"]["mtu"], 1450);
    assert_eq!(r.body["network"]["revision_number"], 1);
    let r = put(&app, &t, &format!("/networks/{id}"), json!({"network": {"id": "x"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["NeutronError"]["message"].as_str().unwrap_or("").contains("read-only"), "{}", r.body);
    let r = put(&app, &t, &format!("/networks/{id}"), json!({"network": {"bogus": 1}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = put(&app, &t, &format!("/networks/{id}"), json!({"network": {"shared": true}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "members may not share");
    // Neutron's answer for an attribute of an extension it does not load.
    let admin = app.admin_token.clone();
    let r = post(&app, &admin, "/networks", json!({"network": {"router:external": true}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["NeutronError"]["message"], "Unrecognized attribute(s) 'router:external'");
    let r = put(&app, &admin, &format!("/networks/{id}"), json!({"network": {"router:external": false}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(&app, &t, "/networks", json!({"network": {"id": "mine"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(&app, &t, "/networks", json!({"network": {"availability_zone_hints": ["elsewhere"]}})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(kind(&r), "AvailabilityZoneNotFound");

    assert_eq!(delete(&app, &t, &format!("/networks/{id}")).await.status, StatusCode::NO_CONTENT);
    let r = get(&app, &t, &format!("/networks/{id}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(kind(&r), "NetworkNotFound");
    assert_eq!(delete(&app, &t, &format!("/networks/{id}")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_is_400() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let r = app
        .call(
            Method::POST,
            "/network/v2.0/networks",
            Some(&t),
            &[("content-type", "application/json")],
            Body::from("{nope"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["NeutronError"].is_object());
    for body in [
        json!({}),
        json!({"network": "x"}),
        json!({"networks": []}),
        json!({"network": {"admin_state_up": "maybe"}}),
        json!({"network": {"name": 5}}),
        json!({"network": {"name": "x".repeat(256)}}),
        json!({"network": {"mtu": 10}}),
        json!({"network": {"mtu": "lots"}}),
    ] {
        let r = post(&app, &t, "/networks", body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body} → {}", r.body);
    }
    for q in [
        "admin_state_up=maybe",
        "mtu=big",
        "nonsense=1",
        "sort_key=name",
        "sort_key=bogus&sort_dir=asc",
        "limit=-1",
        "limit=x",
        "sort_key=name&sort_dir=up",
    ] {
        let r = get(&app, &t, &format!("/networks?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q} → {}", r.body);
    }
    let r = get(&app, &t, "/ports?fixed_ips=bogus").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&app, &t, "/networks?admin_state_up=true").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn list_filters_sorting_and_pagination() {
    let app = TestApp::new().await;
    let t = app.user_in_project("lister", "pl", "member").await;
    let mut all = Vec::new();
    for (i, name) in ["n3", "n1", "n5", "n2", "n4"].iter().enumerate() {
        all.push(network(&app, &t, json!({"name": name, "admin_state_up": i != 0})).await);
    }
    let r = get(&app, &t, "/networks?name=n1&name=n3").await;
    assert_eq!(r.body["networks"].as_array().map(Vec::len), Some(2));
    let r = get(&app, &t, "/networks?admin_state_up=false").await;
    assert_eq!(ids(&r, "networks"), vec![all[0].clone()]);
    let r = get(&app, &t, "/networks?admin_state_up=0&name=n3").await;
    assert_eq!(ids(&r, "networks").len(), 1);
    let r = get(&app, &t, "/networks?name=").await;
    assert_eq!(ids(&r, "networks").len(), 5, "empty filter values are ignored");
    let r = get(&app, &t, "/networks?fields=name").await;
    assert!(r.body["networks"].as_array().expect("list").iter().all(|n| n.as_object().map(|o| o.len()) == Some(1)));

    let r = get(&app, &t, "/networks?sort_key=name&sort_dir=desc").await;
    let names: Vec<&str> =
        r.body["networks"].as_array().expect("list").iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, vec!["n5", "n4", "n3", "n2", "n1"]);

    // Pages of two, by name.
    let r = get(&app, &t, "/networks?sort_key=name&sort_dir=asc&limit=2").await;
    let names: Vec<&str> =
        r.body["networks"].as_array().expect("list").iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, vec!["n1", "n2"]);
    let links = r.body["networks_links"].as_array().expect("links").clone();
    let next = links.iter().find(|l| l["rel"] == "next").expect("next")["href"].as_str().expect("href").to_string();
    assert!(next.starts_with("http://meridian.test/network/v2.0/networks?"), "{next}");
    let path = next.trim_start_matches("http://meridian.test/network/v2.0");
    let r = get(&app, &t, path).await;
    let names: Vec<&str> =
        r.body["networks"].as_array().expect("list").iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, vec!["n3", "n4"]);
    let prev = r.body["networks_links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["rel"] == "previous")
        .expect("prev")["href"]
        .as_str()
        .expect("href")
        .to_string();
    let r = get(&app, &t, prev.trim_start_matches("http://meridian.test/network/v2.0")).await;
    let names: Vec<&str> =
        r.body["networks"].as_array().expect("list").iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, vec!["n1", "n2"]);
    // The last page is short: a previous link only.
    let r = get(&app, &t, path).await;
    let next =
        r.body["networks_links"].as_array().expect("links").iter().find(|l| l["rel"] == "next").expect("next")["href"]
            .as_str()
            .expect("href")
            .to_string();
    let r = get(&app, &t, next.trim_start_matches("http://meridian.test/network/v2.0")).await;
    assert_eq!(r.body["networks"].as_array().map(Vec::len), Some(1));
    let rels: Vec<&str> =
        r.body["networks_links"].as_array().expect("links").iter().filter_map(|l| l["rel"].as_str()).collect();
    assert_eq!(rels, vec!["previous"]);
    // Unknown markers are the resource's 404.
    let r = get(&app, &t, "/networks?limit=2&marker=nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Without a limit there are no links.
    assert!(get(&app, &t, "/networks").await.body.get("networks_links").is_none());
}

#[tokio::test]
async fn bulk_create_is_atomic() {
    let app = TestApp::new().await;
    let t = app.user_in_project("bulk", "pb", "member").await;
    let r = post(&app, &t, "/networks", json!({"networks": [{"name": "a"}, {"name": "b"}]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["networks"].as_array().map(Vec::len), Some(2));
    let r = post(&app, &t, "/networks", json!({"networks": [{"name": "c"}, {"name": "d", "mtu": 5}]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(get(&app, &t, "/networks").await.body["networks"].as_array().map(Vec::len), Some(2));

    let net = ids(&get(&app, &t, "/networks?name=a").await, "networks")[0].clone();
    let sub = subnet(&app, &t, &net, "10.1.0.0/24").await;
    // The second port wants an address the first one takes: nothing is created.
    let r = post(
        &app,
        &t,
        "/ports",
        json!({"ports": [
            {"network_id": net, "fixed_ips": [{"subnet_id": sub, "ip_address": "10.1.0.50"}]},
            {"network_id": net, "fixed_ips": [{"ip_address": "10.1.0.50"}]},
        ]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(kind(&r), "IpAddressAlreadyAllocated");
    assert_eq!(get(&app, &t, "/ports").await.body["ports"].as_array().map(Vec::len), Some(0));
    let r = port(&app, &t, json!({"network_id": net, "fixed_ips": [{"ip_address": "10.1.0.50"}]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "the failed bulk released 10.1.0.50: {}", r.body);
    let r = post(&app, &t, "/ports", json!({"ports": [{"network_id": net}, {"network_id": net, "name": "b"}]})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["ports"].as_array().map(Vec::len), Some(2));

    // Subnets too: the second overlaps the first.
    let r = post(
        &app,
        &t,
        "/subnets",
        json!({"subnets": [
            {"network_id": net, "cidr": "10.2.0.0/24", "ip_version": 4},
            {"network_id": net, "cidr": "10.2.0.0/25", "ip_version": 4},
        ]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(kind(&r), "InvalidInput");
    assert_eq!(get(&app, &t, "/subnets").await.body["subnets"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn ipv4_subnets() {
    let app = TestApp::new().await;
    let t = app.user_in_project("sub", "ps", "member").await;
    let net = network(&app, &t, json!({"name": "n"})).await;
    let r = post(
        &app,
        &t,
        "/subnets",
        json!({"subnet": {"network_id": net, "cidr": "10.0.0.0/24", "ip_version": 4, "name": "s"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let s = &r.body["subnet"];
    assert_eq!(s["gateway_ip"], "10.0.0.1");
    assert_eq!(s["allocation_pools"], json!([{"start": "10.0.0.2", "end": "10.0.0.254"}]));
    assert_eq!(s["dns_nameservers"], json!([]));
    assert_eq!(s["host_routes"], json!([]));
    assert_eq!(s["service_types"], json!([]));
    assert_eq!(s["enable_dhcp"], true);
    assert_eq!(s["ipv6_ra_mode"], Value::Null);
    assert_eq!(s["subnetpool_id"], Value::Null);
    assert_eq!(s["segment_id"], Value::Null);
    assert_eq!(s["revision_number"], 0);
    let sid = s["id"].as_str().expect("id").to_string();
    let n = get(&app, &t, &format!("/networks/{net}")).await;
    assert_eq!(n.body["network"]["subnets"], json!([sid]));
    assert_eq!(n.body["network"]["revision_number"], 1);

    let bad = |body: Value| {
        let mut b = json!({"network_id": net, "ip_version": 4});
        if let (Some(o), Some(extra)) = (b.as_object_mut(), body.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        json!({"subnet": b})
    };
    let cases = [
        (json!({"cidr": "10.9.0.5"}), StatusCode::BAD_REQUEST, "HTTPBadRequest"),
        (json!({"cidr": "fd00::/64"}), StatusCode::BAD_REQUEST, "InvalidInput"),
        (json!({"cidr": "10.0.0.128/25"}), StatusCode::BAD_REQUEST, "InvalidInput"),
        (json!({"cidr": "10.9.0.0/24", "gateway_ip": "10.8.0.1"}), StatusCode::BAD_REQUEST, "InvalidInput"),
        (json!({"cidr": "10.9.0.0/24", "gateway_ip": "10.9.0.255"}), StatusCode::BAD_REQUEST, "InvalidInput"),
        (
            json!({"cidr": "10.9.0.0/24", "allocation_pools": [{"start": "10.9.0.0", "end": "10.9.0.10"}]}),
            StatusCode::BAD_REQUEST,
            "OutOfBoundsAllocationPool",
        ),
        (
            json!({"cidr": "10.9.0.0/24", "allocation_pools": [{"start": "10.9.0.1", "end": "10.9.0.10"}]}),
            StatusCode::CONFLICT,
            "GatewayConflictWithAllocationPools",
        ),
        (
            json!({"cidr": "10.9.0.0/24", "allocation_pools": [{"start": "10.9.0.20", "end": "10.9.0.10"}]}),
            StatusCode::BAD_REQUEST,
            "InvalidAllocationPool",
        ),
        (
            json!({"cidr": "10.9.0.0/24", "allocation_pools": [{"start": "10.9.0.10", "end": "10.9.0.20"}, {"start": "10.9.0.15", "end": "10.9.0.30"}]}),
            StatusCode::CONFLICT,
            "OverlappingAllocationPools",
        ),
        (json!({"cidr": "10.9.0.0/24", "ip_version": 5}), StatusCode::BAD_REQUEST, "HTTPBadRequest"),
        (json!({"cidr": "10.9.0.0/24", "dns_nameservers": ["nope"]}), StatusCode::BAD_REQUEST, "HTTPBadRequest"),
        (
            json!({"cidr": "10.9.0.0/24", "host_routes": [{"destination": "1.2.3.4/8", "nexthop": "10.9.0.1"}]}),
            StatusCode::BAD_REQUEST,
            "HTTPBadRequest",
        ),
        (json!({"cidr": "10.9.0.0/24", "ipv6_ra_mode": "slaac"}), StatusCode::BAD_REQUEST, "InvalidInput"),
        (json!({"cidr": "10.9.0.0/24", "subnetpool_id": "pool"}), StatusCode::NOT_FOUND, "SubnetPoolNotFound"),
        (json!({}), StatusCode::BAD_REQUEST, "HTTPBadRequest"),
        (json!({"cidr": "0.0.0.0/0"}), StatusCode::BAD_REQUEST, "InvalidInput"),
    ];
    for (extra, status, want) in cases {
        let r = post(&app, &t, "/subnets", bad(extra.clone())).await;
        assert_eq!(r.status, status, "{extra} → {}", r.body);
        assert_eq!(kind(&r), want, "{extra} → {}", r.body);
    }
    let r =
        post(&app, &t, "/subnets", json!({"subnet": {"network_id": "nope", "cidr": "10.9.0.0/24", "ip_version": 4}}))
            .await;
    assert_eq!(kind(&r), "NetworkNotFound");

    // No gateway: the pool starts at .1. Explicit pools, DNS and routes are kept.
    let r = post(&app, &t, "/subnets", bad(json!({"cidr": "10.3.0.0/24", "gateway_ip": null}))).await;
    assert_eq!(r.body["subnet"]["gateway_ip"], Value::Null, "{}", r.body);
    assert_eq!(r.body["subnet"]["allocation_pools"], json!([{"start": "10.3.0.1", "end": "10.3.0.254"}]));
    let r = post(
        &app,
        &t,
        "/subnets",
        bad(json!({
            "cidr": "10.4.0.0/24",
            "allocation_pools": [{"start": "10.4.0.100", "end": "10.4.0.110"}, {"start": "10.4.0.10", "end": "10.4.0.20"}],
            "dns_nameservers": ["8.8.8.8", "1.1.1.1"],
            "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.4.0.254"}],
            "enable_dhcp": false,
        })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["subnet"]["dns_nameservers"], json!(["8.8.8.8", "1.1.1.1"]));
    assert_eq!(r.body["subnet"]["host_routes"][0]["nexthop"], "10.4.0.254");
    assert_eq!(r.body["subnet"]["enable_dhcp"], false);
    let pooled = r.body["subnet"]["id"].as_str().expect("id").to_string();
    let p = port(&app, &t, json!({"network_id": net, "fixed_ips": [{"subnet_id": pooled}]})).await;
    assert_eq!(ips(&p.body["port"]), vec!["10.4.0.100"], "first pool first");

    // Updates: name, gateway (must stay out of the pools), pools.
    let r =
        put(&app, &t, &format!("/subnets/{sid}"), json!({"subnet": {"name": "s2", "dns_nameservers": ["9.9.9.9"]}}))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["subnet"]["name"], "s2");
    assert_eq!(r.body["subnet"]["revision_number"], 1);
    let r = put(&app, &t, &format!("/subnets/{sid}"), json!({"subnet": {"gateway_ip": "10.0.0.5"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = put(
        &app,
        &t,
        &format!("/subnets/{sid}"),
        json!({"subnet": {"gateway_ip": "10.0.0.254", "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.200"}]}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["subnet"]["gateway_ip"], "10.0.0.254");
    let r = put(&app, &t, &format!("/subnets/{sid}"), json!({"subnet": {"cidr": "10.0.0.0/16"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&app, &t, &format!("/subnets?network_id={net}&ip_version=4&sort_key=cidr&sort_dir=asc")).await;
    assert_eq!(r.body["subnets"].as_array().map(Vec::len), Some(3));
    assert_eq!(r.body["subnets"][0]["cidr"], "10.0.0.0/24");
    assert_eq!(get(&app, &t, "/subnets?ip_version=six").await.status, StatusCode::BAD_REQUEST);

    // In use by a port: 409; once the port is gone, deletable.
    let r = delete(&app, &t, &format!("/subnets/{pooled}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "SubnetInUse");
    let pid = p.body["port"]["id"].as_str().expect("id").to_string();
    assert_eq!(delete(&app, &t, &format!("/ports/{pid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(delete(&app, &t, &format!("/subnets/{pooled}")).await.status, StatusCode::NO_CONTENT);
    let r = get(&app, &t, &format!("/subnets/{pooled}")).await;
    assert_eq!(kind(&r), "SubnetNotFound");
}

#[tokio::test]
async fn ipv6_subnets_and_dual_stack_ports() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let net = network(&app, &t, json!({"name": "v6"})).await;
    let r = post(&app, &t, "/subnets", json!({"subnet": {"network_id": net, "cidr": "FD00:0::/64", "ip_version": 6}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["subnet"]["cidr"], "fd00::/64");
    assert_eq!(r.body["subnet"]["gateway_ip"], "fd00::1");
    assert_eq!(r.body["subnet"]["allocation_pools"], json!([{"start": "fd00::2", "end": "fd00::ffff:ffff:ffff:ffff"}]));
    let v4 = subnet(&app, &t, &net, "10.5.0.0/24").await;
    let r = port(&app, &t, json!({"network_id": net})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let mut got = ips(&r.body["port"]);
    got.sort();
    assert_eq!(got, vec!["10.5.0.2", "fd00::2"], "one address per family");
    let r = port(&app, &t, json!({"network_id": net, "fixed_ips": [{"subnet_id": v4}]})).await;
    assert_eq!(ips(&r.body["port"]), vec!["10.5.0.3"]);
    let r = port(&app, &t, json!({"network_id": net, "fixed_ips": [{"ip_address": "fd00::abcd"}]})).await;
    assert_eq!(ips(&r.body["port"]), vec!["fd00::abcd"]);

    // SLAAC: the address is EUI-64 from the MAC, and must be /64.
    let slaac_net = network(&app, &t, json!({"name": "slaac"})).await;
    let body = |cidr: &str| json!({"subnet": {"network_id": slaac_net, "cidr": cidr, "ip_version": 6, "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}});
    let r = post(&app, &t, "/subnets", body("2001:db8::/56")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = post(&app, &t, "/subnets", body("2001:db8::/64")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["subnet"]["ipv6_address_mode"], "slaac");
    let r = port(&app, &t, json!({"network_id": slaac_net, "mac_address": "fa:16:3e:00:11:22"})).await;
    assert_eq!(ips(&r.body["port"]), vec!["2001:db8::f816:3eff:fe00:1122"]);
    let r = port(&app, &t, json!({"network_id": slaac_net, "fixed_ips": [{"ip_address": "2001:db8::5"}]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
}

#[tokio::test]
async fn auto_address_subnet_is_deleted_under_its_ports() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    for mode in ["slaac", "dhcpv6-stateless"] {
        let net = network(&app, &t, json!({"name": mode})).await;
        let r = post(
            &app,
            &t,
            "/subnets",
            json!({"subnet": {"network_id": net, "cidr": "2001:db8::/64", "ip_version": 6, "ipv6_ra_mode": mode, "ipv6_address_mode": mode}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let sid = r.body["subnet"]["id"].as_str().expect("id").to_string();
        let r = port(&app, &t, json!({"network_id": net})).await;
        assert_eq!(ips(&r.body["port"]).len(), 1);
        let pid = r.body["port"]["id"].as_str().expect("id").to_string();
        let revision = r.body["port"]["revision_number"].as_i64().expect("revision");
        // The port loses its derived address, the subnet goes; the port keeps the network busy.
        assert_eq!(delete(&app, &t, &format!("/subnets/{sid}")).await.status, StatusCode::NO_CONTENT, "{mode}");
        let r = get(&app, &t, &format!("/ports/{pid}")).await;
        assert_eq!(r.body["port"]["fixed_ips"], json!([]));
        assert_eq!(r.body["port"]["revision_number"].as_i64(), Some(revision + 1));
        let r = delete(&app, &t, &format!("/networks/{net}")).await;
        assert_eq!(r.status, StatusCode::CONFLICT);
    }
}

#[tokio::test]
async fn subnet_cidr_with_host_bits_is_normalised() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let net = network(&app, &t, json!({"name": "hb"})).await;
    let r =
        post(&app, &t, "/subnets", json!({"subnet": {"network_id": net, "cidr": "10.99.99.0/16", "ip_version": 4}}))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["subnet"]["cidr"], "10.99.0.0/16");
    assert_eq!(r.body["subnet"]["gateway_ip"], "10.99.0.1");
}

#[tokio::test]
async fn port_crud_and_ipam() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let net = network(&app, &t, json!({"name": "pn"})).await;
    // A port on a network without subnets has no addresses.
    let r = port(&app, &t, json!({"network_id": net, "name": "bare"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["port"]["fixed_ips"], json!([]));
    let sub = subnet(&app, &t, &net, "10.0.0.0/24").await;
    let r =
        port(&app, &t, json!({"network_id": net, "name": "p1", "device_id": "vm1", "device_owner": "compute:nova"}))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let p = r.body["port"].clone();
    assert_eq!(p["fixed_ips"], json!([{"subnet_id": sub, "ip_address": "10.0.0.2"}]));
    assert!(p["mac_address"].as_str().is_some_and(|m| m.starts_with("fa:16:3e:")), "{p}");
    assert_eq!(p["status"], "DOWN");
    assert_eq!(p["binding:vif_type"], "unbound");
    assert_eq!(p["binding:vnic_type"], "normal");
    assert_eq!(p["binding:profile"], json!({}));
    assert_eq!(p["binding:vif_details"], json!({}));
    assert_eq!(p["binding:host_id"], "");
    // The project's default group, made on this first use.
    assert_eq!(p["security_groups"].as_array().map(Vec::len), Some(1), "{p}");
    assert_eq!(p["allowed_address_pairs"], json!([]));
    assert_eq!(p["extra_dhcp_opts"], json!([]));
    assert_eq!(p["port_security_enabled"], true);
    assert_eq!(p["admin_state_up"], true);
    let pid = p["id"].as_str().expect("id").to_string();
    // Groups are named by id: a name is no group.
    let r = port(&app, &t, json!({"network_id": net, "security_groups": ["default"]})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(kind(&r), "SecurityGroupNotFound");

    let r =
        port(&app, &t, json!({"network_id": net, "fixed_ips": [{"subnet_id": sub, "ip_address": "10.0.0.20"}]})).await;
    assert_eq!(ips(&r.body["port"]), vec!["10.0.0.20"]);
    let r = port(&app, &t, json!({"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.20"}]})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "IpAddressAlreadyAllocated");
    let r = port(&app, &t, json!({"network_id": net, "fixed_ips": [{"ip_address": "10.7.0.20"}]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r =
        port(&app, &t, json!({"network_id": net, "fixed_ips": [{"subnet_id": sub, "ip_address": "10.0.0.255"}]})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(kind(&r), "InvalidIpForSubnet");
    let r = port(&app, &t, json!({"network_id": net, "fixed_ips": [{"subnet_id": "missing"}]})).await;
    assert_eq!(kind(&r), "SubnetNotFound");
    let r = port(&app, &t, json!({"network_id": "missing"})).await;
    assert_eq!(kind(&r), "NetworkNotFound");
    let r = port(&app, &t, json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // MACs: validated, unique per network.
    let r = port(&app, &t, json!({"network_id": net, "mac_address": "FA:16:3E:AA:BB:CC"})).await;
    assert_eq!(r.body["port"]["mac_address"], "fa:16:3e:aa:bb:cc");
    let r = port(&app, &t, json!({"network_id": net, "mac_address": "fa:16:3e:aa:bb:cc"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "MacAddressInUse");
    let r = port(&app, &t, json!({"network_id": net, "mac_address": "zz:16:3e:aa:bb:cc"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Update: fixed IPs move (the old one is free again), name, binding.
    let r = put(
        &app,
        &t,
        &format!("/ports/{pid}"),
        json!({"port": {"fixed_ips": [{"subnet_id": sub, "ip_address": "10.0.0.30"}], "name": "p1b"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(ips(&r.body["port"]), vec!["10.0.0.30"]);
    assert_eq!(r.body["port"]["revision_number"], 1);
    let r = port(&app, &t, json!({"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.2"}]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "10.0.0.2 was released: {}", r.body);
    // {subnet_id} keeps the existing address on that subnet and adds a second one.
    let r = put(
        &app,
        &t,
        &format!("/ports/{pid}"),
        json!({"port": {"fixed_ips": [{"subnet_id": sub}, {"subnet_id": sub}]}}),
    )
    .await;
    let got = ips(&r.body["port"]);
    assert_eq!(got.len(), 2);
    assert!(got.contains(&"10.0.0.30".to_string()), "{got:?}");
    let r = put(&app, &t, &format!("/ports/{pid}"), json!({"port": {"network_id": "x"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = put(&app, &t, &format!("/ports/{pid}"), json!({"port": {"binding:host_id": "host1"}})).await;
    assert_eq!(r.body["port"]["status"], "ACTIVE");
    assert_eq!(r.body["port"]["binding:host_id"], "host1");
    assert_eq!(r.body["port"]["binding:vif_type"], "ovs");
    let r = put(&app, &t, &format!("/ports/{pid}"), json!({"port": {"mac_address": "fa:16:3e:00:00:01"}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "bound ports keep their MAC");
    let r = put(
        &app,
        &t,
        &format!("/ports/{pid}"),
        json!({"port": {"allowed_address_pairs": [{"ip_address": "10.0.0.0/24"}]}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["port"]["allowed_address_pairs"][0]["mac_address"], r.body["port"]["mac_address"]);
    let r = put(&app, &t, &format!("/ports/{pid}"), json!({"port": {"port_security_enabled": false}})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = put(
        &app,
        &t,
        &format!("/ports/{pid}"),
        json!({"port": {"extra_dhcp_opts": [{"opt_name": "bootfile-name", "opt_value": "pxelinux.0"}]}}),
    )
    .await;
    assert_eq!(r.body["port"]["extra_dhcp_opts"][0]["ip_version"], 4);

    // Filters on ports, including fixed_ips.
    let r = get(&app, &t, "/ports?fixed_ips=ip_address%3D10.0.0.30").await;
    assert_eq!(ids(&r, "ports"), vec![pid.clone()]);
    let r = get(&app, &t, &format!("/ports?fixed_ips=subnet_id%3D{sub}&device_id=vm1")).await;
    assert_eq!(ids(&r, "ports"), vec![pid.clone()]);
    let r = get(&app, &t, "/ports?fixed_ips=ip_address_substr%3D10.0.0.3").await;
    assert_eq!(ids(&r, "ports"), vec![pid.clone()]);
    let r = get(&app, &t, "/ports?device_owner=compute:nova&binding:host_id=host1").await;
    assert_eq!(ids(&r, "ports"), vec![pid.clone()]);

    assert_eq!(delete(&app, &t, &format!("/ports/{pid}")).await.status, StatusCode::NO_CONTENT);
    let r = get(&app, &t, &format!("/ports/{pid}")).await;
    assert_eq!(kind(&r), "PortNotFound");
    let r = port(&app, &t, json!({"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.30"}]})).await;
    assert_eq!(r.status, StatusCode::CREATED, "deleting freed the address");
}

#[tokio::test]
async fn exhaustion_and_network_in_use() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let net = network(&app, &t, json!({"name": "small"})).await;
    subnet(&app, &t, &net, "10.6.0.0/29").await;
    let mut got = HashSet::new();
    for _ in 0..5 {
        let r = port(&app, &t, json!({"network_id": net, "device_owner": "compute:nova"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        got.extend(ips(&r.body["port"]));
    }
    assert_eq!(got.len(), 5);
    let r = port(&app, &t, json!({"network_id": net})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "IpAddressGenerationFailure");

    let r = delete(&app, &t, &format!("/networks/{net}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "NetworkInUse");

    // DHCP ports go with their network; compute ports do not.
    let other = network(&app, &t, json!({"name": "dhcp"})).await;
    subnet(&app, &t, &other, "10.7.0.0/24").await;
    let r = port(&app, &t, json!({"network_id": other, "device_owner": "network:dhcp"})).await;
    let dhcp = r.body["port"]["id"].as_str().expect("id").to_string();
    assert_eq!(delete(&app, &t, &format!("/networks/{other}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&app, &t, &format!("/ports/{dhcp}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(&app, &t, &format!("/subnets?network_id={other}")).await.body["subnets"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_port_creation_never_duplicates() {
    let app = Arc::new(TestApp::new().await);
    let t = app.admin_token.clone();
    let net = network(&app, &t, json!({"name": "race"})).await;
    subnet(&app, &t, &net, "10.8.0.0/28").await; // 13 addresses: .2 – .14
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (app, t, net) = (app.clone(), t.clone(), net.clone());
        tasks.push(tokio::spawn(async move {
            let r = port(&app, &t, json!({"network_id": net, "name": format!("p{i}")})).await;
            (r.status, kind(&r).to_string(), ips(&r.body["port"]))
        }));
    }
    let mut addrs = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (status, k, got) = task.await.expect("task");
        if status == StatusCode::CREATED {
            addrs.extend(got);
        } else {
            assert_eq!(status, StatusCode::CONFLICT);
            assert_eq!(k, "IpAddressGenerationFailure");
            failures += 1;
        }
    }
    let unique: HashSet<&String> = addrs.iter().collect();
    assert_eq!(addrs.len(), 13);
    assert_eq!(unique.len(), 13, "{addrs:?}");
    assert_eq!(failures, 11);
}

#[tokio::test]
async fn quotas() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let t = app.user_in_project("q", "pq", "member").await;
    let pid = get(&app, &t, "/quotas/tenant").await.body["tenant"]["tenant_id"].as_str().expect("pid").to_string();
    let r = get(&app, &t, &format!("/quotas/{pid}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["quota"],
        json!({"network": 100, "subnet": 100, "port": 500, "router": 10, "floatingip": 50, "security_group": 10,
               "security_group_rule": 100, "rbac_policy": 10, "subnetpool": -1})
    );
    assert_eq!(get(&app, &t, &format!("/quotas/{pid}/default")).await.body["quota"]["port"], 500);
    assert_eq!(
        put(&app, &t, &format!("/quotas/{pid}"), json!({"quota": {"port": 2}})).await.status,
        StatusCode::FORBIDDEN
    );
    let r = put(&app, &admin, &format!("/quotas/{pid}"), json!({"quota": {"port": 2, "network": "3"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["quota"]["port"], 2);
    assert_eq!(r.body["quota"]["network"], 3);
    assert_eq!(
        put(&app, &admin, &format!("/quotas/{pid}"), json!({"quota": {"bogus": 2}})).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(&app, &admin, &format!("/quotas/{pid}"), json!({"quota": {"port": -2}})).await.status,
        StatusCode::BAD_REQUEST
    );

    let net = network(&app, &t, json!({"name": "q"})).await;
    subnet(&app, &t, &net, "10.0.0.0/24").await;
    assert_eq!(port(&app, &t, json!({"network_id": net})).await.status, StatusCode::CREATED);
    let r = post(&app, &t, "/ports", json!({"ports": [{"network_id": net}, {"network_id": net}]})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(kind(&r), "OverQuota");
    assert_eq!(port(&app, &t, json!({"network_id": net})).await.status, StatusCode::CREATED);
    let r = port(&app, &t, json!({"network_id": net})).await;
    assert_eq!(kind(&r), "OverQuota");
    let r = post(&app, &t, "/networks", json!({"networks": [{}, {}, {}]})).await;
    assert_eq!(kind(&r), "OverQuota");

    let r = get(&app, &t, &format!("/quotas/{pid}/details")).await;
    assert_eq!(r.body["quota"]["port"], json!({"limit": 2, "used": 2, "reserved": 0}));
    assert_eq!(r.body["quota"]["network"]["used"], 1);
    assert_eq!(r.body["quota"]["subnet"]["used"], 1);
    // check_limit refuses a limit under usage; force overrides.
    let r = put(&app, &admin, &format!("/quotas/{pid}"), json!({"quota": {"port": 1, "check_limit": true}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = put(&app, &admin, &format!("/quotas/{pid}"), json!({"quota": {"port": 1, "force": true}})).await;
    assert_eq!(r.status, StatusCode::OK);

    let r = get(&app, &admin, "/quotas").await;
    let listed: Vec<&str> =
        r.body["quotas"].as_array().expect("list").iter().filter_map(|q| q["project_id"].as_str()).collect();
    assert_eq!(listed, vec![pid.as_str()]);
    assert_eq!(get(&app, &t, "/quotas").await.status, StatusCode::FORBIDDEN);
    let other = app.user_in_project("q2", "pq2", "member").await;
    assert_eq!(get(&app, &other, &format!("/quotas/{pid}")).await.status, StatusCode::FORBIDDEN);
    assert_eq!(delete(&app, &admin, &format!("/quotas/{pid}")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&app, &t, &format!("/quotas/{pid}")).await.body["quota"]["port"], 500);
    assert_eq!(get(&app, &admin, "/quotas").await.body["quotas"], json!([]));
    // Compute quotas are untouched by network ones.
    let r = app.json(Method::GET, &format!("/compute/v2.1/os-quota-sets/{pid}"), &admin, Value::Null).await;
    assert_eq!(r.body["quota_set"]["instances"], 10);
}

#[tokio::test]
async fn projects_are_isolated() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let a = app.user_in_project("ua", "proj-a", "member").await;
    let b = app.user_in_project("ub", "proj-b", "member").await;
    let net = network(&app, &a, json!({"name": "a-net"})).await;
    let sub = subnet(&app, &a, &net, "10.0.0.0/24").await;
    let p = port(&app, &a, json!({"network_id": net})).await.body["port"]["id"].as_str().expect("id").to_string();
    for path in [format!("/networks/{net}"), format!("/subnets/{sub}"), format!("/ports/{p}")] {
        assert_eq!(get(&app, &b, &path).await.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(delete(&app, &b, &path).await.status, StatusCode::NOT_FOUND, "{path}");
        let key = if path.starts_with("/networks") {
            "network"
        } else if path.starts_with("/subnets") {
            "subnet"
        } else {
            "port"
        };
        assert_eq!(put(&app, &b, &path, json!({key: {"name": "x"}})).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    for plural in ["networks", "subnets", "ports"] {
        assert_eq!(ids(&get(&app, &b, &format!("/{plural}")).await, plural), Vec::<String>::new(), "{plural}");
        assert_eq!(ids(&get(&app, &a, &format!("/{plural}")).await, plural).len(), 1, "{plural}");
    }
    assert_eq!(kind(&port(&app, &b, json!({"network_id": net})).await), "NetworkNotFound");
    let r = post(&app, &b, "/subnets", json!({"subnet": {"network_id": net, "cidr": "10.1.0.0/24", "ip_version": 4}}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Members cannot create for another project.
    let r = post(&app, &b, "/networks", json!({"network": {"project_id": "someone-else"}})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The admin sees everything and filters by project.
    let b_net = network(&app, &b, json!({"name": "b-net"})).await;
    let r = get(&app, &admin, "/networks").await;
    assert_eq!(ids(&r, "networks").len(), 2);
    let a_pid = get(&app, &a, "/quotas/tenant").await.body["tenant"]["tenant_id"].as_str().expect("pid").to_string();
    assert_eq!(ids(&get(&app, &admin, &format!("/networks?project_id={a_pid}")).await, "networks"), vec![net.clone()]);
    assert_eq!(ids(&get(&app, &admin, &format!("/networks?tenant_id={a_pid}")).await, "networks"), vec![net.clone()]);
    // ... and creates for another project.
    let r = post(&app, &admin, "/networks", json!({"network": {"name": "for-a", "tenant_id": a_pid}})).await;
    assert_eq!(r.body["network"]["project_id"], a_pid.as_str());
    assert_eq!(ids(&get(&app, &a, "/networks").await, "networks").len(), 2);

    // Shared networks are visible to everyone, and others may plug ports into them.
    let shared = network(&app, &admin, json!({"name": "public", "shared": true})).await;
    let ssub = subnet(&app, &admin, &shared, "192.168.0.0/24").await;
    assert_eq!(get(&app, &b, &format!("/networks/{shared}")).await.status, StatusCode::OK);
    assert_eq!(get(&app, &b, &format!("/subnets/{ssub}")).await.status, StatusCode::OK);
    let r = port(&app, &b, json!({"network_id": shared, "name": "b-port"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let b_port = r.body["port"]["id"].as_str().expect("id").to_string();
    assert!(r.body["port"].get("binding:host_id").is_none(), "binding details are admin-only");
    assert_eq!(r.body["port"]["binding:vnic_type"], "normal");
    let r = port(&app, &b, json!({"network_id": shared, "fixed_ips": [{"ip_address": "192.168.0.77"}]})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "only the network owner picks addresses");
    let r = port(&app, &b, json!({"network_id": shared, "fixed_ips": [{"subnet_id": ssub}]})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        put(&app, &b, &format!("/networks/{shared}"), json!({"network": {"name": "mine"}})).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(delete(&app, &b, &format!("/networks/{shared}")).await.status, StatusCode::FORBIDDEN);
    // A does not see B's port on the shared network.
    assert_eq!(get(&app, &a, &format!("/ports/{b_port}")).await.status, StatusCode::NOT_FOUND);
    // Unsharing while B uses it is refused.
    let r = put(&app, &admin, &format!("/networks/{shared}"), json!({"network": {"shared": false}})).await;
    assert_eq!(kind(&r), "InvalidSharedSetting");
    assert_eq!(delete(&app, &b, &format!("/networks/{b_net}")).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn readers_only_read() {
    let app = TestApp::new().await;
    let m = app.user_in_project("writer", "pr", "member").await;
    let r = app.user_in_project("watcher", "pr", "reader").await;
    let net = network(&app, &m, json!({"name": "n"})).await;
    let sub = subnet(&app, &m, &net, "10.0.0.0/24").await;
    let p = port(&app, &m, json!({"network_id": net})).await.body["port"]["id"].as_str().expect("id").to_string();
    assert_eq!(get(&app, &r, &format!("/networks/{net}")).await.status, StatusCode::OK);
    assert_eq!(ids(&get(&app, &r, "/ports").await, "ports"), vec![p.clone()]);
    let writes = [
        post(&app, &r, "/networks", json!({"network": {}})).await,
        post(&app, &r, "/subnets", json!({"subnet": {"network_id": net, "cidr": "10.1.0.0/24", "ip_version": 4}}))
            .await,
        port(&app, &r, json!({"network_id": net})).await,
        put(&app, &r, &format!("/networks/{net}"), json!({"network": {"name": "x"}})).await,
        put(&app, &r, &format!("/subnets/{sub}"), json!({"subnet": {"name": "x"}})).await,
        put(&app, &r, &format!("/ports/{p}"), json!({"port": {"name": "x"}})).await,
        delete(&app, &r, &format!("/ports/{p}")).await,
        delete(&app, &r, &format!("/subnets/{sub}")).await,
        delete(&app, &r, &format!("/networks/{net}")).await,
        put(&app, &r, &format!("/networks/{net}/tags/x"), Value::Null).await,
    ];
    for w in writes {
        assert_eq!(w.status, StatusCode::FORBIDDEN, "{}", w.body);
        assert_eq!(kind(&w), "PolicyNotAuthorized");
    }
}

#[tokio::test]
async fn tags_and_tag_filters() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let n1 = network(&app, &t, json!({"name": "t1"})).await;
    let n2 = network(&app, &t, json!({"name": "t2"})).await;
    let r = put(&app, &t, &format!("/networks/{n1}/tags"), json!({"tags": ["red", "blue"]})).await;
    assert_eq!(r.body["tags"], json!(["blue", "red"]));
    assert_eq!(put(&app, &t, &format!("/networks/{n2}/tags/red"), Value::Null).await.status, StatusCode::CREATED);
    assert_eq!(get(&app, &t, &format!("/networks/{n2}/tags/red")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&app, &t, &format!("/networks/{n2}/tags/blue")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(ids(&get(&app, &t, "/networks?tags=red,blue").await, "networks"), vec![n1.clone()]);
    assert_eq!(ids(&get(&app, &t, "/networks?tags-any=red").await, "networks").len(), 2);
    assert_eq!(ids(&get(&app, &t, "/networks?not-tags=blue").await, "networks"), vec![n2.clone()]);
    assert_eq!(ids(&get(&app, &t, "/networks?not-tags-any=red").await, "networks"), Vec::<String>::new());
    assert_eq!(get(&app, &t, &format!("/networks/{n1}")).await.body["network"]["revision_number"], 1);
    assert_eq!(delete(&app, &t, &format!("/networks/{n1}/tags/red")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(delete(&app, &t, &format!("/networks/{n1}/tags/red")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(delete(&app, &t, &format!("/networks/{n1}/tags")).await.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&app, &t, &format!("/networks/{n1}/tags")).await.body["tags"], json!([]));
    let sub = subnet(&app, &t, &n1, "10.0.0.0/24").await;
    assert_eq!(put(&app, &t, &format!("/subnets/{sub}/tags/s"), Value::Null).await.status, StatusCode::CREATED);
    assert_eq!(get(&app, &t, &format!("/subnets/{sub}")).await.body["subnet"]["tags"], json!(["s"]));
    let r = get(&app, &t, "/networks?changed_since=2000-01-01T00:00:00Z").await;
    assert_eq!(ids(&r, "networks").len(), 2);
    let r = get(&app, &t, "/networks?changed_since=2999-01-01T00:00:00").await;
    assert_eq!(ids(&r, "networks").len(), 0);
    assert_eq!(get(&app, &t, "/networks?changed_since=yesterday").await.status, StatusCode::BAD_REQUEST);
}

/// What compute will call: ports through the store, no HTTP.
#[tokio::test]
async fn store_port_api_for_compute() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let net = network(&app, &t, json!({"name": "c"})).await;
    subnet(&app, &t, &net, "10.0.0.0/24").await;
    let pid = get(&app, &t, "/quotas/tenant").await.body["tenant"]["tenant_id"].as_str().expect("pid").to_string();
    let store = &app.state.store;
    let mut np = NewPort::new(&pid, &net);
    np.device_id = "server-1".into();
    np.device_owner = "compute:nova".into();
    let created = store.create_port(np).await.expect("port");
    assert_eq!(created.fixed_ips.len(), 1);
    // What creation returns (from INSERT … RETURNING) is what a read gives.
    let read = store.get_port(&created.id).await.expect("get");
    assert_eq!(format!("{created:?}"), format!("{read:?}"));
    // A build's port comes with what the host needs from its network.
    let mut np = NewPort::new(&pid, &net);
    np.device_id = "server-2".into();
    let made = store.create_instance_port(np, "server-2", "[]").await.expect("instance port");
    let network = store.get_network(&net).await.expect("network");
    assert_eq!(made.mtu, network.mtu);
    assert_eq!(made.subnets.iter().map(|s| s.cidr.as_str()).collect::<Vec<_>>(), ["10.0.0.0/24"]);
    assert_eq!(format!("{:?}", made.port), format!("{:?}", store.get_port(&made.port.id).await.expect("get")));
    assert_eq!(store.delete_ports_by_device("server-2").await.expect("delete"), 1);
    let bound = store.bind_port(&created.id, "node-1").await.expect("bind");
    assert_eq!(bound.status, "ACTIVE");
    assert_eq!(store.ports_by_device("server-1").await.expect("list").len(), 1);
    let r = delete(&app, &t, &format!("/networks/{net}")).await;
    assert_eq!(kind(&r), "NetworkInUse");
    assert_eq!(store.delete_ports_by_device("server-1").await.expect("delete"), 1);
    assert_eq!(delete(&app, &t, &format!("/networks/{net}")).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_neutron_errors() {
    let app = TestApp::new().await;
    let body = json!({ "network": { "name": "x".repeat(3 << 20) } }).to_string();
    let r = app
        .call(
            Method::POST,
            "/network/v2.0/networks",
            Some(&app.admin_token),
            &[("content-type", "application/json")],
            Body::from(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert_eq!(r.body["NeutronError"]["type"], "HTTPRequestEntityTooLarge", "{}", r.body);
    assert_eq!(r.body["NeutronError"]["message"], "Request is too large.");
}

fn path_of(link: &Value) -> String {
    link["href"].as_str().expect("href").trim_start_matches("http://meridian.test/network/v2.0").to_string()
}

fn link(r: &Reply, plural: &str, rel: &str) -> Option<String> {
    r.body[format!("{plural}_links")].as_array()?.iter().find(|l| l["rel"] == rel).map(path_of)
}

/// Statements the store ran for one request: the least of three tries, so a token
/// revalidated when its 5 s cache entry lapses (a few statements) is not counted.
async fn statements_for(app: &TestApp, token: &str, path: &str) -> (u64, Reply) {
    let mut least = None;
    for _ in 0..3 {
        let before = app.state.store.statements();
        let r = get(app, token, path).await;
        let n = app.state.store.statements() - before;
        if least.as_ref().is_none_or(|(m, _)| n < *m) {
            least = Some((n, r));
        }
    }
    least.expect("three tries")
}

#[tokio::test]
async fn network_and_port_lists_read_a_page_in_a_fixed_number_of_statements() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    for k in 0..60 {
        network(&app, &t, json!({"name": format!("n{k:02}")})).await;
    }
    let net = network(&app, &t, json!({"name": "ports"})).await;
    subnet(&app, &t, &net, "10.20.0.0/24").await;
    let project = app.state.store.get_network(&net).await.expect("net").project_id;
    for _ in 0..60 {
        app.state.store.create_port(NewPort::new(&project, &net)).await.expect("port");
    }
    for plural in ["networks", "ports"] {
        get(&app, &t, &format!("/{plural}?limit=1")).await; // caches the token
        let (one, r1) = statements_for(&app, &t, &format!("/{plural}?limit=1")).await;
        let (many, r50) = statements_for(&app, &t, &format!("/{plural}?limit=50")).await;
        assert_eq!(ids(&r1, plural).len(), 1);
        assert_eq!(ids(&r50, plural).len(), 50);
        assert_eq!(one, many, "{plural}: {one} statements for 1, {many} for 50");
        let marker = ids(&r1, plural)[0].clone();
        let (one, _) =
            statements_for(&app, &t, &format!("/{plural}?limit=1&marker={marker}&sort_key=name&sort_dir=desc")).await;
        let (many, _) =
            statements_for(&app, &t, &format!("/{plural}?limit=50&marker={marker}&sort_key=name&sort_dir=desc")).await;
        assert_eq!(one, many, "{plural} with a marker");
    }
    let r = get(&app, &t, "/ports?limit=50").await;
    assert!(r.body["ports"].as_array().expect("ports").iter().all(|p| ips(p).len() == 1), "addresses shown");
}

#[tokio::test]
async fn neutron_lists_have_a_default_page_limit_reached_through_next_links() {
    let mut app = TestApp::new().await;
    let cfg = crate::config::Config { pagination_max_limit: 5, ..(*app.state.cfg).clone() };
    app.state.cfg = Arc::new(cfg);
    let t = app.admin_token.clone();
    let mut made = Vec::new();
    for k in 0..12 {
        made.push(network(&app, &t, json!({"name": format!("n{:02}", 11 - k), "shared": k % 2 == 0})).await);
    }
    // No limit: pages of the server's maximum in the natural order (oldest first), a full one
    // with Neutron's links, the rest through `next`; the short last page has none.
    let mut seen = Vec::new();
    let mut path = "/networks".to_string();
    let mut pages = 0;
    loop {
        let r = get(&app, &t, &path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let page = ids(&r, "networks");
        assert!(page.len() <= 5, "{}", page.len());
        seen.extend(page);
        pages += 1;
        match link(&r, "networks", "next") {
            Some(next) => {
                assert!(link(&r, "networks", "previous").is_some());
                path = next;
            }
            None => {
                assert!(r.body.get("networks_links").is_none(), "{}", r.body);
                break;
            }
        }
    }
    assert_eq!((seen, pages), (made.clone(), 3));
    // A larger limit is capped, with links (and, as any `limit`, pages by id).
    let r = get(&app, &t, "/networks?limit=100").await;
    let mut by_id = made.clone();
    by_id.sort();
    assert_eq!(ids(&r, "networks"), by_id[..5].to_vec());
    assert!(link(&r, "networks", "next").is_some());
    // Sorted pages by name, descending, filtered in SQL.
    let r = get(&app, &t, "/networks?sort_key=name&sort_dir=asc&limit=3&shared=true").await;
    let names = |r: &Reply| -> Vec<String> {
        r.body["networks"]
            .as_array()
            .expect("list")
            .iter()
            .map(|n| n["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(names(&r), ["n01", "n03", "n05"]);
    let r = get(&app, &t, &link(&r, "networks", "next").expect("next")).await;
    assert_eq!(names(&r), ["n07", "n09", "n11"]);
    let r = get(&app, &t, &link(&r, "networks", "previous").expect("previous")).await;
    assert_eq!(names(&r), ["n01", "n03", "n05"]);
    // page_reverse: the page before the marker, still in order.
    let r = get(&app, &t, &format!("/networks?limit=2&marker={}&page_reverse=True", by_id[4])).await;
    assert_eq!(ids(&r, "networks"), by_id[2..4].to_vec());
    let r = get(&app, &t, "/networks?limit=2&marker=nope").await;
    assert_eq!((r.status, kind(&r)), (StatusCode::NOT_FOUND, "NetworkNotFound"));
    // A tag filter is applied in memory, with the same default page.
    let r = get(&app, &t, "/networks?not-tags=x").await;
    assert_eq!(ids(&r, "networks"), made[..5].to_vec());
    assert!(link(&r, "networks", "next").is_some());

    // Ports: the same, with their addresses; a fixed_ips filter still finds its port.
    let net = made[0].clone();
    subnet(&app, &t, &net, "10.30.0.0/24").await;
    let mut ports = Vec::new();
    for _ in 0..7 {
        let r = port(&app, &t, json!({"network_id": net})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        ports.push(r.body["port"].clone());
    }
    let r = get(&app, &t, "/ports").await;
    assert_eq!(ids(&r, "ports").len(), 5);
    let r = get(&app, &t, &link(&r, "ports", "next").expect("next")).await;
    assert_eq!(ids(&r, "ports").len(), 2);
    assert_eq!(ips(&r.body["ports"][1]), ips(&ports[6]));
    let ip = ips(&ports[6])[0].clone();
    let r = get(&app, &t, &format!("/ports?fixed_ips=ip_address%3D{ip}")).await;
    assert_eq!(ids(&r, "ports"), vec![ports[6]["id"].as_str().expect("id").to_string()]);
    let r = get(&app, &t, "/ports?sort_key=mac_address&sort_dir=asc&limit=7").await;
    let macs: Vec<&str> =
        r.body["ports"].as_array().expect("ports").iter().filter_map(|p| p["mac_address"].as_str()).collect();
    let mut sorted = macs.clone();
    sorted.sort_unstable();
    assert_eq!((macs.len(), &macs), (5, &sorted), "capped at the maximum, sorted in SQL");
}
