//! Neutron's tables: networks, subnets, ports and the IP allocations behind them (IPAM).
//!
//! Every creation (single or bulk) and every port update runs in one transaction: a bulk request
//! is all or none. Addresses are claimed by inserting into `ip_allocations`, whose primary key
//! (subnet_id, ip_address) makes handing one out twice impossible, whatever the concurrency.
//! Inserts use `ON CONFLICT DO NOTHING`, so losing a race (which on PostgreSQL would otherwise
//! abort the whole transaction) just moves on to the next candidate.
//!
//! Candidates are found through the `(subnet_id, ip_key)` index: first the address after the
//! highest one allocated in each pool (one indexed MAX per pool, so a /16 with thousands of
//! ports costs the same as an empty one); only when every pool's top is taken, a batched scan
//! for the lowest gap.
//!
//! Functions that run inside a transaction take the connection explicitly: on SQLite the pool
//! holds a single connection, and touching the pool while a transaction holds it would deadlock.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AnyConnection;

use super::security_groups::{check_groups, ensure_default, groups_of_ports, set_port_groups};
use super::sql::Sql;
use super::{Store, StoreError, flag, new_uuid, now};
use crate::network::ipam;

/// Quota rows for network resources carry this prefix in the shared `quotas` table.
pub const QUOTA_PREFIX: &str = "network:";

/// Neutron's default quotas.
pub const QUOTA_DEFAULTS: [(&str, i64); 9] = [
    ("network", 100),
    ("subnet", 100),
    ("port", 500),
    ("router", 10),
    ("floatingip", 50),
    ("security_group", 10),
    ("security_group_rule", 100),
    ("rbac_policy", 10),
    ("subnetpool", -1),
];

/// Port owners Neutron deletes along with their network (`AUTO_DELETE_PORT_OWNERS`); any other
/// port keeps its network (and its subnets) in use.
pub const AUTO_DELETE_OWNERS: [&str; 3] = ["network:dhcp", "network:distributed", "network:floatingip_agent_gateway"];

/// The VIF type a port gets once a host binds it.
pub const BOUND_VIF_TYPE: &str = "ovs";

const MAC_PREFIX: [u8; 3] = [0xfa, 0x16, 0x3e];
/// Lost races tolerated for one address before giving up (each loss means another request got
/// an address, so this only bounds pathological contention).
const MAX_RACE_RETRIES: usize = 1000;
const SCAN_BATCH: i64 = 512;

/// A Neutron failure with its fault type, or a plain store failure.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{message}")]
    Fault { status: u16, kind: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type NetResult<T> = Result<T, NetError>;

impl NetError {
    pub fn fault(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        NetError::Fault { status, kind, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::fault(400, "HTTPBadRequest", message)
    }
    /// Neutron's `InvalidInput`: "Invalid input for operation: …."
    pub fn invalid_input(detail: impl std::fmt::Display) -> Self {
        Self::fault(400, "InvalidInput", format!("Invalid input for operation: {detail}."))
    }
    pub fn not_found(kind: &'static str, message: impl Into<String>) -> Self {
        Self::fault(404, kind, message)
    }
    pub fn conflict(kind: &'static str, message: impl Into<String>) -> Self {
        Self::fault(409, kind, message)
    }
    /// The fault type, if this is a Neutron fault.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            NetError::Fault { kind, .. } => Some(kind),
            NetError::Store(_) => None,
        }
    }
}

impl From<sqlx::Error> for NetError {
    fn from(err: sqlx::Error) -> Self {
        NetError::Store(err.into())
    }
}

impl From<serde_json::Error> for NetError {
    fn from(err: serde_json::Error) -> Self {
        NetError::Store(err.into())
    }
}

pub fn network_not_found(id: &str) -> NetError {
    NetError::not_found("NetworkNotFound", format!("Network {id} could not be found."))
}

pub fn subnet_not_found(id: &str) -> NetError {
    NetError::not_found("SubnetNotFound", format!("Subnet {id} could not be found."))
}

pub fn port_not_found(id: &str) -> NetError {
    NetError::not_found("PortNotFound", format!("Port {id} could not be found."))
}

fn json_strings(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn json_value(s: &str, default: Value) -> Value {
    serde_json::from_str(s).unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Records

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Network {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub admin_state_up: i64,
    pub status: String,
    pub shared: i64,
    pub external: i64,
    pub is_default: i64,
    pub mtu: i64,
    pub port_security_enabled: i64,
    pub availability_zone_hints: String,
    pub tags: String,
    pub revision_number: i64,
    pub created_at: String,
    pub updated_at: String,
    /// Ids of the network's subnets, oldest first (filled by the store).
    #[sqlx(skip)]
    pub subnets: Vec<String>,
}

impl Network {
    /// A network with Neutron's defaults, owned by `project_id`.
    pub fn new(project_id: &str) -> Network {
        let t = now();
        Network {
            id: new_uuid(),
            project_id: project_id.to_string(),
            name: String::new(),
            description: String::new(),
            admin_state_up: 1,
            status: "ACTIVE".into(),
            shared: 0,
            external: 0,
            is_default: 0,
            mtu: 1500,
            port_security_enabled: 1,
            availability_zone_hints: "[]".into(),
            tags: "[]".into(),
            revision_number: 0,
            created_at: t.clone(),
            updated_at: t,
            subnets: Vec::new(),
        }
    }
    pub fn tag_list(&self) -> Vec<String> {
        json_strings(&self.tags)
    }
    pub fn az_hints(&self) -> Vec<String> {
        json_strings(&self.availability_zone_hints)
    }
}

/// One allocation pool as Neutron shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Subnet {
    pub id: String,
    pub network_id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub ip_version: i64,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    pub allocation_pools: String,
    pub dns_nameservers: String,
    pub host_routes: String,
    pub enable_dhcp: i64,
    pub ipv6_ra_mode: Option<String>,
    pub ipv6_address_mode: Option<String>,
    pub tags: String,
    pub revision_number: i64,
    pub created_at: String,
    pub updated_at: String,
}

impl Subnet {
    /// A subnet with Neutron's defaults for `cidr` (first host as gateway, the rest as the
    /// pool, DHCP on), owned by `project_id`.
    pub fn new(project_id: &str, network_id: &str, cidr: &IpNet) -> Subnet {
        let version = ipam::net_version(cidr);
        let gateway = ipam::default_gateway(cidr);
        let pools = pools_from_ranges(&ipam::default_pools(cidr, gateway), version);
        let t = now();
        Subnet {
            id: new_uuid(),
            network_id: network_id.to_string(),
            project_id: project_id.to_string(),
            name: String::new(),
            description: String::new(),
            ip_version: i64::from(version),
            cidr: cidr.to_string(),
            gateway_ip: gateway.map(|g| g.to_string()),
            allocation_pools: serde_json::to_string(&pools).unwrap_or_else(|_| "[]".into()),
            dns_nameservers: "[]".into(),
            host_routes: "[]".into(),
            enable_dhcp: 1,
            ipv6_ra_mode: None,
            ipv6_address_mode: None,
            tags: "[]".into(),
            revision_number: 0,
            created_at: t.clone(),
            updated_at: t,
        }
    }
    pub fn net(&self) -> Option<IpNet> {
        self.cidr.parse().ok()
    }
    pub fn version(&self) -> u8 {
        if self.ip_version == 6 { 6 } else { 4 }
    }
    pub fn pools(&self) -> Vec<Pool> {
        serde_json::from_str(&self.allocation_pools).unwrap_or_default()
    }
    /// The pools as numeric ranges.
    pub fn pool_ranges(&self) -> Vec<ipam::Range> {
        self.pools()
            .iter()
            .filter_map(|p| {
                let s: IpAddr = p.start.parse().ok()?;
                let e: IpAddr = p.end.parse().ok()?;
                Some((ipam::to_u128(s), ipam::to_u128(e)))
            })
            .collect()
    }
    pub fn dns_list(&self) -> Vec<String> {
        json_strings(&self.dns_nameservers)
    }
    pub fn routes(&self) -> Value {
        json_value(&self.host_routes, Value::Array(Vec::new()))
    }
    pub fn tag_list(&self) -> Vec<String> {
        json_strings(&self.tags)
    }
    /// SLAAC or DHCPv6-stateless: addresses come from the MAC (EUI-64), not from the pools.
    pub fn is_auto_address(&self) -> bool {
        self.ip_version == 6 && matches!(self.ipv6_address_mode.as_deref(), Some("slaac") | Some("dhcpv6-stateless"))
    }
}

/// Renders ranges as stored pools.
pub fn pools_from_ranges(ranges: &[ipam::Range], version: u8) -> Vec<Pool> {
    ranges
        .iter()
        .map(|r| Pool {
            start: ipam::from_u128(r.0, version).to_string(),
            end: ipam::from_u128(r.1, version).to_string(),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FixedIp {
    pub port_id: String,
    pub subnet_id: String,
    pub ip_address: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Port {
    pub id: String,
    pub network_id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub mac_address: String,
    pub admin_state_up: i64,
    pub status: String,
    pub device_id: String,
    pub device_owner: String,
    pub host_id: String,
    pub vif_type: String,
    pub vnic_type: String,
    pub binding_profile: String,
    pub vif_details: String,
    pub port_security_enabled: i64,
    pub security_groups: String,
    pub allowed_address_pairs: String,
    pub extra_dhcp_opts: String,
    pub tags: String,
    pub revision_number: i64,
    pub created_at: String,
    pub updated_at: String,
    /// The port's addresses (filled by the store).
    #[sqlx(skip)]
    pub fixed_ips: Vec<FixedIp>,
    /// The port's security groups (filled by the store; `security_groups` is the legacy column).
    #[sqlx(skip)]
    pub security_group_ids: Vec<String>,
}

impl Port {
    pub fn tag_list(&self) -> Vec<String> {
        json_strings(&self.tags)
    }
    pub fn address_pairs(&self) -> Value {
        json_value(&self.allowed_address_pairs, Value::Array(Vec::new()))
    }
    pub fn dhcp_opts(&self) -> Value {
        json_value(&self.extra_dhcp_opts, Value::Array(Vec::new()))
    }
    pub fn profile(&self) -> Value {
        json_value(&self.binding_profile, Value::Object(Default::default()))
    }
    pub fn details(&self) -> Value {
        json_value(&self.vif_details, Value::Object(Default::default()))
    }
}

/// One requested fixed IP: a subnet, an address, or both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpRequest {
    pub subnet_id: Option<String>,
    pub ip_address: Option<IpAddr>,
}

/// A port to create. [`NewPort::new`] gives Neutron's defaults; `fixed_ips: None` means the
/// default allocation (one address from the first IPv4 subnet with room, one from the first
/// stateful IPv6 subnet with room, and the EUI-64 address on every SLAAC subnet).
#[derive(Debug, Clone)]
pub struct NewPort {
    pub id: String,
    pub project_id: String,
    pub network_id: String,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    /// Normalised (`fa:16:3e:…`); generated when absent.
    pub mac_address: Option<String>,
    pub fixed_ips: Option<Vec<IpRequest>>,
    pub device_id: String,
    pub device_owner: String,
    /// Non-empty binds the port to that host (status ACTIVE).
    pub host_id: String,
    pub vnic_type: String,
    pub binding_profile: Value,
    /// None: the network's setting.
    pub port_security_enabled: Option<bool>,
    /// None: the project's default group (none for network-owned ports or without port
    /// security); Some: exactly these (they must exist in the port's project).
    pub security_groups: Option<Vec<String>>,
    /// `[{"ip_address": …, "mac_address"?: …}]`; a missing MAC becomes the port's.
    pub allowed_address_pairs: Vec<Value>,
    pub extra_dhcp_opts: Vec<Value>,
    pub tags: Vec<String>,
}

impl NewPort {
    pub fn new(project_id: &str, network_id: &str) -> NewPort {
        NewPort {
            id: new_uuid(),
            project_id: project_id.to_string(),
            network_id: network_id.to_string(),
            name: String::new(),
            description: String::new(),
            admin_state_up: true,
            mac_address: None,
            fixed_ips: None,
            device_id: String::new(),
            device_owner: String::new(),
            host_id: String::new(),
            vnic_type: "normal".into(),
            binding_profile: Value::Object(Default::default()),
            port_security_enabled: None,
            security_groups: None,
            allowed_address_pairs: Vec::new(),
            extra_dhcp_opts: Vec::new(),
            tags: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NetworkUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub shared: Option<bool>,
    pub mtu: Option<i64>,
    pub port_security_enabled: Option<bool>,
}

/// A subnet update; the caller has validated gateway and pools against the cidr already.
#[derive(Debug, Clone, Default)]
pub struct SubnetUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Some(None) removes the gateway.
    pub gateway_ip: Option<Option<String>>,
    pub allocation_pools: Option<Vec<Pool>>,
    pub dns_nameservers: Option<Vec<String>>,
    pub host_routes: Option<Value>,
    pub enable_dhcp: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct PortUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub mac_address: Option<String>,
    /// Replaces the port's addresses, keeping those still requested (Neutron semantics: a
    /// `{subnet_id}` entry keeps an existing address on that subnet).
    pub fixed_ips: Option<Vec<IpRequest>>,
    pub device_id: Option<String>,
    pub device_owner: Option<String>,
    /// Binding to a host (empty: unbind).
    pub host_id: Option<String>,
    pub vnic_type: Option<String>,
    pub binding_profile: Option<Value>,
    pub port_security_enabled: Option<bool>,
    pub security_groups: Option<Vec<String>>,
    pub allowed_address_pairs: Option<Vec<Value>>,
    pub extra_dhcp_opts: Option<Vec<Value>>,
}

/// Which ports a listing returns (all when every field is None).
#[derive(Debug, Clone, Default)]
pub struct PortFilter {
    /// Only ports this project may see: its own, and those on its networks.
    pub visible_to: Option<String>,
    pub network_id: Option<String>,
    pub device_id: Option<String>,
}

/// The resources that carry tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tagged {
    Network,
    Subnet,
    Port,
}

impl Tagged {
    fn table(self) -> &'static str {
        match self {
            Tagged::Network => "networks",
            Tagged::Subnet => "subnets",
            Tagged::Port => "ports",
        }
    }
    fn not_found(self, id: &str) -> NetError {
        match self {
            Tagged::Network => network_not_found(id),
            Tagged::Subnet => subnet_not_found(id),
            Tagged::Port => port_not_found(id),
        }
    }
}

const NETWORK_COLS: &str = "id, project_id, name, description, admin_state_up, status, shared, external, is_default, \
     mtu, port_security_enabled, availability_zone_hints, tags, revision_number, created_at, updated_at";
const SUBNET_COLS: &str = "id, network_id, project_id, name, description, ip_version, cidr, gateway_ip, \
     allocation_pools, dns_nameservers, host_routes, enable_dhcp, ipv6_ra_mode, ipv6_address_mode, tags, \
     revision_number, created_at, updated_at";
const PORT_COLS: &str = "id, network_id, project_id, name, description, mac_address, admin_state_up, status, \
     device_id, device_owner, host_id, vif_type, vnic_type, binding_profile, vif_details, port_security_enabled, \
     security_groups, allowed_address_pairs, extra_dhcp_opts, tags, revision_number, created_at, updated_at";

/// SQL list of the auto-delete owners (constants, so inlined safely).
fn auto_owners_sql() -> String {
    AUTO_DELETE_OWNERS.iter().map(|o| format!("'{o}'")).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------------
// Quotas

/// The effective limit of a network resource for a project, read on `conn`.
async fn quota_limit(conn: &mut AnyConnection, project_id: &str, resource: &str) -> NetResult<i64> {
    let over: Option<i64> = sqlx::query_scalar("SELECT hard_limit FROM quotas WHERE project_id = $1 AND resource = $2")
        .bind(project_id)
        .bind(format!("{QUOTA_PREFIX}{resource}"))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(over.unwrap_or_else(|| QUOTA_DEFAULTS.iter().find(|q| q.0 == resource).map_or(-1, |q| q.1)))
}

/// Refuses to go over `project_id`'s quota of `resource` when adding `adding` rows to `table`.
pub(crate) async fn check_quota(
    conn: &mut AnyConnection,
    project_id: &str,
    resource: &str,
    adding: i64,
) -> NetResult<()> {
    let limit = quota_limit(conn, project_id, resource).await?;
    if limit < 0 {
        return Ok(());
    }
    let used = count_rows(conn, resource, project_id).await?;
    if used + adding > limit {
        return Err(NetError::conflict("OverQuota", format!("Quota exceeded for resources: ['{resource}'].")));
    }
    Ok(())
}

async fn count_rows(conn: &mut AnyConnection, resource: &str, project_id: &str) -> NetResult<i64> {
    let table = match resource {
        "network" => "networks",
        "subnet" => "subnets",
        "port" => "ports",
        "security_group" => "security_groups",
        "security_group_rule" => "security_group_rules",
        _ => return Ok(0),
    };
    Ok(sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE project_id = $1"))
        .bind(project_id)
        .fetch_one(&mut *conn)
        .await?)
}

fn count_by_project<'a>(projects: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, i64> {
    let mut m = BTreeMap::new();
    for p in projects {
        *m.entry(p).or_insert(0) += 1;
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Transaction-level helpers

async fn fetch_network(conn: &mut AnyConnection, id: &str) -> NetResult<Network> {
    let mut n: Network = sqlx::query_as(&format!("SELECT {NETWORK_COLS} FROM networks WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| network_not_found(id))?;
    n.subnets = sqlx::query_scalar("SELECT id FROM subnets WHERE network_id = $1 ORDER BY created_at, id")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(n)
}

async fn fetch_subnet(conn: &mut AnyConnection, id: &str) -> NetResult<Subnet> {
    sqlx::query_as(&format!("SELECT {SUBNET_COLS} FROM subnets WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| subnet_not_found(id))
}

async fn network_subnets(conn: &mut AnyConnection, network_id: &str) -> NetResult<Vec<Subnet>> {
    Ok(sqlx::query_as(&format!("SELECT {SUBNET_COLS} FROM subnets WHERE network_id = $1 ORDER BY created_at, id"))
        .bind(network_id)
        .fetch_all(&mut *conn)
        .await?)
}

async fn fetch_port(conn: &mut AnyConnection, id: &str) -> NetResult<Port> {
    let mut p: Port = sqlx::query_as(&format!("SELECT {PORT_COLS} FROM ports WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| port_not_found(id))?;
    p.fixed_ips = port_ips(conn, id).await?;
    p.security_group_ids = groups_of_ports(conn, &[id]).await?.remove(id).unwrap_or_default();
    Ok(p)
}

async fn port_ips(conn: &mut AnyConnection, port_id: &str) -> NetResult<Vec<FixedIp>> {
    Ok(sqlx::query_as(
        "SELECT port_id, subnet_id, ip_address FROM ip_allocations WHERE port_id = $1 ORDER BY ip_key, subnet_id",
    )
    .bind(port_id)
    .fetch_all(&mut *conn)
    .await?)
}

async fn bump_network(conn: &mut AnyConnection, network_id: &str) -> NetResult<()> {
    sqlx::query("UPDATE networks SET revision_number = revision_number + 1, updated_at = $2 WHERE id = $1")
        .bind(network_id)
        .bind(now())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Claims one address; false when someone holds it already.
async fn claim(conn: &mut AnyConnection, subnet: &Subnet, ip: u128, port_id: &str) -> NetResult<bool> {
    let addr = ipam::from_u128(ip, subnet.version());
    let done = sqlx::query(
        "INSERT INTO ip_allocations (subnet_id, ip_address, ip_key, port_id, network_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&subnet.id)
    .bind(addr.to_string())
    .bind(ipam::key(ip))
    .bind(port_id)
    .bind(&subnet.network_id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The next free candidate in the subnet's pools, as the module doc describes.
async fn next_candidate(conn: &mut AnyConnection, subnet_id: &str, pools: &[ipam::Range]) -> NetResult<Option<u128>> {
    for &(lo, hi) in pools {
        // ORDER BY … DESC LIMIT 1 rather than MAX(): both databases answer it from the index.
        let max: Option<String> = sqlx::query_scalar(
            "SELECT ip_key FROM ip_allocations WHERE subnet_id = $1 AND ip_key >= $2 AND ip_key <= $3 \
             ORDER BY ip_key DESC LIMIT 1",
        )
        .bind(subnet_id)
        .bind(ipam::key(lo))
        .bind(ipam::key(hi))
        .fetch_optional(&mut *conn)
        .await?;
        match max.as_deref().and_then(ipam::parse_key) {
            None => return Ok(Some(lo)),
            Some(m) if m < hi => return Ok(Some(m + 1)),
            Some(_) => {}
        }
    }
    for &(lo, hi) in pools {
        let mut cursor = lo;
        loop {
            let keys: Vec<String> = sqlx::query_scalar(
                "SELECT ip_key FROM ip_allocations WHERE subnet_id = $1 AND ip_key >= $2 AND ip_key <= $3 \
                 ORDER BY ip_key LIMIT $4",
            )
            .bind(subnet_id)
            .bind(ipam::key(cursor))
            .bind(ipam::key(hi))
            .bind(SCAN_BATCH)
            .fetch_all(&mut *conn)
            .await?;
            let n = keys.len();
            let mut exhausted = false;
            for k in keys.iter().filter_map(|k| ipam::parse_key(k)) {
                if k > cursor {
                    return Ok(Some(cursor));
                }
                match k.checked_add(1) {
                    Some(next) => cursor = next,
                    None => exhausted = true,
                }
            }
            if exhausted || cursor > hi {
                break;
            }
            if (n as i64) < SCAN_BATCH {
                return Ok(Some(cursor));
            }
        }
    }
    Ok(None)
}

/// Allocates any free address of the subnet's pools to the port; None when exhausted.
async fn allocate_any(conn: &mut AnyConnection, subnet: &Subnet, port_id: &str) -> NetResult<Option<u128>> {
    let pools = subnet.pool_ranges();
    for _ in 0..MAX_RACE_RETRIES {
        let Some(candidate) = next_candidate(conn, &subnet.id, &pools).await? else {
            return Ok(None);
        };
        if claim(conn, subnet, candidate, port_id).await? {
            return Ok(Some(candidate));
        }
    }
    Err(NetError::conflict(
        "IpAddressGenerationFailure",
        format!("No more IP addresses available for subnet {}.", subnet.id),
    ))
}

/// What one requested fixed IP resolves to.
enum Plan {
    /// This address on this subnet (explicit, or EUI-64).
    Exact(usize, u128),
    /// Any free address of this subnet.
    Any(usize),
    /// Any free address of the first of these subnets with room.
    AnyOf(Vec<usize>),
}

/// Turns requested fixed IPs (or the default) into allocation plans over `subnets`.
fn plan(network_id: &str, subnets: &[Subnet], mac: &[u8; 6], requests: Option<&[IpRequest]>) -> NetResult<Vec<Plan>> {
    let mut plans = Vec::new();
    let Some(requests) = requests else {
        let v4: Vec<usize> = (0..subnets.len()).filter(|&i| subnets[i].ip_version == 4).collect();
        let v6: Vec<usize> =
            (0..subnets.len()).filter(|&i| subnets[i].ip_version == 6 && !subnets[i].is_auto_address()).collect();
        for group in [v4, v6] {
            if !group.is_empty() {
                plans.push(Plan::AnyOf(group));
            }
        }
        for (i, s) in subnets.iter().enumerate() {
            if s.is_auto_address()
                && let Some(net) = s.net()
            {
                plans.push(Plan::Exact(i, ipam::to_u128(ipam::eui64(&net, mac))));
            }
        }
        return Ok(plans);
    };
    for r in requests {
        let index = match (&r.subnet_id, r.ip_address) {
            (Some(sid), _) => subnets.iter().position(|s| &s.id == sid).ok_or_else(|| {
                NetError::invalid_input(format!(
                    "Failed to create port on network {network_id}, because fixed_ips included invalid subnet {sid}"
                ))
            })?,
            (None, Some(ip)) => {
                subnets.iter().position(|s| s.net().is_some_and(|n| ipam::valid_port_ip(&n, ip))).ok_or_else(|| {
                    NetError::fault(
                        400,
                        "InvalidIpForNetwork",
                        format!("IP address {ip} is not a valid IP for any of the subnets on the specified network."),
                    )
                })?
            }
            (None, None) => {
                return Err(NetError::invalid_input("IP allocation requires subnet_id or ip_address"));
            }
        };
        let subnet = &subnets[index];
        let net = subnet.net().ok_or_else(|| NetError::Store(StoreError::Other(anyhow::anyhow!("bad cidr"))))?;
        match r.ip_address {
            Some(ip) => {
                if !ipam::valid_port_ip(&net, ip) {
                    return Err(NetError::fault(
                        400,
                        "InvalidIpForSubnet",
                        format!("IP address {ip} is not a valid IP for the specified subnet."),
                    ));
                }
                if subnet.is_auto_address() && ip != ipam::eui64(&net, mac) {
                    return Err(NetError::invalid_input(format!(
                        "IPv6 address {ip} cannot be directly assigned to a port on subnet {} as the subnet is configured for automatic addresses",
                        subnet.id
                    )));
                }
                plans.push(Plan::Exact(index, ipam::to_u128(ip)));
            }
            None if subnet.is_auto_address() => plans.push(Plan::Exact(index, ipam::to_u128(ipam::eui64(&net, mac)))),
            None => plans.push(Plan::Any(index)),
        }
    }
    Ok(plans)
}

/// Carries out allocation plans for one port: exact addresses first, then pool allocations.
async fn execute_plans(
    conn: &mut AnyConnection,
    port_id: &str,
    network_id: &str,
    subnets: &[Subnet],
    plans: &[Plan],
) -> NetResult<()> {
    for p in plans {
        if let Plan::Exact(i, ip) = p {
            let s = &subnets[*i];
            if !claim(conn, s, *ip, port_id).await? {
                return Err(NetError::conflict(
                    "IpAddressAlreadyAllocated",
                    format!("IP address {} already allocated in subnet {}", ipam::from_u128(*ip, s.version()), s.id),
                ));
            }
        }
    }
    for p in plans {
        match p {
            Plan::Exact(..) => {}
            Plan::Any(i) => {
                let s = &subnets[*i];
                if allocate_any(conn, s, port_id).await?.is_none() {
                    return Err(NetError::conflict(
                        "IpAddressGenerationFailure",
                        format!("No more IP addresses available for subnet {}.", s.id),
                    ));
                }
            }
            Plan::AnyOf(group) => {
                let mut done = false;
                for i in group {
                    if allocate_any(conn, &subnets[*i], port_id).await?.is_some() {
                        done = true;
                        break;
                    }
                }
                if !done {
                    return Err(NetError::conflict(
                        "IpAddressGenerationFailure",
                        format!("No more IP addresses available on network {network_id}."),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn random_mac() -> [u8; 6] {
    use rand::RngCore;
    let mut tail = [0u8; 3];
    rand::thread_rng().fill_bytes(&mut tail);
    [MAC_PREFIX[0], MAC_PREFIX[1], MAC_PREFIX[2], tail[0], tail[1], tail[2]]
}

fn mac_in_use(network_id: &str, mac: &str) -> NetError {
    NetError::conflict(
        "MacAddressInUse",
        format!("Unable to complete operation for network {network_id}. The mac address {mac} is in use."),
    )
}

/// Fills in the MAC of address pairs that have none (Neutron uses the port's).
fn complete_pairs(pairs: &[Value], mac: &str) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if let Some(o) = p.as_object_mut()
                    && o.get("mac_address").is_none_or(Value::is_null)
                {
                    o.insert("mac_address".into(), Value::String(mac.to_string()));
                }
                p
            })
            .collect(),
    )
}

/// Neutron's PortSecurityAndIPRequiredForSecurityGroups.
fn port_security_required() -> NetError {
    NetError::fault(
        400,
        "PortSecurityAndIPRequiredForSecurityGroups",
        "Port security must be enabled and port must have an IP address in order to use security groups.",
    )
}

fn binding_state(host: &str) -> (&'static str, &'static str, &'static str) {
    if host.is_empty() { ("DOWN", "unbound", "{}") } else { ("ACTIVE", BOUND_VIF_TYPE, "{\"port_filter\": true}") }
}

/// A port just created, with what its network looked like: what a compute host needs to
/// plug it, without reading the network again.
#[derive(Debug, Clone)]
pub struct CreatedPort {
    pub port: Port,
    pub mtu: i64,
    pub subnets: Vec<Subnet>,
}

/// Creates one port with its addresses on `conn`.
async fn insert_port(conn: &mut AnyConnection, p: &NewPort) -> NetResult<CreatedPort> {
    let (net_security, mtu): (i64, i64) =
        sqlx::query_as("SELECT port_security_enabled, mtu FROM networks WHERE id = $1")
            .bind(&p.network_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| network_not_found(&p.network_id))?;
    let subnets = network_subnets(conn, &p.network_id).await?;
    let port_security = p.port_security_enabled.unwrap_or(net_security != 0);
    let (status, vif_type, vif_details) = binding_state(&p.host_id);
    let t = now();
    let mut mac_bytes = match &p.mac_address {
        Some(m) => ipam::parse_mac(m).ok_or_else(|| {
            NetError::bad_request(format!("Invalid input for mac_address. Reason: '{m}' is not a valid MAC address."))
        })?,
        None => random_mac(),
    };
    let mut inserted = None;
    for _ in 0..16 {
        let mac = ipam::format_mac(&mac_bytes);
        let row: Option<Port> = sqlx::query_as(&format!(
            "INSERT INTO ports ({PORT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, 0, $21, $21) ON CONFLICT DO NOTHING RETURNING {PORT_COLS}"
        ))
        .bind(&p.id)
        .bind(&p.network_id)
        .bind(&p.project_id)
        .bind(&p.name)
        .bind(&p.description)
        .bind(&mac)
        .bind(flag(p.admin_state_up))
        .bind(status)
        .bind(&p.device_id)
        .bind(&p.device_owner)
        .bind(&p.host_id)
        .bind(vif_type)
        .bind(&p.vnic_type)
        .bind(serde_json::to_string(&p.binding_profile)?)
        .bind(vif_details)
        .bind(flag(port_security))
        // The legacy column: the port's groups are in `port_security_groups`.
        .bind("[]")
        .bind(serde_json::to_string(&complete_pairs(&p.allowed_address_pairs, &mac))?)
        .bind(serde_json::to_string(&p.extra_dhcp_opts)?)
        .bind(serde_json::to_string(&p.tags)?)
        .bind(&t)
        .fetch_optional(&mut *conn)
        .await?;
        if row.is_some() {
            inserted = row;
            break;
        }
        let id_taken: Option<String> =
            sqlx::query_scalar("SELECT id FROM ports WHERE id = $1").bind(&p.id).fetch_optional(&mut *conn).await?;
        if id_taken.is_some() {
            return Err(NetError::conflict("HTTPConflict", format!("Port {} already exists.", p.id)));
        }
        if p.mac_address.is_some() {
            return Err(mac_in_use(&p.network_id, &mac));
        }
        mac_bytes = random_mac();
    }
    let Some(mut port) = inserted else {
        return Err(NetError::conflict("MacAddressGenerationFailure", "Unable to generate unique mac on network."));
    };
    let plans = plan(&p.network_id, &subnets, &mac_bytes, p.fixed_ips.as_deref())?;
    execute_plans(conn, &p.id, &p.network_id, &subnets, &plans).await?;
    port.fixed_ips = port_ips(conn, &p.id).await?;
    // Neutron's _portsec_ext_port_create_processing: the default group unless groups are
    // given; with port security off, none (and asking for some is refused).
    let groups = match &p.security_groups {
        Some(g) if !g.is_empty() && !port_security => return Err(port_security_required()),
        Some(g) => {
            check_groups(conn, &p.project_id, g).await?;
            g.clone()
        }
        None if port_security && !p.device_owner.starts_with("network:") => {
            vec![ensure_default(conn, &p.project_id).await?.0]
        }
        None => Vec::new(),
    };
    set_port_groups(conn, &p.id, &groups).await?;
    port.security_group_ids = groups;
    Ok(CreatedPort { port, mtu, subnets })
}

// ---------------------------------------------------------------------------------------------
// The store API

impl Store {
    // ---- networks ----

    /// Creates networks atomically, enforcing each owner's network quota.
    pub async fn create_networks(&self, nets: Vec<Network>) -> NetResult<Vec<Network>> {
        let mut tx = self.begin().await?;
        for (project, n) in count_by_project(nets.iter().map(|n| n.project_id.as_str())) {
            check_quota(&mut tx, project, "network", n).await?;
        }
        for n in &nets {
            sqlx::query(&format!(
                "INSERT INTO networks ({NETWORK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
            ))
            .bind(&n.id)
            .bind(&n.project_id)
            .bind(&n.name)
            .bind(&n.description)
            .bind(n.admin_state_up)
            .bind(&n.status)
            .bind(n.shared)
            .bind(n.external)
            .bind(n.is_default)
            .bind(n.mtu)
            .bind(n.port_security_enabled)
            .bind(&n.availability_zone_hints)
            .bind(&n.tags)
            .bind(n.revision_number)
            .bind(&n.created_at)
            .bind(&n.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => NetError::conflict("HTTPConflict", format!("Network {} already exists.", n.id)),
                other => other.into(),
            })?;
        }
        tx.commit().await?;
        Ok(nets)
    }

    pub async fn get_network(&self, id: &str) -> NetResult<Network> {
        let mut conn = self.conn().await?;
        fetch_network(&mut conn, id).await
    }

    /// Networks, oldest first; `visible_to` limits them to the project's own, shared and
    /// external ones.
    pub async fn list_networks(&self, visible_to: Option<&str>) -> NetResult<Vec<Network>> {
        let cond = "($1 IS NULL OR project_id = $1 OR shared = 1 OR external = 1)";
        let mut nets: Vec<Network> =
            sqlx::query_as(&format!("SELECT {NETWORK_COLS} FROM networks WHERE {cond} ORDER BY created_at, id"))
                .bind(visible_to)
                .fetch_all(&mut *self.conn().await?)
                .await?;
        let pairs: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT network_id, id FROM subnets WHERE network_id IN (SELECT id FROM networks WHERE {cond}) \
             ORDER BY created_at, id"
        ))
        .bind(visible_to)
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut by_net: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (net, id) in pairs {
            by_net.entry(net).or_default().push(id);
        }
        for n in &mut nets {
            n.subnets = by_net.remove(&n.id).unwrap_or_default();
        }
        Ok(nets)
    }

    pub async fn update_network(&self, id: &str, u: &NetworkUpdate) -> NetResult<Network> {
        let mut tx = self.begin().await?;
        let mut n = fetch_network(&mut tx, id).await?;
        if u.shared == Some(false) && n.shared != 0 {
            let others: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM ports WHERE network_id = $1 AND project_id <> $2")
                    .bind(id)
                    .bind(&n.project_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if others > 0 {
                return Err(NetError::conflict(
                    "InvalidSharedSetting",
                    format!("Unable to reconfigure sharing settings for network {id}. Multiple tenants are using it."),
                ));
            }
        }
        if let Some(v) = &u.name {
            n.name = v.clone();
        }
        if let Some(v) = &u.description {
            n.description = v.clone();
        }
        let set = |cur: &mut i64, v: Option<bool>| {
            if let Some(b) = v {
                *cur = flag(b);
            }
        };
        set(&mut n.admin_state_up, u.admin_state_up);
        set(&mut n.shared, u.shared);
        set(&mut n.port_security_enabled, u.port_security_enabled);
        if let Some(m) = u.mtu {
            n.mtu = m;
        }
        n.updated_at = now();
        n.revision_number += 1;
        sqlx::query(
            "UPDATE networks SET name = $2, description = $3, admin_state_up = $4, shared = $5, mtu = $6, \
             port_security_enabled = $7, updated_at = $8, revision_number = revision_number + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(&n.name)
        .bind(&n.description)
        .bind(n.admin_state_up)
        .bind(n.shared)
        .bind(n.mtu)
        .bind(n.port_security_enabled)
        .bind(&n.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Deletes a network with its subnets and its auto-delete (DHCP, distributed) ports;
    /// `NetworkInUse` while any other port remains.
    pub async fn delete_network(&self, id: &str) -> NetResult<()> {
        let mut tx = self.begin().await?;
        fetch_network(&mut tx, id).await?;
        let busy: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM ports WHERE network_id = $1 AND device_owner NOT IN ({})",
            auto_owners_sql()
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        if busy > 0 {
            return Err(NetError::conflict(
                "NetworkInUse",
                format!(
                    "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
                ),
            ));
        }
        for sql in [
            "DELETE FROM ip_allocations WHERE network_id = $1",
            "DELETE FROM ports WHERE network_id = $1",
            "DELETE FROM subnets WHERE network_id = $1",
            "DELETE FROM networks WHERE id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- subnets ----

    /// Creates subnets atomically: each network must exist, cidrs may not overlap others on the
    /// same network (including earlier ones of the batch), quotas hold.
    pub async fn create_subnets(&self, subnets: Vec<Subnet>) -> NetResult<Vec<Subnet>> {
        let mut tx = self.begin().await?;
        for (project, n) in count_by_project(subnets.iter().map(|s| s.project_id.as_str())) {
            check_quota(&mut tx, project, "subnet", n).await?;
        }
        for s in &subnets {
            fetch_network(&mut tx, &s.network_id).await?;
            let new_net = s.net().ok_or_else(|| NetError::bad_request(format!("Invalid cidr {}", s.cidr)))?;
            let existing: Vec<String> = sqlx::query_scalar("SELECT cidr FROM subnets WHERE network_id = $1")
                .bind(&s.network_id)
                .fetch_all(&mut *tx)
                .await?;
            if existing.iter().filter_map(|c| c.parse::<IpNet>().ok()).any(|n| ipam::overlaps(&n, &new_net)) {
                return Err(NetError::invalid_input(format!(
                    "Requested subnet with cidr: {} for network: {} overlaps with another subnet",
                    s.cidr, s.network_id
                )));
            }
            sqlx::query(&format!(
                "INSERT INTO subnets ({SUBNET_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
            ))
            .bind(&s.id)
            .bind(&s.network_id)
            .bind(&s.project_id)
            .bind(&s.name)
            .bind(&s.description)
            .bind(s.ip_version)
            .bind(&s.cidr)
            .bind(s.gateway_ip.as_deref())
            .bind(&s.allocation_pools)
            .bind(&s.dns_nameservers)
            .bind(&s.host_routes)
            .bind(s.enable_dhcp)
            .bind(s.ipv6_ra_mode.as_deref())
            .bind(s.ipv6_address_mode.as_deref())
            .bind(&s.tags)
            .bind(s.revision_number)
            .bind(&s.created_at)
            .bind(&s.updated_at)
            .execute(&mut *tx)
            .await?;
            bump_network(&mut tx, &s.network_id).await?;
        }
        tx.commit().await?;
        Ok(subnets)
    }

    pub async fn get_subnet(&self, id: &str) -> NetResult<Subnet> {
        let mut conn = self.conn().await?;
        fetch_subnet(&mut conn, id).await
    }

    /// Subnets, oldest first; `visible_to` limits them to the project's own, those on its
    /// networks and those on shared networks.
    pub async fn list_subnets(&self, visible_to: Option<&str>, network_id: Option<&str>) -> NetResult<Vec<Subnet>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {SUBNET_COLS} FROM subnets WHERE ($1 IS NULL OR project_id = $1 OR network_id IN \
             (SELECT id FROM networks WHERE shared = 1 OR project_id = $1)) AND ($2 IS NULL OR network_id = $2) \
             ORDER BY created_at, id"
        ))
        .bind(visible_to)
        .bind(network_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn update_subnet(&self, id: &str, u: &SubnetUpdate) -> NetResult<Subnet> {
        let mut tx = self.begin().await?;
        let mut s = fetch_subnet(&mut tx, id).await?;
        if let Some(Some(gw)) = &u.gateway_ip
            && s.gateway_ip.as_deref() != Some(gw.as_str())
        {
            let holder: Option<String> =
                sqlx::query_scalar("SELECT port_id FROM ip_allocations WHERE subnet_id = $1 AND ip_address = $2")
                    .bind(id)
                    .bind(gw)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(port) = holder {
                return Err(NetError::conflict(
                    "GatewayIpInUse",
                    format!("Current gateway ip {gw} already in use by port {port}. Unable to update."),
                ));
            }
        }
        if let Some(v) = &u.name {
            s.name = v.clone();
        }
        if let Some(v) = &u.description {
            s.description = v.clone();
        }
        if let Some(g) = &u.gateway_ip {
            s.gateway_ip = g.clone();
        }
        if let Some(p) = &u.allocation_pools {
            s.allocation_pools = serde_json::to_string(p)?;
        }
        if let Some(d) = &u.dns_nameservers {
            s.dns_nameservers = serde_json::to_string(d)?;
        }
        if let Some(r) = &u.host_routes {
            s.host_routes = serde_json::to_string(r)?;
        }
        if let Some(b) = u.enable_dhcp {
            s.enable_dhcp = flag(b);
        }
        s.updated_at = now();
        s.revision_number += 1;
        sqlx::query(
            "UPDATE subnets SET name = $2, description = $3, gateway_ip = $4, allocation_pools = $5, \
             dns_nameservers = $6, host_routes = $7, enable_dhcp = $8, updated_at = $9, \
             revision_number = revision_number + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(&s.name)
        .bind(&s.description)
        .bind(s.gateway_ip.as_deref())
        .bind(&s.allocation_pools)
        .bind(&s.dns_nameservers)
        .bind(&s.host_routes)
        .bind(s.enable_dhcp)
        .bind(&s.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(s)
    }

    /// Deletes a subnet; `SubnetInUse` while a port other than an auto-delete one has an
    /// address on it (those lose theirs). On a SLAAC or DHCPv6-stateless subnet every port
    /// loses its address instead, as in Neutron: the address is derived from the port's MAC
    /// and the guest configures it itself, so nothing was handed out that must be taken back.
    pub async fn delete_subnet(&self, id: &str) -> NetResult<()> {
        let mut tx = self.begin().await?;
        let s = fetch_subnet(&mut tx, id).await?;
        let busy: i64 = if s.is_auto_address() {
            0
        } else {
            sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM ip_allocations a JOIN ports p ON p.id = a.port_id \
                 WHERE a.subnet_id = $1 AND p.device_owner NOT IN ({})",
                auto_owners_sql()
            ))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
        };
        if busy > 0 {
            return Err(NetError::conflict(
                "SubnetInUse",
                format!(
                    "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
                ),
            ));
        }
        // The ports that lose an address change: a new revision, as Neutron's port update.
        sqlx::query(
            "UPDATE ports SET revision_number = revision_number + 1, updated_at = $2 \
             WHERE id IN (SELECT port_id FROM ip_allocations WHERE subnet_id = $1)",
        )
        .bind(id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM ip_allocations WHERE subnet_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM subnets WHERE id = $1").bind(id).execute(&mut *tx).await?;
        bump_network(&mut tx, &s.network_id).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- ports ----

    /// Creates one port with its addresses (for callers such as compute).
    pub async fn create_port(&self, p: NewPort) -> NetResult<Port> {
        let mut ports = self.create_ports(vec![p]).await?;
        ports.pop().ok_or_else(|| NetError::Store(StoreError::Other(anyhow::anyhow!("port vanished"))))
    }

    /// Creates ports atomically: MACs, addresses and quotas all hold, or nothing is created.
    pub async fn create_ports(&self, ports: Vec<NewPort>) -> NetResult<Vec<Port>> {
        let mut tx = self.begin().await?;
        for (project, n) in count_by_project(ports.iter().map(|p| p.project_id.as_str())) {
            check_quota(&mut tx, project, "port", n).await?;
        }
        let mut out = Vec::with_capacity(ports.len());
        for p in &ports {
            out.push(insert_port(&mut tx, p).await?.port);
        }
        tx.commit().await?;
        self.filters_changed();
        Ok(out)
    }

    /// Creates a port for a server being built and records it in the server's `owned_ports`
    /// (the ports its build made, reused if the build resumes), in one transaction.
    pub async fn create_instance_port(
        &self,
        p: NewPort,
        instance_id: &str,
        owned_ports: &str,
    ) -> NetResult<CreatedPort> {
        let mut tx = self.begin().await?;
        check_quota(&mut tx, &p.project_id, "port", 1).await?;
        let created = insert_port(&mut tx, &p).await?;
        sqlx::query("UPDATE instances SET owned_ports = $2 WHERE id = $1")
            .bind(instance_id)
            .bind(owned_ports)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.filters_changed();
        Ok(created)
    }

    pub async fn get_port(&self, id: &str) -> NetResult<Port> {
        let mut conn = self.conn().await?;
        fetch_port(&mut conn, id).await
    }

    /// Ports, oldest first, with their addresses.
    pub async fn list_ports(&self, f: &PortFilter) -> NetResult<Vec<Port>> {
        let cond = "($1 IS NULL OR project_id = $1 OR network_id IN (SELECT id FROM networks WHERE project_id = $1)) \
                    AND ($2 IS NULL OR network_id = $2) AND ($3 IS NULL OR device_id = $3)";
        let mut ports: Vec<Port> =
            sqlx::query_as(&format!("SELECT {PORT_COLS} FROM ports WHERE {cond} ORDER BY created_at, id"))
                .bind(f.visible_to.as_deref())
                .bind(f.network_id.as_deref())
                .bind(f.device_id.as_deref())
                .fetch_all(&mut *self.conn().await?)
                .await?;
        let ips: Vec<FixedIp> = sqlx::query_as(&format!(
            "SELECT port_id, subnet_id, ip_address FROM ip_allocations WHERE port_id IN (SELECT id FROM ports WHERE {cond}) \
             ORDER BY port_id, ip_key, subnet_id"
        ))
        .bind(f.visible_to.as_deref())
        .bind(f.network_id.as_deref())
        .bind(f.device_id.as_deref())
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut by_port: BTreeMap<String, Vec<FixedIp>> = BTreeMap::new();
        for ip in ips {
            by_port.entry(ip.port_id.clone()).or_default().push(ip);
        }
        let bindings: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT port_id, security_group_id FROM port_security_groups WHERE port_id IN (SELECT id FROM ports WHERE {cond}) \
             ORDER BY port_id, security_group_id"
        ))
        .bind(f.visible_to.as_deref())
        .bind(f.network_id.as_deref())
        .bind(f.device_id.as_deref())
        .fetch_all(&mut *self.conn().await?)
        .await?;
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (port, group) in bindings {
            groups.entry(port).or_default().push(group);
        }
        for p in &mut ports {
            p.fixed_ips = by_port.remove(&p.id).unwrap_or_default();
            p.security_group_ids = groups.remove(&p.id).unwrap_or_default();
        }
        Ok(ports)
    }

    /// The ports of one device (a server's interfaces), oldest first.
    pub async fn ports_by_device(&self, device_id: &str) -> NetResult<Vec<Port>> {
        self.list_ports(&PortFilter { device_id: Some(device_id.to_string()), ..Default::default() }).await
    }

    pub async fn update_port(&self, id: &str, u: &PortUpdate) -> NetResult<Port> {
        let mut tx = self.begin().await?;
        let mut p = fetch_port(&mut tx, id).await?;
        let subnets = network_subnets(&mut tx, &p.network_id).await?;
        let mut mac_changed = false;
        if let Some(m) = &u.mac_address
            && *m != p.mac_address
        {
            if !p.host_id.is_empty() {
                return Err(NetError::conflict(
                    "PortBound",
                    format!(
                        "Unable to complete operation on port {id}, port is already bound, port type: {}, old_mac {}, new_mac {m}.",
                        p.vif_type, p.mac_address
                    ),
                ));
            }
            let taken: Option<String> =
                sqlx::query_scalar("SELECT id FROM ports WHERE network_id = $1 AND mac_address = $2")
                    .bind(&p.network_id)
                    .bind(m)
                    .fetch_optional(&mut *tx)
                    .await?;
            if taken.is_some() {
                return Err(mac_in_use(&p.network_id, m));
            }
            p.mac_address = m.clone();
            mac_changed = true;
        }
        let mac_bytes = ipam::parse_mac(&p.mac_address).unwrap_or_else(random_mac);
        let wanted = match (&u.fixed_ips, mac_changed) {
            (Some(reqs), _) => Some(reqs.clone()),
            // A new MAC moves EUI-64 addresses: re-request the port's addresses, dropping those.
            (None, true) => Some(
                p.fixed_ips
                    .iter()
                    .map(|f| {
                        let auto = subnets.iter().any(|s| s.id == f.subnet_id && s.is_auto_address());
                        IpRequest {
                            subnet_id: Some(f.subnet_id.clone()),
                            ip_address: if auto { None } else { f.ip_address.parse().ok() },
                        }
                    })
                    .collect(),
            ),
            (None, false) => None,
        };
        if let Some(reqs) = wanted {
            let (keep, add) = diff_ips(&p.fixed_ips, &reqs, &subnets, mac_changed);
            for old in p.fixed_ips.iter().filter(|f| !keep.contains(f)) {
                sqlx::query("DELETE FROM ip_allocations WHERE port_id = $1 AND subnet_id = $2 AND ip_address = $3")
                    .bind(id)
                    .bind(&old.subnet_id)
                    .bind(&old.ip_address)
                    .execute(&mut *tx)
                    .await?;
            }
            let plans = plan(&p.network_id, &subnets, &mac_bytes, Some(&add))?;
            execute_plans(&mut tx, id, &p.network_id, &subnets, &plans).await?;
        }
        if let Some(v) = &u.name {
            p.name = v.clone();
        }
        if let Some(v) = &u.description {
            p.description = v.clone();
        }
        if let Some(b) = u.admin_state_up {
            p.admin_state_up = flag(b);
        }
        if let Some(v) = &u.device_id {
            p.device_id = v.clone();
        }
        if let Some(v) = &u.device_owner {
            p.device_owner = v.clone();
        }
        if let Some(h) = &u.host_id {
            let (status, vif_type, details) = binding_state(h);
            p.host_id = h.clone();
            p.status = status.to_string();
            p.vif_type = vif_type.to_string();
            p.vif_details = details.to_string();
        }
        if let Some(v) = &u.vnic_type {
            p.vnic_type = v.clone();
        }
        if let Some(v) = &u.binding_profile {
            p.binding_profile = serde_json::to_string(v)?;
        }
        if let Some(b) = u.port_security_enabled {
            p.port_security_enabled = flag(b);
        }
        // Neutron's _portsec_ext_port_update_processing: without port security, groups may
        // neither be given nor stay.
        if p.port_security_enabled == 0 {
            match &u.security_groups {
                Some(g) if !g.is_empty() => return Err(port_security_required()),
                Some(_) => {}
                None if !p.security_group_ids.is_empty() => {
                    return Err(NetError::conflict(
                        "PortSecurityPortHasSecurityGroup",
                        "Port has security group associated. Cannot disable port security or IP address until \
                         security group is removed.",
                    ));
                }
                None => {}
            }
        }
        if let Some(v) = &u.security_groups {
            check_groups(&mut tx, &p.project_id, v).await?;
            set_port_groups(&mut tx, id, v).await?;
        }
        if let Some(v) = &u.allowed_address_pairs {
            p.allowed_address_pairs = serde_json::to_string(&complete_pairs(v, &p.mac_address))?;
        }
        if let Some(v) = &u.extra_dhcp_opts {
            p.extra_dhcp_opts = serde_json::to_string(v)?;
        }
        p.updated_at = now();
        sqlx::query(
            "UPDATE ports SET name = $2, description = $3, mac_address = $4, admin_state_up = $5, status = $6, \
             device_id = $7, device_owner = $8, host_id = $9, vif_type = $10, vnic_type = $11, binding_profile = $12, \
             vif_details = $13, port_security_enabled = $14, security_groups = $15, allowed_address_pairs = $16, \
             extra_dhcp_opts = $17, updated_at = $18, revision_number = revision_number + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(&p.name)
        .bind(&p.description)
        .bind(&p.mac_address)
        .bind(p.admin_state_up)
        .bind(&p.status)
        .bind(&p.device_id)
        .bind(&p.device_owner)
        .bind(&p.host_id)
        .bind(&p.vif_type)
        .bind(&p.vnic_type)
        .bind(&p.binding_profile)
        .bind(&p.vif_details)
        .bind(p.port_security_enabled)
        .bind(&p.security_groups)
        .bind(&p.allowed_address_pairs)
        .bind(&p.extra_dhcp_opts)
        .bind(&p.updated_at)
        .execute(&mut *tx)
        .await?;
        let p = fetch_port(&mut tx, id).await?;
        tx.commit().await?;
        self.filters_changed();
        Ok(p)
    }

    /// Binds a port to a host (compute's side of `binding:host_id`); empty host unbinds.
    pub async fn bind_port(&self, id: &str, host: &str) -> NetResult<Port> {
        self.update_port(id, &PortUpdate { host_id: Some(host.to_string()), ..Default::default() }).await
    }

    /// Deletes a port, freeing its addresses.
    pub async fn delete_port(&self, id: &str) -> NetResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM ip_allocations WHERE port_id = $1").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM ports WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(port_not_found(id));
        }
        tx.commit().await?;
        self.filters_changed();
        Ok(())
    }

    /// Deletes every port of a device (a server going away); returns how many.
    pub async fn delete_ports_by_device(&self, device_id: &str) -> NetResult<u64> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM ip_allocations WHERE port_id IN (SELECT id FROM ports WHERE device_id = $1)")
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM ports WHERE device_id = $1").bind(device_id).execute(&mut *tx).await?;
        tx.commit().await?;
        self.filters_changed();
        Ok(done.rows_affected())
    }

    // ---- tags, usage ----

    /// Replaces a resource's tags (bumps its revision).
    pub async fn set_tags(&self, kind: Tagged, id: &str, tags: &[String]) -> NetResult<()> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET tags = $2, updated_at = $3, revision_number = revision_number + 1 WHERE id = $1",
            kind.table()
        ))
        .bind(id)
        .bind(serde_json::to_string(tags)?)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        if done.rows_affected() == 0 {
            return Err(kind.not_found(id));
        }
        Ok(())
    }

    /// How many networks, subnets, ports, security groups and rules a project owns.
    pub async fn network_usage(&self, project_id: &str) -> NetResult<BTreeMap<String, i64>> {
        let mut conn = self.conn().await?;
        let mut out = BTreeMap::new();
        for r in ["network", "subnet", "port", "security_group", "security_group_rule"] {
            out.insert(r.to_string(), count_rows(&mut conn, r, project_id).await?);
        }
        Ok(out)
    }

    /// Projects with at least one network quota override.
    pub async fn network_quota_projects(&self) -> NetResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT project_id FROM quotas WHERE resource LIKE $1 ORDER BY project_id")
            .bind(format!("{QUOTA_PREFIX}%"))
            .fetch_all(&mut *self.conn().await?)
            .await?)
    }
}

/// Neutron's `_get_changed_ips_for_port`: which current addresses stay, which requests are new.
fn diff_ips(
    current: &[FixedIp],
    requests: &[IpRequest],
    subnets: &[Subnet],
    mac_changed: bool,
) -> (Vec<FixedIp>, Vec<IpRequest>) {
    let mut unclaimed: Vec<FixedIp> = current.to_vec();
    let mut keep = Vec::new();
    let mut add = Vec::new();
    for r in requests.iter().filter(|r| r.ip_address.is_some()) {
        let ip = r.ip_address.map(|i| i.to_string()).unwrap_or_default();
        let pos =
            unclaimed.iter().position(|f| f.ip_address == ip && r.subnet_id.as_ref().is_none_or(|s| *s == f.subnet_id));
        match pos {
            Some(i) => keep.push(unclaimed.remove(i)),
            None => add.push(r.clone()),
        }
    }
    for r in requests.iter().filter(|r| r.ip_address.is_none()) {
        let auto = r.subnet_id.as_ref().is_some_and(|sid| subnets.iter().any(|s| &s.id == sid && s.is_auto_address()));
        let pos = unclaimed.iter().position(|f| Some(&f.subnet_id) == r.subnet_id.as_ref());
        match pos {
            // EUI-64 addresses are recomputed when the MAC changes.
            Some(i) if !(auto && mac_changed) => keep.push(unclaimed.remove(i)),
            _ => add.push(r.clone()),
        }
    }
    (keep, add)
}

// ---------------------------------------------------------------------------------------------
// Lists done in SQL

/// A filter or marker value as stored: text, or an integer (booleans as 0/1).
#[derive(Debug, Clone, PartialEq)]
pub enum ListValue {
    Text(String),
    Int(i64),
}

/// One sort key: an SQL expression over the table's columns, whether it is text, ascending.
#[derive(Debug, Clone)]
pub struct ListSort {
    pub expr: &'static str,
    pub text: bool,
    pub asc: bool,
}

/// A Neutron list request as SQL runs it: the caller has checked that every filter and sort
/// key is a column (or an expression over columns).
#[derive(Debug, Clone, Default)]
pub struct ListSpec {
    /// `expr IN (values)`, all of them.
    pub filters: Vec<(&'static str, Vec<ListValue>)>,
    /// Only rows updated at or after this stored time.
    pub since: Option<String>,
    /// The order, ending with a unique key (the id).
    pub sorts: Vec<ListSort>,
    /// Rows after this id in that order (before it with `reverse`).
    pub marker: Option<String>,
    pub limit: Option<i64>,
    /// Neutron's `page_reverse`: the rows before the marker, still returned in order.
    pub reverse: bool,
}

impl Sql {
    fn value(&mut self, v: &ListValue) -> &mut Self {
        match v {
            ListValue::Text(s) => self.text(s.as_str()),
            ListValue::Int(i) => self.int(*i),
        }
    }
}

/// A page of `table` in one statement (two with a marker: its sort values are read first).
/// `scope` pushes the caller's visibility conditions. `None`: the marker is not in scope.
async fn list_page<T>(
    store: &Store,
    cols: &str,
    table: &str,
    scope: &(dyn Fn(&mut Sql) + Sync),
    spec: &ListSpec,
) -> NetResult<Option<Vec<T>>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    use sqlx::Row;
    let collate = super::instances::text_order(store.backend);
    let expr = |s: &ListSort| if s.text { format!("{}{collate}", s.expr) } else { s.expr.to_string() };
    let mut after: Option<Vec<ListValue>> = None;
    if let Some(marker) = &spec.marker {
        let mut sql = Sql::default();
        let keys: Vec<&str> = spec.sorts.iter().map(|s| s.expr).collect();
        sql.push(&format!("SELECT {} FROM {table} WHERE ", keys.join(", ")));
        scope(&mut sql);
        sql.push(" AND id = ").text(marker.as_str());
        let row = sql.query().fetch_optional(&mut *store.conn().await?).await?;
        let Some(row) = row else { return Ok(None) };
        let mut values = Vec::with_capacity(spec.sorts.len());
        for (n, s) in spec.sorts.iter().enumerate() {
            values.push(if s.text { ListValue::Text(row.try_get(n)?) } else { ListValue::Int(row.try_get(n)?) });
        }
        after = Some(values);
    }
    let mut sql = Sql::default();
    sql.push(&format!("SELECT {cols} FROM {table} WHERE "));
    scope(&mut sql);
    for (e, values) in &spec.filters {
        sql.push(&format!(" AND {e} IN ("));
        for (n, v) in values.iter().enumerate() {
            if n > 0 {
                sql.push(", ");
            }
            sql.value(v);
        }
        sql.push(")");
    }
    if let Some(t) = &spec.since {
        sql.push(" AND updated_at >= ").text(t.as_str());
    }
    // Keyset condition: (k1, k2, …) after the marker's values, each key in its own direction.
    if let Some(values) = &after {
        sql.push(" AND (");
        for (i, s) in spec.sorts.iter().enumerate() {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push("(");
            for (j, earlier) in spec.sorts[..i].iter().enumerate() {
                sql.push(&format!("{} = ", expr(earlier))).value(&values[j]).push(" AND ");
            }
            let op = if s.asc != spec.reverse { ">" } else { "<" };
            sql.push(&format!("{} {op} ", expr(s))).value(&values[i]).push(")");
        }
        sql.push(")");
    }
    let order: Vec<String> = spec
        .sorts
        .iter()
        .map(|s| format!("{} {}", expr(s), if s.asc != spec.reverse { "ASC" } else { "DESC" }))
        .collect();
    sql.push(&format!(" ORDER BY {}", order.join(", ")));
    if let Some(n) = spec.limit {
        sql.push(" LIMIT ").int(n);
    }
    let mut rows: Vec<T> = sql.query_as().fetch_all(&mut *store.conn().await?).await?;
    if spec.reverse {
        rows.reverse();
    }
    Ok(Some(rows))
}

impl Store {
    /// A page of networks (see [`ListSpec`]) with their subnet ids: two statements, three with
    /// a marker. `None`: the marker is not a network the caller sees.
    pub async fn list_networks_page(
        &self,
        visible_to: Option<&str>,
        spec: &ListSpec,
    ) -> NetResult<Option<Vec<Network>>> {
        let scope = |sql: &mut Sql| {
            sql.push("1 = 1");
            if let Some(p) = visible_to {
                sql.push(" AND (project_id = ").text(p).push(" OR shared = 1 OR external = 1)");
            }
        };
        let Some(mut nets) = list_page::<Network>(self, NETWORK_COLS, "networks", &scope, spec).await? else {
            return Ok(None);
        };
        if nets.is_empty() {
            return Ok(Some(nets));
        }
        let mut sql = Sql::default();
        sql.push("SELECT network_id, id FROM subnets WHERE network_id IN (")
            .texts(nets.iter().map(|n| n.id.as_str()))
            .push(") ORDER BY created_at, id");
        let pairs: Vec<(String, String)> = sql.query_as().fetch_all(&mut *self.conn().await?).await?;
        let mut by_net: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (net, id) in pairs {
            by_net.entry(net).or_default().push(id);
        }
        for n in &mut nets {
            n.subnets = by_net.remove(&n.id).unwrap_or_default();
        }
        Ok(Some(nets))
    }

    /// A page of ports (see [`ListSpec`]) with their addresses: two statements, three with a
    /// marker. `None`: the marker is not a port the caller sees.
    pub async fn list_ports_page(&self, f: &PortFilter, spec: &ListSpec) -> NetResult<Option<Vec<Port>>> {
        let scope = |sql: &mut Sql| {
            sql.push("1 = 1");
            if let Some(p) = &f.visible_to {
                sql.push(" AND (project_id = ")
                    .text(p.as_str())
                    .push(" OR network_id IN (SELECT id FROM networks WHERE project_id = ")
                    .text(p.as_str())
                    .push("))");
            }
            if let Some(n) = &f.network_id {
                sql.push(" AND network_id = ").text(n.as_str());
            }
            if let Some(d) = &f.device_id {
                sql.push(" AND device_id = ").text(d.as_str());
            }
        };
        let Some(mut ports) = list_page::<Port>(self, PORT_COLS, "ports", &scope, spec).await? else {
            return Ok(None);
        };
        if ports.is_empty() {
            return Ok(Some(ports));
        }
        let mut sql = Sql::default();
        sql.push("SELECT port_id, subnet_id, ip_address FROM ip_allocations WHERE port_id IN (")
            .texts(ports.iter().map(|p| p.id.as_str()))
            .push(") ORDER BY port_id, ip_key, subnet_id");
        let ips: Vec<FixedIp> = sql.query_as().fetch_all(&mut *self.conn().await?).await?;
        let mut by_port: BTreeMap<String, Vec<FixedIp>> = BTreeMap::new();
        for ip in ips {
            by_port.entry(ip.port_id.clone()).or_default().push(ip);
        }
        let ids: Vec<&str> = ports.iter().map(|p| p.id.as_str()).collect();
        let mut groups = groups_of_ports(&mut *self.conn().await?, &ids).await?;
        for p in &mut ports {
            p.fixed_ips = by_port.remove(&p.id).unwrap_or_default();
            p.security_group_ids = groups.remove(&p.id).unwrap_or_default();
        }
        Ok(Some(ports))
    }
}
