//! Benchmark of security-group enforcement end to end (figures, not a test): the real server,
//! the real agent enforcing with nftables from the port-filter feed, one real QEMU guest of the
//! guest image (busybox httpd on 8080) on `qemu:///system`. `BENCH_CHANGES` (default 100) rule
//! changes through the Neutron API, alternately adding and deleting an ingress rule for tcp/8080
//! from the host's address (the subnet's gateway) in the guest's default group, each timed from
//! the API call's return:
//!
//! - add → the first of the host's TCP connects to the guest's 8080 (a fresh one every 20 ms)
//!   that completes;
//! - delete → the start of the first connect that is not answered within 500 ms and after which
//!   none is: a dropped SYN never fails by itself, so the moment the port stopped admitting new
//!   connections is when the first unanswered SYN left.
//!
//! Run (debug build; say so with the figures): `cargo build -p meridian-server -p meridian-agent
//! && cargo build -p meridian-e2e --bin bench-sg-enforce && target/debug/bench-sg-enforce`.
//! Needs root, qemu:///system (scripts/libvirt.sh) and nft.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_e2e::vm::{self, LibvirtGuard, READY};
use meridian_e2e::{Agent, Server, reach, wait_hosts_up, wait_server};
use serde_json::json;

/// How long one change may take before the run stops (a hang guard; none should come close).
const LIMIT: Duration = Duration::from_secs(30);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what:<32} n={:<4} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main]
async fn main() {
    let changes: usize = std::env::var("BENCH_CHANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    assert!(vm::enabled("bench-sg-enforce"), "the benchmark needs qemu:///system");
    let image = vm::image_dir();
    // Dropped last: the domain and network go after the agent (which removes its nft tables).
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let agent = Agent::start_opts(&server, &format!("bench-sg-{}", std::process::id()), vm::URI, &[]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let f = json!({"flavor": {"name": "bench", "ram": 256, "vcpus": 1, "disk": 1}});
    let flavor =
        admin.post("compute", "/flavors", &f).await.expect("flavor")["flavor"]["id"].as_str().expect("id").to_string();
    let image_id = vm::upload_image(&admin, "guest", &image.join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, subnet_id) = vm::network(&admin, "benchnet", &vm::private_subnet(5)).await;
    guard.network(&format!("meridian-{net_id}"));
    let gw = vm::gateway(&admin, &subnet_id).await;
    let group = vm::default_group(&admin).await;

    let body = json!({"server": {"name": "sg-bench", "imageRef": image_id, "flavorRef": flavor,
        "networks": [{"uuid": net_id}], "security_groups": [{"name": "default"}]}});
    let id =
        admin.post("compute", "/servers", &body).await.expect("boot")["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], 180).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    let log = vm::wait_console(&admin, &id, 180, |c| c.contains(READY)).await;
    let ip = vm::banner_field(&log, "ip").expect("the guest's address");
    let addr: SocketAddr = format!("{ip}:8080").parse().expect("address");

    // The default group alone keeps the host out; the first add also waits for httpd, so it is
    // a warm-up, not a sample.
    assert!(!reach::connects(addr, Duration::from_secs(1)).await, "the host reaches the guest without a rule");
    let remote = format!("{gw}/32");
    let warm = vm::allow_ingress(&admin, &group, "tcp", Some(8080), &remote).await;
    assert!(reach::opened(addr, Instant::now(), Duration::from_secs(120)).await.is_some(), "httpd never answered");
    admin.delete("network", &format!("/v2.0/security-group-rules/{warm}")).await.expect("delete rule");
    let quiet = Duration::from_secs(1);
    assert!(reach::closed(addr, Instant::now(), LIMIT, quiet).await.is_some(), "the warm-up rule never closed");

    let (mut adds, mut deletes) = (Vec::new(), Vec::new());
    let mut rule = None;
    for i in 0..changes {
        match rule.take() {
            None => {
                let r = vm::allow_ingress(&admin, &group, "tcp", Some(8080), &remote).await;
                let t = reach::opened(addr, Instant::now(), LIMIT).await;
                let t = t.unwrap_or_else(|| panic!("change {i}: not open within {LIMIT:?}"));
                adds.push(t.as_secs_f64() * 1e3);
                rule = Some(r);
            }
            Some(r) => {
                admin.delete("network", &format!("/v2.0/security-group-rules/{r}")).await.expect("delete rule");
                let t = reach::closed(addr, Instant::now(), LIMIT, quiet).await;
                let t = t.unwrap_or_else(|| panic!("change {i}: still open after {LIMIT:?}"));
                deletes.push(t.as_secs_f64() * 1e3);
            }
        }
    }
    println!("bench-sg-enforce: {changes} rule changes through the Neutron API, one TCG guest (debug build)");
    report("add → host's connect through", adds);
    report("delete → host's connects refused", deletes);
    let errors = agent.log_text().lines().filter(|l| l.contains("ERROR")).count();
    println!("agent log lines with ERROR: {errors}");
}
