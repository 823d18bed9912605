//! Faults a cloud meets when it runs for months unattended: the server frozen (SIGSTOP) during a
//! build storm, its PostgreSQL restarted during one, its data directory's file system full
//! during uploads and boots. Every accepted build must end ACTIVE, or ERROR with a fault, none
//! may run twice or be lost, refusals are clear faults (never a 500), and service resumes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meridian_common::Client;
use meridian_e2e::{Agent, Server, prepare_cloud, wait_hosts_up, wait_server};
use serde_json::{Value, json};

async fn admin_client(server: &Server) -> Client {
    let mut admin = server.admin().await;
    admin.compute_version = Some("2.79".into());
    let pid = admin.session.project_id().expect("project").to_string();
    let quota = json!({"quota_set": {"instances": 1000, "cores": 1000, "ram": 10_000_000}});
    admin.put("compute", &format!("/os-quota-sets/{pid}"), &quota).await.expect("quota");
    admin
}

/// Sends a signal to a process we started.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Continues a stopped process when dropped, so a failing test never leaves the server frozen
/// (a stopped process ignores the SIGKILL of the server's own guard until continued).
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.0.to_string()).status();
    }
}

/// Fires `n` boot requests named `{prefix}NN` concurrently; returns the tasks (each yields the
/// id when the server answered 202, else the refusal's status if there was an answer) and a
/// counter of 202s so far.
fn boot_storm(
    admin: &Client,
    image: &str,
    net: &str,
    prefix: &str,
    n: usize,
) -> (Vec<tokio::task::JoinHandle<Result<String, Option<u16>>>>, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let tasks = (0..n)
        .map(|i| {
            let (admin, counter) = (admin.clone(), accepted.clone());
            let body = json!({"server": {"name": format!("{prefix}{i:02}"), "imageRef": image, "flavorRef": "42",
                "networks": [{"uuid": net}]}});
            tokio::spawn(async move {
                match admin.post("compute", "/servers", &body).await {
                    Ok(r) => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok(r["server"]["id"].as_str().expect("server id").to_string())
                    }
                    Err(e) => Err(e.status().map(|s| s.as_u16())),
                }
            })
        })
        .collect();
    (tasks, accepted)
}

/// The accepted ids and the refusals' statuses (`None`: no answer) of a storm.
async fn outcomes(tasks: Vec<tokio::task::JoinHandle<Result<String, Option<u16>>>>) -> (Vec<String>, Vec<Option<u16>>) {
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.expect("join") {
            Ok(id) => accepted.push(id),
            Err(status) => refused.push(status),
        }
    }
    (accepted, refused)
}

/// Every server named `^prefix` ends ACTIVE, or ERROR with a fault, with no task left; returns
/// the final bodies. `secs` is a hang guard per server.
async fn settle_all(admin: &Client, prefix: &str, secs: u64) -> Vec<Value> {
    let list = admin.get("compute", &format!("/servers/detail?name=^{prefix}")).await.expect("list");
    let mut out = Vec::new();
    for s in list["servers"].as_array().cloned().unwrap_or_default() {
        let id = s["id"].as_str().expect("id");
        let fin = wait_server(admin, id, &["ACTIVE", "ERROR"], secs).await;
        if fin["status"] == "ERROR" {
            assert!(fin["fault"]["message"].is_string(), "ERROR without a fault: {fin}");
        }
        assert!(fin["OS-EXT-STS:task_state"].is_null(), "{fin}");
        out.push(fin);
    }
    out
}

/// What an agent's state dir says it executed: the work ids in its work log (with how many
/// lines each has, and how many final events were `Done`), and the instances it holds on disk.
struct Executed {
    lines_per_work: HashMap<String, usize>,
    done: usize,
    instances: HashSet<String>,
}

fn executed(state_dir: &Path) -> Executed {
    let log = std::fs::read_to_string(state_dir.join("work/log.jsonl")).unwrap_or_default();
    let mut lines_per_work = HashMap::new();
    let mut done = 0;
    for line in log.lines().filter(|l| !l.is_empty()) {
        let e: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("work log line {line:?}: {e}"));
        *lines_per_work.entry(e["work_id"].as_str().expect("work_id").to_string()).or_insert(0) += 1;
        if e["event"]["type"] == "done" {
            done += 1;
        }
    }
    let instances = std::fs::read_dir(state_dir.join("instances"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join("instance.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    Executed { lines_per_work, done, instances }
}

#[tokio::test]
async fn server_stopped_for_thirty_seconds_during_fifty_builds() {
    let server = Server::start();
    let c1 = Agent::start(&server, "c1");
    let c2 = Agent::start(&server, "c2");
    let admin = admin_client(&server).await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 2).await;

    let pid = server.pid().expect("server pid");
    let (tasks, accepted_so_far) = boot_storm(&admin, &cloud.image_id, &cloud.network_id, "frozen", 50);
    while accepted_so_far.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Frozen for 30 s with builds in flight: agents keep building and reporting into a server
    // that does not answer, then it wakes to heartbeats 30 s old.
    signal(pid, "STOP");
    let thawed = Continue(pid);
    let frozen_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    drop(thawed);
    eprintln!("server continued after {:?}", frozen_at.elapsed());

    let (accepted, refused) = outcomes(tasks).await;
    assert!(refused.is_empty(), "boots refused around the freeze: {refused:?}");
    let settled_from = Instant::now();
    let fin = settle_all(&admin, "frozen", 180).await;
    eprintln!("{} accepted, {} stored; settled {:?} after the thaw", accepted.len(), fin.len(), settled_from.elapsed());
    for id in &accepted {
        assert!(fin.iter().any(|s| s["id"] == id.as_str()), "accepted server {id} was lost");
    }

    // No build ran twice: no work id finished twice on an agent, each instance is on the disk
    // of at most one host, that host is the one the API names, and the agents' successful
    // builds are exactly the ACTIVE servers.
    let (e1, e2) = (executed(&c1.state_dir), executed(&c2.state_dir));
    for (name, e) in [("c1", &e1), ("c2", &e2)] {
        let repeated: Vec<_> = e.lines_per_work.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "{name} finished work twice: {repeated:?}");
    }
    let both: Vec<_> = e1.instances.intersection(&e2.instances).collect();
    assert!(both.is_empty(), "built on both hosts: {both:?}");
    let active: Vec<&Value> = fin.iter().filter(|s| s["status"] == "ACTIVE").collect();
    for s in &active {
        let id = s["id"].as_str().expect("id");
        let holder = if e1.instances.contains(id) {
            "c1"
        } else if e2.instances.contains(id) {
            "c2"
        } else {
            "none"
        };
        assert_eq!(s["OS-EXT-SRV-ATTR:host"], holder, "ACTIVE server {id} is not on its host's disk");
    }
    for s in fin.iter().filter(|s| s["status"] == "ERROR") {
        let id = s["id"].as_str().expect("id");
        assert!(!e1.instances.contains(id) && !e2.instances.contains(id), "ERROR server {id} left a build on disk");
    }
    assert_eq!(e1.done + e2.done, active.len(), "successful builds on the agents vs ACTIVE servers");
    assert_eq!(fin.len(), 50, "every request reached the server: {}", fin.len());
    assert!(!active.is_empty(), "some builds must have succeeded");
}
