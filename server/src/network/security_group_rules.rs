//! `/v2.0/security-group-rules`: validated and made canonical as Neutron's
//! `securitygroups_db` does (legacy IPv6 ICMP names, the whole port range meaning "any port",
//! ICMP type/code bounds), duplicates refused with `SecurityGroupRuleExists`.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use ipnet::IpNet;
use serde_json::{Value, json};

use super::api::{self, JsonResult, Kind, Obj, Schema, deny, invalid};
use crate::auth::Ctx;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::network::NetError;
use crate::store::security_groups::{NewRule, PROTOCOLS, Rule, protocol_number, rule_not_found};

pub(crate) const SCHEMA: Schema = Schema {
    singular: "security_group_rule",
    plural: "security_group_rules",
    title: "Security group rule",
    not_found: "SecurityGroupRuleNotFound",
    attrs: &[
        ("id", Kind::Str),
        ("security_group_id", Kind::Str),
        ("tenant_id", Kind::Str),
        ("project_id", Kind::Str),
        ("direction", Kind::Str),
        ("ethertype", Kind::Str),
        ("protocol", Kind::Str),
        ("port_range_min", Kind::Int),
        ("port_range_max", Kind::Int),
        ("remote_ip_prefix", Kind::Str),
        ("remote_group_id", Kind::Str),
        ("normalized_cidr", Kind::Str),
        ("description", Kind::Str),
        ("created_at", Kind::Str),
        ("updated_at", Kind::Str),
        ("revision_number", Kind::Int),
    ],
    post: &[
        "security_group_id",
        "tenant_id",
        "project_id",
        "direction",
        "ethertype",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
        "remote_group_id",
        "description",
    ],
    put: &[],
};

/// Protocols whose rules take a port range (Neutron's `SG_PORT_PROTO_NUMS`).
const PORT_PROTOCOLS: [u8; 4] = [33, 132, 6, 17];

pub(crate) fn rule_json(r: &Rule) -> Obj {
    let normalized = r.remote_ip_prefix.as_deref().and_then(|p| p.parse::<IpNet>().ok()).map(|n| n.trunc().to_string());
    let v = json!({
        "id": r.id,
        "security_group_id": r.security_group_id,
        "tenant_id": r.project_id,
        "project_id": r.project_id,
        "direction": r.direction,
        "ethertype": r.ethertype,
        "protocol": r.protocol,
        "port_range_min": r.port_range_min,
        "port_range_max": r.port_range_max,
        "remote_ip_prefix": r.remote_ip_prefix,
        "remote_group_id": r.remote_group_id,
        "normalized_cidr": normalized,
        "description": r.description,
        "created_at": api::time(&r.created_at),
        "updated_at": api::time(&r.updated_at),
        "revision_number": r.revision_number,
    });
    match v {
        Value::Object(o) => o,
        _ => Obj::new(),
    }
}

/// A rule the caller may see (one of its project's groups; admins any).
async fn load_visible(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Rule> {
    let r = state.store.get_security_group_rule(id).await?;
    if ctx.owns(&r.project_id) { Ok(r) } else { Err(rule_not_found(id).into()) }
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_reader("get_security_group_rule").map_err(|_| deny("get_security_group_rule"))?;
    if let Some(p) = ctx.project_id().ok().filter(|p| !p.is_empty()) {
        state.store.ensure_default_security_group(p).await?;
    }
    let scope = if ctx.is_admin() { None } else { Some(ctx.project_id()?) };
    let rules = state.store.list_security_group_rules(scope).await?;
    api::list(&state, &SCHEMA, &q, rules.iter().map(rule_json).collect(), &[])
}

pub async fn show(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, q: Query) -> JsonResult {
    ctx.require_reader("get_security_group_rule").map_err(|_| deny("get_security_group_rule"))?;
    let r = load_visible(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"security_group_rule": api::select_fields(rule_json(&r), &q)})))
}

fn invalid_input(kind: &'static str, message: impl Into<String>) -> NetError {
    NetError::fault(400, kind, message)
}

/// Neutron's `convert_protocol`: `None`/`any` is any protocol; a number 0–255 stays as given
/// (as text); a known name is lower-cased.
fn protocol(v: Option<&Value>) -> ApiResult<Option<String>> {
    let refuse = |p: &str| -> crate::error::ApiError {
        let names: Vec<String> = ["None".to_string(), "'any'".to_string()]
            .into_iter()
            .chain(PROTOCOLS.iter().map(|(n, _)| format!("'{n}'")))
            .collect();
        invalid_input(
            "SecurityGroupRuleInvalidProtocol",
            format!(
                "Security group rule protocol {p} not supported. Only protocol values [{}] and integer \
                 representations [0 to 255] are supported.",
                names.join(", ")
            ),
        )
        .into()
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i @ 0..=255) => Ok(Some(i.to_string())),
            _ => Err(refuse(&n.to_string())),
        },
        Some(Value::String(s)) => {
            if s.eq_ignore_ascii_case("any") {
                return Ok(None);
            }
            if let Ok(i) = s.parse::<i64>() {
                return if (0..=255).contains(&i) { Ok(Some(s.clone())) } else { Err(refuse(s)) };
            }
            let lower = s.to_ascii_lowercase();
            if PROTOCOLS.iter().any(|(n, _)| *n == lower) { Ok(Some(lower)) } else { Err(refuse(s)) }
        }
        Some(other) => Err(refuse(&api::shown(other))),
    }
}

/// Neutron's `convert_validate_port_value`: 0–65535 or absent.
fn port(m: &Obj, key: &str) -> ApiResult<Option<i64>> {
    let bad =
        |v: &Value| invalid_input("SecurityGroupInvalidPortValue", format!("Invalid value for port {}", api::shown(v)));
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => match n.as_i64() {
            Some(p @ 0..=65535) => Ok(Some(p)),
            _ => Err(bad(v).into()),
        },
        Some(v @ Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(p @ 0..=65535) => Ok(Some(p)),
            _ => Err(bad(v).into()),
        },
        Some(v) => Err(bad(v).into()),
    }
}

/// `remote_ip_prefix` with its mask (an address alone becomes a /32 or /128), as given
/// otherwise (Neutron keeps host bits; `normalized_cidr` shows the network).
fn ip_prefix(m: &Obj) -> ApiResult<Option<IpNet>> {
    match m.get("remote_ip_prefix") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(Some)
            .map_err(|_| invalid_input("InvalidCIDR", format!("Invalid CIDR {s} given as IP prefix.")).into()),
        Some(v) => {
            Err(invalid_input("InvalidCIDR", format!("Invalid CIDR {} given as IP prefix.", api::shown(v))).into())
        }
    }
}

/// Neutron's `_validate_port_range` (after `_make_canonical_port_range`).
fn check_ports(protocol: Option<&str>, min: Option<i64>, max: Option<i64>) -> ApiResult<()> {
    if min.is_none() && max.is_none() {
        return Ok(());
    }
    let Some(p) = protocol else {
        return Err(invalid_input(
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.",
        )
        .into());
    };
    let number = protocol_number(p);
    if number.is_some_and(|n| PORT_PROTOCOLS.contains(&n)) {
        if min == Some(0) || max == Some(0) {
            return Err(invalid_input("SecurityGroupInvalidPortValue", "Invalid value for port 0").into());
        }
        match (min, max) {
            (Some(a), Some(b)) if a <= b => Ok(()),
            _ => Err(invalid_input(
                "SecurityGroupInvalidPortRange",
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
            )
            .into()),
        }
    } else if matches!(number, Some(1 | 58)) {
        for (value, attr, field) in [(min, "port_range_min", "type"), (max, "port_range_max", "code")] {
            if let Some(v) = value
                && !(0..=255).contains(&v)
            {
                return Err(invalid_input(
                    "SecurityGroupInvalidIcmpValue",
                    format!("Invalid value for ICMP {field} ({attr}) {v}. It must be 0 to 255."),
                )
                .into());
            }
        }
        if let (None, Some(code)) = (min, max) {
            return Err(invalid_input(
                "SecurityGroupMissingIcmpType",
                format!("ICMP code (port-range-max) {code} is provided but ICMP type (port-range-min) is missing."),
            )
            .into());
        }
        Ok(())
    } else {
        Err(invalid_input(
            "SecurityGroupInvalidProtocolForPort",
            format!(
                "Ports cannot be specified for protocol {}. Ports are only supported for DCCP, SCTP, TCP, UDP.",
                number.map_or(p.to_string(), |n| n.to_string())
            ),
        )
        .into())
    }
}

/// Protocols that only exist over IPv6 (Neutron's `_validate_ethertype_and_protocol`).
fn ipv6_only(p: &str) -> bool {
    [
        "ipv6-encap",
        "ipv6-frag",
        "ipv6-icmp",
        "icmpv6",
        "ipv6-nonxt",
        "ipv6-opts",
        "ipv6-route",
        "41",
        "44",
        "58",
        "59",
        "60",
        "43",
    ]
    .contains(&p)
}

/// Parses and checks one rule in Neutron's order; the store then checks the groups exist and
/// that the rule is new.
async fn build(state: &AppState, ctx: &Ctx, m: &Obj) -> ApiResult<NewRule> {
    let mut m = m.clone();
    // The address-group extension is not offered: a null is what clients send for "none".
    match m.get("remote_address_group_id") {
        None => {}
        Some(Value::Null) => {
            m.remove("remote_address_group_id");
        }
        Some(_) => {
            return Err(api::bad(
                "Address groups are not supported (the address-group extension is not enabled): \
                 remote_address_group_id cannot be set",
            ));
        }
    }
    api::check_post(&m, &SCHEMA)?;
    let group_id = api::string(&m, "security_group_id", 36)?
        .ok_or_else(|| api::bad("Failed to parse request. Required attribute 'security_group_id' not specified"))?;
    let direction = api::string(&m, "direction", 255)?
        .ok_or_else(|| api::bad("Failed to parse request. Required attribute 'direction' not specified"))?;
    if direction != "ingress" && direction != "egress" {
        return Err(invalid("direction", format!("'{direction}' is not in ['ingress', 'egress']")));
    }
    let ethertype = match m.get("ethertype") {
        None | Some(Value::Null) => "IPv4".to_string(),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("ipv4") => "IPv4".to_string(),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("ipv6") => "IPv6".to_string(),
        Some(v) => {
            return Err(invalid_input(
                "SecurityGroupRuleInvalidEtherType",
                format!(
                    "Security group rule for ethertype '{}' not supported. Allowed values are ['IPv4', 'IPv6'].",
                    api::shown(v)
                ),
            )
            .into());
        }
    };
    let mut protocol = protocol(m.get("protocol"))?;
    let mut min = port(&m, "port_range_min")?;
    let mut max = port(&m, "port_range_max")?;
    let prefix = ip_prefix(&m)?;
    let remote_group_id = match m.get("remote_group_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => return Err(invalid("remote_group_id", format!("'{}' is not a valid string", api::shown(v)))),
    };
    let description = api::string(&m, "description", 255)?.unwrap_or_default();
    // Canonical forms: IPv6 ICMP by its one name (or number), the whole range as no range.
    if ethertype == "IPv6" {
        match protocol.as_deref() {
            Some("icmp" | "icmpv6") => protocol = Some("ipv6-icmp".into()),
            Some("1") => protocol = Some("58".into()),
            _ => {}
        }
    }
    if min == Some(1) && max == Some(65535) {
        min = None;
        max = None;
    }
    check_ports(protocol.as_deref(), min, max)?;
    if let Some(p) = &prefix {
        let version = if p.addr().is_ipv4() { "IPv4" } else { "IPv6" };
        if version != ethertype {
            return Err(invalid_input(
                "SecurityGroupRuleParameterConflict",
                format!(
                    "Conflicting value ethertype {ethertype} for CIDR {}",
                    m.get("remote_ip_prefix").and_then(Value::as_str).unwrap_or_default()
                ),
            )
            .into());
        }
    }
    if let Some(p) = protocol.as_deref()
        && ethertype == "IPv4"
        && ipv6_only(p)
    {
        return Err(invalid_input(
            "SecurityGroupEthertypeConflictWithProtocol",
            format!("Invalid ethertype {ethertype} for protocol {p}."),
        )
        .into());
    }
    if prefix.is_some() && remote_group_id.is_some() {
        return Err(invalid_input(
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may be provided.",
        )
        .into());
    }
    // The rule belongs to its group's project: an admin naming no project acts for it.
    let explicit = m.contains_key("project_id") || m.contains_key("tenant_id");
    let project = if ctx.is_admin() && !explicit {
        match state.store.get_security_group(&group_id).await {
            Ok(g) => g.project_id,
            Err(_) => api::owner(ctx, &m, "create_security_group_rule")?,
        }
    } else {
        api::owner(ctx, &m, "create_security_group_rule")?
    };
    Ok(NewRule {
        security_group_id: group_id,
        project_id: project,
        direction,
        ethertype,
        protocol,
        port_range_min: min,
        port_range_max: max,
        remote_ip_prefix: prefix.map(|p| p.to_string()),
        remote_group_id,
        description,
    })
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    ctx.require_member("create_security_group_rule").map_err(|_| deny("create_security_group_rule"))?;
    let (items, bulk) = api::create_items(&body, &SCHEMA)?;
    let mut rules = Vec::with_capacity(items.len());
    for m in &items {
        rules.push(build(&state, &ctx, m).await?);
    }
    let created = state.store.create_security_group_rules(rules).await?;
    api::created(&SCHEMA, created.iter().map(|r| Value::Object(rule_json(r))).collect(), bulk)
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let r = load_visible(&state, &ctx, &id).await?;
    api::check_write(&ctx, &[&r.project_id], "delete_security_group_rule")?;
    state.store.delete_security_group_rule(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
