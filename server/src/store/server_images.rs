//! The images instances make of themselves (createImage, createBackup, shelve) and what a
//! shelved instance keeps (migration 0023).

use super::hosts::{Claim, Ratios, claim_on};
use super::{Store, StoreResult, now};

/// An image an instance action is making or made.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InstanceImage {
    pub image_id: String,
    pub instance_id: String,
    /// `snapshot`, `backup` or `shelve`.
    pub kind: String,
    pub backup_type: Option<String>,
    pub rotation: Option<i64>,
    /// `uploading` or `done`.
    pub state: String,
    pub created_at: String,
}

/// A shelved instance's record (Nova's `shelved_*` system metadata).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Shelf {
    pub instance_id: String,
    pub image_id: Option<String>,
    pub shelved_at: String,
    pub shelved_host: Option<String>,
}

const COLS: &str = "image_id, instance_id, kind, backup_type, rotation, state, created_at";

impl Store {
    /// Records an image an instance action is about to make.
    pub async fn add_instance_image(
        &self,
        image_id: &str,
        instance_id: &str,
        kind: &str,
        backup: Option<(&str, i64)>,
    ) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO instance_images ({COLS}) VALUES ($1, $2, $3, $4, $5, 'uploading', $6)"))
            .bind(image_id)
            .bind(instance_id)
            .bind(kind)
            .bind(backup.map(|b| b.0))
            .bind(backup.map(|b| b.1))
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn instance_image(&self, image_id: &str) -> StoreResult<Option<InstanceImage>> {
        Ok(sqlx::query_as(&format!("SELECT {COLS} FROM instance_images WHERE image_id = $1"))
            .bind(image_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?)
    }

    /// The images an instance is making now (at most one, as one task runs at a time).
    pub async fn uploading_instance_images(&self, instance_id: &str) -> StoreResult<Vec<InstanceImage>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLS} FROM instance_images WHERE instance_id = $1 AND state = 'uploading' ORDER BY created_at"
        ))
        .bind(instance_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Marks an image made; `false` when it was not uploading (a repeat, or failed meanwhile).
    pub async fn finish_instance_image(&self, image_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE instance_images SET state = 'done' WHERE image_id = $1 AND state = 'uploading'")
            .bind(image_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets an image's record; `false` when there was none.
    pub async fn drop_instance_image(&self, image_id: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM instance_images WHERE image_id = $1")
            .bind(image_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The finished backups of an instance with `backup_type`, newest first (rotation's input).
    pub async fn instance_backups(&self, instance_id: &str, backup_type: &str) -> StoreResult<Vec<InstanceImage>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLS} FROM instance_images WHERE instance_id = $1 AND kind = 'backup' AND backup_type = $2 \
             AND state = 'done' ORDER BY created_at DESC, image_id DESC"
        ))
        .bind(instance_id)
        .bind(backup_type)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Records a shelved instance (replacing an earlier record).
    pub async fn set_shelf(&self, instance_id: &str, image_id: Option<&str>, host: Option<&str>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM instance_shelves WHERE instance_id = $1").bind(instance_id).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO instance_shelves (instance_id, image_id, shelved_at, shelved_host) VALUES ($1, $2, $3, $4)",
        )
        .bind(instance_id)
        .bind(image_id)
        .bind(now())
        .bind(host)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn shelf(&self, instance_id: &str) -> StoreResult<Option<Shelf>> {
        Ok(sqlx::query_as(
            "SELECT instance_id, image_id, shelved_at, shelved_host FROM instance_shelves WHERE instance_id = $1",
        )
        .bind(instance_id)
        .fetch_optional(&mut *self.conn().await?)
        .await?)
    }

    pub async fn clear_shelf(&self, instance_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM instance_shelves WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Shelved (not offloaded, no task) instances shelved before `before` (the offload tick).
    pub async fn shelved_before(&self, before: &str) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT i.id FROM instances i JOIN instance_shelves s ON s.instance_id = i.id \
             WHERE i.deleted = 0 AND i.vm_state = 'shelved' AND i.task_state IS NULL AND s.shelved_at < $1",
        )
        .bind(before)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// An offloaded instance leaves its host: the claim goes back and the host is cleared, in
    /// one transaction with the move to `shelved_offloaded` (only from `shelving_offloading`).
    pub async fn offload_instance(&self, id: &str, power_state: i64) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        super::instances::release_claim_in(&mut tx, id).await?;
        let done = sqlx::query(
            "UPDATE instances SET vm_state = 'shelved_offloaded', task_state = NULL, power_state = $2, \
             host_id = NULL, build_deadline = NULL, updated_at = $3 \
             WHERE id = $1 AND deleted = 0 AND task_state = 'shelving_offloading'",
        )
        .bind(id)
        .bind(power_state)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        self.instances_changed();
        self.filters_changed();
        Ok(true)
    }

    /// An unshelving instance claims room on `host_id` (only while `unshelving` with no host).
    pub async fn place_unshelve(&self, id: &str, host_id: &str, claim: Claim, ratios: Ratios) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // The server group may no longer allow this host: checked where the placement is made,
        // as a build's placement does.
        if !super::groups::group_admits(&mut tx, self.backend, id, host_id).await? {
            return Ok(false);
        }
        if !claim_on(&mut tx, host_id, claim, ratios).await? {
            return Ok(false);
        }
        let done = sqlx::query(
            "UPDATE instances SET host_id = $2, claimed = 1, updated_at = $3 \
             WHERE id = $1 AND deleted = 0 AND task_state = 'unshelving' AND host_id IS NULL",
        )
        .bind(id)
        .bind(host_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        self.instances_changed();
        self.filters_changed();
        Ok(true)
    }

    /// An unshelve that could not finish on its host: the claim goes back and the host is
    /// cleared (the instance stays offloaded).
    pub async fn unplace_unshelve(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        super::instances::release_claim_in(&mut tx, id).await?;
        sqlx::query(
            "UPDATE instances SET host_id = NULL, updated_at = $2 WHERE id = $1 AND vm_state = 'shelved_offloaded'",
        )
        .bind(id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.instances_changed();
        self.filters_changed();
        Ok(())
    }

    /// Pins (or with `None` unpins) an instance's availability zone (unshelve 2.77).
    pub async fn set_instance_availability_zone(&self, id: &str, zone: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET availability_zone = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(zone)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        self.instances_changed();
        Ok(())
    }
}
