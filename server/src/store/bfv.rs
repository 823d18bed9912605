//! Volumes from images and boot from volume (migration 0020): a volume's image metadata
//! (Cinder's `volume_glance_metadata`) and a server's block device mappings (Nova's
//! `block_device_mapping`, destination volume only).

use std::collections::BTreeMap;

use super::{Store, StoreResult, now};

/// One volume of a server's `block_device_mapping_v2`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Bdm {
    pub instance_id: String,
    /// The mapping's place in the request (device names follow it).
    pub position: i64,
    /// `image`, `volume`, `snapshot` or `blank`.
    pub source_type: String,
    pub source_id: Option<String>,
    pub volume_id: Option<String>,
    pub volume_size: Option<i64>,
    pub boot_index: Option<i64>,
    pub device_name: Option<String>,
    pub delete_on_termination: i64,
    pub attachment_id: Option<String>,
    pub created_at: String,
}

/// One local disk a server's mappings asked for (migration 0029).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LocalDiskRow {
    pub instance_id: String,
    pub position: i64,
    /// `ephemeral` or `swap`.
    pub kind: String,
    /// GiB for an ephemeral disk, MiB for swap.
    pub size: i64,
    pub guest_format: Option<String>,
    pub created_at: String,
}

const BDM_COLS: &str = "instance_id, position, source_type, source_id, volume_id, volume_size, boot_index, \
    device_name, delete_on_termination, attachment_id, created_at";

impl Store {
    /// Sets (or replaces) a volume's image metadata, a JSON object of string → string.
    pub async fn set_volume_image_metadata(&self, volume_id: &str, metadata: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM volume_image_metadata WHERE volume_id = $1").bind(volume_id).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO volume_image_metadata (volume_id, metadata) VALUES ($1, $2)")
            .bind(volume_id)
            .bind(metadata)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A volume's image metadata (JSON), `None` when it was not made from an image.
    pub async fn volume_image_metadata(&self, volume_id: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar("SELECT metadata FROM volume_image_metadata WHERE volume_id = $1")
            .bind(volume_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?)
    }

    /// Image metadata of many volumes (one read per 500), keyed by volume.
    pub async fn image_metadata_of_volumes(&self, ids: &[&str]) -> StoreResult<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let mut sql = super::sql::Sql::default();
            sql.push("SELECT volume_id, metadata FROM volume_image_metadata WHERE volume_id IN (");
            sql.texts(chunk.iter().copied());
            sql.push(")");
            for (id, m) in sql.query_as::<(String, String)>().fetch_all(&mut *self.conn().await?).await? {
                out.insert(id, m);
            }
        }
        Ok(out)
    }

    /// Stores a new server's block device mappings.
    pub async fn create_bdms(&self, bdms: &[Bdm]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for b in bdms {
            sqlx::query(&format!(
                "INSERT INTO block_device_mappings ({BDM_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .bind(&b.instance_id)
            .bind(b.position)
            .bind(&b.source_type)
            .bind(&b.source_id)
            .bind(&b.volume_id)
            .bind(b.volume_size)
            .bind(b.boot_index)
            .bind(&b.device_name)
            .bind(b.delete_on_termination)
            .bind(&b.attachment_id)
            .bind(if b.created_at.is_empty() { now() } else { b.created_at.clone() })
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A server's block device mappings in request order.
    pub async fn instance_bdms(&self, instance_id: &str) -> StoreResult<Vec<Bdm>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {BDM_COLS} FROM block_device_mappings WHERE instance_id = $1 ORDER BY position"
        ))
        .bind(instance_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// The block device mappings of many servers (one read per 500), keyed by server.
    pub async fn bdms_of_instances(&self, ids: &[&str]) -> StoreResult<BTreeMap<String, Vec<Bdm>>> {
        let mut out: BTreeMap<String, Vec<Bdm>> = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let mut sql = super::sql::Sql::default();
            sql.push(&format!("SELECT {BDM_COLS} FROM block_device_mappings WHERE instance_id IN ("));
            sql.texts(chunk.iter().copied());
            sql.push(") ORDER BY position");
            for b in sql.query_as::<Bdm>().fetch_all(&mut *self.conn().await?).await? {
                out.entry(b.instance_id.clone()).or_default().push(b);
            }
        }
        Ok(out)
    }

    /// Records the volume (and, once attached, the attachment) of a mapping. `volume_id` is
    /// only set while the mapping has none, so a repeated build step never replaces it.
    pub async fn set_bdm_volume(
        &self,
        instance_id: &str,
        position: i64,
        volume_id: &str,
        attachment_id: Option<&str>,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE block_device_mappings SET volume_id = $3, attachment_id = COALESCE($4, attachment_id) \
             WHERE instance_id = $1 AND position = $2 AND (volume_id IS NULL OR volume_id = $3)",
        )
        .bind(instance_id)
        .bind(position)
        .bind(volume_id)
        .bind(attachment_id)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Forgets a server's mappings (its delete completed).
    pub async fn delete_bdms(&self, instance_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM block_device_mappings WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Stores a server's local disks (before the instance, which the build reads).
    pub async fn create_local_disks(&self, rows: &[LocalDiskRow]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO instance_local_disks (instance_id, position, kind, size, guest_format, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&r.instance_id)
            .bind(r.position)
            .bind(&r.kind)
            .bind(r.size)
            .bind(&r.guest_format)
            .bind(&r.created_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A server's own local disks in order (none: the flavor's).
    pub async fn instance_local_disks(&self, instance_id: &str) -> StoreResult<Vec<LocalDiskRow>> {
        Ok(sqlx::query_as(
            "SELECT instance_id, position, kind, size, guest_format, created_at FROM instance_local_disks \
             WHERE instance_id = $1 ORDER BY position",
        )
        .bind(instance_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn delete_local_disks(&self, instance_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM instance_local_disks WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Removes the instance's mapping of one volume (detached: it is no longer the instance's).
    pub async fn delete_bdm_of_volume(&self, instance_id: &str, volume_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM block_device_mappings WHERE instance_id = $1 AND volume_id = $2")
            .bind(instance_id)
            .bind(volume_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// The mapping that holds volume `volume_id`, if a server's build made or uses it.
    pub async fn bdm_of_volume(&self, volume_id: &str) -> StoreResult<Option<Bdm>> {
        Ok(sqlx::query_as(&format!("SELECT {BDM_COLS} FROM block_device_mappings WHERE volume_id = $1 LIMIT 1"))
            .bind(volume_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?)
    }
}

impl Store {
    /// Where an attachment of the compute side is plugged in now: its host and device (an
    /// unshelve plugs an instance's volumes into the domain it builds).
    pub async fn set_attachment_device(&self, id: &str, host_id: &str, mountpoint: &str) -> StoreResult<()> {
        sqlx::query("UPDATE volume_attachments SET host_id = $2, mountpoint = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(host_id)
            .bind(mountpoint)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Marks an attachment as made by the compute side on `host_id` (a build's volume: the
    /// agent plugs it into the domain it defines).
    pub async fn set_attachment_compute(&self, id: &str, host_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE volume_attachments SET by_compute = 1, host_id = $2 WHERE id = $1")
            .bind(id)
            .bind(host_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }
}
