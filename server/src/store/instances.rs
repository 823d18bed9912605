//! Instances, their state timeline and their instance-action log.
//!
//! State changes go through [`Store::transition`], a conditional UPDATE on the expected task
//! state (Nova's `expected_task_state`): two concurrent changes can never both win. Every
//! change is recorded in `instance_transitions` by a trigger on the same statement
//! (`triggers.rs`), so the timeline never misses one.

use super::hosts::{Claim, Ratios, claim_on, release_on};
use super::identity::found;
use super::sql::Sql;
use super::{Backend, Store, StoreError, StoreResult, new_uuid, now};

#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub description: Option<String>,
    pub project_id: String,
    pub user_id: String,
    pub flavor_id: String,
    /// JSON snapshot of the flavor at boot.
    pub flavor: String,
    pub image_id: String,
    pub key_name: Option<String>,
    pub key_data: Option<String>,
    pub user_data: Option<String>,
    pub metadata: String,
    pub tags: String,
    pub availability_zone: Option<String>,
    pub config_drive: String,
    pub reservation_id: String,
    pub launch_index: i64,
    pub host_id: Option<String>,
    pub alternates: String,
    pub tried_hosts: String,
    pub claimed: i64,
    pub requested_networks: String,
    pub owned_ports: String,
    pub vm_state: String,
    pub task_state: Option<String>,
    pub power_state: i64,
    pub fault: Option<String>,
    pub locked: i64,
    pub build_deadline: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub launched_at: Option<String>,
    pub terminated_at: Option<String>,
    pub deleted: i64,
    /// `accessIPv4` / `accessIPv6` as the user set them.
    pub access_ip_v4: Option<String>,
    pub access_ip_v6: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Transition {
    pub seq: i64,
    pub instance_id: String,
    pub vm_state: String,
    pub task_state: Option<String>,
    pub power_state: i64,
    pub at: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceAction {
    pub id: String,
    pub instance_id: String,
    pub request_id: String,
    pub action: String,
    pub project_id: String,
    pub user_id: String,
    pub message: Option<String>,
    pub start_time: String,
    pub finish_time: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActionEvent {
    pub id: String,
    pub action_id: String,
    pub event: String,
    pub host: Option<String>,
    pub result: Option<String>,
    pub traceback: Option<String>,
    pub start_time: String,
    pub finish_time: Option<String>,
}

/// The task state a transition expects to find (Nova's `expected_task_state`).
/// The guard of a build's host-side steps: a live instance, placed and not yet done (a delete
/// or a failure meanwhile makes the step a no-op).
const BUILDING_ON_HOST: &str =
    "deleted = 0 AND vm_state = 'building' AND task_state IN ('networking', 'block_device_mapping', 'spawning')";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect<'a> {
    /// Whatever it is.
    Any,
    /// Exactly this task state (`None`: no task).
    Task(Option<&'a str>),
    /// One of these task states.
    OneOf(&'a [&'a str]),
}

/// A state change: new vm_state, task_state and power_state (`None` keeps the power state).
#[derive(Debug, Clone, Copy)]
pub struct NewState<'a> {
    pub vm_state: &'a str,
    pub task_state: Option<&'a str>,
    pub power_state: Option<i64>,
}

/// Listing filters (all optional).
#[derive(Debug, Default, Clone)]
pub struct InstanceFilter {
    pub project_id: Option<String>,
    pub host_id: Option<String>,
    /// Only rows updated at or after this time; includes deleted ones (as Nova does).
    pub changes_since: Option<String>,
    pub include_deleted: bool,
}

/// Further exact-match listing filters of `/servers` (all optional).
#[derive(Debug, Default, Clone)]
pub struct InstanceMatch {
    pub image_id: Option<String>,
    pub flavor_id: Option<String>,
    pub reservation_id: Option<String>,
}

/// Sort order of an instance page: one of Nova's sort keys (then the id), ascending or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceSort {
    CreatedAt,
    DisplayName,
    UpdatedAt,
    Uuid,
    VmState,
    TaskState,
    LaunchedAt,
    Host,
}

impl InstanceSort {
    /// Nova's name for the key (`sort_key`).
    pub fn parse(key: &str) -> Option<InstanceSort> {
        Some(match key {
            "created_at" => InstanceSort::CreatedAt,
            "display_name" => InstanceSort::DisplayName,
            "updated_at" => InstanceSort::UpdatedAt,
            "uuid" => InstanceSort::Uuid,
            "vm_state" => InstanceSort::VmState,
            "task_state" => InstanceSort::TaskState,
            "launched_at" => InstanceSort::LaunchedAt,
            "host" => InstanceSort::Host,
            _ => return None,
        })
    }

    /// The key as the list has always compared it: text, a missing value as ''.
    fn column(self) -> &'static str {
        match self {
            InstanceSort::CreatedAt => "created_at",
            InstanceSort::DisplayName => "name",
            InstanceSort::UpdatedAt => "updated_at",
            InstanceSort::Uuid => "id",
            InstanceSort::VmState => "vm_state",
            InstanceSort::TaskState => "COALESCE(task_state, '')",
            InstanceSort::LaunchedAt => "COALESCE(launched_at, '')",
            InstanceSort::Host => "COALESCE(host_id, '')",
        }
    }

    /// The key of a row, compared byte by byte as the SQL order does.
    pub fn key(self, i: &Instance) -> String {
        match self {
            InstanceSort::CreatedAt => i.created_at.clone(),
            InstanceSort::DisplayName => i.name.clone(),
            InstanceSort::UpdatedAt => i.updated_at.clone(),
            InstanceSort::Uuid => i.id.clone(),
            InstanceSort::VmState => i.vm_state.clone(),
            InstanceSort::TaskState => i.task_state.clone().unwrap_or_default(),
            InstanceSort::LaunchedAt => i.launched_at.clone().unwrap_or_default(),
            InstanceSort::Host => i.host_id.clone().unwrap_or_default(),
        }
    }
}

/// Which part of a sorted listing to read.
#[derive(Debug, Clone)]
pub struct InstancePage<'a> {
    pub sort: InstanceSort,
    pub desc: bool,
    /// Start after this instance (it must be in the filtered listing).
    pub marker: Option<&'a str>,
    /// At most this many rows (`None`: all of them).
    pub limit: Option<i64>,
}

/// What a server's representation reads from other tables than `instances`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct InstanceExtras {
    /// Its ports' addresses: ports by creation, then each port's addresses in order; a port
    /// without addresses once, without an address.
    pub addresses: Vec<PortAddress>,
    /// The names of its ports' security groups, each once, sorted.
    pub security_groups: Vec<String>,
    /// The volumes attached through the compute API, oldest first.
    pub volumes: Vec<String>,
}

/// One row of [`InstanceExtras::addresses`].
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PortAddress {
    pub network_id: String,
    /// `None` when the network is gone.
    pub network_name: Option<String>,
    pub mac_address: String,
    pub ip_address: Option<String>,
}

/// Byte order for text keys: PostgreSQL's default collation may follow the locale, SQLite's
/// BINARY already compares bytes.
pub(crate) fn text_order(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " COLLATE \"C\"",
        Backend::Sqlite => "",
    }
}

/// One address of an instance's port, as `addresses` shows it: rows in port order (created_at,
/// id), then address order.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceAddress {
    pub device_id: String,
    pub network_id: String,
    /// `None` when the network is gone.
    pub network_name: Option<String>,
    pub mac_address: String,
    /// `None` for a port without addresses.
    pub ip_address: Option<String>,
}

/// The WHERE conditions of a listing.
fn push_filter(sql: &mut Sql, f: &InstanceFilter, m: &InstanceMatch) {
    sql.push("1 = 1");
    if let Some(p) = &f.project_id {
        sql.push(" AND project_id = ").text(p.as_str());
    }
    if let Some(h) = &f.host_id {
        sql.push(" AND host_id = ").text(h.as_str());
    }
    if let Some(t) = &f.changes_since {
        sql.push(" AND updated_at >= ").text(t.as_str());
    }
    if !(f.include_deleted || f.changes_since.is_some()) {
        sql.push(" AND deleted = 0");
    }
    if let Some(v) = &m.image_id {
        sql.push(" AND image_id = ").text(v.as_str());
    }
    if let Some(v) = &m.flavor_id {
        sql.push(" AND flavor_id = ").text(v.as_str());
    }
    if let Some(v) = &m.reservation_id {
        sql.push(" AND reservation_id = ").text(v.as_str());
    }
}

/// The filters, the position after the marker (`after`: its key and id), the order and the
/// limit of a page (what follows `WHERE`).
fn push_page(
    sql: &mut Sql,
    backend: Backend,
    f: &InstanceFilter,
    m: &InstanceMatch,
    page: &InstancePage<'_>,
    after: Option<(String, &str)>,
) {
    let collate = text_order(backend);
    let key = format!("{}{collate}", page.sort.column());
    let id = format!("id{collate}");
    push_filter(sql, f, m);
    if let Some((k, marker)) = after {
        let op = if page.desc { "<" } else { ">" };
        sql.push(&format!(" AND ({key} {op} ")).text(k.as_str());
        sql.push(&format!(" OR ({key} = ")).text(k.as_str());
        sql.push(&format!(" AND {id} {op} ")).text(marker).push("))");
    }
    sql.push(" ").push(&page_order(backend, page));
    if let Some(n) = page.limit {
        sql.push(" LIMIT ").int(n);
    }
}

/// `ORDER BY` the page's key, then the id, in the page's direction.
fn page_order(backend: Backend, page: &InstancePage<'_>) -> String {
    let collate = text_order(backend);
    let dir = if page.desc { "DESC" } else { "ASC" };
    format!("ORDER BY {}{collate} {dir}, id{collate} {dir}", page.sort.column())
}

pub(crate) const INSTANCE_COLS: &str = "id, name, hostname, description, project_id, user_id, flavor_id, flavor, image_id, \
    key_name, key_data, user_data, metadata, tags, availability_zone, config_drive, reservation_id, launch_index, \
    host_id, alternates, tried_hosts, claimed, requested_networks, owned_ports, vm_state, task_state, power_state, fault, locked, build_deadline, \
    created_at, updated_at, launched_at, terminated_at, deleted, access_ip_v4, access_ip_v6";

impl Store {
    /// Stores a new instance, its first timeline entry and (when given) the action that
    /// created it, in one transaction.
    pub async fn create_instance(&self, i: &Instance, action: Option<&InstanceAction>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO instances ({INSTANCE_COLS}, vcpus, memory_mb) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $39)"
        ))
        .bind(&i.id)
        .bind(&i.name)
        .bind(&i.hostname)
        .bind(i.description.as_deref())
        .bind(&i.project_id)
        .bind(&i.user_id)
        .bind(&i.flavor_id)
        .bind(&i.flavor)
        .bind(&i.image_id)
        .bind(i.key_name.as_deref())
        .bind(i.key_data.as_deref())
        .bind(i.user_data.as_deref())
        .bind(&i.metadata)
        .bind(&i.tags)
        .bind(i.availability_zone.as_deref())
        .bind(&i.config_drive)
        .bind(&i.reservation_id)
        .bind(i.launch_index)
        .bind(i.host_id.as_deref())
        .bind(&i.alternates)
        .bind(&i.tried_hosts)
        .bind(i.claimed)
        .bind(&i.requested_networks)
        .bind(&i.owned_ports)
        .bind(&i.vm_state)
        .bind(i.task_state.as_deref())
        .bind(i.power_state)
        .bind(i.fault.as_deref())
        .bind(i.locked)
        .bind(i.build_deadline.as_deref())
        .bind(&i.created_at)
        .bind(&i.updated_at)
        .bind(i.launched_at.as_deref())
        .bind(i.terminated_at.as_deref())
        .bind(i.deleted)
        .bind(i.access_ip_v4.as_deref())
        .bind(i.access_ip_v6.as_deref())
        .bind(flavor_number(&i.flavor, "vcpus"))
        .bind(flavor_number(&i.flavor, "ram"))
        .execute(&mut *tx)
        .await?;
        if let Some(a) = action {
            start_action_in(&mut tx, a).await?;
        }
        tx.commit().await?;
        self.instances_changed();
        Ok(())
    }

    /// An instance, deleted ones included (callers decide what a deleted one means).
    /// The one live instance placed on host `host_id` with a port on `network_id` holding the
    /// fixed address `address` (the metadata service's lookup, as Neutron's proxy identifies
    /// a guest by its network and source address). `None` when there is none, or more than
    /// one (which would be a corrupt allocation: answering either would be a guess).
    pub async fn instance_by_address(
        &self,
        network_id: &str,
        address: &str,
        host_id: &str,
    ) -> StoreResult<Option<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT i.id FROM ip_allocations a \
             JOIN ports p ON p.id = a.port_id \
             JOIN instances i ON i.id = p.device_id \
             WHERE a.network_id = $1 AND a.ip_address = $2 AND i.host_id = $3 AND i.deleted = 0",
        )
        .bind(network_id)
        .bind(address)
        .bind(host_id)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        Ok(if ids.len() == 1 { ids.into_iter().next() } else { None })
    }

    pub async fn get_instance(&self, id: &str) -> StoreResult<Instance> {
        sqlx::query_as(&format!("SELECT {INSTANCE_COLS} FROM instances WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Instance {id} could not be found.")))
    }

    /// Newest first (Nova's default sort: created_at desc, then id).
    pub async fn list_instances(&self, f: &InstanceFilter) -> StoreResult<Vec<Instance>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE ($1 IS NULL OR project_id = $1) AND ($2 IS NULL OR host_id = $2) \
             AND ($3 IS NULL OR updated_at >= $3) AND (deleted = 0 OR $4 = 1) ORDER BY created_at DESC, id DESC"
        ))
        .bind(f.project_id.as_deref())
        .bind(f.host_id.as_deref())
        .bind(f.changes_since.as_deref())
        .bind(i64::from(f.include_deleted || f.changes_since.is_some()))
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// One page of instances, deleted ones included, in `(updated_at, id)` order after the
    /// position `after` (start a pass with `(since, "")`): how the event stream reads a backlog
    /// of any length with bounded memory.
    pub async fn instances_changed_page(
        &self,
        project_id: Option<&str>,
        after: (&str, &str),
        limit: i64,
    ) -> StoreResult<Vec<Instance>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE ($1 IS NULL OR project_id = $1) \
             AND (updated_at > $2 OR (updated_at = $2 AND id > $3)) ORDER BY updated_at, id LIMIT $4"
        ))
        .bind(project_id)
        .bind(after.0)
        .bind(after.1)
        .bind(limit)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// A sorted page of the listing, filtered, ordered, started after the marker and limited in
    /// SQL: one statement, two with a marker (its sort key is read first; a marker outside the
    /// filtered listing is `NotFound`). Ties on the key are ordered by id, in the same direction.
    pub async fn list_instances_page(
        &self,
        f: &InstanceFilter,
        m: &InstanceMatch,
        page: &InstancePage<'_>,
    ) -> StoreResult<Vec<Instance>> {
        let after = self.marker_key(f, m, page).await?;
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {INSTANCE_COLS} FROM instances WHERE "));
        push_page(&mut sql, self.backend, f, m, page, after);
        Ok(sql.query_as().fetch_all(&mut *self.conn().await?).await?)
    }

    /// The marker's sort key (`None` without a marker): one statement; `NotFound` when the
    /// marker is not in the filtered listing.
    async fn marker_key<'p>(
        &self,
        f: &InstanceFilter,
        m: &InstanceMatch,
        page: &InstancePage<'p>,
    ) -> StoreResult<Option<(String, &'p str)>> {
        let Some(marker) = page.marker else { return Ok(None) };
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {} FROM instances WHERE ", page.sort.column()));
        push_filter(&mut sql, f, m);
        sql.push(" AND id = ").text(marker);
        let row: Option<(String,)> = sql.query_as().fetch_optional(&mut *self.conn().await?).await?;
        let (k,) = row.ok_or_else(|| StoreError::NotFound(format!("marker [{marker}] not found")))?;
        Ok(Some((k, marker)))
    }

    /// [`Store::list_instances_page`] with each instance's [`InstanceExtras`] (what
    /// `/servers/detail` shows). On SQLite the page and its extras are one statement whose
    /// result SQLite itself encodes as one JSON array: sqlx hands every row from SQLite's worker
    /// thread to the async side on its own, and with the extras' rows a page of a thousand
    /// servers took several thousand such handoffs. On PostgreSQL, the page and one read per
    /// kind of extra.
    pub async fn list_instances_page_with_extras(
        &self,
        f: &InstanceFilter,
        m: &InstanceMatch,
        page: &InstancePage<'_>,
    ) -> StoreResult<Vec<(Instance, InstanceExtras)>> {
        if self.backend != Backend::Sqlite {
            let rows = self.list_instances_page(f, m, page).await?;
            let ids: Vec<&str> = rows.iter().map(|i| i.id.as_str()).collect();
            let mut extras = self.instance_extras(&ids).await?;
            return Ok(rows
                .into_iter()
                .map(|i| {
                    let x = extras.remove(&i.id).unwrap_or_default();
                    (i, x)
                })
                .collect());
        }
        let after = self.marker_key(f, m, page).await?;
        let order = page_order(self.backend, page);
        // `json()` keeps each subquery's result JSON (a subquery's value loses SQLite's JSON
        // subtype, and would be embedded as a string).
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT json_group_array(json_array(json_array({INSTANCE_COLS}), \
             json((SELECT json_group_array(json_array(p.network_id, n.name, p.mac_address, a.ip_address) \
                   ORDER BY p.created_at, p.id, a.ip_key, a.subnet_id) \
                   FROM ports p LEFT JOIN networks n ON n.id = p.network_id \
                   LEFT JOIN ip_allocations a ON a.port_id = p.id WHERE p.device_id = t.id)), \
             json((SELECT json_group_array(DISTINCT g.name ORDER BY g.name) FROM ports p \
                   JOIN port_security_groups b ON b.port_id = p.id \
                   JOIN security_groups g ON g.id = b.security_group_id WHERE p.device_id = t.id)), \
             json((SELECT json_group_array(v.volume_id ORDER BY v.created_at, v.id) FROM volume_attachments v \
                   WHERE v.instance_id = t.id AND v.by_compute <> 0))) \
             {order}) FROM ("
        ));
        sql.push(&format!("SELECT {INSTANCE_COLS} FROM instances WHERE "));
        push_page(&mut sql, self.backend, f, m, page, after);
        sql.push(") AS t");
        let (json,): (Option<String>,) = sql.query_as().fetch_one(&mut *self.conn().await?).await?;
        type Row = (Instance, Vec<PortAddress>, Vec<String>, Vec<String>);
        let rows: Vec<Row> = serde_json::from_str(json.as_deref().unwrap_or("[]"))?;
        Ok(rows
            .into_iter()
            .map(|(i, addresses, security_groups, volumes)| (i, InstanceExtras { addresses, security_groups, volumes }))
            .collect())
    }

    /// The [`InstanceExtras`] of these instances (those that have any), in three reads.
    pub async fn instance_extras(
        &self,
        ids: &[&str],
    ) -> StoreResult<std::collections::BTreeMap<String, InstanceExtras>> {
        let mut out: std::collections::BTreeMap<String, InstanceExtras> = Default::default();
        for a in self.instance_addresses(ids).await? {
            out.entry(a.device_id).or_default().addresses.push(PortAddress {
                network_id: a.network_id,
                network_name: a.network_name,
                mac_address: a.mac_address,
                ip_address: a.ip_address,
            });
        }
        let groups = self.group_names_by_device(ids).await.map_err(|e| match e {
            super::network::NetError::Store(e) => e,
            other => StoreError::Other(other.into()),
        })?;
        for (id, names) in groups {
            out.entry(id).or_default().security_groups = names;
        }
        for (id, attachments) in self.attachments_of_instances(ids).await? {
            out.entry(id).or_default().volumes =
                attachments.into_iter().filter(|a| a.by_compute != 0).map(|a| a.volume_id).collect();
        }
        Ok(out)
    }

    /// The port addresses of these instances, in one statement (ports by creation, then each
    /// port's addresses in order; a port without addresses as one row without an address).
    pub async fn instance_addresses(&self, ids: &[&str]) -> StoreResult<Vec<InstanceAddress>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::default();
        sql.push(
            "SELECT p.device_id, p.network_id, n.name AS network_name, p.mac_address, a.ip_address \
             FROM ports p LEFT JOIN networks n ON n.id = p.network_id LEFT JOIN ip_allocations a ON a.port_id = p.id \
             WHERE p.device_id IN (",
        )
        .texts(ids.iter().copied())
        .push(") ORDER BY p.created_at, p.id, a.ip_key, a.subnet_id");
        Ok(sql.query_as().fetch_all(&mut *self.conn().await?).await?)
    }

    /// Each instance of the listing `f` with the addresses of its ports (for Nova's `ip`/`ip6`
    /// filters), in one statement.
    pub async fn listed_instance_ips(
        &self,
        f: &InstanceFilter,
        m: &InstanceMatch,
    ) -> StoreResult<Vec<(String, String)>> {
        let mut sql = Sql::default();
        sql.push(
            "SELECT p.device_id, a.ip_address FROM ports p JOIN ip_allocations a ON a.port_id = p.id \
             WHERE p.device_id IN (SELECT id FROM instances WHERE ",
        );
        push_filter(&mut sql, f, m);
        sql.push(")");
        Ok(sql.query_as().fetch_all(&mut *self.conn().await?).await?)
    }

    /// Live instances that are building or have a task running (what the conductor watches).
    pub async fn unfinished_instances(&self) -> StoreResult<Vec<Instance>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE deleted = 0 AND (vm_state = 'building' OR task_state IS NOT NULL) \
             ORDER BY created_at"
        ))
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// Changes the state if the task state is as expected; records the transition. Returns
    /// the updated instance, or `None` when the expectation did not hold (someone else won).
    pub async fn transition(&self, id: &str, expect: Expect<'_>, to: NewState<'_>) -> StoreResult<Option<Instance>> {
        let mut tx = self.begin().await?;
        let moved = transition_in(&mut tx, id, expect, to).await?;
        if moved.is_some() {
            tx.commit().await?;
            self.instances_changed();
        }
        Ok(moved)
    }

    /// A transition with its fault, in one transaction (a reader never sees the new state
    /// without the fault that explains it); `None` when the expectation did not hold.
    pub async fn transition_with_fault(
        &self,
        id: &str,
        expect: Expect<'_>,
        to: NewState<'_>,
        fault: &str,
    ) -> StoreResult<Option<Instance>> {
        let mut tx = self.begin().await?;
        let Some(moved) = transition_in(&mut tx, id, expect, to).await? else { return Ok(None) };
        sqlx::query("UPDATE instances SET fault = $2 WHERE id = $1").bind(id).bind(fault).execute(&mut *tx).await?;
        tx.commit().await?;
        self.instances_changed();
        Ok(Some(moved))
    }

    /// A build's progress reported by its host (`block_device_mapping`, `spawning`), recorded
    /// with its transition; `false` when the instance is no longer building on a host (deleted,
    /// finished, or being deleted meanwhile). One guarded UPDATE (its trigger records the
    /// transition): no read first, no transaction.
    pub async fn build_progress(&self, id: &str, task_state: &str) -> StoreResult<bool> {
        let moved = sqlx::query(&format!(
            "UPDATE instances SET task_state = $2, updated_at = $3 WHERE id = $1 AND {BUILDING_ON_HOST}"
        ))
        .bind(id)
        .bind(task_state)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?
        .rows_affected()
            == 1;
        if moved {
            self.instances_changed();
        }
        Ok(moved)
    }

    /// A finished build, in one transaction: the work item done, building → active with the
    /// power state, launched_at, and the `create` action and its events finished. `false` when
    /// the work item was already finished or the instance no longer building (a repeat, a
    /// delete meanwhile): then nothing changes. `config_drive`: the host attached one (recorded
    /// as Nova's `"True"`; a requested one is already recorded).
    pub async fn complete_build(
        &self,
        work_id: &str,
        id: &str,
        power_state: i64,
        config_drive: bool,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if !super::hosts::finish_work_in(&mut tx, work_id, "done", None).await? {
            return Ok(false);
        }
        // Guarded in the UPDATE itself: still building on a host (not deleted or failed meanwhile;
        // then the work still counts as done and nothing else changes).
        let ts = now();
        let moved = sqlx::query(&format!(
            "UPDATE instances SET vm_state = 'active', task_state = NULL, power_state = $2, updated_at = $3, \
             launched_at = COALESCE(launched_at, $3), build_deadline = NULL, \
             config_drive = CASE WHEN $4 = 1 THEN 'True' ELSE config_drive END WHERE id = $1 AND {BUILDING_ON_HOST}"
        ))
        .bind(id)
        .bind(power_state)
        .bind(&ts)
        .bind(i64::from(config_drive))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if moved {
            finish_action_in(&mut tx, id, "create", "Success", None, None).await?;
        }
        tx.commit().await?;
        self.instances_changed();
        Ok(moved)
    }

    /// Hands a build to a host, in one transaction: its deadline, the work item, and the
    /// `compute__do_build_and_run_instance` event under the `create` action. `None` when the
    /// build is no longer on that host or already has its work there: two conductor paths can
    /// resume the same build (the one that placed it and the tick that finds it idle after the
    /// process was paused), and only the first may queue it. The instance row is written
    /// first, so a second transaction waits for the first and then sees its work.
    pub async fn queue_build(
        &self,
        id: &str,
        host_id: &str,
        host_name: &str,
        action: &str,
        deadline: &str,
    ) -> StoreResult<Option<String>> {
        let mut tx = self.begin().await?;
        let placed = sqlx::query(
            "UPDATE instances SET build_deadline = $2 \
             WHERE id = $1 AND host_id = $3 AND vm_state = 'building' AND deleted = 0",
        )
        .bind(id)
        .bind(deadline)
        .bind(host_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let queued: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM work WHERE instance_id = $1 AND host_id = $2 \
             AND state IN ('pending', 'delivered', 'done') AND action LIKE '{\"type\":\"build\"%'",
        )
        .bind(id)
        .bind(host_id)
        .fetch_one(&mut *tx)
        .await?;
        if !placed || queued > 0 {
            return Ok(None); // dropping `tx` rolls it back
        }
        let work_id = super::hosts::enqueue_work_in(&mut tx, id, host_id, action).await?;
        sqlx::query(
            "INSERT INTO instance_action_events (id, action_id, event, host, start_time) \
             SELECT $1, id, 'compute__do_build_and_run_instance', $2, $3 FROM instance_actions \
             WHERE instance_id = $4 AND action = 'create' ORDER BY start_time DESC LIMIT 1",
        )
        .bind(new_uuid())
        .bind(host_name)
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(work_id))
    }

    /// Sets bookkeeping columns that are not part of the state machine.
    pub async fn set_instance_placement(
        &self,
        id: &str,
        host_id: Option<&str>,
        alternates: &str,
        tried_hosts: &str,
        claimed: bool,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE instances SET host_id = $2, alternates = $3, tried_hosts = $4, claimed = $5, updated_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(host_id)
        .bind(alternates)
        .bind(tried_hosts)
        .bind(i64::from(claimed))
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        self.instances_changed();
        // Placement decides which host filters the instance's ports.
        self.filters_changed();
        found(done.rows_affected(), || format!("Instance {id} could not be found."))
    }

    pub async fn set_instance_fault(&self, id: &str, fault: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET fault = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(fault)
            .bind(now())
            .execute(&mut *self.conn().await?)
            .await?;
        self.instances_changed();
        Ok(())
    }

    pub async fn set_instance_launched(&self, id: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE instances SET launched_at = COALESCE(launched_at, $2), build_deadline = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(())
    }

    pub async fn set_instance_deadline(&self, id: &str, deadline: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE instances SET build_deadline = $2 WHERE id = $1")
            .bind(id)
            .bind(deadline)
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    /// Writes what a user may change on a live instance: name, hostname, description,
    /// metadata and the access addresses.
    pub async fn update_instance_fields(&self, i: &Instance) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE instances SET name = $2, hostname = $3, description = $4, metadata = $5, updated_at = $6, \
             access_ip_v4 = $7, access_ip_v6 = $8 WHERE id = $1 AND deleted = 0",
        )
        .bind(&i.id)
        .bind(&i.name)
        .bind(&i.hostname)
        .bind(i.description.as_deref())
        .bind(&i.metadata)
        .bind(now())
        .bind(i.access_ip_v4.as_deref())
        .bind(i.access_ip_v6.as_deref())
        .execute(&mut *self.conn().await?)
        .await?;
        self.instances_changed();
        found(done.rows_affected(), || format!("Instance {} could not be found.", i.id))
    }

    /// Claims the host's resources for a building instance and records the placement in one
    /// transaction, moving it from scheduling to networking. `false` when the host no longer
    /// fits or the instance is no longer waiting to be scheduled (deleted meanwhile).
    pub async fn place_instance(
        &self,
        id: &str,
        host_id: &str,
        claim: Claim,
        ratios: Ratios,
        alternates: &str,
        tried_hosts: &str,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // The instance's server group may no longer allow this host (another member landed
        // meanwhile): checked in the placing transaction, as Nova re-checks on the compute.
        if !super::groups::group_admits(&mut tx, self.backend, id, host_id).await? {
            return Ok(false);
        }
        if !claim_on(&mut tx, host_id, claim, ratios).await? {
            return Ok(false);
        }
        let ts = now();
        let done = sqlx::query(
            "UPDATE instances SET host_id = $2, alternates = $3, tried_hosts = $4, claimed = 1, \
             task_state = 'networking', updated_at = $5 \
             WHERE id = $1 AND deleted = 0 AND vm_state = 'building' AND task_state = 'scheduling'",
        )
        .bind(id)
        .bind(host_id)
        .bind(alternates)
        .bind(tried_hosts)
        .bind(&ts)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false); // dropping the transaction rolls the claim back
        }
        tx.commit().await?;
        self.instances_changed();
        // Placement decides which host filters the instance's ports.
        self.filters_changed();
        Ok(true)
    }

    /// Gives back the instance's claim if it holds one (idempotent: the `claimed` flag and the
    /// host counters change in one transaction).
    pub async fn release_instance_claim(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        release_claim_in(&mut tx, id).await?;
        tx.commit().await?;
        self.instances_changed();
        // Placement decides which host filters the instance's ports.
        self.filters_changed();
        Ok(())
    }

    /// Back to building/scheduling for another host: releases the claim and clears the host.
    pub async fn requeue_instance(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        release_claim_in(&mut tx, id).await?;
        let ts = now();
        let done = sqlx::query(
            "UPDATE instances SET host_id = NULL, task_state = 'scheduling', power_state = 0, updated_at = $2 \
             WHERE id = $1 AND deleted = 0 AND vm_state = 'building'",
        )
        .bind(id)
        .bind(&ts)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        self.instances_changed();
        // Placement decides which host filters the instance's ports.
        self.filters_changed();
        Ok(true)
    }

    /// Marks an instance deleted (soft: the row stays for `changes-since` and actions) and
    /// releases its claim, in one transaction.
    pub async fn mark_instance_deleted(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        release_claim_in(&mut tx, id).await?;
        let ts = now();
        sqlx::query(
            "UPDATE instances SET deleted = 1, vm_state = 'deleted', task_state = NULL, power_state = 0, \
             terminated_at = $2, updated_at = $2 WHERE id = $1 AND deleted = 0",
        )
        .bind(id)
        .bind(&ts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.instances_changed();
        // Placement decides which host filters the instance's ports.
        self.filters_changed();
        Ok(())
    }

    pub async fn transitions(&self, id: &str) -> StoreResult<Vec<Transition>> {
        Ok(sqlx::query_as(
            "SELECT seq, instance_id, vm_state, task_state, power_state, at FROM instance_transitions \
             WHERE instance_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    /// An instance's transitions after `after_seq`, or, when none is known yet, those recorded
    /// at or after `since_at`: only what a reader has not seen, not the whole timeline.
    pub async fn transitions_after(
        &self,
        id: &str,
        after_seq: Option<i64>,
        since_at: &str,
    ) -> StoreResult<Vec<Transition>> {
        let q = match after_seq {
            Some(seq) => sqlx::query_as(
                "SELECT seq, instance_id, vm_state, task_state, power_state, at FROM instance_transitions \
                 WHERE instance_id = $1 AND seq > $2 ORDER BY seq",
            )
            .bind(id)
            .bind(seq),
            None => sqlx::query_as(
                "SELECT seq, instance_id, vm_state, task_state, power_state, at FROM instance_transitions \
                 WHERE instance_id = $1 AND at >= $2 ORDER BY seq",
            )
            .bind(id)
            .bind(since_at),
        };
        Ok(q.fetch_all(&mut *self.conn().await?).await?)
    }

    /// As [`Store::project_usage`], for one user's instances in the project.
    pub async fn user_usage(&self, project_id: &str, user_id: &str) -> StoreResult<(i64, i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(vcpus), 0) AS BIGINT), CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) \
             FROM instances WHERE project_id = $1 AND user_id = $2 AND deleted = 0",
        )
        .bind(project_id)
        .bind(user_id)
        .fetch_one(&mut *self.conn().await?)
        .await?)
    }

    /// Live instances of a project: (count, vCPUs, MB RAM) from their flavor snapshots.
    pub async fn project_usage(&self, project_id: &str) -> StoreResult<(i64, i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(vcpus), 0) AS BIGINT), CAST(COALESCE(SUM(memory_mb), 0) AS BIGINT) \
             FROM instances WHERE project_id = $1 AND deleted = 0",
        )
        .bind(project_id)
        .fetch_one(&mut *self.conn().await?)
        .await?)
    }

    // ---- instance actions ----

    pub async fn start_action(&self, a: &InstanceAction) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        start_action_in(&mut tx, a).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest action of that name on an instance (where progress events attach).
    pub async fn latest_action(&self, instance_id: &str, action: &str) -> StoreResult<Option<InstanceAction>> {
        Ok(sqlx::query_as(
            "SELECT id, instance_id, request_id, action, project_id, user_id, message, start_time, finish_time, updated_at \
             FROM instance_actions WHERE instance_id = $1 AND action = $2 ORDER BY start_time DESC LIMIT 1",
        )
        .bind(instance_id)
        .bind(action)
        .fetch_optional(&mut *self.conn().await?)
        .await?)
    }

    pub async fn list_actions(&self, instance_id: &str) -> StoreResult<Vec<InstanceAction>> {
        Ok(sqlx::query_as(
            "SELECT id, instance_id, request_id, action, project_id, user_id, message, start_time, finish_time, updated_at \
             FROM instance_actions WHERE instance_id = $1 ORDER BY start_time DESC",
        )
        .bind(instance_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn get_action(&self, instance_id: &str, request_id: &str) -> StoreResult<InstanceAction> {
        sqlx::query_as(
            "SELECT id, instance_id, request_id, action, project_id, user_id, message, start_time, finish_time, updated_at \
             FROM instance_actions WHERE instance_id = $1 AND request_id = $2",
        )
        .bind(instance_id)
        .bind(request_id)
        .fetch_optional(&mut *self.conn().await?)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("Action for request_id {request_id} on instance {instance_id} not found")))
    }

    /// Finishes the newest action `name` of an instance and its open events with `result`
    /// (`Success` / `Error`), in one transaction.
    pub async fn finish_named_action(
        &self,
        instance_id: &str,
        name: &str,
        result: &str,
        message: Option<&str>,
        traceback: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        finish_action_in(&mut tx, instance_id, name, result, message, traceback).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts an event under an action (e.g. `compute__do_build_and_run_instance`).
    pub async fn start_event(&self, action_id: &str, event: &str, host: Option<&str>) -> StoreResult<String> {
        let id = new_uuid();
        sqlx::query(
            "INSERT INTO instance_action_events (id, action_id, event, host, start_time) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(action_id)
        .bind(event)
        .bind(host)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(id)
    }

    pub async fn list_events(&self, action_id: &str) -> StoreResult<Vec<ActionEvent>> {
        Ok(sqlx::query_as(
            "SELECT id, action_id, event, host, result, traceback, start_time, finish_time FROM instance_action_events \
             WHERE action_id = $1 ORDER BY start_time",
        )
        .bind(action_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }
}

/// [`Store::transition`] inside the caller's transaction.
pub(crate) async fn transition_in(
    tx: &mut super::Tx,
    id: &str,
    expect: Expect<'_>,
    to: NewState<'_>,
) -> StoreResult<Option<Instance>> {
    let current: Option<Instance> =
        sqlx::query_as(&format!("SELECT {INSTANCE_COLS} FROM instances WHERE id = $1 AND deleted = 0"))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some(cur) = current else {
        return Err(StoreError::NotFound(format!("Instance {id} could not be found.")));
    };
    let holds = match expect {
        Expect::Any => true,
        Expect::Task(t) => cur.task_state.as_deref() == t,
        Expect::OneOf(list) => cur.task_state.as_deref().is_some_and(|t| list.contains(&t)),
    };
    if !holds {
        return Ok(None);
    }
    let ts = now();
    let power = to.power_state.unwrap_or(cur.power_state);
    // The guard repeats the check in SQL so a concurrent writer on another connection
    // (PostgreSQL) cannot slip in between the read and the write.
    let done = sqlx::query(
        "UPDATE instances SET vm_state = $2, task_state = $3, power_state = $4, updated_at = $5 \
         WHERE id = $1 AND deleted = 0 AND vm_state = $6 AND COALESCE(task_state, '') = $7",
    )
    .bind(id)
    .bind(to.vm_state)
    .bind(to.task_state)
    .bind(power)
    .bind(&ts)
    .bind(&cur.vm_state)
    .bind(cur.task_state.as_deref().unwrap_or(""))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    Ok(Some(Instance {
        vm_state: to.vm_state.to_string(),
        task_state: to.task_state.map(str::to_string),
        power_state: power,
        updated_at: ts,
        ..cur
    }))
}

/// Finishes the newest action `name` of an instance and its open events with `result`.
pub(crate) async fn finish_action_in(
    tx: &mut super::Tx,
    instance_id: &str,
    name: &str,
    result: &str,
    message: Option<&str>,
    traceback: Option<&str>,
) -> StoreResult<()> {
    let ts = now();
    // The latest action of that name, found inside each statement (no read first).
    const LATEST: &str =
        "(SELECT id FROM instance_actions WHERE instance_id = $1 AND action = $2 ORDER BY start_time DESC LIMIT 1)";
    sqlx::query(&format!(
        "UPDATE instance_action_events SET finish_time = $3, result = $4, traceback = $5 \
         WHERE action_id = {LATEST} AND finish_time IS NULL"
    ))
    .bind(instance_id)
    .bind(name)
    .bind(&ts)
    .bind(result)
    .bind(traceback)
    .execute(&mut **tx)
    .await?;
    sqlx::query(&format!(
        "UPDATE instance_actions SET finish_time = COALESCE(finish_time, $3), message = COALESCE($4, message), \
         updated_at = $3 WHERE id = {LATEST}"
    ))
    .bind(instance_id)
    .bind(name)
    .bind(&ts)
    .bind(message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn start_action_in(tx: &mut super::Tx, a: &InstanceAction) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO instance_actions (id, instance_id, request_id, action, project_id, user_id, message, \
         start_time, finish_time, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&a.id)
    .bind(&a.instance_id)
    .bind(&a.request_id)
    .bind(&a.action)
    .bind(&a.project_id)
    .bind(&a.user_id)
    .bind(a.message.as_deref())
    .bind(&a.start_time)
    .bind(a.finish_time.as_deref())
    .bind(&a.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Releases the claim inside a transaction, if the instance holds one.
pub(crate) async fn release_claim_in(tx: &mut super::Tx, id: &str) -> StoreResult<()> {
    let row: Option<(i64, Option<String>, String)> =
        sqlx::query_as("SELECT claimed, host_id, flavor FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((1, Some(host_id), flavor)) = row else {
        return Ok(());
    };
    let f: serde_json::Value = serde_json::from_str(&flavor)?;
    let claim = Claim {
        vcpus: f["vcpus"].as_i64().unwrap_or(0),
        memory_mb: f["ram"].as_i64().unwrap_or(0),
        disk_gb: f["disk"].as_i64().unwrap_or(0) + f["ephemeral"].as_i64().unwrap_or(0),
    };
    let done = sqlx::query("UPDATE instances SET claimed = 0 WHERE id = $1 AND claimed = 1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 1 {
        release_on(tx, &host_id, claim).await?;
    }
    Ok(())
}

fn flavor_number(flavor: &str, key: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(flavor).ok().and_then(|v| v[key].as_i64()).unwrap_or(0)
}
