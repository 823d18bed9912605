//! Migration records (migration 0025): resize, cold and live migration, evacuation.
//!
//! Claims: the instance's own claim (`instances.claimed`) always covers its `host_id` with its
//! `flavor`. A migration holds at most one more (`held_host_id` + `held_flavor`): the
//! destination's new flavor until the guest runs there, then (after the swap in
//! [`Store::finish_migration`]) the source's old flavor until confirm or revert. Every change
//! of the two moves in one transaction with the rows that explain it.

use super::hosts::{Claim, Ratios, claim_on, release_on};
use super::{Store, StoreError, StoreResult, now};

#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Migration {
    pub id: i64,
    pub uuid: String,
    pub instance_uuid: String,
    pub project_id: String,
    pub user_id: String,
    pub migration_type: String,
    pub status: String,
    pub source_host_id: Option<String>,
    pub source_compute: Option<String>,
    pub dest_host_id: Option<String>,
    pub dest_compute: Option<String>,
    pub dest_host: Option<String>,
    pub old_flavor_id: String,
    pub new_flavor_id: String,
    pub old_flavor: String,
    pub new_flavor: String,
    pub held_host_id: Option<String>,
    pub held_flavor: Option<String>,
    pub power_on: i64,
    pub prior_vm_state: String,
    pub disk_bytes: i64,
    pub memory_total: Option<i64>,
    pub memory_processed: Option<i64>,
    pub memory_remaining: Option<i64>,
    pub disk_total: Option<i64>,
    pub disk_processed: Option<i64>,
    pub disk_remaining: Option<i64>,
    /// A live migration's abort was asked (migration 0028).
    pub live_abort: i64,
    /// A live migration's forced completion was asked (migration 0028).
    pub live_force_complete: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl Migration {
    /// Whether the two ends are one host (a resize in place).
    pub fn same_host(&self) -> bool {
        self.source_host_id.is_some() && self.source_host_id == self.dest_host_id
    }
}

const COLS: &str = "id, uuid, instance_uuid, project_id, user_id, migration_type, status, source_host_id, \
    source_compute, dest_host_id, dest_compute, dest_host, old_flavor_id, new_flavor_id, old_flavor, new_flavor, \
    held_host_id, held_flavor, power_on, prior_vm_state, disk_bytes, memory_total, memory_processed, \
    memory_remaining, disk_total, disk_processed, disk_remaining, live_abort, live_force_complete, created_at, updated_at";

/// Filters of `GET /os-migrations` (all optional).
#[derive(Debug, Clone, Default)]
pub struct MigrationFilter {
    /// Source or destination compute.
    pub host: Option<String>,
    pub source_compute: Option<String>,
    pub status: Option<String>,
    pub instance_uuid: Option<String>,
    pub migration_type: Option<String>,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    /// `updated_at >= since`.
    pub changes_since: Option<String>,
    /// `updated_at <= before`.
    pub changes_before: Option<String>,
    /// Only these statuses (the in-progress list of a server).
    pub statuses: Vec<String>,
}

/// A flavor snapshot's claim.
pub fn flavor_claim(flavor: &str) -> Claim {
    let f: serde_json::Value = serde_json::from_str(flavor).unwrap_or_default();
    Claim {
        vcpus: f["vcpus"].as_i64().unwrap_or(0),
        memory_mb: f["ram"].as_i64().unwrap_or(0),
        disk_gb: f["disk"].as_i64().unwrap_or(0) + f["ephemeral"].as_i64().unwrap_or(0),
    }
}

impl Store {
    /// Stores a new migration and, when `hold` is given, claims the new flavor on the
    /// destination for it, in one transaction. `false` (nothing stored) when the destination no
    /// longer fits.
    pub async fn create_migration(&self, m: &mut Migration, hold: Option<Ratios>) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if let (Some(r), Some(host)) = (hold, m.held_host_id.as_deref()) {
            // The server group may no longer allow the destination: checked with the claim.
            if !super::groups::group_admits(&mut tx, self.backend, &m.instance_uuid, host).await? {
                return Ok(false);
            }
            let claim = flavor_claim(m.held_flavor.as_deref().unwrap_or("{}"));
            if !claim_on(&mut tx, host, claim, r).await? {
                return Ok(false);
            }
        }
        let (next,): (i64,) = sqlx::query_as("SELECT CAST(COALESCE(MAX(id), 0) + 1 AS BIGINT) FROM migrations")
            .fetch_one(&mut *tx)
            .await?;
        m.id = next;
        let ts = now();
        m.created_at.clone_from(&ts);
        m.updated_at.clone_from(&ts);
        sqlx::query(&format!(
            "INSERT INTO migrations ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31)"
        ))
        .bind(m.id)
        .bind(&m.uuid)
        .bind(&m.instance_uuid)
        .bind(&m.project_id)
        .bind(&m.user_id)
        .bind(&m.migration_type)
        .bind(&m.status)
        .bind(m.source_host_id.as_deref())
        .bind(m.source_compute.as_deref())
        .bind(m.dest_host_id.as_deref())
        .bind(m.dest_compute.as_deref())
        .bind(m.dest_host.as_deref())
        .bind(&m.old_flavor_id)
        .bind(&m.new_flavor_id)
        .bind(&m.old_flavor)
        .bind(&m.new_flavor)
        .bind(m.held_host_id.as_deref())
        .bind(m.held_flavor.as_deref())
        .bind(m.power_on)
        .bind(&m.prior_vm_state)
        .bind(m.disk_bytes)
        .bind(m.memory_total)
        .bind(m.memory_processed)
        .bind(m.memory_remaining)
        .bind(m.disk_total)
        .bind(m.disk_processed)
        .bind(m.disk_remaining)
        .bind(m.live_abort)
        .bind(m.live_force_complete)
        .bind(&m.created_at)
        .bind(&m.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.filters_changed();
        Ok(true)
    }

    pub async fn get_migration(&self, id: i64) -> StoreResult<Migration> {
        sqlx::query_as(&format!("SELECT {COLS} FROM migrations WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Migration {id} could not be found.")))
    }

    pub async fn get_migration_by_uuid(&self, uuid: &str) -> StoreResult<Migration> {
        sqlx::query_as(&format!("SELECT {COLS} FROM migrations WHERE uuid = $1"))
            .bind(uuid)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Migration {uuid} could not be found.")))
    }

    /// The instance's newest migration, if any.
    pub async fn latest_migration(&self, instance_id: &str) -> StoreResult<Option<Migration>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLS} FROM migrations WHERE instance_uuid = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(instance_id)
        .fetch_optional(&mut *self.conn().await?)
        .await?)
    }

    /// Migrations matching `f`, newest first (Nova's order: `created_at` then `id`, descending).
    pub async fn list_migrations(&self, f: &MigrationFilter) -> StoreResult<Vec<Migration>> {
        let mut sql = format!("SELECT {COLS} FROM migrations WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(h) = &f.host {
            binds.push(h.clone());
            let n = binds.len();
            sql.push_str(&format!(" AND (source_compute = ${n} OR dest_compute = ${n})"));
        }
        let conds: [(&str, &Option<String>); 8] = [
            ("source_compute =", &f.source_compute),
            ("status =", &f.status),
            ("instance_uuid =", &f.instance_uuid),
            ("migration_type =", &f.migration_type),
            ("project_id =", &f.project_id),
            ("user_id =", &f.user_id),
            ("updated_at >=", &f.changes_since),
            ("updated_at <=", &f.changes_before),
        ];
        for (cond, value) in conds {
            if let Some(v) = value {
                binds.push(v.clone());
                sql.push_str(&format!(" AND {cond} ${}", binds.len()));
            }
        }
        if !f.statuses.is_empty() {
            let mut marks = Vec::new();
            for s in &f.statuses {
                binds.push(s.clone());
                marks.push(format!("${}", binds.len()));
            }
            sql.push_str(&format!(" AND status IN ({})", marks.join(", ")));
        }
        sql.push_str(" ORDER BY created_at DESC, id DESC");
        let mut q = sqlx::query_as::<_, Migration>(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        Ok(q.fetch_all(&mut *self.conn().await?).await?)
    }

    /// Sets a migration's status (and `updated_at`).
    pub async fn set_migration_status(&self, id: i64, status: &str) -> StoreResult<()> {
        sqlx::query("UPDATE migrations SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        // The destination's port filters follow the open migrations (`host_filter_data`).
        self.filters_changed();
        Ok(())
    }

    /// Records the bytes the source sent through the relay (and the disk totals the API shows
    /// for live migrations).
    pub async fn set_migration_disk(&self, id: i64, bytes: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE migrations SET disk_bytes = $2, disk_total = $2, disk_processed = $2, disk_remaining = 0, \
             updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(bytes)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// Gives the migration's extra claim back (idempotent), setting `status` in the same
    /// transaction.
    pub async fn end_migration(&self, id: i64, status: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT held_host_id, held_flavor FROM migrations WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((Some(host), flavor)) = row {
            release_on(&mut tx, &host, flavor_claim(flavor.as_deref().unwrap_or("{}"))).await?;
        }
        sqlx::query(
            "UPDATE migrations SET held_host_id = NULL, held_flavor = NULL, status = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.filters_changed();
        Ok(())
    }

    /// The guest runs on the destination now: the instance moves there with the new flavor
    /// (its claim is the one the migration held), the migration holds the source's old flavor
    /// instead, and the instance takes `vm_state` with no task. One transaction.
    pub async fn finish_migration(&self, m: &Migration, vm_state: &str, power_state: i64) -> StoreResult<()> {
        self.finish_move(m, vm_state, power_state, "finished").await
    }

    /// An evacuation's guest runs on its new host: as [`Store::finish_migration`], the
    /// migration `done` and holding the dead source's claim until that host has removed its
    /// copy (Nova keeps the source's allocation until `_destroy_evacuated_instances`).
    pub async fn finish_evacuation(&self, m: &Migration, vm_state: &str, power_state: i64) -> StoreResult<()> {
        self.finish_move(m, vm_state, power_state, "done").await
    }

    /// Claims the instance's flavor on the host an evacuation goes to (the server group
    /// checked in the same transaction) and records it as the migration's destination,
    /// `pre-migrating`. `false` (nothing changed) when the host no longer fits.
    pub async fn hold_for_evacuation(
        &self,
        id: i64,
        dest: &super::hosts::Host,
        flavor: &str,
        ratios: Ratios,
    ) -> StoreResult<bool> {
        self.hold_destination(id, dest, flavor, ratios, "pre-migrating").await
    }

    /// As [`Store::hold_for_evacuation`], for a live migration: the migration becomes `status`.
    pub async fn hold_destination(
        &self,
        id: i64,
        dest: &super::hosts::Host,
        flavor: &str,
        ratios: Ratios,
        status: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let (instance,): (String,) =
            sqlx::query_as("SELECT instance_uuid FROM migrations WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
        if !super::groups::group_admits(&mut tx, self.backend, &instance, &dest.id).await? {
            return Ok(false);
        }
        if !claim_on(&mut tx, &dest.id, flavor_claim(flavor), ratios).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE migrations SET dest_host_id = $2, dest_compute = $3, dest_host = $4, held_host_id = $2, \
             held_flavor = $5, status = $7, updated_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(&dest.id)
        .bind(&dest.name)
        .bind(&dest.host_ip)
        .bind(flavor)
        .bind(now())
        .bind(status)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn finish_move(&self, m: &Migration, vm_state: &str, power_state: i64, status: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let ts = now();
        let at = Placement { host_id: m.dest_host_id.as_deref(), flavor: &m.new_flavor, flavor_id: &m.new_flavor_id };
        settle_in(&mut tx, &m.instance_uuid, at, vm_state, power_state, &ts).await?;
        sqlx::query(
            "UPDATE migrations SET held_host_id = source_host_id, held_flavor = old_flavor, status = $3, \
             updated_at = $2 WHERE id = $1",
        )
        .bind(m.id)
        .bind(&ts)
        .bind(status)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.instances_changed();
        self.filters_changed();
        Ok(())
    }

    /// A finished migration undone: the destination's claim (the instance's, new flavor) is
    /// released, the instance is back on the source with the old flavor (the claim the
    /// migration held becomes its own again). One transaction. `vm_state`/`power_state` as
    /// the source reports the guest.
    pub async fn revert_migration(&self, m: &Migration, vm_state: &str, power_state: i64) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        if let Some(dest) = &m.dest_host_id {
            release_on(&mut tx, dest, flavor_claim(&m.new_flavor)).await?;
        }
        let ts = now();
        let at = Placement { host_id: m.source_host_id.as_deref(), flavor: &m.old_flavor, flavor_id: &m.old_flavor_id };
        settle_in(&mut tx, &m.instance_uuid, at, vm_state, power_state, &ts).await?;
        sqlx::query(
            "UPDATE migrations SET held_host_id = NULL, held_flavor = NULL, status = 'reverted', updated_at = $2 \
             WHERE id = $1",
        )
        .bind(m.id)
        .bind(&ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.instances_changed();
        self.filters_changed();
        Ok(())
    }

    /// A live migration's guest runs on its destination: the instance moves there (the claim
    /// the migration held there becomes its own), the source's claim is released, the
    /// migration is `completed` with what was moved, the task cleared. One transaction.
    pub async fn finish_live_migration(
        &self,
        m: &Migration,
        power_state: i64,
        memory_bytes: Option<i64>,
        disk_bytes: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        if let Some(source) = &m.source_host_id {
            release_on(&mut tx, source, flavor_claim(&m.old_flavor)).await?;
        }
        let ts = now();
        let at = Placement { host_id: m.dest_host_id.as_deref(), flavor: &m.new_flavor, flavor_id: &m.new_flavor_id };
        settle_in(&mut tx, &m.instance_uuid, at, &m.prior_vm_state, power_state, &ts).await?;
        // What the source says it moved; else the last progress it reported.
        let memory = memory_bytes.or(m.memory_total);
        let disk = disk_bytes.or(m.disk_total);
        sqlx::query(
            "UPDATE migrations SET held_host_id = NULL, held_flavor = NULL, status = 'completed', \
             memory_total = $3, memory_processed = $3, memory_remaining = 0, disk_total = $4, \
             disk_processed = $4, disk_remaining = 0, updated_at = $2 WHERE id = $1",
        )
        .bind(m.id)
        .bind(&ts)
        .bind(memory)
        .bind(disk)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.instances_changed();
        self.filters_changed();
        Ok(())
    }

    /// Stores a live migration's progress (libvirt's job statistics, as the source reports
    /// them) while it is `running`; returns the migration as it now is (with the abort and
    /// force-complete flags), or `None` when it is not running any more.
    pub async fn live_migration_progress(
        &self,
        id: i64,
        p: &meridian_common::agent::LiveMigrationProgress,
    ) -> StoreResult<Option<Migration>> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE migrations SET memory_total = $2, memory_processed = $3, memory_remaining = $4, \
             disk_total = $5, disk_processed = $6, disk_remaining = $7, updated_at = $8 \
             WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(n(p.memory_total_bytes))
        .bind(n(p.memory_processed_bytes))
        .bind(n(p.memory_remaining_bytes))
        .bind(n(p.disk_total_bytes))
        .bind(n(p.disk_processed_bytes))
        .bind(n(p.disk_remaining_bytes))
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_migration(id).await.map(Some)
    }

    /// Sets a live migration's abort or force-complete flag while its status is one of
    /// `statuses`; `false` when it was not (it moved on meanwhile).
    pub async fn flag_live_migration(&self, id: i64, abort: bool, statuses: &[&str]) -> StoreResult<bool> {
        let column = if abort { "live_abort" } else { "live_force_complete" };
        let marks: Vec<String> = (0..statuses.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE migrations SET {column} = 1, updated_at = $2 WHERE id = $1 AND status IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(id).bind(now());
        for s in statuses {
            q = q.bind(*s);
        }
        Ok(q.execute(&mut *self.conn().await?).await?.rows_affected() == 1)
    }

    /// Moves a migration from one status to another; `false` when it was not in `from` (a
    /// concurrent step won).
    pub async fn move_migration(&self, id: i64, from: &[&str], to: &str) -> StoreResult<bool> {
        let marks: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "UPDATE migrations SET status = $2, updated_at = $3 WHERE id = $1 AND status IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(id).bind(to).bind(now());
        for s in from {
            q = q.bind(*s);
        }
        let moved = q.execute(&mut *self.conn().await?).await?.rows_affected() == 1;
        self.filters_changed();
        Ok(moved)
    }

    /// Resized instances whose migration finished before `before` (auto-confirm candidates).
    pub async fn finished_migrations_before(&self, before: &str) -> StoreResult<Vec<Migration>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLS} FROM migrations WHERE status = 'finished' AND updated_at <= $1 ORDER BY updated_at"
        ))
        .bind(before)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }
}

/// Where a migration leaves its instance: the host and the flavor it runs with.
#[derive(Clone, Copy)]
struct Placement<'a> {
    host_id: Option<&'a str>,
    flavor: &'a str,
    flavor_id: &'a str,
}

/// The end of a move, either way: the instance on `at`'s host with its flavor (and the flavor's
/// vCPUs and RAM), the task cleared, the guest's state as its host reports it.
async fn settle_in(
    tx: &mut super::Tx,
    instance_id: &str,
    at: Placement<'_>,
    vm_state: &str,
    power_state: i64,
    ts: &str,
) -> StoreResult<()> {
    let claim = flavor_claim(at.flavor);
    sqlx::query(
        "UPDATE instances SET host_id = $2, flavor = $3, flavor_id = $4, vcpus = $5, memory_mb = $6, \
         vm_state = $7, task_state = NULL, power_state = $8, build_deadline = NULL, updated_at = $9 \
         WHERE id = $1 AND deleted = 0",
    )
    .bind(instance_id)
    .bind(at.host_id)
    .bind(at.flavor)
    .bind(at.flavor_id)
    .bind(claim.vcpus)
    .bind(claim.memory_mb)
    .bind(vm_state)
    .bind(power_state)
    .bind(ts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
