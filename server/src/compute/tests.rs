//! Nova handler tests: microversions, flavors, key pairs, quotas and limits.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

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

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn microversions_are_negotiated_and_echoed() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let r = at(&app, Method::GET, "/flavors", &t, "compute 2.55", Value::Null).await;
    assert_eq!(r.headers["openstack-api-version"], "compute 2.55");
    assert_eq!(r.headers["x-openstack-nova-api-version"], "2.55");
    let r = app
        .call(
            Method::GET,
            "/compute/v2.1/flavors",
            Some(&t),
            &[("x-openstack-nova-api-version", "2.10")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.headers["openstack-api-version"], "compute 2.10");
    let r = app.call(Method::GET, "/compute/v2.1/flavors", Some(&t), &[], Body::empty()).await;
    assert_eq!(r.headers["openstack-api-version"], "compute 2.1");
    let r = at(&app, Method::GET, "/flavors", &t, "compute latest", Value::Null).await;
    assert_eq!(r.headers["openstack-api-version"], "compute 2.79");
    let r = at(&app, Method::GET, "/flavors", &t, "compute 2.200", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(r.body["computeFault"]["code"], 406);
    let r = at(&app, Method::GET, "/flavors", &t, "compute two", Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["badRequest"]["message"].as_str().expect("msg").contains("invalid format"));
    let r = app.call(Method::GET, "/compute", None, &[], Body::empty()).await;
    // Nova lists v2.0 first, then v2.1 with its microversion range.
    assert_eq!(r.body["versions"][0]["id"], "v2.0");
    assert_eq!(r.body["versions"][0]["status"], "SUPPORTED");
    assert_eq!(r.body["versions"][1]["id"], "v2.1");
    assert_eq!(r.body["versions"][1]["version"], "2.79");
    assert_eq!(r.body["versions"][1]["min_version"], "2.1");
    // The v2.0 endpoint is the same API at the base version, whatever the headers ask.
    let r = app.call(Method::GET, "/compute/v2/", Some(&t), &[], Body::empty()).await;
    assert_eq!(r.body["version"]["id"], "v2.0");
    let r = app
        .call(Method::GET, "/compute/v2/flavors", Some(&t), &[("openstack-api-version", "compute 2.55")], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["openstack-api-version"], "compute 2.1");
}

#[tokio::test]
async fn extensions_are_novas_list_at_every_microversion() {
    let app = TestApp::new().await;
    let member = app.user_in_project("m", "pe", "member").await;
    for version in ["compute 2.1", "compute 2.79"] {
        let r = at(&app, Method::GET, "/extensions", &member, version, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK);
        let list = r.body["extensions"].as_array().expect("list");
        assert!(list.iter().any(|e| e["name"] == "Hosts"));
        assert_eq!(keys(&list[0]), ["alias", "description", "links", "name", "namespace", "updated"]);
    }
    let r = at(&app, Method::GET, "/extensions/os-consoles", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["extension"]["alias"], "os-consoles");
    let r = at(&app, Method::GET, "/extensions/os-wings", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn hypervisor_statistics_uptime_search_and_cpu_info() {
    use crate::store::hosts::HostInventory;
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let inv = |uptime: &str| HostInventory {
        availability_zone: "nova".into(),
        hypervisor_type: "QEMU".into(),
        cpu_arch: "x86_64".into(),
        libvirt_uri: "test:///default".into(),
        host_ip: "127.0.0.1".into(),
        vcpus: 4,
        memory_mb: 2048,
        disk_gb: 10,
        uptime: uptime.into(),
        ..Default::default()
    };
    app.state
        .store
        .register_host("compute-a", &inv(" 10:00:00 up 1 day,  2:03,  load average: 0.01"))
        .await
        .expect("a");
    app.state.store.register_host("compute-b", &inv("")).await.expect("b");

    // `statistics` is not a hypervisor id.
    let r = at(&app, Method::GET, "/os-hypervisors/statistics", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let s = &r.body["hypervisor_statistics"];
    assert_eq!((s["count"].as_i64(), s["vcpus"].as_i64(), s["memory_mb"].as_i64()), (Some(2), Some(8), Some(4096)));
    let member = app.user_in_project("m", "ph", "member").await;
    let r = at(&app, Method::GET, "/os-hypervisors/statistics", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Uptime as the agent reported it; a host without one is Nova's 501.
    let r = at(&app, Method::GET, "/os-hypervisors/1/uptime", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["hypervisor"]["uptime"], " 10:00:00 up 1 day,  2:03,  load average: 0.01", "{}", r.body);
    let r = at(&app, Method::GET, "/os-hypervisors/2/uptime", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_IMPLEMENTED);
    let r = at(&app, Method::GET, "/os-hypervisors/1/uptime", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // cpu_info: a JSON string before 2.28, an object from 2.28.
    let r = at(&app, Method::GET, "/os-hypervisors/1", &t, "compute 2.27", Value::Null).await;
    assert!(r.body["hypervisor"]["cpu_info"].is_string());
    let r = at(&app, Method::GET, "/os-hypervisors/1", &t, "compute 2.28", Value::Null).await;
    assert_eq!(r.body["hypervisor"]["cpu_info"]["arch"], "x86_64");

    // search / servers by name pattern, before 2.53 only.
    let r = at(&app, Method::GET, "/os-hypervisors/compute/search", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["hypervisors"].as_array().map(Vec::len), Some(2));
    let r = at(&app, Method::GET, "/os-hypervisors/-a/servers", &t, "compute 2.52", Value::Null).await;
    assert_eq!(r.body["hypervisors"][0]["hypervisor_hostname"], "compute-a");
    assert!(r.body["hypervisors"][0].get("servers").is_none(), "no servers, no key");
    let r = at(&app, Method::GET, "/os-hypervisors/nothing/search", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = at(&app, Method::GET, "/os-hypervisors/compute/search", &t, "compute 2.53", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn image_proxy_below_2_36() {
    let app = TestApp::new().await;
    let member = app.user_in_project("m", "pi", "member").await;
    let img = app
        .json(
            Method::POST,
            "/image/v2/images",
            &member,
            json!({"name": "mine", "disk_format": "raw", "container_format": "bare", "min_ram": 64, "os_distro": "busybox"}),
        )
        .await;
    let id = img.body["id"].as_str().expect("id").to_string();

    let r = at(&app, Method::GET, "/images", &member, "compute 2.35", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(keys(&r.body["images"][0]), ["id", "links", "name"]);
    let r = at(&app, Method::GET, "/images/detail?name=mine", &member, "compute 2.1", Value::Null).await;
    let i = &r.body["images"][0];
    assert_eq!(
        (i["id"].as_str(), i["status"].as_str(), i["minRam"].as_i64()),
        (Some(id.as_str()), Some("SAVING"), Some(64))
    );
    assert_eq!(i["metadata"]["os_distro"], "busybox");
    let r = at(&app, Method::GET, "/images/detail?name=other", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["images"], json!([]));
    assert_eq!(
        at(&app, Method::GET, &format!("/images/{id}"), &member, "compute 2.36", Value::Null).await.status,
        StatusCode::NOT_FOUND,
        "the proxy is gone from 2.36"
    );

    // Metadata is Glance's properties, stored.
    let meta = format!("/images/{id}/metadata");
    let r = at(&app, Method::POST, &meta, &member, "compute 2.1", json!({"metadata": {"k1": "v1"}})).await;
    assert_eq!(r.body["metadata"], json!({"os_distro": "busybox", "k1": "v1"}));
    let r = at(&app, Method::PUT, &format!("{meta}/k2"), &member, "compute 2.1", json!({"meta": {"k2": "v2"}})).await;
    assert_eq!(r.body["meta"], json!({"k2": "v2"}));
    let r = at(&app, Method::PUT, &format!("{meta}/k2"), &member, "compute 2.1", json!({"meta": {"k3": "v"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let glance = app.json(Method::GET, &format!("/image/v2/images/{id}"), &member, Value::Null).await;
    assert_eq!((glance.body["k1"].as_str(), glance.body["k2"].as_str()), (Some("v1"), Some("v2")));
    let d = at(&app, Method::DELETE, &format!("{meta}/k1"), &member, "compute 2.1", Value::Null).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    let r = at(&app, Method::GET, &format!("{meta}/k1"), &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = at(&app, Method::PUT, &meta, &member, "compute 2.1", json!({"metadata": {"only": "this"}})).await;
    assert_eq!(r.body["metadata"], json!({"only": "this"}));

    // Another project neither sees nor deletes it; the owner does.
    let other = app.user_in_project("o", "po", "member").await;
    let r = at(&app, Method::DELETE, &format!("/images/{id}"), &other, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = at(&app, Method::DELETE, &format!("/images/{id}"), &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = app.json(Method::GET, &format!("/image/v2/images/{id}"), &member, Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn flavor_shape_follows_the_microversion() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let base = [
        "OS-FLV-DISABLED:disabled",
        "OS-FLV-EXT-DATA:ephemeral",
        "disk",
        "id",
        "links",
        "name",
        "os-flavor-access:is_public",
        "ram",
        "rxtx_factor",
        "swap",
        "vcpus",
    ];
    let mut want: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    want.sort();
    let r = at(&app, Method::GET, "/flavors/1", &t, "compute 2.1", Value::Null).await;
    assert_eq!(keys(&r.body["flavor"]), want);
    assert_eq!(r.body["flavor"]["swap"], "");
    want.push("description".into());
    want.sort();
    let r = at(&app, Method::GET, "/flavors/1", &t, "compute 2.55", Value::Null).await;
    assert_eq!(keys(&r.body["flavor"]), want);
    want.push("extra_specs".into());
    want.sort();
    let r = at(&app, Method::GET, "/flavors/1", &t, "compute 2.75", Value::Null).await;
    assert_eq!(keys(&r.body["flavor"]), want);
    assert_eq!(r.body["flavor"]["swap"], 0);
    // The summary list: id, links, name (+ description from 2.55).
    let r = at(&app, Method::GET, "/flavors", &t, "compute 2.1", Value::Null).await;
    assert_eq!(keys(&r.body["flavors"][0]), ["id", "links", "name"]);
    assert_eq!(r.body["flavors"][0]["links"][0]["href"], "http://meridian.test/compute/v2.1/flavors/1");
}

#[tokio::test]
async fn flavor_list_filters_and_pages() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let r = at(&app, Method::GET, "/flavors/detail?minRam=4096&minDisk=40", &t, "compute 2.1", Value::Null).await;
    let names: Vec<&str> =
        r.body["flavors"].as_array().expect("list").iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["m1.medium", "m1.large", "m1.xlarge"]);
    let r = at(&app, Method::GET, "/flavors?limit=2", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["flavors"].as_array().expect("list").len(), 2);
    let next = r.body["flavors_links"][0]["href"].as_str().expect("next");
    assert!(next.ends_with("/compute/v2.1/flavors?limit=2&marker=2"), "{next}");
    let r = at(&app, Method::GET, "/flavors?limit=2&marker=2", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["flavors"][0]["id"], "3");
    for bad in [
        "/flavors?minRam=lots",
        "/flavors?limit=-1",
        "/flavors?marker=nope",
        "/flavors?sort_key=color",
        "/flavors?sort_dir=up",
    ] {
        let r = at(&app, Method::GET, bad, &t, "compute 2.1", Value::Null).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
    // From 2.75 unknown query parameters are refused; before, ignored.
    assert_eq!(
        at(&app, Method::GET, "/flavors?color=red", &t, "compute 2.75", Value::Null).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        at(&app, Method::GET, "/flavors?color=red", &t, "compute 2.74", Value::Null).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn flavor_management_and_access() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let member = app.user_in_project("m", "proj-a", "member").await;
    let other = app.user_in_project("o", "proj-b", "member").await;
    let body =
        json!({"flavor": {"name": "custom", "ram": 256, "vcpus": 1, "disk": 2, "os-flavor-access:is_public": false}});
    assert_eq!(
        at(&app, Method::POST, "/flavors", &member, "compute 2.1", body.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    let r = at(&app, Method::POST, "/flavors", &t, "compute 2.1", body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = r.body["flavor"]["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 36, "auto id is a uuid");
    assert_eq!(at(&app, Method::POST, "/flavors", &t, "compute 2.1", body).await.status, StatusCode::CONFLICT);
    let bad = json!({"flavor": {"name": "x", "ram": 0, "vcpus": 1, "disk": 1}});
    let r = at(&app, Method::POST, "/flavors", &t, "compute 2.1", bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["badRequest"]["message"].as_str().expect("msg").contains("ram"));

    // Private: invisible to projects without access, visible once granted.
    let path = format!("/flavors/{id}");
    assert_eq!(at(&app, Method::GET, &path, &member, "compute 2.1", Value::Null).await.status, StatusCode::NOT_FOUND);
    let projects = app.json(Method::GET, "/identity/v3/projects?name=proj-a", &t, Value::Null).await;
    let pa = projects.body["projects"][0]["id"].as_str().expect("pid").to_string();
    let r = at(
        &app,
        Method::POST,
        &format!("{path}/action"),
        &t,
        "compute 2.1",
        json!({"addTenantAccess": {"tenant": pa}}),
    )
    .await;
    assert_eq!(r.body["flavor_access"][0]["tenant_id"], pa.as_str());
    assert_eq!(at(&app, Method::GET, &path, &member, "compute 2.1", Value::Null).await.status, StatusCode::OK);
    assert_eq!(at(&app, Method::GET, &path, &other, "compute 2.1", Value::Null).await.status, StatusCode::NOT_FOUND);
    let listed = at(&app, Method::GET, "/flavors", &other, "compute 2.1", Value::Null).await;
    assert!(!listed.body["flavors"].as_array().expect("list").iter().any(|f| f["id"] == id.as_str()));

    // Extra specs.
    let r = at(
        &app,
        Method::POST,
        &format!("{path}/os-extra_specs"),
        &t,
        "compute 2.1",
        json!({"extra_specs": {"hw:cpu_policy": "shared"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = at(&app, Method::GET, &format!("{path}/os-extra_specs/hw:cpu_policy"), &member, "compute 2.1", Value::Null)
        .await;
    assert_eq!(r.body, json!({"hw:cpu_policy": "shared"}));
    let r = at(&app, Method::GET, &path, &t, "compute 2.61", Value::Null).await;
    assert_eq!(r.body["flavor"]["extra_specs"]["hw:cpu_policy"], "shared");
    assert_eq!(
        at(&app, Method::DELETE, &format!("{path}/os-extra_specs/hw:cpu_policy"), &t, "compute 2.1", Value::Null)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        at(&app, Method::DELETE, &format!("{path}/os-extra_specs/hw:cpu_policy"), &t, "compute 2.1", Value::Null)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Description update from 2.55 only.
    assert_eq!(
        at(&app, Method::PUT, &path, &t, "compute 2.54", json!({"flavor": {"description": "d"}})).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let r = at(&app, Method::PUT, &path, &t, "compute 2.55", json!({"flavor": {"description": "d"}})).await;
    assert_eq!(r.body["flavor"]["description"], "d");

    assert_eq!(at(&app, Method::DELETE, &path, &t, "compute 2.1", Value::Null).await.status, StatusCode::ACCEPTED);
    let r = at(&app, Method::GET, &path, &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["code"], 404);
}

#[tokio::test]
async fn keypairs_per_user() {
    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "pa", "member").await;
    let bob = app.user_in_project("bob", "pb", "member").await;
    let reader = app.user_in_project("rita", "pa", "reader").await;

    let r = at(&app, Method::POST, "/os-keypairs", &alice, "compute 2.1", json!({"keypair": {"name": "gen"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["keypair"]["private_key"].as_str().expect("private").contains("PRIVATE KEY"));
    assert!(r.body["keypair"].get("type").is_none(), "no type before 2.2");
    let public = r.body["keypair"]["public_key"].as_str().expect("public").to_string();

    let r = at(
        &app,
        Method::POST,
        "/os-keypairs",
        &alice,
        "compute 2.10",
        json!({"keypair": {"name": "imported", "public_key": public}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["keypair"]["type"], "ssh");
    assert!(r.body["keypair"].get("private_key").is_none());

    let dup = at(
        &app,
        Method::POST,
        "/os-keypairs",
        &alice,
        "compute 2.10",
        json!({"keypair": {"name": "gen", "public_key": public}}),
    )
    .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let garbage = at(
        &app,
        Method::POST,
        "/os-keypairs",
        &alice,
        "compute 2.10",
        json!({"keypair": {"name": "g", "public_key": "ssh-rsa AAAA"}}),
    )
    .await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    let badname =
        at(&app, Method::POST, "/os-keypairs", &alice, "compute 2.10", json!({"keypair": {"name": "a/b"}})).await;
    assert_eq!(badname.status, StatusCode::BAD_REQUEST);
    let denied =
        at(&app, Method::POST, "/os-keypairs", &reader, "compute 2.10", json!({"keypair": {"name": "r"}})).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    let list = at(&app, Method::GET, "/os-keypairs", &alice, "compute 2.2", Value::Null).await;
    assert_eq!(list.body["keypairs"].as_array().expect("list").len(), 2);
    assert_eq!(keys(&list.body["keypairs"][0]["keypair"]), ["fingerprint", "name", "public_key", "type"]);
    let show = at(&app, Method::GET, "/os-keypairs/gen", &alice, "compute 2.2", Value::Null).await;
    assert!(show.body["keypair"]["id"].is_i64());
    assert_eq!(show.body["keypair"]["deleted"], false);

    // Bob sees none of Alice's.
    let list = at(&app, Method::GET, "/os-keypairs", &bob, "compute 2.2", Value::Null).await;
    assert_eq!(list.body["keypairs"], json!([]));
    assert_eq!(
        at(&app, Method::GET, "/os-keypairs/gen", &bob, "compute 2.2", Value::Null).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        at(&app, Method::DELETE, "/os-keypairs/gen", &bob, "compute 2.2", Value::Null).await.status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        at(&app, Method::DELETE, "/os-keypairs/gen", &alice, "compute 2.1", Value::Null).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        at(&app, Method::DELETE, "/os-keypairs/imported", &alice, "compute 2.2", Value::Null).await.status,
        StatusCode::NO_CONTENT
    );
}

/// Nova's x509 key pairs (2.2+): generated as an RSA key plus self-signed WinRM client certificate,
/// or imported as a PEM certificate; fingerprinted as the SHA-1 of the certificate's DER.
#[tokio::test]
async fn x509_keypairs_are_generated_imported_and_validated() {
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    use sha1::{Digest, Sha1};
    use x509_cert::der::{DecodePem, Encode};

    let app = TestApp::new().await;
    let alice = app.user_in_project("alice", "pa", "member").await;
    let sha1_hex = |der: &[u8]| Sha1::digest(der).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");

    let r = at(
        &app,
        Method::POST,
        "/os-keypairs",
        &alice,
        "compute 2.2",
        json!({"keypair": {"name": "win", "type": "x509"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let kp = &r.body["keypair"];
    assert_eq!(kp["type"], "x509");
    let user_id = kp["user_id"].as_str().expect("user_id");

    // The public half is the certificate: CN and UPN name the user, usable for client auth.
    let pem = kp["public_key"].as_str().expect("certificate");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let cert = x509_cert::Certificate::from_pem(pem).expect("certificate parses");
    let der = cert.to_der().expect("der");
    assert_eq!(kp["fingerprint"], sha1_hex(&der));
    let tbs = &cert.tbs_certificate;
    assert_eq!(tbs.subject.to_string(), format!("CN={user_id}"));
    assert_eq!(tbs.issuer, tbs.subject, "self-signed");
    let ext_oids: Vec<String> = tbs.extensions.iter().flatten().map(|e| e.extn_id.to_string()).collect();
    assert!(ext_oids.contains(&"2.5.29.37".to_string()), "extendedKeyUsage: {ext_oids:?}");
    assert!(ext_oids.contains(&"2.5.29.17".to_string()), "subjectAltName: {ext_oids:?}");
    let san = tbs.extensions.iter().flatten().find(|e| e.extn_id.to_string() == "2.5.29.17").expect("san");
    let upn = format!("{user_id}@localhost");
    assert!(san.extn_value.as_bytes().windows(upn.len()).any(|w| w == upn.as_bytes()), "UPN in SAN");

    // The private half is Nova's base64 PKCS#12 bundle (empty password) of the RSA key and the
    // certificate; the key is the certificate's.
    let pfx = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        kp["private_key"].as_str().expect("private_key"),
    )
    .expect("base64");
    let store = p12_keystore::KeyStore::from_pkcs12(&pfx, "").expect("pkcs12 opens with an empty password");
    let (_, chain) = store.private_key_chain().expect("key entry");
    assert_eq!(chain.chain().len(), 1);
    assert_eq!(chain.chain()[0].as_der(), der.as_slice());
    let key = rsa::RsaPrivateKey::from_pkcs8_der(chain.key()).expect("RSA PKCS#8 key");
    assert_eq!(rsa::traits::PublicKeyParts::size(&key), 256, "2048-bit");
    let spki = key.to_public_key().to_public_key_der().expect("spki");
    assert_eq!(spki.as_bytes(), tbs.subject_public_key_info.to_der().expect("cert spki").as_slice());

    // Importing a certificate fingerprints it the same way and returns no private key.
    let r = at(
        &app,
        Method::POST,
        "/os-keypairs",
        &alice,
        "compute 2.2",
        json!({"keypair": {"name": "imported", "type": "x509", "public_key": pem}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["keypair"]["fingerprint"], sha1_hex(&der));
    assert!(r.body["keypair"].get("private_key").is_none());

    // Garbage, and an SSH key passed off as a certificate, get Nova's message.
    let ssh_public = {
        let r =
            at(&app, Method::POST, "/os-keypairs", &alice, "compute 2.2", json!({"keypair": {"name": "ssh"}})).await;
        r.body["keypair"]["public_key"].as_str().expect("ssh public key").to_string()
    };
    let not_a_cert = pem.replace("MII", "AAA");
    for bad in ["garbage", ssh_public.as_str(), not_a_cert.as_str()] {
        let r = at(
            &app,
            Method::POST,
            "/os-keypairs",
            &alice,
            "compute 2.2",
            json!({"keypair": {"name": "bad", "type": "x509", "public_key": bad}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        let msg = r.body["badRequest"]["message"].as_str().expect("message");
        assert!(
            msg.starts_with("Keypair data is invalid: failed to generate X509 fingerprint. Error message: "),
            "{msg}"
        );
    }

    // The type shows in list and show from 2.2, and not before.
    let list = at(&app, Method::GET, "/os-keypairs", &alice, "compute 2.2", Value::Null).await;
    let types: Vec<(String, String)> = list.body["keypairs"]
        .as_array()
        .expect("list")
        .iter()
        .map(|k| {
            let k = &k["keypair"];
            (k["name"].as_str().expect("name").to_string(), k["type"].as_str().expect("type").to_string())
        })
        .collect();
    assert!(types.contains(&("win".to_string(), "x509".to_string())), "{types:?}");
    assert!(types.contains(&("imported".to_string(), "x509".to_string())), "{types:?}");
    let show = at(&app, Method::GET, "/os-keypairs/win", &alice, "compute 2.2", Value::Null).await;
    assert_eq!(show.body["keypair"]["type"], "x509");
    assert_eq!(show.body["keypair"]["public_key"], pem);
    let show = at(&app, Method::GET, "/os-keypairs/win", &alice, "compute 2.1", Value::Null).await;
    assert!(show.body["keypair"].get("type").is_none());
}

#[tokio::test]
async fn quotas_and_limits() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let member = app.user_in_project("m", "pq", "member").await;
    let projects = app.json(Method::GET, "/identity/v3/projects?name=pq", &t, Value::Null).await;
    let pid = projects.body["projects"][0]["id"].as_str().expect("pid").to_string();
    let path = format!("/os-quota-sets/{pid}");

    let r = at(&app, Method::GET, &path, &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["instances"], 10);
    assert!(r.body["quota_set"].get("floating_ips").is_some());
    let r = at(&app, Method::GET, &path, &member, "compute 2.36", Value::Null).await;
    assert!(r.body["quota_set"].get("floating_ips").is_none());
    assert!(r.body["quota_set"].get("injected_files").is_some());
    let r = at(&app, Method::GET, &path, &member, "compute 2.57", Value::Null).await;
    assert_eq!(
        keys(&r.body["quota_set"]),
        ["cores", "id", "instances", "key_pairs", "metadata_items", "ram", "server_group_members", "server_groups"]
    );

    assert_eq!(
        at(&app, Method::PUT, &path, &member, "compute 2.1", json!({"quota_set": {"instances": 5}})).await.status,
        StatusCode::FORBIDDEN
    );
    let r = at(&app, Method::PUT, &path, &t, "compute 2.1", json!({"quota_set": {"instances": 5, "cores": "8"}})).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["quota_set"]["instances"], 5);
    assert_eq!(
        at(&app, Method::PUT, &path, &t, "compute 2.1", json!({"quota_set": {"wings": 2}})).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        at(&app, Method::PUT, &path, &t, "compute 2.1", json!({"quota_set": {"ram": -5}})).await.status,
        StatusCode::BAD_REQUEST
    );

    let r = at(&app, Method::GET, "/limits", &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["limits"]["absolute"]["maxTotalInstances"], 5);
    assert_eq!(r.body["limits"]["absolute"]["maxTotalCores"], 8);
    assert!(r.body["limits"]["absolute"].get("maxPersonality").is_some());
    let r = at(&app, Method::GET, "/limits", &member, "compute 2.57", Value::Null).await;
    assert!(r.body["limits"]["absolute"].get("maxPersonality").is_none());
    assert!(r.body["limits"]["absolute"].get("maxImageMeta").is_none());

    let d = at(&app, Method::GET, &format!("{path}/detail"), &member, "compute 2.1", Value::Null).await;
    assert_eq!(d.body["quota_set"]["instances"], json!({"limit": 5, "in_use": 0, "reserved": 0}));
    // Another project's quotas are not a member's business.
    let admin_projects = app.json(Method::GET, "/identity/v3/projects?name=admin", &t, Value::Null).await;
    let admin_pid = admin_projects.body["projects"][0]["id"].as_str().expect("pid").to_string();
    assert_eq!(
        at(&app, Method::GET, &format!("/os-quota-sets/{admin_pid}"), &member, "compute 2.1", Value::Null).await.status,
        StatusCode::FORBIDDEN
    );

    assert_eq!(at(&app, Method::DELETE, &path, &t, "compute 2.1", Value::Null).await.status, StatusCode::ACCEPTED);
    let r = at(&app, Method::GET, &path, &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["instances"], 10);
}

#[tokio::test]
async fn per_user_quotas() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let member = app.user_in_project("mu", "pu", "member").await;
    let pid = app.json(Method::GET, "/identity/v3/projects?name=pu", &t, Value::Null).await.body["projects"][0]["id"]
        .as_str()
        .expect("pid")
        .to_string();
    let uid = app.json(Method::GET, "/identity/v3/users?name=mu", &t, Value::Null).await.body["users"][0]["id"]
        .as_str()
        .expect("uid")
        .to_string();
    let path = format!("/os-quota-sets/{pid}");
    let user_path = format!("{path}?user_id={uid}");
    at(&app, Method::PUT, &path, &t, "compute 2.1", json!({"quota_set": {"ram": 5120}})).await;
    let r = at(&app, Method::PUT, &user_path, &t, "compute 2.1", json!({"quota_set": {"ram": 2048}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["quota_set"]["ram"], 2048);
    let r = at(&app, Method::GET, &user_path, &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["ram"], 2048);
    let r = at(&app, Method::GET, &format!("{path}/detail?user_id={uid}"), &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["ram"], json!({"limit": 2048, "in_use": 0, "reserved": 0}));
    // The project's own limit is unchanged, and bounds the user's.
    let r = at(&app, Method::GET, &path, &member, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["ram"], 5120);
    let r = at(&app, Method::PUT, &user_path, &t, "compute 2.1", json!({"quota_set": {"ram": 9999}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // The user's limit applies to their boots.
    let [ram] = super::quotas::user_limits_for(&app.state, &pid, &uid, &["ram"]).await.expect("limits");
    assert_eq!(ram, 2048);
    assert_eq!(at(&app, Method::DELETE, &user_path, &t, "compute 2.1", Value::Null).await.status, StatusCode::ACCEPTED);
    let r = at(&app, Method::GET, &user_path, &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.body["quota_set"]["ram"], 5120);
}

#[tokio::test]
async fn unknown_routes_and_bad_json_use_nova_faults() {
    let app = TestApp::new().await;
    let t = app.admin_token.clone();
    let r = at(&app, Method::GET, "/nothing-here", &t, "compute 2.1", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["itemNotFound"]["code"], 404);
    let r = app
        .call(
            Method::POST,
            "/compute/v2.1/flavors",
            Some(&t),
            &[("content-type", "application/json")],
            Body::from("{oops"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["badRequest"]["code"], 400);
    let r = app.call(Method::GET, "/compute/v2.1/flavors", None, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn agent_event_batches_count_refused_events_as_taken_and_need_a_host_credential() {
    let app = TestApp::new().await;
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let inventory = json!({"vcpus": 1, "memory_mb": 1024, "disk_gb": 1, "reserved_vcpus": 0,
        "reserved_memory_mb": 0, "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1,
        "cpu_arch": "x86_64", "libvirt_uri": "test:///default", "host_ip": "127.0.0.1",
        "supports_networks": false, "availability_zone": "nova"});
    let reg = json!({"host": "c1", "agent_version": "t", "inventory": inventory}).to_string();
    let join_auth = format!("Bearer {join}");
    let h = [("content-type", "application/json"), ("authorization", join_auth.as_str())];
    let r = app.call(Method::POST, "/agent/v1/register", None, &h, Body::from(reg)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let bearer = format!("Bearer {}", r.body["credential"].as_str().expect("credential"));
    let body = json!({"events": [
        {"work_id": "no-such-work", "event": {"type": "progress", "task_state": "spawning"}},
        {"work_id": "nor-this", "event": {"type": "failed", "message": "x", "details": "", "retryable": false}},
    ]})
    .to_string();
    let send = |auth: Option<String>, body: String| {
        let app = &app;
        async move {
            let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
            if let Some(a) = auth {
                headers.push(("authorization".into(), a));
            }
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            app.call(Method::POST, "/agent/v1/events", None, &h, Body::from(body)).await
        }
    };
    // Unknown work is refused for good: taken, so the agent does not send it again.
    let r = send(Some(bearer.clone()), body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body, json!({"taken": 2}));
    assert_eq!(send(None, body.clone()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Some("Bearer wrong".into()), body.clone()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Some(join_auth.clone()), body).await.status, StatusCode::UNAUTHORIZED);
    let bad = send(Some(bearer), "{\"events\": [{\"work_id\": 1}]}".into()).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_over_limit_faults() {
    let app = TestApp::new().await;
    let body = json!({ "flavor": { "name": "x".repeat(3 << 20) } }).to_string();
    let len = body.len().to_string();
    // Streamed without a length, then announced in Content-Length.
    for headers in [
        vec![("content-type", "application/json")],
        vec![("content-type", "application/json"), ("content-length", len.as_str())],
    ] {
        let r = app
            .call(Method::POST, "/compute/v2.1/flavors", Some(&app.admin_token), &headers, Body::from(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
        assert_eq!(r.body["overLimit"]["code"], 413, "{}", r.body);
        assert_eq!(r.body["overLimit"]["message"], "Request is too large.");
    }
}
