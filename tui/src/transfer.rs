//! Image transfers: a local file uploaded into a new image, an image's data downloaded to a
//! file. Both stream (memory stays flat whatever the size), report progress to the UI at most
//! ten times a second, check the bytes against the image's checksums (Glance's MD5 `checksum`
//! and, when it uses SHA-512, `os_hash_value`), and can be cancelled at any moment.
//!
//! Nothing half-done is left behind: a cancelled or failed upload deletes the image it created,
//! and a download writes to `<file>.part` and only links it to its name once complete and
//! verified (never over an existing file); a cancelled or failed one removes the part file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use md5::{Digest, Md5};
use meridian_common::client::decode;
use meridian_common::{Client, ClientError};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha512;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;

use crate::worker::{Response, path_segment, versioned};

/// How often progress goes to the UI.
const TICK: Duration = Duration::from_millis(100);
/// A transfer whose bytes stop moving this long fails instead of hanging forever.
const STALL: Duration = Duration::from_secs(120);
/// The client's own 60 s limit is for API calls; a transfer is bounded by [`STALL`] instead.
const WHOLE_TRANSFER: Duration = Duration::from_secs(7 * 24 * 3600);
const CHUNK: usize = 256 * 1024;

/// Disk formats Glance knows (what the form accepts; empty or `auto` detects).
pub const DISK_FORMATS: &[&str] = &["raw", "qcow2", "iso", "vmdk", "vdi", "vhd", "vhdx", "ami", "ari", "aki", "ploop"];
pub const VISIBILITIES: &[&str] = &["private", "shared", "community", "public"];

/// A new image from a local file.
#[derive(Clone, Debug, PartialEq)]
pub struct UploadSpec {
    /// As typed (`~/` is the home directory).
    pub file: String,
    /// Empty: the file's name without its extension.
    pub name: String,
    /// Empty: read from the file's first bytes.
    pub disk_format: String,
    pub visibility: String,
    pub min_disk_gb: u64,
    pub min_ram_mb: u64,
}

/// An image's data to a local file.
#[derive(Clone, Debug, PartialEq)]
pub struct DownloadSpec {
    pub image_id: String,
    pub name: String,
    /// As typed (`~/` is the home directory); must not exist yet.
    pub file: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    Upload,
    Download,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Creating the image / reading its record, checking the file.
    Starting,
    Moving,
    /// Every byte is sent or received; the checksums are being compared.
    Verifying,
    Done,
    Failed(String),
    Cancelled,
}

impl Phase {
    pub fn finished(&self) -> bool {
        matches!(self, Phase::Done | Phase::Failed(_) | Phase::Cancelled)
    }
}

/// Where one transfer is: sent to the UI as it moves.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub id: u64,
    pub way: Way,
    /// The image's name.
    pub name: String,
    pub file: PathBuf,
    pub image_id: Option<String>,
    pub done: u64,
    pub total: Option<u64>,
    pub phase: Phase,
    pub elapsed: Duration,
}

impl Progress {
    /// Bytes per second so far.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.done as f64 / s } else { 0.0 }
    }

    /// 0.0–1.0, when the size is known.
    pub fn ratio(&self) -> Option<f64> {
        match self.total {
            Some(0) => Some(1.0),
            Some(t) => Some((self.done as f64 / t as f64).min(1.0)),
            None => None,
        }
    }
}

/// The worker's running transfers, by id, for cancelling.
#[derive(Clone, Default)]
pub struct Transfers {
    running: Arc<Mutex<HashMap<u64, CancellationToken>>>,
}

impl Transfers {
    pub fn upload(&self, client: Client, id: u64, spec: UploadSpec, ui: mpsc::UnboundedSender<Response>) {
        let (cancel, running) = self.register(id);
        tokio::spawn(async move {
            let mut r = Reporter::new(id, Way::Upload, &spec.name, ui);
            let outcome = upload(&client, &spec, &mut r, &cancel).await;
            running.lock().map(|mut m| m.remove(&id)).ok();
            r.finish(outcome);
        });
    }

    pub fn download(&self, client: Client, id: u64, spec: DownloadSpec, ui: mpsc::UnboundedSender<Response>) {
        let (cancel, running) = self.register(id);
        tokio::spawn(async move {
            let mut r = Reporter::new(id, Way::Download, &spec.name, ui);
            let outcome = download(&client, &spec, &mut r, &cancel).await;
            running.lock().map(|mut m| m.remove(&id)).ok();
            r.finish(outcome);
        });
    }

    /// Cancels a running transfer; `false` if it already ended.
    pub fn cancel(&self, id: u64) -> bool {
        match self.running.lock().ok().and_then(|m| m.get(&id).cloned()) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    fn register(&self, id: u64) -> (CancellationToken, Arc<Mutex<HashMap<u64, CancellationToken>>>) {
        let token = CancellationToken::new();
        if let Ok(mut m) = self.running.lock() {
            m.insert(id, token.clone());
        }
        (token, self.running.clone())
    }
}

/// How a transfer ended, when not with success.
#[derive(Debug)]
enum Stop {
    Cancelled,
    Failed(String),
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Stop {
        Stop::Failed(match e {
            ClientError::Api { status, message, .. } => format!("{message} ({})", status.as_u16()),
            other => other.to_string(),
        })
    }
}

fn io_stop(what: &str, path: &Path, e: std::io::Error) -> Stop {
    Stop::Failed(format!("{what} {}: {e}", path.display()))
}

/// Sends [`Progress`] to the UI.
struct Reporter {
    p: Progress,
    started: Instant,
    ui: mpsc::UnboundedSender<Response>,
}

impl Reporter {
    fn new(id: u64, way: Way, name: &str, ui: mpsc::UnboundedSender<Response>) -> Reporter {
        let p = Progress {
            id,
            way,
            name: name.to_string(),
            file: PathBuf::new(),
            image_id: None,
            done: 0,
            total: None,
            phase: Phase::Starting,
            elapsed: Duration::ZERO,
        };
        Reporter { p, started: Instant::now(), ui }
    }

    fn send(&mut self) {
        self.p.elapsed = self.started.elapsed();
        let _ = self.ui.send(Response::Transfer(self.p.clone()));
    }

    fn phase(&mut self, phase: Phase) {
        self.p.phase = phase;
        self.send();
    }

    fn finish(mut self, outcome: Result<(), Stop>) {
        match outcome {
            Ok(()) => self.phase(Phase::Done),
            Err(Stop::Cancelled) => self.phase(Phase::Cancelled),
            Err(Stop::Failed(m)) => {
                tracing::warn!(transfer = self.p.id, name = %self.p.name, error = %m, "image transfer failed");
                self.phase(Phase::Failed(m))
            }
        }
    }
}

/// `~/x` → `$HOME/x`; anything else as typed.
pub fn expand(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ if path == "~" => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(path)),
        _ => PathBuf::from(path),
    }
}

/// The disk format a file's first bytes say, as Glance names it (`raw` when none matches).
pub fn detect_format(head: &[u8], file_name: &str) -> &'static str {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(0, b"QFI\xfb") {
        "qcow2"
    } else if at(0, b"KDMV") || at(0, b"# Disk DescriptorFile") {
        "vmdk"
    } else if at(64, &[0x7f, 0x10, 0xda, 0xbe]) {
        "vdi"
    } else if at(0, b"vhdxfile") {
        "vhdx"
    } else if at(0, b"conectix") {
        "vhd"
    } else if at(0x8001, b"CD001") || file_name.to_ascii_lowercase().ends_with(".iso") {
        "iso"
    } else {
        "raw"
    }
}

/// The image's name from a file name: without its directory and last extension.
pub fn name_from_file(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

async fn upload(client: &Client, spec: &UploadSpec, r: &mut Reporter, cancel: &CancellationToken) -> Result<(), Stop> {
    let path = expand(&spec.file);
    r.p.file = path.clone();
    let meta = tokio::fs::metadata(&path).await.map_err(|e| io_stop("cannot read", &path, e))?;
    if !meta.is_file() {
        return Err(Stop::Failed(format!("{} is not a file", path.display())));
    }
    let size = meta.len();
    r.p.total = Some(size);
    let disk_format = if spec.disk_format.is_empty() || spec.disk_format == "auto" {
        let head = read_head(&path, 0x8001 + 5).await.map_err(|e| io_stop("cannot read", &path, e))?;
        detect_format(&head, &path.to_string_lossy()).to_string()
    } else {
        spec.disk_format.clone()
    };
    let name = if spec.name.is_empty() { name_from_file(&path) } else { spec.name.clone() };
    r.p.name = name.clone();
    r.send();

    let base = versioned(&client.session, "image", "v2")?;
    let body = json!({
        "name": name,
        "disk_format": disk_format,
        "container_format": "bare",
        "visibility": spec.visibility,
        "min_disk": spec.min_disk_gb,
        "min_ram": spec.min_ram_mb,
    });
    let image = client.send_url(Method::POST, "image", &format!("{base}/images"), Some(&body)).await?;
    let image_id = image["id"].as_str().ok_or_else(|| Stop::Failed("the cloud gave the new image no id".into()))?;
    r.p.image_id = Some(image_id.to_string());
    r.phase(Phase::Moving);

    let sent = send_file(client, &base, image_id, &path, size, r, cancel).await;
    let checked = match sent {
        Ok(sums) => {
            r.phase(Phase::Verifying);
            verify_upload(client, &base, image_id, &sums).await
        }
        Err(e) => Err(e),
    };
    if let Err(stop) = checked {
        // The image never got its bytes (or the wrong ones): it must not stay behind looking
        // usable. Deleting is best-effort; say when it did not work.
        let url = format!("{base}/images/{}", path_segment(image_id));
        let deleted = client.send_url(Method::DELETE, "image", &url, None).await;
        return Err(match (stop, deleted) {
            (Stop::Failed(m), Err(e)) => Stop::Failed(format!("{m}; the image {image_id} could not be deleted: {e}")),
            (Stop::Cancelled, Err(e)) => {
                Stop::Failed(format!("cancelled; the image {image_id} could not be deleted: {e}"))
            }
            (stop, Ok(_)) => stop,
        });
    }
    Ok(())
}

async fn read_head(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let f = tokio::fs::File::open(path).await?;
    let mut head = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut head).await?;
    Ok(head)
}

/// MD5 and SHA-512 of what went through, hex.
#[derive(Debug, Default)]
struct Sums {
    md5: String,
    sha512: String,
    len: u64,
}

#[derive(Default)]
struct Hashing {
    md5: Md5,
    sha512: Sha512,
}

impl Hashing {
    fn update(&mut self, b: &[u8]) {
        self.md5.update(b);
        self.sha512.update(b);
    }
    fn sums(self, len: u64) -> Sums {
        Sums { md5: hex(&self.md5.finalize()), sha512: hex(&self.sha512.finalize()), len }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// PUTs the file as the image's data, hashing it on the way.
async fn send_file(
    client: &Client,
    base: &str,
    image_id: &str,
    path: &Path,
    size: u64,
    r: &mut Reporter,
    cancel: &CancellationToken,
) -> Result<Sums, Stop> {
    let file = tokio::fs::File::open(path).await.map_err(|e| io_stop("cannot open", path, e))?;
    let counted = Arc::new(AtomicU64::new(0));
    let hashing = Arc::new(Mutex::new(Hashing::default()));
    let (c, h) = (counted.clone(), hashing.clone());
    let stream = ReaderStream::with_capacity(file, CHUNK).map(move |chunk| {
        if let Ok(b) = &chunk {
            if let Ok(mut h) = h.lock() {
                h.update(b);
            }
            c.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    let url = format!("{base}/images/{}/file", path_segment(image_id));
    // The length is declared, so a file that shrinks while being read fails the request
    // instead of ending in a short image.
    let send = client
        .request_url(Method::PUT, "image", &url)
        .header("content-type", "application/octet-stream")
        .header("content-length", size)
        .timeout(WHOLE_TRANSFER)
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    tokio::pin!(send);
    let mut tick = tokio::time::interval(TICK);
    let mut moved = (0u64, Instant::now());
    let resp = loop {
        tokio::select! {
            resp = &mut send => break resp,
            // Dropping the request future closes the connection mid-body: Glance discards it.
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            _ = tick.tick() => {
                let done = counted.load(Ordering::Relaxed);
                r.p.done = done;
                if done == size && r.p.phase == Phase::Moving {
                    r.p.phase = Phase::Verifying; // the cloud is storing and hashing
                }
                r.send();
                if done != moved.0 {
                    moved = (done, Instant::now());
                } else if done < size && moved.1.elapsed() > STALL {
                    return Err(Stop::Failed(format!("no bytes moved for {} s", STALL.as_secs())));
                }
            }
        }
    };
    let resp = resp.map_err(|e| Stop::Failed(format!("sending {}: {e}", path.display())))?;
    decode(resp).await?;
    let len = counted.load(Ordering::Relaxed);
    r.p.done = len;
    let sums = match Arc::try_unwrap(hashing).ok().and_then(|m| m.into_inner().ok()) {
        Some(h) => h.sums(len),
        None => return Err(Stop::Failed("the upload's checksum was lost".into())),
    };
    Ok(sums)
}

/// The image as the cloud now has it must be active and carry the checksums of what was sent.
async fn verify_upload(client: &Client, base: &str, image_id: &str, sums: &Sums) -> Result<(), Stop> {
    let img = client.send_url(Method::GET, "image", &format!("{base}/images/{}", path_segment(image_id)), None).await?;
    check_sums(&img, sums, None)?;
    match img["status"].as_str() {
        Some("active") => Ok(()),
        other => Err(Stop::Failed(format!("the image is {} after its upload, not active", other.unwrap_or("unknown")))),
    }
}

/// Compares what moved with the image's record (and the download's `Content-MD5`).
fn check_sums(img: &Value, sums: &Sums, content_md5: Option<&str>) -> Result<(), Stop> {
    let mismatch = |what: &str, theirs: &str, ours: &str| {
        Stop::Failed(format!("{what} mismatch: the cloud has {theirs}, the bytes moved give {ours}"))
    };
    if let Some(size) = img["size"].as_u64()
        && size != sums.len
    {
        return Err(mismatch("size", &size.to_string(), &sums.len.to_string()));
    }
    for md5 in [img["checksum"].as_str(), content_md5].into_iter().flatten() {
        if !md5.eq_ignore_ascii_case(&sums.md5) {
            return Err(mismatch("MD5", md5, &sums.md5));
        }
    }
    if img["os_hash_algo"].as_str() == Some("sha512")
        && let Some(v) = img["os_hash_value"].as_str()
        && !v.eq_ignore_ascii_case(&sums.sha512)
    {
        return Err(mismatch("SHA-512", v, &sums.sha512));
    }
    Ok(())
}

async fn download(
    client: &Client,
    spec: &DownloadSpec,
    r: &mut Reporter,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let path = expand(&spec.file);
    r.p.file = path.clone();
    r.p.image_id = Some(spec.image_id.clone());
    let base = versioned(&client.session, "image", "v2")?;
    let image_url = format!("{base}/images/{}", path_segment(&spec.image_id));
    let img = client.send_url(Method::GET, "image", &image_url, None).await?;
    if img["status"].as_str() != Some("active") {
        return Err(Stop::Failed(format!(
            "image {} has no data to download (it is {})",
            spec.name,
            img["status"].as_str().unwrap_or("unknown")
        )));
    }
    r.p.total = img["size"].as_u64();
    if tokio::fs::symlink_metadata(&path).await.is_ok() {
        return Err(Stop::Failed(format!("{} exists: give another file name", path.display())));
    }
    let part = part_path(&path);
    let file =
        tokio::fs::OpenOptions::new().write(true).create_new(true).open(&part).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Stop::Failed(format!(
                "{} exists: another download to it is running or was interrupted (remove it to retry)",
                part.display()
            )),
            _ => io_stop("cannot create", &part, e),
        })?;
    let received = receive(client, &image_url, file, &part, r, cancel).await;
    let finished = match received {
        Ok((sums, content_md5)) => {
            r.phase(Phase::Verifying);
            check_sums(&img, &sums, content_md5.as_deref()).and(link_new(&part, &path).await)
        }
        Err(e) => Err(e),
    };
    // Whether it ended well (linked to its name) or not, the part file goes.
    if let Err(e) = tokio::fs::remove_file(&part).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %part.display(), error = %e, "cannot remove the partial download");
    }
    finished
}

fn part_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Gives the finished part file its name, never replacing a file that appeared meanwhile: a
/// hard link fails if the name exists (a rename would silently replace it).
async fn link_new(part: &Path, path: &Path) -> Result<(), Stop> {
    match tokio::fs::hard_link(part, path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Stop::Failed(format!("{} appeared during the download; it was left as it is", path.display())))
        }
        // Filesystems without hard links (vfat): the check and the rename are two steps there.
        Err(_) if tokio::fs::symlink_metadata(path).await.is_err() => {
            tokio::fs::rename(part, path).await.map_err(|e| io_stop("cannot rename to", path, e))
        }
        Err(e) => Err(io_stop("cannot create", path, e)),
    }
}

/// GETs the image's data into `file`, hashing it on the way; returns the sums and the
/// response's `Content-MD5`.
async fn receive(
    client: &Client,
    image_url: &str,
    file: tokio::fs::File,
    part: &Path,
    r: &mut Reporter,
    cancel: &CancellationToken,
) -> Result<(Sums, Option<String>), Stop> {
    let resp = client
        .request_url(Method::GET, "image", &format!("{image_url}/file"))
        .timeout(WHOLE_TRANSFER)
        .send()
        .await
        .map_err(|e| Stop::Failed(format!("asking for the image's data: {e}")))?;
    if resp.status() == reqwest::StatusCode::NO_CONTENT {
        return Err(Stop::Failed("the image has no data".into()));
    }
    if !resp.status().is_success() {
        decode(resp).await?;
        return Err(Stop::Failed("the image's data could not be read".into()));
    }
    let content_md5 = resp.headers().get("content-md5").and_then(|v| v.to_str().ok()).map(str::to_string);
    if r.p.total.is_none() {
        r.p.total = resp.content_length();
    }
    r.phase(Phase::Moving);
    let mut body = resp.bytes_stream();
    let mut out = tokio::io::BufWriter::with_capacity(CHUNK, file);
    let mut hashing = Hashing::default();
    let mut done = 0u64;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            chunk = tokio::time::timeout(STALL, body.next()) => {
                let chunk = match chunk {
                    Err(_) => return Err(Stop::Failed(format!("no bytes moved for {} s", STALL.as_secs()))),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => return Err(Stop::Failed(format!("receiving the image's data: {e}"))),
                    Ok(Some(Ok(b))) => b,
                };
                hashing.update(&chunk);
                out.write_all(&chunk).await.map_err(|e| io_stop("cannot write", part, e))?;
                done += chunk.len() as u64;
            }
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            _ = tick.tick() => {
                r.p.done = done;
                r.send();
            }
        }
    }
    r.p.done = done;
    out.flush().await.map_err(|e| io_stop("cannot write", part, e))?;
    // On disk before it gets its name: a crash must not leave a complete-looking short file.
    out.into_inner().sync_all().await.map_err(|e| io_stop("cannot write", part, e))?;
    Ok((hashing.sums(done), content_md5))
}

/// The default place to save an image: `~/Downloads` if there is one, else the current
/// directory, named after the image with its format as extension.
pub fn default_download_path(name: &str, disk_format: Option<&str>) -> String {
    let safe: String =
        name.chars().map(|c| if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    let safe = if safe.is_empty() { "image".to_string() } else { safe };
    let ext = match disk_format {
        Some(f) if !f.is_empty() && !safe.ends_with(&format!(".{f}")) => format!(".{f}"),
        _ => String::new(),
    };
    let downloads = std::env::var_os("HOME").map(|h| Path::new(&h).join("Downloads"));
    match downloads {
        Some(d) if d.is_dir() => format!("~/Downloads/{safe}{ext}"),
        _ => format!("./{safe}{ext}"),
    }
}

/// `1.5 MiB`-style sizes for the progress line.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v:.0} {}", UNITS[u]) } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_read_from_magic_bytes() {
        let mut iso = vec![0u8; 0x8006];
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        let mut vdi = vec![0u8; 68];
        vdi[64..68].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(detect_format(b"QFI\xfb\0\0\0\x03", "x.img"), "qcow2");
        assert_eq!(detect_format(b"KDMV....", "x"), "vmdk");
        assert_eq!(detect_format(b"vhdxfile", "x"), "vhdx");
        assert_eq!(detect_format(&iso, "x"), "iso");
        assert_eq!(detect_format(&vdi, "x"), "vdi");
        assert_eq!(detect_format(b"\0\0\0\0", "x.iso"), "iso");
        assert_eq!(detect_format(b"\xeb\x63\x90", "disk.img"), "raw");
        assert_eq!(detect_format(b"", "empty"), "raw");
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(name_from_file(Path::new("/tmp/cirros-0.6.2.qcow2")), "cirros-0.6.2");
        assert_eq!(part_path(Path::new("/tmp/a.img")), PathBuf::from("/tmp/a.img.part"));
        let p = default_download_path("web image/1", Some("qcow2"));
        assert!(p.ends_with("web_image_1.qcow2"), "{p}");
        assert!(default_download_path("a.raw", Some("raw")).ends_with("/a.raw"));
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0 * 1024.0), "1.5 MiB");
    }

    #[test]
    fn sums_are_checked_against_the_record_and_header() {
        let mut h = Hashing::default();
        h.update(b"hello");
        let sums = h.sums(5);
        assert_eq!(sums.md5, "5d41402abc4b2a76b9719d911017c592");
        let good = json!({"size": 5, "checksum": sums.md5, "os_hash_algo": "sha512", "os_hash_value": sums.sha512});
        assert!(check_sums(&good, &sums, Some("5D41402ABC4B2A76B9719D911017C592")).is_ok());
        let short = json!({"size": 4});
        assert!(matches!(check_sums(&short, &sums, None), Err(Stop::Failed(m)) if m.contains("size")));
        let bad_md5 = json!({"checksum": "00"});
        assert!(matches!(check_sums(&bad_md5, &sums, None), Err(Stop::Failed(m)) if m.contains("MD5")));
        assert!(matches!(check_sums(&json!({}), &sums, Some("00")), Err(Stop::Failed(m)) if m.contains("MD5")));
        let bad_sha = json!({"os_hash_algo": "sha512", "os_hash_value": "ab"});
        assert!(matches!(check_sums(&bad_sha, &sums, None), Err(Stop::Failed(m)) if m.contains("SHA-512")));
        // Another algorithm is not compared (we do not compute it).
        assert!(check_sums(&json!({"os_hash_algo": "sha256", "os_hash_value": "ab"}), &sums, None).is_ok());
    }
}
