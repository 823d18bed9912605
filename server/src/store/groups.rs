//! Server groups (Nova's InstanceGroup) with their members, the scheduler hints each instance
//! was booted with (Nova's RequestSpec), and host aggregates with their metadata, which decide
//! each host's availability zone.

use std::collections::BTreeMap;

use serde_json::Value;

use super::identity::found;
use super::{Backend, Store, StoreError, StoreResult, now};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ServerGroup {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    /// `affinity`, `anti-affinity`, `soft-affinity` or `soft-anti-affinity`.
    pub policy: String,
    /// JSON object (`{"max_server_per_host": N}` or `{}`).
    pub rules: String,
    pub created_at: String,
}

impl ServerGroup {
    /// The group's `max_server_per_host` rule (1 when unset: hard anti-affinity allows one).
    pub fn max_server_per_host(&self) -> i64 {
        serde_json::from_str::<Value>(&self.rules)
            .ok()
            .and_then(|r| r.get("max_server_per_host").and_then(Value::as_i64))
            .unwrap_or(1)
    }
}

/// One live member of a group and the host it is placed on (if placed).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Member {
    pub group_id: String,
    pub instance_id: String,
    pub host_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub created_at: String,
    pub updated_at: Option<String>,
    pub hosts: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

impl Aggregate {
    pub fn availability_zone(&self) -> Option<&str> {
        self.metadata.get("availability_zone").map(String::as_str)
    }
}

#[derive(sqlx::FromRow)]
struct AggregateRow {
    id: i64,
    uuid: String,
    name: String,
    created_at: String,
    updated_at: Option<String>,
}

const GROUP_COLS: &str = "id, name, project_id, user_id, policy, rules, created_at";

/// The zone of a host from its aggregates (first aggregate saying one), else what it reported.
const ZONE_OF_HOST: &str = "COALESCE((SELECT am.meta_value FROM aggregate_metadata am \
     JOIN aggregate_hosts ah ON ah.aggregate_id = am.aggregate_id \
     WHERE ah.host = hosts.name AND am.meta_key = 'availability_zone' ORDER BY am.aggregate_id LIMIT 1), \
     reported_availability_zone, availability_zone)";

fn group_missing(id: &str) -> StoreError {
    StoreError::NotFound(format!("Instance group {id} could not be found."))
}

fn aggregate_missing(id: i64) -> StoreError {
    StoreError::NotFound(format!("Aggregate {id} could not be found."))
}

impl Store {
    // ---- server groups ----

    pub async fn create_server_group(&self, g: &ServerGroup) -> StoreResult<()> {
        sqlx::query(&format!("INSERT INTO server_groups ({GROUP_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
            .bind(&g.id)
            .bind(&g.name)
            .bind(&g.project_id)
            .bind(&g.user_id)
            .bind(&g.policy)
            .bind(&g.rules)
            .bind(&g.created_at)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn get_server_group(&self, id: &str) -> StoreResult<ServerGroup> {
        sqlx::query_as(&format!("SELECT {GROUP_COLS} FROM server_groups WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| group_missing(id))
    }

    /// Groups of one project (all projects with `None`), oldest first.
    pub async fn list_server_groups(&self, project_id: Option<&str>) -> StoreResult<Vec<ServerGroup>> {
        let mut conn = self.conn().await?;
        Ok(match project_id {
            Some(p) => {
                sqlx::query_as(&format!(
                    "SELECT {GROUP_COLS} FROM server_groups WHERE project_id = $1 ORDER BY created_at, id"
                ))
                .bind(p)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as(&format!("SELECT {GROUP_COLS} FROM server_groups ORDER BY created_at, id"))
                    .fetch_all(&mut *conn)
                    .await?
            }
        })
    }

    /// Deletes a group and its membership rows (the member instances stay).
    pub async fn delete_server_group(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM server_groups WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(group_missing(id));
        }
        sqlx::query("DELETE FROM server_group_members WHERE group_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn count_server_groups(&self, project_id: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM server_groups WHERE project_id = $1")
            .bind(project_id)
            .fetch_one(&mut *self.conn().await?)
            .await?)
    }

    /// Live (not deleted) members of these groups with their hosts, in the order they joined.
    pub async fn group_members(&self, group_ids: &[&str]) -> StoreResult<Vec<Member>> {
        if group_ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=group_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT m.group_id, m.instance_id, i.host_id FROM server_group_members m \
             JOIN instances i ON i.id = m.instance_id \
             WHERE i.deleted = 0 AND m.group_id IN ({}) ORDER BY m.created_at, m.instance_id",
            marks.join(", ")
        );
        let mut q = sqlx::query_as(&sql);
        for g in group_ids {
            q = q.bind(*g);
        }
        Ok(q.fetch_all(&mut *self.conn().await?).await?)
    }

    /// The groups an instance belongs to (at most one through the API, as Nova).
    pub async fn groups_of_instance(&self, instance_id: &str) -> StoreResult<Vec<ServerGroup>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {} FROM server_groups g JOIN server_group_members m ON m.group_id = g.id \
             WHERE m.instance_id = $1 ORDER BY g.created_at",
            GROUP_COLS.split(", ").map(|c| format!("g.{c}")).collect::<Vec<_>>().join(", ")
        ))
        .bind(instance_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Adds instances to a group, unless that makes the group's live members more than `limit`
    /// (`limit` < 0: no limit): `Ok(false)` then, and nothing is added. One transaction, so two
    /// concurrent boots cannot both take the last place.
    pub async fn add_group_members(&self, group_id: &str, instance_ids: &[&str], limit: i64) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM server_groups WHERE id = $1 FOR UPDATE")
                .bind(group_id)
                .execute(&mut *tx)
                .await?;
        }
        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM server_groups WHERE id = $1")
            .bind(group_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(group_missing(group_id));
        }
        if limit >= 0 {
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM server_group_members m JOIN instances i ON i.id = m.instance_id \
                 WHERE m.group_id = $1 AND i.deleted = 0",
            )
            .bind(group_id)
            .fetch_one(&mut *tx)
            .await?;
            if live + instance_ids.len() as i64 > limit {
                return Ok(false);
            }
        }
        let ts = now();
        for id in instance_ids {
            sqlx::query(
                "INSERT INTO server_group_members (group_id, instance_id, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(group_id)
            .bind(*id)
            .bind(&ts)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    // ---- request specs ----

    /// Stores the scheduler hints an instance was booted with (a JSON object).
    pub async fn set_scheduler_hints(&self, instance_id: &str, hints: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO request_specs (instance_id, scheduler_hints) VALUES ($1, $2) \
             ON CONFLICT (instance_id) DO UPDATE SET scheduler_hints = excluded.scheduler_hints",
        )
        .bind(instance_id)
        .bind(hints)
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    /// The instance's stored scheduler hints (`{}` when it was booted without any).
    pub async fn scheduler_hints(&self, instance_id: &str) -> StoreResult<Value> {
        let s: Option<String> = sqlx::query_scalar("SELECT scheduler_hints FROM request_specs WHERE instance_id = $1")
            .bind(instance_id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        Ok(s.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_else(|| Value::Object(Default::default())))
    }

    // ---- aggregates ----

    async fn aggregates_where(&self, id: Option<i64>) -> StoreResult<Vec<Aggregate>> {
        let mut conn = self.conn().await?;
        let rows: Vec<AggregateRow> = match id {
            Some(id) => {
                sqlx::query_as("SELECT id, uuid, name, created_at, updated_at FROM aggregates WHERE id = $1")
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await?
            }
            None => {
                sqlx::query_as("SELECT id, uuid, name, created_at, updated_at FROM aggregates ORDER BY id")
                    .fetch_all(&mut *conn)
                    .await?
            }
        };
        let hosts: Vec<(i64, String)> = sqlx::query_as("SELECT aggregate_id, host FROM aggregate_hosts ORDER BY host")
            .fetch_all(&mut *conn)
            .await?;
        let meta: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT aggregate_id, meta_key, meta_value FROM aggregate_metadata")
                .fetch_all(&mut *conn)
                .await?;
        Ok(rows
            .into_iter()
            .map(|r| Aggregate {
                hosts: hosts.iter().filter(|h| h.0 == r.id).map(|h| h.1.clone()).collect(),
                metadata: meta.iter().filter(|m| m.0 == r.id).map(|m| (m.1.clone(), m.2.clone())).collect(),
                id: r.id,
                uuid: r.uuid,
                name: r.name,
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect())
    }

    pub async fn list_aggregates(&self) -> StoreResult<Vec<Aggregate>> {
        self.aggregates_where(None).await
    }

    pub async fn get_aggregate(&self, id: i64) -> StoreResult<Aggregate> {
        self.aggregates_where(Some(id)).await?.into_iter().next().ok_or_else(|| aggregate_missing(id))
    }

    /// Creates an aggregate (with its zone as metadata). `Conflict` when the name is taken.
    pub async fn create_aggregate(&self, uuid: &str, name: &str, zone: Option<&str>) -> StoreResult<Aggregate> {
        let id = self.next_counter("aggregate").await?;
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "INSERT INTO aggregates (id, uuid, name, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(uuid)
        .bind(name)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("Aggregate {name} already exists.")));
        }
        if let Some(z) = zone {
            sqlx::query(
                "INSERT INTO aggregate_metadata (aggregate_id, meta_key, meta_value) VALUES ($1, 'availability_zone', $2)",
            )
            .bind(id)
            .bind(z)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.get_aggregate(id).await
    }

    /// Renames an aggregate. `Conflict` when the name is taken.
    pub async fn rename_aggregate(&self, id: i64, name: &str) -> StoreResult<()> {
        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM aggregates WHERE name = $1 AND id <> $2")
            .bind(name)
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!("Aggregate {name} already exists.")));
        }
        let done = sqlx::query("UPDATE aggregates SET name = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(name)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || format!("Aggregate {id} could not be found."))
    }

    pub async fn delete_aggregate(&self, id: i64) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM aggregates WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(aggregate_missing(id));
        }
        sqlx::query("DELETE FROM aggregate_metadata WHERE aggregate_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM aggregate_hosts WHERE aggregate_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        self.refresh_host_zones().await
    }

    /// Adds a host (by name); `false` when it is already in.
    pub async fn add_aggregate_host(&self, id: i64, host: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("INSERT INTO aggregate_hosts (aggregate_id, host) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(host)
                .execute(&mut *self.conn().await?)
                .await?;
        self.touch_aggregate(id).await?;
        self.refresh_host_zones().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a host; `false` when it was not in.
    pub async fn remove_aggregate_host(&self, id: i64, host: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM aggregate_hosts WHERE aggregate_id = $1 AND host = $2")
            .bind(id)
            .bind(host)
            .execute(&mut *self.conn().await?)
            .await?;
        self.touch_aggregate(id).await?;
        self.refresh_host_zones().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets (`Some`) or removes (`None`) metadata keys in one transaction.
    pub async fn update_aggregate_metadata(&self, id: i64, changes: &[(String, Option<String>)]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for (k, v) in changes {
            match v {
                Some(v) => {
                    sqlx::query(
                        "INSERT INTO aggregate_metadata (aggregate_id, meta_key, meta_value) VALUES ($1, $2, $3) \
                         ON CONFLICT (aggregate_id, meta_key) DO UPDATE SET meta_value = excluded.meta_value",
                    )
                    .bind(id)
                    .bind(k)
                    .bind(v)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM aggregate_metadata WHERE aggregate_id = $1 AND meta_key = $2")
                        .bind(id)
                        .bind(k)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        self.touch_aggregate(id).await?;
        self.refresh_host_zones().await
    }

    async fn touch_aggregate(&self, id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE aggregates SET updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Sets every host's zone from its aggregates (else the zone its agent reported).
    pub async fn refresh_host_zones(&self) -> StoreResult<()> {
        sqlx::query(&format!("UPDATE hosts SET availability_zone = {ZONE_OF_HOST}"))
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Records the zone an agent reports and applies its aggregates' zone over it.
    pub(crate) async fn set_reported_zone(&self, host_id: &str, zone: &str) -> StoreResult<()> {
        sqlx::query("UPDATE hosts SET reported_availability_zone = $2 WHERE id = $1")
            .bind(host_id)
            .bind(zone)
            .execute(&mut *self.conn().await?)
            .await?;
        sqlx::query(&format!("UPDATE hosts SET availability_zone = {ZONE_OF_HOST} WHERE id = $1"))
            .bind(host_id)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }
}

/// Whether the instance's hard group policies let it run on `host_id` now, read in the caller's
/// transaction (Nova's late `_validate_instance_group_policy`): anti-affinity counts the other
/// live members placed there against `max_server_per_host`; affinity wants the host of the
/// members already placed. On PostgreSQL the group rows are locked first, so two placements in
/// one group are serialised (SQLite has a single writer).
pub(crate) async fn group_admits(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    instance_id: &str,
    host_id: &str,
) -> StoreResult<bool> {
    let lock = if backend == Backend::Postgres { " FOR UPDATE OF g" } else { "" };
    let groups: Vec<(String, String, String)> = sqlx::query_as(&format!(
        "SELECT g.id, g.policy, g.rules FROM server_groups g JOIN server_group_members m ON m.group_id = g.id \
         WHERE m.instance_id = $1 AND g.policy IN ('affinity', 'anti-affinity') ORDER BY g.id{lock}"
    ))
    .bind(instance_id)
    .fetch_all(&mut *conn)
    .await?;
    for (group_id, policy, rules) in groups {
        let placed: Vec<(String,)> = sqlx::query_as(
            "SELECT i.host_id FROM server_group_members m JOIN instances i ON i.id = m.instance_id \
             WHERE m.group_id = $1 AND m.instance_id <> $2 AND i.deleted = 0 AND i.host_id IS NOT NULL",
        )
        .bind(&group_id)
        .bind(instance_id)
        .fetch_all(&mut *conn)
        .await?;
        let g = ServerGroup {
            id: group_id,
            name: String::new(),
            project_id: String::new(),
            user_id: String::new(),
            policy,
            rules,
            created_at: String::new(),
        };
        let here = placed.iter().filter(|(h,)| h == host_id).count() as i64;
        let ok = match g.policy.as_str() {
            "anti-affinity" => here < g.max_server_per_host().max(1),
            _ => placed.is_empty() || here > 0,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}
