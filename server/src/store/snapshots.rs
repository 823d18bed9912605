//! Volume snapshots (migration 0019): rows beside their volume, status changes guarded on the
//! expected statuses and recorded in `volume_snapshot_transitions` in the same transaction, as
//! volumes' are. The bytes live on the volume's host; their work items are keyed by the volume.

use super::{Store, StoreError, StoreResult, Tx, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Snapshot {
    pub id: String,
    pub volume_id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub size: i64,
    pub status: String,
    pub progress: String,
    pub metadata: String,
    pub deadline: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A project's snapshot limits for a create (-1: unlimited). Gigabytes count volumes and
/// snapshots together, as Cinder's `gigabytes` quota does.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotLimits {
    pub snapshots: i64,
    pub gigabytes: i64,
}

/// Why a snapshot was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateRefused {
    /// The volume was in none of the statuses asked for (it changed meanwhile).
    VolumeState,
    /// A limit would be exceeded.
    Quota,
}

/// Why a revert did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevertRefused {
    /// The volume was not `available`.
    Volume,
    /// The snapshot was not `available`.
    Snapshot,
}

const SNAP_COLS: &str = "id, volume_id, project_id, user_id, name, description, size, status, progress, metadata, \
    deadline, created_at, updated_at";

fn unlimited(n: i64) -> i64 {
    if n < 0 { i64::MAX } else { n }
}

impl Store {
    /// Stores a new snapshot (`creating`) with its first transition and the host's work item
    /// (keyed by the volume), in one transaction; the volume's status and the project's limits
    /// are read by the INSERT itself.
    pub async fn create_snapshot(
        &self,
        s: &Snapshot,
        volume_statuses: &[&str],
        limits: SnapshotLimits,
        host_id: &str,
        action: &str,
    ) -> StoreResult<Result<(), CreateRefused>> {
        let mut tx = self.begin().await?;
        let mut sql = super::sql::Sql::default();
        sql.push(&format!("INSERT INTO volume_snapshots ({SNAP_COLS}) SELECT "));
        for (i, v) in [&s.id, &s.volume_id, &s.project_id, &s.user_id].into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.text(v.as_str());
        }
        let opt = |sql: &mut super::sql::Sql, v: &Option<String>| match v {
            Some(v) => {
                sql.push(", ").text(v.as_str());
            }
            None => {
                sql.push(", NULL");
            }
        };
        opt(&mut sql, &s.name);
        opt(&mut sql, &s.description);
        sql.push(", ").int(s.size);
        sql.push(", ").text(s.status.as_str()).push(", ").text(s.progress.as_str());
        sql.push(", ").text(s.metadata.as_str());
        opt(&mut sql, &s.deadline);
        sql.push(", ").text(s.created_at.as_str()).push(", ").text(s.updated_at.as_str());
        sql.push(" WHERE EXISTS (SELECT 1 FROM volumes WHERE id = ").text(s.volume_id.as_str());
        sql.push(" AND status IN (");
        sql.texts(volume_statuses.iter().copied());
        sql.push("))");
        let inserted = sql.query().execute(&mut *tx).await?.rows_affected() == 1;
        if !inserted {
            return Ok(Err(CreateRefused::VolumeState));
        }
        // The limits, read after the row is in (so concurrent creates count each other).
        let (count, gb) = snapshot_usage_in(&mut tx, &s.project_id).await?;
        let volume_gb: i64 =
            sqlx::query_scalar("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM volumes WHERE project_id = $1")
                .bind(&s.project_id)
                .fetch_one(&mut *tx)
                .await?;
        if count > unlimited(limits.snapshots) || gb + volume_gb > unlimited(limits.gigabytes) {
            // Dropping the transaction rolls the row back.
            return Ok(Err(CreateRefused::Quota));
        }
        record_transition(&mut tx, &s.id, &s.status).await?;
        super::hosts::enqueue_work_in(&mut tx, &s.volume_id, host_id, action).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    pub async fn get_snapshot(&self, id: &str) -> StoreResult<Snapshot> {
        sqlx::query_as(&format!("SELECT {SNAP_COLS} FROM volume_snapshots WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Snapshot {id} could not be found.")))
    }

    /// Snapshots of one project (every project's with `None`), oldest first.
    pub async fn list_snapshots(&self, project_id: Option<&str>) -> StoreResult<Vec<Snapshot>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SNAP_COLS} FROM volume_snapshots WHERE ($1 IS NULL OR project_id = $1) ORDER BY created_at, id"
        ))
        .bind(project_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// A volume's snapshots, oldest first.
    pub async fn volume_snapshots(&self, volume_id: &str) -> StoreResult<Vec<Snapshot>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SNAP_COLS} FROM volume_snapshots WHERE volume_id = $1 ORDER BY created_at, id"
        ))
        .bind(volume_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// (count, gigabytes) of a project's snapshots.
    pub async fn snapshot_usage(&self, project_id: &str) -> StoreResult<(i64, i64)> {
        let mut tx = self.begin().await?;
        let u = snapshot_usage_in(&mut tx, project_id).await?;
        tx.commit().await?;
        Ok(u)
    }

    /// Name, description and metadata as given (no status change).
    pub async fn update_snapshot(&self, s: &Snapshot) -> StoreResult<()> {
        sqlx::query(
            "UPDATE volume_snapshots SET name = $2, description = $3, metadata = $4, updated_at = $5 WHERE id = $1",
        )
        .bind(&s.id)
        .bind(&s.name)
        .bind(&s.description)
        .bind(&s.metadata)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Moves a snapshot from one of `from` to `to` (with its deadline; `None` for a lasting
    /// status) and, when given, sets its progress. `false`: its status was none of `from`.
    pub async fn set_snapshot_status(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        deadline: Option<&str>,
        progress: Option<&str>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let moved = set_status_in(&mut tx, id, from, to, deadline).await?;
        if moved && let Some(p) = progress {
            sqlx::query("UPDATE volume_snapshots SET progress = $2 WHERE id = $1")
                .bind(id)
                .bind(p)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// Starts a snapshot's agent work (a delete): the status change and the work item (keyed
    /// by the volume) in one transaction. `false`: the snapshot was in none of `from`.
    #[allow(clippy::too_many_arguments)]
    pub async fn begin_snapshot_work(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        deadline: &str,
        volume_id: &str,
        host_id: &str,
        action: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !set_status_in(&mut tx, id, from, to, Some(deadline)).await? {
            return Ok(false);
        }
        super::hosts::enqueue_work_in(&mut tx, volume_id, host_id, action).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Finishes a snapshot's work item and moves the snapshot on (when still in one of
    /// `from`); `progress` with it when given. `false`: the item was already finished.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_snapshot_work(
        &self,
        id: &str,
        work_id: &str,
        outcome: &str,
        message: Option<&str>,
        from: &[&str],
        to: &str,
        progress: Option<&str>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !super::hosts::finish_work_in(&mut tx, work_id, outcome, message).await? {
            return Ok(false);
        }
        if set_status_in(&mut tx, id, from, to, None).await?
            && let Some(p) = progress
        {
            sqlx::query("UPDATE volume_snapshots SET progress = $2 WHERE id = $1")
                .bind(id)
                .bind(p)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Starts a revert (Cinder 3.40): the volume `available` → `reverting` (with the
    /// deadline), the snapshot `available` → `restoring`, and the volume's work item, in one
    /// transaction. The volume's deadline covers both (see `volume::work::tick`).
    pub async fn begin_revert(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        deadline: &str,
        host_id: &str,
        action: &str,
    ) -> StoreResult<Result<(), RevertRefused>> {
        let mut tx = self.begin().await?;
        if !super::volume::set_status_in(&mut tx, volume_id, &["available"], "reverting", Some(deadline)).await? {
            return Ok(Err(RevertRefused::Volume));
        }
        if !set_status_in(&mut tx, snapshot_id, &["available"], "restoring", None).await? {
            // Dropping the transaction rolls the volume's change back.
            return Ok(Err(RevertRefused::Snapshot));
        }
        super::hosts::enqueue_work_in(&mut tx, volume_id, host_id, action).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Ends a revert: the work item finished, the volume `reverting` → `volume_to`, and the
    /// volume's `restoring` snapshots back to `available` (the snapshot is unchanged either
    /// way; with the agent's answer even if an admin moved the volume meanwhile). `false`: the
    /// item was already finished, or (no item: the deadline) the volume was not `reverting`.
    pub async fn finish_revert(
        &self,
        volume_id: &str,
        work_id: Option<(&str, &str, Option<&str>)>,
        volume_to: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if let Some((id, outcome, message)) = work_id
            && !super::hosts::finish_work_in(&mut tx, id, outcome, message).await?
        {
            return Ok(false);
        }
        let moved = super::volume::set_status_in(&mut tx, volume_id, &["reverting"], volume_to, None).await?;
        if moved || work_id.is_some() {
            let restoring: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM volume_snapshots WHERE volume_id = $1 AND status = 'restoring' ORDER BY id",
            )
            .bind(volume_id)
            .fetch_all(&mut *tx)
            .await?;
            for id in restoring {
                set_status_in(&mut tx, &id, &["restoring"], "available", None).await?;
            }
        }
        tx.commit().await?;
        Ok(moved || work_id.is_some())
    }

    /// The agent removed the snapshot's bytes: the row goes; its transitions stay, ending in
    /// `deleted`.
    pub async fn snapshot_deleted(&self, id: &str, work_id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !super::hosts::finish_work_in(&mut tx, work_id, "done", None).await? {
            return Ok(false);
        }
        let gone =
            sqlx::query("DELETE FROM volume_snapshots WHERE id = $1").bind(id).execute(&mut *tx).await?.rows_affected();
        if gone == 1 {
            record_transition(&mut tx, id, "deleted").await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The statuses a snapshot went through, oldest first.
    pub async fn snapshot_transitions(&self, id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT status FROM volume_snapshot_transitions WHERE snapshot_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    /// Snapshots whose transitional status outlived its deadline.
    pub async fn snapshots_past_deadline(&self, at: &str) -> StoreResult<Vec<Snapshot>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SNAP_COLS} FROM volume_snapshots WHERE deadline IS NOT NULL AND deadline < $1"
        ))
        .bind(at)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Open (pending or delivered) work items keyed by a volume: (work id, action JSON).
    pub async fn open_volume_work(&self, volume_id: &str) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, action FROM work WHERE instance_id = $1 AND state IN ('pending', 'delivered') \
             ORDER BY created_at, id",
        )
        .bind(volume_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Cascade delete of a volume (Cinder's `cascade=true`): every snapshot to `deleting` with
    /// its agent work, then the volume to `deleting` with its own, in one transaction. `false`:
    /// the volume or a snapshot was not in a deletable status (nothing changed).
    #[allow(clippy::too_many_arguments)]
    pub async fn begin_cascade_delete(
        &self,
        volume_id: &str,
        volume_from: &[&str],
        snapshots: &[(String, String)],
        snapshot_from: &[&str],
        deadline: &str,
        host_id: &str,
        volume_action: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        for (id, action) in snapshots {
            if !set_status_in(&mut tx, id, snapshot_from, "deleting", Some(deadline)).await? {
                return Ok(false);
            }
            super::hosts::enqueue_work_in(&mut tx, volume_id, host_id, action).await?;
        }
        if !super::volume::set_status_in(&mut tx, volume_id, volume_from, "deleting", Some(deadline)).await? {
            return Ok(false);
        }
        // Nothing else may have appeared meanwhile (a snapshot created between the read and now).
        let others: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM volume_snapshots WHERE volume_id = $1 AND status <> 'deleting'")
                .bind(volume_id)
                .fetch_one(&mut *tx)
                .await?;
        if others > 0 {
            return Ok(false);
        }
        super::hosts::enqueue_work_in(&mut tx, volume_id, host_id, volume_action).await?;
        tx.commit().await?;
        Ok(true)
    }
}

async fn snapshot_usage_in(tx: &mut Tx, project_id: &str) -> StoreResult<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM volume_snapshots WHERE project_id = $1",
    )
    .bind(project_id)
    .fetch_one(&mut **tx)
    .await?)
}

/// The guarded status change of a snapshot and its transition row.
async fn set_status_in(tx: &mut Tx, id: &str, from: &[&str], to: &str, deadline: Option<&str>) -> StoreResult<bool> {
    super::volume::set_status_of(super::volume::SNAPSHOTS, tx, id, from, to, deadline).await
}

async fn record_transition(tx: &mut Tx, id: &str, status: &str) -> StoreResult<()> {
    super::volume::transition_of(super::volume::SNAPSHOTS, tx, id, status).await
}
