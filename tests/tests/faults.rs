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
use meridian_e2e::{Agent, Server, prepare_cloud, upload_image_data, wait_hosts_up, wait_server};
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

/// One boot request in flight: the server's id once accepted, else the refusal's status.
type Boot = tokio::task::JoinHandle<Result<String, Option<u16>>>;

/// Fires `n` boot requests named `{prefix}NN` concurrently; returns the tasks (each yields the
/// id when the server answered 202, else the refusal's status if there was an answer) and a
/// counter of 202s so far.
fn boot_storm(admin: &Client, image: &str, net: &str, prefix: &str, n: usize) -> (Vec<Boot>, Arc<AtomicUsize>) {
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
async fn outcomes(tasks: Vec<Boot>) -> (Vec<String>, Vec<Option<u16>>) {
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
    let logs = [("server", server.log_text()), ("c1", c1.log_text()), ("c2", c2.log_text())];
    for s in fin.iter().filter(|s| s["status"] == "ERROR") {
        let id = s["id"].as_str().expect("id");
        assert!(
            !e1.instances.contains(id) && !e2.instances.contains(id),
            "ERROR server {id} left a build on disk: {}{}",
            s["fault"],
            trail(id, &logs)
        );
    }
    assert_eq!(e1.done + e2.done, active.len(), "successful builds on the agents vs ACTIVE servers");
    assert_eq!(fin.len(), 50, "every request reached the server: {}", fin.len());
    assert!(!active.is_empty(), "some builds must have succeeded");
}

/// Every line of these logs that names `id`: what a failed check prints, so a failure in CI
/// says what happened to that server without a rerun.
fn trail(id: &str, logs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (name, text) in logs {
        for line in text.lines().filter(|l| l.contains(id)) {
            out.push_str(&format!("\n  [{name}] {line}"));
        }
    }
    out
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A private PostgreSQL cluster for one test (the machine's shared one is never touched),
/// stopped when dropped. Run as `postgres` when we are root (initdb refuses root).
struct PgCluster {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    fn start() -> PgCluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if as_postgres {
            let ok = Command::new("chown").arg("-R").arg("postgres:postgres").arg(dir.path()).status();
            assert!(ok.is_ok_and(|s| s.success()), "chown the cluster dir to postgres");
        }
        let pg = PgCluster { dir, bin, port: free_port(), as_postgres };
        let data = pg.data();
        pg.run("initdb", &["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        pg.start_again();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.command(tool).args(args).output().unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=60 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
    }

    /// `pg_ctl stop -m fast`: every session terminated, as a restart by an operator does.
    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.command("pg_ctl").args(["-D", &self.data(), "-m", "immediate", "-w", "stop"]).output();
    }
}

#[tokio::test]
async fn postgres_restarted_during_a_build_storm() {
    let pg = PgCluster::start();
    let server = Server::start_with(Some(pg.url()));
    let _c1 = Agent::start(&server, "c1");
    let _c2 = Agent::start(&server, "c2");
    let admin = admin_client(&server).await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 2).await;

    let (tasks, accepted_so_far) = boot_storm(&admin, &cloud.image_id, &cloud.network_id, "pgstorm", 30);
    while accepted_so_far.load(Ordering::SeqCst) < 8 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let down_at = Instant::now();
    pg.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_again();
    eprintln!("PostgreSQL was down for {:?}", down_at.elapsed());
    let (accepted, refused) = outcomes(tasks).await;

    // The server reconnects: reads and writes succeed again without a restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = admin.get("compute", "/flavors").await;
        let write = admin
            .post(
                "compute",
                "/os-keypairs",
                &json!({"keypair": {"name": format!("after-{}", deadline.elapsed().as_nanos())}}),
            )
            .await;
        match (read, write) {
            (Ok(_), Ok(_)) => break,
            (r, w) if Instant::now() > deadline => panic!("no reconnection: read {:?}, write {:?}", r.err(), w.err()),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let reconnected = down_at.elapsed();
    // Refused boots were told to come back (503), never a 500.
    assert!(refused.iter().all(|s| *s == Some(503)), "refusals during the restart: {refused:?}");

    let fin = settle_all(&admin, "pgstorm", 180).await;
    for id in &accepted {
        assert!(fin.iter().any(|s| s["id"] == id.as_str()), "accepted server {id} was lost");
    }
    // The hosts have room for every boot: a build that failed did so because of the restart.
    let failed: Vec<&Value> = fin.iter().filter(|s| s["status"] != "ACTIVE").collect();
    assert!(failed.is_empty(), "builds failed by the restart: {failed:?}");
    let active = fin.len();
    eprintln!(
        "{} accepted, {} refused ({refused:?}), {} stored, {active} ACTIVE; reconnected {reconnected:?} after the stop",
        accepted.len(),
        refused.len(),
        fin.len()
    );
    // A boot after the restart works end to end.
    let body = json!({"server": {"name": "after-restart", "imageRef": cloud.image_id, "flavorRef": "42",
        "networks": [{"uuid": cloud.network_id}]}});
    let r = admin.post("compute", "/servers", &body).await.expect("boot after the restart");
    let id = r["server"]["id"].as_str().expect("id");
    assert_eq!(wait_server(&admin, id, &["ACTIVE", "ERROR"], 120).await["status"], "ACTIVE");
}

/// A tmpfs of `size_mb` MiB mounted on a fresh directory, unmounted when dropped (declare it
/// before anything using it, so it is dropped after them).
struct Tmpfs {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mb: u32) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fs");
        std::fs::create_dir(&path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }

    /// Grows a filler file until the file system is full; returns the filler's size.
    fn fill(&self) -> u64 {
        use std::io::Write as _;
        let path = self.path.join("filler");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("filler");
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut size = f.metadata().expect("filler size").len();
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => size += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the file system: {e}"),
            }
        }
        // Byte by byte into the last partial page, so not even a page is left.
        while f.write(&[0u8]).is_ok_and(|n| n == 1) {
            size += 1;
        }
        size
    }

    /// Gives `bytes` back (the filler shrinks by that much).
    fn release(&self, bytes: u64) {
        let f = std::fs::OpenOptions::new().write(true).open(self.path.join("filler")).expect("filler");
        let len = f.metadata().expect("filler size").len();
        f.set_len(len.saturating_sub(bytes)).expect("shrink the filler");
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).expect("remove the filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(&self.path).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Sends `body` and returns the status and the JSON body, success or not.
async fn raw(admin: &Client, method: reqwest::Method, service: &str, path: &str, body: Value) -> (u16, Value) {
    let resp = admin
        .request(method, service, path)
        .expect("url")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Sends `body(i)` until the first answer that is not a success (at most 100 tries); returns it.
async fn refusal_of(
    admin: &Client,
    method: reqwest::Method,
    service: &str,
    path: &str,
    body: impl Fn(usize) -> Value,
) -> (u16, Value) {
    for i in 0..100 {
        let (status, reply) = raw(admin, method.clone(), service, path, body(i)).await;
        if !(200..300).contains(&status) {
            return (status, reply);
        }
    }
    panic!("{service} {path} never ran out of space");
}

#[tokio::test]
async fn data_directory_full_during_uploads_and_boots() {
    let fs = Tmpfs::mount(64);
    let data_dir = fs.path.join("data");
    let mut server = Server::start_in(&data_dir, None, &[]);
    let _c1 = Agent::start(&server, "c1");
    let admin = admin_client(&server).await;
    let cloud = prepare_cloud(&admin).await;
    wait_hosts_up(&admin, 1).await;
    let created = admin
        .post("image", "/v2/images", &json!({"name": "big", "disk_format": "raw", "container_format": "bare"}))
        .await
        .expect("image");
    let big = created["id"].as_str().expect("id").to_string();
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();

    let started = Instant::now();
    let filled = fs.fill();
    eprintln!("filler: {filled} bytes");

    // An 8 MiB upload with 2 MiB left runs out of space part-way. Glance's answer: 413 "Image
    // storage media is full" (as glance maps StorageFull); the image back to queued, the
    // partial file gone.
    fs.release(2 << 20);
    let resp = admin
        .request(reqwest::Method::PUT, "image", &format!("/v2/images/{big}/file"))
        .expect("url")
        .header("content-type", "application/octet-stream")
        .body(payload.clone())
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    let fault: Value = serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
    assert_eq!(status, 413, "{fault}");
    assert!(fault["message"].as_str().is_some_and(|m| m.contains("Image storage media is full")), "{fault}");
    let img = admin.get("image", &format!("/v2/images/{big}")).await.expect("image");
    assert_eq!(img["status"], "queued", "{img}");
    let files: Vec<String> = std::fs::read_dir(data_dir.join("images"))
        .expect("images dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec![cloud.image_id.clone()], "only the earlier image's data, no partial file");
    // Removing the partial file gave its space back: full again for the boots.
    fs.fill();

    // Boots until the database cannot grow: each answer is a 202 or Nova's 503 fault.
    let meta: serde_json::Map<String, Value> = (0..100).map(|i| (format!("k{i:03}"), json!("v".repeat(250)))).collect();
    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..200 {
        let body = json!({"server": {"name": format!("full{i:03}"), "imageRef": cloud.image_id, "flavorRef": "42",
            "networks": [{"uuid": cloud.network_id}], "metadata": meta}});
        match raw(&admin, reqwest::Method::POST, "compute", "/servers", body).await {
            (202, r) => accepted.push(r["server"]["id"].as_str().expect("id").to_string()),
            (status, fault) => {
                refusal = Some((status, fault));
                break;
            }
        }
    }
    let (status, fault) = refusal.expect("the database never ran out of space");
    assert_eq!(status, 503, "{fault}");
    assert!(fault["serviceUnavailable"]["message"].as_str().is_some_and(|m| m.contains("storage is full")), "{fault}");
    eprintln!("{} boots accepted before the database was full", accepted.len());
    // Keystone and Neutron: the same 503 in their own fault formats, once a write needs room
    // (small ones may still fit in pages the database has; those succeed).
    let project = |i| json!({"project": {"name": format!("nospace{i}"), "description": "d".repeat(200_000)}});
    let keystone = refusal_of(&admin, reqwest::Method::POST, "identity", "/v3/projects", project).await;
    assert_eq!((keystone.0, &keystone.1["error"]["code"]), (503, &json!(503)), "{}", keystone.1);
    // Neutron: new networks, each given 100 KB of tags, so every round needs new pages.
    let mut neutron = None;
    for i in 0..100 {
        let net = json!({"network": {"name": format!("nospace{i}")}});
        let (status, reply) = raw(&admin, reqwest::Method::POST, "network", "/v2.0/networks", net).await;
        if status != 201 {
            neutron = Some((status, reply));
            break;
        }
        let tags: Vec<String> = (0..400).map(|t| format!("{t}-{}", "t".repeat(240))).collect();
        let path = format!("/v2.0/networks/{}/tags", reply["network"]["id"].as_str().expect("id"));
        let (status, reply) = raw(&admin, reqwest::Method::PUT, "network", &path, json!({"tags": tags})).await;
        if status != 200 {
            neutron = Some((status, reply));
            break;
        }
    }
    let neutron = neutron.expect("neutron never ran out of space");
    assert_eq!(
        (neutron.0, &neutron.1["NeutronError"]["type"]),
        (503, &json!("HTTPServiceUnavailable")),
        "{}",
        neutron.1
    );

    // Space returns: the same upload, a new image and a boot succeed; every accepted boot settles.
    eprintln!("full for {:?}", started.elapsed());
    fs.free();
    upload_image_data(&admin, &big, payload.clone()).await;
    let img = admin.get("image", &format!("/v2/images/{big}")).await.expect("image");
    assert_eq!(img["status"], "active", "{img}");
    assert_eq!(img["size"], payload.len(), "{img}");
    let body = json!({"server": {"name": "fullafter", "imageRef": big, "flavorRef": "42",
        "networks": [{"uuid": cloud.network_id}]}});
    let r = admin.post("compute", "/servers", &body).await.expect("boot after space returned");
    let after = r["server"]["id"].as_str().expect("id").to_string();
    let fin_after = wait_server(&admin, &after, &["ACTIVE", "ERROR"], 120).await;
    assert_eq!(fin_after["status"], "ACTIVE", "{fin_after}");
    eprintln!("upload and boot {:?} after space returned", started.elapsed());
    let fin = settle_all(&admin, "full", 180).await;
    eprintln!("all settled {:?} after the fill", started.elapsed());
    for id in &accepted {
        if !fin.iter().any(|s| s["id"] == id.as_str()) {
            let one = admin.get("compute", &format!("/servers/{id}")).await;
            let logs = [("server", server.log_text()), ("c1", _c1.log_text())];
            panic!("accepted server {id} is not listed; GET says {one:?}{}", trail(id, &logs));
        }
    }

    // Nothing corrupt: the database passes SQLite's integrity check after a clean stop.
    assert!(server.terminate(), "SIGTERM did not stop the server cleanly:\n{}", server.log_text());
    use sqlx::Connection as _;
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", data_dir.join("meridian.db").display()))
        .await
        .expect("open the database");
    let check: Vec<(String,)> =
        sqlx::query_as("PRAGMA integrity_check").fetch_all(&mut db).await.expect("integrity_check");
    assert_eq!(check, vec![("ok".to_string(),)]);
    db.close().await.expect("close");
}
