//! The per-host image cache: each image is downloaded once, checked, and shared by every
//! instance built from it.
//!
//! Layout under the cache directory: `<image id>` files (complete, verified images) and `tmp/`
//! (downloads in progress; cleared at start). Which instances' disks are backed by which image
//! is kept in memory ([`ImageCache::pin`]); its durable record is each instance's own record,
//! from which the controller pins again at start. A pinned image is never evicted.
//!
//! Concurrent builds of one image share one download (a per-image lock; whoever gets it second
//! finds the file). After each download and each release of an instance, least-recently-used
//! images that no instance and no build in progress use are removed until the cache fits its
//! size limit. "Used" is the file's modification time, touched on every hit.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use md5::{Digest, Md5};
use meridian_common::client::ClientError;
use tokio::io::AsyncWriteExt as _;
use tracing::{info, warn};

use crate::server::ServerClient;

/// An image to fetch: its id and what it must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub id: String,
    /// MD5 hex (Glance's `checksum`). Without one, the `Content-MD5` the server sends, if any.
    pub checksum: Option<String>,
    /// Expected size in bytes, when known and non-zero.
    pub size: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image id {0:?} cannot name a file")]
    BadId(String),
    #[error("cannot download image {id}")]
    Download {
        id: String,
        #[source]
        source: ClientError,
    },
    #[error("image {id} failed its checksum: expected {expected}, got {actual}")]
    Checksum { id: String, expected: String, actual: String },
    #[error("image {id} is {actual} bytes, expected {expected}")]
    Size { id: String, expected: u64, actual: u64 },
    #[error("cannot store image {id} in the cache")]
    Io {
        id: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// Whether trying again later may help (a network or server hiccup, a full disk).
    pub fn retryable(&self) -> bool {
        match self {
            ImageError::Download { source, .. } => match source.status() {
                // 401: the host's credential was being replaced; the next try has the new one.
                Some(s) => s.is_server_error() || s.as_u16() == 429 || s.as_u16() == 401,
                None => true,
            },
            ImageError::Io { .. } => true,
            ImageError::BadId(_) | ImageError::Checksum { .. } | ImageError::Size { .. } => false,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Builds currently holding each image.
    leases: HashMap<String, u32>,
    /// One lock per image being fetched.
    downloads: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// Instances whose disks each image backs.
    pins: HashMap<String, HashSet<String>>,
}

/// The cache. Shared as `Arc<ImageCache>`.
pub struct ImageCache {
    dir: PathBuf,
    server: ServerClient,
    max_bytes: u64,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ImageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageCache").field("dir", &self.dir).field("max_bytes", &self.max_bytes).finish()
    }
}

/// A cached image held for one build; the image cannot be evicted while held.
#[derive(Debug)]
pub struct Lease {
    cache: Arc<ImageCache>,
    id: String,
    path: PathBuf,
}

impl Lease {
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.cache.lock();
        if let Some(n) = inner.leases.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                inner.leases.remove(&self.id);
            }
        }
    }
}

/// Image ids become file names: letters, digits, `-`, `_`, `.`, not starting with a dot.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl ImageCache {
    /// Opens (creating) the cache directory and drops interrupted downloads.
    pub fn open(dir: &Path, server: ServerClient, max_bytes: u64) -> std::io::Result<ImageCache> {
        std::fs::create_dir_all(dir)?;
        // Pins used to be files here; instance records hold them now.
        let refs = dir.join("refs");
        if refs.exists() {
            std::fs::remove_dir_all(&refs)?;
        }
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(ImageCache { dir: dir.to_path_buf(), server, max_bytes, inner: Mutex::new(Inner::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where a cached image lives.
    /// The server client the cache downloads with (also for volume uploads).
    pub fn server(&self) -> &ServerClient {
        &self.server
    }

    pub fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Returns the image from the cache, downloading it first if needed (once, however many
    /// callers ask at the same time).
    pub async fn acquire(self: &Arc<Self>, image: &ImageRef) -> Result<Lease, ImageError> {
        if !valid_id(&image.id) {
            return Err(ImageError::BadId(image.id.clone()));
        }
        let path = self.path_of(&image.id);
        // Lease first: from here on, eviction leaves this image alone.
        *self.lock().leases.entry(image.id.clone()).or_default() += 1;
        let lease = Lease { cache: Arc::clone(self), id: image.id.clone(), path: path.clone() };
        if touch(&path) {
            metrics::counter!("meridian_agent_image_cache_requests_total", "result" => "hit").increment(1);
            return Ok(lease);
        }
        let gate = Arc::clone(self.lock().downloads.entry(image.id.clone()).or_default());
        let _fetching = gate.lock().await;
        // Downloaded meanwhile by a concurrent build: a hit for this one.
        if touch(&path) {
            metrics::counter!("meridian_agent_image_cache_requests_total", "result" => "hit").increment(1);
            return Ok(lease);
        }
        metrics::counter!("meridian_agent_image_cache_requests_total", "result" => "miss").increment(1);
        self.download(image, &path).await?;
        self.lock().downloads.remove(&image.id);
        let me = Arc::clone(self);
        // Eviction is best-effort housekeeping: a failure is logged, never fails the build.
        let _ = tokio::task::spawn_blocking(move || {
            me.evict();
            metrics::gauge!("meridian_agent_image_cache_bytes").set(me.size() as f64);
        })
        .await;
        Ok(lease)
    }

    async fn download(&self, image: &ImageRef, path: &Path) -> Result<(), ImageError> {
        let id = image.id.clone();
        let io = |source| ImageError::Io { id: id.clone(), source };
        info!(image = %image.id, "downloading image");
        let mut resp = self
            .server
            .image_file(&image.id)
            .await
            .map_err(|source| ImageError::Download { id: id.clone(), source })?;
        let expected = image
            .checksum
            .clone()
            .filter(|c| !c.is_empty())
            .or_else(|| resp.headers().get("content-md5").and_then(|v| v.to_str().ok()).map(str::to_string))
            .map(|c| c.to_ascii_lowercase());
        let tmp = self.dir.join("tmp").join(format!("{}.{}.part", image.id, uuid::Uuid::new_v4()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
            let mut md5 = Md5::new();
            let mut size: u64 = 0;
            while let Some(chunk) = resp.chunk().await.map_err(|e| ImageError::Download {
                id: id.clone(),
                source: ClientError::Transport { url: format!("image {id}"), source: e },
            })? {
                md5.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(io)?;
            }
            let actual = hex::encode(md5.finalize());
            if let Some(expected) = image.size.filter(|s| *s > 0)
                && expected != size
            {
                return Err(ImageError::Size { id: id.clone(), expected, actual: size });
            }
            match &expected {
                Some(expected) if *expected != actual => {
                    return Err(ImageError::Checksum { id: id.clone(), expected: expected.clone(), actual });
                }
                Some(_) => {}
                None => warn!(image = %id, "no checksum to verify the image against"),
            }
            file.sync_all().await.map_err(io)?;
            drop(file);
            tokio::fs::rename(&tmp, path).await.map_err(io)?;
            sync_dir(&self.dir).map_err(io)?;
            info!(image = %id, bytes = size, "image cached");
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Records that `instance` has a disk backed by `image` (never evicted while pinned).
    pub fn pin(&self, image: &str, instance: &str) {
        self.lock().pins.entry(image.to_string()).or_default().insert(instance.to_string());
    }

    /// Whether some instance's disk is backed by the image.
    pub fn is_pinned(&self, image: &str) -> bool {
        self.lock().pins.contains_key(image)
    }

    /// Forgets every image `instance` used, then evicts what no longer fits. Blocking.
    pub fn unpin_instance(&self, instance: &str) {
        self.lock().pins.retain(|_, users| {
            users.remove(instance);
            !users.is_empty()
        });
        self.evict();
        metrics::gauge!("meridian_agent_image_cache_bytes").set(self.size() as f64);
    }

    /// Total bytes of cached images.
    pub fn size(&self) -> u64 {
        self.entries().iter().map(|e| e.1).sum()
    }

    /// Cached images: id, bytes, last use.
    fn entries(&self) -> Vec<(String, u64, SystemTime)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                if !meta.is_file() {
                    return None;
                }
                let id = e.file_name().into_string().ok()?;
                Some((id, meta.len(), meta.modified().ok()?))
            })
            .collect()
    }

    /// Removes least-recently-used images that nothing uses until the cache fits its limit.
    /// Blocking (file system); returns the ids removed.
    pub fn evict(&self) -> Vec<String> {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let mut removed = Vec::new();
        if total <= self.max_bytes {
            return removed;
        }
        entries.sort_by_key(|e| e.2);
        // Held while deciding and deleting, so a concurrent acquire either leased first (and
        // is skipped here) or finds the file gone and downloads it again.
        let inner = self.lock();
        for (id, bytes, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            if inner.leases.contains_key(&id) || inner.pins.contains_key(&id) {
                continue;
            }
            match std::fs::remove_file(self.path_of(&id)) {
                Ok(()) => {
                    info!(image = %id, bytes, "evicted image from the cache");
                    total -= bytes;
                    removed.push(id);
                }
                Err(e) => warn!(image = %id, error = %e, "cannot evict image"),
            }
        }
        removed
    }
}

/// Marks a cached image as just used; false when it is not cached.
fn touch(path: &Path) -> bool {
    match std::fs::File::options().write(true).open(path) {
        Ok(f) => {
            let _ = f.set_modified(SystemTime::now());
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    use axum::routing::get;

    /// A stand-in for the server's image endpoint: serves fixed bytes per id, counts requests.
    #[derive(Clone, Default)]
    struct Images {
        files: Arc<HashMap<String, Vec<u8>>>,
        hits: Arc<AtomicUsize>,
    }

    async fn serve_image(State(s): State<Images>, UrlPath(id): UrlPath<String>) -> Result<Vec<u8>, StatusCode> {
        s.hits.fetch_add(1, Ordering::SeqCst);
        // Slow enough that concurrent callers overlap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.files.get(&id).cloned().ok_or(StatusCode::NOT_FOUND)
    }

    async fn start(files: &[(&str, Vec<u8>)]) -> (String, Images) {
        let images = Images {
            files: Arc::new(files.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()),
            hits: Arc::default(),
        };
        let app = Router::new().route("/agent/v1/images/{id}/file", get(serve_image)).with_state(images.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), images)
    }

    fn md5_hex(b: &[u8]) -> String {
        hex::encode(Md5::digest(b))
    }

    fn cache(dir: &Path, url: &str, max: u64) -> Arc<ImageCache> {
        let server = ServerClient::new(url, "token").expect("client");
        Arc::new(ImageCache::open(dir, server, max).expect("open cache"))
    }

    fn image(id: &str, data: &[u8]) -> ImageRef {
        ImageRef { id: id.into(), checksum: Some(md5_hex(data)), size: Some(data.len() as u64) }
    }

    #[tokio::test]
    async fn downloads_once_for_concurrent_builds() {
        let data = vec![7u8; 100_000];
        let (url, srv) = start(&[("img1", data.clone())]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cache(dir.path(), &url, u64::MAX);
        let img = image("img1", &data);
        let leases = futures_util::future::join_all((0..8).map(|_| c.acquire(&img))).await;
        for l in &leases {
            let l = l.as_ref().expect("acquired");
            assert_eq!(std::fs::read(l.path()).expect("read"), data);
        }
        assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
        // Later builds hit the cache too.
        drop(leases);
        c.acquire(&img).await.expect("cached");
        assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn checksum_mismatch_is_rejected_and_leaves_nothing() {
        let (url, _srv) = start(&[("img1", b"actual bytes".to_vec())]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cache(dir.path(), &url, u64::MAX);
        let mut img = image("img1", b"expected bytes");
        img.size = None;
        let err = c.acquire(&img).await.expect_err("mismatch");
        assert!(matches!(err, ImageError::Checksum { .. }), "{err:?}");
        assert!(!err.retryable());
        assert!(!c.path_of("img1").exists());
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0);
        // The size is checked as well.
        let mut img = image("img1", b"actual bytes");
        img.size = Some(3);
        let err = c.acquire(&img).await.expect_err("size");
        assert!(matches!(err, ImageError::Size { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn missing_image_and_bad_ids_fail() {
        let (url, _srv) = start(&[]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cache(dir.path(), &url, u64::MAX);
        let err = c.acquire(&image("nope", b"x")).await.expect_err("404");
        assert!(matches!(err, ImageError::Download { .. }));
        assert!(!err.retryable());
        let err = c.acquire(&image("../etc", b"x")).await.expect_err("bad id");
        assert!(matches!(err, ImageError::BadId(_)));
    }

    #[tokio::test]
    async fn evicts_least_recently_used_images_nothing_uses() {
        let a = vec![1u8; 1000];
        let b = vec![2u8; 1000];
        let cc = vec![3u8; 1000];
        let d = vec![4u8; 1000];
        let (url, _srv) = start(&[("a", a.clone()), ("b", b.clone()), ("c", cc.clone()), ("d", d.clone())]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let c = cache(dir.path(), &url, 2500);
        // a: pinned by an instance; b: used least recently; c: held by a build in progress.
        drop(c.acquire(&image("a", &a)).await.expect("a"));
        c.pin("a", "inst1");
        drop(c.acquire(&image("b", &b)).await.expect("b"));
        let held = c.acquire(&image("c", &cc)).await.expect("c");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Touch b after a: a stays pinned anyway; b is still the oldest unused one.
        drop(c.acquire(&image("d", &d)).await.expect("d"));
        assert!(c.path_of("a").exists(), "pinned image evicted");
        assert!(!c.path_of("b").exists(), "LRU unused image kept");
        assert!(c.path_of("c").exists(), "image in use evicted");
        assert!(c.path_of("d").exists());
        assert_eq!(c.size(), 3000);
        drop(held);
        // Unpinning a lets the cache shrink to its limit: a is now the oldest unused image.
        c.unpin_instance("inst1");
        assert!(!c.path_of("a").exists());
        assert!(c.size() <= 2500);
    }

    #[tokio::test]
    async fn interrupted_downloads_are_cleared_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
        std::fs::write(dir.path().join("tmp/x.part"), b"half").expect("write");
        let _c = cache(dir.path(), "http://127.0.0.1:9", u64::MAX);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0);
    }
}
