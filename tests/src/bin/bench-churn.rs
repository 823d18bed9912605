//! Benchmark of bounded storage (figures, not a test): simulated hosts (real agents on libvirt's
//! `test:///default`, as bench-compute runs them) and workers that boot a server, wait for it to
//! be ACTIVE, delete it and wait for it to be gone, over and over; every `--console-every`th
//! cycle also asks for the console output. The server runs with a short retention window (real
//! time, `--retention`, default 60 s) and purges every 5 s. Every 2 s the SQLite files (database
//! + WAL) and the server's RSS are sampled: both should stop growing once the window has passed.
//!
//! Run: `cargo build --release -p meridian-server -p meridian-agent -p meridian-e2e --bin bench-churn &&
//! target/release/bench-churn [--cycles 100000] [--seconds 480] [--hosts 10] [--concurrency 16]
//! [--retention 60] [--console-every 10]`. It stops at `--cycles` or after `--seconds`,
//! whichever comes first, then keeps sampling for one more window; `BENCH_DATABASE_URL` runs it
//! on PostgreSQL instead (the file sizes are then the SQLite-only figures and read 0).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_e2e::{Agent, Server, prepare_cloud, wait_hosts_up};
use serde_json::{Value, json};

/// `--name value` from the command line, or the default.
fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("--{name}: not a number: {v}")))
        .unwrap_or(default)
}

/// The server's SQLite files (database + WAL + shared memory index), in bytes.
fn db_bytes(dir: &Path) -> u64 {
    ["meridian.db", "meridian.db-wal", "meridian.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Resident memory of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

#[derive(Clone, Copy)]
struct Sample {
    at_s: f64,
    cycles: u64,
    db: u64,
    rss: u64,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let max_cycles = arg("cycles", 100_000);
    let seconds = arg("seconds", 480);
    let hosts = arg("hosts", 10) as usize;
    let concurrency = arg("concurrency", 16) as usize;
    let retention = arg("retention", 60);
    let console_every = arg("console-every", 10).max(1);
    let interval = 5;

    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = conf_dir.path().join("meridian.toml");
    std::fs::write(&conf, format!("[retention]\ndeleted_instances_secs = {retention}\ninterval_secs = {interval}\n"))
        .expect("config file");
    let conf = conf.display().to_string();
    let server = Server::start_opts(
        std::env::var("BENCH_DATABASE_URL").ok(),
        &["--host-down-after", "60", "--config", conf.as_str()],
    );
    let agents: Vec<Agent> = (0..hosts).map(|i| Agent::start(&server, &format!("churn{i:03}"))).collect();
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
    wait_hosts_up(&admin, hosts).await;
    let admin = Arc::new(admin);
    let server_pid = server.pid().expect("server pid");
    let data_dir = server.data_dir.clone();

    let cycles = Arc::new(AtomicU64::new(0));
    let consoles = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(seconds);

    // Sampler: every 2 s until told to stop.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sampler = {
        let (cycles, data_dir) = (cycles.clone(), data_dir.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_rx.changed() => break,
                }
                let s = Sample {
                    at_s: started.elapsed().as_secs_f64(),
                    cycles: cycles.load(Ordering::Relaxed),
                    db: db_bytes(&data_dir),
                    rss: rss_bytes(server_pid),
                };
                if samples.len() % 15 == 0 {
                    eprintln!(
                        "t={:>4.0}s cycles={:>6} db+wal={:>7.1} MiB rss={:>6.1} MiB",
                        s.at_s,
                        s.cycles,
                        mib(s.db),
                        mib(s.rss)
                    );
                }
                samples.push(s);
            }
            samples
        })
    };

    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (admin, image, net) = (admin.clone(), cloud.image_id.clone(), cloud.network_id.clone());
        let (cycles, consoles, errors) = (cycles.clone(), consoles.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop_at && cycles.load(Ordering::Relaxed) < max_cycles {
                let with_console = cycles.load(Ordering::Relaxed) % console_every == 0;
                match cycle(&admin, &format!("c{w:02}-{n:06}"), &image, &net, with_console).await {
                    Ok(console) => {
                        cycles.fetch_add(1, Ordering::Relaxed);
                        if console {
                            consoles.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("cycle failed: {e}");
                        }
                    }
                }
                n += 1;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let churn_s = started.elapsed().as_secs_f64();
    let done = cycles.load(Ordering::Relaxed);
    eprintln!("{done} cycles in {churn_s:.0} s; sampling one more window ({} s)", retention + 2 * interval);
    // One more window with nothing happening: what the purge leaves behind.
    tokio::time::sleep(Duration::from_secs(retention + 2 * interval)).await;
    let _ = stop_tx.send(true);
    let samples = sampler.await.expect("sampler");

    let rows = count_rows(&server).await;
    let first = samples.first().copied().unwrap_or(Sample { at_s: 0.0, cycles: 0, db: 0, rss: 0 });
    let last = samples.last().copied().unwrap_or(first);
    // "After the window": samples from the end of the first window plus a purge interval, up
    // to the end of the churn.
    let settled_from = (retention + 2 * interval) as f64;
    let in_churn_after_window: Vec<&Sample> =
        samples.iter().filter(|s| s.at_s >= settled_from && s.at_s <= churn_s).collect();
    let first_after = in_churn_after_window.first().map(|s| **s).unwrap_or(last);
    let peak = |f: fn(&Sample) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let peak_after = |f: fn(&Sample) -> u64| in_churn_after_window.iter().map(|s| f(s)).max().unwrap_or(0);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "hosts": hosts,
            "concurrency": concurrency,
            "retention_window_s_real_time": retention,
            "purge_interval_s": interval,
            "cycles_asked": max_cycles,
            "cycles_done": done,
            "consoles_read": consoles.load(Ordering::Relaxed),
            "failed_cycles": errors.load(Ordering::Relaxed),
            "churn_s": churn_s,
            "cycles_per_s": done as f64 / churn_s,
            "db_plus_wal_mib": {
                "start": mib(first.db),
                "at_first_window_end": mib(first_after.db),
                "peak_after_first_window": mib(peak_after(|s| s.db)),
                "peak": mib(peak(|s| s.db)),
                "end": mib(last.db),
            },
            "server_rss_mib": {
                "start": mib(first.rss),
                "at_first_window_end": mib(first_after.rss),
                "peak_after_first_window": mib(peak_after(|s| s.rss)),
                "peak": mib(peak(|s| s.rss)),
                "end": mib(last.rss),
            },
            "rows_at_end": rows,
        }))
        .expect("json")
    );
    drop(agents);
}

/// Boot, wait ACTIVE, maybe read the console, delete, wait gone. Returns whether the console
/// was read.
async fn cycle(
    admin: &meridian_common::Client,
    name: &str,
    image: &str,
    net: &str,
    console: bool,
) -> Result<bool, String> {
    let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": "42", "networks": [{"uuid": net}]}});
    let created = admin.post("compute", "/servers", &body).await.map_err(|e| format!("boot: {e}"))?;
    let id = created["server"]["id"].as_str().ok_or("no id")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = admin.get("compute", &format!("/servers/{id}")).await.map_err(|e| format!("get: {e}"))?;
        match s["server"]["status"].as_str() {
            Some("ACTIVE") => break,
            Some("ERROR") => {
                let _ = admin.delete("compute", &format!("/servers/{id}")).await;
                return Err(format!("{id} went to ERROR: {}", s["server"]["fault"]));
            }
            _ if Instant::now() > deadline => return Err(format!("{id} not ACTIVE in 120 s")),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    if console {
        let out = admin
            .post("compute", &format!("/servers/{id}/action"), &json!({"os-getConsoleOutput": {"length": 50}}))
            .await
            .map_err(|e| format!("console: {e}"))?;
        if !out["output"].is_string() {
            return Err(format!("console of {id}: {out}"));
        }
    }
    admin.delete("compute", &format!("/servers/{id}")).await.map_err(|e| format!("delete: {e}"))?;
    loop {
        match admin.get("compute", &format!("/servers/{id}")).await {
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) => return Ok(console),
            _ if Instant::now() > deadline => return Err(format!("{id} not gone in 120 s")),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Rows left in the tables the purge bounds (SQLite only: read beside the running server).
async fn count_rows(server: &Server) -> Value {
    use sqlx::Connection;
    if server.database_url.is_some() {
        return Value::Null;
    }
    let url = format!("sqlite://{}?mode=ro", server.data_dir.join("meridian.db").display());
    let Ok(mut conn) = sqlx::SqliteConnection::connect(&url).await else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for table in ["instances", "instance_transitions", "instance_actions", "instance_action_events", "work", "tokens"] {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut conn).await.unwrap_or(-1);
        out.insert(table.to_string(), json!(n));
    }
    let console_bytes: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(LENGTH(result)), 0) FROM work")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(-1);
    out.insert("work_result_bytes".into(), json!(console_bytes));
    Value::Object(out)
}
