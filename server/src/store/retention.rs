//! Retention: removing what would otherwise only grow, as `nova-manage db archive_deleted_rows`
//! + `purge` and `keystone-manage token_flush` do.
//!
//! - Deleted instances whose deletion is older than a cutoff, with everything keyed on them:
//!   their state transitions, instance actions and action events, work items, and ports they
//!   owned that are somehow still attached to them (their delete normally removed those).
//! - Finished work items (`done`, `failed`, `cancelled`) older than a cutoff, live instances'
//!   included: nothing reads a finished item again (an agent repeating an event for one that is
//!   gone is told it was taken).
//! - Expired tokens (an expired token is refused like an unknown one; revocation is a flag on
//!   the token's row, so it goes with it), and expired unused console tokens.
//!
//! Everything goes in bounded batches, each its own short transaction, with a pause between
//! batches: on SQLite there is one writer, and a purge must not hold it for long.

use std::time::Duration;

use super::sql::Sql;
use super::{Backend, Store, StoreResult, fmt_time};

/// Rows removed, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub instances: u64,
    pub instance_transitions: u64,
    pub instance_actions: u64,
    pub instance_action_events: u64,
    pub work: u64,
    pub ports: u64,
    pub ip_allocations: u64,
    pub tokens: u64,
    pub console_auth_tokens: u64,
}

impl Purged {
    /// Each table with its count, in a fixed order (for reports).
    pub fn tables(&self) -> [(&'static str, u64); 9] {
        [
            ("instances", self.instances),
            ("instance_transitions", self.instance_transitions),
            ("instance_actions", self.instance_actions),
            ("instance_action_events", self.instance_action_events),
            ("work", self.work),
            ("ports", self.ports),
            ("ip_allocations", self.ip_allocations),
            ("tokens", self.tokens),
            ("console_auth_tokens", self.console_auth_tokens),
        ]
    }

    pub fn total(&self) -> u64 {
        self.tables().iter().map(|(_, n)| n).sum()
    }

    fn add(&mut self, o: &Purged) {
        self.instances += o.instances;
        self.instance_transitions += o.instance_transitions;
        self.instance_actions += o.instance_actions;
        self.instance_action_events += o.instance_action_events;
        self.work += o.work;
        self.ports += o.ports;
        self.ip_allocations += o.ip_allocations;
        self.tokens += o.tokens;
        self.console_auth_tokens += o.console_auth_tokens;
    }
}

/// What is old enough to go (stored-format timestamps; older means strictly before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutoffs {
    /// Instances deleted before this.
    pub deleted_before: String,
    /// Work items finished before this.
    pub finished_before: String,
    /// Tokens that expired before this.
    pub expired_before: String,
}

impl Cutoffs {
    /// Deleted instances and finished work older than `age`; every expired token.
    pub fn older_than(age: Duration) -> Cutoffs {
        let now = chrono::Utc::now();
        let before = chrono::Duration::from_std(age)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .map(fmt_time)
            // Older than the calendar allows: nothing is that old.
            .unwrap_or_else(|| "0000-01-01T00:00:00.000000Z".to_string());
        Cutoffs { deleted_before: before.clone(), finished_before: before, expired_before: fmt_time(now) }
    }
}

/// How a purge paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// The most instances, work items or tokens removed in one transaction (an instance's
    /// dependent rows go with it in the same transaction).
    pub size: u32,
    /// Rest between two batches, so other writers get the database.
    pub pause: Duration,
}

impl From<&crate::config::RetentionSettings> for Batching {
    fn from(r: &crate::config::RetentionSettings) -> Batching {
        Batching { size: r.batch_size, pause: Duration::from_millis(r.batch_pause_ms) }
    }
}

/// `IN (…)` over `ids`, appended to `sql`.
fn in_list<'a>(sql: &mut Sql, ids: impl IntoIterator<Item = &'a str>) {
    sql.push("(");
    sql.texts(ids);
    sql.push(")");
}

impl Store {
    /// Everything the cutoffs allow, batch after batch until no full batch is left.
    pub async fn purge(&self, cutoffs: &Cutoffs, batching: &Batching) -> StoreResult<Purged> {
        let mut total = Purged::default();
        let full = u64::from(batching.size);
        loop {
            let p = self.purge_deleted_instances(&cutoffs.deleted_before, batching.size).await?;
            total.add(&p);
            if p.instances < full {
                break;
            }
            tokio::time::sleep(batching.pause).await;
        }
        loop {
            let n = self.purge_finished_work(&cutoffs.finished_before, batching.size).await?;
            total.work += n;
            if n < full {
                break;
            }
            tokio::time::sleep(batching.pause).await;
        }
        loop {
            let n = self.purge_expired_tokens(&cutoffs.expired_before, batching.size).await?;
            total.tokens += n;
            if n < full {
                break;
            }
            tokio::time::sleep(batching.pause).await;
        }
        loop {
            let n = self.purge_expired_console_tokens(&cutoffs.expired_before, batching.size).await?;
            total.console_auth_tokens += n;
            if n < full {
                break;
            }
            tokio::time::sleep(batching.pause).await;
        }
        Ok(total)
    }

    /// One batch: up to `limit` instances deleted before `before` (oldest deletions first), and
    /// their dependent rows, in one transaction.
    pub async fn purge_deleted_instances(&self, before: &str, limit: u32) -> StoreResult<Purged> {
        let mut tx = self.begin().await?;
        // Replicas purging at once skip each other's rows instead of waiting on them.
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let victims: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT id, owned_ports FROM instances WHERE deleted = 1 AND terminated_at < $1 \
             ORDER BY terminated_at LIMIT $2{lock}"
        ))
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if victims.is_empty() {
            return Ok(Purged::default());
        }
        let ids: Vec<&str> = victims.iter().map(|(id, _)| id.as_str()).collect();
        // A malformed list names no port; the instance goes regardless.
        let owned: Vec<String> = victims
            .iter()
            .flat_map(|(_, ports)| serde_json::from_str::<Vec<String>>(ports).unwrap_or_default())
            .collect();
        let mut p = Purged::default();

        let mut sql = Sql::default();
        sql.push("DELETE FROM instance_action_events WHERE action_id IN (SELECT id FROM instance_actions WHERE instance_id IN ");
        in_list(&mut sql, ids.iter().copied());
        sql.push(")");
        p.instance_action_events = sql.query().execute(&mut *tx).await?.rows_affected();

        for (table, count) in [
            ("instance_actions", &mut p.instance_actions),
            ("instance_transitions", &mut p.instance_transitions),
            ("work", &mut p.work),
        ] {
            let mut sql = Sql::default();
            sql.push(&format!("DELETE FROM {table} WHERE instance_id IN "));
            in_list(&mut sql, ids.iter().copied());
            *count = sql.query().execute(&mut *tx).await?.rows_affected();
        }

        if !owned.is_empty() {
            // Only ports the instance made and that still name it; a port the user passed in
            // was detached at delete and is theirs to keep.
            let ports_cond = |sql: &mut Sql| {
                sql.push("SELECT id FROM ports WHERE id IN ");
                in_list(sql, owned.iter().map(String::as_str));
                sql.push(" AND device_id IN ");
                in_list(sql, ids.iter().copied());
            };
            let mut sql = Sql::default();
            sql.push("DELETE FROM ip_allocations WHERE port_id IN (");
            ports_cond(&mut sql);
            sql.push(")");
            p.ip_allocations = sql.query().execute(&mut *tx).await?.rows_affected();
            let mut sql = Sql::default();
            sql.push("DELETE FROM ports WHERE id IN (");
            ports_cond(&mut sql);
            sql.push(")");
            p.ports = sql.query().execute(&mut *tx).await?.rows_affected();
        }

        let mut sql = Sql::default();
        sql.push("DELETE FROM instances WHERE deleted = 1 AND id IN ");
        in_list(&mut sql, ids.iter().copied());
        p.instances = sql.query().execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(p)
    }

    /// One batch: up to `limit` work items finished before `before`.
    pub async fn purge_finished_work(&self, before: &str, limit: u32) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM work WHERE id IN (SELECT id FROM work WHERE state IN ('done', 'failed', 'cancelled') \
             AND updated_at < $1 ORDER BY updated_at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&mut *self.conn().await?)
        .await?
        .rows_affected())
    }

    /// One batch: up to `limit` tokens that expired before `before`.
    pub async fn purge_expired_tokens(&self, before: &str, limit: u32) -> StoreResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM tokens WHERE id IN (SELECT id FROM tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&mut *self.conn().await?)
        .await?
        .rows_affected())
    }
}
