//! A clean stop with dashboards connected (issue 13): on SIGTERM every open event stream ends
//! with a `reconnect` event, an agent's long poll is answered at once, and the process exits
//! within the 10 s a supervisor allows.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use meridian_common::Client;
use meridian_common::sse::{SseEvent, SseParser};
use meridian_e2e::Server;
use serde_json::json;

/// The contract: the process is gone this soon after SIGTERM (a deadline, not a
/// performance figure).
const EXIT_DEADLINE: Duration = Duration::from_secs(10);
const STREAMS: usize = 20;

/// Opens the admin's event stream and reads up to its `ready` event; returns the body and the
/// parser positioned after it.
async fn open_stream(
    client: &Client,
) -> (futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>, SseParser) {
    let resp = client
        .request(reqwest::Method::GET, "compute", "/os-meridian-events?all_tenants=1")
        .expect("url")
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("connect");
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.bytes_stream().boxed();
    let mut parser = SseParser::new(None);
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("ready in time")
            .expect("stream open")
            .expect("read");
        if parser.feed(&chunk).iter().any(|e| e.event == "ready") {
            return (body, parser);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_twenty_event_streams_with_reconnect_and_exits_within_ten_seconds() {
    let server = Server::start();
    let admin = server.admin().await;

    // Twenty dashboards, each reading until its stream ends.
    let mut readers = Vec::new();
    for _ in 0..STREAMS {
        let (mut body, mut parser) = open_stream(&admin).await;
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<SseEvent> = Vec::new();
            // Bounded, so a stream that never ends fails the test instead of hanging it.
            let deadline = tokio::time::Instant::now() + EXIT_DEADLINE + Duration::from_secs(5);
            while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await {
                match chunk {
                    Ok(c) => seen.extend(parser.feed(&c)),
                    Err(_) => break,
                }
            }
            (seen, parser.retry_ms())
        }));
    }

    // An agent waiting for work with the longest wait there is.
    let token = std::fs::read_to_string(server.data_dir.join("agent-token")).expect("agent token");
    let bearer = format!("Bearer {}", token.trim());
    let http = reqwest::Client::new();
    let register =
        json!({"host": "c1", "inventory": meridian_common::agent::Inventory::default(), "agent_version": "e2e"});
    let r = http
        .post(format!("{}/agent/v1/register", server.url))
        .header("authorization", &bearer)
        .json(&register)
        .send()
        .await
        .expect("register");
    assert!(r.status().is_success(), "{}", r.status());
    // The join token only registers; the host's own credential polls.
    let reg: serde_json::Value = r.json().await.expect("registration");
    let bearer = format!("Bearer {}", reg["credential"].as_str().expect("credential"));
    let poll = tokio::spawn({
        let url = format!("{}/agent/v1/hosts/c1/work?wait=60", server.url);
        let http = http.clone();
        let bearer = bearer.clone();
        async move {
            let r = http.get(url).header("authorization", bearer).send().await.expect("long poll");
            (r.status(), r.text().await.unwrap_or_default(), Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "the long poll waits for work");

    let term = Instant::now();
    let (server, clean) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        let clean = server.terminate();
        (server, clean)
    })
    .await
    .expect("terminate");
    let took = term.elapsed();
    eprintln!("SIGTERM to exit with {STREAMS} event streams and a long poll open: {took:?}");
    assert!(clean, "a clean exit; log:\n{}", server.log_text());
    assert!(took < EXIT_DEADLINE, "exited {took:?} after SIGTERM; log:\n{}", server.log_text());

    for (i, r) in readers.into_iter().enumerate() {
        let (seen, retry_ms) = r.await.expect("reader");
        let last = seen.last().unwrap_or_else(|| panic!("stream {i}: nothing after ready"));
        assert_eq!(last.event, "reconnect", "stream {i} ends with reconnect: {seen:?}");
        let data: serde_json::Value = serde_json::from_str(&last.data).expect("reconnect data is JSON");
        assert_eq!(data["reason"], "server shutting down", "{data}");
        assert!(data["retry_ms"].as_u64().is_some(), "{data}");
        assert_eq!(retry_ms, data["retry_ms"].as_u64(), "the SSE retry field says the same");
    }
    let (status, body, answered) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long poll was answered")
        .expect("poll task");
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(body, "[]");
    assert!(answered < term + EXIT_DEADLINE, "answered at shutdown, not after its 60 s wait");
}
