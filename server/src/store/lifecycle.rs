//! The lifecycle columns that are not part of [`super::instances::Instance`]: the lock's holder
//! and reason (migration 0022), and the instance's tags (a JSON list in `instances.tags`).

use std::collections::BTreeMap;

use super::identity::found;
use super::sql::Sql;
use super::{Store, StoreResult, now};

/// Who holds an instance's lock and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct LockInfo {
    pub id: String,
    /// `owner` or `admin` (Nova's `locked_by`).
    pub locked_by: Option<String>,
    pub locked_reason: Option<String>,
}

impl Store {
    /// Locks (`Some(holder)`) or unlocks (`None`) a live instance, with the reason given.
    pub async fn set_instance_lock(&self, id: &str, holder: Option<&str>, reason: Option<&str>) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE instances SET locked = $2, locked_by = $3, locked_reason = $4, updated_at = $5 \
             WHERE id = $1 AND deleted = 0",
        )
        .bind(id)
        .bind(i64::from(holder.is_some()))
        .bind(holder)
        .bind(reason.filter(|_| holder.is_some()))
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        self.instances_changed();
        found(done.rows_affected(), || format!("Instance {id} could not be found."))
    }

    /// The lock holder and reason of each locked instance among `ids`, in one statement.
    pub async fn lock_info(&self, ids: &[&str]) -> StoreResult<BTreeMap<String, LockInfo>> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut sql = Sql::default();
        sql.push("SELECT id, locked_by, locked_reason FROM instances WHERE locked <> 0 AND id IN (")
            .texts(ids.iter().copied())
            .push(")");
        let rows: Vec<LockInfo> = sql.query_as().fetch_all(&mut *self.conn().await?).await?;
        Ok(rows.into_iter().map(|l| (l.id.clone(), l)).collect())
    }

    /// Replaces a live instance's tags (`tags`: the JSON list as it is to be stored).
    pub async fn set_instance_tags(&self, id: &str, tags: &str) -> StoreResult<()> {
        let done = sqlx::query("UPDATE instances SET tags = $2, updated_at = $3 WHERE id = $1 AND deleted = 0")
            .bind(id)
            .bind(tags)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        self.instances_changed();
        found(done.rows_affected(), || format!("Instance {id} could not be found."))
    }
}
