//! `PUT`/`GET /v2/images/{id}/file`: image data streamed to and from `{data_dir}/images/{id}`.
//!
//! Upload never holds the image in memory: the request body is read chunk by chunk and handed
//! over small bounded channels to two blocking threads, one computing md5 (`checksum`) and
//! writing through a buffer into a temporary file in the same directory, the other sha512
//! (`os_hash_value`), so both digests run in parallel. On success the file is fsynced and
//! renamed into place, then the directory is fsynced. Any failure (over the size cap, client
//! gone, disk error) or the request future being dropped puts the image back to `queued` and
//! leaves no partial file behind.

use std::io::{BufWriter, Write};
use std::path::{Path as FsPath, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use md5::{Digest, Md5};
use sha2::Sha512;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::{require_owner, visible_image};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::image::ImageData;
use crate::store::new_hex_id;

/// Chunks in flight between the request reader and the writer thread (bounded memory).
const QUEUE_DEPTH: usize = 32;
/// Write buffer of the writer thread.
const WRITE_BUFFER: usize = 1 << 20;
/// Read size when streaming a download.
const READ_CHUNK: usize = 1 << 20;
/// qcow2 magic (`QFI\xfb`); the virtual size is the big-endian u64 at bytes 24..32.
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
const HEADER_LEN: usize = 32;

pub(crate) fn images_dir(state: &AppState) -> PathBuf {
    state.cfg.data_dir.join("images")
}

pub(crate) fn image_path(state: &AppState, id: &str) -> PathBuf {
    images_dir(state).join(id)
}

/// Removes an image's data file (absent is fine).
pub(crate) async fn remove_data(state: &AppState, id: &str) {
    remove_file_quietly(&image_path(state, id)).await;
}

async fn remove_file_quietly(path: &FsPath) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove image file");
    }
}

// ---- upload ----

enum Msg {
    Data(Bytes),
    Finish,
}

/// What the writer thread produced.
struct Written {
    size: u64,
    md5: String,
    header: Vec<u8>,
}

/// The writing half of an upload (a blocking thread): md5 and write every chunk; on `Finish`,
/// flush and fsync. `Ok(None)` when the sender went away without finishing (abandoned upload).
fn write_file(file: std::fs::File, mut rx: mpsc::Receiver<Msg>) -> std::io::Result<Option<Written>> {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut md5 = Md5::new();
    let mut size = 0u64;
    let mut header = Vec::with_capacity(HEADER_LEN);
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(chunk) => {
                if header.len() < HEADER_LEN {
                    let take = (HEADER_LEN - header.len()).min(chunk.len());
                    header.extend_from_slice(&chunk[..take]);
                }
                md5.update(&chunk);
                out.write_all(&chunk)?;
                size += chunk.len() as u64;
            }
            Msg::Finish => {
                let file = out.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                let md5 = hex::encode(md5.finalize());
                return Ok(Some(Written { size, md5, header }));
            }
        }
    }
    Ok(None)
}

/// The hashing half (its own blocking thread, so both digests run in parallel): sha512.
fn sha512_of(mut rx: mpsc::Receiver<Msg>) -> Option<String> {
    let mut sha = Sha512::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(chunk) => sha.update(&chunk),
            Msg::Finish => return Some(hex::encode(sha.finalize())),
        }
    }
    None
}

fn storage_error(e: std::io::Error) -> ApiError {
    if e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded {
        ApiError::too_large(format!("Image storage media is full: {e}"))
    } else {
        ApiError::internal(format!("writing image data: {e}"))
    }
}

fn too_large(cap: u64) -> ApiError {
    ApiError::too_large(format!("The incoming image is too large: image data exceeds the size cap of {cap} bytes."))
}

/// `virtual_size` as Glance reports it: from the qcow2 header, the size for raw/iso, else null.
fn virtual_size(disk_format: Option<&str>, header: &[u8], size: u64) -> Option<i64> {
    match disk_format {
        Some("qcow2") if header.len() >= HEADER_LEN && header[..4] == QCOW2_MAGIC => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&header[24..32]);
            i64::try_from(u64::from_be_bytes(be)).ok()
        }
        Some("raw") | Some("iso") => i64::try_from(size).ok(),
        _ => None,
    }
}

/// Undoes an unfinished upload: no temporary file, no data file unless the image did become
/// active, and the image back to `queued`. Runs from the handler on errors and, through
/// [`UploadGuard`]'s `Drop`, when the request future is dropped (client gone mid-request).
async fn abandon(state: AppState, id: String, tmp: PathBuf) {
    remove_file_quietly(&tmp).await;
    if let Err(e) = state.store.set_image_status(&id, "saving", "queued").await {
        tracing::error!(image = %id, error = %e, "could not reset an abandoned upload to queued");
    }
    match state.store.get_image(&id).await {
        Ok(img) if img.status == "active" || img.status == "deactivated" => {}
        _ => remove_file_quietly(&image_path(&state, &id)).await,
    }
}

/// Armed while an upload is in progress; dropping it armed cleans up in the background.
struct UploadGuard {
    state: AppState,
    id: String,
    tmp: PathBuf,
    armed: bool,
}

impl UploadGuard {
    async fn abandon(mut self) {
        self.armed = false;
        abandon(self.state.clone(), self.id.clone(), self.tmp.clone()).await;
    }
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::warn!(image = %self.id, "upload interrupted; resetting the image to queued");
        // Unlink at once (cheap); the status reset needs the runtime.
        let _ = std::fs::remove_file(&self.tmp);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(abandon(self.state.clone(), self.id.clone(), self.tmp.clone()));
        }
    }
}

/// Streams the body into `tmp`, then renames it to `dest`. Returns what was written and the
/// sha512.
async fn receive(body: Body, tmp: &FsPath, dest: &FsPath, cap: u64) -> ApiResult<(Written, String)> {
    let path = tmp.to_path_buf();
    let file = tokio::task::spawn_blocking(move || std::fs::File::create_new(path))
        .await
        .map_err(ApiError::internal)?
        .map_err(storage_error)?;
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let (sha_tx, sha_rx) = mpsc::channel(QUEUE_DEPTH);
    let writer = tokio::task::spawn_blocking(move || write_file(file, rx));
    let hasher = tokio::task::spawn_blocking(move || sha512_of(sha_rx));
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let outcome = loop {
        match stream.next().await {
            None => break Ok(()),
            Some(Err(e)) => {
                break Err(ApiError::bad_request(format!("Error reading the image data from the request: {e}")));
            }
            Some(Ok(chunk)) => {
                total += chunk.len() as u64;
                if total > cap {
                    break Err(too_large(cap));
                }
                // `Bytes` clones share the buffer: no copy.
                if sha_tx.send(Msg::Data(chunk.clone())).await.is_err() || tx.send(Msg::Data(chunk)).await.is_err() {
                    // A thread stopped: its result says why.
                    break Ok(());
                }
            }
        }
    };
    if outcome.is_ok() {
        let _ = sha_tx.send(Msg::Finish).await;
        let _ = tx.send(Msg::Finish).await;
    }
    drop((tx, sha_tx));
    let written = writer.await.map_err(ApiError::internal)?.map_err(storage_error);
    let sha512 = hasher.await.map_err(ApiError::internal)?;
    outcome?;
    let stopped = || ApiError::internal("image writer stopped before the end of the data");
    let written = written?.ok_or_else(stopped)?;
    let sha512 = sha512.ok_or_else(stopped)?;
    let (from, to) = (tmp.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::rename(&from, &to)?;
        if let Some(dir) = to.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(storage_error)?;
    Ok((written, sha512))
}

/// `PUT /v2/images/{id}/file` (`application/octet-stream`): 204 once the image is active.
pub async fn upload(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let img = visible_image(&state, &ctx, &id).await?;
    require_owner(&ctx, &img, "upload_image")?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if ct != "application/octet-stream" {
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Invalid content type {ct}")));
        }
    }
    if img.status != "queued" {
        return Err(ApiError::conflict(format!(
            "Image status transition from {} to saving is not allowed",
            img.status
        )));
    }
    let missing: Vec<&str> = [("disk_format", &img.disk_format), ("container_format", &img.container_format)]
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
    match missing.as_slice() {
        [] => {}
        [one] => {
            return Err(ApiError::bad_request(format!("Property {one} must be set prior to saving data.")));
        }
        many => {
            return Err(ApiError::bad_request(format!(
                "Properties {} must be set prior to saving data.",
                many.join(", ")
            )));
        }
    }
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    store_data(&state, &img, declared, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes a queued image's data from `body`: `queued` → `saving`, streamed to disk with its
/// checksum, `os_hash_value` and size, then `active`. Any failure puts the image back to
/// `queued` with no file left. Shared by Glance's upload and the agents' volume uploads.
pub(crate) async fn store_data(
    state: &AppState,
    img: &crate::store::image::Image,
    declared: Option<u64>,
    body: Body,
) -> ApiResult<()> {
    let id = img.id.clone();
    let cap = state.cfg.image_size_cap;
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large(cap));
    }
    if !state.store.set_image_status(&id, "queued", "saving").await? {
        let status = state.store.get_image(&id).await?.status;
        return Err(ApiError::conflict(format!("Image status transition from {status} to saving is not allowed")));
    }
    let dir = images_dir(state);
    let tmp = dir.join(format!(".{id}.{}.part", new_hex_id()));
    let guard = UploadGuard { state: state.clone(), id: id.clone(), tmp: tmp.clone(), armed: true };
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        guard.abandon().await;
        return Err(storage_error(e));
    }
    let dest = image_path(state, &id);
    let (written, sha512) = match receive(body, &tmp, &dest, cap).await {
        Ok(w) => w,
        Err(e) => {
            guard.abandon().await;
            return Err(e);
        }
    };
    let data = ImageData {
        size: i64::try_from(written.size).map_err(ApiError::internal)?,
        checksum: written.md5,
        os_hash_algo: "sha512".into(),
        os_hash_value: sha512,
        virtual_size: virtual_size(img.disk_format.as_deref(), &written.header, written.size),
    };
    match state.store.finish_upload(&id, &data).await {
        Ok(true) => {
            guard.disarm();
            Ok(())
        }
        Ok(false) => {
            guard.abandon().await;
            Err(ApiError::new(
                StatusCode::GONE,
                format!(
                    "Image {id} could not be found after upload. The image may have been deleted during the upload, cleaning up the chunks uploaded."
                ),
            ))
        }
        Err(e) => {
            guard.abandon().await;
            Err(e.into())
        }
    }
}

// ---- download ----

/// A single `bytes=` range resolved against `len`: `Some(Ok((start, end_inclusive)))`,
/// `Some(Err(()))` when unsatisfiable, `None` to serve everything (absent, malformed or
/// multi-range headers are ignored as RFC 9110 allows).
fn byte_range(headers: &HeaderMap, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = headers.get(header::RANGE)?.to_str().ok()?.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() { u64::MAX } else { b.parse().ok()? };
        if end < start {
            return None;
        }
        if start >= len {
            return Some(Err(()));
        }
        (start, end.min(len - 1))
    };
    Some(Ok(range))
}

fn header_value(s: &str) -> ApiResult<HeaderValue> {
    HeaderValue::from_str(s).map_err(ApiError::internal)
}

/// `GET /v2/images/{id}/file`: the data, streamed (206 for a `Range`); 204 when there is none.
pub async fn download(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let img = visible_image(&state, &ctx, &id).await?;
    if img.status == "deactivated" && !ctx.is_admin() {
        return Err(ApiError::forbidden("The requested image has been deactivated. Image data download is forbidden."));
    }
    if !matches!(img.status.as_str(), "active" | "deactivated") {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let path = image_path(&state, &id);
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(image = %id, "active image has no data file");
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Err(e) => return Err(ApiError::internal(format!("opening image data: {e}"))),
    };
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    let (status, start, count) = match byte_range(&headers, len) {
        None => (StatusCode::OK, 0, len),
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Some(Err(())) => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("Requested range not satisfiable (size {len})."),
            ));
        }
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start)).await.map_err(ApiError::internal)?;
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(count), READ_CHUNK);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(header::CONTENT_RANGE, header_value(&format!("bytes {start}-{}/{len}", start + count - 1))?);
    } else if let Some(md5) = &img.checksum {
        h.insert("content-md5", header_value(md5)?);
    }
    Ok(resp)
}
