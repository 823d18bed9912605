//! Block storage rows: volume types, volumes (placed on a host), their status transitions, and
//! attachments. Every status change is a guarded UPDATE on the expected statuses plus its
//! `volume_transitions` row, in one transaction.

use std::collections::BTreeMap;

use super::{Store, StoreError, StoreResult, Tx, new_uuid, now};

/// The id of Cinder's default type `__DEFAULT__` (seeded by migration 0018).
pub const DEFAULT_TYPE_ID: &str = "2a1b4bd0-0d54-4b8f-9d0d-6f0d1e7c0a01";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VolumeType {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_public: i64,
    pub extra_specs: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Volume {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub size: i64,
    pub status: String,
    pub attach_status: String,
    pub volume_type_id: String,
    pub availability_zone: String,
    pub host_id: Option<String>,
    pub bootable: i64,
    pub readonly: i64,
    pub metadata: String,
    pub deadline: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The snapshot this volume was made from (Cinder's `snapshot_id`).
    pub snapshot_id: Option<String>,
    /// The volume this one was cloned from (Cinder's `source_volid`).
    pub source_volid: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attachment {
    pub id: String,
    pub volume_id: String,
    pub instance_id: Option<String>,
    pub host_id: Option<String>,
    pub status: String,
    pub mountpoint: Option<String>,
    pub attach_mode: String,
    pub by_compute: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A project's volume limits for a create (-1: unlimited); `type_*` are those of the new
/// volume's type (`volumes_<type>`, `gigabytes_<type>`).
#[derive(Debug, Clone, Copy)]
pub struct VolumeLimits {
    pub volumes: i64,
    pub gigabytes: i64,
    pub type_volumes: i64,
    pub type_gigabytes: i64,
}

/// What a project uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeUsage {
    pub volumes: i64,
    pub gigabytes: i64,
}

const VOL_COLS: &str = "id, project_id, user_id, name, description, size, status, attach_status, volume_type_id, \
    availability_zone, host_id, bootable, readonly, metadata, deadline, created_at, updated_at, snapshot_id, \
    source_volid";
const TYPE_COLS: &str = "id, name, description, is_public, extra_specs, created_at, updated_at";
const ATT_COLS: &str =
    "id, volume_id, instance_id, host_id, status, mountpoint, attach_mode, by_compute, created_at, updated_at";

fn unlimited(n: i64) -> i64 {
    if n < 0 { i64::MAX } else { n }
}

impl Store {
    // ---- types ----

    pub async fn list_volume_types(&self) -> StoreResult<Vec<VolumeType>> {
        Ok(sqlx::query_as(&format!("SELECT {TYPE_COLS} FROM volume_types ORDER BY name"))
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    /// A type by id, or by name (Cinder accepts either wherever a type is named).
    pub async fn find_volume_type(&self, id_or_name: &str) -> StoreResult<VolumeType> {
        sqlx::query_as(&format!(
            "SELECT {TYPE_COLS} FROM volume_types WHERE id = $1 OR name = $1 ORDER BY name LIMIT 1"
        ))
        .bind(id_or_name)
        .fetch_optional(&mut *self.conn().await?)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("Volume type {id_or_name} could not be found.")))
    }

    pub async fn create_volume_type(&self, t: &VolumeType) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO volume_types ({TYPE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.description)
            .bind(t.is_public)
            .bind(&t.extra_specs)
            .bind(&t.created_at)
            .bind(&t.updated_at)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("Volume Type {} already exists.", t.name)),
                other => other,
            })?;
        Ok(())
    }

    pub async fn update_volume_type(&self, t: &VolumeType) -> StoreResult<()> {
        sqlx::query(
            "UPDATE volume_types SET name = $2, description = $3, is_public = $4, extra_specs = $5, updated_at = $6 \
             WHERE id = $1",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.description)
        .bind(t.is_public)
        .bind(&t.extra_specs)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Removes a type no volume uses; `Conflict` while one does.
    pub async fn delete_volume_type(&self, id: &str) -> StoreResult<()> {
        let r = sqlx::query(
            "DELETE FROM volume_types WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM volumes WHERE volume_type_id = $1)",
        )
        .bind(id)
        .execute(&mut *self.conn().await?)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("Target volume type {id} is still in use.")));
        }
        Ok(())
    }

    // ---- volumes ----

    /// Stores a new volume within the project's limits, with its first transition. `None`: a
    /// limit would be exceeded (nothing stored); the caller reads the usage to say which.
    pub async fn create_volume(&self, v: &Volume, limits: VolumeLimits) -> StoreResult<Option<()>> {
        let mut tx = self.begin().await?;
        // One guarded statement: the count and the sum are read by the INSERT itself.
        let r = sqlx::query(&format!(
            "INSERT INTO volumes ({VOL_COLS}) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $22, $23 \
             WHERE (SELECT COUNT(*) FROM volumes WHERE project_id = $2) < $18 \
               AND (SELECT COALESCE(SUM(size), 0) FROM volumes WHERE project_id = $2) \
                 + (SELECT COALESCE(SUM(size), 0) FROM volume_snapshots WHERE project_id = $2) <= $19 - $6 \
               AND (SELECT COUNT(*) FROM volumes WHERE project_id = $2 AND volume_type_id = $9) < $20 \
               AND (SELECT COALESCE(SUM(size), 0) FROM volumes WHERE project_id = $2 AND volume_type_id = $9) <= $21 - $6"
        ))
        .bind(&v.id)
        .bind(&v.project_id)
        .bind(&v.user_id)
        .bind(&v.name)
        .bind(&v.description)
        .bind(v.size)
        .bind(&v.status)
        .bind(&v.attach_status)
        .bind(&v.volume_type_id)
        .bind(&v.availability_zone)
        .bind(&v.host_id)
        .bind(v.bootable)
        .bind(v.readonly)
        .bind(&v.metadata)
        .bind(&v.deadline)
        .bind(&v.created_at)
        .bind(&v.updated_at)
        .bind(unlimited(limits.volumes))
        .bind(unlimited(limits.gigabytes))
        .bind(unlimited(limits.type_volumes))
        .bind(unlimited(limits.type_gigabytes))
        .bind(&v.snapshot_id)
        .bind(&v.source_volid)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        record_transition(&mut tx, &v.id, &v.status).await?;
        tx.commit().await?;
        Ok(Some(()))
    }

    pub async fn get_volume(&self, id: &str) -> StoreResult<Volume> {
        sqlx::query_as(&format!("SELECT {VOL_COLS} FROM volumes WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Volume {id} could not be found.")))
    }

    /// Volumes of one project (every project's with `None`), oldest first.
    pub async fn list_volumes(&self, project_id: Option<&str>) -> StoreResult<Vec<Volume>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {VOL_COLS} FROM volumes WHERE ($1 IS NULL OR project_id = $1) ORDER BY created_at, id"
        ))
        .bind(project_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// What a project uses of one volume type.
    pub async fn volume_usage_of_type(&self, project_id: &str, type_id: &str) -> StoreResult<VolumeUsage> {
        let (volumes, gigabytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM volumes WHERE project_id = $1 \
             AND volume_type_id = $2",
        )
        .bind(project_id)
        .bind(type_id)
        .fetch_one(&mut *self.conn().await?)
        .await?;
        Ok(VolumeUsage { volumes, gigabytes })
    }

    /// A project's volumes and gigabytes; gigabytes count its snapshots too (Cinder's
    /// `gigabytes` quota covers both).
    pub async fn volume_usage(&self, project_id: &str) -> StoreResult<VolumeUsage> {
        let (volumes, gigabytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) + \
               (SELECT COALESCE(SUM(size), 0) FROM volume_snapshots WHERE project_id = $1) AS BIGINT) \
             FROM volumes WHERE project_id = $1",
        )
        .bind(project_id)
        .fetch_one(&mut *self.conn().await?)
        .await?;
        Ok(VolumeUsage { volumes, gigabytes })
    }

    /// Gigabytes of volumes placed on each host.
    pub async fn volume_gb_by_host(&self) -> StoreResult<BTreeMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT host_id, CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM volumes WHERE host_id IS NOT NULL GROUP BY host_id",
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Moves a volume from one of `from` to `to` (with its deadline, `None` for a lasting
    /// status) and records the transition. `false`: its status was none of `from`.
    pub async fn set_volume_status(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        deadline: Option<&str>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let moved = set_status_in(&mut tx, id, from, to, deadline).await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// Name, description, metadata, flags and size as given (no status change).
    pub async fn update_volume(&self, v: &Volume) -> StoreResult<()> {
        sqlx::query(
            "UPDATE volumes SET name = $2, description = $3, metadata = $4, bootable = $5, readonly = $6, \
             updated_at = $7 WHERE id = $1",
        )
        .bind(&v.id)
        .bind(&v.name)
        .bind(&v.description)
        .bind(&v.metadata)
        .bind(v.bootable)
        .bind(v.readonly)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Starts an extend: `available` → `extending` with the work item for the host, in one
    /// transaction. `false`: the volume was not available. The size changes when the agent
    /// reports the file grown ([`Store::finish_extend`]), within the project's gigabytes.
    pub async fn begin_volume_work(
        &self,
        id: &str,
        from: &[&str],
        to: &str,
        deadline: &str,
        host_id: &str,
        action: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !set_status_in(&mut tx, id, from, to, Some(deadline)).await? {
            return Ok(false);
        }
        super::hosts::enqueue_work_in(&mut tx, id, host_id, action).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// An extend done: the new size and `available`, if the volume is still `extending`.
    pub async fn finish_extend(&self, id: &str, work_id: &str, size: i64) -> StoreResult<bool> {
        self.finish_extend_to(id, work_id, size, "available").await
    }

    /// An extend done: the new size and `to` (`in-use` for an attached volume), if the volume
    /// is still `extending`.
    pub async fn finish_extend_to(&self, id: &str, work_id: &str, size: i64, to: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !super::hosts::finish_work_in(&mut tx, work_id, "done", None).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE volumes SET size = $2 WHERE id = $1 AND status = 'extending'")
            .bind(id)
            .bind(size)
            .execute(&mut *tx)
            .await?;
        set_status_in(&mut tx, id, &["extending"], to, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Finishes a volume's work item and moves the volume on (when still in one of `from`).
    pub async fn finish_volume_work(
        &self,
        id: &str,
        work_id: &str,
        outcome: &str,
        message: Option<&str>,
        from: &[&str],
        to: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !super::hosts::finish_work_in(&mut tx, work_id, outcome, message).await? {
            return Ok(false);
        }
        set_status_in(&mut tx, id, from, to, None).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The agent removed the file: the volume's row (and its attachments) go; its transitions
    /// stay, ending in `deleted`.
    pub async fn volume_deleted(&self, id: &str, work_id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !super::hosts::finish_work_in(&mut tx, work_id, "done", None).await? {
            return Ok(false);
        }
        sqlx::query("DELETE FROM volumes WHERE id = $1").bind(id).execute(&mut *tx).await?;
        record_transition(&mut tx, id, "deleted").await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a volume that never got bytes (no host): at once, from `from` statuses only.
    pub async fn delete_unplaced_volume(&self, id: &str, from: &[&str]) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let mut sql = super::sql::Sql::default();
        sql.push("DELETE FROM volumes WHERE id = ").text(id).push(" AND host_id IS NULL AND status IN (");
        sql.texts(from.iter().copied());
        sql.push(")");
        let gone = sql.query().execute(&mut *tx).await?.rows_affected() == 1;
        if gone {
            record_transition(&mut tx, id, "deleted").await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    /// The statuses a volume went through, oldest first.
    pub async fn volume_transitions(&self, id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT status FROM volume_transitions WHERE volume_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    /// Volumes whose transitional status outlived its deadline.
    pub async fn volumes_past_deadline(&self, at: &str) -> StoreResult<Vec<Volume>> {
        Ok(sqlx::query_as(&format!("SELECT {VOL_COLS} FROM volumes WHERE deadline IS NOT NULL AND deadline < $1"))
            .bind(at)
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    // ---- attachments ----

    /// Reserves a volume for an attachment: `available` → `to` (`reserved` or `attaching`) and
    /// the attachment row, plus the agent's work when `work` names the host and action, in one
    /// transaction. `false`: the volume was not available.
    pub async fn reserve_volume(
        &self,
        a: &Attachment,
        to: &str,
        deadline: Option<&str>,
        work: Option<(&str, &str)>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !set_status_in(&mut tx, &a.volume_id, &["available"], to, deadline).await? {
            return Ok(false);
        }
        insert_attachment(&mut tx, a).await?;
        if to == "attaching" || to == "reserved" {
            set_attach_status(&mut tx, &a.volume_id, "attaching").await?;
        }
        if let (Some((host, action)), Some(instance)) = (work, a.instance_id.as_deref()) {
            super::hosts::enqueue_work_in(&mut tx, instance, host, action).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Sets an attachment's mode (`rw`, `ro`; Cinder's `null` until a connector says).
    pub async fn attachment_set_mode(&self, id: &str, mode: &str) -> StoreResult<()> {
        sqlx::query("UPDATE volume_attachments SET attach_mode = $2 WHERE id = $1")
            .bind(id)
            .bind(mode)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Names the instance of a reservation (os-attach after os-reserve).
    pub async fn attachment_set_instance(&self, id: &str, instance_id: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE volume_attachments SET instance_id = COALESCE($2, instance_id) WHERE id = $1")
            .bind(id)
            .bind(instance_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Moves a blank volume (never attached) to `new_host` as it is reserved for an attach
    /// there: the old host's copy is deleted (`delete_action`, keyed by the volume) and the
    /// attach (`attach_action`, keyed by the instance) makes it anew first. One transaction.
    /// `false`: the volume was not available.
    pub async fn relocate_and_reserve(
        &self,
        a: &Attachment,
        deadline: &str,
        old_host: &str,
        new_host: &str,
        delete_action: &str,
        attach_action: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !set_status_in(&mut tx, &a.volume_id, &["available"], "attaching", Some(deadline)).await? {
            return Ok(false);
        }
        sqlx::query("UPDATE volumes SET host_id = $2 WHERE id = $1")
            .bind(&a.volume_id)
            .bind(new_host)
            .execute(&mut *tx)
            .await?;
        insert_attachment(&mut tx, a).await?;
        set_attach_status(&mut tx, &a.volume_id, "attaching").await?;
        super::hosts::enqueue_work_in(&mut tx, &a.volume_id, old_host, delete_action).await?;
        let instance = a.instance_id.as_deref().unwrap_or_default();
        super::hosts::enqueue_work_in(&mut tx, instance, new_host, attach_action).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn get_attachment(&self, id: &str) -> StoreResult<Attachment> {
        sqlx::query_as(&format!("SELECT {ATT_COLS} FROM volume_attachments WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Volume attachment {id} could not be found.")))
    }

    pub async fn volume_attachments(&self, volume_id: &str) -> StoreResult<Vec<Attachment>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ATT_COLS} FROM volume_attachments WHERE volume_id = $1 ORDER BY created_at, id"
        ))
        .bind(volume_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Attachments of many volumes (one read), keyed by volume.
    pub async fn attachments_of_volumes(&self, ids: &[&str]) -> StoreResult<BTreeMap<String, Vec<Attachment>>> {
        let mut out: BTreeMap<String, Vec<Attachment>> = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let mut sql = super::sql::Sql::default();
            sql.push(&format!("SELECT {ATT_COLS} FROM volume_attachments WHERE volume_id IN ("));
            sql.texts(chunk.iter().copied());
            sql.push(") ORDER BY created_at, id");
            for a in sql.query_as::<Attachment>().fetch_all(&mut *self.conn().await?).await? {
                out.entry(a.volume_id.clone()).or_default().push(a);
            }
        }
        Ok(out)
    }

    /// An instance's attachments, oldest first.
    pub async fn instance_attachments(&self, instance_id: &str) -> StoreResult<Vec<Attachment>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {ATT_COLS} FROM volume_attachments WHERE instance_id = $1 ORDER BY created_at, id"
        ))
        .bind(instance_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Attachments of many instances (one read per 500), for server representations.
    pub async fn attachments_of_instances(&self, ids: &[&str]) -> StoreResult<BTreeMap<String, Vec<Attachment>>> {
        let mut out: BTreeMap<String, Vec<Attachment>> = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let mut sql = super::sql::Sql::default();
            sql.push(&format!("SELECT {ATT_COLS} FROM volume_attachments WHERE instance_id IN ("));
            sql.texts(chunk.iter().copied());
            sql.push(") ORDER BY created_at, id");
            for a in sql.query_as::<Attachment>().fetch_all(&mut *self.conn().await?).await? {
                if let Some(i) = a.instance_id.clone() {
                    out.entry(i).or_default().push(a);
                }
            }
        }
        Ok(out)
    }

    /// Moves an attachment and its volume on together: the attachment's status (or its removal
    /// with `None`), the volume's status from `from` to `to` and its attach status. `false`:
    /// the volume was in none of `from` (nothing changed).
    #[allow(clippy::too_many_arguments)]
    pub async fn move_attachment(
        &self,
        attachment_id: &str,
        att_status: Option<&str>,
        mountpoint: Option<&str>,
        volume_id: &str,
        from: &[&str],
        to: &str,
        deadline: Option<&str>,
        work: Option<(&str, &str, &str)>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !set_status_in(&mut tx, volume_id, from, to, deadline).await? {
            return Ok(false);
        }
        match att_status {
            Some(s) => {
                sqlx::query(
                    "UPDATE volume_attachments SET status = $2, mountpoint = COALESCE($3, mountpoint), updated_at = $4 \
                     WHERE id = $1",
                )
                .bind(attachment_id)
                .bind(s)
                .bind(mountpoint)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM volume_attachments WHERE id = $1")
                    .bind(attachment_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let attach_status = match to {
            "in-use" => "attached",
            "detaching" => "detaching",
            "attaching" | "reserved" => "attaching",
            _ => "detached",
        };
        // Another attachment may remain (multiattach is not offered, so normally none).
        set_attach_status(&mut tx, volume_id, attach_status).await?;
        if let Some((instance, host, action)) = work {
            super::hosts::enqueue_work_in(&mut tx, instance, host, action).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Finishes an attach/detach work item and moves the attachment and volume as
    /// [`Store::move_attachment`] does, in one transaction. `false`: the item was already
    /// finished (a repeated event).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_attachment_work(
        &self,
        work_id: &str,
        outcome: &str,
        message: Option<&str>,
        attachment_id: &str,
        att_status: Option<&str>,
        volume_id: &str,
        from: &[&str],
        to: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !super::hosts::finish_work_in(&mut tx, work_id, outcome, message).await? {
            return Ok(false);
        }
        if set_status_in(&mut tx, volume_id, from, to, None).await? {
            match att_status {
                Some(s) => {
                    sqlx::query("UPDATE volume_attachments SET status = $2, updated_at = $3 WHERE id = $1")
                        .bind(attachment_id)
                        .bind(s)
                        .bind(now())
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("DELETE FROM volume_attachments WHERE id = $1")
                        .bind(attachment_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let attach_status = if to == "in-use" { "attached" } else { "detached" };
            set_attach_status(&mut tx, volume_id, attach_status).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

async fn insert_attachment(tx: &mut Tx, a: &Attachment) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO volume_attachments ({ATT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ))
    .bind(&a.id)
    .bind(&a.volume_id)
    .bind(&a.instance_id)
    .bind(&a.host_id)
    .bind(&a.status)
    .bind(&a.mountpoint)
    .bind(&a.attach_mode)
    .bind(a.by_compute)
    .bind(&a.created_at)
    .bind(&a.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn set_attach_status(tx: &mut Tx, volume_id: &str, attach_status: &str) -> StoreResult<()> {
    sqlx::query("UPDATE volumes SET attach_status = $2 WHERE id = $1")
        .bind(volume_id)
        .bind(attach_status)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A table of rows with a Cinder status machine and the table of their transitions (volumes,
/// snapshots): one guarded status change serves both.
#[derive(Clone, Copy)]
pub(crate) struct StatusTable {
    rows: &'static str,
    transitions: &'static str,
    key: &'static str,
}

pub(crate) const VOLUMES: StatusTable =
    StatusTable { rows: "volumes", transitions: "volume_transitions", key: "volume_id" };
pub(crate) const SNAPSHOTS: StatusTable =
    StatusTable { rows: "volume_snapshots", transitions: "volume_snapshot_transitions", key: "snapshot_id" };

/// The guarded status change of a volume and its transition row.
pub(crate) async fn set_status_in(
    tx: &mut Tx,
    id: &str,
    from: &[&str],
    to: &str,
    deadline: Option<&str>,
) -> StoreResult<bool> {
    set_status_of(VOLUMES, tx, id, from, to, deadline).await
}

/// The guarded status change (only from one of `from`) and its transition row.
pub(crate) async fn set_status_of(
    t: StatusTable,
    tx: &mut Tx,
    id: &str,
    from: &[&str],
    to: &str,
    deadline: Option<&str>,
) -> StoreResult<bool> {
    let mut sql = super::sql::Sql::default();
    sql.push("UPDATE ").push(t.rows).push(" SET status = ").text(to).push(", updated_at = ").text(now());
    match deadline {
        Some(d) => sql.push(", deadline = ").text(d),
        None => sql.push(", deadline = NULL"),
    };
    sql.push(" WHERE id = ").text(id).push(" AND status IN (");
    sql.texts(from.iter().copied());
    sql.push(")");
    let moved = sql.query().execute(&mut **tx).await?.rows_affected() == 1;
    if moved {
        transition_of(t, tx, id, to).await?;
    }
    Ok(moved)
}

async fn record_transition(tx: &mut Tx, id: &str, status: &str) -> StoreResult<()> {
    transition_of(VOLUMES, tx, id, status).await
}

/// Appends `status` to the row's transitions (the next sequence number).
pub(crate) async fn transition_of(t: StatusTable, tx: &mut Tx, id: &str, status: &str) -> StoreResult<()> {
    let (table, key) = (t.transitions, t.key);
    sqlx::query(&format!(
        "INSERT INTO {table} ({key}, seq, status, at) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3 FROM {table} WHERE {key} = $1"
    ))
    .bind(id)
    .bind(status)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A new attachment row.
pub fn new_attachment(volume_id: &str, instance_id: Option<&str>, host_id: Option<&str>, status: &str) -> Attachment {
    let ts = now();
    Attachment {
        id: new_uuid(),
        volume_id: volume_id.into(),
        instance_id: instance_id.map(str::to_string),
        host_id: host_id.map(str::to_string),
        status: status.into(),
        mountpoint: None,
        attach_mode: "rw".into(),
        by_compute: 0,
        created_at: ts.clone(),
        updated_at: ts,
    }
}
