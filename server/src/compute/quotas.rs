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
    let overrides = with_class_defaults(state, state.store.quota_overrides(project_id).await?).await?;
    Ok(resources.map(|resource| {
        overrides
            .get(&format!("{PREFIX}{resource}"))
            .copied()
            .or_else(|| QUOTAS.iter().find(|q| q.0 == resource).map(|q| q.1))
            .unwrap_or(-1)
    }))
}

/// A user's effective limits in a project (their overrides, else the project's), in the order asked.
pub async fn user_limits_for<const N: usize>(
    state: &AppState,
    project_id: &str,
    user_id: &str,
    resources: &[&str; N],
) -> ApiResult<[i64; N]> {
    let project = limits_for(state, project_id, resources).await?;
    let own = state.store.user_quota_overrides(project_id, user_id).await?;
    let mut out = project;
    for (i, r) in resources.iter().enumerate() {
        if let Some(l) = own.get(&format!("{PREFIX}{r}")) {
            out[i] = *l;
        }
    }
    Ok(out)
}

/// What a project uses now: instances, cores and RAM from its live servers; key pairs are the
/// caller's own (Nova counts them per user). Read once per response.
struct Usage {
    instances: i64,
    cores: i64,
    ram: i64,
    key_pairs: i64,
    server_groups: i64,
}

impl Usage {
    /// The project's usage, or with `user` that user's share of it; key pairs are always one
    /// user's (`user`, else the caller).
    async fn read(state: &AppState, ctx: &Ctx, project_id: &str, user: Option<&str>) -> ApiResult<Usage> {
        let (instances, cores, ram) = match user {
            Some(u) => state.store.user_usage(project_id, u).await?,
            None => state.store.project_usage(project_id).await?,
        };
        let key_pairs = state.store.count_keypairs(user.unwrap_or(&ctx.user.id)).await?;
        // Server groups count per project, as Nova's `server_groups` quota.
        let server_groups = state.store.count_server_groups(project_id).await?;
        Ok(Usage { instances, cores, ram, key_pairs, server_groups })
    }

    fn of(&self, resource: &str) -> i64 {
        match resource {
            "instances" => self.instances,
            "cores" => self.cores,
            "ram" => self.ram,
            "key_pairs" => self.key_pairs,
            "server_groups" => self.server_groups,
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

/// The effective limits of a project, or with `user` of that user in it (their overrides over
/// the project's), before defaults (`defaults` skips every override).
async fn overrides(
    state: &AppState,
    project_id: &str,
    user: Option<&str>,
    defaults: bool,
) -> ApiResult<std::collections::BTreeMap<String, i64>> {
    if defaults {
        return with_class_defaults(state, Default::default()).await;
    }
    let mut o = with_class_defaults(state, state.store.quota_overrides(project_id).await?).await?;
    if let Some(u) = user {
        o.extend(state.store.user_quota_overrides(project_id, u).await?);
    }
    Ok(o)
}

async fn quota_set(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    project_id: &str,
    user: Option<&str>,
    detail: bool,
    defaults: bool,
) -> ApiResult<Value> {
    let overrides = overrides(state, project_id, user, defaults).await?;
    let usage = if detail { Some(Usage::read(state, ctx, project_id, user).await?) } else { None };
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
    q: Query,
) -> JsonResult {
    check_project(&ctx, &pid, "os_compute_api:os-quota-sets:show")?;
    let user = q.get("user_id");
    Ok(axum::Json(json!({"quota_set": quota_set(&state, &ctx, v, &pid, user, false, false).await?})))
}

pub async fn detail(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(pid): Path<String>,
    q: Query,
) -> JsonResult {
    check_project(&ctx, &pid, "os_compute_api:os-quota-sets:detail")?;
    let user = q.get("user_id");
    Ok(axum::Json(json!({"quota_set": quota_set(&state, &ctx, v, &pid, user, true, false).await?})))
}

pub async fn defaults(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(pid): Path<String>,
) -> JsonResult {
    ctx.require_reader("os_compute_api:os-quota-sets:defaults")?;
    Ok(axum::Json(json!({"quota_set": quota_set(&state, &ctx, v, &pid, None, false, true).await?})))
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
    let user = q.get("user_id");
    // A user's limit may not exceed the project's (Nova's settable maximum).
    let project_limits = overrides(&state, &pid, None, false).await?;
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
        if user.is_some() {
            let max = project_limits
                .get(&format!("{PREFIX}{k}"))
                .copied()
                .or_else(|| QUOTAS.iter().find(|q| q.0 == k).map(|q| q.1))
                .unwrap_or(-1);
            if max >= 0 && (n > max || n == -1) {
                return Err(ApiError::bad_request(format!(
                    "Quota limit {n} for {k} must be less than or equal to {max}."
                )));
            }
        }
        updates.push((k.clone(), n));
    }
    for (k, n) in updates {
        let resource = format!("{PREFIX}{k}");
        match user {
            Some(u) => state.store.set_user_quota(&pid, u, &resource, n).await?,
            None => state.store.set_quota(&pid, &resource, n).await?,
        }
    }
    let mut out = quota_set(&state, &ctx, v, &pid, user, false, false).await?;
    if let Some(o) = out.as_object_mut() {
        o.remove("id");
    }
    Ok(axum::Json(json!({"quota_set": out})))
}

/// `DELETE /os-quota-sets/{project_id}` (admin): back to defaults, 202; with `user_id`, that
/// user's overrides only (back to the project's limits).
pub async fn reset(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(pid): Path<String>,
    q: Query,
) -> ApiResult<StatusCode> {
    ctx.require_admin("os_compute_api:os-quota-sets:delete")?;
    if let Some(user) = q.get("user_id") {
        state.store.reset_user_quotas(&pid, user).await?;
        return Ok(StatusCode::ACCEPTED);
    }
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
    let overrides = with_class_defaults(&state, state.store.quota_overrides(&pid).await?).await?;
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
    let used = Usage::read(&state, &ctx, &pid, None).await?;
    a.insert("totalInstancesUsed".into(), json!(used.instances));
    a.insert("totalCoresUsed".into(), json!(used.cores));
    a.insert("totalRAMUsed".into(), json!(used.ram));
    a.insert("totalServerGroupsUsed".into(), json!(used.server_groups));
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

// ---- os-quota-class-sets ----

/// The quota class whose limits are the defaults of every project (Nova's DbQuotaDriver reads
/// only this one).
const DEFAULT_CLASS: &str = "default";

/// `overrides` (prefixed resource → limit) over the `default` class's limits: what a project
/// gets where it has no limit of its own.
async fn with_class_defaults(
    state: &AppState,
    overrides: std::collections::BTreeMap<String, i64>,
) -> ApiResult<std::collections::BTreeMap<String, i64>> {
    let mut out: std::collections::BTreeMap<String, i64> =
        state.store.quota_class(DEFAULT_CLASS).await?.into_iter().map(|(k, v)| (format!("{PREFIX}{k}"), v)).collect();
    out.extend(overrides);
    Ok(out)
}

/// Whether a quota class set shows `name` at `v` (Nova's `_format_quota_set`: server group
/// keys from 2.50, network ones until 2.49, injected files until 2.56).
fn class_shows(v: ApiVersion, name: &str) -> bool {
    match name {
        "server_groups" | "server_group_members" => v.at_least(50),
        "fixed_ips" | "floating_ips" | "security_groups" | "security_group_rules" => !v.at_least(50),
        "injected_files" | "injected_file_content_bytes" | "injected_file_path_bytes" => !v.at_least(57),
        _ => true,
    }
}

/// Whether `PUT` accepts `name` at `v` (Nova's update schemas: server group keys always).
fn class_accepts(v: ApiVersion, name: &str) -> bool {
    matches!(name, "server_groups" | "server_group_members") || class_shows(v, name)
}

async fn class_set(state: &AppState, v: ApiVersion, class: &str) -> ApiResult<Map<String, Value>> {
    let stored = state.store.quota_class(class).await?;
    let mut o = Map::new();
    for (name, default, _) in QUOTAS {
        if class_shows(v, name) {
            o.insert(name.into(), json!(stored.get(name).copied().unwrap_or(default)));
        }
    }
    Ok(o)
}

/// `GET /os-quota-class-sets/{id}` (admin).
pub async fn show_class(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-quota-class-sets:show")?;
    let mut o = class_set(&state, v, &id).await?;
    o.insert("id".into(), json!(id));
    Ok(axum::Json(json!({"quota_class_set": o})))
}

/// `PUT /os-quota-class-sets/{id}` (admin): the answer carries no `id`, as Nova's.
pub async fn update_class(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-quota-class-sets:update")?;
    let set = body.get("quota_class_set").and_then(Value::as_object).ok_or_else(|| {
        ApiError::bad_request(
            "Invalid input for field/attribute quota_class_set. 'quota_class_set' is a required property",
        )
    })?;
    if let Some(k) = body.as_object().and_then(|o| o.keys().find(|k| *k != "quota_class_set")) {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute body. Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    if id.is_empty() || id.chars().count() > 255 {
        return Err(ApiError::bad_request("quota_class_name has a length that is not between 1 and 255 characters."));
    }
    let mut updates = Vec::new();
    for (k, val) in set {
        if !QUOTAS.iter().any(|q| q.0 == k) || !class_accepts(v, k) {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute quota_class_set. Additional properties are not allowed ('{k}' was unexpected)"
            )));
        }
        let n = match val {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse::<i64>().ok(),
            _ => None,
        }
        .filter(|n| (-1..=0x7FFF_FFFF).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for field/attribute {k}. Value: {val}. Must be an integer >= -1"
            ))
        })?;
        updates.push((k.clone(), n));
    }
    for (k, n) in updates {
        state.store.set_quota_class(&id, &k, n).await?;
    }
    Ok(axum::Json(json!({"quota_class_set": class_set(&state, v, &id).await?})))
}

/// The default availability zone every host joins unless configured otherwise.
pub const DEFAULT_AZ: &str = "nova";
