//! Benchmark of the abuse limits (figures, not a test): an attacker sends 1,000 wrong-password
//! logins per second against one user from one address for 30 s, while legitimate users log in
//! from their own addresses at a human pace. Reports the legitimate logins' success rate and
//! latency (p50/p99), the attacker's answers by status (401/429/503), and the server's peak RSS.
//!
//! Run: `cargo build --release -p meridian-server -p meridian-e2e && target/release/bench-logins`
//! (`BENCH_SECS` changes the duration, default 30; `BENCH_ATTACK_RATE` the attack's requests
//! per second, default 1000; `BENCH_LOCKOUT` the lockout_failure_attempts, default 5, 0 = off).
//! Addresses are 127.0.0.2 (attacker) and 127.0.0.10+ (users): Linux routes all of 127/8 to lo.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_e2e::Server;
use serde_json::{Value, json};

const USERS: u8 = 8;
/// Each legitimate user logs in this often (a person or a script, not a flood).
const USER_INTERVAL: Duration = Duration::from_millis(250);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn client_from(addr: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(addr))
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

fn password_auth(user: &str, password: &str) -> Value {
    json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}}}})
}

async fn admin_post(http: &reqwest::Client, url: &str, token: &str, body: Value) -> Value {
    let r = http.post(url).header("x-auth-token", token).json(&body).send().await.expect("request");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

#[tokio::main]
async fn main() {
    let secs = env_u64("BENCH_SECS", 30);
    let attack_rate = env_u64("BENCH_ATTACK_RATE", 1000).max(1);
    let lockout = env_u64("BENCH_LOCKOUT", 5);
    let lockout_flag = lockout.to_string();
    let extra: Vec<&str> = if lockout > 0 {
        vec!["--lockout-failure-attempts", &lockout_flag, "--lockout-duration", "600"]
    } else {
        vec![]
    };
    let server = Server::start_opts(None, &extra);
    let pid = server.pid().expect("pid");
    let base = server.url.clone();
    let tokens_url = format!("{base}/identity/v3/auth/tokens");

    // Setup: the victim and the legitimate users, members of one project.
    let admin = server.admin().await;
    let http = admin.http().clone();
    let token = admin.session.token.clone();
    let project =
        admin_post(&http, &format!("{base}/identity/v3/projects"), &token, json!({"project": {"name": "bench"}})).await
            ["project"]["id"]
            .as_str()
            .expect("project id")
            .to_string();
    let roles: Value = http
        .get(format!("{base}/identity/v3/roles?name=member"))
        .header("x-auth-token", &token)
        .send()
        .await
        .expect("roles")
        .json()
        .await
        .expect("roles json");
    let member = roles["roles"][0]["id"].as_str().expect("member role").to_string();
    for i in 0..=USERS {
        let name = if i == 0 { "victim".to_string() } else { format!("user{i}") };
        let user = admin_post(
            &http,
            &format!("{base}/identity/v3/users"),
            &token,
            json!({"user": {"name": name, "password": format!("{name}-pw"), "default_project_id": project}}),
        )
        .await;
        let uid = user["user"]["id"].as_str().expect("user id");
        let r = http
            .put(format!("{base}/identity/v3/projects/{project}/users/{uid}/roles/{member}"))
            .header("x-auth-token", &token)
            .send()
            .await
            .expect("grant");
        assert!(r.status().is_success(), "grant: {}", r.status());
    }

    let deadline = Instant::now() + Duration::from_secs(secs);

    // The attacker: `attack_rate` requests per second, each in its own task (an attacker does not
    // wait for answers), at most 2,000 in flight.
    let attack_counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let attacker = {
        let (counts, url) = (attack_counts.clone(), tokens_url.clone());
        tokio::spawn(async move {
            let http = client_from(Ipv4Addr::new(127, 0, 0, 2));
            let in_flight = Arc::new(tokio::sync::Semaphore::new(2000));
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / attack_rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let body = password_auth("victim", "guess");
            let mut tasks = tokio::task::JoinSet::new();
            while Instant::now() < deadline {
                tick.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    *counts.lock().expect("counts").entry("not sent (2000 in flight)".into()).or_default() += 1;
                    continue;
                };
                let (http, url, body, counts) = (http.clone(), url.clone(), body.clone(), counts.clone());
                tasks.spawn(async move {
                    let key = match http.post(&url).json(&body).send().await {
                        Ok(r) => r.status().as_u16().to_string(),
                        Err(e) if e.is_timeout() => "timeout".into(),
                        Err(_) => "connection error".into(),
                    };
                    *counts.lock().expect("counts").entry(key).or_default() += 1;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    // The legitimate users, each from its own address.
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let user_counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut users = Vec::new();
    for i in 1..=USERS {
        let (lat, counts, url) = (latencies.clone(), user_counts.clone(), tokens_url.clone());
        users.push(tokio::spawn(async move {
            let http = client_from(Ipv4Addr::new(127, 0, 0, 9 + i));
            let name = format!("user{i}");
            let body = password_auth(&name, &format!("{name}-pw"));
            let mut tick = tokio::time::interval(USER_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while Instant::now() < deadline {
                tick.tick().await;
                let t = Instant::now();
                let key = match http.post(&url).json(&body).send().await {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(_) => "error".into(),
                };
                if key == "201" {
                    lat.lock().expect("latencies").push(t.elapsed().as_secs_f64() * 1000.0);
                }
                *counts.lock().expect("counts").entry(key).or_default() += 1;
            }
        }));
    }

    // Peak RSS, sampled while the load runs (VmHWM is the kernel's own high-water mark).
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for u in users {
        u.await.expect("user task");
    }
    attacker.await.expect("attacker task");
    let peak_kb = peak_rss_kb(pid);

    let mut lat = latencies.lock().expect("latencies").clone();
    lat.sort_by(f64::total_cmp);
    let user_counts = user_counts.lock().expect("counts").clone();
    let attempts: u64 = user_counts.values().sum();
    let ok = user_counts.get("201").copied().unwrap_or(0);
    let attack = attack_counts.lock().expect("counts").clone();
    let attack_total: u64 = attack.values().sum();

    println!("bench-logins: {secs} s, attack {attack_rate}/s from 127.0.0.2 against one user, lockout {lockout}");
    println!(
        "  legitimate logins ({USERS} users, one every {} ms each, own addresses): {ok}/{attempts} succeeded ({:.2} %), \
         p50 {:.1} ms, p99 {:.1} ms; answers {user_counts:?}",
        USER_INTERVAL.as_millis(),
        100.0 * ok as f64 / attempts.max(1) as f64,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
    );
    println!("  attacker: {attack_total} requests ({:.0}/s): {attack:?}", attack_total as f64 / secs as f64);
    println!("  server peak RSS (VmHWM): {:.1} MB", peak_kb as f64 / 1024.0);
}
