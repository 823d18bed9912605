//! Neutron security groups: groups, rules, port bindings, each project's `default` group, and
//! the per-host port filters agents enforce.
//!
//! A port's groups live in `port_security_groups` (not in the port row), so "who is in this
//! group" — needed for remote-group rules and for "in use" — is one indexed read. Every
//! committed change that can alter any host's filters calls [`Store::filters_changed`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use sqlx::AnyConnection;

use super::network::{NetError, NetResult, check_quota};
use super::sql::Sql;
use super::{Store, flag, new_uuid, now};

/// Neutron's description of the groups it creates itself.
pub const DEFAULT_DESCRIPTION: &str = "Default security group";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecurityGroup {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub is_default: i64,
    pub stateful: i64,
    pub tags: String,
    pub revision_number: i64,
    pub created_at: String,
    pub updated_at: String,
    #[sqlx(skip)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Rule {
    pub id: String,
    pub security_group_id: String,
    pub project_id: String,
    pub direction: String,
    pub ethertype: String,
    pub protocol: Option<String>,
    pub port_range_min: Option<i64>,
    pub port_range_max: Option<i64>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: String,
    pub revision_number: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A rule to create (already validated and made canonical by the API layer).
#[derive(Debug, Clone, Default)]
pub struct NewRule {
    pub security_group_id: String,
    pub project_id: String,
    pub direction: String,
    pub ethertype: String,
    pub protocol: Option<String>,
    pub port_range_min: Option<i64>,
    pub port_range_max: Option<i64>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: String,
}

#[derive(Debug, Clone, Default)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub stateful: Option<bool>,
}

const GROUP_COLS: &str =
    "id, project_id, name, description, is_default, stateful, tags, revision_number, created_at, updated_at";
const RULE_COLS: &str = "id, security_group_id, project_id, direction, ethertype, protocol, port_range_min, \
     port_range_max, remote_ip_prefix, remote_group_id, description, revision_number, created_at, updated_at";

pub fn group_not_found(id: &str) -> NetError {
    NetError::not_found("SecurityGroupNotFound", format!("Security group {id} does not exist"))
}

pub fn rule_not_found(id: &str) -> NetError {
    NetError::not_found("SecurityGroupRuleNotFound", format!("Security group rule {id} does not exist"))
}

/// Neutron's IP protocol names and numbers (`IP_PROTOCOL_MAP`, `icmpv6` being the legacy
/// name of `ipv6-icmp`).
pub const PROTOCOLS: [(&str, u8); 24] = [
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("hopopt", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

/// The number of a stored protocol (a name of [`PROTOCOLS`] or a number).
pub fn protocol_number(p: &str) -> Option<u8> {
    PROTOCOLS.iter().find(|(n, _)| *n == p).map(|(_, n)| *n).or_else(|| p.parse().ok())
}

/// What makes two rules the same (Neutron's `_rule_to_key`): protocols compare by number,
/// and "anywhere" prefixes as no prefix.
fn rule_key(r: &NewRule) -> String {
    let prefix = match r.remote_ip_prefix.as_deref() {
        None | Some("0.0.0.0/0" | "::/0") => "+".to_string(),
        Some(p) => p.to_string(),
    };
    let opt = |v: Option<i64>| v.map_or("+".to_string(), |v| v.to_string());
    [
        r.direction.clone(),
        r.ethertype.clone(),
        opt(r.port_range_max),
        opt(r.port_range_min),
        r.protocol.as_deref().map_or("+".to_string(), |p| protocol_number(p).map_or(p.to_string(), |n| n.to_string())),
        r.remote_group_id.clone().unwrap_or_else(|| "+".into()),
        prefix,
        r.security_group_id.clone(),
    ]
    .join("_")
}

impl Rule {
    fn as_new(&self) -> NewRule {
        NewRule {
            security_group_id: self.security_group_id.clone(),
            project_id: self.project_id.clone(),
            direction: self.direction.clone(),
            ethertype: self.ethertype.clone(),
            protocol: self.protocol.clone(),
            port_range_min: self.port_range_min,
            port_range_max: self.port_range_max,
            remote_ip_prefix: self.remote_ip_prefix.clone(),
            remote_group_id: self.remote_group_id.clone(),
            description: self.description.clone(),
        }
    }
}

impl SecurityGroup {
    pub fn tag_list(&self) -> Vec<String> {
        serde_json::from_str(&self.tags).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Transaction-level helpers

async fn insert_rule(conn: &mut AnyConnection, r: &NewRule) -> NetResult<Rule> {
    let t = now();
    Ok(sqlx::query_as(&format!(
        "INSERT INTO security_group_rules ({RULE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $12) \
         RETURNING {RULE_COLS}"
    ))
    .bind(new_uuid())
    .bind(&r.security_group_id)
    .bind(&r.project_id)
    .bind(&r.direction)
    .bind(&r.ethertype)
    .bind(r.protocol.as_deref())
    .bind(r.port_range_min)
    .bind(r.port_range_max)
    .bind(r.remote_ip_prefix.as_deref())
    .bind(r.remote_group_id.as_deref())
    .bind(&r.description)
    .bind(&t)
    .fetch_one(&mut *conn)
    .await?)
}

async fn insert_group(
    conn: &mut AnyConnection,
    project_id: &str,
    name: &str,
    description: &str,
    stateful: bool,
    default: bool,
) -> NetResult<Option<SecurityGroup>> {
    let t = now();
    // ON CONFLICT: a concurrent request made the project's default group first.
    Ok(sqlx::query_as(&format!(
        "INSERT INTO security_groups ({GROUP_COLS}) VALUES ($1, $2, $3, $4, $5, $6, '[]', 0, $7, $7) \
         ON CONFLICT DO NOTHING RETURNING {GROUP_COLS}"
    ))
    .bind(new_uuid())
    .bind(project_id)
    .bind(name)
    .bind(description)
    .bind(flag(default))
    .bind(flag(stateful))
    .bind(&t)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The rules Neutron puts in a new group: egress anywhere, both families; the default group
/// also admits ingress from its own members.
fn template_rules(group: &SecurityGroup) -> Vec<NewRule> {
    let mut out = Vec::new();
    for ethertype in ["IPv4", "IPv6"] {
        let base = NewRule {
            security_group_id: group.id.clone(),
            project_id: group.project_id.clone(),
            ethertype: ethertype.into(),
            ..Default::default()
        };
        if group.is_default != 0 {
            out.push(NewRule { direction: "ingress".into(), remote_group_id: Some(group.id.clone()), ..base.clone() });
        }
        out.push(NewRule { direction: "egress".into(), ..base });
    }
    out
}

/// The project's default group id, created (with its rules) on first use.
pub(crate) async fn ensure_default(conn: &mut AnyConnection, project_id: &str) -> NetResult<(String, bool)> {
    let existing: Option<String> =
        sqlx::query_scalar("SELECT id FROM security_groups WHERE project_id = $1 AND is_default = 1")
            .bind(project_id)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some(id) = existing {
        return Ok((id, false));
    }
    let Some(g) = insert_group(conn, project_id, "default", DEFAULT_DESCRIPTION, true, true).await? else {
        let id: String = sqlx::query_scalar("SELECT id FROM security_groups WHERE project_id = $1 AND is_default = 1")
            .bind(project_id)
            .fetch_one(&mut *conn)
            .await?;
        return Ok((id, false));
    };
    for r in template_rules(&g) {
        insert_rule(conn, &r).await?;
    }
    Ok((g.id, true))
}

async fn rules_of(conn: &mut AnyConnection, group_ids: &[&str]) -> NetResult<BTreeMap<String, Vec<Rule>>> {
    let mut out: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    if group_ids.is_empty() {
        return Ok(out);
    }
    let mut sql = Sql::default();
    sql.push(&format!("SELECT {RULE_COLS} FROM security_group_rules WHERE security_group_id IN ("))
        .texts(group_ids.iter().copied())
        .push(") ORDER BY created_at, id");
    let rules: Vec<Rule> = sql.query_as().fetch_all(&mut *conn).await?;
    for r in rules {
        out.entry(r.security_group_id.clone()).or_default().push(r);
    }
    Ok(out)
}

async fn fetch_group(conn: &mut AnyConnection, id: &str) -> NetResult<SecurityGroup> {
    let mut g: SecurityGroup = sqlx::query_as(&format!("SELECT {GROUP_COLS} FROM security_groups WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| group_not_found(id))?;
    g.rules = rules_of(conn, &[id]).await?.remove(id).unwrap_or_default();
    Ok(g)
}

/// Replaces a port's groups. The caller checked that they exist and are usable by the port.
pub(crate) async fn set_port_groups(conn: &mut AnyConnection, port_id: &str, groups: &[String]) -> NetResult<()> {
    sqlx::query("DELETE FROM port_security_groups WHERE port_id = $1").bind(port_id).execute(&mut *conn).await?;
    for g in groups {
        sqlx::query(
            "INSERT INTO port_security_groups (port_id, security_group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(port_id)
        .bind(g)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The groups of each port, in a stable order.
pub(crate) async fn groups_of_ports(
    conn: &mut AnyConnection,
    port_ids: &[&str],
) -> NetResult<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if port_ids.is_empty() {
        return Ok(out);
    }
    let mut sql = Sql::default();
    sql.push("SELECT port_id, security_group_id FROM port_security_groups WHERE port_id IN (")
        .texts(port_ids.iter().copied())
        .push(") ORDER BY port_id, security_group_id");
    let rows: Vec<(String, String)> = sql.query_as().fetch_all(&mut *conn).await?;
    for (p, g) in rows {
        out.entry(p).or_default().push(g);
    }
    Ok(out)
}

/// Resolves requested groups for a port of `project_id`: each must exist and belong to that
/// project (admins, acting for another project, likewise name that project's groups).
pub(crate) async fn check_groups(conn: &mut AnyConnection, project_id: &str, ids: &[String]) -> NetResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::default();
    sql.push("SELECT id FROM security_groups WHERE project_id = ")
        .text(project_id)
        .push(" AND id IN (")
        .texts(ids.iter().map(String::as_str))
        .push(")");
    let found: Vec<(String,)> = sql.query_as().fetch_all(&mut *conn).await?;
    let found: Vec<String> = found.into_iter().map(|f| f.0).collect();
    let missing: Vec<&str> = ids.iter().filter(|i| !found.contains(i)).map(String::as_str).collect();
    if missing.is_empty() { Ok(()) } else { Err(group_not_found(&missing.join(", "))) }
}

// ---------------------------------------------------------------------------------------------
// The store API

/// Where the filter generation starts: the time in microseconds, so it differs after a restart
/// and agents fetch again.
pub(crate) fn initial_generation() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1)
}

impl Store {
    /// The current port-filter generation ([`Store::filters_changed`] moves it).
    pub fn filter_generation(&self) -> u64 {
        *self.filter_changes.borrow()
    }

    /// A receiver that sees every later [`Store::filters_changed`].
    pub fn watch_filters(&self) -> tokio::sync::watch::Receiver<u64> {
        self.filter_changes.subscribe()
    }

    /// Records a committed change that may change some host's port filters.
    pub(crate) fn filters_changed(&self) {
        self.filter_changes.send_modify(|g| *g = g.wrapping_add(1).max(initial_generation()));
    }

    /// The project's default group id, created on first use.
    pub async fn ensure_default_security_group(&self, project_id: &str) -> NetResult<String> {
        let mut tx = self.begin().await?;
        let (id, _) = ensure_default(&mut tx, project_id).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Creates a group with Neutron's template rules (the project's default group first).
    pub async fn create_security_group(
        &self,
        project_id: &str,
        name: &str,
        description: &str,
        stateful: bool,
    ) -> NetResult<SecurityGroup> {
        let mut tx = self.begin().await?;
        ensure_default(&mut tx, project_id).await?;
        check_quota(&mut tx, project_id, "security_group", 1).await?;
        let g = insert_group(&mut tx, project_id, name, description, stateful, false)
            .await?
            .ok_or_else(|| NetError::conflict("HTTPConflict", "Security group already exists."))?;
        let rules = template_rules(&g);
        check_quota(&mut tx, project_id, "security_group_rule", i64::try_from(rules.len()).unwrap_or(0)).await?;
        for r in &rules {
            insert_rule(&mut tx, r).await?;
        }
        let g = fetch_group(&mut tx, &g.id).await?;
        tx.commit().await?;
        Ok(g)
    }

    pub async fn get_security_group(&self, id: &str) -> NetResult<SecurityGroup> {
        fetch_group(&mut *self.conn().await?, id).await
    }

    /// Groups with their rules, oldest first: all, or one project's.
    pub async fn list_security_groups(&self, project_id: Option<&str>) -> NetResult<Vec<SecurityGroup>> {
        let mut conn = self.conn().await?;
        let mut groups: Vec<SecurityGroup> = sqlx::query_as(&format!(
            "SELECT {GROUP_COLS} FROM security_groups WHERE ($1 IS NULL OR project_id = $1) ORDER BY created_at, id"
        ))
        .bind(project_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut rules: Vec<Rule> = sqlx::query_as(&format!(
            "SELECT {RULE_COLS} FROM security_group_rules WHERE ($1 IS NULL OR security_group_id IN \
             (SELECT id FROM security_groups WHERE project_id = $1)) ORDER BY created_at, id"
        ))
        .bind(project_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_group: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
        for r in rules.drain(..) {
            by_group.entry(r.security_group_id.clone()).or_default().push(r);
        }
        for g in &mut groups {
            g.rules = by_group.remove(&g.id).unwrap_or_default();
        }
        Ok(groups)
    }

    /// Groups by id (for names shown by compute), in no particular order.
    pub async fn security_groups_by_ids(&self, ids: &[&str]) -> NetResult<Vec<SecurityGroup>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {GROUP_COLS} FROM security_groups WHERE id IN ("))
            .texts(ids.iter().copied())
            .push(")");
        Ok(sql.query_as().fetch_all(&mut *self.conn().await?).await?)
    }

    /// Updates name, description, and `stateful` (only while no port uses the group, as Neutron).
    pub async fn update_security_group(&self, id: &str, u: &GroupUpdate) -> NetResult<SecurityGroup> {
        let mut tx = self.begin().await?;
        let mut g = fetch_group(&mut tx, id).await?;
        if let Some(s) = u.stateful
            && flag(s) != g.stateful
        {
            if group_in_use(&mut tx, id).await? {
                return Err(in_use(id));
            }
            g.stateful = flag(s);
        }
        if u.name.is_some() && g.is_default != 0 {
            return Err(NetError::conflict(
                "SecurityGroupCannotUpdateDefault",
                "Updating default security group not allowed.",
            ));
        }
        if let Some(n) = &u.name {
            g.name = n.clone();
        }
        if let Some(d) = &u.description {
            g.description = d.clone();
        }
        sqlx::query(
            "UPDATE security_groups SET name = $2, description = $3, stateful = $4, updated_at = $5, \
             revision_number = revision_number + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(&g.name)
        .bind(&g.description)
        .bind(g.stateful)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let g = fetch_group(&mut tx, id).await?;
        tx.commit().await?;
        self.filters_changed();
        Ok(g)
    }

    /// Deletes a group and its rules (and rules of other groups naming it as their peer). A
    /// group a port uses is refused; so is the default group unless `admin`.
    pub async fn delete_security_group(&self, id: &str, admin: bool) -> NetResult<()> {
        let mut tx = self.begin().await?;
        if group_in_use(&mut tx, id).await? {
            return Err(in_use(id));
        }
        let g = fetch_group(&mut tx, id).await?;
        if g.is_default != 0 && !admin {
            return Err(NetError::conflict(
                "SecurityGroupCannotRemoveDefault",
                "Insufficient rights for removing default security group.",
            ));
        }
        sqlx::query("DELETE FROM security_group_rules WHERE security_group_id = $1 OR remote_group_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM security_groups WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        self.filters_changed();
        Ok(())
    }

    /// Creates rules (all or none): their groups and remote groups exist in the rule's
    /// project, none repeats another (409 `SecurityGroupRuleExists`), quotas hold.
    pub async fn create_security_group_rules(&self, rules: Vec<NewRule>) -> NetResult<Vec<Rule>> {
        let mut tx = self.begin().await?;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut per_project: BTreeMap<&str, i64> = BTreeMap::new();
        for r in &rules {
            if let Some(remote) = &r.remote_group_id {
                check_groups(&mut tx, &r.project_id, std::slice::from_ref(remote)).await?;
            }
            let g = fetch_group(&mut tx, &r.security_group_id).await?;
            if g.project_id != r.project_id {
                return Err(group_not_found(&r.security_group_id));
            }
            let key = rule_key(r);
            if !seen.insert(key.clone()) {
                return Err(NetError::conflict(
                    "DuplicateSecurityGroupRuleInPost",
                    "Duplicate Security Group Rule in POST.",
                ));
            }
            if let Some(existing) = g.rules.iter().find(|e| rule_key(&e.as_new()) == key) {
                return Err(NetError::conflict(
                    "SecurityGroupRuleExists",
                    format!("Security group rule already exists. Rule id is {}.", existing.id),
                ));
            }
            *per_project.entry(r.project_id.as_str()).or_default() += 1;
        }
        for (project, n) in per_project {
            check_quota(&mut tx, project, "security_group_rule", n).await?;
        }
        let mut out = Vec::with_capacity(rules.len());
        for r in &rules {
            out.push(insert_rule(&mut tx, r).await?);
        }
        for g in rules.iter().map(|r| r.security_group_id.as_str()).collect::<BTreeSet<_>>() {
            bump_group(&mut tx, g).await?;
        }
        tx.commit().await?;
        self.filters_changed();
        Ok(out)
    }

    pub async fn get_security_group_rule(&self, id: &str) -> NetResult<Rule> {
        sqlx::query_as(&format!("SELECT {RULE_COLS} FROM security_group_rules WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.conn().await?)
            .await?
            .ok_or_else(|| rule_not_found(id))
    }

    /// Rules, oldest first: all, or those of one project's groups.
    pub async fn list_security_group_rules(&self, project_id: Option<&str>) -> NetResult<Vec<Rule>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {RULE_COLS} FROM security_group_rules WHERE ($1 IS NULL OR security_group_id IN \
             (SELECT id FROM security_groups WHERE project_id = $1)) ORDER BY created_at, id"
        ))
        .bind(project_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn delete_security_group_rule(&self, id: &str) -> NetResult<()> {
        let mut tx = self.begin().await?;
        let group: Option<String> =
            sqlx::query_scalar("SELECT security_group_id FROM security_group_rules WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let group = group.ok_or_else(|| rule_not_found(id))?;
        sqlx::query("DELETE FROM security_group_rules WHERE id = $1").bind(id).execute(&mut *tx).await?;
        bump_group(&mut tx, &group).await?;
        tx.commit().await?;
        self.filters_changed();
        Ok(())
    }

    /// How many groups and rules a project owns.
    pub async fn security_group_usage(&self, project_id: &str) -> NetResult<(i64, i64)> {
        let mut conn = self.conn().await?;
        let groups: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM security_groups WHERE project_id = $1")
            .bind(project_id)
            .fetch_one(&mut *conn)
            .await?;
        let rules: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM security_group_rules WHERE project_id = $1")
            .bind(project_id)
            .fetch_one(&mut *conn)
            .await?;
        Ok((groups, rules))
    }

    /// The names of the groups of each device's ports (compute's `security_groups`), each once.
    pub async fn group_names_by_device(&self, device_ids: &[&str]) -> NetResult<BTreeMap<String, Vec<String>>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if device_ids.is_empty() {
            return Ok(out);
        }
        let mut sql = Sql::default();
        sql.push(
            "SELECT DISTINCT p.device_id, g.name FROM ports p JOIN port_security_groups b ON b.port_id = p.id \
             JOIN security_groups g ON g.id = b.security_group_id WHERE p.device_id IN (",
        )
        .texts(device_ids.iter().copied())
        .push(") ORDER BY p.device_id, g.name");
        let rows: Vec<(String, String)> = sql.query_as().fetch_all(&mut *self.conn().await?).await?;
        for (d, n) in rows {
            out.entry(d).or_default().push(n);
        }
        Ok(out)
    }

    /// Gives every port still marked in the legacy `ports.security_groups` column (see
    /// migration 0016) the groups it names — ids or names in the port's project, `default`
    /// being the project's default group, created if need be — and clears the mark. Names that
    /// match no group are left in the column and logged.
    pub async fn adopt_legacy_security_groups(&self) -> NetResult<usize> {
        let marked: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT id, project_id, security_groups FROM ports WHERE security_groups <> '[]' ORDER BY id",
        )
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut adopted = 0;
        for (port, project, legacy) in marked {
            let names: Vec<String> = serde_json::from_str(&legacy).unwrap_or_else(|_| vec![legacy.clone()]);
            let mut tx = self.begin().await?;
            let mut ids = Vec::new();
            let mut unknown = Vec::new();
            for n in &names {
                let found: Option<String> = if n == "default" {
                    Some(ensure_default(&mut tx, &project).await?.0)
                } else {
                    sqlx::query_scalar(
                        "SELECT id FROM security_groups WHERE project_id = $1 AND (id = $2 OR name = $2) ORDER BY created_at LIMIT 1",
                    )
                    .bind(&project)
                    .bind(n)
                    .fetch_optional(&mut *tx)
                    .await?
                };
                match found {
                    Some(id) => ids.push(id),
                    None => unknown.push(n.clone()),
                }
            }
            if !unknown.is_empty() {
                tracing::warn!(%port, ?unknown, "security groups of a port from before migration 0016 match no group; kept");
            }
            for id in &ids {
                sqlx::query(
                    "INSERT INTO port_security_groups (port_id, security_group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(&port)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE ports SET security_groups = $2 WHERE id = $1")
                .bind(&port)
                .bind(serde_json::to_string(&unknown)?)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            adopted += usize::from(!ids.is_empty());
        }
        if adopted > 0 {
            self.filters_changed();
        }
        Ok(adopted)
    }
}

async fn group_in_use(conn: &mut AnyConnection, id: &str) -> NetResult<bool> {
    let used: Option<String> =
        sqlx::query_scalar("SELECT port_id FROM port_security_groups WHERE security_group_id = $1 LIMIT 1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(used.is_some())
}

fn in_use(id: &str) -> NetError {
    NetError::conflict("SecurityGroupInUse", format!("Security Group {id} in use."))
}

/// A rule change is a change of its group (revision and time), as in Neutron.
async fn bump_group(conn: &mut AnyConnection, id: &str) -> NetResult<()> {
    sqlx::query("UPDATE security_groups SET revision_number = revision_number + 1, updated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Host filters

/// One port of an instance on a host, as the filter feed needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FilterPort {
    pub id: String,
    pub device_id: String,
    pub network_id: String,
    pub mac_address: String,
    pub port_security_enabled: i64,
    pub allowed_address_pairs: String,
}

/// Everything needed to build one host's filters, read in five statements whatever the
/// number of ports: the ports, their addresses, their groups, those groups' rules (with each
/// group's `stateful`), and the addresses of every member of every remote group named.
#[derive(Debug, Default)]
pub struct HostFilterData {
    pub ports: Vec<FilterPort>,
    pub fixed_ips: BTreeMap<String, Vec<String>>,
    pub groups: BTreeMap<String, Vec<String>>,
    /// Rules by group, with the group's `stateful`.
    pub rules: BTreeMap<String, (bool, Vec<Rule>)>,
    /// Remote group id → its members' addresses (fixed IPs and address-pair IPs/CIDRs).
    pub members: BTreeMap<String, BTreeSet<String>>,
}

impl Store {
    /// The data of host `host_id`'s filters (every port of every instance placed there, and of
    /// every instance an open resize, cold or live migration is bringing there: the
    /// destination starts the guest only once its ports are filtered, before the instance
    /// moves; a live migration's from the moment its destination prepares).
    pub async fn host_filter_data(&self, host_id: &str) -> NetResult<HostFilterData> {
        let on_host = "SELECT p.id FROM ports p JOIN instances i ON i.id = p.device_id WHERE i.deleted = 0 AND \
             (i.host_id = $1 OR i.id IN (SELECT instance_uuid FROM migrations WHERE dest_host_id = $1 \
             AND status IN ('pre-migrating', 'migrating', 'post-migrating', 'queued', 'preparing', 'running')))";
        let mut conn = self.conn().await?;
        let ports: Vec<FilterPort> = sqlx::query_as(&format!(
            "SELECT id, device_id, network_id, mac_address, port_security_enabled, allowed_address_pairs FROM ports \
             WHERE id IN ({on_host}) ORDER BY device_id, created_at, id"
        ))
        .bind(host_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut data = HostFilterData { ports, ..Default::default() };
        if data.ports.is_empty() {
            return Ok(data);
        }
        let ips: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT port_id, ip_address FROM ip_allocations WHERE port_id IN ({on_host}) ORDER BY port_id, ip_key"
        ))
        .bind(host_id)
        .fetch_all(&mut *conn)
        .await?;
        for (p, ip) in ips {
            data.fixed_ips.entry(p).or_default().push(ip);
        }
        let bindings: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT port_id, security_group_id FROM port_security_groups WHERE port_id IN ({on_host}) \
             ORDER BY port_id, security_group_id"
        ))
        .bind(host_id)
        .fetch_all(&mut *conn)
        .await?;
        for (p, g) in bindings {
            data.groups.entry(p).or_default().push(g);
        }
        let groups_on_host = format!("SELECT security_group_id FROM port_security_groups WHERE port_id IN ({on_host})");
        let rows: Vec<RuleWithState> = sqlx::query_as(&format!(
            "SELECT r.id, r.security_group_id, r.project_id, r.direction, r.ethertype, r.protocol, r.port_range_min, \
             r.port_range_max, r.remote_ip_prefix, r.remote_group_id, r.description, r.revision_number, r.created_at, \
             r.updated_at, g.stateful FROM security_group_rules r JOIN security_groups g ON g.id = r.security_group_id \
             WHERE r.security_group_id IN ({groups_on_host}) ORDER BY r.created_at, r.id"
        ))
        .bind(host_id)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let (stateful, rule) = row.split();
            data.rules.entry(rule.security_group_id.clone()).or_insert_with(|| (stateful, Vec::new())).1.push(rule);
        }
        // Members of the remote groups those rules name: their fixed IPs and pair addresses.
        let remotes = format!(
            "SELECT remote_group_id FROM security_group_rules WHERE remote_group_id IS NOT NULL \
             AND security_group_id IN ({groups_on_host})"
        );
        let members: Vec<(String, Option<String>, String)> = sqlx::query_as(&format!(
            "SELECT b.security_group_id, a.ip_address, p.allowed_address_pairs FROM port_security_groups b \
             JOIN ports p ON p.id = b.port_id LEFT JOIN ip_allocations a ON a.port_id = p.id \
             WHERE b.security_group_id IN ({remotes})"
        ))
        .bind(host_id)
        .fetch_all(&mut *conn)
        .await?;
        for (g, ip, pairs) in members {
            let set = data.members.entry(g).or_default();
            set.extend(ip);
            set.extend(pair_addresses(&pairs));
        }
        Ok(data)
    }
}

/// The IPs or CIDRs of a stored `allowed_address_pairs` list.
pub fn pair_addresses(stored: &str) -> Vec<String> {
    let pairs: Vec<Value> = serde_json::from_str(stored).unwrap_or_default();
    pairs.iter().filter_map(|p| p.get("ip_address").and_then(Value::as_str)).map(str::to_string).collect()
}

#[derive(sqlx::FromRow)]
struct RuleWithState {
    #[sqlx(flatten)]
    rule: Rule,
    stateful: i64,
}

impl RuleWithState {
    fn split(self) -> (bool, Rule) {
        (self.stateful != 0, self.rule)
    }
}
