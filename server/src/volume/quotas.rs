//! `/os-quota-sets`, `/limits` and `/os-availability-zone` for volumes.

use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::volume::{VolumeLimits, VolumeUsage};

type JsonResult = ApiResult<axum::Json<Value>>;

/// Cinder's default quotas. `volumes`, `snapshots` and `gigabytes` (volumes and snapshots
/// together) are enforced, and so are the per-type forms of volumes and gigabytes
/// (`volumes_<type>`, `gigabytes_<type>`, -1 by default, as Cinder's per-type defaults);
/// backups do not exist yet.
const QUOTAS: [(&str, i64); 7] = [
    ("volumes", 10),
    ("gigabytes", 1000),
    ("snapshots", 10),
    ("per_volume_gigabytes", -1),
    ("backups", 10),
    ("backup_gigabytes", 1000),
    ("groups", 10),
];

/// Stored quota rows for volumes carry this prefix (compute uses `compute:`, network `network:`).
const PREFIX: &str = "volume:";

async fn limits_of(state: &AppState, project_id: &str) -> ApiResult<Map<String, Value>> {
    let overrides = state.store.quota_overrides(project_id).await?;
    let mut out = Map::new();
    for (name, default) in QUOTAS {
        out.insert(name.into(), json!(overrides.get(&format!("{PREFIX}{name}")).copied().unwrap_or(default)));
    }
    for t in state.store.list_volume_types().await? {
        for r in ["volumes", "gigabytes", "snapshots"] {
            let key = format!("{r}_{}", t.name);
            out.insert(key.clone(), json!(overrides.get(&format!("{PREFIX}{key}")).copied().unwrap_or(-1)));
        }
    }
    Ok(out)
}

fn limit(m: &Map<String, Value>, key: &str) -> i64 {
    m.get(key).and_then(Value::as_i64).unwrap_or(-1)
}

/// The limits a volume create is checked against (the type's own limits unlimited: see
/// [`create_limits_of_type`]).
pub(crate) async fn create_limits(state: &AppState, project_id: &str) -> ApiResult<VolumeLimits> {
    let m = limits_of(state, project_id).await?;
    Ok(VolumeLimits {
        volumes: limit(&m, "volumes"),
        gigabytes: limit(&m, "gigabytes"),
        type_volumes: -1,
        type_gigabytes: -1,
    })
}

/// The limits a snapshot create is checked against: (snapshots, gigabytes).
pub(crate) async fn snapshot_limits(state: &AppState, project_id: &str) -> ApiResult<(i64, i64)> {
    let m = limits_of(state, project_id).await?;
    Ok((limit(&m, "snapshots"), limit(&m, "gigabytes")))
}

/// The limits a create of a volume of this type is checked against, its type's included.
pub(crate) async fn create_limits_of_type(
    state: &AppState,
    project_id: &str,
    type_name: &str,
) -> ApiResult<VolumeLimits> {
    let m = limits_of(state, project_id).await?;
    Ok(VolumeLimits {
        volumes: limit(&m, "volumes"),
        gigabytes: limit(&m, "gigabytes"),
        type_volumes: limit(&m, &format!("volumes_{type_name}")),
        type_gigabytes: limit(&m, &format!("gigabytes_{type_name}")),
    })
}

fn volumes_exceeded(allowed: i64, name: &str) -> ApiError {
    ApiError::too_large(format!(
        "VolumeLimitExceeded: Maximum number of volumes allowed ({allowed}) exceeded for quota '{name}'."
    ))
}

fn gigabytes_exceeded(name: &str, requested: i64, quota: i64, consumed: i64) -> ApiError {
    ApiError::too_large(format!(
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed {name} quota. \
         Requested {requested}G, quota is {quota}G and {consumed}G has been consumed."
    ))
}

/// The 413 for a create the limits refused, naming the limit as Cinder does (the project's
/// first, then the type's).
#[allow(dead_code)] // the untyped form, for callers without a type in hand
pub(crate) async fn over_quota(state: &AppState, project_id: &str, size: i64, l: VolumeLimits) -> ApiError {
    over_quota_of_type(state, project_id, None, size, l).await
}

/// As [`over_quota`], for a volume of type `(id, name)`.
pub(crate) async fn over_quota_of_type(
    state: &AppState,
    project_id: &str,
    vtype: Option<(&str, &str)>,
    size: i64,
    l: VolumeLimits,
) -> ApiError {
    let used = match state.store.volume_usage(project_id).await {
        Ok(u) => u,
        Err(e) => return e.into(),
    };
    if l.volumes >= 0 && used.volumes >= l.volumes {
        return volumes_exceeded(l.volumes, "volumes");
    }
    if l.gigabytes >= 0 && used.gigabytes + size > l.gigabytes {
        return gigabytes_exceeded("gigabytes", size, l.gigabytes, used.gigabytes);
    }
    let Some((type_id, type_name)) = vtype else {
        return gigabytes_exceeded("gigabytes", size, l.gigabytes, used.gigabytes);
    };
    let used = match state.store.volume_usage_of_type(project_id, type_id).await {
        Ok(u) => u,
        Err(e) => return e.into(),
    };
    if l.type_volumes >= 0 && used.volumes >= l.type_volumes {
        volumes_exceeded(l.type_volumes, &format!("volumes_{type_name}"))
    } else {
        gigabytes_exceeded(&format!("gigabytes_{type_name}"), size, l.type_gigabytes, used.gigabytes)
    }
}

/// An extend by `grow` GiB within the project's gigabytes.
pub(crate) async fn check_extend(state: &AppState, project_id: &str, grow: i64) -> ApiResult<()> {
    let l = create_limits(state, project_id).await?;
    let used = state.store.volume_usage(project_id).await?;
    if l.gigabytes >= 0 && used.gigabytes + grow > l.gigabytes {
        return Err(gigabytes_exceeded("gigabytes", grow, l.gigabytes, used.gigabytes));
    }
    Ok(())
}

/// An extend of `v` by `grow` GiB within the project's gigabytes and its type's
/// `gigabytes_<type>` (Cinder's `add_volume_type_opts`).
pub(crate) async fn check_extend_typed(state: &AppState, v: &crate::store::volume::Volume, grow: i64) -> ApiResult<()> {
    check_extend(state, &v.project_id, grow).await?;
    let names = super::volumes::type_names(state).await?;
    let Some(name) = names.get(&v.volume_type_id) else { return Ok(()) };
    let l = create_limits_of_type(state, &v.project_id, name).await?;
    let used = state.store.volume_usage_of_type(&v.project_id, &v.volume_type_id).await?;
    if l.type_gigabytes >= 0 && used.gigabytes + grow > l.type_gigabytes {
        return Err(gigabytes_exceeded(&format!("gigabytes_{name}"), grow, l.type_gigabytes, used.gigabytes));
    }
    Ok(())
}

/// Only admins read another project's quotas.
fn check_project(ctx: &Ctx, project_id: &str) -> ApiResult<()> {
    if ctx.is_admin() || ctx.project_id().is_ok_and(|p| p == project_id) {
        Ok(())
    } else {
        Err(ApiError::policy("volume_extension:quotas:show"))
    }
}

async fn usage_by_key(state: &AppState, project_id: &str) -> ApiResult<Map<String, Value>> {
    let u: VolumeUsage = state.store.volume_usage(project_id).await?;
    let mut out = Map::new();
    out.insert("volumes".into(), json!(u.volumes));
    out.insert("gigabytes".into(), json!(u.gigabytes));
    out.insert("snapshots".into(), json!(state.store.snapshot_usage(project_id).await?.0));
    let types = super::volumes::type_names(state).await?;
    for v in state.store.list_volumes(Some(project_id)).await? {
        if let Some(name) = types.get(&v.volume_type_id) {
            for (r, n) in [("volumes", 1), ("gigabytes", v.size)] {
                let e = out.entry(format!("{r}_{name}")).or_insert(json!(0));
                *e = json!(e.as_i64().unwrap_or(0) + n);
            }
        }
    }
    Ok(out)
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, pid)): Path<(String, String)>,
    q: Query,
) -> JsonResult {
    check_project(&ctx, &pid)?;
    let limits = limits_of(&state, &pid).await?;
    let mut set = Map::new();
    set.insert("id".into(), json!(pid));
    if q.bool("usage")?.unwrap_or(false) {
        let used = usage_by_key(&state, &pid).await?;
        for (k, l) in limits {
            let in_use = used.get(&k).cloned().unwrap_or(json!(0));
            set.insert(k, json!({"limit": l, "in_use": in_use, "reserved": 0, "allocated": 0}));
        }
    } else {
        set.extend(limits);
    }
    Ok(axum::Json(json!({"quota_set": set})))
}

pub async fn defaults(State(state): State<AppState>, ctx: Ctx, Path((_p, pid)): Path<(String, String)>) -> JsonResult {
    ctx.require_reader("volume_extension:quotas:show")?;
    let mut set = Map::new();
    set.insert("id".into(), json!(pid));
    for (name, default) in QUOTAS {
        set.insert(name.into(), json!(default));
    }
    for t in state.store.list_volume_types().await? {
        for r in ["volumes", "gigabytes", "snapshots"] {
            set.insert(format!("{r}_{}", t.name), json!(-1));
        }
    }
    Ok(axum::Json(json!({"quota_set": set})))
}

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, pid)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("volume_extension:quotas:update")?;
    let set = super::volumes::wrapped(&body, "quota_set")?;
    let known = limits_of(&state, &pid).await?;
    for (k, v) in set {
        if k == "id" || k == "tenant_id" {
            continue;
        }
        if !known.contains_key(k) {
            return Err(ApiError::bad_request(format!("Invalid input received: Bad key(s) in quota set: {k}")));
        }
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .filter(|n| *n >= -1)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input received: Quota limit {v} for {k} must be an integer of -1 or more."
            ))
        })?;
        state.store.set_quota(&pid, &format!("{PREFIX}{k}"), n).await?;
    }
    let mut out = limits_of(&state, &pid).await?;
    out.remove("id");
    Ok(axum::Json(json!({"quota_set": out})))
}

pub async fn reset(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, pid)): Path<(String, String)>,
) -> ApiResult<axum::http::StatusCode> {
    ctx.require_admin("volume_extension:quotas:delete")?;
    let keys: Vec<String> = limits_of(&state, &pid).await?.keys().map(|k| format!("{PREFIX}{k}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    state.store.reset_quotas(&pid, &refs).await?;
    Ok(axum::http::StatusCode::OK)
}

pub async fn limits(State(state): State<AppState>, ctx: Ctx, ver: super::mv::Mv, q: Query) -> JsonResult {
    ctx.require_reader("volume:get_limits")?;
    // 3.39: an admin may ask for another project's (`project_id`, or the older `tenant_id`).
    let asked = (ver.at_least(super::mv::LIMITS_ADMIN_FILTER) && ctx.is_admin())
        .then(|| q.get("project_id").or(q.get("tenant_id")))
        .flatten();
    let pid = match asked {
        Some(p) => p.to_string(),
        None => ctx.project_id()?.to_string(),
    };
    let l = limits_of(&state, &pid).await?;
    let u = state.store.volume_usage(&pid).await?;
    let (snapshots, _) = state.store.snapshot_usage(&pid).await?;
    Ok(axum::Json(json!({"limits": {"rate": [], "absolute": {
        "maxTotalVolumes": limit(&l, "volumes"),
        "maxTotalSnapshots": limit(&l, "snapshots"),
        "maxTotalVolumeGigabytes": limit(&l, "gigabytes"),
        "maxTotalBackups": limit(&l, "backups"),
        "maxTotalBackupGigabytes": limit(&l, "backup_gigabytes"),
        "totalVolumesUsed": u.volumes,
        "totalGigabytesUsed": u.gigabytes,
        "totalSnapshotsUsed": snapshots,
        "totalBackupsUsed": 0,
        "totalBackupGigabytesUsed": 0,
    }}})))
}

pub async fn availability_zones(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_reader("volume_extension:availability_zone_list")?;
    let zones: Vec<Value> = super::work::zones(&state)
        .await?
        .into_iter()
        .map(|z| json!({"zoneName": z, "zoneState": {"available": true}}))
        .collect();
    Ok(axum::Json(json!({"availabilityZoneInfo": zones})))
}
