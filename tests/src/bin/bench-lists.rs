//! Benchmark of list endpoints at scale (figures, not a test): 10,000 live instances on SQLite,
//! then `GET /servers/detail?limit=1000` repeated against the real server process: latency
//! p50/p99, and the statements one such request runs (counted in-process by the store, on the
//! same database file).
//!
//! The instances, one host, their ports and addresses are written straight into the server's
//! SQLite database while it is stopped (one transaction), not booted: the bench measures
//! reading them, and 10,000 boots would take the machine for minutes.
//!
//! Run: `cargo build --release -p meridian-e2e --bin bench-lists -p meridian-server &&
//! target/release/bench-lists` (`BENCH_INSTANCES`, `BENCH_PAGE`, `BENCH_REQUESTS` change the
//! defaults 10000 / 1000 / 200).

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use meridian_e2e::{ADMIN_PASSWORD, Server, prepare_cloud};
use sqlx::{Connection, Executor, SqliteConnection};
use tower::ServiceExt;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// utime + stime of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// The kernel's clock tick rate for `/proc` times.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// Writes `n` active instances of the admin project on one host, each with a port and an
/// address on the cloud's network, in one transaction.
async fn seed(db: &std::path::Path, network_id: &str, n: usize) {
    let mut c = SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.expect("open database");
    let project: String =
        sqlx::query_scalar("SELECT id FROM projects WHERE name = 'admin'").fetch_one(&mut c).await.expect("project");
    let user: String =
        sqlx::query_scalar("SELECT id FROM users WHERE name = 'admin'").fetch_one(&mut c).await.expect("user");
    let subnet: String = sqlx::query_scalar("SELECT id FROM subnets WHERE network_id = $1")
        .bind(network_id)
        .fetch_one(&mut c)
        .await
        .expect("subnet");
    let image: String = sqlx::query_scalar("SELECT id FROM images LIMIT 1").fetch_one(&mut c).await.expect("image");
    let now = |k: usize| format!("2026-01-01T00:{:02}:{:02}.{:06}Z", (k / 60) % 60, k % 60, k);
    let mut tx = c.begin().await.expect("begin");
    let host = "00000000-0000-4000-8000-0000000000aa";
    sqlx::query(
        "INSERT INTO hosts (id, num, name, hypervisor_type, cpu_arch, libvirt_uri, host_ip, vcpus, memory_mb, disk_gb, \
         last_heartbeat, created_at, updated_at) VALUES ($1, 1, 'bench-host', 'QEMU', 'x86_64', 'test:///default', \
         '127.0.0.1', 1024, 1048576, 100000, $2, $2, $2)",
    )
    .bind(host)
    .bind(now(0))
    .execute(&mut *tx)
    .await
    .expect("host");
    let flavor = r#"{"id":"1","name":"m1.tiny","vcpus":1,"ram":512,"disk":1,"ephemeral":0,"swap":0,"extra_specs":{}}"#;
    for k in 0..n {
        let id = format!("00000000-0000-4000-8000-{k:012}");
        let port = format!("00000000-0000-4000-9000-{k:012}");
        let ts = now(k);
        sqlx::query(
            "INSERT INTO instances (id, name, hostname, project_id, user_id, flavor_id, flavor, image_id, metadata, \
             reservation_id, host_id, vm_state, power_state, created_at, updated_at, launched_at) \
             VALUES ($1, $2, $2, $3, $4, '1', $5, $6, '{\"k\": \"v\"}', $7, $8, 'active', 1, $9, $9, $9)",
        )
        .bind(&id)
        .bind(format!("bench-{k}"))
        .bind(&project)
        .bind(&user)
        .bind(flavor)
        .bind(&image)
        .bind(format!("r-{k}"))
        .bind(host)
        .bind(&ts)
        .execute(&mut *tx)
        .await
        .expect("instance");
        let k32 = u32::try_from(k).expect("k");
        let mac = format!("fa:16:3e:{:02x}:{:02x}:{:02x}", (k32 >> 16) & 0xff, (k32 >> 8) & 0xff, k32 & 0xff);
        sqlx::query(
            "INSERT INTO ports (id, network_id, project_id, mac_address, status, device_id, device_owner, host_id, \
             vif_type, created_at, updated_at) VALUES ($1, $2, $3, $4, 'ACTIVE', $5, 'compute:nova', 'bench-host', \
             'ovs', $6, $6)",
        )
        .bind(&port)
        .bind(network_id)
        .bind(&project)
        .bind(&mac)
        .bind(&id)
        .bind(&ts)
        .execute(&mut *tx)
        .await
        .expect("port");
        // 10.77.0.0/16: from .0.10 on, clear of the gateway.
        let ip = (10u32 << 24) | (77 << 16) | (10 + k32);
        let addr = std::net::Ipv4Addr::from(ip);
        sqlx::query(
            "INSERT INTO ip_allocations (subnet_id, ip_address, ip_key, port_id, network_id) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&subnet)
        .bind(addr.to_string())
        .bind(format!("{:032x}", u128::from(ip)))
        .bind(&port)
        .bind(network_id)
        .execute(&mut *tx)
        .await
        .expect("address");
    }
    tx.commit().await.expect("commit");
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)").await.expect("checkpoint");
}

/// Statements the store runs for one `GET path` as the admin, in-process on the same database.
async fn statements_per_request(data_dir: &std::path::Path, path: &str) -> u64 {
    use meridian_server::config::CommonArgs;
    let args = CommonArgs {
        data_dir: Some(data_dir.to_path_buf()),
        admin_password: Some(ADMIN_PASSWORD.into()),
        public_url: Some("http://bench".into()),
        ..Default::default()
    };
    let cfg = args.resolve().expect("config");
    let store = meridian_server::store::Store::open(&cfg.database_url).await.expect("store");
    let state = meridian_server::state::AppState::new(store.clone(), cfg);
    let auth = serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin",
        "domain": {"id": "default"}, "password": ADMIN_PASSWORD}}}, "scope": {"project": {"name": "admin",
        "domain": {"id": "default"}}}}});
    let req = Request::post("/identity/v3/auth/tokens")
        .header("content-type", "application/json")
        .body(Body::from(auth.to_string()))
        .expect("request");
    let resp = meridian_server::app(state.clone()).oneshot(req).await.expect("token");
    let token = resp.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).expect("token").to_string();
    let get = || Request::get(path).header("x-auth-token", token.as_str()).body(Body::empty()).expect("request");
    // Once to cache the token, then measured.
    let resp = meridian_server::app(state.clone()).oneshot(get()).await.expect("list");
    assert!(resp.status().is_success(), "{}", resp.status());
    let before = store.statements();
    let resp = meridian_server::app(state.clone()).oneshot(get()).await.expect("list");
    let _ = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    let n = store.statements() - before;
    store.close().await;
    n
}

#[tokio::main]
async fn main() {
    let instances = env("BENCH_INSTANCES", 10_000);
    let page = env("BENCH_PAGE", 1000);
    let requests = env("BENCH_REQUESTS", 200);
    let mut server = Server::start();
    let admin = server.admin().await;
    let cloud = prepare_cloud(&admin).await;
    server.terminate();
    let db = server.data_dir.join("meridian.db");
    let t = Instant::now();
    seed(&db, &cloud.network_id, instances).await;
    println!("seeded {instances} instances (ports, addresses) by SQL in {:.1} s", t.elapsed().as_secs_f64());
    server.restart();
    let admin = server.admin().await;
    let path = format!("/servers/detail?limit={page}");
    let first = admin.get("compute", &path).await.expect("list");
    let n = first["servers"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(n, page.min(instances), "page size");
    assert!(first["servers"][0]["addresses"]["net"][0]["addr"].is_string(), "addresses shown");
    // Two figures per request: the response, read to its last byte (what the server costs a
    // client), and that plus decoding 1000 servers into `serde_json::Value` (what our own
    // client adds); and the server's CPU time over the whole run, divided per request, which
    // does not depend on what else the machine is doing.
    let cpu_before = server.pid().map(cpu_ticks).unwrap_or(0);
    let (mut ms, mut parsed_ms) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    for _ in 0..requests {
        let t = Instant::now();
        let resp = admin.request(reqwest::Method::GET, "compute", &path).expect("url").send().await.expect("list");
        assert!(resp.status().is_success(), "{}", resp.status());
        let bytes = resp.bytes().await.expect("body");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let r: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        parsed_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r["servers"].as_array().map(Vec::len), Some(n));
    }
    let cpu_ticks_used = server.pid().map(cpu_ticks).unwrap_or(0).saturating_sub(cpu_before);
    ms.sort_by(|a, b| a.total_cmp(b));
    parsed_ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "GET {path} over {instances} instances, {requests} requests: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         (full body received); with the client decoding it: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN),
        percentile(&parsed_ms, 0.5),
        percentile(&parsed_ms, 0.99),
    );
    println!(
        "server CPU time per request: {:.1} ms",
        cpu_ticks_used as f64 * 1000.0 / clock_ticks_per_second() / requests as f64
    );
    server.terminate();
    for p in [format!("/compute/v2.1{path}"), "/compute/v2.1/servers/detail?limit=1".to_string()] {
        println!("statements for GET {p}: {}", statements_per_request(&server.data_dir, &p).await);
    }
}
