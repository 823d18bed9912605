//! Figures for the dashboard (a benchmark, not a test; build with `--release`):
//! - start to first frame with data, against a local server, `meridian` in a real terminal
//!   (tmux), next to `openstack server list`'s wall time against the same server;
//! - frame render time with 10,000 instances in the table (in process, `TestBackend`);
//! - frame render time with the console pane open while the guest prints without pause (in
//!   process, `TestBackend`: the pane's emulator fed a continuous stream between frames);
//! - idle CPU and RSS of the running dashboard, and idle CPU with its console pane attached to a
//!   silent real guest (`qemu:///system`, real server and agent; skipped without libvirt).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_e2e::vm::{self, LibvirtGuard};
use meridian_e2e::{ADMIN_PASSWORD, Agent, Server, binary, wait_hosts_up, wait_server};
use meridian_tui::app::{App, AppConfig, Screen};
use meridian_tui::console_pane::ConsoleEvent;
use meridian_tui::keymap::Action;
use meridian_tui::model::{Server as Instance, parse_server};
use meridian_tui::worker::{Listing, Request, Response, SessionInfo};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::json;

const RUNS: usize = 5;

fn unix_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is 14th, stime 15th overall.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|x| x.parse().ok())
        .unwrap_or(0)
}

struct Run {
    session: String,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.session]).status();
    }
}

/// Starts `meridian` in tmux; returns (run guard, µs from before the spawn to the first data frame,
/// µs inside the process from main to that frame, the meridian pid).
fn start_meridian(server: &Server, dir: &std::path::Path, n: usize) -> (Run, f64, f64, u32) {
    let frame_file = dir.join(format!("first-frame-{n}"));
    let script = dir.join(format!("run-{n}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexport OS_AUTH_URL='{}' OS_USERNAME=admin OS_PASSWORD='{}' OS_PROJECT_NAME=admin \
             OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default MERIDIAN_CONFIG_DIR='{d}/config' \
             MERIDIAN_STATE_DIR='{d}/state' MERIDIAN_FIRST_FRAME_FILE='{}' TERM=xterm-256color\nunset OS_CLOUD\n\
             exec '{}' --log-file '{d}/meridian.log'\n",
            server.auth_url(),
            ADMIN_PASSWORD,
            frame_file.display(),
            binary("meridian").display(),
            d = dir.display(),
        ),
    )
    .expect("script");
    Command::new("chmod").arg("+x").arg(&script).status().expect("chmod");
    let session = format!("bench-tui-{}-{n}", std::process::id());
    let t0 = unix_micros();
    let ok = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "45"])
        .arg(&script)
        .stdin(Stdio::null())
        .status()
        .expect("tmux");
    assert!(ok.success());
    let run = Run { session: session.clone() };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (inside, at) = loop {
        if let Ok(t) = std::fs::read_to_string(&frame_file)
            && let Some((a, b)) = t.trim().split_once(' ')
        {
            break (a.parse::<f64>().unwrap_or(0.0), b.parse::<u128>().unwrap_or(0));
        }
        assert!(Instant::now() < deadline, "no first frame");
        std::thread::sleep(Duration::from_millis(1));
    };
    let pid = Command::new("tmux")
        .args(["list-panes", "-t", &session, "-F", "#{pane_pid}"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0);
    (run, (at.saturating_sub(t0)) as f64, inside, pid)
}

/// The value at fraction `q` of the sorted samples.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Frame render times (ms: p50, p99) and the guest's bytes per frame, with the console pane
/// attached to a guest that prints without pause: between frames the pane's emulator takes
/// what a busy guest sends in a frame's time (coloured log lines, as `dmesg` or a build log
/// print; the bytes go through the same `ConsoleEvent::Output` path as a real websocket's).
fn console_render_bench() -> (f64, f64, usize) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut app = App::new(tx, Screen::Main, AppConfig::default());
    app.on_response(Response::LoggedIn(SessionInfo {
        cloud: "bench".into(),
        user: "admin".into(),
        project: "admin".into(),
        project_id: "p".into(),
        ..SessionInfo::default()
    }));
    let id = "00000001-0000-4000-8000-000000000000";
    let guest = parse_server(&json!({"id": id, "name": "busy", "status": "ACTIVE", "OS-EXT-STS:power_state": 1}));
    app.on_response(Response::Listed(Listing::Servers(guest.into_iter().collect())));
    // `a`, the cloud's URL, the websocket opened: the pane is connected (session 1).
    app.on_action(Action::Attach);
    app.on_response(Response::ConsoleUrl { id: id.into(), result: Ok("ws://bench/?token=t".into()) });
    while let Ok(r) = rx.try_recv() {
        if let Request::ConsoleConnect { session, .. } = r {
            assert_eq!(session, 1);
        }
    }
    let (keys, _keys_rx) = tokio::sync::mpsc::unbounded_channel();
    app.on_response(Response::ConsoleEvent(ConsoleEvent::Opened { session: 1, input: keys }));
    let mut term = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
    let mut line = 0u64;
    // ~4 KiB a frame: 60 frames a second would be 240 KiB/s, twice what a 115200-baud line
    // carries in ten seconds; a virtio or pty console with `yes` or a build log goes that fast.
    let mut chunk = || {
        let mut out = String::new();
        while out.len() < 4096 {
            line += 1;
            out.push_str(&format!(
                "\x1b[32m[{:>6}.{:06}]\x1b[0m eth0: rx {} packets, \x1b[1mtx\x1b[0m {} bytes, state \x1b[33mUP\x1b[0m\r\n",
                line / 1000,
                line % 1000 * 997,
                line * 3,
                line * 1514
            ));
        }
        out.into_bytes()
    };
    for _ in 0..20 {
        app.on_response(Response::ConsoleEvent(ConsoleEvent::Output { session: 1, bytes: chunk() }));
        term.draw(|f| app.draw(f)).expect("draw");
    }
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..1000 {
        let c = chunk();
        bytes += c.len();
        app.on_response(Response::ConsoleEvent(ConsoleEvent::Output { session: 1, bytes: c }));
        let t = Instant::now();
        term.draw(|f| app.draw(f)).expect("draw");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let screen: String = term.backend().buffer().content().iter().map(|c| c.symbol()).collect();
    assert!(screen.contains("Console busy") && screen.contains("eth0: rx"), "the pane shows the stream");
    (quantile(&mut times, 0.5), quantile(&mut times, 0.99), bytes / 1000)
}

/// Idle CPU (% of one core over 20 s) of `meridian` with its console pane attached to a real
/// guest that prints nothing meanwhile; `None` when libvirt's QEMU is not there.
async fn idle_attached_cpu(dir: &std::path::Path) -> Option<f64> {
    if std::env::var("MERIDIAN_SKIP_REAL_VM").is_ok_and(|v| v == "1") || !vm::virsh(&["version"]).status.success() {
        return None;
    }
    // Dropped after the agent and server: removes the guest and its network.
    let guard = LibvirtGuard::default();
    let server = Server::start();
    let _agent = Agent::start_opts(&server, &format!("bench-tui-{}", std::process::id()), vm::URI, &[]);
    let admin = server.admin().await;
    wait_hosts_up(&admin, 1).await;
    let f = admin
        .post("compute", "/flavors", &json!({"flavor": {"name": "vm.bench", "ram": 256, "vcpus": 1, "disk": 1}}))
        .await
        .expect("flavor");
    let flavor = f["flavor"]["id"].as_str().expect("id").to_string();
    let image =
        vm::upload_image(&admin, "meridian-guest", &vm::image_dir().join("disk.qcow2"), "qcow2", json!({})).await;
    let (net_id, _) = vm::network(&admin, "benchnet", &vm::private_subnet(11)).await;
    guard.network(&format!("meridian-{net_id}"));
    let body =
        json!({"server": {"name": "quiet", "imageRef": image, "flavorRef": flavor, "networks": [{"uuid": net_id}]}});
    let r = admin.post("compute", "/servers", &body).await.expect("boot");
    let id = r["server"]["id"].as_str().expect("id").to_string();
    guard.domain(&format!("meridian-{id}"));
    let s = wait_server(&admin, &id, &["ACTIVE", "ERROR"], 180).await;
    assert_eq!(s["status"], "ACTIVE", "{s}");
    vm::wait_console(&admin, &id, 180, |c| c.contains(vm::READY)).await;

    let (run, _, _, pid) = start_meridian(&server, dir, 200);
    let screen = || {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &run.session]).output().expect("capture");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = Command::new("tmux").args(["send-keys", "-t", &run.session, "a"]).status().expect("send-keys");
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(screen().contains("Console quiet") && screen().contains("connected")) {
        assert!(Instant::now() < deadline, "the console did not connect:\n{}", screen());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let c0 = proc_cpu_ticks(pid);
    // The pid is the dashboard's (tmux's pane runs it by exec): starting and attaching cost CPU.
    assert!(c0 > 0, "no CPU time recorded for pid {pid}: not the dashboard?");
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let c1 = proc_cpu_ticks(pid);
    assert!(screen().contains("connected"), "still attached after the measurement:\n{}", screen());
    drop(run);
    admin.delete("compute", &format!("/servers/{id}")).await.expect("delete");
    wait_server(&admin, &id, &["DELETED"], 180).await;
    Some((c1 - c0) as f64 / 100.0 / t.elapsed().as_secs_f64() * 100.0)
}

fn render_bench() -> (f64, f64) {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut app = App::new(tx, Screen::Main, AppConfig::default());
    app.on_response(Response::LoggedIn(SessionInfo {
        cloud: "bench".into(),
        user: "admin".into(),
        project: "admin".into(),
        project_id: "p".into(),
        admin: true,
        ..SessionInfo::default()
    }));
    let servers: Vec<Instance> = (0..10_000)
        .filter_map(|i| {
            parse_server(&json!({
                "id": format!("{i:08}-0000-4000-8000-000000000000"), "name": format!("vm-{i:05}"),
                "status": if i % 7 == 0 { "BUILD" } else { "ACTIVE" }, "OS-EXT-STS:task_state": null,
                "OS-EXT-STS:power_state": 1, "OS-EXT-SRV-ATTR:host": format!("compute-{}", i % 40),
                "addresses": {"net": [{"addr": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256), "version": 4}]},
                "flavor": {"original_name": "m1.small"}, "image": {"id": "img"}, "created": "2026-11-22T00:00:00Z",
            }))
        })
        .collect();
    app.on_response(Response::Listed(Listing::Servers(servers)));
    let mut term = Terminal::new(TestBackend::new(200, 50)).expect("terminal");
    // Warm up, then time frames while the selection moves (each frame differs).
    for _ in 0..20 {
        term.draw(|f| app.draw(f)).expect("draw");
    }
    let frames = 500;
    let t = Instant::now();
    for i in 0..frames {
        app.on_action(if i % 50 == 0 { Action::PageDown } else { Action::Down });
        term.draw(|f| app.draw(f)).expect("draw");
    }
    let per_frame = t.elapsed().as_secs_f64() * 1000.0 / frames as f64;
    // A live update re-sorts and re-filters all 10,000 rows: time that too.
    app.on_action(Action::SortNext);
    let t = Instant::now();
    let updates = 100;
    for i in 0..updates {
        if let Some(s) = parse_server(
            &json!({"id": format!("{:08}-0000-4000-8000-000000000000", i * 97), "name": format!("vm-{:05}", i * 97), "status": "SHUTOFF"}),
        ) {
            app.on_response(Response::ServerUpdate(Box::new(s)));
        }
        term.draw(|f| app.draw(f)).expect("draw");
    }
    let per_update = t.elapsed().as_secs_f64() * 1000.0 / updates as f64;
    (per_frame, per_update)
}

#[tokio::main]
async fn main() {
    let (frame_ms, update_ms) = render_bench();
    println!(
        "render, 10,000 instances, 200x50: {frame_ms:.3} ms/frame (scrolling); {update_ms:.3} ms per live update + frame (sorted)"
    );
    let (p50, p99, per_frame) = console_render_bench();
    println!(
        "render, console pane 200x50, guest printing {per_frame} bytes between frames: p50 {p50:.3} ms, p99 {p99:.3} ms per frame"
    );

    let server = Server::start();
    let admin = server.admin().await;
    let cloud = meridian_e2e::prepare_cloud(&admin).await;
    // Something to list: a few instances (no compute host, so they end in ERROR; still rows).
    for i in 0..10 {
        let body = json!({"server": {"name": format!("bench-{i}"), "imageRef": cloud.image_id, "flavorRef": "1",
            "networks": [{"uuid": cloud.network_id}]}});
        admin.post("compute", "/servers", &body).await.expect("boot");
    }
    let dir = tempfile::tempdir().expect("tmp");

    let mut spawn_to_frame = Vec::new();
    let mut in_process = Vec::new();
    for n in 0..RUNS {
        let (run, outside, inside, _) = start_meridian(&server, dir.path(), n);
        spawn_to_frame.push(outside / 1000.0);
        in_process.push(inside / 1000.0);
        drop(run);
    }
    println!(
        "first data frame: median {:.1} ms from spawn (tmux included), {:.1} ms from main() (runs: {:?})",
        median(spawn_to_frame.clone()),
        median(in_process.clone()),
        spawn_to_frame.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>()
    );

    let cli = server.admin_cli();
    let mut cli_ms = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        cli.run(&["server", "list"]);
        cli_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "openstack server list: median {:.0} ms wall (runs: {:?})",
        median(cli_ms.clone()),
        cli_ms.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>()
    );

    // Idle: a running dashboard with data on screen, nobody typing.
    let (run, _, _, pid) = start_meridian(&server, dir.path(), 99);
    std::thread::sleep(Duration::from_secs(3));
    let ticks = 100.0; // USER_HZ on Linux
    let c0 = proc_cpu_ticks(pid);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let c1 = proc_cpu_ticks(pid);
    let cpu = (c1 - c0) as f64 / ticks / t.elapsed().as_secs_f64() * 100.0;
    println!("idle CPU over 20 s: {cpu:.2}% of one core; RSS {:.1} MB", rss_kb(pid) as f64 / 1024.0);
    drop(run);

    match idle_attached_cpu(dir.path()).await {
        Some(cpu) => println!(
            "idle CPU over 20 s, console attached to a silent real guest: {cpu:.2}% of one core (1 tick = 0.05%)"
        ),
        None => println!("idle CPU with a console attached: skipped (no libvirt QEMU, or MERIDIAN_SKIP_REAL_VM=1)"),
    }
}
