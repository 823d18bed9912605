//! `/v2.0/ports`, with fixed IPs from IPAM, MACs, bindings and port security.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::api::{self, Column, JsonResult, Kind, Obj, Schema, deny, invalid};
use super::ipam;
use super::networks;
use crate::auth::Ctx;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::network::{IpRequest, NetError, Network, NewPort, Port, PortFilter, PortUpdate, port_not_found};

pub const MAX_ADDRESS_PAIRS: usize = 10;
const VNIC_TYPES: [&str; 9] = [
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "vdpa",
    "remote-managed",
];

pub(crate) const SCHEMA: Schema = Schema {
    singular: "port",
    plural: "ports",
    title: "Port",
    not_found: "PortNotFound",
    attrs: &[
        ("id", Kind::Str),
        ("name", Kind::Str),
        ("network_id", Kind::Str),
        ("tenant_id", Kind::Str),
        ("project_id", Kind::Str),
        ("mac_address", Kind::Str),
        ("admin_state_up", Kind::Bool),
        ("status", Kind::Str),
        ("device_id", Kind::Str),
        ("device_owner", Kind::Str),
        ("fixed_ips", Kind::Dict),
        ("allowed_address_pairs", Kind::Dict),
        ("extra_dhcp_opts", Kind::Dict),
        ("port_security_enabled", Kind::Bool),
        ("security_groups", Kind::List),
        ("description", Kind::Str),
        ("tags", Kind::List),
        ("created_at", Kind::Str),
        ("updated_at", Kind::Str),
        ("revision_number", Kind::Int),
        ("binding:host_id", Kind::Str),
        ("binding:profile", Kind::Dict),
        ("binding:vif_type", Kind::Str),
        ("binding:vif_details", Kind::Dict),
        ("binding:vnic_type", Kind::Str),
    ],
    post: &[
        "name",
        "network_id",
        "tenant_id",
        "project_id",
        "mac_address",
        "admin_state_up",
        "device_id",
        "device_owner",
        "fixed_ips",
        "allowed_address_pairs",
        "extra_dhcp_opts",
        "port_security_enabled",
        "security_groups",
        "description",
        "binding:host_id",
        "binding:profile",
        "binding:vnic_type",
    ],
    put: &[
        "name",
        "mac_address",
        "admin_state_up",
        "device_id",
        "device_owner",
        "fixed_ips",
        "allowed_address_pairs",
        "extra_dhcp_opts",
        "port_security_enabled",
        "security_groups",
        "description",
        "binding:host_id",
        "binding:profile",
        "binding:vnic_type",
    ],
};

/// A port as the caller sees it: binding details other than the VNIC type are admin-only.
pub(crate) fn port_json(p: &Port, admin: bool) -> Obj {
    let fixed: Vec<Value> =
        p.fixed_ips.iter().map(|f| json!({"subnet_id": f.subnet_id, "ip_address": f.ip_address})).collect();
    let v = json!({
        "id": p.id,
        "name": p.name,
        "network_id": p.network_id,
        "tenant_id": p.project_id,
        "project_id": p.project_id,
        "mac_address": p.mac_address,
        "admin_state_up": p.admin_state_up != 0,
        "status": p.status,
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "fixed_ips": fixed,
        "allowed_address_pairs": p.address_pairs(),
        "extra_dhcp_opts": p.dhcp_opts(),
        "port_security_enabled": p.port_security_enabled != 0,
        "security_groups": p.security_group_ids,
        "description": p.description,
        "tags": p.tag_list(),
        "created_at": api::time(&p.created_at),
        "updated_at": api::time(&p.updated_at),
        "revision_number": p.revision_number,
        "binding:vnic_type": p.vnic_type,
    });
    let mut o = match v {
        Value::Object(o) => o,
        _ => Obj::new(),
    };
    if admin {
        o.insert("binding:host_id".into(), json!(p.host_id));
        o.insert("binding:profile".into(), p.profile());
        o.insert("binding:vif_type".into(), json!(p.vif_type));
        o.insert("binding:vif_details".into(), p.details());
    }
    o
}

/// A port the caller may see (own, or on an own network), with its network.
pub(crate) async fn load_visible(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<(Port, Network)> {
    let p = state.store.get_port(id).await?;
    let net = state.store.get_network(&p.network_id).await?;
    if ctx.owns(&p.project_id) || ctx.owns(&net.project_id) { Ok((p, net)) } else { Err(port_not_found(id).into()) }
}

/// `fixed_ips=ip_address=…` / `subnet_id=…` / `ip_address_substr=…` filters: every
/// constraint must hold on one of the port's addresses.
fn fixed_ip_filter(q: &Query) -> ApiResult<Vec<(String, String)>> {
    q.all("fixed_ips")
        .into_iter()
        .filter(|v| !v.is_empty())
        .map(|v| match v.split_once('=') {
            Some((k @ ("ip_address" | "subnet_id" | "ip_address_substr"), val)) => Ok((k.to_string(), val.to_string())),
            _ => Err(invalid("fixed_ips", format!("'{v}' is not a valid fixed_ips filter"))),
        })
        .collect()
}

fn fixed_ip_matches(p: &Port, wanted: &[(String, String)]) -> bool {
    if wanted.is_empty() {
        return true;
    }
    let ips: Vec<&str> = wanted.iter().filter(|w| w.0 == "ip_address").map(|w| w.1.as_str()).collect();
    let subnets: Vec<&str> = wanted.iter().filter(|w| w.0 == "subnet_id").map(|w| w.1.as_str()).collect();
    let substrs: Vec<&str> = wanted.iter().filter(|w| w.0 == "ip_address_substr").map(|w| w.1.as_str()).collect();
    p.fixed_ips.iter().any(|f| {
        (ips.is_empty() || ips.contains(&f.ip_address.as_str()))
            && (subnets.is_empty() || subnets.contains(&f.subnet_id.as_str()))
            && (substrs.is_empty() || substrs.iter().any(|s| f.ip_address.contains(s)))
    })
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_reader("get_port").map_err(|_| deny("get_port"))?;
    let admin = ctx.is_admin();
    let one = |key: &str| {
        let v = q.all(key);
        if v.len() == 1 { Some(v[0].to_string()) } else { None }
    };
    let filter = PortFilter {
        visible_to: if admin { None } else { Some(ctx.project_id()?.to_string()) },
        network_id: one("network_id"),
        device_id: one("device_id"),
    };
    let wanted = fixed_ip_filter(&q)?;
    let req = api::list_request(&state, &SCHEMA, &q, &["fixed_ips"])?;
    // Binding attributes are shown to admins only: for others they filter and sort as absent,
    // which the in-memory path does.
    let columns = if admin { ADMIN_COLUMNS } else { COLUMNS };
    if let Some(spec) = req.sql(&SCHEMA, columns).filter(|_| wanted.is_empty()) {
        let ports = state.store.list_ports_page(&filter, &spec).await?.ok_or_else(|| req.marker_not_found(&SCHEMA))?;
        return req.respond(&state, &SCHEMA, &q, ports.iter().map(|p| port_json(p, admin)).collect());
    }
    let ports = state.store.list_ports(&filter).await?;
    let items = ports.iter().filter(|p| fixed_ip_matches(p, &wanted)).map(|p| port_json(p, admin)).collect();
    api::list_in_memory(&state, &SCHEMA, &q, &req, items)
}

/// The attributes lists filter and sort on in SQL (the others, in memory); the last two,
/// the binding attributes, only for admins (who see them).
const ALL_COLUMNS: [Column; 18] = [
    Column { attr: "id", expr: "id", filter: true },
    Column { attr: "name", expr: "name", filter: true },
    Column { attr: "network_id", expr: "network_id", filter: true },
    Column { attr: "tenant_id", expr: "project_id", filter: true },
    Column { attr: "project_id", expr: "project_id", filter: true },
    Column { attr: "mac_address", expr: "mac_address", filter: true },
    Column { attr: "admin_state_up", expr: "admin_state_up", filter: true },
    Column { attr: "status", expr: "status", filter: true },
    Column { attr: "device_id", expr: "device_id", filter: true },
    Column { attr: "device_owner", expr: "device_owner", filter: true },
    Column { attr: "port_security_enabled", expr: "port_security_enabled", filter: true },
    Column { attr: "description", expr: "description", filter: true },
    Column { attr: "revision_number", expr: "revision_number", filter: true },
    Column { attr: "binding:vnic_type", expr: "vnic_type", filter: true },
    Column { attr: "created_at", expr: "substr(created_at, 1, 19)", filter: false },
    Column { attr: "updated_at", expr: "substr(updated_at, 1, 19)", filter: false },
    Column { attr: "binding:host_id", expr: "host_id", filter: true },
    Column { attr: "binding:vif_type", expr: "vif_type", filter: true },
];
/// What an admin's list filters and sorts on in SQL.
const ADMIN_COLUMNS: &[Column] = &ALL_COLUMNS;
/// What anyone else's does.
const COLUMNS: &[Column] = ALL_COLUMNS.split_at(16).0;

pub async fn show(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, q: Query) -> JsonResult {
    ctx.require_reader("get_port").map_err(|_| deny("get_port"))?;
    let (p, _) = load_visible(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"port": api::select_fields(port_json(&p, ctx.is_admin()), &q)})))
}

/// Parses `fixed_ips`; subnets named must exist (SubnetNotFound otherwise).
async fn fixed_ips(state: &AppState, m: &Obj) -> ApiResult<Option<Vec<IpRequest>>> {
    let list = match m.get("fixed_ips") {
        None => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(invalid("fixed_ips", format!("Invalid data format for fixed IP: '{v}'")));
        }
    };
    let mut out: Vec<IpRequest> = Vec::new();
    for f in list {
        let o = f
            .as_object()
            .filter(|o| o.keys().all(|k| k == "subnet_id" || k == "ip_address"))
            .ok_or_else(|| invalid("fixed_ips", format!("Invalid data format for fixed IP: '{f}'")))?;
        let subnet_id = match o.get("subnet_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(invalid("fixed_ips", format!("'{v}' is not a valid UUID"))),
        };
        let ip_address = match o.get("ip_address") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                s.parse::<IpAddr>().map_err(|_| invalid("fixed_ips", format!("'{s}' is not a valid IP address")))?,
            ),
            Some(v) => {
                return Err(invalid("fixed_ips", format!("'{v}' is not a valid IP address")));
            }
        };
        if let Some(ip) = ip_address
            && out.iter().any(|r| r.ip_address == Some(ip))
        {
            return Err(invalid("fixed_ips", format!("Duplicate IP address '{ip}'")));
        }
        if let Some(sid) = &subnet_id {
            state.store.get_subnet(sid).await?;
        }
        out.push(IpRequest { subnet_id, ip_address });
    }
    Ok(Some(out))
}

fn address_pairs(m: &Obj) -> ApiResult<Option<Vec<Value>>> {
    let list = match m.get("allowed_address_pairs") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(Vec::new())),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(invalid("allowed_address_pairs", format!("'{v}' is not a list")));
        }
    };
    if list.len() > MAX_ADDRESS_PAIRS {
        return Err(NetError::bad_request(format!(
            "The number of allowed address pair exceeds the maximum {MAX_ADDRESS_PAIRS}."
        ))
        .into());
    }
    let mut out: Vec<Value> = Vec::new();
    for pair in list {
        let o = pair
            .as_object()
            .filter(|o| o.keys().all(|k| k == "ip_address" || k == "mac_address"))
            .ok_or_else(|| invalid("allowed_address_pairs", format!("Unrecognized attribute(s) in '{pair}'")))?;
        let ip = o
            .get("ip_address")
            .and_then(Value::as_str)
            .ok_or_else(|| NetError::bad_request("AllowedAddressPair must contain ip_address"))?;
        let ip = if ip.contains('/') {
            ipam::parse_cidr("allowed_address_pairs", ip)?.to_string()
        } else {
            ipam::parse_ip("allowed_address_pairs", ip)?.to_string()
        };
        let mac = match o.get("mac_address") {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(s)) => Value::String(
                ipam::parse_mac(s)
                    .map(|m| ipam::format_mac(&m))
                    .ok_or_else(|| invalid("allowed_address_pairs", format!("'{s}' is not a valid MAC address")))?,
            ),
            Some(v) => {
                return Err(invalid("allowed_address_pairs", format!("'{v}' is not a valid MAC address")));
            }
        };
        let entry = json!({"ip_address": ip, "mac_address": mac});
        if out.iter().any(|e| e["ip_address"] == entry["ip_address"] && e["mac_address"] == entry["mac_address"]) {
            return Err(NetError::bad_request("Request contains duplicate address pair").into());
        }
        out.push(entry);
    }
    Ok(Some(out))
}

/// `security_groups`: a list of group ids (null is the empty list, as Neutron converts it).
fn security_groups(m: &Obj) -> ApiResult<Option<Vec<String>>> {
    match m.get("security_groups") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(Vec::new())),
        Some(_) => {
            // Each group once, in the order given.
            let mut ids: Vec<String> = Vec::new();
            for id in api::str_list(m, "security_groups")?.unwrap_or_default() {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            Ok(Some(ids))
        }
    }
}

fn dhcp_opts(m: &Obj) -> ApiResult<Option<Vec<Value>>> {
    let list = match m.get("extra_dhcp_opts") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(Vec::new())),
        Some(Value::Array(a)) => a,
        Some(v) => return Err(invalid("extra_dhcp_opts", format!("'{v}' is not a list"))),
    };
    list.iter()
        .map(|opt| {
            let o = opt
                .as_object()
                .filter(|o| o.keys().all(|k| k == "opt_name" || k == "opt_value" || k == "ip_version"))
                .ok_or_else(|| {
                    invalid("extra_dhcp_opts", format!("Invalid data format for extra DHCP option: '{opt}'"))
                })?;
            let name = o.get("opt_name").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
                invalid("extra_dhcp_opts", format!("Invalid data format for extra DHCP option: '{opt}'"))
            })?;
            let value = match o.get("opt_value") {
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(Value::Null) | None => Value::Null,
                Some(v) => {
                    return Err(invalid("extra_dhcp_opts", format!("'{v}' is not a valid string")));
                }
            };
            let version = match o.get("ip_version") {
                None | Some(Value::Null) => 4,
                Some(v) => match api::to_int("ip_version", v)? {
                    n @ (4 | 6) => n,
                    n => {
                        return Err(invalid("extra_dhcp_opts", format!("'{n}' is not in [4, 6]")));
                    }
                },
            };
            Ok(json!({"opt_name": name, "opt_value": value, "ip_version": version}))
        })
        .collect::<ApiResult<Vec<_>>>()
        .map(Some)
}

fn vnic_type(m: &Obj) -> ApiResult<Option<String>> {
    match api::string(m, "binding:vnic_type", 64)? {
        Some(v) if !VNIC_TYPES.contains(&v.as_str()) => {
            Err(invalid("binding:vnic_type", format!("'{v}' is not in {VNIC_TYPES:?}")))
        }
        other => Ok(other),
    }
}

fn profile(m: &Obj) -> ApiResult<Option<Value>> {
    match m.get("binding:profile") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(json!({}))),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(v) => Err(invalid("binding:profile", format!("'{v}' is not a dictionary"))),
    }
}

fn mac(m: &Obj) -> ApiResult<Option<String>> {
    match api::string(m, "mac_address", 32)? {
        None => Ok(None),
        Some(s) => ipam::parse_mac(&s)
            .map(|b| Some(ipam::format_mac(&b)))
            .ok_or_else(|| invalid("mac_address", format!("'{s}' is not a valid MAC address"))),
    }
}

/// Neutron's attribute policies: who may set what on a port of `net`.
fn check_attr_policy(ctx: &Ctx, m: &Obj, net: &Network, action: &str, fixed: Option<&[IpRequest]>) -> ApiResult<()> {
    let net_owner = ctx.owns(&net.project_id);
    let admin = ctx.is_admin();
    let needs = |cond: bool, attr: &str| {
        if cond { Err(deny(&format!("{action}:{attr}"))) } else { Ok(()) }
    };
    needs(m.contains_key("binding:host_id") && !admin, "binding:host_id")?;
    needs(m.contains_key("binding:profile") && !admin, "binding:profile")?;
    needs(m.contains_key("mac_address") && !net_owner, "mac_address")?;
    needs(m.contains_key("mac_address") && action == "update_port" && !admin, "mac_address")?;
    needs(m.contains_key("port_security_enabled") && !net_owner, "port_security_enabled")?;
    needs(m.contains_key("allowed_address_pairs") && !net_owner, "allowed_address_pairs")?;
    let explicit_ip = fixed.is_some_and(|f| f.iter().any(|r| r.ip_address.is_some()));
    needs(explicit_ip && !net_owner, "fixed_ips:ip_address")?;
    let network_device = m.get("device_owner").and_then(Value::as_str).is_some_and(|o| o.starts_with("network:"));
    needs(network_device && !net_owner, "device_owner")?;
    Ok(())
}

fn check_port_security(enabled: bool, pairs: &[Value]) -> ApiResult<()> {
    if !enabled && !pairs.is_empty() {
        return Err(NetError::conflict(
            "AddressPairAndPortSecurityRequired",
            "Port Security must be enabled in order to have allowed address pairs on a port.",
        )
        .into());
    }
    Ok(())
}

async fn build(state: &AppState, ctx: &Ctx, m: &Obj) -> ApiResult<NewPort> {
    api::check_post(m, &SCHEMA)?;
    let network_id = api::string(m, "network_id", 255)?
        .ok_or_else(|| api::bad("Failed to parse request. Required attribute 'network_id' not specified"))?;
    let net = networks::load_visible(state, ctx, &network_id).await?;
    if !ctx.owns(&net.project_id) && net.shared == 0 {
        // Visible but neither owned nor shared: an external network.
        return Err(deny("create_port:network_id"));
    }
    let project = api::owner(ctx, m, "create_port")?;
    let fixed = fixed_ips(state, m).await?;
    check_attr_policy(ctx, m, &net, "create_port", fixed.as_deref())?;
    let mut p = NewPort::new(&project, &network_id);
    p.fixed_ips = fixed;
    p.mac_address = mac(m)?;
    if let Some(v) = api::string(m, "name", 255)? {
        p.name = v;
    }
    if let Some(v) = api::string(m, "description", 255)? {
        p.description = v;
    }
    if let Some(b) = api::boolean(m, "admin_state_up")? {
        p.admin_state_up = b;
    }
    if let Some(v) = api::string(m, "device_id", 255)? {
        p.device_id = v;
    }
    if let Some(v) = api::string(m, "device_owner", 255)? {
        p.device_owner = v;
    }
    if let Some(v) = api::string(m, "binding:host_id", 255)? {
        p.host_id = v;
    }
    if let Some(v) = profile(m)? {
        p.binding_profile = v;
    }
    if let Some(v) = vnic_type(m)? {
        p.vnic_type = v;
    }
    p.port_security_enabled = api::boolean(m, "port_security_enabled")?;
    p.security_groups = security_groups(m)?;
    p.allowed_address_pairs = address_pairs(m)?.unwrap_or_default();
    p.extra_dhcp_opts = dhcp_opts(m)?.unwrap_or_default();
    let enabled = p.port_security_enabled.unwrap_or(net.port_security_enabled != 0);
    check_port_security(enabled, &p.allowed_address_pairs)?;
    Ok(p)
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    ctx.require_member("create_port").map_err(|_| deny("create_port"))?;
    let (items, bulk) = api::create_items(&body, &SCHEMA)?;
    let mut ports = Vec::with_capacity(items.len());
    for m in &items {
        ports.push(build(&state, &ctx, m).await?);
    }
    let created = state.store.create_ports(ports).await?;
    let admin = ctx.is_admin();
    api::created(&SCHEMA, created.iter().map(|p| Value::Object(port_json(p, admin))).collect(), bulk)
}

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let (p, net) = load_visible(&state, &ctx, &id).await?;
    api::check_write(&ctx, &[&p.project_id, &net.project_id], "update_port")?;
    let m = api::update_item(&body, &SCHEMA)?;
    api::check_put(&m, &SCHEMA)?;
    let fixed = fixed_ips(&state, &m).await?;
    check_attr_policy(&ctx, &m, &net, "update_port", fixed.as_deref())?;
    let u = PortUpdate {
        name: api::string(&m, "name", 255)?,
        description: api::string(&m, "description", 255)?,
        admin_state_up: api::boolean(&m, "admin_state_up")?,
        mac_address: mac(&m)?,
        fixed_ips: fixed,
        device_id: api::string(&m, "device_id", 255)?,
        device_owner: api::string(&m, "device_owner", 255)?,
        host_id: api::string(&m, "binding:host_id", 255)?,
        vnic_type: vnic_type(&m)?,
        binding_profile: profile(&m)?,
        port_security_enabled: api::boolean(&m, "port_security_enabled")?,
        security_groups: security_groups(&m)?,
        allowed_address_pairs: address_pairs(&m)?,
        extra_dhcp_opts: dhcp_opts(&m)?,
    };
    let enabled = u.port_security_enabled.unwrap_or(p.port_security_enabled != 0);
    let pairs =
        u.allowed_address_pairs.clone().unwrap_or_else(|| p.address_pairs().as_array().cloned().unwrap_or_default());
    check_port_security(enabled, &pairs)?;
    let updated = state.store.update_port(&id, &u).await?;
    Ok(axum::Json(json!({"port": port_json(&updated, ctx.is_admin())})))
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let (p, net) = load_visible(&state, &ctx, &id).await?;
    api::check_write(&ctx, &[&p.project_id, &net.project_id], "delete_port")?;
    state.store.delete_port(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
