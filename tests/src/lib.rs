//! Helpers shared by the end-to-end tests: run the real `meridian-server` binary on an ephemeral
//! loopback port with a real database, and drive it with our client or the real `openstack` CLI.

pub mod bench;
pub mod hosts;
pub mod reach;
pub mod tmux;
pub mod vm;
pub mod worker;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meridian_common::{Client, Credentials};
use serde_json::Value;

pub const ADMIN_PASSWORD: &str = "e2e-admin-pw";

/// The workspace's target directory binary of that name (cargo builds it before the tests).
pub fn binary(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("MERIDIAN_{}_BIN", name.replace('-', "_").to_uppercase())) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // A test runs from target/PROFILE/deps/, a bench binary from target/PROFILE/.
    let dir = exe.parent().expect("exe dir");
    let beside = dir.join(name);
    if beside.exists() { beside } else { dir.parent().expect("target dir").join(name) }
}

/// A running server process with its data directory.
pub struct Server {
    pub url: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// Extra flags for `serve` (e.g. `--host-down-after 4`).
    pub extra_args: Vec<String>,
    /// The address it listens on (loopback unless a test's hosts live in namespaces).
    bind: String,
    child: Option<Child>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Server {
    /// A fresh server on SQLite in a temp dir.
    pub fn start() -> Server {
        Self::start_with(None)
    }

    /// A fresh server on the given database URL (`None`: SQLite in the data dir).
    pub fn start_with(database_url: Option<String>) -> Server {
        Self::start_opts(database_url, &[])
    }

    /// A fresh server with extra `serve` flags.
    pub fn start_opts(database_url: Option<String>, extra: &[&str]) -> Server {
        Self::start_on("127.0.0.1", database_url, extra)
    }

    /// A fresh server listening on `ip` (an address of the machine, e.g. a test bridge's that
    /// agents in network namespaces reach).
    pub fn start_on(ip: &str, database_url: Option<String>, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().to_path_buf();
        let port = free_port();
        let mut s = Server {
            url: format!("http://{ip}:{port}"),
            bind: ip.to_string(),
            port,
            log: data_dir.join("server.log"),
            data_dir,
            database_url,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            _tmp: Some(tmp),
        };
        s.spawn();
        s
    }

    /// A fresh server whose data directory is `data_dir` (the caller's, e.g. on a small file
    /// system); its log goes to a temp dir of its own, so it survives a full data directory.
    pub fn start_in(data_dir: &Path, database_url: Option<String>, extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut s = Server {
            url: format!("http://127.0.0.1:{port}"),
            bind: "127.0.0.1".into(),
            port,
            log: tmp.path().join("server.log"),
            data_dir: data_dir.to_path_buf(),
            database_url,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            _tmp: Some(tmp),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let mut cmd = Command::new(binary("meridian-server"));
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("{}:{}", self.bind, self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("MERIDIAN_ADMIN_PASSWORD", ADMIN_PASSWORD)
            // MERIDIAN_E2E_SERVER_LOG: another log filter for the server (e.g. sqlx::query=debug).
            .env("MERIDIAN_LOG", std::env::var("MERIDIAN_E2E_SERVER_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(db) = &self.database_url {
            cmd.arg("--database-url").arg(db);
        }
        cmd.args(&self.extra_args);
        let child = cmd.spawn().expect("spawn meridian-server");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect((self.bind.as_str(), self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("meridian-server exited early ({status}); log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("meridian-server did not listen within 60 s; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Starts the binary again on the same port, data dir and database.
    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn auth_url(&self) -> String {
        format!("{}/identity", self.url)
    }

    pub fn creds(&self, user: &str, password: &str, project: &str) -> Credentials {
        Credentials {
            auth_url: self.auth_url(),
            username: user.into(),
            password: password.into(),
            project_name: project.into(),
            user_domain: "Default".into(),
            project_domain: "Default".into(),
            app_cred: None,
        }
    }

    pub async fn admin(&self) -> Client {
        Client::login(&self.creds("admin", ADMIN_PASSWORD, "admin")).await.expect("admin login")
    }

    /// The real `openstack` CLI logged in as `user` on `project`.
    pub fn cli(&self, user: &str, password: &str, project: &str) -> Cli {
        Cli {
            env: vec![
                ("OS_AUTH_URL".into(), self.auth_url()),
                ("OS_USERNAME".into(), user.into()),
                ("OS_PASSWORD".into(), password.into()),
                ("OS_PROJECT_NAME".into(), project.into()),
                ("OS_USER_DOMAIN_NAME".into(), "Default".into()),
                ("OS_PROJECT_DOMAIN_NAME".into(), "Default".into()),
                ("OS_IDENTITY_API_VERSION".into(), "3".into()),
                ("OS_REGION_NAME".into(), "RegionOne".into()),
            ],
        }
    }

    pub fn admin_cli(&self) -> Cli {
        self.cli("admin", ADMIN_PASSWORD, "admin")
    }

    /// Runs `meridian-server admin ...` against this server's database.
    pub fn admin_command(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary("meridian-server"));
        cmd.arg("--data-dir").arg(&self.data_dir).arg("admin").args(args);
        if let Some(db) = &self.database_url {
            cmd.arg("--database-url").arg(db);
        }
        cmd.output().expect("run meridian-server admin")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The python-openstackclient from the test virtualenv (`MERIDIAN_OPENSTACK` overrides).
pub fn openstack_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MERIDIAN_OPENSTACK") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    root.join(".venv/bin/openstack")
}

pub struct Cli {
    env: Vec<(String, String)>,
}

impl Cli {
    /// Runs `openstack ARGS`; panics with its output when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "openstack {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `openstack ARGS -f json` and parses the output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-f", "json"]);
        let text = self.run(&a);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("openstack {}: bad JSON ({e}): {text}", args.join(" ")))
    }

    /// `server show` at microversion 2.79 (Nova's fields of this cloud's newest version).
    pub fn server_show(&self, name: &str) -> Value {
        self.json(&["--os-compute-api-version", "2.79", "server", "show", name])
    }

    /// Polls `volume show` (a hang guard of 60 s) until the volume's status is `want`; panics
    /// as soon as it reaches an `error…` status.
    pub fn wait_volume(&self, name: &str, want: &str) -> Value {
        for _ in 0..240 {
            let v = self.json(&["volume", "show", name]);
            if v["status"] == want {
                return v;
            }
            assert!(!v["status"].as_str().unwrap_or_default().starts_with("error"), "{name}: {v}");
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{name} never reached {want}");
    }

    /// Runs and returns the raw output, success or not.
    pub fn output(&self, args: &[&str]) -> Output {
        let bin = openstack_bin();
        assert!(bin.exists(), "{} missing: run the README's test command (it creates .venv)", bin.display());
        Command::new(bin)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("OS_CLOUD")
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .output()
            .expect("run openstack")
    }
}

/// Polls (a hang guard of 60 s) until `f` holds, for tests that drive the blocking CLI.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..240 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what} never happened");
}

/// A fresh, empty PostgreSQL database for one test, dropped when this value is dropped.
/// Base URL from `MERIDIAN_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432`).
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::{Connection, Executor};
        let base =
            std::env::var("MERIDIAN_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let admin_url = format!("{base}/postgres");
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let name = format!("meridian_e2e_{}_{nanos}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.expect("PostgreSQL reachable");
        conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create database");
        PgDatabase { url: format!("{base}/{name}"), admin_url, name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Best effort, synchronously through psql so Drop needs no runtime.
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .arg("-qc")
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running `meridian-agent`, by default on libvirt's `test:///default` driver (its own
/// in-memory hypervisor per process), with its own state dir.
pub struct Agent {
    pub host: String,
    pub state_dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    server_url: String,
    token: String,
    uri: String,
    extra_args: Vec<String>,
    /// The network namespace it runs in (`ip netns exec`), for a simulated host.
    netns: Option<String>,
    _tmp: tempfile::TempDir,
}

impl Agent {
    pub fn start(server: &Server, host: &str) -> Agent {
        Self::start_opts(server, host, "test:///default", &[])
    }

    /// An agent on libvirt `uri` with extra flags.
    pub fn start_opts(server: &Server, host: &str, uri: &str, extra: &[&str]) -> Agent {
        Self::start_in(server, host, uri, extra, None)
    }

    /// An agent run inside network namespace `netns` (a simulated host of [`hosts`]).
    pub fn start_in(server: &Server, host: &str, uri: &str, extra: &[&str], netns: Option<&str>) -> Agent {
        // MERIDIAN_E2E_AGENT_TMPDIR: where agents' state dirs go (a simulated host's own disk).
        let tmp = match std::env::var_os("MERIDIAN_E2E_AGENT_TMPDIR") {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
        .expect("tempdir");
        let token = std::fs::read_to_string(server.data_dir.join("agent-token")).expect("agent token file");
        let mut a = Agent {
            host: host.to_string(),
            state_dir: tmp.path().join("state"),
            log: tmp.path().join("agent.log"),
            child: None,
            server_url: server.url.clone(),
            token: token.trim().to_string(),
            uri: uri.to_string(),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            netns: netns.map(str::to_string),
            _tmp: tmp,
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary("meridian-agent"));
                c
            }
            None => Command::new(binary("meridian-agent")),
        };
        let child = cmd
            .arg("--server")
            .arg(&self.server_url)
            .arg("--host")
            .arg(&self.host)
            .arg("--libvirt-uri")
            .arg(&self.uri)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--poll-wait-secs")
            .arg("5")
            .args(if self.netns.is_none() { &["--host-ip", "127.0.0.1"][..] } else { &[][..] })
            // Each agent its own nft tables (removed on drop), so agents of tests running side
            // by side on one machine never replace each other's port filters.
            .arg("--firewall-table")
            .arg(self.firewall_table())
            .args(&self.extra_args)
            .env("MERIDIAN_AGENT_TOKEN", &self.token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn meridian-agent");
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The name of the agent's nft tables: `meridian_` and its host name, letters and digits.
    pub fn firewall_table(&self) -> String {
        let host: String = self.host.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        format!("meridian_{host}").chars().take(32).collect()
    }

    /// Where the agent keeps its host credential (from registration; every agent call but
    /// registration carries it).
    pub fn credential_file(&self) -> PathBuf {
        self.state_dir.join("host-credential")
    }

    /// The agent's host credential, once it has registered.
    pub fn credential(&self) -> Option<String> {
        std::fs::read_to_string(self.credential_file()).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the agent (SIGKILL) and starts it again with the same state dir and flags.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        // Its port filters outlive it in the kernel: remove them (nothing when it had none).
        if self.uri.starts_with("qemu") {
            let table = self.firewall_table();
            for family in ["bridge", "inet"] {
                let _ = Command::new("nft").args(["delete", "table", family, &table]).output();
            }
        }
    }
}

/// What a compute test needs: an active image and a network with a subnet.
pub struct Cloud {
    pub image_id: String,
    pub network_id: String,
}

/// Uploads an image's bytes (`PUT /v2/images/{id}/file`) and checks Glance accepted them.
pub async fn upload_image_data(admin: &Client, image_id: &str, data: Vec<u8>) {
    let resp = admin
        .request(reqwest::Method::PUT, "image", &format!("/v2/images/{image_id}/file"))
        .expect("url")
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .expect("upload");
    assert!(resp.status().is_success(), "upload {image_id}: {}", resp.status());
}

/// Uploads a 1 MiB raw image and creates `net`/`10.77.0.0/16` as the admin.
pub async fn prepare_cloud(admin: &Client) -> Cloud {
    let img = admin
        .post("image", "/v2/images", &serde_json::json!({"name": "tiny", "disk_format": "raw", "container_format": "bare", "visibility": "public"}))
        .await
        .expect("image");
    let image_id = img["id"].as_str().expect("id").to_string();
    upload_image_data(admin, &image_id, (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect()).await;
    let net = admin
        .post("network", "/v2.0/networks", &serde_json::json!({"network": {"name": "net", "shared": true}}))
        .await
        .expect("network");
    let network_id = net["network"]["id"].as_str().expect("id").to_string();
    admin
        .post(
            "network",
            "/v2.0/subnets",
            &serde_json::json!({"subnet": {"network_id": network_id, "cidr": "10.77.0.0/16", "ip_version": 4}}),
        )
        .await
        .expect("subnet");
    Cloud { image_id, network_id }
}

/// Waits until at least `n` compute services are up (agents registered and heartbeating);
/// panics after 30 s (a hang guard).
pub async fn wait_hosts_up(admin: &Client, n: usize) {
    for _ in 0..300 {
        let s = admin.get("compute", "/os-services?binary=nova-compute").await.expect("services");
        let up = s["services"].as_array().map(|a| a.iter().filter(|x| x["state"] == "up").count()).unwrap_or(0);
        if up >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the agents did not register");
}

/// Waits until volume `id` has status `want` and returns it; an `error…` status on the way or
/// `secs` passing fails the test.
pub async fn wait_volume(client: &Client, id: &str, want: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = client.get("block-storage", &format!("/volumes/{id}")).await.expect("volume")["volume"].clone();
        if v["status"] == want {
            return v;
        }
        assert!(!v["status"].as_str().unwrap_or_default().starts_with("error"), "volume {id}: {v}");
        assert!(Instant::now() < deadline, "volume {id} never reached {want}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (a hang guard of `secs`) until the server shows `status` with no task state; a server
/// in ERROR fails at once with its fault.
pub async fn wait_settled(client: &Client, id: &str, status: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = client.get("compute", &format!("/servers/{id}")).await.expect("show server")["server"].clone();
        if s["status"] == status && s["OS-EXT-STS:task_state"].is_null() {
            return s;
        }
        assert_ne!(s["status"], "ERROR", "{id} went to ERROR instead of {status}: {}", s["fault"]);
        assert!(Instant::now() < deadline, "{id} did not settle in {status}: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls a server until its status is one of `want` (or it is gone, when `want` has
/// "DELETED"); panics after `secs` (a hang guard, not a timing assertion).
pub async fn wait_server(client: &Client, id: &str, want: &[&str], secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match client.get("compute", &format!("/servers/{id}")).await {
            Ok(v) if want.contains(&v["server"]["status"].as_str().unwrap_or_default()) => return v["server"].clone(),
            Err(e) if e.status() == Some(reqwest::StatusCode::NOT_FOUND) && want.contains(&"DELETED") => {
                return Value::Null;
            }
            Ok(v) if Instant::now() > deadline => panic!("server {id} stuck: {}", v["server"]),
            Err(e) if Instant::now() > deadline => panic!("server {id}: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
