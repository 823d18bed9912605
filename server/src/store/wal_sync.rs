//! Group commit for SQLite: commits are written to the WAL without waiting for the disk
//! (`synchronous = NORMAL`), and [`WalSyncer::sync`] makes everything committed so far durable
//! with one `fdatasync` of the WAL shared by every caller waiting at that moment. The API calls
//! it before it acknowledges a change (see `lib.rs`), so an acknowledged change survives a power
//! loss as with `synchronous = FULL`, while a burst of commits costs one flush instead of one
//! each.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, watch};

/// How far the flushes have got: every ticket up to `done` is durable; `failed` is the last
/// flush that failed (its tickets get the error).
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    done: u64,
    failed: u64,
}

impl Progress {
    /// The last ticket answered, one way or the other.
    fn settled(&self) -> u64 {
        self.done.max(self.failed)
    }
}

#[derive(Debug)]
pub struct WalSyncer {
    wal: PathBuf,
    /// Tickets handed out: a caller's ticket is taken after its commit.
    requested: AtomicU64,
    wake: Notify,
    progress: watch::Sender<Progress>,
}

impl WalSyncer {
    /// A syncer for the database file at `db_path`, with its flusher running on the runtime.
    pub fn start(db_path: PathBuf) -> Arc<WalSyncer> {
        let mut wal = db_path.into_os_string();
        wal.push("-wal");
        let (progress, _) = watch::channel(Progress::default());
        let s = Arc::new(WalSyncer { wal: wal.into(), requested: AtomicU64::new(0), wake: Notify::new(), progress });
        tokio::spawn(Arc::clone(&s).flusher());
        s
    }

    /// Waits until everything committed before this call is on disk.
    pub async fn sync(&self) -> std::io::Result<()> {
        let mut rx = self.progress.subscribe();
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_one();
        let p = *rx
            .wait_for(|p| p.settled() >= ticket)
            .await
            .map_err(|_| std::io::Error::other("the WAL flusher stopped"))?;
        if p.done >= ticket { Ok(()) } else { Err(std::io::Error::other("flushing the database WAL failed")) }
    }

    /// One flush at a time, each covering every ticket taken before it started.
    async fn flusher(self: Arc<Self>) {
        let mut last_inode = None;
        loop {
            let target = self.requested.load(Ordering::Acquire);
            if self.progress.borrow().settled() >= target {
                self.wake.notified().await;
                continue;
            }
            let (wal, seen) = (self.wal.clone(), last_inode);
            let flushed = tokio::task::spawn_blocking(move || flush(&wal, seen)).await;
            match flushed {
                Ok(Ok(inode)) => {
                    last_inode = inode.or(last_inode);
                    self.progress.send_modify(|p| p.done = target);
                }
                Ok(Err(e)) => {
                    tracing::error!(wal = %self.wal.display(), error = %e, "cannot flush the database WAL");
                    self.progress.send_modify(|p| p.failed = target);
                }
                Err(_) => self.progress.send_modify(|p| p.failed = target),
            }
        }
    }
}

/// fdatasync of the WAL; its directory too when the WAL is a new file (its name must survive as
/// well). A missing WAL was checkpointed into the database, which that checkpoint synced.
fn flush(wal: &std::path::Path, last_inode: Option<u64>) -> std::io::Result<Option<u64>> {
    let file = match std::fs::File::open(wal) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    file.sync_data()?;
    let inode = file.metadata()?.ino();
    if last_inode != Some(inode)
        && let Some(dir) = wal.parent()
    {
        let dir = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(Some(inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_syncs_all_complete_and_a_missing_wal_counts_as_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("m.db");
        let s = WalSyncer::start(db.clone());
        s.sync().await.expect("no WAL yet");
        std::fs::write(dir.path().join("m.db-wal"), b"frames").expect("wal");
        let waits: Vec<_> = (0..50)
            .map(|_| {
                let s = Arc::clone(&s);
                tokio::spawn(async move { s.sync().await })
            })
            .collect();
        for w in waits {
            w.await.expect("join").expect("synced");
        }
        // Far fewer flushes than callers is the point, but any count is correct.
        assert!(s.progress.borrow().done >= 51);
    }

    #[tokio::test]
    async fn an_unreadable_wal_fails_the_waiters() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory where the WAL should be: opening it for sync works, so use a dangling
        // path inside a file instead (ENOTDIR), which no flush can get past.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").expect("file");
        let s = WalSyncer::start(blocker.join("m.db"));
        assert!(s.sync().await.is_err());
    }
}
