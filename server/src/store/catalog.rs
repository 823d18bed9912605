//! Keystone's catalog tables: regions, services and endpoints.

use super::identity::{conflict, found};
use super::sql::Sql;
use super::{Store, StoreError, StoreResult, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Region {
    pub id: String,
    pub description: String,
    pub parent_region_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Service {
    pub id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub name: String,
    pub description: String,
    pub enabled: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Endpoint {
    pub id: String,
    pub service_id: String,
    pub interface: String,
    pub region_id: Option<String>,
    /// May hold `$(name)s` substitutions (see [`crate::identity::catalog`]).
    pub url: String,
    pub enabled: i64,
}

/// Filters for endpoint listings.
#[derive(Debug, Default)]
pub struct EndpointFilter {
    pub service_id: Option<String>,
    pub interface: Option<String>,
    pub region_id: Option<String>,
}

const ENDPOINT_COLS: &str = "id, service_id, interface, region_id, url, enabled";

impl Store {
    // ---- regions ----

    /// Creates the region unless it exists.
    pub async fn ensure_region(&self, id: &str) -> StoreResult<()> {
        self.execute_keys("INSERT INTO regions (id, description) VALUES ($1, '') ON CONFLICT DO NOTHING", &[id])
            .await?;
        Ok(())
    }

    pub async fn create_region(&self, r: &Region) -> StoreResult<()> {
        sqlx::query("INSERT INTO regions (id, description, parent_region_id) VALUES ($1, $2, $3)")
            .bind(&r.id)
            .bind(&r.description)
            .bind(r.parent_region_id.as_deref())
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Duplicate ID, {}.", r.id)))?;
        Ok(())
    }

    pub async fn get_region(&self, id: &str) -> StoreResult<Region> {
        self.fetch_found("SELECT id, description, parent_region_id FROM regions WHERE id = $1", &[id], || {
            format!("Could not find region: {id}.")
        })
        .await
    }

    pub async fn list_regions(&self, parent: Option<&str>) -> StoreResult<Vec<Region>> {
        Ok(sqlx::query_as(
            "SELECT id, description, parent_region_id FROM regions WHERE ($1 IS NULL OR parent_region_id = $1) \
             ORDER BY id",
        )
        .bind(parent)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn update_region(&self, r: &Region) -> StoreResult<()> {
        let done = sqlx::query("UPDATE regions SET description = $2, parent_region_id = $3 WHERE id = $1")
            .bind(&r.id)
            .bind(&r.description)
            .bind(r.parent_region_id.as_deref())
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || format!("Could not find region: {}.", r.id))
    }

    /// Deletes a region; `Conflict` while endpoints or child regions still use it.
    pub async fn delete_region(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let used: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM endpoints WHERE region_id = $1) + \
             (SELECT COUNT(*) FROM regions WHERE parent_region_id = $1)",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if used > 0 {
            return Err(StoreError::Conflict(format!("Region {id} still has endpoints or child regions.")));
        }
        let done = sqlx::query("DELETE FROM regions WHERE id = $1").bind(id).execute(&mut *tx).await?;
        found(done.rows_affected(), || format!("Could not find region: {id}."))?;
        tx.commit().await?;
        Ok(())
    }

    // ---- services ----

    pub async fn create_service(&self, s: &Service) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO services (id, type, name, description, enabled, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&s.id)
        .bind(&s.kind)
        .bind(&s.name)
        .bind(&s.description)
        .bind(s.enabled)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|e| conflict(e, format!("Duplicate ID, {}.", s.id)))?;
        Ok(())
    }

    pub async fn get_service(&self, id: &str) -> StoreResult<Service> {
        self.fetch_found("SELECT id, type, name, description, enabled FROM services WHERE id = $1", &[id], || {
            format!("Could not find service: {id}.")
        })
        .await
    }

    pub async fn list_services(&self, kind: Option<&str>, name: Option<&str>) -> StoreResult<Vec<Service>> {
        Ok(sqlx::query_as(
            "SELECT id, type, name, description, enabled FROM services WHERE ($1 IS NULL OR type = $1) \
             AND ($2 IS NULL OR name = $2) ORDER BY created_at, id",
        )
        .bind(kind)
        .bind(name)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn update_service(&self, s: &Service) -> StoreResult<()> {
        let done =
            sqlx::query("UPDATE services SET type = $2, name = $3, description = $4, enabled = $5 WHERE id = $1")
                .bind(&s.id)
                .bind(&s.kind)
                .bind(&s.name)
                .bind(&s.description)
                .bind(s.enabled)
                .execute(&mut *self.conn().await?)
                .await?;
        found(done.rows_affected(), || format!("Could not find service: {}.", s.id))
    }

    /// Deletes a service and its endpoints.
    pub async fn delete_service(&self, id: &str) -> StoreResult<()> {
        let done = self.execute_keys("DELETE FROM services WHERE id = $1", &[id]).await?;
        found(done, || format!("Could not find service: {id}."))
    }

    // ---- endpoints ----

    pub async fn create_endpoint(&self, e: &Endpoint) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO endpoints ({ENDPOINT_COLS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&e.id)
        .bind(&e.service_id)
        .bind(&e.interface)
        .bind(e.region_id.as_deref())
        .bind(&e.url)
        .bind(e.enabled)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await
        .map_err(|err| conflict(err, format!("Duplicate ID, {}.", e.id)))?;
        Ok(())
    }

    pub async fn get_endpoint(&self, id: &str) -> StoreResult<Endpoint> {
        self.fetch_found(&format!("SELECT {ENDPOINT_COLS} FROM endpoints WHERE id = $1"), &[id], || {
            format!("Could not find endpoint: {id}.")
        })
        .await
    }

    pub async fn list_endpoints(&self, f: &EndpointFilter) -> StoreResult<Vec<Endpoint>> {
        let mut q = Sql::default();
        q.push(&format!("SELECT {ENDPOINT_COLS} FROM endpoints WHERE 1 = 1"));
        if let Some(s) = &f.service_id {
            q.push(" AND service_id = ").text(s.as_str());
        }
        if let Some(i) = &f.interface {
            q.push(" AND interface = ").text(i.as_str());
        }
        if let Some(r) = &f.region_id {
            q.push(" AND region_id = ").text(r.as_str());
        }
        q.push(" ORDER BY created_at, id");
        Ok(q.query_as().fetch_all(&mut *self.conn().await?).await?)
    }

    pub async fn update_endpoint(&self, e: &Endpoint) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE endpoints SET service_id = $2, interface = $3, region_id = $4, url = $5, enabled = $6 WHERE id = $1",
        )
        .bind(&e.id)
        .bind(&e.service_id)
        .bind(&e.interface)
        .bind(e.region_id.as_deref())
        .bind(&e.url)
        .bind(e.enabled)
        .execute(&mut *self.conn().await?)
        .await?;
        found(done.rows_affected(), || format!("Could not find endpoint: {}.", e.id))
    }

    pub async fn delete_endpoint(&self, id: &str) -> StoreResult<()> {
        let done = self.execute_keys("DELETE FROM endpoints WHERE id = $1", &[id]).await?;
        found(done, || format!("Could not find endpoint: {id}."))
    }
}
