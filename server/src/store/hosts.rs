//! Compute hosts (one per agent) with their inventory and resource claims, and the durable work
//! queue between the server and the agents.

use super::identity::found;
use super::sql::Sql;
use super::{Backend, Store, StoreError, StoreResult, fmt_time, new_uuid, now};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Host {
    pub id: String,
    pub num: i64,
    pub name: String,
    pub enabled: i64,
    pub disabled_reason: Option<String>,
    pub forced_down: i64,
    pub availability_zone: String,
    pub hypervisor_type: String,
    pub hypervisor_version: i64,
    pub cpu_arch: String,
    pub libvirt_uri: String,
    pub host_ip: String,
    pub supports_networks: i64,
    pub agent_version: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_gb: i64,
    pub reserved_vcpus: i64,
    pub reserved_memory_mb: i64,
    pub reserved_disk_gb: i64,
    pub vcpus_used: i64,
    pub memory_mb_used: i64,
    pub disk_gb_used: i64,
    pub last_heartbeat: String,
    pub created_at: String,
    pub updated_at: String,
    /// The host's `uptime` line from its last heartbeat.
    pub uptime: Option<String>,
}

/// Inventory as reported by an agent (see `meridian_common::agent::Inventory`).
#[derive(Debug, Clone, Default)]
pub struct HostInventory {
    pub availability_zone: String,
    pub hypervisor_type: String,
    pub hypervisor_version: i64,
    pub cpu_arch: String,
    pub libvirt_uri: String,
    pub host_ip: String,
    pub supports_networks: bool,
    pub agent_version: String,
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_gb: i64,
    pub reserved_vcpus: i64,
    pub reserved_memory_mb: i64,
    pub reserved_disk_gb: i64,
    pub uptime: String,
}

/// A resource amount to claim or release on a host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Claim {
    pub vcpus: i64,
    pub memory_mb: i64,
    pub disk_gb: i64,
}

/// Allocation ratios the claim check applies (the scheduler's settings).
#[derive(Debug, Clone, Copy)]
pub struct Ratios {
    pub cpu: f64,
    pub ram: f64,
    pub disk: f64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Work {
    pub id: String,
    pub instance_id: String,
    pub host_id: String,
    pub action: String,
    pub state: String,
    pub attempt: i64,
    pub leased_until: Option<String>,
    pub result: Option<String>,
}

const HOST_COLS: &str = "id, num, name, enabled, disabled_reason, forced_down, availability_zone, hypervisor_type, \
    hypervisor_version, cpu_arch, libvirt_uri, host_ip, supports_networks, agent_version, vcpus, memory_mb, disk_gb, \
    reserved_vcpus, reserved_memory_mb, reserved_disk_gb, vcpus_used, memory_mb_used, disk_gb_used, last_heartbeat, \
    created_at, updated_at, uptime";
const WORK_COLS: &str = "id, instance_id, host_id, action, state, attempt, leased_until, result";

impl Store {
    /// Registers a host by name (or refreshes its inventory); returns its id. Claims and the
    /// enabled flag survive re-registration.
    pub async fn register_host(&self, name: &str, inv: &HostInventory) -> StoreResult<String> {
        let ts = now();
        if let Ok(h) = self.get_host_by_name(name).await {
            // Known host: refresh inventory, keep id, number, claims and enabled flag.
            self.update_host_inventory(&h.id, inv).await?;
            return Ok(h.id);
        }
        let num = self.next_counter("host").await?;
        let id: Option<String> = sqlx::query_scalar(
            "INSERT INTO hosts (id, num, name, availability_zone, hypervisor_type, hypervisor_version, cpu_arch, libvirt_uri, \
             host_ip, supports_networks, agent_version, vcpus, memory_mb, disk_gb, reserved_vcpus, reserved_memory_mb, \
             reserved_disk_gb, last_heartbeat, created_at, updated_at) \
             VALUES ($1, $18, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17, $17) \
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(new_uuid())
        .bind(name)
        .bind(&inv.availability_zone)
        .bind(&inv.hypervisor_type)
        .bind(inv.hypervisor_version)
        .bind(&inv.cpu_arch)
        .bind(&inv.libvirt_uri)
        .bind(&inv.host_ip)
        .bind(i64::from(inv.supports_networks))
        .bind(&inv.agent_version)
        .bind(inv.vcpus)
        .bind(inv.memory_mb)
        .bind(inv.disk_gb)
        .bind(inv.reserved_vcpus)
        .bind(inv.reserved_memory_mb)
        .bind(inv.reserved_disk_gb)
        .bind(&ts)
        .bind(num)
        .fetch_optional(&mut *self.conn().await?)
        .await?;
        match id {
            // The heartbeat's columns (uptime) as of this first report too.
            Some(id) => {
                self.set_reported_zone(&id, &inv.availability_zone).await?;
                self.heartbeat(&id, inv).await.map(|()| id)
            }
            // Registered concurrently by another request: refresh that row instead.
            None => {
                let h = self.get_host_by_name(name).await?;
                self.update_host_inventory(&h.id, inv).await?;
                Ok(h.id)
            }
        }
    }

    async fn update_host_inventory(&self, id: &str, inv: &HostInventory) -> StoreResult<()> {
        sqlx::query(
            "UPDATE hosts SET availability_zone = $2, hypervisor_type = $3, hypervisor_version = $4, cpu_arch = $5, \
             libvirt_uri = $6, host_ip = $7, supports_networks = $8, agent_version = $9, last_heartbeat = $10, \
             updated_at = $10 WHERE id = $1",
        )
        .bind(id)
        .bind(&inv.availability_zone)
        .bind(&inv.hypervisor_type)
        .bind(inv.hypervisor_version)
        .bind(&inv.cpu_arch)
        .bind(&inv.libvirt_uri)
        .bind(&inv.host_ip)
        .bind(i64::from(inv.supports_networks))
        .bind(&inv.agent_version)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        self.set_reported_zone(id, &inv.availability_zone).await?;
        self.heartbeat(id, inv).await
    }

    /// Records a heartbeat (and the inventory it carried).
    pub async fn heartbeat(&self, host_id: &str, inv: &HostInventory) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE hosts SET last_heartbeat = $2, updated_at = $2, vcpus = $3, memory_mb = $4, disk_gb = $5, \
             reserved_vcpus = $6, reserved_memory_mb = $7, reserved_disk_gb = $8, uptime = $9 WHERE id = $1",
        )
        .bind(host_id)
        .bind(now())
        .bind(inv.vcpus)
        .bind(inv.memory_mb)
        .bind(inv.disk_gb)
        .bind(inv.reserved_vcpus)
        .bind(inv.reserved_memory_mb)
        .bind(inv.reserved_disk_gb)
        .bind(Some(inv.uptime.as_str()).filter(|u| !u.is_empty()))
        .execute(&mut *self.conn().await?)
        .await?;
        found(done.rows_affected(), || format!("Compute host {host_id} could not be found."))
    }

    pub async fn list_hosts(&self) -> StoreResult<Vec<Host>> {
        Ok(sqlx::query_as(&format!("SELECT {HOST_COLS} FROM hosts ORDER BY name"))
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }

    pub async fn get_host(&self, id: &str) -> StoreResult<Host> {
        sqlx::query_as(&format!("SELECT {HOST_COLS} FROM hosts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Compute host {id} could not be found.")))
    }

    /// These hosts (those that exist), in one statement.
    pub async fn hosts_by_ids(&self, ids: &[&str]) -> StoreResult<Vec<Host>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {HOST_COLS} FROM hosts WHERE id IN (")).texts(ids.iter().copied()).push(")");
        Ok(sql.query_as().fetch_all(&mut *self.conn().await?).await?)
    }

    pub async fn get_host_by_name(&self, name: &str) -> StoreResult<Host> {
        sqlx::query_as(&format!("SELECT {HOST_COLS} FROM hosts WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Compute host {name} could not be found.")))
    }

    /// Replaces a host's agent credential by one whose SHA-256 is `credential_hash`; the
    /// previous one stops working at once.
    pub async fn set_host_credential(&self, id: &str, credential_hash: &str) -> StoreResult<()> {
        let done = sqlx::query("UPDATE hosts SET credential_hash = $2 WHERE id = $1")
            .bind(id)
            .bind(credential_hash)
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || format!("Compute host {id} could not be found."))
    }

    /// The host (id, name) whose agent credential hashes to `credential_hash`, if any.
    pub async fn host_by_credential(&self, credential_hash: &str) -> StoreResult<Option<(String, String)>> {
        Ok(sqlx::query_as("SELECT id, name FROM hosts WHERE credential_hash = $1")
            .bind(credential_hash)
            .fetch_optional(&mut *self.conn().await?)
            .await?)
    }

    /// The actions (JSON) of the host's open (pending or delivered) work items whose text
    /// contains `needle`: a prefilter for the agent API's image check, which parses them (a
    /// `%` or `_` in `needle` only widens the match).
    pub async fn open_work_actions(&self, host_id: &str, needle: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT action FROM work WHERE host_id = $1 AND state IN ('pending', 'delivered') \
             AND action LIKE '%' || $2 || '%'",
        )
        .bind(host_id)
        .bind(needle)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn set_host_enabled(&self, id: &str, enabled: bool, reason: Option<&str>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE hosts SET enabled = $2, disabled_reason = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(i64::from(enabled))
            .bind(reason)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || format!("Compute host {id} could not be found."))
    }

    pub async fn set_host_forced_down(&self, id: &str, down: bool) -> StoreResult<()> {
        let done = sqlx::query("UPDATE hosts SET forced_down = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(i64::from(down))
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || format!("Compute host {id} could not be found."))
    }

    pub async fn delete_host(&self, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM hosts WHERE id = $1").bind(id).execute(&mut *self.conn().await?).await?;
        found(done.rows_affected(), || format!("Compute host {id} could not be found."))
    }

    /// Claims resources on a host if they still fit, in one conditional UPDATE: concurrent
    /// claims (from any replica) can never overcommit. Returns whether the claim was made.
    pub async fn claim(&self, host_id: &str, c: Claim, r: Ratios) -> StoreResult<bool> {
        let mut conn = self.conn().await?;
        claim_on(&mut conn, host_id, c, r).await
    }

    /// Gives claimed resources back (never below zero).
    pub async fn release(&self, host_id: &str, c: Claim) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        release_on(&mut conn, host_id, c).await
    }

    // ---- work queue ----

    /// Stores a work item for a host; it is offered from then on until acknowledged.
    pub async fn enqueue_work(&self, instance_id: &str, host_id: &str, action: &str) -> StoreResult<String> {
        let mut tx = self.begin().await?;
        let id = enqueue_work_in(&mut tx, instance_id, host_id, action).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Leases the host's deliverable work, oldest first: pending items and delivered ones
    /// whose lease ran out (at least once). One statement, so nothing is held between a read
    /// and a write; on PostgreSQL the rows are locked with SKIP LOCKED and the state is checked
    /// again on the locked row, so replicas never hand the same item out twice.
    pub async fn lease_work(&self, host_id: &str, lease_secs: i64, max: i64) -> StoreResult<Vec<Work>> {
        #[derive(sqlx::FromRow)]
        struct Leased {
            #[sqlx(flatten)]
            work: Work,
            created_at: String,
        }
        let now_t = chrono::Utc::now();
        let ts = fmt_time(now_t);
        let until = fmt_time(now_t + chrono::Duration::seconds(lease_secs));
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let deliverable = "host_id = $1 AND (state = 'pending' OR (state = 'delivered' AND leased_until < $2))";
        let mut rows: Vec<Leased> = sqlx::query_as(&format!(
            "UPDATE work SET state = 'delivered', attempt = attempt + 1, leased_until = $4, updated_at = $2 \
             WHERE id IN (SELECT id FROM work WHERE {deliverable} ORDER BY created_at LIMIT $3{lock}) AND {deliverable} \
             RETURNING {WORK_COLS}, created_at"
        ))
        .bind(host_id)
        .bind(&ts)
        .bind(max)
        .bind(&until)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        // RETURNING has no order.
        rows.sort_by(|a, b| (&a.created_at, &a.work.id).cmp(&(&b.created_at, &b.work.id)));
        Ok(rows.into_iter().map(|r| r.work).collect())
    }

    /// The work items of these ids that exist (a query per 500 ids).
    pub async fn get_works(&self, ids: &[&str]) -> StoreResult<Vec<Work>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let mut sql = Sql::default();
            sql.push(&format!("SELECT {WORK_COLS} FROM work WHERE id IN ("));
            sql.texts(chunk.iter().copied());
            sql.push(")");
            out.extend(sql.query_as::<Work>().fetch_all(&mut *self.conn().await?).await?);
        }
        Ok(out)
    }

    pub async fn get_work(&self, id: &str) -> StoreResult<Work> {
        sqlx::query_as(&format!("SELECT {WORK_COLS} FROM work WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Work {id} could not be found.")))
    }

    /// Acknowledges a work item with its final state (`done`/`failed`) and result. Returns
    /// false when it was already finished (a duplicate acknowledgement).
    pub async fn finish_work(&self, id: &str, state: &str, result: Option<&str>) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = finish_work_in(&mut tx, id, state, result).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Removes a finished work item and returns it (its final state and result), or `None`
    /// while it is still open. For results read once and never kept (console output): the read
    /// and the removal are one statement, so the text leaves the database as it is answered.
    pub async fn take_finished_work(&self, id: &str) -> StoreResult<Option<Work>> {
        Ok(sqlx::query_as(&format!(
            "DELETE FROM work WHERE id = $1 AND state IN ('done', 'failed', 'cancelled') RETURNING {WORK_COLS}"
        ))
        .bind(id)
        .fetch_optional(&mut *self.conn().await?)
        .await?)
    }

    /// How many unfinished work items an instance has on a host.
    pub async fn live_work(&self, instance_id: &str, host_id: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM work WHERE instance_id = $1 AND host_id = $2 AND state IN ('pending', 'delivered')",
        )
        .bind(instance_id)
        .bind(host_id)
        .fetch_one(&mut *self.conn().await?)
        .await?)
    }

    /// Cancels unfinished work of an instance (e.g. a build superseded by a delete or moved
    /// to another host); returns how many items were cancelled.
    pub async fn cancel_work(&self, instance_id: &str, host_id: Option<&str>) -> StoreResult<u64> {
        Ok(sqlx::query(
            "UPDATE work SET state = 'cancelled', leased_until = NULL, updated_at = $3 \
             WHERE instance_id = $1 AND ($2 IS NULL OR host_id = $2) AND state IN ('pending', 'delivered')",
        )
        .bind(instance_id)
        .bind(host_id)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?
        .rows_affected())
    }
}

/// The claim as one conditional UPDATE, on a connection or inside a transaction.
/// Finishes an open work item (`done`, `failed`, `cancelled`); `false` when it was not open.
pub(crate) async fn finish_work_in(
    tx: &mut super::Tx,
    id: &str,
    state: &str,
    result: Option<&str>,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE work SET state = $2, result = $3, leased_until = NULL, updated_at = $4 \
         WHERE id = $1 AND state IN ('pending', 'delivered')",
    )
    .bind(id)
    .bind(state)
    .bind(result)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn enqueue_work_in(
    tx: &mut super::Tx,
    instance_id: &str,
    host_id: &str,
    action: &str,
) -> StoreResult<String> {
    let id = new_uuid();
    let ts = now();
    sqlx::query(
        "INSERT INTO work (id, instance_id, host_id, action, state, attempt, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
    )
    .bind(&id)
    .bind(instance_id)
    .bind(host_id)
    .bind(action)
    .bind(&ts)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

pub(crate) async fn claim_on(conn: &mut sqlx::AnyConnection, host_id: &str, c: Claim, r: Ratios) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE hosts SET vcpus_used = vcpus_used + $2, memory_mb_used = memory_mb_used + $3, \
         disk_gb_used = disk_gb_used + $4 WHERE id = $1 \
         AND vcpus_used + $2 <= vcpus * $5 AND memory_mb_used + $3 <= memory_mb * $6 \
         AND disk_gb_used + $4 <= disk_gb * $7",
    )
    .bind(host_id)
    .bind(c.vcpus)
    .bind(c.memory_mb)
    .bind(c.disk_gb)
    .bind(r.cpu)
    .bind(r.ram)
    .bind(r.disk)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn release_on(conn: &mut sqlx::AnyConnection, host_id: &str, c: Claim) -> StoreResult<()> {
    sqlx::query(
        "UPDATE hosts SET vcpus_used = CASE WHEN vcpus_used > $2 THEN vcpus_used - $2 ELSE 0 END, \
         memory_mb_used = CASE WHEN memory_mb_used > $3 THEN memory_mb_used - $3 ELSE 0 END, \
         disk_gb_used = CASE WHEN disk_gb_used > $4 THEN disk_gb_used - $4 ELSE 0 END WHERE id = $1",
    )
    .bind(host_id)
    .bind(c.vcpus)
    .bind(c.memory_mb)
    .bind(c.disk_gb)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
