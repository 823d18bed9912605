//! Figures for the dashboard (a benchmark, not a test; build with `--release`):
//! - start to first frame with data, against a local server, `meridian` in a real terminal
//!   (tmux), next to `openstack server list`'s wall time against the same server;
//! - frame render time with 10,000 instances in the table (in process, `TestBackend`);
//! - idle CPU and RSS of the running dashboard.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_e2e::{ADMIN_PASSWORD, Server, binary};
use meridian_tui::app::{App, AppConfig, Screen};
use meridian_tui::keymap::Action;
use meridian_tui::model::{Server as Instance, parse_server};
use meridian_tui::worker::{Listing, Response, SessionInfo};
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
}
