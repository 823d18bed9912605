//! Benchmark of the scheduler with server groups (figures, not a test).
//!
//! 1. In-process: one scheduling decision (every filter, the weighers, the pick) among 1,000
//!    hosts for an instance of a 50-member anti-affinity group whose members sit on 50 hosts,
//!    p50/p99 over `BENCH_DECISIONS` (default 2,000) decisions.
//! 2. End to end: 20 servers booted in one request into one anti-affinity group with
//!    `max_server_per_host` 2 across 10 agents on libvirt `test:///default`: POST → all ACTIVE,
//!    and the spread (every host exactly 2). `BENCH_SKIP_BOOT=1` skips it.
//!
//! Run: `cargo build --release -p meridian-e2e --bin bench-scheduler && target/release/bench-scheduler`
//! (part 2 needs the server and agent binaries beside it, or `MERIDIAN_MERIDIAN_SERVER_BIN` /
//! `MERIDIAN_MERIDIAN_AGENT_BIN`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use meridian_e2e::{Agent, Server, prepare_cloud, wait_hosts_up};
use meridian_server::compute::scheduler::{self, GroupPlacement, GroupPolicy, HostState, Request, Settings};
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn decisions() {
    let hosts: Vec<HostState> = (0..1000)
        .map(|i| HostState {
            id: format!("host-{i:04}"),
            name: format!("compute-{i:04}"),
            enabled: true,
            up: true,
            availability_zone: "nova".into(),
            hypervisor_type: "QEMU".into(),
            cpu_arch: "x86_64".into(),
            vcpus: 32,
            memory_mb: 131072,
            disk_gb: 2000,
            vcpus_used: (i % 17) as i64,
            memory_mb_used: ((i * 977) % 65536) as i64,
            disk_gb_used: (i % 300) as i64,
        })
        .collect();
    let members_per_host: HashMap<String, i64> = (0..50).map(|i| (format!("host-{:04}", i * 20), 1)).collect();
    let request = Request {
        vcpus: 2,
        memory_mb: 4096,
        disk_gb: 20,
        group: Some(GroupPlacement { policy: GroupPolicy::AntiAffinity, max_server_per_host: 1, members_per_host }),
        different_host: vec!["host-0001".into()],
        ..Default::default()
    };
    let s = Settings::default();
    let n = env("BENCH_DECISIONS", 2000);
    let mut times = Vec::with_capacity(n);
    let mut picked = String::new();
    for _ in 0..n {
        let t = Instant::now();
        let out = scheduler::select(&hosts, &request, &s);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        if let Ok(c) = out {
            picked = c.first().cloned().unwrap_or_default();
        }
    }
    times.sort_by(f64::total_cmp);
    assert!(!request.group.as_ref().is_some_and(|g| g.members_per_host.contains_key(&picked)), "a member's host");
    println!(
        "decision among 1000 hosts, 50-member anti-affinity group: p50 {:.0} µs, p99 {:.0} µs ({n} decisions)",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}

async fn boot_storm() {
    let server = Server::start();
    let agents: Vec<Agent> = (0..10).map(|i| Agent::start(&server, &format!("c{i:02}"))).collect();
    let mut admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, agents.len()).await;
    admin.compute_version = Some("2.64".into());
    let pid = admin.session.project_id().expect("project").to_string();
    admin
        .put(
            "compute",
            &format!("/os-quota-sets/{pid}"),
            &json!({"quota_set": {"instances": 100, "cores": 200, "ram": 1_000_000, "server_group_members": 100}}),
        )
        .await
        .expect("quotas");
    let g = admin
        .post(
            "compute",
            "/os-server-groups",
            &json!({"server_group": {"name": "bench", "policy": "anti-affinity", "rules": {"max_server_per_host": 2}}}),
        )
        .await
        .expect("group");
    let gid = g["server_group"]["id"].as_str().expect("id").to_string();
    let flavors = admin.get("compute", "/flavors").await.expect("flavors");
    let flavor = flavors["flavors"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == "m1.nano"))
        .and_then(|f| f["id"].as_str())
        .expect("m1.nano")
        .to_string();
    let t = Instant::now();
    admin
        .post(
            "compute",
            "/servers",
            &json!({"server": {"name": "b", "imageRef": cloud.image_id, "flavorRef": flavor,
                "networks": [{"uuid": cloud.network_id}], "min_count": 20, "max_count": 20},
                "os:scheduler_hints": {"group": gid}}),
        )
        .await
        .expect("boot");
    let deadline = Instant::now() + Duration::from_secs(600);
    let list = loop {
        let l = admin.get("compute", "/servers/detail").await.expect("list");
        let servers = l["servers"].as_array().cloned().unwrap_or_default();
        let done = servers.iter().filter(|s| s["status"] == "ACTIVE" || s["status"] == "ERROR").count();
        if servers.len() == 20 && done == 20 {
            break servers;
        }
        assert!(Instant::now() < deadline, "the boots never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = t.elapsed();
    let mut per_host: HashMap<String, usize> = HashMap::new();
    for s in &list {
        *per_host.entry(s["OS-EXT-SRV-ATTR:host"].as_str().unwrap_or("none").to_string()).or_default() += 1;
    }
    let active = list.iter().filter(|s| s["status"] == "ACTIVE").count();
    println!(
        "20 servers, one anti-affinity group (max 2 per host), 10 agents: POST → all done {:.2} s, {active} ACTIVE, \
         per host {:?}",
        took.as_secs_f64(),
        {
            let mut v: Vec<usize> = per_host.values().copied().collect();
            v.sort();
            v
        }
    );
    drop(agents);
}

#[tokio::main]
async fn main() {
    decisions();
    if env("BENCH_SKIP_BOOT", 0) == 0 {
        boot_storm().await;
    }
}
