//! `/v2.0/subnets`: IPv4 and IPv6, validated and normalised as Neutron does.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use ipnet::IpNet;
use serde_json::{Value, json};

use super::api::{self, JsonResult, Kind, Obj, Schema, deny, invalid};
use super::ipam;
use super::networks;
use crate::auth::Ctx;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::network::{NetError, Subnet, SubnetUpdate, pools_from_ranges, subnet_not_found};

pub const MAX_DNS_NAMESERVERS: usize = 5;
pub const MAX_HOST_ROUTES: usize = 20;
const IPV6_MODES: [&str; 3] = ["slaac", "dhcpv6-stateful", "dhcpv6-stateless"];

pub(crate) const SCHEMA: Schema = Schema {
    singular: "subnet",
    plural: "subnets",
    title: "Subnet",
    not_found: "SubnetNotFound",
    attrs: &[
        ("id", Kind::Str),
        ("name", Kind::Str),
        ("tenant_id", Kind::Str),
        ("project_id", Kind::Str),
        ("network_id", Kind::Str),
        ("ip_version", Kind::Int),
        ("subnetpool_id", Kind::Str),
        ("use_default_subnetpool", Kind::Bool),
        ("prefixlen", Kind::Int),
        ("enable_dhcp", Kind::Bool),
        ("ipv6_ra_mode", Kind::Str),
        ("ipv6_address_mode", Kind::Str),
        ("gateway_ip", Kind::Str),
        ("cidr", Kind::Str),
        ("allocation_pools", Kind::Dict),
        ("host_routes", Kind::Dict),
        ("dns_nameservers", Kind::List),
        ("description", Kind::Str),
        ("service_types", Kind::List),
        ("segment_id", Kind::Str),
        ("tags", Kind::List),
        ("created_at", Kind::Str),
        ("updated_at", Kind::Str),
        ("revision_number", Kind::Int),
    ],
    post: &[
        "name",
        "tenant_id",
        "project_id",
        "network_id",
        "ip_version",
        "subnetpool_id",
        "use_default_subnetpool",
        "prefixlen",
        "enable_dhcp",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "gateway_ip",
        "cidr",
        "allocation_pools",
        "host_routes",
        "dns_nameservers",
        "description",
        "service_types",
        "segment_id",
    ],
    put: &[
        "name",
        "enable_dhcp",
        "gateway_ip",
        "allocation_pools",
        "host_routes",
        "dns_nameservers",
        "description",
        "service_types",
        "segment_id",
    ],
};

pub(crate) fn subnet_json(s: &Subnet) -> Obj {
    let v = json!({
        "id": s.id,
        "name": s.name,
        "tenant_id": s.project_id,
        "project_id": s.project_id,
        "network_id": s.network_id,
        "ip_version": s.ip_version,
        "subnetpool_id": null,
        "enable_dhcp": s.enable_dhcp != 0,
        "ipv6_ra_mode": s.ipv6_ra_mode,
        "ipv6_address_mode": s.ipv6_address_mode,
        "gateway_ip": s.gateway_ip,
        "cidr": s.cidr,
        "allocation_pools": s.pools(),
        "host_routes": s.routes(),
        "dns_nameservers": s.dns_list(),
        "description": s.description,
        "service_types": [],
        "segment_id": null,
        "tags": s.tag_list(),
        "created_at": api::time(&s.created_at),
        "updated_at": api::time(&s.updated_at),
        "revision_number": s.revision_number,
    });
    match v {
        Value::Object(o) => o,
        _ => Obj::new(),
    }
}

/// A subnet the caller may see (own, on an own network, or on a shared one), with the owners
/// allowed to change it (subnet's and network's projects).
pub(crate) async fn load_visible(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<(Subnet, String)> {
    let s = state.store.get_subnet(id).await?;
    let net = state.store.get_network(&s.network_id).await?;
    if ctx.owns(&s.project_id) || networks::visible(ctx, &net) {
        Ok((s, net.project_id))
    } else {
        Err(subnet_not_found(id).into())
    }
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_reader("get_subnet").map_err(|_| deny("get_subnet"))?;
    let scope = if ctx.is_admin() { None } else { Some(ctx.project_id()?) };
    let net = q.all("network_id");
    let pushed = if net.len() == 1 { Some(net[0]) } else { None };
    let subnets = state.store.list_subnets(scope, pushed).await?;
    api::list(&state, &SCHEMA, &q, subnets.iter().map(subnet_json).collect(), &[])
}

pub async fn show(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, q: Query) -> JsonResult {
    ctx.require_reader("get_subnet").map_err(|_| deny("get_subnet"))?;
    let (s, _) = load_visible(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"subnet": api::select_fields(subnet_json(&s), &q)})))
}

/// `gateway_ip`: absent → None (caller decides), null → Some(None), address → Some(Some).
fn gateway(m: &Obj, net: &IpNet) -> ApiResult<Option<Option<IpAddr>>> {
    match m.get("gateway_ip") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => {
            let ip = ipam::parse_ip("gateway_ip", s)?;
            ipam::validate_gateway(net, ip)?;
            Ok(Some(Some(ip)))
        }
        Some(v) => Err(invalid("gateway_ip", format!("'{}' is not a valid IP address", api::shown(v)))),
    }
}

/// `allocation_pools`: `[{"start": …, "end": …}]` as ranges (not yet checked against the cidr).
fn pools(m: &Obj, net: &IpNet) -> ApiResult<Option<Vec<ipam::Range>>> {
    let v = ipam::net_version(net);
    match m.get("allocation_pools") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| {
                let start = p.get("start").and_then(Value::as_str);
                let end = p.get("end").and_then(Value::as_str);
                let keys_ok = p.as_object().is_some_and(|o| o.keys().all(|k| k == "start" || k == "end"));
                let (Some(start), Some(end), true) = (start, end, keys_ok) else {
                    return Err(invalid("allocation_pools", format!("Invalid data format for IP pool: '{p}'")));
                };
                let invalid_pool = || {
                    NetError::fault(
                        400,
                        "InvalidAllocationPool",
                        format!("The allocation pool {start}-{end} is not valid."),
                    )
                };
                let s: IpAddr = start.parse().map_err(|_| invalid_pool())?;
                let e: IpAddr = end.parse().map_err(|_| invalid_pool())?;
                if ipam::version_of(&s) != v || ipam::version_of(&e) != v {
                    return Err(invalid_pool().into());
                }
                Ok((ipam::to_u128(s), ipam::to_u128(e)))
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some),
        Some(other) => Err(invalid("allocation_pools", format!("Invalid data format for IP pool: '{other}'"))),
    }
}

fn nameservers(m: &Obj) -> ApiResult<Option<Vec<String>>> {
    let Some(list) = api::str_list(m, "dns_nameservers")? else {
        return Ok(None);
    };
    let mut out: Vec<String> = Vec::new();
    for s in &list {
        let ip: IpAddr = s.parse().map_err(|_| {
            invalid("dns_nameservers", format!("'{s}' is not a valid nameserver. '{s}' is not a valid IP address"))
        })?;
        let ip = ip.to_string();
        if out.contains(&ip) {
            return Err(invalid("dns_nameservers", format!("Duplicate nameserver '{s}'")));
        }
        out.push(ip);
    }
    if out.len() > MAX_DNS_NAMESERVERS {
        return Err(NetError::bad_request(format!(
            "Unable to complete operation for subnet. The number of DNS nameservers exceeds the limit {MAX_DNS_NAMESERVERS}."
        ))
        .into());
    }
    Ok(Some(out))
}

fn host_routes(m: &Obj) -> ApiResult<Option<Value>> {
    let list = match m.get("host_routes") {
        None => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(invalid("host_routes", format!("Invalid data format for hostroute: '{v}'")));
        }
    };
    let mut out: Vec<Value> = Vec::new();
    for r in list {
        let keys_ok =
            r.as_object().is_some_and(|o| o.len() == 2 && o.contains_key("destination") && o.contains_key("nexthop"));
        let (Some(dest), Some(hop), true) =
            (r.get("destination").and_then(Value::as_str), r.get("nexthop").and_then(Value::as_str), keys_ok)
        else {
            return Err(invalid("host_routes", format!("Invalid data format for hostroute: '{r}'")));
        };
        let dest = ipam::parse_cidr("host_routes", dest)?;
        let hop = ipam::parse_ip("host_routes", hop)?;
        let route = json!({"destination": dest.to_string(), "nexthop": hop.to_string()});
        if out.contains(&route) {
            return Err(invalid("host_routes", format!("Duplicate hostroute '{r}'")));
        }
        out.push(route);
    }
    if out.len() > MAX_HOST_ROUTES {
        return Err(NetError::bad_request(format!(
            "Unable to complete operation for subnet. The number of host routes exceeds the limit {MAX_HOST_ROUTES}."
        ))
        .into());
    }
    Ok(Some(Value::Array(out)))
}

fn ipv6_mode(m: &Obj, key: &str) -> ApiResult<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if IPV6_MODES.contains(&s.as_str()) => Ok(Some(s.clone())),
        Some(v) => Err(invalid(key, format!("'{}' is not in {IPV6_MODES:?}", api::shown(v)))),
    }
}

/// Attributes this server does not implement: accepted only at their empty values.
fn unsupported(m: &Obj) -> ApiResult<()> {
    if let Some(v) = m.get("subnetpool_id").filter(|v| !v.is_null()) {
        return Err(NetError::not_found(
            "SubnetPoolNotFound",
            format!("Subnet pool {} could not be found.", api::shown(v)),
        )
        .into());
    }
    if let Some(v) = m.get("segment_id").filter(|v| !v.is_null()) {
        return Err(
            NetError::not_found("SegmentNotFound", format!("Segment {} could not be found.", api::shown(v))).into()
        );
    }
    if api::boolean(m, "use_default_subnetpool")? == Some(true) {
        return Err(NetError::bad_request("No default subnet pool is configured.").into());
    }
    if m.get("prefixlen").is_some_and(|v| !v.is_null()) {
        return Err(NetError::bad_request("Bad subnets request: prefixlen requires a subnet pool.").into());
    }
    if api::str_list(m, "service_types")?.is_some_and(|l| !l.is_empty()) {
        return Err(invalid("service_types", "subnet service types are not supported"));
    }
    Ok(())
}

async fn build(state: &AppState, ctx: &Ctx, m: &Obj) -> ApiResult<Subnet> {
    api::check_post(m, &SCHEMA)?;
    let network_id = api::string(m, "network_id", 255)?
        .ok_or_else(|| api::bad("Failed to parse request. Required attribute 'network_id' not specified"))?;
    let network = networks::load_visible(state, ctx, &network_id).await?;
    if !ctx.owns(&network.project_id) {
        return Err(deny("create_subnet"));
    }
    let project = api::owner(ctx, m, "create_subnet")?;
    let version = match m.get("ip_version") {
        None => {
            return Err(api::bad("Failed to parse request. Required attribute 'ip_version' not specified"));
        }
        Some(v) => match api::to_int("ip_version", v)? {
            n @ (4 | 6) => n,
            n => return Err(invalid("ip_version", format!("'{n}' is not in [4, 6]"))),
        },
    };
    unsupported(m)?;
    let cidr_text = match m.get("cidr") {
        None | Some(Value::Null) => {
            return Err(NetError::bad_request(
                "Bad subnets request: A cidr must be specified in the absence of a subnet pool.",
            )
            .into());
        }
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(invalid("cidr", format!("'{}' is not a valid IP subnet", api::shown(v))));
        }
    };
    let net = ipam::parse_subnet_cidr("cidr", &cidr_text)?;
    if i64::from(ipam::net_version(&net)) != version {
        return Err(NetError::invalid_input(format!("cidr '{net}' does not match the ip_version '{version}'")).into());
    }
    if net.prefix_len() == 0 {
        return Err(NetError::invalid_input("0 is not allowed as CIDR prefix length").into());
    }
    let enable_dhcp = api::boolean(m, "enable_dhcp")?.unwrap_or(true);
    let ra_mode = ipv6_mode(m, "ipv6_ra_mode")?;
    let address_mode = ipv6_mode(m, "ipv6_address_mode")?;
    if version == 4 && (ra_mode.is_some() || address_mode.is_some()) {
        return Err(
            NetError::invalid_input("ipv6_ra_mode and ipv6_address_mode cannot be set on an IPv4 subnet").into()
        );
    }
    if let (Some(ra), Some(am)) = (&ra_mode, &address_mode)
        && ra != am
    {
        return Err(NetError::invalid_input(format!(
            "ipv6_ra_mode set to '{ra}' with ipv6_address_mode set to '{am}' is not valid. If both attributes are set, they must be the same value"
        ))
        .into());
    }
    if !enable_dhcp && (ra_mode.is_some() || address_mode.is_some()) {
        return Err(NetError::invalid_input(
            "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False",
        )
        .into());
    }
    let auto = matches!(address_mode.as_deref(), Some("slaac") | Some("dhcpv6-stateless"));
    if auto && net.prefix_len() != 64 {
        return Err(NetError::invalid_input(format!(
            "Invalid CIDR {net} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64"
        ))
        .into());
    }
    let gw = match gateway(m, &net)? {
        None => ipam::default_gateway(&net),
        Some(g) => g,
    };
    let ranges = match pools(m, &net)? {
        None => ipam::default_pools(&net, gw),
        Some(r) => {
            ipam::validate_pools(&net, &r, gw)?;
            r
        }
    };
    let mut s = Subnet::new(&project, &network_id, &net);
    s.name = api::string(m, "name", 255)?.unwrap_or_default();
    s.description = api::string(m, "description", 255)?.unwrap_or_default();
    s.gateway_ip = gw.map(|g| g.to_string());
    s.allocation_pools =
        serde_json::to_string(&pools_from_ranges(&ranges, ipam::net_version(&net))).unwrap_or_else(|_| "[]".into());
    s.dns_nameservers = serde_json::to_string(&nameservers(m)?.unwrap_or_default()).unwrap_or_else(|_| "[]".into());
    s.host_routes = host_routes(m)?.unwrap_or_else(|| json!([])).to_string();
    s.enable_dhcp = i64::from(enable_dhcp);
    s.ipv6_ra_mode = ra_mode;
    s.ipv6_address_mode = address_mode;
    Ok(s)
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    ctx.require_member("create_subnet").map_err(|_| deny("create_subnet"))?;
    let (items, bulk) = api::create_items(&body, &SCHEMA)?;
    let mut subnets = Vec::with_capacity(items.len());
    for m in &items {
        subnets.push(build(&state, &ctx, m).await?);
    }
    let created = state.store.create_subnets(subnets).await?;
    api::created(&SCHEMA, created.iter().map(|s| Value::Object(subnet_json(s))).collect(), bulk)
}

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let (s, net_owner) = load_visible(&state, &ctx, &id).await?;
    api::check_write(&ctx, &[&s.project_id, &net_owner], "update_subnet")?;
    let m = api::update_item(&body, &SCHEMA)?;
    api::check_put(&m, &SCHEMA)?;
    unsupported(&m)?;
    let net = s.net().ok_or_else(|| api::bad(format!("Invalid cidr {}", s.cidr)))?;
    let new_gw = gateway(&m, &net)?;
    let new_pools = pools(&m, &net)?;
    if new_gw.is_some() || new_pools.is_some() {
        let gw = match new_gw {
            Some(g) => g,
            None => s.gateway_ip.as_deref().and_then(|g| g.parse().ok()),
        };
        let ranges = new_pools.clone().unwrap_or_else(|| s.pool_ranges());
        ipam::validate_pools(&net, &ranges, gw)?;
    }
    let u = SubnetUpdate {
        name: api::string(&m, "name", 255)?,
        description: api::string(&m, "description", 255)?,
        gateway_ip: new_gw.map(|g| g.map(|ip| ip.to_string())),
        allocation_pools: new_pools.map(|r| pools_from_ranges(&r, ipam::net_version(&net))),
        dns_nameservers: nameservers(&m)?,
        host_routes: host_routes(&m)?,
        enable_dhcp: api::boolean(&m, "enable_dhcp")?,
    };
    if u.enable_dhcp == Some(false) && (s.ipv6_ra_mode.is_some() || s.ipv6_address_mode.is_some()) {
        return Err(NetError::invalid_input("Cannot disable enable_dhcp with ipv6 attributes set").into());
    }
    let updated = state.store.update_subnet(&id, &u).await?;
    Ok(axum::Json(json!({"subnet": subnet_json(&updated)})))
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let (s, net_owner) = load_visible(&state, &ctx, &id).await?;
    api::check_write(&ctx, &[&s.project_id, &net_owner], "delete_subnet")?;
    state.store.delete_subnet(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
