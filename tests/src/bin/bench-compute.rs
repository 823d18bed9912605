//! Benchmark of the compute control plane (figures, not a test): 100 simulated hosts (real
//! agents on libvirt's `test:///default`), a storm of boots, then boots per second sustained and
//! POST→ACTIVE latency p50/p99 from the servers' own timelines.
//!
//! Run: `cargo build --release --workspace && target/release/bench-compute`
//! (`BENCH_HOSTS`, `BENCH_BOOTS`, `BENCH_CONCURRENCY` change the defaults 100 / 1000 / 64;
//! `BENCH_RATE`, `BENCH_PACED` the paced latency phase, 20/s × 200; `BENCH_DATABASE_URL` the database;
//! `MERIDIAN_E2E_AGENT_TMPDIR` where the simulated hosts keep their state, e.g. a tmpfs to take
//! their file system work off the control plane's disk).
//!
//! Run it on a quiet machine and not back to back: the previous run's removed files make file
//! creation slower for a minute or more (ext4 without a journal skips recently freed inodes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_e2e::{Agent, Server, prepare_cloud};
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

fn ts(s: &str) -> Option<chrono_like::Instant> {
    chrono_like::parse(s)
}

/// Just enough RFC 3339 parsing for the server's fixed-width timestamps.
mod chrono_like {
    pub type Instant = f64;
    pub fn parse(s: &str) -> Option<f64> {
        // 2026-11-22T00:35:06.324655Z → seconds within the day is enough for differences
        // measured in one run (the bench does not cross midnight in practice; guard anyway).
        let t = s.split('T').nth(1)?.trim_end_matches('Z');
        let mut parts = t.split(':');
        let h: f64 = parts.next()?.parse().ok()?;
        let m: f64 = parts.next()?.parse().ok()?;
        let sec: f64 = parts.next()?.parse().ok()?;
        let day: f64 = s.get(8..10)?.parse().ok()?;
        Some(day * 86400.0 + h * 3600.0 + m * 60.0 + sec)
    }
}

/// (busy, total) clock ticks of the whole machine, from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = ticks.iter().take(8).sum();
    // idle and iowait are not busy.
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

#[tokio::main]
async fn main() {
    let hosts = env("BENCH_HOSTS", 100);
    let boots = env("BENCH_BOOTS", 1000);
    let concurrency = env("BENCH_CONCURRENCY", 64);
    // BENCH_DATABASE_URL (e.g. a PostgreSQL database) instead of the default SQLite file.
    let server = Server::start_opts(std::env::var("BENCH_DATABASE_URL").ok(), &["--host-down-after", "60"]);
    let mut agents = Vec::new();
    for i in 0..hosts {
        agents.push(Agent::start(&server, &format!("sim{i:03}")));
    }
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    let pid = admin.session.project_id().expect("project").to_string();
    admin
        .put(
            "compute",
            &format!("/os-quota-sets/{pid}"),
            &json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}}),
        )
        .await
        .expect("quota");
    admin.put("network", &format!("/v2.0/quotas/{pid}"), &json!({"quota": {"port": -1}})).await.expect("network quota");
    let cloud = prepare_cloud(&admin).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = admin.get("compute", "/os-services?binary=nova-compute").await.expect("services");
        let up = s["services"].as_array().map(|a| a.iter().filter(|x| x["state"] == "up").count()).unwrap_or(0);
        if up == hosts {
            break;
        }
        assert!(Instant::now() < deadline, "only {up} of {hosts} hosts registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admin = Arc::new(admin);
    let server_pid = server.pid().expect("server pid");
    let agent_pids: Vec<u32> = agents.iter().filter_map(Agent::pid).collect();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>();

    // Phase 1, throughput: a storm of boots (POSTs `concurrency` at a time, builds queue up).
    // The agents' first boots include downloading the 1 MiB image: part of the real path.
    let (server_before, agents_before) = (cpu(&[server_pid]), cpu(&agent_pids));
    let (client_before, machine_before) = (cpu(&[std::process::id()]), machine_ticks());
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..boots {
        let (admin, sem, image, net) = (admin.clone(), sem.clone(), cloud.image_id.clone(), cloud.network_id.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.expect("semaphore");
            post(&admin, &format!("b{i:05}"), &image, &net).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("join"));
    }
    let posted = started.elapsed().as_secs_f64();
    wait_settled(&admin, "b", ids.len()).await;
    let wall = started.elapsed().as_secs_f64();
    let server_cpu_s = (cpu(&[server_pid]) - server_before) as f64 / 100.0;
    let agents_cpu_s = (cpu(&agent_pids) - agents_before) as f64 / 100.0;
    let client_cpu_s = (cpu(&[std::process::id()]) - client_before) as f64 / 100.0;
    let (busy, total) = machine_ticks();
    let machine_busy = (busy - machine_before.0) as f64 / (total - machine_before.1).max(1) as f64;
    let storm = phases(&admin, &ids).await;

    // Phase 2, latency: boots at a steady rate well under capacity, so each is measured on its
    // own rather than behind a queue.
    let rate = env("BENCH_RATE", 20).max(1);
    let paced_n = env("BENCH_PACED", 200);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut tasks = Vec::new();
    for i in 0..paced_n {
        tick.tick().await;
        let (admin, image, net) = (admin.clone(), cloud.image_id.clone(), cloud.network_id.clone());
        tasks.push(tokio::spawn(async move { post(&admin, &format!("p{i:05}"), &image, &net).await }));
    }
    let mut paced_ids = Vec::new();
    for t in tasks {
        paced_ids.push(t.await.expect("join"));
    }
    wait_settled(&admin, "p", paced_ids.len()).await;
    let paced = phases(&admin, &paced_ids).await;

    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "hosts": hosts,
            "storm": {
                "boots": boots,
                "post_concurrency": concurrency,
                "active": storm.total.len(),
                "boots_per_s_server_side": storm.total.len() as f64 / storm.span_s,
                "boots_per_s_wall": boots as f64 / wall,
                "post_phase_s": posted,
                "server_cpu_ms_per_boot": server_cpu_s * 1000.0 / boots as f64,
                "bench_client_cpu_ms_per_boot": client_cpu_s * 1000.0 / boots as f64,
                "machine_cpu_busy": machine_busy,
                "agents_cpu_ms_per_boot": agents_cpu_s * 1000.0 / boots as f64,
                "post_to_active_ms": storm.summary(),
            },
            "paced": {
                "boots": paced_n,
                "rate_per_s": rate,
                "active": paced.total.len(),
                "post_to_active_ms": paced.summary(),
            },
        }))
        .expect("json")
    );
    drop(agents);
}

async fn post(admin: &meridian_common::Client, name: &str, image: &str, net: &str) -> String {
    let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": "42", "networks": [{"uuid": net}]}});
    admin.post("compute", "/servers", &body).await.expect("boot")["server"]["id"].as_str().expect("id").to_string()
}

/// How many servers named `prefix…` have `status`, following `servers_links` past the
/// server's page limit.
async fn count(admin: &meridian_common::Client, prefix: &str, status: &str) -> usize {
    let mut path = format!("/servers?status={status}&name=^{prefix}&limit=1000");
    let mut n = 0;
    loop {
        let page = admin.get("compute", &path).await.expect("list");
        let items = page["servers"].as_array().cloned().unwrap_or_default();
        n += items.len();
        let next = page["servers_links"].as_array().and_then(|l| l.iter().find(|x| x["rel"] == "next")).cloned();
        match (next, items.last()) {
            (Some(_), Some(last)) => {
                path = format!(
                    "/servers?status={status}&name=^{prefix}&limit=1000&marker={}",
                    last["id"].as_str().unwrap_or_default()
                )
            }
            _ => return n,
        }
    }
}

/// Waits until the `n` servers named `prefix…` are ACTIVE or ERROR.
async fn wait_settled(admin: &meridian_common::Client, prefix: &str, n: usize) {
    let mut last_report = Instant::now();
    loop {
        let active = count(admin, prefix, "ACTIVE").await;
        let errors = count(admin, prefix, "ERROR").await;
        if active + errors >= n {
            if errors > 0 {
                eprintln!("{errors} boots ended in ERROR");
            }
            return;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("waiting: {active} active, {errors} in error, of {n}");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Per-boot durations (ms) from the servers' own timelines.
struct Phases {
    /// POST (the first timeline entry) → active.
    total: Vec<f64>,
    /// POST → block_device_mapping: scheduling, port allocation and delivery to the agent —
    /// everything before the host starts its own work.
    control_plane: Vec<f64>,
    /// block_device_mapping → active: the agent's work (image cache, disk, domain) and its report.
    host: Vec<f64>,
    /// POST → networking: waiting for and doing the scheduling decision and the claim.
    scheduling: Vec<f64>,
    span_s: f64,
}

impl Phases {
    fn summary(&self) -> serde_json::Value {
        let pct = |v: &Vec<f64>| {
            let mut v = v.clone();
            v.sort_by(f64::total_cmp);
            json!({"p50": percentile(&v, 0.5), "p99": percentile(&v, 0.99), "max": percentile(&v, 1.0)})
        };
        json!({
            "total": pct(&self.total),
            "control_plane": pct(&self.control_plane),
            "scheduling": pct(&self.scheduling),
            "host": pct(&self.host),
        })
    }
}

async fn phases(admin: &meridian_common::Client, ids: &[String]) -> Phases {
    let mut p =
        Phases { total: Vec::new(), control_plane: Vec::new(), host: Vec::new(), scheduling: Vec::new(), span_s: 0.0 };
    let (mut first, mut last) = (f64::MAX, f64::MIN);
    for id in ids {
        let t = admin.get("compute", &format!("/servers/{id}/os-meridian-timeline")).await.expect("timeline");
        let rows = t["timeline"].as_array().cloned().unwrap_or_default();
        let at = |pred: &dyn Fn(&serde_json::Value) -> bool| {
            rows.iter().find(|r| pred(r)).and_then(|r| ts(r["at"].as_str()?))
        };
        let created = rows.first().and_then(|r| ts(r["at"].as_str()?));
        let placed = at(&|r| r["task_state"] == "networking");
        let bdm = at(&|r| r["task_state"] == "block_device_mapping");
        let active = at(&|r| r["vm_state"] == "active");
        if let (Some(c), Some(b), Some(a)) = (created, bdm, active) {
            p.total.push((a - c) * 1000.0);
            p.control_plane.push((b - c) * 1000.0);
            p.host.push((a - b) * 1000.0);
            if let Some(n) = placed {
                p.scheduling.push((n - c) * 1000.0);
            }
            first = first.min(c);
            last = last.max(a);
        }
    }
    p.span_s = last - first;
    p
}
