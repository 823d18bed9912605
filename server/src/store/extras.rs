//! Compute extras (issue 17, slice F): quota classes, the guest's posted password, and the
//! instance lifetimes `os-simple-tenant-usage` bills.

use std::collections::BTreeMap;

use super::{Store, StoreResult};

/// One instance as usage reports see it (deleted ones too, while retention keeps them).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRow {
    pub id: String,
    pub name: String,
    pub project_id: String,
    /// JSON snapshot of the flavor at boot.
    pub flavor: String,
    pub vm_state: String,
    pub launched_at: Option<String>,
    pub terminated_at: Option<String>,
}

impl Store {
    /// The limits stored for one quota class (resource → limit).
    pub async fn quota_class(&self, class_name: &str) -> StoreResult<BTreeMap<String, i64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT resource, hard_limit FROM quota_classes WHERE class_name = $1")
                .bind(class_name)
                .fetch_all(&mut *self.conn().await?)
                .await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn set_quota_class(&self, class_name: &str, resource: &str, limit: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO quota_classes (class_name, resource, hard_limit) VALUES ($1, $2, $3) \
             ON CONFLICT (class_name, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        )
        .bind(class_name)
        .bind(resource)
        .bind(limit)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// The encrypted password the guest posted, if any.
    pub async fn instance_password(&self, id: &str) -> StoreResult<Option<String>> {
        let row: Option<(Option<String>,)> = sqlx::query_as("SELECT password FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.and_then(|r| r.0).filter(|p| !p.is_empty()))
    }

    /// Stores the guest's password only when none is set (Nova's metadata service answers 409
    /// to a second post); false when one was already there.
    pub async fn set_instance_password_once(&self, id: &str, password: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE instances SET password = $2 WHERE id = $1 AND (password IS NULL OR password = '')")
            .bind(id)
            .bind(password)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// `DELETE /os-server-password`: forgets the stored password.
    pub async fn clear_instance_password(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET password = NULL WHERE id = $1")
            .bind(id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Nova's `instance_get_active_by_window_joined`: instances (deleted ones included) not
    /// terminated before `begin` and launched before `end`, of one project or all, ordered
    /// by (project, id), from after `marker` (a (project, id) pair), at most `limit`.
    pub async fn usage_window(
        &self,
        begin: &str,
        end: &str,
        project_id: Option<&str>,
        marker: Option<(&str, &str)>,
        limit: i64,
    ) -> StoreResult<Vec<UsageRow>> {
        let (mp, mi) = marker.unwrap_or(("", ""));
        let rows = sqlx::query_as(
            "SELECT id, name, project_id, flavor, vm_state, launched_at, terminated_at FROM instances \
             WHERE (terminated_at IS NULL OR terminated_at > $1) AND launched_at < $2 \
             AND ($3 IS NULL OR project_id = $3) \
             AND ($4 = '' OR project_id > $4 OR (project_id = $4 AND id > $5)) \
             ORDER BY project_id, id LIMIT $6",
        )
        .bind(begin)
        .bind(end)
        .bind(project_id)
        .bind(mp)
        .bind(mi)
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(rows)
    }

    /// The project of an instance, deleted or not (a usage marker).
    pub async fn instance_project_any(&self, id: &str) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as("SELECT project_id FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(row.map(|r| r.0))
    }

    /// Replaces an instance's list of ports it made itself (JSON list of ids).
    pub async fn set_owned_ports(&self, id: &str, owned_ports: &str) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET owned_ports = $2 WHERE id = $1")
            .bind(id)
            .bind(owned_ports)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Tags of an instance's attached ports (port id → tag).
    pub async fn interface_tags(&self, instance_id: &str) -> StoreResult<BTreeMap<String, String>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT port_id, tag FROM interface_tags WHERE instance_id = $1")
                .bind(instance_id)
                .fetch_all(&mut *self.conn().await?)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Records (`Some`) or forgets (`None`) the tag of an attached port.
    pub async fn set_interface_tag(&self, port_id: &str, instance_id: &str, tag: Option<&str>) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        sqlx::query("DELETE FROM interface_tags WHERE port_id = $1").bind(port_id).execute(&mut *conn).await?;
        if let Some(t) = tag {
            sqlx::query("INSERT INTO interface_tags (port_id, instance_id, tag) VALUES ($1, $2, $3)")
                .bind(port_id)
                .bind(instance_id)
                .bind(t)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}
