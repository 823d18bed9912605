//! Nova's deprecated security group proxy, `/os-security-groups` and
//! `/os-security-group-rules` (up to microversion 2.35, 404 above, as Nova): Nova's shapes over
//! the Neutron groups in `store::security_groups`. Nova shows ingress rules only, and answers
//! Neutron's conflicts (group in use, the default group) with 400.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use ipnet::IpNet;
use serde_json::{Map, Value, json};

use super::ApiVersion;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::network::NetError;
use crate::store::security_groups::{GroupUpdate, NewRule, Rule, SecurityGroup, protocol_number};

type JsonResult = ApiResult<axum::Json<Value>>;

fn available(v: ApiVersion) -> ApiResult<()> {
    if v.at_least(36) { Err(ApiError::not_found("The resource could not be found.")) } else { Ok(()) }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// Neutron's faults as Nova's proxy answers them: conflicts become 400.
fn from_neutron(e: NetError) -> ApiError {
    match e {
        NetError::Fault { status: 409, message, .. } => bad(message),
        NetError::Fault { status: 404, .. } => ApiError::not_found(e.to_string()),
        other => other.into(),
    }
}

/// Nova's rule view (`_convert_to_nova_security_group_rule_format` + `_format_security_group_rule`).
fn rule_view(r: &Rule, groups: &[SecurityGroup]) -> Value {
    let (from, to) = match (&r.protocol, r.port_range_min, r.port_range_max) {
        (Some(p), None, None) if p == "tcp" || p == "udp" => (json!(1), json!(65535)),
        (Some(_), None, None) => (json!(-1), json!(-1)),
        (_, a, b) => (json!(a), json!(b)),
    };
    let (group, ip_range) = match &r.remote_group_id {
        Some(g) => {
            let peer = groups.iter().find(|x| x.id == *g);
            (json!({"name": peer.map(|p| p.name.clone()), "tenant_id": peer.map(|p| p.project_id.clone())}), json!({}))
        }
        None => {
            let any = if r.ethertype == "IPv6" { "::/0" } else { "0.0.0.0/0" };
            (json!({}), json!({"cidr": r.remote_ip_prefix.clone().unwrap_or_else(|| any.to_string())}))
        }
    };
    json!({
        "id": r.id,
        "parent_group_id": r.security_group_id,
        "ip_protocol": r.protocol,
        "from_port": from,
        "to_port": to,
        "group": group,
        "ip_range": ip_range,
    })
}

fn group_view(g: &SecurityGroup, groups: &[SecurityGroup]) -> Value {
    json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "tenant_id": g.project_id,
        "rules": g.rules.iter().filter(|r| r.direction == "ingress").map(|r| rule_view(r, groups)).collect::<Vec<_>>(),
    })
}

/// A group of the caller's project (admins: any), or 404 as Nova words it.
async fn load(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<SecurityGroup> {
    let missing = || ApiError::not_found(format!("Security group {id} not found."));
    let g = state.store.get_security_group(id).await.map_err(|_| missing())?;
    if ctx.owns(&g.project_id) { Ok(g) } else { Err(missing()) }
}

pub async fn list(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    q: Query,
) -> JsonResult {
    available(v)?;
    ctx.require_reader("os_compute_api:os-security-groups:get")?;
    let project = ctx.project_id()?.to_string();
    state.store.ensure_default_security_group(&project).await?;
    let all_tenants = q.get("all_tenants").is_some_and(|v| !matches!(v, "0" | "false" | "False"));
    let scope = if all_tenants && ctx.is_admin() { None } else { Some(project.as_str()) };
    let groups = state.store.list_security_groups(scope).await?;
    let views: Vec<Value> = groups.iter().map(|g| group_view(g, &groups)).collect();
    Ok(axum::Json(json!({"security_groups": views})))
}

pub async fn show(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> JsonResult {
    available(v)?;
    ctx.require_reader("os_compute_api:os-security-groups:show")?;
    let g = load(&state, &ctx, &id).await?;
    let peers = state.store.list_security_groups(Some(&g.project_id)).await?;
    Ok(axum::Json(json!({"security_group": group_view(&g, &peers)})))
}

/// `name` and `description`: required non-blank strings of at most 255 characters.
fn field(o: &Map<String, Value>, key: &str, required: bool) -> ApiResult<Option<String>> {
    match o.get(key) {
        None if !required => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 => Ok(Some(s.clone())),
        Some(Value::String(s)) if key == "description" && s.is_empty() => Ok(Some(String::new())),
        _ => Err(bad(format!("Security group {key} is invalid or missing."))),
    }
}

fn body_of<'a>(body: &'a Value, key: &str) -> ApiResult<&'a Map<String, Value>> {
    body.get(key).and_then(Value::as_object).ok_or_else(|| bad(format!("Missing parameter {key}")))
}

pub async fn create(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Json(body): Json<Value>,
) -> JsonResult {
    available(v)?;
    ctx.require_member("os_compute_api:os-security-groups:create")?;
    let o = body_of(&body, "security_group")?;
    let name = field(o, "name", true)?.unwrap_or_default();
    let description = field(o, "description", true)?.unwrap_or_default();
    if name.eq_ignore_ascii_case("default") {
        return Err(bad("Default security group already exists."));
    }
    let project = ctx.project_id()?.to_string();
    let g = state.store.create_security_group(&project, &name, &description, true).await.map_err(from_neutron)?;
    Ok(axum::Json(json!({"security_group": group_view(&g, &[])})))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    available(v)?;
    ctx.require_member("os_compute_api:os-security-groups:update")?;
    let o = body_of(&body, "security_group")?;
    let u =
        GroupUpdate { name: field(o, "name", false)?, description: field(o, "description", false)?, stateful: None };
    load(&state, &ctx, &id).await?;
    let g = state.store.update_security_group(&id, &u).await.map_err(from_neutron)?;
    Ok(axum::Json(json!({"security_group": group_view(&g, &[])})))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    available(v)?;
    ctx.require_member("os_compute_api:os-security-groups:delete")?;
    load(&state, &ctx, &id).await?;
    state.store.delete_security_group(&id, ctx.is_admin()).await.map_err(from_neutron)?;
    Ok(StatusCode::ACCEPTED)
}

/// `DELETE /os-security-groups` (no id): there is no such group.
pub async fn delete_none() -> ApiResult<StatusCode> {
    Err(ApiError::not_found("Security group  not found."))
}

fn port_of(o: &Map<String, Value>, key: &str) -> ApiResult<Option<i64>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| bad(format!("Invalid {key}"))),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad(format!("Invalid {key} {s}"))),
        Some(_) => Err(bad(format!("Invalid {key}"))),
    }
}

/// A Nova rule request as a Neutron rule (Nova's `_rule_args_to_dict` and range checks).
fn to_rule(o: &Map<String, Value>, group: &SecurityGroup) -> ApiResult<NewRule> {
    let protocol = match o.get("ip_protocol") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.to_ascii_lowercase()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(bad(format!("Invalid IP protocol {other}."))),
    };
    let number = match protocol.as_deref() {
        None => None,
        Some(p) => Some(
            protocol_number(p)
                .filter(|_| ["tcp", "udp", "icmp"].contains(&p) || p.parse::<u8>().is_ok())
                .ok_or_else(|| bad(format!("Invalid IP protocol {p}.")))?,
        ),
    };
    let mut from = port_of(o, "from_port")?;
    let mut to = port_of(o, "to_port")?;
    match number {
        Some(6 | 17) => {
            let (f, t) = (from.unwrap_or(1), to.unwrap_or(65535));
            if !(1..=65535).contains(&f) || !(1..=65535).contains(&t) || f > t {
                return Err(bad(format!("Invalid port range {f}:{t}. Valid TCP ports should be between 1-65535")));
            }
            if (f, t) == (1, 65535) {
                (from, to) = (None, None);
            } else {
                (from, to) = (Some(f), Some(t));
            }
        }
        Some(1) => {
            let (f, t) = (from.unwrap_or(-1), to.unwrap_or(-1));
            if !(-1..=255).contains(&f) || !(-1..=255).contains(&t) || (f == -1 && t != -1) {
                return Err(bad(format!("Invalid port range {f}:{t}. ICMP type and code must be -1 to 255")));
            }
            from = (f != -1).then_some(f);
            to = (t != -1).then_some(t);
        }
        _ => {
            if from.is_some_and(|f| f != -1) || to.is_some_and(|t| t != -1) {
                return Err(bad("Ports are only supported for TCP, UDP and ICMP."));
            }
            (from, to) = (None, None);
        }
    }
    let cidr = match o.get("cidr") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.parse::<IpNet>().map_err(|_| bad(format!("Invalid cidr {s}.")))?.to_string()),
        Some(other) => return Err(bad(format!("Invalid cidr {other}."))),
    };
    let remote = match o.get("group_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(bad(format!("Invalid group_id {other}."))),
    };
    if cidr.is_some() && remote.is_some() {
        return Err(bad("Only one of cidr or group_id may be given."));
    }
    let ethertype = if cidr.as_deref().is_some_and(|c| c.contains(':')) { "IPv6" } else { "IPv4" };
    Ok(NewRule {
        security_group_id: group.id.clone(),
        project_id: group.project_id.clone(),
        direction: "ingress".into(),
        ethertype: ethertype.into(),
        protocol,
        port_range_min: from,
        port_range_max: to,
        // Nova's "anywhere" is no prefix in Neutron.
        remote_ip_prefix: cidr.filter(|c| c != "0.0.0.0/0" && c != "::/0"),
        remote_group_id: remote,
        description: String::new(),
    })
}

pub async fn create_rule(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Json(body): Json<Value>,
) -> JsonResult {
    available(v)?;
    ctx.require_member("os_compute_api:os-security-group-rules:create")?;
    let o = body_of(&body, "security_group_rule")?;
    let parent = o
        .get("parent_group_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("Invalid input for field/attribute parent_group_id."))?;
    if uuid::Uuid::parse_str(parent).is_err() {
        return Err(bad(format!("Invalid security group id {parent}.")));
    }
    let group = load(&state, &ctx, parent).await?;
    let rule = to_rule(o, &group)?;
    if let Some(remote) = &rule.remote_group_id {
        load(&state, &ctx, remote).await?;
    }
    let created = state.store.create_security_group_rules(vec![rule]).await.map_err(|e| match e {
        NetError::Fault { kind: "SecurityGroupRuleExists", .. } => {
            bad(format!("This rule already exists in group {parent}"))
        }
        other => from_neutron(other),
    })?;
    let peers = state.store.list_security_groups(Some(&group.project_id)).await?;
    let view = created.first().map(|r| rule_view(r, &peers)).unwrap_or(Value::Null);
    Ok(axum::Json(json!({"security_group_rule": view})))
}

pub async fn delete_rule(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    available(v)?;
    ctx.require_member("os_compute_api:os-security-group-rules:delete")?;
    let missing = || ApiError::not_found(format!("Rule ({id}) not found"));
    let r = state.store.get_security_group_rule(&id).await.map_err(|_| missing())?;
    if !ctx.owns(&r.project_id) {
        return Err(missing());
    }
    state.store.delete_security_group_rule(&id).await.map_err(from_neutron)?;
    Ok(StatusCode::ACCEPTED)
}
