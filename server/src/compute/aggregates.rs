//! `/os-aggregates` (admin): host aggregates with metadata; an aggregate's `availability_zone`
//! metadata is the zone of its hosts. `/os-availability-zone` and `/detail`: the zones the
//! compute hosts are in (from their aggregates, else the zone their agent reports, `nova` by
//! default) and the `internal` zone of the server's own services.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::ApiVersion;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::groups::Aggregate;

type JsonResult = ApiResult<axum::Json<Value>>;

const POLICY: &str = "os_compute_api:os-aggregates";

/// Nova's zone of its own services (`[DEFAULT] internal_service_availability_zone`).
pub const INTERNAL_AZ: &str = "internal";

fn bad(field: &str, value: &Value, why: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid input for field/attribute {field}. Value: {value}. {why}"))
}

/// Nova prints aggregate times without a zone: `2019-10-08T15:15:27.988513`.
fn naive(t: &str) -> String {
    t.trim_end_matches('Z').to_string()
}

fn aggregate_json(v: ApiVersion, a: &Aggregate) -> Value {
    let mut o = json!({
        "id": a.id,
        "name": a.name,
        "availability_zone": a.availability_zone(),
        "created_at": naive(&a.created_at),
        "updated_at": a.updated_at.as_deref().map(naive),
        "deleted": false,
        "deleted_at": null,
        "hosts": a.hosts,
        "metadata": a.metadata,
    });
    if v.at_least(41) {
        o["uuid"] = json!(a.uuid);
    }
    o
}

/// The aggregate id of a path: an integer (400 as Nova's `validate_integer` otherwise).
fn aggregate_id(id: &str) -> ApiResult<i64> {
    id.parse::<i64>().map_err(|_| ApiError::bad_request(format!("id must be an integer, got '{id}'")))
}

async fn get(state: &AppState, id: i64) -> ApiResult<Aggregate> {
    Ok(state.store.get_aggregate(id).await?)
}

/// Nova's `parameter_types.name` (`leading_trailing`: the 2.0 form that allows spaces around).
fn check_name(n: &Value, leading_trailing: bool) -> ApiResult<String> {
    let Some(s) = n.as_str() else {
        return Err(bad("name", n, &format!("{n} is not of type 'string'")));
    };
    if s.is_empty() {
        return Err(bad("name", n, "'' is too short"));
    }
    if s.chars().count() > 255 {
        return Err(bad("name", n, &format!("{n} is too long")));
    }
    if (!leading_trailing && s.trim() != s) || s.trim().is_empty() || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute name. Value: {s}. An invalid 'name' value was provided. The name \
             must be: printable characters. Can not start or end with whitespace."
        )));
    }
    Ok(s.trim().to_string())
}

/// Nova's `az_name`: printable, no `:`, no leading or trailing whitespace; `null` allowed.
fn check_zone(z: &Value) -> ApiResult<Option<String>> {
    match z {
        Value::Null => Ok(None),
        Value::String(s)
            if !s.is_empty()
                && s.chars().count() <= 255
                && s.trim() == s
                && !s.contains(':')
                && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        other => Err(bad(
            "availability_zone",
            other,
            "An invalid 'availability_zone' value was provided. The name must be: printable characters except :. \
             Can not start or end with whitespace.",
        )),
    }
}

/// The one object a body wraps under `key`, with no other top-level key.
fn wrapped<'a>(body: &'a Value, key: &str) -> ApiResult<&'a Map<String, Value>> {
    if let Some(k) = body.as_object().and_then(|o| o.keys().find(|k| *k != key)) {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{k}' was unexpected)")));
    }
    match body.get(key) {
        Some(Value::Object(o)) => Ok(o),
        Some(other) => Err(bad(key, other, &format!("{other} is not of type 'object'"))),
        None => Err(ApiError::bad_request(format!("'{key}' is a required property"))),
    }
}

fn only_keys(inner: &Map<String, Value>, field: &str, keys: &[&str]) -> ApiResult<()> {
    match inner.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(bad(
            field,
            &Value::Object(inner.clone()),
            &format!("Additional properties are not allowed ('{k}' was unexpected)"),
        )),
        None => Ok(()),
    }
}

/// Nova's `is_safe_to_update_az`: a zone must be named, and hosts may be in one zone only.
async fn check_zone_change(
    state: &AppState,
    agg: &Aggregate,
    zone: Option<Option<&str>>,
    hosts: &[String],
    failure: &str,
) -> ApiResult<()> {
    let Some(zone) = zone else { return Ok(()) };
    let Some(zone) = zone.filter(|z| !z.is_empty()) else {
        return Err(ApiError::bad_request(format!(
            "{failure} {}. Reason: Aggregate {} does not support empty named availability zone.",
            agg.id, agg.name
        )));
    };
    let conflicting: Vec<String> = state
        .store
        .list_aggregates()
        .await?
        .into_iter()
        .filter(|other| other.id != agg.id && other.hosts.iter().any(|h| hosts.contains(h)))
        .filter_map(|other| other.availability_zone().filter(|z| *z != zone).map(|z| format!("'{z}'")))
        .collect();
    if !conflicting.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{failure} {}. Reason: One or more hosts already in availability zone(s) [{}].",
            agg.id,
            conflicting.join(", ")
        )));
    }
    Ok(())
}

/// The scheduler's host view is cached: a zone change must be seen by the next decision.
async fn zones_changed(state: &AppState) {
    state.hosts.lock().await.invalidate();
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, Extension(v): Extension<ApiVersion>) -> JsonResult {
    ctx.require_admin(&format!("{POLICY}:index"))?;
    let list: Vec<Value> = state.store.list_aggregates().await?.iter().map(|a| aggregate_json(v, a)).collect();
    Ok(axum::Json(json!({"aggregates": list})))
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin(&format!("{POLICY}:create"))?;
    let b = wrapped(&body, "aggregate")?;
    only_keys(b, "aggregate", &["name", "availability_zone"])?;
    let name = match b.get("name") {
        Some(n) => check_name(n, false)?,
        None => return Err(bad("aggregate", &Value::Object(b.clone()), "'name' is a required property")),
    };
    let zone = match b.get("availability_zone") {
        Some(z) => check_zone(z)?,
        None => None,
    };
    let a = match state.store.create_aggregate(&crate::store::new_uuid(), &name, zone.as_deref()).await {
        Ok(a) => a,
        Err(StoreError::Conflict(m)) => return Err(ApiError::conflict(m)),
        Err(e) => return Err(e.into()),
    };
    let mut o = aggregate_json(v, &a);
    if let Some(o) = o.as_object_mut() {
        o.remove("hosts");
        o.remove("metadata");
    }
    Ok(axum::Json(json!({"aggregate": o})))
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    ctx.require_admin(&format!("{POLICY}:show"))?;
    let a = get(&state, aggregate_id(&id)?).await?;
    Ok(axum::Json(json!({"aggregate": aggregate_json(v, &a)})))
}

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin(&format!("{POLICY}:update"))?;
    let b = wrapped(&body, "aggregate")?;
    only_keys(b, "aggregate", &["name", "availability_zone"])?;
    if b.is_empty() {
        return Err(bad("aggregate", &json!({}), "{} is not valid under any of the given schemas"));
    }
    let name = b.get("name").map(|n| check_name(n, true)).transpose()?;
    let zone = b.get("availability_zone").map(check_zone).transpose()?;
    let id = aggregate_id(&id)?;
    let agg = get(&state, id).await?;
    if let Some(n) = &name {
        match state.store.rename_aggregate(id, n).await {
            Err(StoreError::Conflict(m)) => return Err(ApiError::conflict(m)),
            other => other?,
        }
    }
    check_zone_change(&state, &agg, zone.as_ref().map(|z| z.as_deref()), &agg.hosts, "Cannot update aggregate").await?;
    if let Some(z) = zone {
        state.store.update_aggregate_metadata(id, &[("availability_zone".into(), z)]).await?;
        zones_changed(&state).await;
    }
    Ok(axum::Json(json!({"aggregate": aggregate_json(v, &get(&state, id).await?)})))
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin(&format!("{POLICY}:delete"))?;
    let id = aggregate_id(&id)?;
    let agg = get(&state, id).await?;
    if !agg.hosts.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Cannot remove host from aggregate {id}. Reason: Host aggregate is not empty."
        )));
    }
    state.store.delete_aggregate(id).await?;
    zones_changed(&state).await;
    Ok(StatusCode::OK)
}

/// `POST /os-aggregates/{id}/action`: `add_host`, `remove_host`, `set_metadata`.
pub async fn action(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let Some((name, _)) = body.as_object().and_then(|o| o.iter().next()) else {
        return Err(ApiError::bad_request("Malformed request body"));
    };
    let name = name.clone();
    let agg = match name.as_str() {
        "add_host" | "remove_host" => {
            ctx.require_admin(&format!("{POLICY}:{name}"))?;
            let b = wrapped(&body, &name)?;
            only_keys(b, &name, &["host"])?;
            let host = match b.get("host") {
                Some(Value::String(h)) if !h.is_empty() && h.len() <= 255 => h.clone(),
                Some(other) => return Err(bad("host", other, "Invalid host name")),
                None => return Err(bad(&name, &Value::Object(b.clone()), "'host' is a required property")),
            };
            let id = aggregate_id(&id)?;
            if name == "add_host" { add_host(&state, id, &host).await? } else { remove_host(&state, id, &host).await? }
        }
        "set_metadata" => {
            ctx.require_admin(&format!("{POLICY}:set_metadata"))?;
            let b = wrapped(&body, "set_metadata")?;
            only_keys(b, "set_metadata", &["metadata"])?;
            let changes = match b.get("metadata") {
                Some(Value::Object(m)) => metadata_changes(m)?,
                Some(other) => return Err(bad("metadata", other, &format!("{other} is not of type 'object'"))),
                None => {
                    return Err(bad("set_metadata", &Value::Object(b.clone()), "'metadata' is a required property"));
                }
            };
            let id = aggregate_id(&id)?;
            let agg = get(&state, id).await?;
            let zone = changes.iter().find(|(k, _)| k == "availability_zone").map(|(_, v)| v.as_deref());
            check_zone_change(&state, &agg, zone, &agg.hosts, "Cannot update metadata of aggregate").await?;
            state.store.update_aggregate_metadata(id, &changes).await?;
            zones_changed(&state).await;
            get(&state, id).await?
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "Additional properties are not allowed ('{other}' was unexpected)"
            )));
        }
    };
    Ok(axum::Json(json!({"aggregate": aggregate_json(v, &agg)})))
}

/// Nova's `metadata_with_null`: keys 1-255 characters, values strings (≤ 255) or null (remove).
fn metadata_changes(m: &Map<String, Value>) -> ApiResult<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for (k, val) in m {
        if k.is_empty() || k.chars().count() > 255 {
            return Err(bad(
                "metadata",
                &Value::Object(m.clone()),
                &format!("'{k}' does not match any of the regexes: '^[a-zA-Z0-9-_:. ]{{1,255}}$'"),
            ));
        }
        match val {
            Value::Null => out.push((k.clone(), None)),
            Value::String(s) if s.chars().count() <= 255 => out.push((k.clone(), Some(s.clone()))),
            other => return Err(bad(k, other, &format!("{other} is not of type 'string', 'null'"))),
        }
    }
    Ok(out)
}

async fn add_host(state: &AppState, id: i64, host: &str) -> ApiResult<Aggregate> {
    let h = match state.store.get_host_by_name(host).await {
        Ok(h) => h,
        Err(StoreError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("Compute host {host} could not be found.")));
        }
        Err(e) => return Err(e.into()),
    };
    let agg = get(state, id).await?;
    if agg.hosts.contains(&h.name) {
        return Err(ApiError::conflict(format!("Aggregate {id} already has host {host}.")));
    }
    // A host is in one zone only: add_host answers 409 here (InvalidAggregateAction in Nova's
    // `_add_host` maps to HTTPConflict).
    if let Some(zone) = agg.availability_zone()
        && let Err(e) = check_zone_change(
            state,
            &agg,
            Some(Some(zone)),
            std::slice::from_ref(&h.name),
            "Cannot add host to aggregate",
        )
        .await
    {
        return Err(ApiError::conflict(e.message));
    }
    if !state.store.add_aggregate_host(id, &h.name).await? {
        return Err(ApiError::conflict(format!("Aggregate {id} already has host {host}.")));
    }
    zones_changed(state).await;
    get(state, id).await
}

async fn remove_host(state: &AppState, id: i64, host: &str) -> ApiResult<Aggregate> {
    let missing = || ApiError::not_found(format!("Cannot remove host {host} in aggregate {id}"));
    let agg = match state.store.get_aggregate(id).await {
        Ok(a) => a,
        Err(StoreError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    if !agg.hosts.iter().any(|x| x == host) || !state.store.remove_aggregate_host(id, host).await? {
        return Err(missing());
    }
    zones_changed(state).await;
    get(state, id).await
}

// ---- availability zones ----

/// Zones with at least one enabled compute host (available), and those whose hosts are all
/// disabled (not available), each sorted.
async fn zones(state: &AppState) -> ApiResult<(Vec<String>, Vec<String>)> {
    let hosts = state.store.list_hosts().await?;
    let mut available: Vec<String> =
        hosts.iter().filter(|h| h.enabled != 0).map(|h| h.availability_zone.clone()).collect();
    available.sort();
    available.dedup();
    let mut not_available: Vec<String> = hosts
        .iter()
        .filter(|h| h.enabled == 0 && !available.contains(&h.availability_zone))
        .map(|h| h.availability_zone.clone())
        .collect();
    not_available.sort();
    not_available.dedup();
    Ok((available, not_available))
}

/// `GET /os-availability-zone`: every zone but `internal`, `hosts` null.
pub async fn availability_zones(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_reader("os_compute_api:os-availability-zone:list")?;
    let (available, not_available) = zones(&state).await?;
    let info: Vec<Value> = available
        .iter()
        .map(|z| (z, true))
        .chain(not_available.iter().map(|z| (z, false)))
        .filter(|(z, _)| *z != INTERNAL_AZ)
        .map(|(z, up)| json!({"zoneName": z, "zoneState": {"available": up}, "hosts": null}))
        .collect();
    Ok(axum::Json(json!({"availabilityZoneInfo": info})))
}

/// `GET /os-availability-zone/detail` (admin): the available zones with their hosts and each
/// host's enabled services (`nova-compute` for an agent; the server's own loops in `internal`),
/// then the zones whose hosts are all disabled.
pub async fn availability_zones_detail(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_admin("os_compute_api:os-availability-zone:detail")?;
    let (available, not_available) = zones(&state).await?;
    let mut by_zone: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for hb in state.store.service_heartbeats().await? {
        if !hb.service.starts_with("nova-") || hb.service == "nova-osapi_compute" || hb.service == "nova-metadata" {
            continue;
        }
        let hosts = by_zone.entry(INTERNAL_AZ.to_string()).or_default();
        let services = hosts.entry(hb.replica.clone()).or_insert_with(|| json!({}));
        services[&hb.service] = json!({
            "available": super::hosts::service_up(&state, &hb.updated_at),
            "active": true,
            "updated_at": super::conductor::nova_time(&hb.updated_at),
        });
    }
    for h in state.store.list_hosts().await?.iter().filter(|h| h.enabled != 0) {
        let hosts = by_zone.entry(h.availability_zone.clone()).or_default();
        hosts.insert(
            h.name.clone(),
            json!({"nova-compute": {
                "available": super::conductor::host_up(&state, h),
                "active": true,
                "updated_at": super::conductor::nova_time(&h.last_heartbeat),
            }}),
        );
    }
    let mut info: Vec<Value> = Vec::new();
    let mut listed: std::collections::BTreeSet<String> = available.into_iter().collect();
    if by_zone.contains_key(INTERNAL_AZ) {
        listed.insert(INTERNAL_AZ.to_string());
    }
    for z in listed {
        let hosts = by_zone.remove(&z).unwrap_or_default();
        info.push(json!({"zoneName": z, "zoneState": {"available": true}, "hosts": hosts}));
    }
    for z in not_available {
        info.push(json!({"zoneName": z, "zoneState": {"available": false}, "hosts": null}));
    }
    Ok(axum::Json(json!({"availabilityZoneInfo": info})))
}
