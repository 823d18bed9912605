//! The whole agent (`meridian_agent::start`, as the binary runs it) against the fake server.

use std::future::Future;
use std::time::{Duration, Instant};

use clap::Parser;
use meridian_agent::config::Args;
use meridian_agent::hypervisor::Hypervisor;
use meridian_agent::xml;
use meridian_common::agent::{Action, PowerState, WorkEvent, WorkItem};
use uuid::Uuid;

use crate::fixtures::{Cleanup, ServerState, TOKEN, URI, build_spec, libvirt, mac, nic, raw_image, start_server};

/// Polls `check` until it holds or `secs` pass.
async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finals(s: &ServerState, work: &str) -> usize {
    s.events_of(work).iter().filter(|e| !matches!(e, WorkEvent::Progress { .. })).count()
}

fn reported(s: &ServerState, id: &Uuid) -> Option<PowerState> {
    s.heartbeats
        .lock()
        .expect("lock")
        .last()?
        .instances
        .iter()
        .find(|r| r.instance_id == id.to_string())
        .map(|r| r.power_state)
}

fn agent(
    url: &str,
    dir: &std::path::Path,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    agent_with(url, dir, &["--token", TOKEN], stop)
}

fn agent_with(
    url: &str,
    dir: &std::path::Path,
    extra: &[&str],
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let dir = dir.to_string_lossy().to_string();
    let mut argv = vec![
        "meridian-agent",
        "--server",
        url,
        "--host",
        "compute-1",
        "--libvirt-uri",
        URI,
        "--state-dir",
        &dir,
        "--poll-wait-secs",
        "1",
        "--reserved-vcpus",
        "2",
        "--stop-timeout-secs",
        "2",
    ];
    argv.extend_from_slice(extra);
    let args = Args::try_parse_from(argv).expect("flags");
    tokio::spawn(meridian_agent::start(args, stop))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_work_from_the_server() {
    let (url, s) = start_server().await;
    // The server is "restarting" at first: the agent retries its registration.
    s.refuse_registrations.store(1, std::sync::atomic::Ordering::SeqCst);
    // And it takes only part of the first event reports: the rest must come again, in order.
    s.partial_event_reports.store(2, std::sync::atomic::Ordering::SeqCst);
    let data = raw_image(9);
    s.add_image("img-agent", data.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let id = Uuid::new_v4();
    let net_id = Uuid::new_v4().to_string();
    let hv = libvirt();
    let _cleanup = Cleanup { hv: hv.clone(), instances: vec![id], networks: vec![net_id.clone()] };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = agent(&url, dir.path(), async {
        let _ = stop_rx.await;
    });

    eventually(10, "registration", || !s.registrations.lock().expect("lock").is_empty()).await;
    {
        let regs = s.registrations.lock().expect("lock");
        let inv = &regs[0].inventory;
        let total = hv.host_info().expect("host info").vcpus;
        assert_eq!(regs[0].host, "compute-1");
        assert_eq!((inv.vcpus, inv.reserved_vcpus), (total - 2, 2));
        assert_eq!(inv.hypervisor_type, "test");
        assert_eq!(inv.availability_zone, "nova");
        assert!(inv.supports_networks);
        assert_eq!(inv.host_ip, "127.0.0.1");
    }

    // Build: progress, then Done.
    let build = WorkItem {
        id: "w-build".into(),
        instance_id: id.to_string(),
        attempt: 1,
        action: Action::Build(Box::new(build_spec("img-agent", &data, vec![nic(&net_id, &mac(), "10.77.0.20")]))),
    };
    s.offer(build.clone());
    eventually(20, "the build's outcome", || finals(&s, "w-build") == 1).await;
    let events = s.events_of("w-build");
    assert!(
        matches!(
            events.as_slice(),
            [
                WorkEvent::Progress { task_state: a },
                WorkEvent::Progress { task_state: b },
                WorkEvent::Done {
                    power_state: PowerState::Running,
                    ..
                },
            ] if a == "block_device_mapping" && b == "spawning"
        ),
        "{events:?}"
    );
    eventually(10, "a heartbeat with the instance running", || reported(&s, &id) == Some(PowerState::Running)).await;

    // A console read is answered but not recorded: running it again is harmless, and keeping
    // its text would grow the work log with every read of a followed console.
    s.offer(WorkItem {
        id: "w-console".into(),
        instance_id: id.to_string(),
        attempt: 1,
        action: Action::ConsoleLog { lines: Some(10) },
    });
    eventually(10, "the console answer", || finals(&s, "w-console") == 1).await;
    assert!(matches!(s.events_of("w-console")[..], [WorkEvent::Done { console: Some(_), .. }]));
    let log = std::fs::read_to_string(dir.path().join("work").join("log.jsonl")).expect("work log");
    assert!(log.contains("w-build") && !log.contains("w-console"), "{log}");

    // The acknowledgement got lost: the same work again gets the same outcome, no rebuild.
    s.offer(WorkItem { attempt: 2, ..build });
    eventually(10, "the repeated outcome", || finals(&s, "w-build") == 2).await;
    assert_eq!(s.events_of("w-build").len(), 4, "the build ran twice");
    assert_eq!(s.image_hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The guest powers off by itself: the next heartbeat says so.
    hv.shutdown(&xml::Naming::default().domain(&id)).expect("guest shutdown");
    eventually(10, "a heartbeat with the instance shut down", || reported(&s, &id) == Some(PowerState::Shutdown)).await;

    // A rejected transition is a clear failure, and the agent carries on.
    s.offer(WorkItem {
        id: "w-reboot".into(),
        instance_id: id.to_string(),
        attempt: 1,
        action: Action::Reboot { hard: false },
    });
    s.offer(WorkItem { id: "w-delete".into(), instance_id: id.to_string(), attempt: 1, action: Action::Delete });
    eventually(20, "the delete", || finals(&s, "w-delete") == 1).await;
    let reboot = s.events_of("w-reboot");
    assert!(
        matches!(&reboot[..], [WorkEvent::Failed { message, retryable: false, .. }]
            if message.contains("cannot soft reboot an instance that is shut off")),
        "{reboot:?}"
    );
    assert!(matches!(s.events_of("w-delete")[..], [WorkEvent::Done { power_state: PowerState::NoState, .. }]));
    assert_eq!(hv.state(&xml::Naming::default().domain(&id)).expect("state"), None);
    eventually(10, "a heartbeat without the instance", || reported(&s, &id).is_none()).await;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("agent stops")
        .expect("agent task")
        .expect("agent result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_waits_for_an_absent_server() {
    // Nothing listens here: the agent keeps retrying and stops cleanly when asked.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let dir = tempfile::tempdir().expect("tempdir");
    let running = agent(&url, dir.path(), tokio::time::sleep(Duration::from_secs(3)));
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("agent stops")
        .expect("agent task")
        .expect("agent result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_keeps_its_credential_private_and_registers_again_when_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let (url, s) = start_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("host-credential");
    let stored = || std::fs::read_to_string(&file).unwrap_or_default();
    let current = || s.credential.lock().expect("lock").clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = agent(&url, dir.path(), async {
        let _ = stop_rx.await;
    });

    // Registered with the join token; the credential it got is stored, 0600, and used.
    eventually(10, "registration", || !s.registrations.lock().expect("lock").is_empty()).await;
    eventually(10, "the stored credential", || stored() == current()).await;
    assert_eq!(std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777, 0o600);
    assert_eq!(*s.registered_with.lock().expect("lock"), [TOKEN]);
    let beats = s.heartbeats.lock().expect("lock").len();
    eventually(10, "a heartbeat with the credential", || s.heartbeats.lock().expect("lock").len() > beats).await;

    // The server forgets the credential (401): the agent registers again, with the join token
    // once its credential is refused, and stores the new one.
    let first = current();
    *s.credential.lock().expect("lock") = "revoked".into();
    eventually(10, "a second registration", || s.registrations.lock().expect("lock").len() == 2).await;
    eventually(10, "the new stored credential", || stored() == current() && stored() != first).await;
    assert_eq!(*s.registered_with.lock().expect("lock"), [TOKEN, TOKEN]);
    let beats = s.heartbeats.lock().expect("lock").len();
    eventually(10, "heartbeats again", || s.heartbeats.lock().expect("lock").len() > beats).await;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("agent stops").expect("task").expect("result");

    // A restart needs no join token: it registers with the stored credential.
    let second = current();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = agent_with(&url, dir.path(), &[], async {
        let _ = stop_rx.await;
    });
    eventually(10, "a third registration", || s.registrations.lock().expect("lock").len() == 3).await;
    assert_eq!(s.registered_with.lock().expect("lock")[2], second);
    eventually(10, "the renewed stored credential", || stored() == current() && stored() != second).await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("agent stops").expect("task").expect("result");

    // Neither a join token nor a stored credential: a clear error at start.
    let empty = tempfile::tempdir().expect("tempdir");
    let err = agent_with(&url, empty.path(), &[], std::future::pending()).await.expect("task").expect_err("refused");
    assert!(err.to_string().contains("no join token"), "{err}");
}

/// `/healthz`, `/readyz` (registered + libvirt) and `/metrics` on `--metrics-listen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_probes_and_metrics() {
    let (url, s) = start_server().await;
    s.refuse_registrations.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let data = raw_image(5);
    s.add_image("img-metrics", data.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let id = Uuid::new_v4();
    let net_id = Uuid::new_v4().to_string();
    let _cleanup = Cleanup { hv: libvirt(), instances: vec![id], networks: vec![net_id.clone()] };
    // A free port for the listener (the flag takes an address, as an operator gives it).
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    let state_dir = dir.path().to_string_lossy().to_string();
    let args = Args::try_parse_from([
        "meridian-agent",
        "--server",
        &url,
        "--host",
        "compute-m",
        "--token",
        TOKEN,
        "--libvirt-uri",
        URI,
        "--state-dir",
        &state_dir,
        "--poll-wait-secs",
        "1",
        "--metrics-listen",
        &listen,
    ])
    .expect("flags");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(meridian_agent::start(args, async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("http://{listen}{path}"));
        async move {
            let r = http.get(url).send().await.ok()?;
            let status = r.status().as_u16();
            Some((status, r.text().await.ok()?))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while get("/healthz").await.is_none() {
        assert!(Instant::now() < deadline, "the metrics listener never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get("/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(get("/readyz").await.map(|r| r.0), Some(503), "not registered yet");
    s.refuse_registrations.store(0, std::sync::atomic::Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    while get("/readyz").await.map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "never ready after registering");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.offer(WorkItem {
        id: "w-metrics".into(),
        instance_id: id.to_string(),
        attempt: 1,
        action: Action::Build(Box::new(build_spec("img-metrics", &data, vec![nic(&net_id, &mac(), "10.78.0.20")]))),
    });
    eventually(20, "the build's outcome", || finals(&s, "w-metrics") == 1).await;
    let (status, text) = get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    let has = |name: &str, labels: &[(&str, &str)]| {
        scrape.samples.iter().any(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
    };
    assert!(has("meridian_agent_work_items_total", &[("kind", "build"), ("outcome", "done")]), "{text}");
    assert!(has("meridian_agent_work_duration_seconds", &[("kind", "build")]), "{text}");
    assert!(has("meridian_agent_libvirt_call_duration_seconds", &[("op", "define")]), "{text}");
    assert!(has("meridian_agent_image_cache_requests_total", &[("result", "miss")]), "{text}");
    assert!(
        scrape.samples.iter().any(|x| x.metric == "meridian_agent_image_cache_bytes"
            && matches!(x.value, prometheus_parse::Value::Gauge(v) if v >= data.len() as f64)),
        "{text}"
    );
    assert!(!text.contains(&id.to_string()) && !text.contains("img-metrics"), "no ids in labels");
    s.offer(WorkItem { id: "w-metrics-del".into(), instance_id: id.to_string(), attempt: 1, action: Action::Delete });
    eventually(20, "the delete", || finals(&s, "w-metrics-del") == 1).await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("agent stops")
        .expect("agent task")
        .expect("agent result");
}
