//! More of the compute API (issue 17): `os-server-password` and `os-simple-tenant-usage`.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value, json};

use super::ApiVersion;
use super::servers::visible;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;
use crate::store::extras::UsageRow;
use crate::store::{fmt_time, parse_time};

type JsonResult = ApiResult<axum::Json<Value>>;

// ---- os-server-password ----

/// `GET /servers/{id}/os-server-password`: what the guest posted, `""` when nothing.
pub async fn show_password(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    ctx.require_reader("os_compute_api:os-server-password:show")?;
    let inst = visible(&state, &ctx, &id).await?;
    let password = state.store.instance_password(&inst.id).await?.unwrap_or_default();
    Ok(axum::Json(json!({"password": password})))
}

/// `DELETE /servers/{id}/os-server-password`: 204; the guest may post a new one afterwards.
pub async fn clear_password(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_member("os_compute_api:os-server-password:clear")?;
    let inst = visible(&state, &ctx, &id).await?;
    state.store.clear_instance_password(&inst.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- os-simple-tenant-usage ----

/// Nova's `osapi_max_limit`, the page size of a usage report without `limit`.
const MAX_LIMIT: i64 = super::flavors::MAX_LIMIT as i64;

/// Nova's `_parse_datetime`: the three formats it tries, naive times taken as UTC; none → now.
fn parse_when(raw: Option<&str>) -> ApiResult<DateTime<Utc>> {
    let Some(s) = raw.filter(|s| !s.is_empty()) else {
        return Ok(Utc::now());
    };
    let parsed = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"));
    parsed
        .map(|n| n.and_utc())
        .map_err(|_| ApiError::bad_request("Invalid datetime string: Datetime is in invalid format"))
}

/// A time as Nova's JSON shows a naive datetime (`isoformat()`: microseconds only when not 0).
fn iso(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// The report's window, whether `detailed=1`, as Nova's `_parse_qs_params` (the end is
/// capped at now by the callers, after the order check).
fn window(q: &Query) -> ApiResult<(DateTime<Utc>, DateTime<Utc>, bool)> {
    let start = parse_when(q.get("start"))?;
    let end = parse_when(q.get("end"))?;
    if start >= end {
        return Err(ApiError::bad_request("Invalid start time. The start time cannot occur after the end time."));
    }
    Ok((start, end.min(Utc::now()), q.get("detailed") == Some("1")))
}

/// One instance's usage in the window (Nova's `info` dict).
struct ServerUsage {
    body: Map<String, Value>,
    hours: f64,
    vcpus: f64,
    memory_mb: f64,
    local_gb: f64,
}

/// Nova's `_hours_for` and the `info` of `_tenant_usages_for_period`.
fn server_usage(row: &UsageRow, start: DateTime<Utc>, stop: DateTime<Utc>, now: DateTime<Utc>) -> ServerUsage {
    let launched = row.launched_at.as_deref().and_then(parse_time);
    let terminated = row.terminated_at.as_deref().and_then(parse_time);
    let hours = match launched {
        _ if terminated.is_some_and(|t| t < start) => 0.0,
        Some(l) if l > stop => 0.0,
        Some(l) => {
            let from = l.max(start);
            let to = terminated.map_or(stop, |t| t.min(stop));
            (to - from).num_microseconds().unwrap_or(0) as f64 / 3_600_000_000.0
        }
        None => 0.0,
    };
    let flavor: Value = serde_json::from_str(&row.flavor).unwrap_or_default();
    let int = |k: &str| flavor.get(k).and_then(Value::as_i64).unwrap_or(0);
    let (vcpus, memory_mb, local_gb) = (int("vcpus"), int("ram"), int("disk") + int("ephemeral"));
    let started = launched.unwrap_or(now);
    let uptime = match terminated {
        Some(t) => (t - started).num_seconds(),
        None => (now - started).num_seconds(),
    };
    let mut body = Map::new();
    body.insert("instance_id".into(), json!(row.id));
    body.insert("name".into(), json!(row.name));
    body.insert("tenant_id".into(), json!(row.project_id));
    body.insert("flavor".into(), json!(flavor.get("name").and_then(Value::as_str).unwrap_or("")));
    body.insert("hours".into(), json!(hours));
    body.insert("memory_mb".into(), json!(memory_mb));
    body.insert("local_gb".into(), json!(local_gb));
    body.insert("vcpus".into(), json!(vcpus));
    body.insert("started_at".into(), json!(launched.map(iso)));
    body.insert("ended_at".into(), json!(terminated.map(iso)));
    let state = if terminated.is_some() { "terminated".to_string() } else { row.vm_state.clone() };
    body.insert("state".into(), json!(state));
    body.insert("uptime".into(), json!(uptime));
    ServerUsage { body, hours, vcpus: vcpus as f64, memory_mb: memory_mb as f64, local_gb: local_gb as f64 }
}

/// The page of a report: the rows after `marker` (an instance id), at most `limit`.
async fn rows(
    state: &AppState,
    v: ApiVersion,
    q: &Query,
    start: DateTime<Utc>,
    stop: DateTime<Utc>,
    project: Option<&str>,
) -> ApiResult<(Vec<UsageRow>, i64)> {
    let (limit, marker) = if v.at_least(40) {
        (q.uint("limit")?.map_or(MAX_LIMIT, |l| l.min(MAX_LIMIT)), q.get("marker"))
    } else {
        (MAX_LIMIT, None)
    };
    let marker = match marker {
        Some(m) => {
            let p = state
                .store
                .instance_project_any(m)
                .await?
                .ok_or_else(|| ApiError::bad_request(format!("Marker {m} could not be found.")))?;
            Some((p, m.to_string()))
        }
        None => None,
    };
    let rows = state
        .store
        .usage_window(
            &fmt_time(start),
            &fmt_time(stop),
            project,
            marker.as_ref().map(|(p, m)| (p.as_str(), m.as_str())),
            limit,
        )
        .await?;
    Ok((rows, limit))
}

/// One project's running totals: (hours, GB-hours, vCPU-hours, MB-hours, server usages).
#[derive(Default)]
struct Totals(f64, f64, f64, f64, Vec<Value>);

/// Per-project summaries in the order their first instance came (Nova's OrderedDict).
fn summarise(rows: &[UsageRow], start: DateTime<Utc>, stop: DateTime<Utc>, detailed: bool) -> Vec<Map<String, Value>> {
    let now = Utc::now();
    let mut order: Vec<String> = Vec::new();
    let mut by_project: BTreeMap<String, Totals> = BTreeMap::new();
    for row in rows {
        let u = server_usage(row, start, stop, now);
        let entry = by_project.entry(row.project_id.clone()).or_insert_with(|| {
            order.push(row.project_id.clone());
            Totals::default()
        });
        entry.0 += u.hours;
        entry.1 += u.local_gb * u.hours;
        entry.2 += u.vcpus * u.hours;
        entry.3 += u.memory_mb * u.hours;
        if detailed {
            entry.4.push(Value::Object(u.body));
        }
    }
    order
        .into_iter()
        .filter_map(|p| {
            let Totals(hours, gb, vcpus, mb, servers) = by_project.remove(&p)?;
            let mut s = Map::new();
            s.insert("tenant_id".into(), json!(p));
            if detailed {
                s.insert("server_usages".into(), Value::Array(servers));
            }
            s.insert("total_local_gb_usage".into(), json!(gb));
            s.insert("total_vcpus_usage".into(), json!(vcpus));
            s.insert("total_memory_mb_usage".into(), json!(mb));
            s.insert("total_hours".into(), json!(hours));
            s.insert("start".into(), json!(iso(start)));
            s.insert("stop".into(), json!(iso(stop)));
            Some(s)
        })
        .collect()
}

/// Nova's `_get_collection_links` for a usage report: a `next` link when the page is full,
/// the request's own query with the last instance as `marker`.
fn usage_links(state: &AppState, path: &str, q: &Query, rows: &[UsageRow], limit: i64) -> Option<Value> {
    let last = rows.last().filter(|_| usize::try_from(limit).is_ok_and(|l| l > 0 && l == rows.len()))?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, val) in q.0.iter().filter(|(k, _)| k != "marker") {
        query.append_pair(k, val);
    }
    query.append_pair("marker", &last.id);
    Some(json!([{"rel": "next", "href": state.url(&format!("compute/v2.1/{path}?{}", query.finish()))}]))
}

/// `GET /os-simple-tenant-usage` (admin): every project's usage in the window.
pub async fn list_usage(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    slash: Option<Extension<crate::TrailingSlash>>,
    q: Query,
) -> JsonResult {
    // `/os-simple-tenant-usage/` is a show of the empty project id: Nova has no such route.
    if slash.is_some() {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    ctx.require_admin("os_compute_api:os-simple-tenant-usage:list")?;
    let (start, stop, detailed) = window(&q)?;
    let (rows, limit) = rows(&state, v, &q, start, stop, None).await?;
    let mut body = json!({"tenant_usages": summarise(&rows, start, stop, detailed)});
    if v.at_least(40)
        && let Some(links) = usage_links(&state, "os-simple-tenant-usage", &q, &rows, limit)
    {
        body["tenant_usages_links"] = links;
    }
    Ok(axum::Json(body))
}

/// `GET /os-simple-tenant-usage/{project_id}`: one project's usage, always detailed; `{}` when
/// it had nothing in the window. Its own project for members, any for admins.
pub async fn show_usage(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(project_id): Path<String>,
    q: Query,
) -> JsonResult {
    let policy = "os_compute_api:os-simple-tenant-usage:show";
    ctx.require_reader(policy)?;
    if !ctx.is_admin() && ctx.project_id()? != project_id {
        return Err(ApiError::policy(policy));
    }
    let (start, stop, _) = window(&q)?;
    let (rows, limit) = rows(&state, v, &q, start, stop, Some(&project_id)).await?;
    let usage = summarise(&rows, start, stop, true).into_iter().next().unwrap_or_default();
    let mut body = json!({"tenant_usage": usage});
    if v.at_least(40)
        && let Some(links) = usage_links(&state, &format!("os-simple-tenant-usage/{project_id}"), &q, &rows, limit)
    {
        body["tenant_usage_links"] = links;
    }
    Ok(axum::Json(body))
}
