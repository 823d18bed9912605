//! `/v2.0/quotas`: Neutron's per-project quotas (defaults as Neutron's), with usage details.
//! Limits are enforced by the store when networks, subnets and ports are created.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::api::{self, JsonResult, deny, invalid};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;
use crate::store::network::{QUOTA_DEFAULTS, QUOTA_PREFIX};

fn effective(overrides: &BTreeMap<String, i64>) -> Map<String, Value> {
    QUOTA_DEFAULTS
        .iter()
        .map(|(name, default)| {
            let v = overrides.get(&format!("{QUOTA_PREFIX}{name}")).copied().unwrap_or(*default);
            (name.to_string(), json!(v))
        })
        .collect()
}

fn defaults() -> Map<String, Value> {
    QUOTA_DEFAULTS.iter().map(|(name, v)| (name.to_string(), json!(v))).collect()
}

/// Reading a project's quotas: its own readers, or admins.
fn may_read(ctx: &Ctx, project_id: &str) -> ApiResult<()> {
    ctx.require_reader("get_quota").map_err(|_| deny("get_quota"))?;
    if !ctx.is_admin() && ctx.project_id()? != project_id {
        return Err(deny("get_quota"));
    }
    Ok(())
}

/// `GET /v2.0/quotas` (admin): every project with non-default network quotas.
pub async fn list(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_admin("get_quota").map_err(|_| deny("get_quota"))?;
    let mut out = Vec::new();
    for pid in state.store.network_quota_projects().await? {
        let mut q = effective(&state.store.quota_overrides(&pid).await?);
        q.insert("project_id".into(), json!(pid));
        q.insert("tenant_id".into(), json!(pid));
        out.push(Value::Object(q));
    }
    Ok(axum::Json(json!({"quotas": out})))
}

pub async fn show(State(state): State<AppState>, ctx: Ctx, Path(pid): Path<String>) -> JsonResult {
    may_read(&ctx, &pid)?;
    Ok(axum::Json(json!({"quota": effective(&state.store.quota_overrides(&pid).await?)})))
}

pub async fn show_default(ctx: Ctx, Path(_pid): Path<String>) -> JsonResult {
    ctx.require_reader("get_quota").map_err(|_| deny("get_quota"))?;
    Ok(axum::Json(json!({"quota": defaults()})))
}

pub async fn details(State(state): State<AppState>, ctx: Ctx, Path(pid): Path<String>) -> JsonResult {
    may_read(&ctx, &pid)?;
    let limits = effective(&state.store.quota_overrides(&pid).await?);
    let usage = state.store.network_usage(&pid).await?;
    let out: Map<String, Value> = limits
        .into_iter()
        .map(|(k, limit)| {
            let used = usage.get(&k).copied().unwrap_or(0);
            (k, json!({"limit": limit, "used": used, "reserved": 0}))
        })
        .collect();
    Ok(axum::Json(json!({"quota": out})))
}

/// `GET /v2.0/quotas/tenant`: the caller's project id, as Neutron answers it.
pub async fn tenant(ctx: Ctx) -> JsonResult {
    Ok(axum::Json(json!({"tenant": {"tenant_id": ctx.project_id()?}})))
}

pub async fn project(ctx: Ctx) -> JsonResult {
    Ok(axum::Json(json!({"project": {"project_id": ctx.project_id()?}})))
}

/// `PUT /v2.0/quotas/{project_id}` (admin). `check_limit: true` refuses limits below usage;
/// `force` skips that check.
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(pid): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("update_quota").map_err(|_| deny("update_quota"))?;
    let set = body
        .get("quota")
        .and_then(Value::as_object)
        .ok_or_else(|| api::bad("Unable to find 'quota' in request body"))?;
    let unknown: Vec<&str> = set
        .keys()
        .filter(|k| *k != "check_limit" && *k != "force" && !QUOTA_DEFAULTS.iter().any(|q| q.0 == k.as_str()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(api::bad(format!("Unrecognized attribute(s) '{}'", unknown.join(", "))));
    }
    let check_limit = set.get("check_limit").map(|v| api::to_bool("check_limit", v)).transpose()?.unwrap_or(false);
    let force = set.get("force").map(|v| api::to_bool("force", v)).transpose()?.unwrap_or(false);
    let mut updates = Vec::new();
    for (k, v) in set.iter().filter(|(k, _)| *k != "check_limit" && *k != "force") {
        let n = api::to_int(k, v)?;
        if n < -1 {
            return Err(invalid(k, format!("'{n}' is too small - must be at least '-1'")));
        }
        updates.push((k.clone(), n));
    }
    if check_limit && !force {
        let usage = state.store.network_usage(&pid).await?;
        for (k, n) in &updates {
            let used = usage.get(k).copied().unwrap_or(0);
            if *n >= 0 && *n < used {
                return Err(ApiError::bad_request(format!(
                    "Quota limit {n} for {k} must be greater than or equal to already used and reserved {used}."
                ))
                .kind("InvalidQuotaValue"));
            }
        }
    }
    for (k, n) in updates {
        state.store.set_quota(&pid, &format!("{QUOTA_PREFIX}{k}"), n).await?;
    }
    Ok(axum::Json(json!({"quota": effective(&state.store.quota_overrides(&pid).await?)})))
}

/// `DELETE /v2.0/quotas/{project_id}` (admin): back to defaults.
pub async fn reset(State(state): State<AppState>, ctx: Ctx, Path(pid): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("delete_quota").map_err(|_| deny("delete_quota"))?;
    let names: Vec<String> = QUOTA_DEFAULTS.iter().map(|q| format!("{QUOTA_PREFIX}{}", q.0)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    state.store.reset_quotas(&pid, &refs).await?;
    Ok(StatusCode::NO_CONTENT)
}
