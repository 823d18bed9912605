//! Benchmark of the server foundation (figures, not a test): token issue and validate rates,
//! `GET /flavors/detail` latency, 1 GiB image upload/download throughput against `cp` of the
//! same file, the server's peak RSS during the transfer, and its idle RSS.
//!
//! Run: `cargo build --release -p meridian-server -p meridian-e2e && target/release/bench-foundation`
//! (`BENCH_IMAGE_MB` changes the image size, default 1024).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use meridian_common::Client;
use meridian_e2e::Server;
use serde_json::json;

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Runs `op` from `workers` tasks for `secs` seconds; returns completed operations per second.
async fn rate<F, Fut>(workers: usize, secs: u64, op: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if op().await {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn md5_file(path: &Path) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

#[tokio::main]
async fn main() {
    let size_mb: u64 = std::env::var("BENCH_IMAGE_MB").ok().and_then(|s| s.parse().ok()).unwrap_or(1024);
    let server = Server::start();
    let pid = server.pid().expect("pid");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kb(pid, "VmRSS:");
    let admin = server.admin().await;

    // Token issue (argon2id verification dominates, by design).
    let creds = server.creds("admin", meridian_e2e::ADMIN_PASSWORD, "admin");
    let issue = rate(4, 5, move || {
        let c = creds.clone();
        async move { Client::login(&c).await.is_ok() }
    })
    .await;

    // Token validate.
    let http = admin.http().clone();
    let token = admin.session.token.clone();
    let url = format!("{}/identity/v3/auth/tokens", server.url);
    let validate = rate(8, 5, move || {
        let (http, token, url) = (http.clone(), token.clone(), url.clone());
        async move {
            http.get(&url)
                .header("x-auth-token", &token)
                .header("x-subject-token", &token)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;

    // GET /flavors/detail latency, sequential.
    let mut lat = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        admin.get("compute", "/flavors/detail").await.expect("flavors");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);

    // 1 GiB image: cp baseline, upload, download.
    let work = tempfile::tempdir_in(&server.data_dir).expect("workdir");
    let src = work.path().join("image.raw");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&src).expect("create");
        let mut block = vec![0u8; 1 << 20];
        for i in 0..size_mb {
            for (j, b) in block.iter_mut().enumerate() {
                *b = (i as usize).wrapping_mul(31).wrapping_add(j) as u8;
            }
            f.write_all(&block).expect("write");
        }
        f.sync_all().expect("sync");
    }
    let src_md5 = md5_file(&src);
    let copy = work.path().join("copy.raw");
    let t = Instant::now();
    std::process::Command::new("cp").arg(&src).arg(&copy).status().expect("cp");
    let cp_secs = t.elapsed().as_secs_f64();
    std::process::Command::new("sync").arg(&copy).status().expect("sync");
    let cp_sync_secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(&copy).expect("rm copy");

    // Peak RSS of the transfer alone: reset the high-water mark first (Linux clear_refs 5).
    let before_transfer = rss_kb(pid, "VmRSS:");
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let img = admin
        .post("image", "/v2/images", &json!({"name": "bench", "disk_format": "raw", "container_format": "bare"}))
        .await
        .expect("image create");
    let id = img["id"].as_str().expect("id").to_string();
    let file = tokio::fs::File::open(&src).await.expect("open src");
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    let t = Instant::now();
    let resp = admin
        .request(reqwest::Method::PUT, "image", &format!("/v2/images/{id}/file"))
        .expect("url")
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("upload");
    assert!(resp.status().is_success(), "upload: {}", resp.status());
    let up_secs = t.elapsed().as_secs_f64();
    let peak_after_upload = rss_kb(pid, "VmHWM:");
    let shown = admin.get("image", &format!("/v2/images/{id}")).await.expect("show");
    assert_eq!(shown["checksum"], src_md5.as_str(), "server checksum");

    let dst = work.path().join("download.raw");
    let t = Instant::now();
    let mut resp = admin
        .request(reqwest::Method::GET, "image", &format!("/v2/images/{id}/file"))
        .expect("url")
        .send()
        .await
        .expect("download");
    {
        use tokio::io::AsyncWriteExt;
        let mut out = tokio::fs::File::create(&dst).await.expect("create dst");
        while let Some(chunk) = resp.chunk().await.expect("chunk") {
            out.write_all(&chunk).await.expect("write");
        }
        out.flush().await.expect("flush");
    }
    let down_secs = t.elapsed().as_secs_f64();
    // The same download into a discarding sink: the server's side without the client's disk.
    let t = Instant::now();
    let mut resp = admin
        .request(reqwest::Method::GET, "image", &format!("/v2/images/{id}/file"))
        .expect("url")
        .send()
        .await
        .expect("download");
    let mut received = 0u64;
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        received += chunk.len() as u64;
    }
    assert_eq!(received, size_mb << 20, "whole image received");
    let sink_secs = t.elapsed().as_secs_f64();
    let peak_rss = rss_kb(pid, "VmHWM:");
    assert_eq!(md5_file(&dst), src_md5, "download is byte-identical");

    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_after_rss = rss_kb(pid, "VmRSS:");
    let mb = size_mb as f64;
    let report = json!({
        "idle_rss_mb": idle_rss as f64 / 1024.0,
        "idle_rss_mb_after_everything": idle_after_rss as f64 / 1024.0,
        "peak_rss_mb_during_transfer": peak_rss as f64 / 1024.0,
        "peak_rss_mb_after_upload": peak_after_upload as f64 / 1024.0,
        "rss_mb_before_transfer": before_transfer as f64 / 1024.0,
        "token_issue_per_s": issue,
        "token_validate_per_s": validate,
        "flavors_detail_ms": {"p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99), "max": percentile(&lat, 1.0)},
        "image_mb": size_mb,
        "cp_mb_s": mb / cp_secs,
        "cp_plus_sync_mb_s": mb / cp_sync_secs,
        "upload_mb_s": mb / up_secs,
        "download_mb_s": mb / down_secs,
        "upload_vs_cp_plus_sync": (mb / up_secs) / (mb / cp_sync_secs),
        "download_vs_cp": (mb / down_secs) / (mb / cp_secs),
        "download_to_sink_mb_s": mb / sink_secs,
        "download_to_sink_vs_cp": (mb / sink_secs) / (mb / cp_secs),
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}
