//! Benchmark of the dashboard's image transfers (figures, not a test): the worker uploads a
//! `BENCH_MIB` MiB file (default 512) into a new image on the real server and downloads it back,
//! each streamed, hashed (MD5 + SHA-512) and verified, three times; prints MiB/s per direction
//! (min / median / max) and this process's peak RSS, which stays flat whatever the size (the
//! bytes are never held whole).
//!
//! Run: `cargo build --release --workspace && target/release/bench-transfer`.

use std::time::Duration;

use meridian_e2e::{ADMIN_PASSWORD, Server};
use meridian_tui::config::Profile;
use meridian_tui::transfer::{DownloadSpec, Phase, Progress, UploadSpec};
use meridian_tui::worker::{ProfileBox, Request, Response};
use tokio::sync::mpsc::UnboundedReceiver;

async fn end(ui: &mut UnboundedReceiver<Response>, id: u64) -> Progress {
    loop {
        let r = tokio::time::timeout(Duration::from_secs(600), ui.recv()).await.expect("progress").expect("open");
        if let Response::Transfer(p) = r
            && p.id == id
            && p.phase.finished()
        {
            assert_eq!(p.phase, Phase::Done, "{p:?}");
            return p;
        }
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn spread(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:.0} / {:.0} / {:.0} MiB/s", v[0], v[v.len() / 2], v[v.len() - 1])
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::var("BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(512);
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("bench.raw");
    {
        // Not sparse: real bytes to read, send, hash and store.
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src).expect("create"));
        let block: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for _ in 0..mib {
            f.write_all(&block).expect("write");
        }
    }
    let (ui_tx, mut ui) = tokio::sync::mpsc::unbounded_channel();
    let worker = meridian_tui::worker::spawn(ui_tx, false);
    let profile = Profile {
        name: "bench".into(),
        auth_url: server.auth_url(),
        username: "admin".into(),
        password: Some(ADMIN_PASSWORD.into()),
        project_name: "admin".into(),
        user_domain: "Default".into(),
        project_domain: "Default".into(),
        ..Profile::default()
    };
    worker.send(Request::Login(Box::new(ProfileBox(profile)))).expect("send");
    loop {
        if let Some(Response::LoggedIn(_)) = ui.recv().await {
            break;
        }
    }
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for round in 0..3u64 {
        let spec = UploadSpec {
            file: src.display().to_string(),
            name: format!("bench-{round}"),
            disk_format: "raw".into(),
            visibility: "private".into(),
            min_disk_gb: 0,
            min_ram_mb: 0,
        };
        worker.send(Request::Upload { id: round * 2 + 1, spec }).expect("send");
        let p = end(&mut ui, round * 2 + 1).await;
        up.push(mib as f64 / p.elapsed.as_secs_f64());
        let out = dir.path().join(format!("back-{round}.raw"));
        let spec = DownloadSpec {
            image_id: p.image_id.clone().expect("id"),
            name: p.name.clone(),
            file: out.display().to_string(),
        };
        worker.send(Request::Download { id: round * 2 + 2, spec }).expect("send");
        let d = end(&mut ui, round * 2 + 2).await;
        down.push(mib as f64 / d.elapsed.as_secs_f64());
        let _ = std::fs::remove_file(&out);
    }
    println!("image transfers through the dashboard's worker, {mib} MiB, 3 rounds (min / median / max):");
    println!("  upload   (read, hash, PUT, server stores + hashes, verify): {}", spread(up));
    println!("  download (GET, hash, write, fsync, verify, link):          {}", spread(down));
    println!("  client peak RSS: {:.1} MiB", peak_rss_mib());
}
