//! The metadata proxy end to end, without a hypervisor: the real server and a real agent on
//! `test:///default` (which has no bridges, so it skips its own proxies and says so), and the
//! agent's proxy code serving one network on a loopback listener with the host's credential.
//! Guests are stood in for by loopback source addresses: each instance gets a fixed IP in
//! 127.77.0.0/24, and a request made from that address is that guest's, as the proxy sees the
//! TCP peer. Whatever a guest writes in `X-Forwarded-For`, it reads its own data only.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use meridian_agent::server::ServerClient;
use meridian_e2e::{Agent, Server, upload_image_data, wait_hosts_up, wait_server};
use serde_json::{Value, json};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ7m0Hfm9C5rQpQWmJmFzWwV1n8kGf7w0qW7dE1yq0mB proxy@test";

/// GET `path` from the proxy at `proxy`, connecting from `from`, with extra headers.
async fn get(proxy: SocketAddr, from: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let local: IpAddr = from.parse().expect("source address");
    let client = reqwest::Client::builder().local_address(local).no_proxy().build().expect("client");
    let mut rb = client.get(format!("http://{proxy}{path}"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.expect("request to the proxy");
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    (status, ct, resp.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_each_guest_by_its_network_and_source_address_only() {
    let server = Server::start();
    let agent = Agent::start(&server, "md-proxy-host");
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;

    let img = admin
        .post(
            "image",
            "/v2/images",
            &json!({"name": "tiny", "disk_format": "raw", "container_format": "bare", "visibility": "public"}),
        )
        .await
        .expect("image");
    let image = img["id"].as_str().expect("id").to_string();
    upload_image_data(&admin, &image, vec![1u8; 4096]).await;
    let net = admin.post("network", "/v2.0/networks", &json!({"network": {"name": "mdnet"}})).await.expect("network");
    let network = net["network"]["id"].as_str().expect("id").to_string();
    let sub = json!({"subnet": {"network_id": network, "cidr": "127.77.0.0/24", "ip_version": 4}});
    admin.post("network", "/v2.0/subnets", &sub).await.expect("subnet");
    admin
        .post("compute", "/os-keypairs", &json!({"keypair": {"name": "proxykey", "public_key": KEY}}))
        .await
        .expect("key pair");

    let mut ids = Vec::new();
    for (name, ip, key, ud) in
        [("alpha", "127.77.0.10", Some("proxykey"), Some("alpha's user data\n")), ("beta", "127.77.0.11", None, None)]
    {
        let mut s = json!({"name": name, "imageRef": image, "flavorRef": "1",
            "networks": [{"uuid": network, "fixed_ip": ip}]});
        if let Some(k) = key {
            s["key_name"] = json!(k);
        }
        if let Some(u) = ud {
            s["user_data"] = json!(base64::engine::general_purpose::STANDARD.encode(u));
        }
        let r = admin.post("compute", "/servers", &json!({"server": s})).await.expect("boot");
        ids.push(r["server"]["id"].as_str().expect("id").to_string());
    }
    for id in &ids {
        let s = wait_server(&admin, id, &["ACTIVE", "ERROR"], 60).await;
        assert_eq!(s["status"], "ACTIVE", "{s}");
    }
    let log = agent.log_text();
    assert!(log.contains("metadata proxy skipped"), "the test driver has no bridges: {log}");

    // The proxy, as the agent runs it per network, with this host's credential.
    let client = ServerClient::new(&server.url, "").expect("client");
    client.set_credential(Some(agent.credential().expect("the agent registered")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let proxy = listener.local_addr().expect("address");
    let task = tokio::spawn(meridian_agent::metadata_proxy::serve(listener, network.clone(), client));

    // Alpha reads its own hostname, key (by name) and user data, in both formats.
    let (status, ct, body) = get(proxy, "127.77.0.10", "/openstack/latest/meta_data.json", &[]).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let md: Value = serde_json::from_str(&body).expect("meta_data.json");
    assert_eq!(md["uuid"], ids[0]);
    assert_eq!(md["hostname"], "alpha");
    assert_eq!(md["public_keys"], json!({"proxykey": KEY}));
    let (status, _, body) = get(proxy, "127.77.0.10", "/openstack/latest/user_data", &[]).await;
    assert_eq!((status, body.as_str()), (200, "alpha's user data\n"));
    let (_, _, body) = get(proxy, "127.77.0.10", "/latest/meta-data/public-keys/0/openssh-key", &[]).await;
    assert_eq!(body, KEY);
    let (_, ct, body) = get(proxy, "127.77.0.10", "/openstack", &[]).await;
    assert_eq!(ct, "text/plain");
    assert!(body.starts_with("2012-08-10\n") && body.ends_with("\nlatest"), "{body}");

    // Beta, forging alpha's address in X-Forwarded-For, still reads its own, and no user data.
    let forged = [("x-forwarded-for", "127.77.0.10"), ("x-meridian-network-id", "another")];
    let (status, _, body) = get(proxy, "127.77.0.11", "/openstack/latest/meta_data.json", &forged).await;
    assert_eq!(status, 200, "{body}");
    let md: Value = serde_json::from_str(&body).expect("meta_data.json");
    assert_eq!(md["uuid"], ids[1], "the proxy took the guest's header: {md}");
    assert!(md.get("public_keys").is_none(), "{md}");
    let (status, _, _) = get(proxy, "127.77.0.11", "/openstack/latest/user_data", &forged).await;
    assert_eq!(status, 404);
    let (_, _, body) = get(proxy, "127.77.0.11", "/latest/meta-data/local-ipv4", &forged).await;
    assert_eq!(body, "127.77.0.11");
    // A path that climbs out of the metadata tree stays in it.
    let (status, _, _) = get(proxy, "127.77.0.11", &format!("/../../images/{image}/file"), &[]).await;
    assert_eq!(status, 404);

    // An address no instance has: 404.
    let (status, _, _) = get(proxy, "127.77.0.99", "/openstack/latest/meta_data.json", &forged).await;
    assert_eq!(status, 404);
    task.abort();
}
