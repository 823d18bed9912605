//! The columns rebuild and soft delete change (issue 17): the image, key pair and user data a
//! rebuild replaces, and when a server was soft-deleted (migration 0024).

use super::identity::found;
use super::instances::{INSTANCE_COLS, Instance};
use super::{Store, StoreResult, now};

impl Store {
    /// Writes what a rebuild replaces on a live instance: its image, key pair and user data
    /// (name, metadata and the rest go through [`Store::update_instance_fields`]).
    pub async fn set_rebuild_fields(&self, i: &Instance) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE instances SET image_id = $2, key_name = $3, key_data = $4, user_data = $5, updated_at = $6 \
             WHERE id = $1 AND deleted = 0",
        )
        .bind(&i.id)
        .bind(&i.image_id)
        .bind(i.key_name.as_deref())
        .bind(i.key_data.as_deref())
        .bind(i.user_data.as_deref())
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        self.instances_changed();
        found(done.rows_affected(), || format!("Instance {} could not be found.", i.id))
    }

    /// Records when a live instance was soft-deleted (`Some`), or that it no longer is (`None`).
    pub async fn set_soft_deleted_at(&self, id: &str, at: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET soft_deleted_at = $2 WHERE id = $1 AND deleted = 0")
            .bind(id)
            .bind(at)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// When a live instance was soft-deleted, if it is.
    pub async fn soft_deleted_at(&self, id: &str) -> StoreResult<Option<String>> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT soft_deleted_at FROM instances WHERE id = $1 AND deleted = 0")
                .bind(id)
                .fetch_optional(&mut *self.conn().await?)
                .await?;
        Ok(row.and_then(|(t,)| t))
    }

    /// Soft-deleted instances with no task, soft-deleted before `before` (what the reclaim
    /// deletes for good).
    pub async fn reclaimable_instances(&self, before: &str) -> StoreResult<Vec<Instance>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE deleted = 0 AND vm_state = 'soft-delete' \
             AND task_state IS NULL AND soft_deleted_at IS NOT NULL AND soft_deleted_at < $1 ORDER BY created_at"
        ))
        .bind(before)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }
}
