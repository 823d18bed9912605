//! Remote consoles: the API (codes, bodies, microversion gates, policy), console tokens
//! (hashed, single use, expiry, retention) and the websocket proxy on a real loopback server
//! with a test agent speaking the agent protocol.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use crate::testing::{Reply, TestApp};

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

async fn register(app: &TestApp, host: &str) -> String {
    let join = app.state.store.setting("agent_token").await.expect("read").expect("token");
    let body = json!({"host": host, "agent_version": "test", "inventory": {
        "vcpus": 8, "memory_mb": 16384, "disk_gb": 100, "reserved_vcpus": 0, "reserved_memory_mb": 0,
        "reserved_disk_gb": 0, "hypervisor_type": "test", "hypervisor_version": 1, "cpu_arch": "x86_64",
        "libvirt_uri": "test:///default", "host_ip": "127.0.0.1", "supports_networks": true,
        "availability_zone": "nova"}});
    let r = agent(app, Method::POST, "/register", &join, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["credential"].as_str().expect("credential").to_string()
}

async fn compute(app: &TestApp, method: Method, path: &str, token: &str, version: &str, body: Value) -> Reply {
    let v = format!("compute {version}");
    let mut h = vec![("openstack-api-version", v.as_str())];
    let b = if body.is_null() {
        Body::empty()
    } else {
        h.push(("content-type", "application/json"));
        Body::from(body.to_string())
    };
    app.call(method, &format!("/compute/v2.1{path}"), Some(token), &h, b).await
}

/// An ACTIVE server on host `compute-a`, built by a test agent; (server id, host credential).
async fn active_server(app: &TestApp, token: &str) -> (String, String) {
    let cred = register(app, "compute-a").await;
    let img = {
        let t = app.admin_token.clone();
        let img = app
            .json(
                Method::POST,
                "/image/v2/images",
                &t,
                json!({"name": "img", "disk_format": "raw", "container_format": "bare", "visibility": "public"}),
            )
            .await;
        let id = img.body["id"].as_str().expect("image id").to_string();
        let up = app
            .call(
                Method::PUT,
                &format!("/image/v2/images/{id}/file"),
                Some(&t),
                &[("content-type", "application/octet-stream")],
                Body::from(vec![7u8; 4096]),
            )
            .await;
        assert_eq!(up.status, StatusCode::NO_CONTENT);
        id
    };
    let r = compute(
        app,
        Method::POST,
        "/servers",
        token,
        "2.79",
        json!({"server": {"name": "s1", "imageRef": img, "flavorRef": "1", "networks": "none"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let id = r.body["server"]["id"].as_str().expect("id").to_string();
    let mut work = Vec::new();
    for _ in 0..100 {
        let r = agent(app, Method::GET, "/hosts/compute-a/work?wait=1", &cred, Value::Null).await;
        work = r.body.as_array().cloned().unwrap_or_default();
        if !work.is_empty() {
            break;
        }
    }
    let work_id = work[0]["id"].as_str().expect("work id");
    let done = json!({"type": "done", "power_state": "running", "console": null});
    let r = agent(app, Method::POST, &format!("/work/{work_id}/events"), &cred, done).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let inst = app.state.store.get_instance(&id).await.expect("instance");
    assert_eq!((inst.vm_state.as_str(), inst.power_state), ("active", 1));
    (id, cred)
}

fn token_of(url: &str) -> String {
    let tail = url.rsplit_once("token").expect("token in the URL").1;
    tail.trim_start_matches('=').trim_start_matches("%3D").to_string()
}

#[tokio::test]
async fn remote_consoles_answer_as_nova() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let (id, _) = active_server(&app, &admin).await;
    let path = format!("/servers/{id}/remote-consoles");

    let serial = json!({"remote_console": {"protocol": "serial", "type": "serial"}});
    let r = compute(&app, Method::POST, &path, &admin, "2.6", serial.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["remote_console"]["protocol"], "serial");
    assert_eq!(r.body["remote_console"]["type"], "serial");
    let url = r.body["remote_console"]["url"].as_str().expect("url");
    assert!(url.starts_with("ws://meridian.test/console/serial/?token="), "{url}");
    // Stored as its hash only.
    let token = token_of(url);
    assert_eq!(token.len(), 43, "{token}");
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT token_hash, instance_id, console_type FROM console_auth_tokens")
            .fetch_all(&mut *app.state.store.conn().await.expect("conn"))
            .await
            .expect("rows");
    assert_eq!(rows, vec![(crate::store::identity::token_hash(&token), id.clone(), "serial".into())]);

    let r = compute(
        &app,
        Method::POST,
        &path,
        &admin,
        "2.79",
        json!({"remote_console": {"protocol": "vnc", "type": "novnc"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let url = r.body["remote_console"]["url"].as_str().expect("url");
    assert!(
        url.starts_with("http://meridian.test/console/novnc/vnc_lite.html?path=console%2Fvnc%2F%3Ftoken%3D"),
        "{url}"
    );

    // Before 2.6 there is no such API; the actions serve instead, until 2.5.
    let r = compute(&app, Method::POST, &path, &admin, "2.5", serial.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let action = format!("/servers/{id}/action");
    let r =
        compute(&app, Method::POST, &action, &admin, "2.1", json!({"os-getSerialConsole": {"type": "serial"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["console"]["type"], "serial");
    assert!(r.body["console"]["url"].as_str().expect("url").starts_with("ws://meridian.test/console/serial/"));
    let r = compute(&app, Method::POST, &action, &admin, "2.5", json!({"os-getVNCConsole": {"type": "novnc"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["console"]["type"], "novnc");
    for name in ["os-getSerialConsole", "os-getVNCConsole"] {
        let r = compute(&app, Method::POST, &action, &admin, "2.6", json!({name: {"type": "serial"}})).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{name} at 2.6: {}", r.body);
    }

    // What Nova refuses, with its words.
    let cases = [
        ("2.6", json!({"remote_console": {"protocol": "vnc", "type": "xvpvnc"}}), "Invalid console type xvpvnc"),
        ("2.6", json!({"remote_console": {"protocol": "vnc", "type": "serial"}}), "Invalid console type serial"),
        (
            "2.6",
            json!({"remote_console": {"protocol": "spice", "type": "spice-html5"}}),
            "Unavailable console type spice-html5.",
        ),
        ("2.6", json!({"remote_console": {"protocol": "rdp", "type": "rdp-html5"}}), "Unavailable console type rdp."),
        ("2.8", json!({"remote_console": {"protocol": "mks", "type": "webmks"}}), "Unavailable console type webmks."),
        ("2.6", json!({"remote_console": {"protocol": "mks", "type": "webmks"}}), "is not one of"),
        ("2.6", json!({"remote_console": {"protocol": "foo", "type": "serial"}}), "'foo' is not one of"),
        ("2.6", json!({"remote_console": {"protocol": "serial"}}), "'type' is a required property"),
        ("2.6", json!({"remote_console": {"protocol": "serial", "type": "serial", "x": 1}}), "('x' was unexpected)"),
        ("2.6", json!({"console": {}}), "('console' was unexpected)"),
    ];
    for (v, body, message) in cases {
        let r = compute(&app, Method::POST, &path, &admin, v, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        let got = r.body["badRequest"]["message"].as_str().unwrap_or_default();
        assert!(got.contains(message), "{body}: {got}");
    }
    let r = compute(&app, Method::POST, &action, &admin, "2.1", json!({"os-getVNCConsole": {"type": "xvpvnc"}})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["badRequest"]["message"], "Invalid console type xvpvnc");

    // Policy: another project sees no such server; a reader may not open consoles.
    let other = app.user_in_project("eve", "other", "member").await;
    let r = compute(&app, Method::POST, &path, &other, "2.6", serial.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let reader = app.user_in_project("rita", "admin", "reader").await;
    let r = compute(&app, Method::POST, &path, &reader, "2.6", serial.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = compute(&app, Method::POST, "/servers/nope/remote-consoles", &admin, "2.6", serial.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // The admin token API (2.31+) shows an unused token.
    let r = compute(&app, Method::GET, &format!("/os-console-auth-tokens/{token}"), &admin, "2.31", Value::Null).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["console"]["instance_uuid"], id.as_str());
    assert_eq!(r.body["console"]["host"], "compute-a");
    let r = compute(&app, Method::GET, &format!("/os-console-auth-tokens/{token}"), &admin, "2.30", Value::Null).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    let r = compute(&app, Method::GET, &format!("/os-console-auth-tokens/{token}"), &other, "2.31", Value::Null).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    let r = compute(&app, Method::GET, "/os-console-auth-tokens/unknown", &admin, "2.31", Value::Null).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    // A stopped guest has no console: 409 as Nova's InstanceNotReady.
    let to = crate::store::instances::NewState { vm_state: "stopped", task_state: None, power_state: Some(4) };
    app.state.store.transition(&id, crate::store::instances::Expect::Any, to).await.expect("stop");
    let r = compute(&app, Method::POST, &path, &admin, "2.6", serial.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["conflictingRequest"]["message"], format!("Instance {id} is not ready"));
}

#[tokio::test]
async fn expired_console_tokens_are_purged() {
    let app = TestApp::new().await;
    let store = &app.state.store;
    store.create_console_token("h-old", "i", "h", "serial", Duration::ZERO).await.expect("token");
    store.create_console_token("h-new", "i", "h", "serial", Duration::from_secs(600)).await.expect("token");
    let cutoffs = crate::store::retention::Cutoffs::older_than(Duration::from_secs(3600));
    let batching = crate::store::retention::Batching { size: 10, pause: Duration::ZERO };
    let purged = store.purge(&cutoffs, &batching).await.expect("purge");
    assert_eq!(purged.console_auth_tokens, 1);
    assert!(store.get_console_token("h-new").await.expect("read").is_some());
    assert!(store.take_console_token("h-old").await.expect("read").is_none());
}

/// The whole application on a loopback port; its address.
async fn serve(app: &TestApp) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(
        crate::app(app.state.clone()),
    );
    tokio::spawn(async move { axum::serve(listener, service).await });
    addr
}

async fn new_token(app: &TestApp, id: &str, protocol: &str, kind: &str) -> String {
    let body = json!({"remote_console": {"protocol": protocol, "type": kind}});
    let r = compute(app, Method::POST, &format!("/servers/{id}/remote-consoles"), &app.admin_token, "2.6", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    token_of(r.body["remote_console"]["url"].as_str().expect("url"))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A client websocket offering the `binary` subprotocol.
async fn client(addr: std::net::SocketAddr, path: &str) -> Result<(Ws, Option<String>), tungstenite::Error> {
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    req.headers_mut().insert("sec-websocket-protocol", "binary".parse().expect("header"));
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    let proto = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok((ws, proto))
}

/// The refusal of a websocket handshake: its status and body text.
fn refusal(e: tungstenite::Error) -> (u16, String) {
    match e {
        tungstenite::Error::Http(resp) => (
            resp.status().as_u16(),
            resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
        ),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// The console request the host's long poll hands out; its session id.
async fn console_request(app: &TestApp, cred: &str) -> String {
    for _ in 0..20 {
        let r = agent(app, Method::GET, "/hosts/compute-a/work?wait=1", cred, Value::Null).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        if let Some(item) = r.body.as_array().and_then(|a| a.iter().find(|w| w["action"]["type"] == "console")) {
            assert_eq!(item["action"]["protocol"], "serial");
            let session = item["action"]["session"].as_str().expect("session").to_string();
            assert_eq!(item["id"].as_str(), Some(session.as_str()));
            // Not stored as work: nothing for retention to keep.
            assert!(app.state.store.get_work(&session).await.is_err());
            return session;
        }
    }
    panic!("no console request reached the agent");
}

async fn agent_ws(addr: std::net::SocketAddr, session: &str, cred: &str) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{addr}/agent/v1/consoles/{session}").into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {cred}").parse().expect("header"));
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Binary(b))) => return b.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

async fn close_reason(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("a close in time") {
            Some(Ok(Message::Close(Some(frame)))) => return frame.reason.to_string(),
            Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame with a reason, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_proxy_joins_client_and_agent_and_refuses_bad_tokens() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let (id, cred) = active_server(&app, &admin).await;
    let other_cred = register(&app, "compute-b").await;
    let addr = serve(&app).await;

    // Refused before the upgrade, with a readable message.
    match client(addr, "/console/serial/?token=nope").await.expect_err("unknown token") {
        // The connection ends with the refusal (tempest's novnc test reads until it does).
        tungstenite::Error::Http(resp) => {
            assert_eq!(resp.headers().get("connection").and_then(|v| v.to_str().ok()), Some("close"));
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    let (status, body) = refusal(client(addr, "/console/serial/?token=nope").await.expect_err("unknown token"));
    assert_eq!(status, 401);
    assert!(body.contains("not valid or was already used"), "{body}");
    let (status, _) = refusal(client(addr, "/console/serial/").await.expect_err("no token"));
    assert_eq!(status, 401);
    let expired = "expired-token";
    app.state
        .store
        .create_console_token(&crate::store::identity::token_hash(expired), &id, "x", "serial", Duration::ZERO)
        .await
        .expect("token");
    let (status, body) =
        refusal(client(addr, &format!("/console/serial/?token={expired}")).await.expect_err("expired"));
    assert_eq!((status, body.trim()), (401, "The console token has expired."));
    let vnc_token = new_token(&app, &id, "vnc", "novnc").await;
    let (status, body) = refusal(client(addr, &format!("/console/serial/?token={vnc_token}")).await.expect_err("kind"));
    assert_eq!(status, 401, "{body}");

    // A session: the client's socket, then the agent's, spliced.
    let token = new_token(&app, &id, "serial", "serial").await;
    let (mut ws, proto) = client(addr, &format!("/console/serial/?token={token}")).await.expect("upgrade");
    assert_eq!(proto.as_deref(), Some("binary"));
    let session = console_request(&app, &cred).await;
    // Another host's credential cannot take the session.
    let (status, _) = refusal(agent_ws(addr, &session, &other_cred).await.expect_err("another host"));
    assert_eq!(status, 404);
    let mut host = agent_ws(addr, &session, &cred).await.expect("agent joins");
    host.send(Message::Binary(b"login: ".to_vec().into())).await.expect("send");
    assert_eq!(next_binary(&mut ws).await, b"login: ");
    ws.send(Message::Binary(b"root\r".to_vec().into())).await.expect("send");
    assert_eq!(next_binary(&mut host).await, b"root\r");
    ws.send(Message::Text("ls\r".into())).await.expect("send");
    assert_eq!(next_binary(&mut host).await, b"ls\r");

    // The token worked once.
    let (status, body) = refusal(client(addr, &format!("/console/serial/?token={token}")).await.expect_err("reuse"));
    assert_eq!(status, 401);
    assert!(body.contains("already used"), "{body}");

    // The agent's side closing with a reason reaches the client.
    host.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "the guest's console closed".into(),
    }))
    .await
    .expect("close");
    let reason = close_reason(&mut ws).await;
    assert!(reason.contains("compute-a") && reason.contains("the guest's console closed"), "{reason}");

    // The agent vanishing mid-session: the client is told the connection was lost.
    let token = new_token(&app, &id, "serial", "serial").await;
    let (mut ws, _) = client(addr, &format!("/console/serial/?token={token}")).await.expect("upgrade");
    let session = console_request(&app, &cred).await;
    let host = agent_ws(addr, &session, &cred).await.expect("agent joins");
    drop(host);
    assert_eq!(close_reason(&mut ws).await, "console connection to host compute-a was lost");

    // An agent that never connects: the client is told after the deadline.
    let token = new_token(&app, &id, "serial", "serial").await;
    let (mut ws, _) = client(addr, &format!("/console/serial/?token={token}")).await.expect("upgrade");
    assert_eq!(close_reason(&mut ws).await, "console connection to host compute-a could not be made");
}

#[tokio::test]
async fn shutdown_closes_consoles() {
    let app = TestApp::new().await;
    let admin = app.admin_token.clone();
    let (id, cred) = active_server(&app, &admin).await;
    let addr = serve(&app).await;
    let token = new_token(&app, &id, "serial", "serial").await;
    let (mut ws, _) = client(addr, &format!("/console/serial/?token={token}")).await.expect("upgrade");
    let session = console_request(&app, &cred).await;
    let _host = agent_ws(addr, &session, &cred).await.expect("agent joins");
    app.state.shutdown.cancel();
    assert_eq!(close_reason(&mut ws).await, "server shutting down");
}
