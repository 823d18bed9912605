//! The overview's usage section: what the project consumed this month so far, from Nova's
//! `os-simple-tenant-usage/{project}` (servers, vCPU·hours, RAM GB·hours, disk GB·hours), and for
//! admins every project's totals from `os-simple-tenant-usage`. A cloud that refuses (403) or
//! lacks (404) the API simply has no usage section.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use meridian_common::{Client, ClientError};

/// Usage totals over a period.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Instances that ran in the period (the project), or projects with usage (all projects).
    pub count: usize,
    pub vcpu_hours: f64,
    pub ram_gb_hours: f64,
    pub disk_gb_hours: f64,
}

/// What the overview shows: the project's usage and, for admins, every project's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageReport {
    /// `None`: the cloud has no usage API for this user (403/404); `Err`: it failed otherwise.
    pub project: Option<Result<Usage, String>>,
    pub all_projects: Option<Usage>,
}

/// The first instant of `now`'s month (UTC).
pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().unwrap_or(now)
}

fn add(u: &mut Usage, t: &Value) {
    let f = |k: &str| t[k].as_f64().unwrap_or(0.0);
    u.vcpu_hours += f("total_vcpus_usage");
    u.ram_gb_hours += f("total_memory_mb_usage") / 1024.0;
    u.disk_gb_hours += f("total_local_gb_usage");
}

/// Every page of a usage report (`<key>_links` from 2.40), at most 100.
async fn pages(client: &Client, path: &str, key: &str) -> Result<Vec<Value>, ClientError> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..100 {
        let page = match &next {
            None => client.get("compute", path).await?,
            Some(url) => client.send_url(Method::GET, "compute", url, None).await?,
        };
        out.push(page[key].clone());
        next = page[format!("{key}_links")]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["rel"] == "next"))
            .and_then(|x| x["href"].as_str())
            .map(str::to_string);
        if next.is_none() {
            break;
        }
    }
    Ok(out)
}

/// Reads the report for `project_id` over [`month_start`]..`now`; admins also get the totals of
/// every project.
pub async fn report(client: &Client, project_id: &str, admin: bool, now: DateTime<Utc>) -> UsageReport {
    let start = month_start(now);
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    // The query has whole seconds: an end a minute ahead keeps an instance launched in the last
    // second in the report (the cloud caps the end at its own now).
    let window = format!("start={}&end={}", fmt(start), fmt(now + chrono::Duration::minutes(1)));
    let empty = Usage { start, end: now, ..Usage::default() };
    let project = match pages(client, &format!("/os-simple-tenant-usage/{project_id}?{window}"), "tenant_usage").await {
        Ok(pages) => {
            let mut u = empty.clone();
            for p in &pages {
                add(&mut u, p);
                u.count += p["server_usages"].as_array().map_or(0, Vec::len);
            }
            Some(Ok(u))
        }
        Err(e) if matches!(e.status(), Some(StatusCode::FORBIDDEN | StatusCode::NOT_FOUND)) => None,
        Err(e) => {
            tracing::info!(error = %e, "usage unavailable");
            Some(Err(e.to_string()))
        }
    };
    let all_projects = if admin {
        match pages(client, &format!("/os-simple-tenant-usage?{window}&detailed=0"), "tenant_usages").await {
            Ok(pages) => {
                let mut u = empty;
                for t in pages.iter().flat_map(|p| p.as_array().cloned().unwrap_or_default()) {
                    add(&mut u, &t);
                    u.count += 1;
                }
                Some(u)
            }
            Err(e) => {
                tracing::info!(error = %e, "all projects' usage unavailable");
                None
            }
        }
    } else {
        None
    };
    UsageReport { project, all_projects }
}

/// `12.5` as `12.5`, `1234.56` as `1235`: enough to read, no false precision.
pub fn figure(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_starts_on_the_first_of_the_month() {
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 3, 4, 5).single().expect("time");
        assert_eq!(month_start(now), Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().expect("time"));
        assert_eq!(figure(1234.56), "1235");
        assert_eq!(figure(2.25), "2.2");
    }

    #[test]
    fn totals_are_summed_with_ram_in_gb() {
        let mut u = Usage::default();
        let t =
            serde_json::json!({"total_vcpus_usage": 2.0, "total_memory_mb_usage": 1024.0, "total_local_gb_usage": 5.0});
        add(&mut u, &t);
        add(&mut u, &t);
        assert_eq!((u.vcpu_hours, u.ram_gb_hours, u.disk_gb_hours), (4.0, 2.0, 10.0));
    }
}
