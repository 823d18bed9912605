//! The service catalog: regions, services and endpoints (writable, as in Keystone), the
//! catalog in tokens and `/v3/auth/catalog` built from them, and the defaults bootstrap seeds.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use md5::{Digest, Md5};
use serde::Deserialize;
use serde_json::{Value, json};

use super::REGION;
use super::resources::{JsonResult, list_links};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::catalog::{Endpoint, EndpointFilter, Region, Service};
use crate::store::{Store, StoreError, flag, new_hex_id};

/// Meridian's own services: (type, name, path under the public URL).
const SERVICES: [(&str, &str, &str); 6] = [
    ("identity", "keystone", "identity"),
    ("compute", "nova", "compute/v2.1"),
    ("image", "glance", "image"),
    ("network", "neutron", "network"),
    // Cinder, under both types devstack registers it with.
    ("block-storage", "cinder", "volume/v3/$(project_id)s"),
    ("volumev3", "cinderv3", "volume/v3/$(project_id)s"),
];
const INTERFACES: [&str; 3] = ["public", "internal", "admin"];

/// Stands for the configured public URL in stored endpoint URLs, so Meridian's own endpoints
/// follow it when it changes.
const PUBLIC_URL: &str = "$(public_url)s";

/// Stable ids derived from names, so replicas seeding at once agree (and ids stay what they
/// were before the catalog was stored).
fn stable_id(parts: &[&str]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"/");
    }
    hex::encode(h.finalize())
}

/// Seeds Meridian's own services and endpoints unless they exist (bootstrap).
pub async fn seed(store: &Store) -> Result<(), StoreError> {
    store.ensure_region(REGION).await?;
    for (kind, name, path) in SERVICES {
        let id = stable_id(&["service", kind]);
        if matches!(store.get_service(&id).await, Err(StoreError::NotFound(_))) {
            let s = Service {
                id: id.clone(),
                kind: kind.into(),
                name: name.into(),
                description: String::new(),
                enabled: 1,
            };
            ignore_conflict(store.create_service(&s).await)?;
        }
        for iface in INTERFACES {
            let eid = stable_id(&["endpoint", kind, iface]);
            if matches!(store.get_endpoint(&eid).await, Err(StoreError::NotFound(_))) {
                let e = Endpoint {
                    id: eid,
                    service_id: id.clone(),
                    interface: iface.into(),
                    region_id: Some(REGION.into()),
                    url: format!("{PUBLIC_URL}/{path}"),
                    enabled: 1,
                };
                ignore_conflict(store.create_endpoint(&e).await)?;
            }
        }
    }
    Ok(())
}

fn ignore_conflict(r: Result<(), StoreError>) -> Result<(), StoreError> {
    match r {
        Err(StoreError::Conflict(_)) => Ok(()),
        other => other,
    }
}

/// Keystone's `$(name)s` substitutions in an endpoint URL; `None` when one cannot be filled
/// (such an endpoint is left out of the catalog, as Keystone does).
fn format_url(state: &AppState, url: &str, project_id: Option<&str>, user_id: &str) -> Option<String> {
    let mut out = url.replace(PUBLIC_URL, &state.cfg.public_url).replace("$(user_id)s", user_id);
    for key in ["$(project_id)s", "$(tenant_id)s"] {
        if out.contains(key) {
            out = out.replace(key, project_id?);
        }
    }
    (!out.contains("$(")).then_some(out)
}

/// The service catalog as it appears in tokens and `/v3/auth/catalog`.
pub async fn catalog(state: &AppState, project_id: Option<&str>, user_id: &str) -> ApiResult<Value> {
    let endpoints = state.store.list_endpoints(&EndpointFilter::default()).await?;
    let mut out = Vec::new();
    for s in state.store.list_services(None, None).await? {
        if s.enabled == 0 {
            continue;
        }
        let eps: Vec<Value> = endpoints
            .iter()
            .filter(|e| e.service_id == s.id && e.enabled != 0)
            .filter_map(|e| {
                let url = format_url(state, &e.url, project_id, user_id)?;
                Some(json!({"id": e.id, "interface": e.interface, "region": e.region_id, "region_id": e.region_id, "url": url}))
            })
            .collect();
        out.push(json!({"id": s.id, "type": s.kind, "name": s.name, "endpoints": eps}));
    }
    Ok(Value::Array(out))
}

// ---- regions ----

fn region_json(state: &AppState, r: &Region) -> Value {
    json!({
        "id": r.id,
        "description": r.description,
        "parent_region_id": r.parent_region_id,
        "links": {"self": state.url(&format!("identity/v3/regions/{}", r.id))},
    })
}

#[derive(Deserialize)]
pub struct RegionReq {
    region: RegionBody,
}
#[derive(Deserialize)]
struct RegionBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parent_region_id: Option<String>,
}

pub async fn list_regions(State(state): State<AppState>, _ctx: Ctx, q: Query) -> JsonResult {
    let regions: Vec<Value> =
        state.store.list_regions(q.get("parent_region_id")).await?.iter().map(|r| region_json(&state, r)).collect();
    Ok(axum::Json(json!({"regions": regions, "links": list_links(&state, "regions")})))
}

pub async fn get_region(State(state): State<AppState>, _ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    let r = state.store.get_region(&id).await?;
    Ok(axum::Json(json!({"region": region_json(&state, &r)})))
}

async fn check_parent(state: &AppState, id: &str, parent: Option<&str>) -> ApiResult<()> {
    let Some(mut p) = parent.map(str::to_string) else { return Ok(()) };
    // The parent must exist and must not be the region itself or below it.
    loop {
        if p == id {
            return Err(ApiError::bad_request(format!("Region {id} cannot be its own ancestor.")));
        }
        let r = state.store.get_region(&p).await.map_err(|_| {
            ApiError::bad_request(format!(
                "Invalid input for field 'region/parent_region_id': region {p} does not exist."
            ))
        })?;
        match r.parent_region_id {
            Some(next) => p = next,
            None => return Ok(()),
        }
    }
}

async fn create_region_with(state: &AppState, id: Option<String>, b: RegionBody) -> ApiResult<Region> {
    let id = id.or(b.id).unwrap_or_else(new_hex_id);
    check_parent(state, &id, b.parent_region_id.as_deref()).await?;
    let r = Region { id, description: b.description.unwrap_or_default(), parent_region_id: b.parent_region_id };
    state.store.create_region(&r).await?;
    Ok(r)
}

/// `POST /v3/regions`
pub async fn create_region(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(req): Json<RegionReq>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_region")?;
    let r = create_region_with(&state, None, req.region).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"region": region_json(&state, &r)}))))
}

/// `PUT /v3/regions/{id}`: create with a chosen id.
pub async fn put_region(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<RegionReq>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_region")?;
    if req.region.id.as_ref().is_some_and(|b| *b != id) {
        return Err(ApiError::bad_request("The region id in the body differs from the one in the URL."));
    }
    let r = create_region_with(&state, Some(id), req.region).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"region": region_json(&state, &r)}))))
}

pub async fn update_region(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<RegionReq>,
) -> JsonResult {
    ctx.require_admin("identity:update_region")?;
    let mut r = state.store.get_region(&id).await?;
    let b = req.region;
    if let Some(d) = b.description {
        r.description = d;
    }
    if b.parent_region_id.is_some() {
        check_parent(&state, &id, b.parent_region_id.as_deref()).await?;
        r.parent_region_id = b.parent_region_id;
    }
    state.store.update_region(&r).await?;
    Ok(axum::Json(json!({"region": region_json(&state, &r)})))
}

pub async fn delete_region(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_region")?;
    match state.store.delete_region(&id).await {
        Err(StoreError::Conflict(m)) => Err(ApiError::forbidden(m)),
        other => Ok(other.map(|_| StatusCode::NO_CONTENT)?),
    }
}

// ---- services ----

fn service_json(state: &AppState, s: &Service) -> Value {
    json!({
        "id": s.id,
        "type": s.kind,
        "name": s.name,
        "description": s.description,
        "enabled": s.enabled != 0,
        "links": {"self": state.url(&format!("identity/v3/services/{}", s.id))},
    })
}

#[derive(Deserialize)]
pub struct ServiceReq {
    service: ServiceBody,
}
#[derive(Deserialize)]
struct ServiceBody {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
}

pub async fn list_services(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_admin("identity:list_services")?;
    let services: Vec<Value> = state
        .store
        .list_services(q.get("type"), q.get("name"))
        .await?
        .iter()
        .map(|s| service_json(&state, s))
        .collect();
    Ok(axum::Json(json!({"services": services, "links": list_links(&state, "services")})))
}

pub async fn get_service(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    ctx.require_admin("identity:get_service")?;
    let s = state.store.get_service(&id).await?;
    Ok(axum::Json(json!({"service": service_json(&state, &s)})))
}

fn service_type(kind: &str) -> ApiResult<&str> {
    let k = kind.trim();
    if k.is_empty() || k.len() > 255 {
        return Err(ApiError::bad_request("Invalid input for field 'service/type': must be 1 to 255 characters."));
    }
    Ok(k)
}

pub async fn create_service(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(req): Json<ServiceReq>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_service")?;
    let b = req.service;
    let s = Service {
        id: new_hex_id(),
        kind: service_type(b.kind.as_deref().unwrap_or_default())?.to_string(),
        name: b.name.unwrap_or_default(),
        description: b.description.unwrap_or_default(),
        enabled: flag(b.enabled.unwrap_or(true)),
    };
    state.store.create_service(&s).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"service": service_json(&state, &s)}))))
}

pub async fn update_service(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<ServiceReq>,
) -> JsonResult {
    ctx.require_admin("identity:update_service")?;
    let mut s = state.store.get_service(&id).await?;
    let b = req.service;
    if let Some(k) = b.kind {
        s.kind = service_type(&k)?.to_string();
    }
    if let Some(n) = b.name {
        s.name = n;
    }
    if let Some(d) = b.description {
        s.description = d;
    }
    if let Some(e) = b.enabled {
        s.enabled = flag(e);
    }
    state.store.update_service(&s).await?;
    Ok(axum::Json(json!({"service": service_json(&state, &s)})))
}

pub async fn delete_service(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_service")?;
    state.store.delete_service(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- endpoints ----

fn endpoint_json(state: &AppState, e: &Endpoint) -> Value {
    json!({
        "id": e.id,
        "service_id": e.service_id,
        "interface": e.interface,
        "region": e.region_id,
        "region_id": e.region_id,
        "url": e.url,
        "enabled": e.enabled != 0,
        "links": {"self": state.url(&format!("identity/v3/endpoints/{}", e.id))},
    })
}

#[derive(Deserialize)]
pub struct EndpointReq {
    endpoint: EndpointBody,
}
#[derive(Deserialize)]
struct EndpointBody {
    #[serde(default)]
    service_id: Option<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    /// The legacy name of `region_id`.
    #[serde(default)]
    region: Option<String>,
    /// Kept as JSON: Keystone refuses anything but a boolean with 400 (`"True"` included).
    #[serde(default)]
    enabled: Option<Value>,
}

fn enabled_flag(v: Option<Value>) -> ApiResult<Option<bool>> {
    match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field 'endpoint/enabled': {other} is not of type 'boolean'."
        ))),
    }
}

fn interface(i: &str) -> ApiResult<&str> {
    if INTERFACES.contains(&i) {
        Ok(i)
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid input for field 'endpoint/interface': {i} is not one of public, internal, admin."
        )))
    }
}

fn endpoint_url(u: &str) -> ApiResult<&str> {
    let u = u.trim();
    if u.is_empty() || u.len() > 225 {
        return Err(ApiError::bad_request("Invalid input for field 'endpoint/url': must be 1 to 225 characters."));
    }
    Ok(u)
}

/// The endpoint's region, created when only named (Keystone's legacy `region` behaviour);
/// an unknown `region_id` is refused.
async fn endpoint_region(state: &AppState, b: &EndpointBody) -> ApiResult<Option<String>> {
    if let Some(id) = &b.region_id {
        state.store.get_region(id).await.map_err(|_| {
            ApiError::bad_request(format!("Invalid input for field 'endpoint/region_id': region {id} does not exist."))
        })?;
        return Ok(Some(id.clone()));
    }
    if let Some(name) = &b.region {
        state.store.ensure_region(name).await?;
        return Ok(Some(name.clone()));
    }
    Ok(None)
}

pub async fn list_endpoints(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    ctx.require_admin("identity:list_endpoints")?;
    let f = EndpointFilter {
        service_id: q.get("service_id").map(str::to_string),
        interface: q.get("interface").map(str::to_string),
        region_id: q.get("region_id").map(str::to_string),
    };
    let out: Vec<Value> = state.store.list_endpoints(&f).await?.iter().map(|e| endpoint_json(&state, e)).collect();
    Ok(axum::Json(json!({"endpoints": out, "links": list_links(&state, "endpoints")})))
}

pub async fn get_endpoint(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    ctx.require_admin("identity:get_endpoint")?;
    let e = state.store.get_endpoint(&id).await?;
    Ok(axum::Json(json!({"endpoint": endpoint_json(&state, &e)})))
}

pub async fn create_endpoint(
    State(state): State<AppState>,
    ctx: Ctx,
    Json(req): Json<EndpointReq>,
) -> ApiResult<impl IntoResponse> {
    ctx.require_admin("identity:create_endpoint")?;
    let b = req.endpoint;
    let enabled = enabled_flag(b.enabled.clone())?.unwrap_or(true);
    let service_id = b.service_id.clone().unwrap_or_default();
    state.store.get_service(&service_id).await.map_err(|_| {
        ApiError::bad_request(format!(
            "Invalid input for field 'endpoint/service_id': service {service_id} does not exist."
        ))
    })?;
    let e = Endpoint {
        id: new_hex_id(),
        service_id,
        interface: interface(b.interface.as_deref().unwrap_or_default())?.to_string(),
        url: endpoint_url(b.url.as_deref().unwrap_or_default())?.to_string(),
        region_id: endpoint_region(&state, &b).await?,
        enabled: flag(enabled),
    };
    state.store.create_endpoint(&e).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({"endpoint": endpoint_json(&state, &e)}))))
}

pub async fn update_endpoint(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(req): Json<EndpointReq>,
) -> JsonResult {
    ctx.require_admin("identity:update_endpoint")?;
    let mut e = state.store.get_endpoint(&id).await?;
    let b = req.endpoint;
    if let Some(en) = enabled_flag(b.enabled.clone())? {
        e.enabled = flag(en);
    }
    if let Some(s) = &b.service_id {
        state.store.get_service(s).await.map_err(|_| {
            ApiError::bad_request(format!("Invalid input for field 'endpoint/service_id': service {s} does not exist."))
        })?;
        e.service_id = s.clone();
    }
    if let Some(i) = &b.interface {
        e.interface = interface(i)?.to_string();
    }
    if let Some(u) = &b.url {
        e.url = endpoint_url(u)?.to_string();
    }
    if let Some(r) = endpoint_region(&state, &b).await? {
        e.region_id = Some(r);
    }
    state.store.update_endpoint(&e).await?;
    Ok(axum::Json(json!({"endpoint": endpoint_json(&state, &e)})))
}

pub async fn delete_endpoint(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("identity:delete_endpoint")?;
    state.store.delete_endpoint(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
