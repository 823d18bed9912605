//! `os-instance_usage_audit_log` (admin): how far the computes' instance usage audit got for the
//! last completed audit period (a month, Nova's default `instance_usage_audit_period`).
//!
//! Nova's compute hosts write an audit task log only when `instance_usage_audit` is on, which
//! it is not by default; the agents here never run that audit, so every compute host is listed
//! as not run, exactly as a default Nova answers.

use axum::extract::{Path, State};
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::{Value, json};

use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

type JsonResult = ApiResult<axum::Json<Value>>;

/// The first day of the month before `date`'s month.
fn month_before(date: NaiveDate) -> NaiveDate {
    let (y, m) = if date.month() == 1 { (date.year() - 1, 12) } else { (date.year(), date.month() - 1) };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(date)
}

/// Nova's `last_completed_audit_period` for a monthly period: the month that ended last
/// before `before` (a period ending exactly at `before` is not yet completed).
pub fn last_completed_month(before: NaiveDateTime) -> (NaiveDateTime, NaiveDateTime) {
    let first_of_month = before.date().with_day(1).unwrap_or(before.date());
    let mut end = first_of_month.and_time(NaiveTime::MIN);
    if end >= before {
        end = month_before(first_of_month).and_time(NaiveTime::MIN);
    }
    let begin = month_before(end.date()).and_time(NaiveTime::MIN);
    (begin, end)
}

/// Python's `str(datetime)` for a whole-second time.
fn py_time(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

async fn task_log(state: &AppState, before: NaiveDateTime) -> ApiResult<Value> {
    let (begin, end) = last_completed_month(before);
    let mut hosts: Vec<String> = state.store.list_hosts().await?.into_iter().map(|h| h.name).collect();
    hosts.sort();
    hosts.dedup();
    let n = hosts.len();
    Ok(json!({
        "period_beginning": py_time(begin),
        "period_ending": py_time(end),
        "num_hosts": n,
        "num_hosts_done": 0,
        "num_hosts_running": 0,
        "num_hosts_not_run": n,
        "hosts_not_run": hosts,
        "total_instances": 0,
        "total_errors": 0,
        // Nova says ALL when every host is done, which for zero hosts is also 0 of 0.
        "overall_status": if n == 0 { "ALL hosts done. 0 errors.".to_string() } else { format!("0 of {n} hosts done. 0 errors.") },
        "log": {},
    }))
}

/// `GET /os-instance_usage_audit_log`: the last completed period before now.
pub async fn list(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_admin("os_compute_api:os-instance-usage-audit-log:list")?;
    let log = task_log(&state, chrono::Utc::now().naive_utc()).await?;
    Ok(axum::Json(json!({"instance_usage_audit_logs": log})))
}

/// `GET /os-instance_usage_audit_log/{before}`: the last period completed before `before`
/// (`YYYY-MM-DD HH:MM:SS[.ffffff]`).
pub async fn show(State(state): State<AppState>, ctx: Ctx, Path(before): Path<String>) -> JsonResult {
    ctx.require_admin("os_compute_api:os-instance-usage-audit-log:show")?;
    let format = if before.contains('.') { "%Y-%m-%d %H:%M:%S%.f" } else { "%Y-%m-%d %H:%M:%S" };
    let at = NaiveDateTime::parse_from_str(&before, format)
        .map_err(|_| ApiError::bad_request(format!("Invalid timestamp for date {before}")))?;
    let log = task_log(&state, at).await?;
    Ok(axum::Json(json!({"instance_usage_audit_log": log})))
}
