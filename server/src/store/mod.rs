//! The database: one [`Store`] over SQLite (default, embedded) or PostgreSQL (several replicas),
//! through sqlx's `Any` driver so every query is written once in portable SQL.
//!
//! Conventions every table follows (see `migrations/`): TEXT ids, BIGINT integers with 0/1 for
//! booleans, JSON documents as TEXT, timestamps as fixed-width RFC 3339 UTC text ([`now`]).
//! Migrations run at start and are never edited once landed.

pub mod app_creds;
pub mod bfv;
pub mod catalog;
pub mod compute;
pub mod consoles;
pub mod extras;
pub mod groups;
pub mod hosts;
pub mod identity;
pub mod image;
pub mod instances;
pub mod lifecycle;
pub mod lockout;
pub mod migrations;
pub mod network;
pub mod rebuild;
pub mod retention;
pub mod security_groups;
pub mod server_images;
pub mod services;
pub mod snapshots;
mod sql;
mod triggers;
pub mod volume;
pub mod wal_sync;

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyTransactionManager};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Executor, TransactionManager};
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

/// Store failures, already classified for the API layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database error")]
    Other(#[source] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && db.is_unique_violation()
        {
            return StoreError::Conflict(db.message().to_string());
        }
        StoreError::Other(err.into())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Other(err.into())
    }
}

/// Which database is behind the store (a few statements differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Store {
    connections: Connections,
    pub backend: Backend,
    /// Bumped after every committed change to an instance row in this process, so live
    /// readers (the event stream) wake at once instead of waiting for their next poll.
    instance_changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// The port-filter generation: moved after every committed change in this process that
    /// can change some host's port filters (see `security_groups`).
    filter_changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// SQLite's group commit ([`Store::sync`]); `None` where every commit is durable by itself.
    wal_sync: Option<std::sync::Arc<wal_sync::WalSyncer>>,
    /// Statements run through this store's connections ([`Store::statements`]).
    statements: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How SQLite commits reach the disk (`MERIDIAN_SQLITE_SYNCHRONOUS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SqliteDurability {
    /// The default: commits are flushed in groups, and every acknowledged change was flushed
    /// ([`Store::sync`]): as durable as `Full`, with one flush per burst of commits.
    Group,
    /// `synchronous = FULL`: one flush per commit.
    Full,
    /// `synchronous = NORMAL` without the flushes before acknowledging: survives a crash of
    /// the process, may lose the last commits on power loss.
    Normal,
}

impl SqliteDurability {
    fn from_env() -> SqliteDurability {
        match std::env::var("MERIDIAN_SQLITE_SYNCHRONOUS").unwrap_or_default().to_ascii_lowercase().as_str() {
            "full" => SqliteDurability::Full,
            "normal" => SqliteDurability::Normal,
            _ => SqliteDurability::Group,
        }
    }
}

/// Where statements run.
#[derive(Clone)]
enum Connections {
    /// PostgreSQL: a pool, so requests run side by side.
    Pool(AnyPool),
    /// SQLite: its one writer, held directly rather than through a pool of one. Every use of a
    /// pooled connection costs extra round trips to SQLite's worker thread (a ping and a spawned
    /// task on release), and with tens of statements per boot those handoffs were the serial cost.
    /// Checkpoints run on a second connection of their own (see [`checkpoint_in_background`]).
    Single { writer: Shared, checkpointer: Shared },
}

/// A connection used by one task at a time; `None` once the store is closed.
type Shared = std::sync::Arc<Mutex<Option<AnyConnection>>>;

/// How often WAL frames are copied into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// WAL frames (4 KiB pages) beyond which the WAL is started over: 64 MiB.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Copies committed WAL frames into the database file from a connection of its own, so the
/// writer never does it: an automatic checkpoint runs inside whichever commit crosses the WAL
/// size limit and, with its flush of the database file, held every request waiting on the
/// single writer for the length of that flush. PASSIVE never blocks the writer.
///
/// Under a steady stream of commits, though, a PASSIVE checkpoint never reaches the last frame,
/// so the WAL is never started over and grows without bound (seen: 7.3 GiB after 330 s of
/// boot/delete churn). Once it holds more than [`WAL_RESTART_FRAMES`], the writer itself (taken
/// like any request takes it, so no transaction is open) runs a TRUNCATE checkpoint: what is left
/// to copy is what arrived since the last PASSIVE pass, so the writer is held for about one
/// flush. (Run from the checkpointer's connection instead, it made the writer's deferred
/// transactions fail with SQLITE_BUSY when they upgraded to write.)
fn checkpoint_in_background(checkpointer: Shared, writer: Shared) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let frames = {
                let mut guard = checkpointer.lock().await;
                let Some(conn) = guard.as_mut() else { return }; // closed
                match passive_checkpoint(conn).await {
                    Ok(frames) => frames,
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                        continue;
                    }
                }
            };
            if frames > WAL_RESTART_FRAMES {
                let mut guard = writer.lock().await;
                let Some(conn) = guard.as_mut() else { return }; // closed
                if let Err(e) = restart_wal(conn).await {
                    tracing::warn!(error = %e, frames, "WAL restart failed");
                }
            }
        }
    });
}

/// A PASSIVE checkpoint; the frames in the WAL.
async fn passive_checkpoint(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let (_busy, frames, _done): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await?;
    Ok(frames)
}

/// Copies what is left of the WAL and empties it; true when it could (no other connection in
/// the way for the busy timeout).
async fn restart_wal(conn: &mut AnyConnection) -> Result<bool, sqlx::Error> {
    let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&mut *conn).await?;
    Ok(busy == 0)
}

async fn close_shared(shared: &Shared) {
    if let Some(conn) = shared.lock().await.take()
        && let Err(e) = sqlx::Connection::close(conn).await
    {
        tracing::error!(error = %e, "cannot close the database");
    }
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connections::Pool(pool) => pool.fmt(f),
            Connections::Single { .. } => f.write_str("Single(sqlite)"),
        }
    }
}

/// One connection for a few statements, returned when dropped: a pooled PostgreSQL
/// connection or SQLite's single connection, exclusively. Use it as `&mut *conn` (an executor).
pub struct Conn {
    inner: ConnInner,
    statements: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Conn {
    /// SQLite's one connection (its transactions are run by hand, see [`Tx`]).
    fn is_sqlite(&self) -> bool {
        matches!(self.inner, ConnInner::Single(_))
    }
}

enum ConnInner {
    Pooled(PoolConnection<Any>),
    Single(OwnedMappedMutexGuard<Option<AnyConnection>, AnyConnection>),
}

impl std::ops::Deref for Conn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match &self.inner {
            ConnInner::Pooled(c) => c,
            ConnInner::Single(c) => c,
        }
    }
}

/// Every statement takes the connection mutably (sqlx executes on `&mut AnyConnection`), so
/// this is where [`Store::statements`] counts them.
impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &mut self.inner {
            ConnInner::Pooled(c) => c,
            ConnInner::Single(c) => c,
        }
    }
}

/// A transaction on a [`Conn`]: `commit` ends it; dropped without, it is rolled back.
///
/// PostgreSQL's pooled connections use sqlx's transaction manager (the rollback is queued on
/// the connection before it can be used again). SQLite's one connection runs its own `BEGIN`,
/// `COMMIT` and `ROLLBACK`: sqlx counts transaction depth itself and only lowers the count when
/// a statement succeeds, but SQLite rolls a transaction back by itself on some errors
/// (`SQLITE_FULL`, a trigger's `RAISE(ROLLBACK)`), after which sqlx's `ROLLBACK` fails, the
/// count stays one too high, and the next transaction becomes a savepoint whose rollback
/// leaves SQLite inside a transaction: every later write then only looked committed and was
/// lost at the next rollback (seen with the data directory full). Ours never counts, and a
/// failed `COMMIT` (SQLite keeps the transaction open) is rolled back at once.
pub struct Tx {
    /// `None` only once dropped (moved into the rollback task).
    conn: Option<Conn>,
    open: bool,
}

impl Tx {
    fn conn_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a live transaction has its connection")
    }

    pub async fn commit(mut self) -> sqlx::Result<()> {
        let conn = self.conn_mut();
        if conn.is_sqlite() {
            let committed = sqlx::query("COMMIT").execute(&mut **conn).await;
            if committed.is_err() {
                // Still open (SQLite keeps it after a failed COMMIT) or already rolled back:
                // either way it ends here, so nothing later joins it.
                let _ = sqlx::query("ROLLBACK").execute(&mut **conn).await;
            }
            self.open = false;
            committed.map(|_| ())
        } else {
            AnyTransactionManager::commit(&mut **conn).await?;
            self.open = false;
            Ok(())
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let Some(mut conn) = self.conn.take() else { return };
        if !conn.is_sqlite() {
            AnyTransactionManager::start_rollback(&mut conn);
            return;
        }
        // The rollback runs before the connection is free again: the task holds it.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                        // SQLite had already rolled it back by itself.
                        tracing::debug!(error = %e, "rollback of a dropped transaction");
                    }
                });
            }
            Err(_) => tracing::error!("a SQLite transaction was dropped outside the runtime; it stays open"),
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.conn.as_ref().expect("a live transaction has its connection")
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn_mut()
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects (creating a SQLite file and its directory if needed) and applies migrations.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL (use sqlite://PATH or postgres://...)");
        };
        let mut url = url.to_string();
        let durability = SqliteDurability::from_env();
        let mut sqlite_path = None;
        if backend == Backend::Sqlite {
            let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default().to_string();
            sqlite_path = Some(std::path::PathBuf::from(&path));
            if let Some(parent) = Path::new(&path).parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
            if !url.contains('?') {
                url.push_str("?mode=rwc");
            }
        }
        let opts = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let connections = match backend {
            Backend::Sqlite => {
                let mut conn = opts.connect().await?;
                // FULL flushes every commit; NORMAL none (group commit flushes them, see
                // SqliteDurability). journal_size_limit: once a checkpoint lets the WAL start
                // over, it is cut back to 64 MiB, so a burst does not leave a WAL of its peak
                // size on disk for good (seen: 987 MiB after a churn with every row purged).
                let sync = if durability == SqliteDurability::Full { "FULL" } else { "NORMAL" };
                conn.execute(
                    format!(
                        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                         PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 0; \
                         PRAGMA journal_size_limit = 67108864;"
                    )
                    .as_str(),
                )
                .await?;
                MIGRATOR.run(&mut conn).await?;
                triggers::install(&mut conn, backend).await?;
                let mut checkpointer = opts.connect().await?;
                checkpointer.execute("PRAGMA busy_timeout = 10000;").await?;
                let checkpointer = std::sync::Arc::new(Mutex::new(Some(checkpointer)));
                let writer = std::sync::Arc::new(Mutex::new(Some(conn)));
                checkpoint_in_background(checkpointer.clone(), writer.clone());
                Connections::Single { writer, checkpointer }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new().max_connections(16).connect_with(opts).await?;
                MIGRATOR.run(&pool).await?;
                triggers::install(&mut *pool.acquire().await?, backend).await?;
                Connections::Pool(pool)
            }
        };
        let (instance_changes, _) = tokio::sync::watch::channel(0);
        let wal_sync = match sqlite_path {
            Some(path) if durability == SqliteDurability::Group => Some(wal_sync::WalSyncer::start(path)),
            _ => None,
        };
        let store = Store {
            connections,
            backend,
            instance_changes: std::sync::Arc::new(instance_changes),
            filter_changes: std::sync::Arc::new(tokio::sync::watch::channel(security_groups::initial_generation()).0),
            wal_sync,
            statements: Default::default(),
        };
        // Ports from before migration 0016 get their groups (a no-op once done).
        let adopted = store
            .adopt_legacy_security_groups()
            .await
            .map_err(|e| anyhow::anyhow!("adopting port security groups: {e}"))?;
        if adopted > 0 {
            tracing::info!(ports = adopted, "ports from before security groups now use their project's default group");
        }
        Ok(store)
    }

    /// Makes every change committed so far durable (group commit; at once where each commit
    /// already is). Called before a change is acknowledged to anyone outside the process.
    pub async fn sync(&self) -> StoreResult<()> {
        match &self.wal_sync {
            Some(s) => {
                let start = std::time::Instant::now();
                let synced = s.sync().await.map_err(|e| StoreError::Other(e.into()));
                metrics::histogram!("meridian_store_sync_duration_seconds").record(start.elapsed().as_secs_f64());
                synced
            }
            None => Ok(()),
        }
    }

    /// A receiver that sees [`Store::instances_changed`] calls made after it was created.
    pub fn watch_instances(&self) -> tokio::sync::watch::Receiver<u64> {
        self.instance_changes.subscribe()
    }

    /// Records that an instance row changed (called after the change is committed).
    pub(crate) fn instances_changed(&self) {
        self.instance_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A connection for a few statements outside a transaction; hold it only briefly (with
    /// SQLite every other request waits for it).
    pub async fn conn(&self) -> StoreResult<Conn> {
        let inner = match &self.connections {
            Connections::Pool(pool) => ConnInner::Pooled(pool.acquire().await?),
            Connections::Single { writer, .. } => {
                OwnedMutexGuard::try_map(writer.clone().lock_owned().await, Option::as_mut)
                    .map(ConnInner::Single)
                    .map_err(|_| StoreError::Other(anyhow::anyhow!("the database is closed")))?
            }
        };
        Ok(Conn { inner, statements: self.statements.clone() })
    }

    /// How many statements this store has run so far (transaction begin and commit included),
    /// counted where a statement takes its connection: each use of a [`Conn`] or [`Tx`] as an
    /// executor. A helper handed `&mut AnyConnection` that runs several statements on it counts
    /// once. For tests and benchmarks that check a request's statements do not grow with its
    /// page size.
    pub fn statements(&self) -> u64 {
        self.statements.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn begin(&self) -> StoreResult<Tx> {
        let mut conn = self.conn().await?;
        if conn.is_sqlite() {
            sqlx::query("BEGIN").execute(&mut *conn).await?;
        } else {
            AnyTransactionManager::begin(&mut conn, None).await?;
        }
        Ok(Tx { conn: Some(conn), open: true })
    }

    pub async fn close(&self) {
        if let Err(e) = self.sync().await {
            tracing::error!(error = %e, "cannot flush the last changes");
        }
        match &self.connections {
            Connections::Pool(pool) => pool.close().await,
            Connections::Single { writer, checkpointer } => {
                // The writer last: closing the last connection checkpoints the whole WAL.
                close_shared(checkpointer).await;
                close_shared(writer).await;
            }
        }
    }

    /// A named setting (secrets such as the agent join token, bootstrap markers).
    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *self.conn().await?)
            .await?)
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Next value of a named counter (integer ids such as Nova's key pair id).
    pub async fn next_counter(&self, name: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO counters (name, value) VALUES ($1, 1) \
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
        )
        .bind(name)
        .fetch_one(&mut *self.conn().await?)
        .await?)
    }
}

/// The current time in the stored format.
pub fn now() -> String {
    fmt_time(chrono::Utc::now())
}

pub fn fmt_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&chrono::Utc))
}

/// A fresh UUID in OpenStack's dashed form.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh Keystone-style id: 32 lowercase hex digits.
pub fn new_hex_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Booleans are stored as 0/1.
pub fn flag(b: bool) -> i64 {
    i64::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite rolls a transaction back by itself on some errors (here a trigger's
    /// `RAISE(ROLLBACK)`, as `SQLITE_FULL` does); the writes after it are still committed and
    /// durable, whatever else later rolls back.
    #[tokio::test]
    async fn writes_after_a_transaction_sqlite_rolled_back_itself_stay_committed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let url = format!("sqlite://{}", path.display());
        let store = Store::open(&url).await.expect("open");
        let mut c = store.conn().await.expect("conn");
        sqlx::query("CREATE TABLE t (x INTEGER)").execute(&mut *c).await.expect("table");
        sqlx::query(
            "CREATE TRIGGER boom BEFORE INSERT ON t WHEN NEW.x = 666 BEGIN SELECT RAISE(ROLLBACK, 'boom'); END",
        )
        .execute(&mut *c)
        .await
        .expect("trigger");
        drop(c);
        let insert = |x: i64| sqlx::query("INSERT INTO t (x) VALUES ($1)").bind(x);
        {
            let mut tx = store.begin().await.expect("begin");
            insert(1).execute(&mut *tx).await.expect("insert 1");
            assert!(insert(666).execute(&mut *tx).await.is_err(), "the trigger rolls the transaction back");
        }
        let mut tx = store.begin().await.expect("begin");
        insert(2).execute(&mut *tx).await.expect("insert 2");
        tx.commit().await.expect("commit");
        {
            let mut tx = store.begin().await.expect("begin");
            insert(3).execute(&mut *tx).await.expect("insert 3");
        } // rolled back
        insert(4).execute(&mut *store.conn().await.expect("conn")).await.expect("insert 4");
        let mut tx = store.begin().await.expect("begin");
        insert(5).execute(&mut *tx).await.expect("insert 5");
        tx.commit().await.expect("commit");
        // Another connection sees exactly what was committed.
        use sqlx::Connection as _;
        let mut other = sqlx::AnyConnection::connect(&url).await.expect("second connection");
        let seen: Vec<i64> =
            sqlx::query_scalar("SELECT x FROM t ORDER BY x").fetch_all(&mut other).await.expect("read");
        assert_eq!(seen, [2, 4, 5]);
        other.close().await.expect("close");
        store.close().await;
    }

    #[tokio::test]
    async fn the_wal_is_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let store = Store::open(&format!("sqlite://{}", path.display())).await.expect("open");
        // The writer never checkpoints: what it writes reaches the database file only through
        // the checkpointer.
        let value = "x".repeat(1000);
        for i in 0..300 {
            store.set_setting(&format!("k{i}"), &value).await.expect("write");
        }
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let deadline = std::time::Instant::now() + 10 * CHECKPOINT_EVERY;
        while size() < 300_000 && std::time::Instant::now() < deadline {
            tokio::time::sleep(CHECKPOINT_EVERY / 4).await;
        }
        assert!(size() >= 300_000, "database file only {} bytes", size());
        store.set_setting("k", "v").await.expect("write");
        store.close().await;
        let store = Store::open(&format!("sqlite://{}", path.display())).await.expect("reopen");
        assert_eq!(store.setting("k").await.expect("read").as_deref(), Some("v"));
        assert!(store.conn().await.is_ok());
        store.close().await;
        assert!(store.conn().await.is_err(), "a closed store hands out no connection");
    }

    /// A WAL can be started over (what the background checkpointer does past its limit).
    #[tokio::test]
    async fn a_long_wal_is_started_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite");
        let url = format!("sqlite://{}", path.display());
        let store = Store::open(&url).await.expect("open");
        let value = "x".repeat(1000);
        for i in 0..100 {
            store.set_setting(&format!("k{i}"), &value).await.expect("write");
        }
        let wal = || std::fs::metadata(dir.path().join("db.sqlite-wal")).map(|m| m.len()).unwrap_or(0);
        assert!(wal() > 100_000, "the WAL holds the writes: {} bytes", wal());
        let mut conn = <AnyConnection as sqlx::Connection>::connect(&url).await.expect("connect");
        // A PASSIVE checkpoint leaves the file as it is; a restart empties it, and what it held
        // is in the database file.
        // -1: the store's own background checkpointer held the WAL at that moment; ask again.
        let mut frames = -1;
        for _ in 0..100 {
            frames = passive_checkpoint(&mut conn).await.expect("checkpoint");
            if frames >= 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(frames > 10, "frames in the WAL: {frames}");
        assert!(wal() > 100_000);
        assert!(restart_wal(&mut conn).await.expect("restart"));
        assert_eq!(wal(), 0);
        assert_eq!(store.setting("k99").await.expect("read").as_deref(), Some(value.as_str()));
        store.set_setting("after", "v").await.expect("write after the restart");
        store.close().await;
    }

    /// SQLite rolls a transaction back by itself on SQLITE_FULL; what we commit afterwards must
    /// still be committed (seen by another connection), not left in a transaction nobody ends.
    #[tokio::test]
    async fn commits_after_a_full_database_are_committed() {
        use sqlx::{Connection, Executor};
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = Store::open(&url).await.expect("open");
        store.conn().await.expect("conn").execute("CREATE TABLE t (x TEXT)").await.expect("table");
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&mut *store.conn().await.expect("conn"))
            .await
            .expect("count");
        let limit = format!("PRAGMA max_page_count = {}", pages + 6);
        store.conn().await.expect("conn").execute(limit.as_str()).await.expect("limit");
        let big = "b".repeat(3000);
        let mut failures = 0;
        for i in 0..60 {
            let Ok(mut tx) = store.begin().await else { continue };
            let small = sqlx::query("INSERT INTO t VALUES ($1)").bind(format!("s{i}")).execute(&mut *tx).await;
            let large = sqlx::query("INSERT INTO t VALUES ($1)").bind(&big).execute(&mut *tx).await;
            match (small, large) {
                (Ok(_), Ok(_)) => {
                    if tx.commit().await.is_err() {
                        failures += 1;
                    }
                }
                _ => failures += 1,
            }
        }
        assert!(failures > 0, "the database never filled up");
        store.conn().await.expect("conn").execute("PRAGMA max_page_count = 1000000").await.expect("unlimit");
        let mut tx = store.begin().await.expect("begin after the failures");
        sqlx::query("INSERT INTO t VALUES ('after')").execute(&mut *tx).await.expect("insert");
        tx.commit().await.expect("commit");
        store.sync().await.expect("sync");
        let mut other = sqlx::AnyConnection::connect(&url).await.expect("second connection");
        let seen: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE x = 'after'").fetch_one(&mut other).await.expect("read");
        assert_eq!(seen, 1, "the commit after the failures is not visible to another connection");
        store.close().await;
    }
}
