//! Heartbeats of the server's own background loops, per replica (`service_heartbeats`): what
//! `os-services` reports as `nova-scheduler` and `nova-conductor`.

use super::{Store, StoreResult, new_uuid, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServiceHeartbeat {
    pub replica: String,
    pub service: String,
    pub id: String,
    pub num: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl Store {
    /// Records that `service` is alive on `replica` now (the row is created on first use, with
    /// its ids for `os-services`).
    pub async fn service_heartbeat(&self, replica: &str, service: &str) -> StoreResult<()> {
        let ts = now();
        let updated = sqlx::query("UPDATE service_heartbeats SET updated_at = $3 WHERE replica = $1 AND service = $2")
            .bind(replica)
            .bind(service)
            .bind(&ts)
            .execute(&mut *self.conn().await?)
            .await?
            .rows_affected();
        if updated > 0 {
            return Ok(());
        }
        let num = -self.next_counter("service").await?;
        // Another process of the same replica name may have inserted it meanwhile: then this
        // is an update, and the number drawn goes unused.
        sqlx::query(
            "INSERT INTO service_heartbeats (replica, service, id, num, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (replica, service) DO UPDATE SET updated_at = excluded.updated_at",
        )
        .bind(replica)
        .bind(service)
        .bind(new_uuid())
        .bind(num)
        .bind(&ts)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Every heartbeat row, in the order the services first appeared.
    pub async fn service_heartbeats(&self) -> StoreResult<Vec<ServiceHeartbeat>> {
        Ok(sqlx::query_as(
            "SELECT replica, service, id, num, created_at, updated_at FROM service_heartbeats ORDER BY num DESC",
        )
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Whether the database answers and has every migration this build knows applied (the
    /// servers' `/readyz`).
    pub async fn ready(&self) -> StoreResult<bool> {
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *self.conn().await?)
            .await?;
        let latest = super::MIGRATOR.iter().map(|m| m.version).max();
        Ok(applied >= latest)
    }

    /// Instances building, and work items pending and delivered, in one read (the `/metrics`
    /// gauges).
    pub async fn open_work_counts(&self) -> StoreResult<(i64, i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM instances WHERE vm_state = 'building' AND deleted = 0), \
             (SELECT COUNT(*) FROM work WHERE state = 'pending'), \
             (SELECT COUNT(*) FROM work WHERE state = 'delivered')",
        )
        .fetch_one(&mut *self.conn().await?)
        .await?)
    }
}
