//! The database: one [`Store`] over SQLite (default, embedded) or PostgreSQL (several replicas),
//! through sqlx's `Any` driver so every query is written once in portable SQL.
//!
//! Conventions every table follows (see `migrations/`): TEXT ids, BIGINT integers with 0/1 for
//! booleans, JSON documents as TEXT, timestamps as fixed-width RFC 3339 UTC text ([`now`]).
//! Migrations run at start and are never edited once landed.

pub mod compute;
pub mod hosts;
pub mod identity;
pub mod image;
pub mod instances;
pub mod network;
pub mod wal_sync;

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

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

/// Which database is behind the pool (a few statements differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Store {
    pub pool: AnyPool,
    pub backend: Backend,
    /// Bumped after every committed change to an instance row in this process, so live
    /// readers (the event stream) wake at once instead of waiting for their next poll.
    instance_changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// SQLite's group commit ([`Store::sync`]); `None` where every commit is durable by itself.
    wal_sync: Option<std::sync::Arc<wal_sync::WalSyncer>>,
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

pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

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
        let pool = match backend {
            // SQLite has one writer; a single connection serialises writes without BUSY errors
            // and is far from being the bottleneck at this scale.
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(1)
                    // The connection is in-process: nothing to test before each use (a ping is
                    // a round trip to SQLite's worker thread, on every query).
                    .test_before_acquire(false)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                            )
                            .await?;
                            // FULL flushes every commit; NORMAL none (group commit flushes
                            // them, see SqliteDurability).
                            let sync = if durability == SqliteDurability::Full { "FULL" } else { "NORMAL" };
                            conn.execute(format!("PRAGMA synchronous = {sync};").as_str()).await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await?
            }
            Backend::Postgres => AnyPoolOptions::new().max_connections(16).connect_with(opts).await?,
        };
        MIGRATOR.run(&pool).await?;
        let (instance_changes, _) = tokio::sync::watch::channel(0);
        let wal_sync = match sqlite_path {
            Some(path) if durability == SqliteDurability::Group => Some(wal_sync::WalSyncer::start(path)),
            _ => None,
        };
        Ok(Store { pool, backend, instance_changes: std::sync::Arc::new(instance_changes), wal_sync })
    }

    /// Makes every change committed so far durable (group commit; at once where each commit
    /// already is). Called before a change is acknowledged to anyone outside the process.
    pub async fn sync(&self) -> StoreResult<()> {
        match &self.wal_sync {
            Some(s) => s.sync().await.map_err(|e| StoreError::Other(e.into())),
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

    pub async fn begin(&self) -> StoreResult<Tx> {
        Ok(self.pool.begin().await?)
    }

    pub async fn close(&self) {
        if let Err(e) = self.sync().await {
            tracing::error!(error = %e, "cannot flush the last changes");
        }
        self.pool.close().await;
    }

    /// A named setting (secrets such as the agent join token, bootstrap markers).
    pub async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?)
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
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
        .fetch_one(&self.pool)
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
