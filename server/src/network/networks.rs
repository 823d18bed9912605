//! `/v2.0/networks`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::api::{self, Column, JsonResult, Kind, Obj, Schema, deny};
use crate::auth::Ctx;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::network::{NetError, Network, NetworkUpdate, network_not_found};

/// The only availability zone (compute's default zone).
pub const AZ: &str = "nova";
pub const MIN_MTU: i64 = 68;
pub const MAX_MTU: i64 = 9000;

pub(crate) const SCHEMA: Schema = Schema {
    singular: "network",
    plural: "networks",
    title: "Network",
    not_found: "NetworkNotFound",
    attrs: &[
        ("id", Kind::Str),
        ("name", Kind::Str),
        ("tenant_id", Kind::Str),
        ("project_id", Kind::Str),
        ("admin_state_up", Kind::Bool),
        ("status", Kind::Str),
        ("shared", Kind::Bool),
        ("subnets", Kind::List),
        ("mtu", Kind::Int),
        ("availability_zone_hints", Kind::List),
        ("availability_zones", Kind::List),
        ("port_security_enabled", Kind::Bool),
        ("description", Kind::Str),
        ("tags", Kind::List),
        ("created_at", Kind::Str),
        ("updated_at", Kind::Str),
        ("revision_number", Kind::Int),
        ("ipv4_address_scope", Kind::Str),
        ("ipv6_address_scope", Kind::Str),
        ("l2_adjacency", Kind::Bool),
    ],
    post: &[
        "name",
        "tenant_id",
        "project_id",
        "admin_state_up",
        "shared",
        "mtu",
        "availability_zone_hints",
        "port_security_enabled",
        "description",
    ],
    put: &["name", "admin_state_up", "shared", "mtu", "port_security_enabled", "description"],
};

pub(crate) fn network_json(n: &Network) -> Obj {
    let v = json!({
        "id": n.id,
        "name": n.name,
        "tenant_id": n.project_id,
        "project_id": n.project_id,
        "admin_state_up": n.admin_state_up != 0,
        "status": n.status,
        "shared": n.shared != 0,
        "subnets": n.subnets,
        "mtu": n.mtu,
        "availability_zone_hints": n.az_hints(),
        "availability_zones": [AZ],
        "port_security_enabled": n.port_security_enabled != 0,
        "description": n.description,
        "tags": n.tag_list(),
        "created_at": api::time(&n.created_at),
        "updated_at": api::time(&n.updated_at),
        "revision_number": n.revision_number,
        "ipv4_address_scope": null,
        "ipv6_address_scope": null,
        "l2_adjacency": true,
    });
    match v {
        Value::Object(o) => o,
        _ => Obj::new(),
    }
}

/// Whether the caller sees a network: admins all, others their own, shared and external ones.
pub(crate) fn visible(ctx: &Ctx, n: &Network) -> bool {
    ctx.owns(&n.project_id) || n.shared != 0 || n.external != 0
}

/// A network the caller may see, or NetworkNotFound.
pub(crate) async fn load_visible(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Network> {
    let n = state.store.get_network(id).await?;
    if visible(ctx, &n) { Ok(n) } else { Err(network_not_found(id).into()) }
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_reader("get_network").map_err(|_| deny("get_network"))?;
    let scope = if ctx.is_admin() { None } else { Some(ctx.project_id()?) };
    let req = api::list_request(&state, &SCHEMA, &q, &[])?;
    if let Some(spec) = req.sql(&SCHEMA, COLUMNS) {
        let nets = state.store.list_networks_page(scope, &spec).await?.ok_or_else(|| req.marker_not_found(&SCHEMA))?;
        return req.respond(&state, &SCHEMA, &q, nets.iter().map(network_json).collect());
    }
    let nets = state.store.list_networks(scope).await?;
    api::list_in_memory(&state, &SCHEMA, &q, &req, nets.iter().map(network_json).collect())
}

/// The attributes lists filter and sort on in SQL (the others, in memory).
const COLUMNS: &[Column] = &[
    Column { attr: "id", expr: "id", filter: true },
    Column { attr: "name", expr: "name", filter: true },
    Column { attr: "tenant_id", expr: "project_id", filter: true },
    Column { attr: "project_id", expr: "project_id", filter: true },
    Column { attr: "admin_state_up", expr: "admin_state_up", filter: true },
    Column { attr: "status", expr: "status", filter: true },
    Column { attr: "shared", expr: "shared", filter: true },
    Column { attr: "mtu", expr: "mtu", filter: true },
    Column { attr: "port_security_enabled", expr: "port_security_enabled", filter: true },
    Column { attr: "description", expr: "description", filter: true },
    Column { attr: "revision_number", expr: "revision_number", filter: true },
    Column { attr: "created_at", expr: "substr(created_at, 1, 19)", filter: false },
    Column { attr: "updated_at", expr: "substr(updated_at, 1, 19)", filter: false },
];

pub async fn show(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, q: Query) -> JsonResult {
    ctx.require_reader("get_network").map_err(|_| deny("get_network"))?;
    let n = load_visible(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"network": api::select_fields(network_json(&n), &q)})))
}

fn mtu(m: &Obj) -> ApiResult<Option<i64>> {
    match api::integer(m, "mtu")? {
        Some(v) if v < MIN_MTU => {
            Err(api::invalid("mtu", format!("'{v}' is too small - must be at least '{MIN_MTU}'")))
        }
        Some(v) if v > MAX_MTU => {
            Err(NetError::invalid_input(format!("Requested MTU is too big, maximum is {MAX_MTU}")).into())
        }
        other => Ok(other),
    }
}

/// Admin-only attributes: setting them to anything but the default needs the admin role.
fn admin_flag(ctx: &Ctx, m: &Obj, key: &str, action: &str, on_update: bool) -> ApiResult<Option<bool>> {
    let v = api::boolean(m, key)?;
    if (v == Some(true) || (on_update && v.is_some())) && !ctx.is_admin() {
        return Err(deny(&format!("{action}:{key}")));
    }
    Ok(v)
}

fn build(ctx: &Ctx, m: &Obj) -> ApiResult<Network> {
    api::check_post(m, &SCHEMA)?;
    let project = api::owner(ctx, m, "create_network")?;
    let mut n = Network::new(&project);
    if let Some(v) = api::string(m, "name", 255)? {
        n.name = v;
    }
    if let Some(v) = api::string(m, "description", 255)? {
        n.description = v;
    }
    if let Some(b) = api::boolean(m, "admin_state_up")? {
        n.admin_state_up = i64::from(b);
    }
    if let Some(b) = admin_flag(ctx, m, "shared", "create_network", false)? {
        n.shared = i64::from(b);
    }
    if let Some(b) = api::boolean(m, "port_security_enabled")? {
        n.port_security_enabled = i64::from(b);
    }
    if let Some(v) = mtu(m)? {
        n.mtu = v;
    }
    if let Some(hints) = api::str_list(m, "availability_zone_hints")? {
        if let Some(az) = hints.iter().find(|h| h.as_str() != AZ) {
            return Err(NetError::not_found(
                "AvailabilityZoneNotFound",
                format!("AvailabilityZone {az} could not be found."),
            )
            .into());
        }
        n.availability_zone_hints = serde_json::to_string(&hints).unwrap_or_else(|_| "[]".into());
    }
    Ok(n)
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(body): Json<Value>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    ctx.require_member("create_network").map_err(|_| deny("create_network"))?;
    let (items, bulk) = api::create_items(&body, &SCHEMA)?;
    let nets = items.iter().map(|m| build(&ctx, m)).collect::<ApiResult<Vec<_>>>()?;
    let created = state.store.create_networks(nets).await?;
    api::created(&SCHEMA, created.iter().map(|n| Value::Object(network_json(n))).collect(), bulk)
}

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let n = load_visible(&state, &ctx, &id).await?;
    api::check_write(&ctx, &[&n.project_id], "update_network")?;
    let m = api::update_item(&body, &SCHEMA)?;
    api::check_put(&m, &SCHEMA)?;
    let u = NetworkUpdate {
        name: api::string(&m, "name", 255)?,
        description: api::string(&m, "description", 255)?,
        admin_state_up: api::boolean(&m, "admin_state_up")?,
        shared: admin_flag(&ctx, &m, "shared", "update_network", true)?,
        mtu: mtu(&m)?,
        port_security_enabled: api::boolean(&m, "port_security_enabled")?,
    };
    let updated = state.store.update_network(&id, &u).await?;
    Ok(axum::Json(json!({"network": network_json(&updated)})))
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let n = load_visible(&state, &ctx, &id).await?;
    api::check_write(&ctx, &[&n.project_id], "delete_network")?;
    state.store.delete_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
