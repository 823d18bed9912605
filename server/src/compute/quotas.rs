//! `/os-quota-sets`, `/limits` and `/os-availability-zone`.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::ApiVersion;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;

type JsonResult = ApiResult<axum::Json<Value>>;

/// Nova's default quotas: (resource, default, last microversion that shows it).
const QUOTAS: [(&str, i64, u32); 14] = [
    ("instances", 10, u32::MAX),
    ("cores", 20, u32::MAX),
    ("ram", 51200, u32::MAX),
    ("metadata_items", 128, u32::MAX),
    ("key_pairs", 100, u32::MAX),
    ("server_groups", 10, u32::MAX),
    ("server_group_members", 10, u32::MAX),
    ("injected_files", 5, 56),
    ("injected_file_content_bytes", 10240, 56),
    ("injected_file_path_bytes", 255, 56),
    ("fixed_ips", -1, 35),
    ("floating_ips", 10, 35),
    ("security_groups", 10, 35),
    ("security_group_rules", 20, 35),
];

/// Stored quota rows for compute carry this prefix (network quotas use `network:`).
const PREFIX: &str = "compute:";

fn shown(v: ApiVersion, last: u32) -> bool {
    last == u32::MAX || !v.at_least(last + 1)
}

/// The effective limit of one compute resource for a project.
pub async fn limit_for(state: &AppState, project_id: &str, resource: &str) -> ApiResult<i64> {
    Ok(limits_for(state, project_id, &[resource]).await?[0])
}

/// Several limits from one read of the project's overrides, in the order asked.
pub async fn limits_for<const N: usize>(
    state: &AppState,
    project_id: &str,
    resources: &[&str; N],
) -> ApiResult<[i64; N]> {
    let overrides = state.store.quota_overrides(project_id).await?;
    Ok(resources.map(|resource| {
        overrides
            .get(&format!("{PREFIX}{resource}"))
            .copied()
            .or_else(|| QUOTAS.iter().find(|q| q.0 == resource).map(|q| q.1))
            .unwrap_or(-1)
    }))
}

/// What a project uses now: instances, cores and RAM from its live servers; key pairs are the
/// caller's own (Nova counts them per user). Read once per response.
struct Usage {
    instances: i64,
    cores: i64,
    ram: i64,
    key_pairs: i64,
}

impl Usage {
    async fn read(state: &AppState, ctx: &Ctx, project_id: &str) -> ApiResult<Usage> {
        let (instances, cores, ram) = state.store.project_usage(project_id).await?;
        Ok(Usage { instances, cores, ram, key_pairs: state.store.count_keypairs(&ctx.user.id).await? })
    }

    fn of(&self, resource: &str) -> i64 {
        match resource {
            "instances" => self.instances,
            "cores" => self.cores,
            "ram" => self.ram,
            "key_pairs" => self.key_pairs,
            _ => 0,
        }
    }
}

/// Only admins look at other projects' quotas (Nova answers 403 otherwise).
fn check_project(ctx: &Ctx, project_id: &str, action: &str) -> ApiResult<()> {
    ctx.require_reader(action)?;
    if !ctx.is_admin() && ctx.project_id()? != project_id {
        return Err(ApiError::policy(action));
    }
    Ok(())
}

async fn quota_set(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    project_id: &str,
    detail: bool,
    defaults: bool,
) -> ApiResult<Value> {
    let overrides = if defaults { Default::default() } else { state.store.quota_overrides(project_id).await? };
    let usage = if detail { Some(Usage::read(state, ctx, project_id).await?) } else { None };
    let mut o = Map::new();
    o.insert("id".into(), json!(project_id));
    for (name, default, last) in QUOTAS {
        if !shown(v, last) {
            continue;
        }
        let limit = overrides.get(&format!("{PREFIX}{name}")).copied().unwrap_or(default);
        let value = match &usage {
            Some(u) => json!({"limit": limit, "in_use": u.of(name), "reserved": 0}),
            None => json!(limit),
        };
        o.insert(name.into(), value);
    }
    Ok(Value::Object(o))
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(pid): Path<String>,
) -> JsonResult {
    check_project(&ctx, &pid, "os_compute_api:os-quota-sets:show")?;
    Ok(axum::Json(json!({"quota_set": quota_set(&state, &ctx, v, &pid, false, false).await?})))
}

pub async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(pid): Path<String>,
) -> JsonResult {
    check_project(&ctx, &pid, "os_compute_api:os-quota-sets:detail")?;
    Ok(axum::Json(json!({"quota_set": quota_set(&state, &ctx, v, &pid, true, false).await?})))
}

pub async fn defaults(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(pid): Path<String>,
) -> JsonResult {
    ctx.require_reader("os_compute_api:os-quota-sets:defaults")?;
    Ok(axum::Json(json!({"quota_set": quota_set(&state, &ctx, v, &pid, false, true).await?})))
}

/// `PUT /os-quota-sets/{project_id}` (admin).
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(pid): Path<String>,
    q: Query,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-quota-sets:update")?;
    if q.has("user_id") {
        return Err(ApiError::bad_request("Per-user quotas are not supported."));
    }
    let set = body.get("quota_set").and_then(Value::as_object).ok_or_else(|| {
        ApiError::bad_request("Invalid input for field/attribute quota_set. 'quota_set' is a required property")
    })?;
    let mut updates = Vec::new();
    for (k, val) in set {
        if k == "force" {
            continue;
        }
        let known = QUOTAS.iter().any(|(name, _, last)| name == k && shown(v, *last));
        if !known {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute quota_set. Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
        let n = match val {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse::<i64>().ok(),
            _ => None,
        }
        .filter(|n| *n >= -1)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for field/attribute {k}. Value: {val}. Must be an integer >= -1"
            ))
        })?;
        updates.push((k.clone(), n));
    }
    for (k, n) in updates {
        state.store.set_quota(&pid, &format!("{PREFIX}{k}"), n).await?;
    }
    let mut out = quota_set(&state, &ctx, v, &pid, false, false).await?;
    if let Some(o) = out.as_object_mut() {
        o.remove("id");
    }
    Ok(axum::Json(json!({"quota_set": out})))
}

/// `DELETE /os-quota-sets/{project_id}` (admin): back to defaults, 202.
pub async fn reset(State(state): State<AppState>, ctx: Ctx, Path(pid): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("os_compute_api:os-quota-sets:delete")?;
    let names: Vec<String> = QUOTAS.iter().map(|q| format!("{PREFIX}{}", q.0)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    state.store.reset_quotas(&pid, &refs).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /limits` (`tenant_id` for admins).
pub async fn limits(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    ctx.require_reader("os_compute_api:limits")?;
    let pid = match q.get("tenant_id") {
        Some(t) if ctx.is_admin() => t.to_string(),
        _ => ctx.project_id()?.to_string(),
    };
    let overrides = state.store.quota_overrides(&pid).await?;
    let lim = |name: &str| {
        overrides
            .get(&format!("{PREFIX}{name}"))
            .copied()
            .or_else(|| QUOTAS.iter().find(|q| q.0 == name).map(|q| q.1))
            .unwrap_or(-1)
    };
    let mut a = Map::new();
    a.insert("maxServerMeta".into(), json!(lim("metadata_items")));
    a.insert("maxTotalInstances".into(), json!(lim("instances")));
    a.insert("maxTotalCores".into(), json!(lim("cores")));
    a.insert("maxTotalRAMSize".into(), json!(lim("ram")));
    a.insert("maxTotalKeypairs".into(), json!(lim("key_pairs")));
    a.insert("maxServerGroups".into(), json!(lim("server_groups")));
    a.insert("maxServerGroupMembers".into(), json!(lim("server_group_members")));
    let used = Usage::read(&state, &ctx, &pid).await?;
    a.insert("totalInstancesUsed".into(), json!(used.instances));
    a.insert("totalCoresUsed".into(), json!(used.cores));
    a.insert("totalRAMUsed".into(), json!(used.ram));
    a.insert("totalServerGroupsUsed".into(), json!(0));
    if !v.at_least(36) {
        a.insert("maxSecurityGroups".into(), json!(lim("security_groups")));
        a.insert("maxSecurityGroupRules".into(), json!(lim("security_group_rules")));
        a.insert("maxTotalFloatingIps".into(), json!(lim("floating_ips")));
        a.insert("totalSecurityGroupsUsed".into(), json!(0));
        a.insert("totalFloatingIpsUsed".into(), json!(0));
    }
    if !v.at_least(39) {
        a.insert("maxImageMeta".into(), json!(128));
    }
    if !v.at_least(57) {
        a.insert("maxPersonality".into(), json!(lim("injected_files")));
        a.insert("maxPersonalitySize".into(), json!(lim("injected_file_content_bytes")));
    }
    Ok(axum::Json(json!({"limits": {"rate": [], "absolute": a}})))
}

/// The default availability zone every host joins unless configured otherwise.
pub const DEFAULT_AZ: &str = "nova";

pub async fn availability_zones(ctx: Ctx) -> JsonResult {
    ctx.require_reader("os_compute_api:os-availability-zone:list")?;
    Ok(axum::Json(json!({"availabilityZoneInfo": [
        {"zoneName": DEFAULT_AZ, "zoneState": {"available": true}, "hosts": null}
    ]})))
}

pub async fn availability_zones_detail(ctx: Ctx) -> JsonResult {
    ctx.require_admin("os_compute_api:os-availability-zone:detail")?;
    Ok(axum::Json(json!({"availabilityZoneInfo": [
        {"zoneName": DEFAULT_AZ, "zoneState": {"available": true}, "hosts": {}}
    ]})))
}
