//! Nova's metadata tables: flavors (with extra specs and access lists), key pairs and quotas.

use std::collections::BTreeMap;

use super::identity::{conflict, found};
use super::{Backend, Store, StoreError, StoreResult, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: i64,
    pub ram: i64,
    pub disk: i64,
    pub ephemeral: i64,
    pub swap: i64,
    pub rxtx_factor: f64,
    pub is_public: i64,
    pub description: Option<String>,
    pub extra_specs: String,
}

impl Flavor {
    pub fn extra_specs_map(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&self.extra_specs).unwrap_or_default()
    }
}

#[derive(Debug, Default, Clone)]
pub struct FlavorFilter {
    pub min_ram: Option<i64>,
    pub min_disk: Option<i64>,
    /// None: public ones plus those the project may use; Some(b): only is_public = b.
    pub is_public: Option<bool>,
    /// Project whose private-flavor access counts; None for admins (see all).
    pub project_id: Option<String>,
    pub sort_key: String,
    pub sort_desc: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Keypair {
    pub id: i64,
    pub user_id: String,
    pub name: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: String,
}

const FLAVOR_COLS: &str =
    "id, name, vcpus, ram, disk, ephemeral, swap, rxtx_factor, is_public, description, extra_specs";
const KEYPAIR_COLS: &str = "id, user_id, name, type, public_key, fingerprint, created_at";

impl Store {
    // ---- flavors ----

    pub async fn create_flavor(&self, f: &Flavor) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO flavors ({FLAVOR_COLS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(&f.id)
        .bind(&f.name)
        .bind(f.vcpus)
        .bind(f.ram)
        .bind(f.disk)
        .bind(f.ephemeral)
        .bind(f.swap)
        .bind(f.rxtx_factor)
        .bind(f.is_public)
        .bind(f.description.as_deref())
        .bind(&f.extra_specs)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| conflict(e, format!("Flavor with name {} or ID {} already exists.", f.name, f.id)))?;
        Ok(())
    }

    pub async fn get_flavor(&self, id: &str) -> StoreResult<Flavor> {
        sqlx::query_as(&format!("SELECT {FLAVOR_COLS} FROM flavors WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Flavor {id} could not be found.")))
    }

    pub async fn list_flavors(&self, f: &FlavorFilter) -> StoreResult<Vec<Flavor>> {
        let sort_col = match f.sort_key.as_str() {
            "name" | "vcpus" | "ram" | "disk" | "ephemeral" | "swap" | "rxtx_factor" | "is_public" => {
                f.sort_key.as_str()
            }
            "memory_mb" => "ram",
            "root_gb" => "disk",
            "ephemeral_gb" => "ephemeral",
            // Nova's default sort is flavorid; numeric ids sort as numbers first.
            _ => "id",
        };
        let dir = if f.sort_desc { "DESC" } else { "ASC" };
        let order =
            if sort_col == "id" { format!("LENGTH(id) {dir}, id {dir}") } else { format!("{sort_col} {dir}, id ASC") };
        Ok(sqlx::query_as(&format!(
            "SELECT {FLAVOR_COLS} FROM flavors WHERE ($1 IS NULL OR ram >= $1) AND ($2 IS NULL OR disk >= $2) \
             AND ( ($3 IS NOT NULL AND is_public = $3) \
                OR ($3 IS NULL AND ($4 IS NULL OR is_public = 1 OR id IN (SELECT flavor_id FROM flavor_access WHERE project_id = $4))) ) \
             ORDER BY {order}"
        ))
        .bind(f.min_ram)
        .bind(f.min_disk)
        .bind(f.is_public.map(i64::from))
        .bind(f.project_id.as_deref())
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn delete_flavor(&self, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM flavors WHERE id = $1").bind(id).execute(&mut *self.conn().await?).await?;
        found(done.rows_affected(), || format!("Flavor {id} could not be found."))
    }

    pub async fn update_flavor_description(&self, id: &str, description: Option<&str>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE flavors SET description = $2 WHERE id = $1")
            .bind(id)
            .bind(description)
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || format!("Flavor {id} could not be found."))
    }

    /// Read-modify-write of a flavor's extra specs in one transaction (row-locked on
    /// PostgreSQL; SQLite's single connection serialises it), so concurrent edits never lose
    /// each other's keys. Returns the specs as stored.
    pub async fn edit_flavor_extra_specs<F>(&self, id: &str, edit: F) -> StoreResult<BTreeMap<String, String>>
    where
        F: FnOnce(&mut BTreeMap<String, String>) -> StoreResult<()>,
    {
        let mut tx = self.begin().await?;
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        let raw: Option<String> = sqlx::query_scalar(&format!("SELECT extra_specs FROM flavors WHERE id = $1{lock}"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let raw = raw.ok_or_else(|| StoreError::NotFound(format!("Flavor {id} could not be found.")))?;
        let mut specs: BTreeMap<String, String> = serde_json::from_str(&raw)?;
        edit(&mut specs)?;
        sqlx::query("UPDATE flavors SET extra_specs = $2 WHERE id = $1")
            .bind(id)
            .bind(serde_json::to_string(&specs)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(specs)
    }

    pub async fn flavor_access(&self, id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT project_id FROM flavor_access WHERE flavor_id = $1 ORDER BY project_id")
            .bind(id)
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    pub async fn add_flavor_access(&self, id: &str, project_id: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO flavor_access (flavor_id, project_id) VALUES ($1, $2)")
            .bind(id)
            .bind(project_id)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| {
                conflict(
                    e,
                    format!("Flavor access already exists for flavor {id} and project {project_id} combination."),
                )
            })?;
        Ok(())
    }

    pub async fn remove_flavor_access(&self, id: &str, project_id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM flavor_access WHERE flavor_id = $1 AND project_id = $2")
            .bind(id)
            .bind(project_id)
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || format!("Flavor access not found for {id} / {project_id} combination."))
    }

    // ---- key pairs ----

    pub async fn create_keypair(&self, k: &Keypair) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO keypairs ({KEYPAIR_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
            .bind(k.id)
            .bind(&k.user_id)
            .bind(&k.name)
            .bind(&k.kind)
            .bind(&k.public_key)
            .bind(&k.fingerprint)
            .bind(&k.created_at)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Key pair '{}' already exists.", k.name)))?;
        Ok(())
    }

    pub async fn get_keypair(&self, user_id: &str, name: &str) -> StoreResult<Keypair> {
        sqlx::query_as(&format!("SELECT {KEYPAIR_COLS} FROM keypairs WHERE user_id = $1 AND name = $2"))
            .bind(user_id)
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Keypair {name} not found for user {user_id}")))
    }

    pub async fn list_keypairs(&self, user_id: &str) -> StoreResult<Vec<Keypair>> {
        Ok(sqlx::query_as(&format!("SELECT {KEYPAIR_COLS} FROM keypairs WHERE user_id = $1 ORDER BY name"))
            .bind(user_id)
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    pub async fn delete_keypair(&self, user_id: &str, name: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM keypairs WHERE user_id = $1 AND name = $2")
            .bind(user_id)
            .bind(name)
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || format!("Keypair {name} not found for user {user_id}"))
    }

    pub async fn count_keypairs(&self, user_id: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM keypairs WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *self.conn().await?)
            .await?)
    }

    // ---- quotas (all services) ----

    /// Per-project overrides; resources not listed use the service's defaults.
    pub async fn quota_overrides(&self, project_id: &str) -> StoreResult<BTreeMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT resource, hard_limit FROM quotas WHERE project_id = $1")
            .bind(project_id)
            .fetch_all(&mut *self.conn().await?)
            .await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn set_quota(&self, project_id: &str, resource: &str, limit: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO quotas (project_id, resource, hard_limit) VALUES ($1, $2, $3) \
             ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        )
        .bind(project_id)
        .bind(resource)
        .bind(limit)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Drops the overrides of the given resources (back to defaults).
    pub async fn reset_quotas(&self, project_id: &str, resources: &[&str]) -> StoreResult<()> {
        for r in resources {
            sqlx::query("DELETE FROM quotas WHERE project_id = $1 AND resource = $2")
                .bind(project_id)
                .bind(*r)
                .execute(&mut *self.conn().await?)
                .await?;
        }
        Ok(())
    }

    /// A user's own overrides of the project's compute quotas (`resource` → limit).
    pub async fn user_quota_overrides(&self, project_id: &str, user_id: &str) -> StoreResult<BTreeMap<String, i64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT resource, hard_limit FROM user_quotas WHERE project_id = $1 AND user_id = $2")
                .bind(project_id)
                .bind(user_id)
                .fetch_all(&mut *self.conn().await?)
                .await?;
        Ok(rows.into_iter().collect())
    }

    pub async fn set_user_quota(&self, project_id: &str, user_id: &str, resource: &str, limit: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO user_quotas (project_id, user_id, resource, hard_limit) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (project_id, user_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(resource)
        .bind(limit)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Drops every override of one user in a project (back to the project's limits).
    pub async fn reset_user_quotas(&self, project_id: &str, user_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM user_quotas WHERE project_id = $1 AND user_id = $2")
            .bind(project_id)
            .bind(user_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }
}
