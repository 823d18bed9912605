//! The live event stream (`os-meridian-events`) against the real server and a real agent:
//! every phase of a boot arrives as a transition, the server objects match `/servers/detail`,
//! other projects see nothing, and a reconnect with `Last-Event-ID` replays what was missed.

use std::time::Duration;

use futures_util::StreamExt;
use meridian_common::Client;
use meridian_common::sse::{SseEvent, SseParser};
use meridian_e2e::{Agent, Cloud, Server, prepare_cloud, wait_server};
use serde_json::{Value, json};

/// One parsed server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// An SSE reader over a streaming response body, on the parser the dashboard uses.
struct Reader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    ready: std::collections::VecDeque<SseEvent>,
}

impl Reader {
    async fn open(client: &Client, query: &str, last_event_id: Option<&str>) -> Result<Reader, reqwest::StatusCode> {
        let mut rb = client
            .request(reqwest::Method::GET, "compute", &format!("/os-meridian-events{query}"))
            .expect("url")
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            rb = rb.header("last-event-id", id);
        }
        let resp = rb.send().await.expect("connect");
        if !resp.status().is_success() {
            return Err(resp.status());
        }
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        Ok(Reader { body: resp.bytes_stream().boxed(), parser: SseParser::new(None), ready: Default::default() })
    }

    /// The next event (comments skipped); panics after `secs` without one (a hang guard).
    async fn next(&mut self, secs: u64) -> Sse {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Sse {
                    event: e.event,
                    id: e.id,
                    data: serde_json::from_str(&e.data).expect("event data is JSON"),
                };
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("no event in time")
                .expect("stream ended")
                .expect("read");
            self.ready.extend(self.parser.feed(&chunk));
        }
    }

    /// Events until `stop` returns true for one (included).
    async fn until(&mut self, stop: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let mut out = Vec::new();
        loop {
            let e = self.next(60).await;
            let done = stop(&e);
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

async fn boot(client: &Client, cloud: &Cloud, name: &str) -> String {
    let body = json!({"server": {
        "name": name, "imageRef": cloud.image_id, "flavorRef": "42", "networks": [{"uuid": cloud.network_id}],
    }});
    let r = client.post("compute", "/servers", &body).await.expect("boot");
    r["server"]["id"].as_str().expect("id").to_string()
}

fn states_of(events: &[Sse], id: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.event == "transition" && e.data["server_id"] == id)
        .map(|e| {
            (
                e.data["vm_state"].as_str().unwrap_or_default().to_string(),
                e.data["task_state"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

fn is_server(e: &Sse, id: &str, status: &str) -> bool {
    e.event == "server" && e.data["server"]["id"] == id && e.data["server"]["status"] == status
}

#[tokio::test]
async fn a_boot_streams_every_phase_and_a_reconnect_replays_what_was_missed() {
    let server = Server::start();
    let _agent = Agent::start(&server, "c1");
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    let cloud = prepare_cloud(&admin).await;

    // A second project with its own member: its stream must stay silent.
    let other = server.admin_command(&["create-project", "other"]);
    assert!(other.status.success(), "{other:?}");
    let user = server.admin_command(&["create-user", "bob", "--password", "bob-pw", "--project", "other"]);
    assert!(user.status.success(), "{user:?}");
    let bob = Client::login(&server.creds("bob", "bob-pw", "other")).await.expect("bob");
    let mut bob_stream = Reader::open(&bob, "", None).await.expect("bob's stream");
    assert_eq!(bob_stream.next(10).await.event, "ready");

    let mut stream = Reader::open(&admin, "", None).await.expect("stream");
    let ready = stream.next(10).await;
    assert_eq!(ready.event, "ready");
    assert!(ready.data["cursor"].is_string(), "{:?}", ready.data);

    let id = boot(&admin, &cloud, "live").await;
    let events = stream.until(|e| is_server(e, &id, "ACTIVE")).await;
    let walk = states_of(&events, &id);
    let want: Vec<(String, String)> = [
        ("building", "scheduling"),
        ("building", "networking"),
        ("building", "block_device_mapping"),
        ("building", "spawning"),
        ("active", "-"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(walk, want, "every phase, in order, once");
    // The server object is exactly what /servers/detail shows at that microversion.
    let last = &events.last().expect("event").data["server"];
    let detail = admin.get("compute", "/servers/detail").await.expect("detail");
    let listed = detail["servers"].as_array().expect("list").iter().find(|s| s["id"] == id).expect("listed").clone();
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    assert_eq!(keys(last), keys(&listed));
    assert_eq!(last["OS-EXT-STS:vm_state"], "active");
    assert_eq!(last["OS-EXT-STS:power_state"], 1);
    let cursor = events.last().and_then(|e| e.id.clone()).expect("server events carry a cursor");

    // Stop while nobody listens; a reconnect from the cursor replays the stop's transitions.
    drop(stream);
    admin.post("compute", &format!("/servers/{id}/action"), &json!({"os-stop": null})).await.expect("stop");
    wait_server(&admin, &id, &["SHUTOFF"], 60).await;
    let mut resumed = Reader::open(&admin, "", Some(&cursor)).await.expect("resume");
    assert_eq!(resumed.next(10).await.event, "ready");
    let events = resumed.until(|e| is_server(e, &id, "SHUTOFF")).await;
    let walk = states_of(&events, &id);
    assert_eq!(
        walk,
        vec![("active".to_string(), "powering-off".to_string()), ("stopped".to_string(), "-".to_string())],
        "{events:?}"
    );

    // Deletion arrives as a DELETED server, like changes-since shows it.
    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    let events = resumed.until(|e| is_server(e, &id, "DELETED")).await;
    assert_eq!(states_of(&events, &id).last().map(|(vm, _)| vm.as_str()), Some("deleted"));

    // Bob's stream saw none of it: the next thing it gets is his own server.
    let mine = {
        let net = bob
            .post("network", "/v2.0/networks", &json!({"network": {"name": "bobnet"}}))
            .await
            .expect("bob's network");
        let net_id = net["network"]["id"].as_str().expect("id").to_string();
        bob.post(
            "network",
            "/v2.0/subnets",
            &json!({"subnet": {"network_id": net_id, "cidr": "10.9.0.0/24", "ip_version": 4}}),
        )
        .await
        .expect("subnet");
        boot(&bob, &Cloud { image_id: cloud.image_id.clone(), network_id: net_id }, "bobs").await
    };
    let first = bob_stream.next(60).await;
    assert_eq!(first.data["server_id"], mine, "{first:?}");
}

#[tokio::test]
async fn the_stream_needs_a_valid_token_and_admin_for_all_tenants() {
    let server = Server::start();
    let admin = server.admin().await;
    let mut broken = admin.clone();
    broken.session.token = "not-a-token".into();
    assert_eq!(Reader::open(&broken, "", None).await.err(), Some(reqwest::StatusCode::UNAUTHORIZED));
    assert_eq!(
        Reader::open(&admin, "", Some("yesterday")).await.err(),
        Some(reqwest::StatusCode::BAD_REQUEST),
        "a malformed cursor is refused"
    );
    let mut all = Reader::open(&admin, "?all_tenants=1", None).await.expect("admin may stream all projects");
    assert_eq!(all.next(10).await.event, "ready");

    let p = server.admin_command(&["create-project", "p2"]);
    assert!(p.status.success(), "{p:?}");
    let u = server.admin_command(&["create-user", "carol", "--password", "carol-pw", "--project", "p2"]);
    assert!(u.status.success(), "{u:?}");
    let carol = Client::login(&server.creds("carol", "carol-pw", "p2")).await.expect("carol");
    assert_eq!(Reader::open(&carol, "?all_tenants=1", None).await.err(), Some(reqwest::StatusCode::FORBIDDEN));
}
