//! The metadata route: a host's proxy asks for a guest by (network, source address); only the
//! one live instance on that host with that address on that network answers, on both store
//! backends.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::testing::{Reply, TestApp};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7m0Hfm9C5rQpQWmJmFzWwV1n8kGf7w0qW7dE1yq0mB meta@test";

/// A fresh PostgreSQL database on the machine's server (`MERIDIAN_TEST_PG_URL`, default
/// `postgres://postgres@127.0.0.1:5432`); `None` with `MERIDIAN_TEST_PG=skip` (refused under CI).
async fn postgres_db() -> Option<(String, String)> {
    use sqlx::Executor;
    if std::env::var("MERIDIAN_TEST_PG").is_ok_and(|v| v == "skip") {
        assert!(std::env::var_os("CI").is_none_or(|v| v.is_empty()), "MERIDIAN_TEST_PG=skip is refused under CI");
        eprintln!("\n!!!!!!!! SKIPPED PostgreSQL: MERIDIAN_TEST_PG=skip !!!!!!!!\n");
        return None;
    }
    let base = std::env::var("MERIDIAN_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db = format!("meridian_md_{}_{}", std::process::id(), uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/postgres"))
        .await
        .expect("PostgreSQL unreachable (MERIDIAN_TEST_PG=skip runs SQLite only)");
    conn.execute(format!("CREATE DATABASE {db}").as_str()).await.expect("create database");
    Some((base, db))
}

async fn agent(app: &TestApp, path: &str, bearer: &str, headers: &[(&str, &str)]) -> Reply {
    let auth = format!("Bearer {bearer}");
    let mut h = vec![("authorization", auth.as_str())];
    h.extend_from_slice(headers);
    app.call(Method::GET, &format!("/agent/v1{path}"), None, &h, Body::empty()).await
}

async fn register(app: &TestApp, host: &str) -> String {
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let body = json!({"host": host, "agent_version": "test", "inventory": {
        "vcpus": 8, "memory_mb": 16384, "disk_gb": 100, "reserved_vcpus": 0, "reserved_memory_mb": 0,
        "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1, "cpu_arch": "x86_64",
        "libvirt_uri": "test:///default", "host_ip": "127.0.0.1", "supports_networks": true,
        "availability_zone": "nova"}});
    let auth = format!("Bearer {join}");
    let r = app
        .call(
            Method::POST,
            "/agent/v1/register",
            None,
            &[("authorization", auth.as_str()), ("content-type", "application/json")],
            Body::from(body.to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["credential"].as_str().expect("credential").to_string()
}

async fn compute(app: &TestApp, method: Method, path: &str, body: Value) -> Reply {
    let t = app.admin_token.clone();
    let (b, ct) =
        if body.is_null() { (Body::empty(), None) } else { (Body::from(body.to_string()), Some("application/json")) };
    let mut h = vec![("openstack-api-version", "compute 2.79")];
    h.extend(ct.map(|c| ("content-type", c)));
    app.call(method, &format!("/compute/v2.1{path}"), Some(&t), &h, b).await
}

/// Boots a server on `network`; (its id, its host's name, its fixed IP) once its port exists.
async fn boot(app: &TestApp, name: &str, image: &str, network: &str, extra: Value) -> (String, String, String) {
    let mut server = json!({"name": name, "imageRef": image, "flavorRef": "1", "networks": [{"uuid": network}]});
    if let (Some(s), Some(e)) = (server.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let r = compute(app, Method::POST, "/servers", json!({"server": server})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();
    for _ in 0..250 {
        let s = compute(app, Method::GET, &format!("/servers/{id}"), Value::Null).await.body["server"].clone();
        assert_ne!(s["status"], "ERROR", "{s}");
        let ports =
            app.json(Method::GET, &format!("/network/v2.0/ports?device_id={id}"), &app.admin_token, Value::Null).await;
        let ip = ports.body["ports"][0]["fixed_ips"][0]["ip_address"].as_str().map(str::to_string);
        if let (Some(host), Some(ip)) = (s["OS-EXT-SRV-ATTR:host"].as_str(), ip) {
            return (id, host.to_string(), ip);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{id} never got a host and a port");
}

async fn scenario(app: &TestApp) {
    let t = app.admin_token.clone();
    let creds = [("compute-a", register(app, "compute-a").await), ("compute-b", register(app, "compute-b").await)];
    let img = app
        .json(
            Method::POST,
            "/image/v2/images",
            &t,
            json!({"name": "img", "disk_format": "raw", "container_format": "bare", "visibility": "public"}),
        )
        .await;
    let image = img.body["id"].as_str().expect("image id").to_string();
    let up = app
        .call(
            Method::PUT,
            &format!("/image/v2/images/{image}/file"),
            Some(&t),
            &[("content-type", "application/octet-stream")],
            Body::from(vec![7u8; 4096]),
        )
        .await;
    assert_eq!(up.status, StatusCode::NO_CONTENT);
    let mut nets = Vec::new();
    for (name, cidr) in [("n1", "10.9.0.0/24"), ("n2", "10.9.1.0/24")] {
        let net = app.json(Method::POST, "/network/v2.0/networks", &t, json!({"network": {"name": name}})).await;
        let id = net.body["network"]["id"].as_str().expect("net id").to_string();
        let sub = app
            .json(
                Method::POST,
                "/network/v2.0/subnets",
                &t,
                json!({"subnet": {"network_id": id, "cidr": cidr, "ip_version": 4}}),
            )
            .await;
        assert_eq!(sub.status, StatusCode::CREATED, "{}", sub.body);
        nets.push(id);
    }
    let kp = compute(app, Method::POST, "/os-keypairs", json!({"keypair": {"name": "mykey", "public_key": KEY}})).await;
    assert!(kp.status.is_success(), "{}", kp.body);

    use base64::Engine as _;
    let user_data = base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho from-user-data\n");
    let extra = json!({"key_name": "mykey", "user_data": user_data, "metadata": {"role": "db"}});
    let (one, host_one, ip_one) = boot(app, "one", &image, &nets[0], extra).await;
    let (two, host_two, ip_two) = boot(app, "two", &image, &nets[0], json!({})).await;
    let cred =
        |host: &str| creds.iter().find(|(h, _)| *h == host).map(|(_, c)| c.clone()).expect("a host's credential");
    let other = |host: &str| creds.iter().find(|(h, _)| *h != host).map(|(_, c)| c.clone()).expect("another host");
    let (own, net) = (cred(&host_one), nets[0].clone());
    let ask = |path: &'static str, cred: String, net: String, ip: String| async move {
        agent(app, path, &cred, &[("x-meridian-network-id", net.as_str()), ("x-forwarded-for", ip.as_str())]).await
    };

    // The right instance, by network and address, with Nova's content.
    let r = ask("/metadata/openstack/latest/meta_data.json", own.clone(), net.clone(), ip_one.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.body["uuid"], one);
    assert_eq!(r.body["name"], "one");
    assert_eq!(r.body["hostname"], "one");
    assert_eq!(r.body["public_keys"], json!({"mykey": KEY}));
    assert_eq!(r.body["keys"][0]["name"], "mykey");
    assert_eq!(r.body["meta"], json!({"role": "db"}));
    assert_eq!(r.body["availability_zone"], "nova");
    assert!(r.body["random_seed"].as_str().is_some_and(|s| s.len() > 600), "{}", r.body);
    let r = ask("/metadata/openstack/latest/user_data", own.clone(), net.clone(), ip_one.clone()).await;
    assert_eq!((r.status, r.bytes.as_slice()), (StatusCode::OK, &b"#!/bin/sh\necho from-user-data\n"[..]));
    let r = ask("/metadata/latest/meta-data/local-ipv4", own.clone(), net.clone(), ip_one.clone()).await;
    assert_eq!((r.status, String::from_utf8_lossy(&r.bytes).into_owned()), (StatusCode::OK, ip_one.clone()));
    let r = ask("/metadata/latest/meta-data/public-keys", own.clone(), net.clone(), ip_one.clone()).await;
    assert_eq!(String::from_utf8_lossy(&r.bytes), "0=mykey");
    let r = ask("/metadata", own.clone(), net.clone(), ip_one.clone()).await;
    assert!(String::from_utf8_lossy(&r.bytes).ends_with("2009-04-04\nlatest"), "{:?}", r.bytes);
    let r = ask("/metadata/openstack/latest/network_data.json", own.clone(), net.clone(), ip_one.clone()).await;
    let nd: Value = serde_json::from_slice(&r.bytes).expect("network_data.json");
    assert_eq!(nd["networks"][0]["ip_address"], ip_one);
    // The other guest on the same network gets its own, without user data or keys.
    let r = ask("/metadata/openstack/latest/meta_data.json", cred(&host_two), net.clone(), ip_two.clone()).await;
    assert_eq!((r.status, r.body["uuid"].clone()), (StatusCode::OK, json!(two)), "{}", r.body);
    assert!(r.body.get("public_keys").is_none(), "{}", r.body);
    let r = ask("/metadata/openstack/latest/user_data", cred(&host_two), net.clone(), ip_two.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Another host asking for this guest: 404, as if it did not exist.
    let r = ask("/metadata/openstack/latest/meta_data.json", other(&host_one), net.clone(), ip_one.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // An address nobody has, the right address on another network: 404.
    let r = ask("/metadata/openstack/latest/meta_data.json", own.clone(), net.clone(), "10.9.0.250".into()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = ask("/metadata/openstack/latest/meta_data.json", own.clone(), nets[1].clone(), ip_one.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // A path the tree does not have: 404.
    let r = ask("/metadata/openstack/latest/secrets", own.clone(), net.clone(), ip_one.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // A list of addresses (what a guest's own X-Forwarded-For would add) is not one address.
    let r = ask("/metadata/latest", own.clone(), net.clone(), format!("10.9.0.250, {ip_one}")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    // Without the headers or a host credential.
    let r = agent(app, "/metadata/latest", &own, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let h = [("x-meridian-network-id", net.as_str()), ("x-forwarded-for", ip_one.as_str())];
    let r = agent(app, "/metadata/latest", &join, &h).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

    // A deleted instance no longer answers (no agent runs here to finish a delete: the row is
    // marked as the conductor marks it).
    let r = ask("/metadata/latest", cred(&host_two), net.clone(), ip_two.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    sqlx::query("UPDATE instances SET deleted = 1 WHERE id = $1")
        .bind(&two)
        .execute(&mut *app.state.store.conn().await.expect("conn"))
        .await
        .expect("mark deleted");
    let r = ask("/metadata/latest", cred(&host_two), net.clone(), ip_two.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "a deleted instance's metadata is still served");
}

#[tokio::test]
async fn metadata_is_found_by_network_address_and_host_on_sqlite() {
    scenario(&TestApp::new().await).await;
}

#[tokio::test]
async fn metadata_is_found_by_network_address_and_host_on_postgres() {
    use sqlx::Executor;
    let Some((base, db)) = postgres_db().await else { return };
    let app = TestApp::with_config(|c| c.database_url = format!("{base}/{db}")).await;
    scenario(&app).await;
    app.state.store.close().await;
    if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/postgres")).await {
        let _ = conn.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await;
    }
}

/// EC2 `block-device-mapping` as Nova's `instance_block_mapping` answers it: the flavor's
/// local disks by device path, then every volume attached now (after the boot too) as `ebs<N>`.
#[tokio::test]
async fn block_device_mapping_lists_local_disks_and_the_volumes_attached_now() {
    use super::migration_tests::{Agent, at, cloud};
    let app = TestApp::new().await;
    let (image, network) = cloud(&app).await;
    let a = Agent::register(&app, "compute-a").await;
    let t = app.admin_token.clone();
    let flavor = json!({"flavor": {"name": "eph", "ram": 512, "vcpus": 1, "disk": 1,
        "OS-FLV-EXT-DATA:ephemeral": 1, "swap": 256}});
    let f = at(&app, Method::POST, "/flavors", &t, flavor).await;
    assert!(f.status.is_success(), "{}", f.body);
    let flavor = f.body["flavor"]["id"].as_str().expect("flavor id").to_string();
    let body =
        json!({"server": {"name": "s1", "imageRef": image, "flavorRef": flavor, "networks": [{"uuid": network}]}});
    let r = at(&app, Method::POST, "/servers", &t, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();
    let build = a.expect(&app, "build").await;
    a.done(&app, &build, "running").await;
    let ports = app.json(Method::GET, &format!("/network/v2.0/ports?device_id={id}"), &t, Value::Null).await;
    let ip = ports.body["ports"][0]["fixed_ips"][0]["ip_address"].as_str().expect("fixed ip").to_string();
    let h = [("x-meridian-network-id", network.as_str()), ("x-forwarded-for", ip.as_str())];
    let bdm = |key: &'static str| {
        let cred = a.cred.clone();
        let app = &app;
        async move {
            let r = agent(app, &format!("/metadata/latest/meta-data/block-device-mapping/{key}"), &cred, &h).await;
            assert_eq!(r.status, StatusCode::OK, "{key}: {}", String::from_utf8_lossy(&r.bytes));
            String::from_utf8_lossy(&r.bytes).into_owned()
        }
    };
    assert_eq!(bdm("").await, "ami\nephemeral0\nroot\nswap");
    assert_eq!(bdm("root").await, "/dev/vda");
    assert_eq!(bdm("ephemeral0").await, "/dev/vdb");
    assert_eq!(bdm("swap").await, "/dev/vdc");

    // A volume attached to the running server: the next device, as ebs0.
    let pid =
        app.json(Method::GET, "/identity/v3/projects?name=admin", &t, Value::Null).await.body["projects"][0]["id"]
            .as_str()
            .expect("project")
            .to_string();
    let r = app.json(Method::POST, &format!("/volume/v3/{pid}/volumes"), &t, json!({"volume": {"size": 1}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let vid = r.body["volume"]["id"].as_str().expect("volume").to_string();
    let create = a.expect(&app, "volume_create").await;
    a.done(&app, &create, "no_state").await;
    let body = json!({"volumeAttachment": {"volumeId": vid}});
    let r = at(&app, Method::POST, &format!("/servers/{id}/os-volume_attachments"), &t, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["volumeAttachment"]["device"], "/dev/vdd");
    let attach = a.expect(&app, "volume_attach").await;
    a.done(&app, &attach, "running").await;
    assert_eq!(bdm("").await, "ami\nebs0\nephemeral0\nroot\nswap");
    assert_eq!(bdm("ebs0").await, "/dev/vdd");
}
