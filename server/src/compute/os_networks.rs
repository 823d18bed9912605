//! `os-networks` and `os-tenant-networks`: Nova's read-only views of the Neutron networks a
//! project can use, for the clients of the nova-network days (microversions 2.1–2.35; 404 from
//! 2.36). Creating, deleting or associating networks through Nova was removed (410 Gone).

use axum::Extension;
use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::ApiVersion;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::network::Network;

type JsonResult = ApiResult<axum::Json<Value>>;

/// The last microversion that proxies networks (`MAX_PROXY_API_SUPPORT_VERSION`).
const LAST: u32 = 35;

fn check_version(v: ApiVersion) -> ApiResult<()> {
    if v.at_least(LAST + 1) { Err(ApiError::not_found("The resource could not be found.")) } else { Ok(()) }
}

/// Nova's `network_dict` for a Neutron network: `id` and `label` are all it knows; every
/// other nova-network field is null (admins see the admin fields, null too).
fn os_network(ctx: &Ctx, n: &Network) -> Value {
    const FIELDS: [&str; 9] =
        ["cidr", "netmask", "gateway", "broadcast", "dns1", "dns2", "cidr_v6", "gateway_v6", "netmask_v6"];
    const ADMIN_FIELDS: [&str; 21] = [
        "created_at",
        "updated_at",
        "deleted_at",
        "deleted",
        "injected",
        "bridge",
        "vlan",
        "vpn_public_address",
        "vpn_public_port",
        "vpn_private_address",
        "dhcp_start",
        "project_id",
        "host",
        "bridge_interface",
        "multi_host",
        "priority",
        "rxtx_base",
        "mtu",
        "dhcp_server",
        "enable_dhcp",
        "share_address",
    ];
    let mut o = Map::new();
    o.insert("id".into(), json!(n.id));
    o.insert("label".into(), json!(n.name));
    let admin: &[&str] = if ctx.is_admin() { &ADMIN_FIELDS } else { &[] };
    for f in FIELDS.iter().chain(admin) {
        o.insert((*f).into(), Value::Null);
    }
    Value::Object(o)
}

/// `os-tenant-networks`' shape (its `cidr` is the string "None", as Nova has always sent).
fn tenant_network(n: &Network) -> Value {
    json!({"id": n.id, "cidr": "None", "label": n.name})
}

async fn visible(state: &AppState, ctx: &Ctx) -> ApiResult<Vec<Network>> {
    let scope = if ctx.is_admin() { None } else { Some(ctx.project_id()?) };
    Ok(state.store.list_networks(scope).await?)
}

async fn one(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Network> {
    visible(state, ctx).await?.into_iter().find(|n| n.id == id).ok_or_else(|| ApiError::not_found("Network not found"))
}

/// `GET /os-networks`
pub async fn list(State(state): State<AppState>, ctx: Ctx, Extension(v): Extension<ApiVersion>) -> JsonResult {
    check_version(v)?;
    ctx.require_reader("os_compute_api:os-networks:list")?;
    let nets = visible(&state, &ctx).await?;
    Ok(axum::Json(json!({"networks": nets.iter().map(|n| os_network(&ctx, n)).collect::<Vec<_>>()})))
}

/// `GET /os-networks/{id}`
pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    check_version(v)?;
    ctx.require_reader("os_compute_api:os-networks:view")?;
    let n = one(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"network": os_network(&ctx, &n)})))
}

/// `GET /os-tenant-networks`
pub async fn list_tenant(State(state): State<AppState>, ctx: Ctx, Extension(v): Extension<ApiVersion>) -> JsonResult {
    check_version(v)?;
    ctx.require_reader("os_compute_api:os-tenant-networks:list")?;
    let nets = visible(&state, &ctx).await?;
    Ok(axum::Json(json!({"networks": nets.iter().map(tenant_network).collect::<Vec<_>>()})))
}

/// `GET /os-tenant-networks/{id}`
pub async fn show_tenant(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    check_version(v)?;
    ctx.require_reader("os_compute_api:os-tenant-networks:show")?;
    let n = one(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"network": tenant_network(&n)})))
}

/// The nova-network operations Nova removed in 21.0.0: 410 at every version.
pub async fn removed() -> ApiError {
    ApiError::new(axum::http::StatusCode::GONE, "Gone")
}
