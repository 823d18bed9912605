//! `/os-server-groups`: groups of servers the scheduler keeps together (affinity) or apart
//! (anti-affinity), hard or soft (2.15), with `max_server_per_host` (2.64).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::ApiVersion;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::groups::ServerGroup;
use crate::store::{new_uuid, now};

type JsonResult = ApiResult<axum::Json<Value>>;

const POLICY: &str = "os_compute_api:os-server-groups";

fn bad(field: &str, value: &Value, why: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid input for field/attribute {field}. Value: {value}. {why}"))
}

/// One group as Nova shows it at this microversion, with its live members.
fn group_json(v: ApiVersion, g: &ServerGroup, members: Vec<String>) -> Value {
    let mut o = json!({"id": g.id, "name": g.name, "members": members});
    if v.at_least(64) {
        o["policy"] = json!(g.policy);
        o["rules"] = serde_json::from_str(&g.rules).unwrap_or_else(|_| json!({}));
    } else {
        o["policies"] = json!([g.policy]);
        o["metadata"] = json!({});
    }
    if v.at_least(13) {
        o["project_id"] = json!(g.project_id);
        o["user_id"] = json!(g.user_id);
    }
    o
}

async fn with_members(state: &AppState, v: ApiVersion, groups: &[ServerGroup]) -> ApiResult<Vec<Value>> {
    let ids: Vec<&str> = groups.iter().map(|g| g.id.as_str()).collect();
    let members = state.store.group_members(&ids).await?;
    Ok(groups
        .iter()
        .map(|g| {
            let mine = members.iter().filter(|m| m.group_id == g.id).map(|m| m.instance_id.clone()).collect();
            group_json(v, g, mine)
        })
        .collect())
}

/// The group if the caller may see it (its project, or an admin); 404 when there is none.
async fn visible(state: &AppState, ctx: &Ctx, id: &str, action: &str) -> ApiResult<ServerGroup> {
    let g = state.store.get_server_group(id).await?;
    ctx.require_reader(action)?;
    if !ctx.owns(&g.project_id) {
        return Err(ApiError::policy(action));
    }
    Ok(g)
}

pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    ctx.require_reader(&format!("{POLICY}:index"))?;
    if v.at_least(75)
        && let Some(k) = q.0.iter().map(|(k, _)| k).find(|k| !["all_projects", "limit", "offset"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{k}' was unexpected)")));
    }
    let number = |key: &str| -> ApiResult<Option<usize>> {
        match q.get(key) {
            None => Ok(None),
            Some(s) => s
                .parse::<usize>()
                .map(Some)
                .map_err(|_| bad(key, &json!(s), &format!("'{s}' does not match '^[0-9]*$'"))),
        }
    };
    let (limit, offset) = (number("limit")?, number("offset")?.unwrap_or(0));
    let all = q.get("all_projects").is_some() && ctx.is_admin();
    let groups = state.store.list_server_groups(if all { None } else { Some(ctx.project_id()?) }).await?;
    // Nova's `common.limited`: at most osapi_max_limit (1000) items.
    let max = 1000;
    let page: Vec<ServerGroup> = groups.into_iter().skip(offset).take(limit.unwrap_or(max).min(max)).collect();
    Ok(axum::Json(json!({"server_groups": with_members(&state, v, &page).await?})))
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    let g = visible(&state, &ctx, &id, &format!("{POLICY}:show")).await?;
    let body = with_members(&state, v, std::slice::from_ref(&g)).await?.pop().unwrap_or_default();
    Ok(axum::Json(json!({"server_group": body})))
}

pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let action = format!("{POLICY}:delete");
    let g = state.store.get_server_group(&id).await?;
    ctx.require_member(&action)?;
    if !ctx.owns(&g.project_id) {
        return Err(ApiError::policy(&action));
    }
    state.store.delete_server_group(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The policy and rules of a create body at this microversion, validated as Nova's schemas.
fn policy_and_rules(v: ApiVersion, b: &Map<String, Value>) -> ApiResult<(String, Value)> {
    let body = Value::Object(b.clone());
    let mut allowed = vec!["anti-affinity", "affinity"];
    if v.at_least(15) {
        allowed.extend(["soft-anti-affinity", "soft-affinity"]);
    }
    let allowed_text = format!("[{}]", allowed.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", "));
    let known: &[&str] = if v.at_least(64) { &["name", "policy", "rules"] } else { &["name", "policies"] };
    if let Some(k) = b.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(
            "server_group",
            &body,
            &format!("Additional properties are not allowed ('{k}' was unexpected)"),
        ));
    }
    if !v.at_least(64) {
        let Some(p) = b.get("policies") else {
            return Err(bad("server_group", &body, "'policies' is a required property"));
        };
        let Some(list) = p.as_array() else {
            return Err(bad("policies", p, &format!("{p} is not of type 'array'")));
        };
        if list.is_empty() {
            return Err(bad("policies", p, "[] should be non-empty"));
        }
        if list.len() > 1 {
            return Err(bad("policies", p, &format!("{p} is too long")));
        }
        let policy = match list[0].as_str() {
            Some(s) if allowed.contains(&s) => s.to_string(),
            _ => return Err(bad("0", &list[0], &format!("{} is not one of {allowed_text}", list[0]))),
        };
        return Ok((policy, json!({})));
    }
    let Some(p) = b.get("policy") else {
        return Err(bad("server_group", &body, "'policy' is a required property"));
    };
    let policy = match p.as_str() {
        Some(s) if allowed.contains(&s) => s.to_string(),
        _ => return Err(bad("policy", p, &format!("{p} is not one of {allowed_text}"))),
    };
    let rules = match b.get("rules") {
        None => json!({}),
        Some(Value::Object(r)) => {
            let mut out = Map::new();
            for (k, val) in r {
                if k != "max_server_per_host" {
                    return Err(bad(
                        "rules",
                        &Value::Object(r.clone()),
                        &format!("Additional properties are not allowed ('{k}' was unexpected)"),
                    ));
                }
                let n = match val {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => s.parse().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if n >= 1 => {
                        out.insert(k.clone(), json!(n));
                    }
                    Some(_) => {
                        return Err(bad("max_server_per_host", val, &format!("{val} is less than the minimum of 1")));
                    }
                    None => {
                        return Err(bad(
                            "max_server_per_host",
                            val,
                            &format!("{val} is not of type 'integer', 'string'"),
                        ));
                    }
                }
            }
            Value::Object(out)
        }
        Some(other) => return Err(bad("rules", other, &format!("{other} is not of type 'object'"))),
    };
    if policy != "anti-affinity" && rules.as_object().is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::bad_request("Only anti-affinity policy supports rules."));
    }
    Ok((policy, rules))
}

/// Nova's `parameter_types.name`: 1-255 characters, printable, no leading/trailing whitespace.
fn check_name(name: Option<&Value>, body: &Value) -> ApiResult<String> {
    let Some(n) = name else {
        return Err(bad("server_group", body, "'name' is a required property"));
    };
    let Some(s) = n.as_str() else {
        return Err(bad("name", n, &format!("{n} is not of type 'string'")));
    };
    if s.is_empty() {
        return Err(bad("name", n, "'' is too short"));
    }
    if s.chars().count() > 255 {
        return Err(bad("name", n, &format!("{n} is too long")));
    }
    if s.trim() != s || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute name. Value: {s}. An invalid 'name' value was provided. The name \
             must be: printable characters. Can not start or end with whitespace."
        )));
    }
    Ok(s.to_string())
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_member(&format!("{POLICY}:create"))?;
    let project_id = ctx.project_id()?.to_string();
    if let Some(k) = body.as_object().and_then(|o| o.keys().find(|k| *k != "server_group")) {
        return Err(ApiError::bad_request(format!("Additional properties are not allowed ('{k}' was unexpected)")));
    }
    let b = match body.get("server_group") {
        Some(Value::Object(b)) => b,
        Some(other) => return Err(bad("server_group", other, &format!("{other} is not of type 'object'"))),
        None => return Err(ApiError::bad_request("'server_group' is a required property")),
    };
    let name = check_name(b.get("name"), &Value::Object(b.clone()))?;
    let (policy, rules) = policy_and_rules(v, b)?;
    // Quota (Nova checks before creating and again after; one check here, then the recheck).
    let limit = super::quotas::limit_for(&state, &project_id, "server_groups").await?;
    let over = |n: i64| limit >= 0 && n > limit;
    if over(state.store.count_server_groups(&project_id).await? + 1) {
        return Err(ApiError::forbidden("Quota exceeded, too many server groups."));
    }
    let g = ServerGroup {
        id: new_uuid(),
        name,
        project_id: project_id.clone(),
        user_id: ctx.user.id.clone(),
        policy,
        rules: rules.to_string(),
        created_at: now(),
    };
    state.store.create_server_group(&g).await?;
    if over(state.store.count_server_groups(&project_id).await?) {
        state.store.delete_server_group(&g.id).await?;
        return Err(ApiError::forbidden("Quota exceeded, too many server groups."));
    }
    Ok(axum::Json(json!({"server_group": group_json(v, &g, Vec::new())})))
}

/// The `group` scheduler hint of a boot: the group (which must exist and be visible to the
/// caller, else 400 as Nova's InstanceGroupNotFound) and the room left in it under the
/// `server_group_members` quota (negative: unlimited).
pub(crate) async fn group_for_boot(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<(ServerGroup, i64)> {
    let missing = || ApiError::bad_request(format!("Instance group {id} could not be found."));
    let g = match state.store.get_server_group(id).await {
        Ok(g) if ctx.owns(&g.project_id) => g,
        Ok(_) | Err(crate::store::StoreError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    let limit = super::quotas::limit_for(state, &g.project_id, "server_group_members").await?;
    Ok((g, limit))
}

/// The scheduler hints of a `POST /servers` body (`os:scheduler_hints`, or the legacy
/// `OS-SCH-HNT:scheduler_hints`), validated as Nova's schema: `group` a server group UUID (or a
/// list of them), `different_host` / `same_host` server UUIDs (one or a list). Other hints are
/// kept as given. `{}` when there are none.
pub(crate) fn boot_hints(body: &Value) -> ApiResult<Map<String, Value>> {
    let raw = body.get("os:scheduler_hints").or_else(|| body.get("OS-SCH-HNT:scheduler_hints"));
    let hints = match raw {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(h)) => h.clone(),
        Some(other) => {
            return Err(bad("os:scheduler_hints", other, &format!("{other} is not of type 'object'")));
        }
    };
    let is_uuid = |s: &str| uuid::Uuid::try_parse(s).is_ok();
    for key in ["group", "different_host", "same_host"] {
        let Some(val) = hints.get(key) else { continue };
        let ok = match val {
            Value::String(s) => key == "same_host" || is_uuid(s),
            Value::Array(items) => items.iter().all(|i| i.as_str().is_some_and(|s| key != "group" || is_uuid(s))),
            _ => false,
        };
        if !ok {
            return Err(bad(key, val, &format!("{val} is not valid under any of the given schemas")));
        }
    }
    Ok(hints)
}

/// The one group a boot's `group` hint names, if any.
pub(crate) fn group_hint(hints: &Map<String, Value>) -> Option<String> {
    match hints.get("group")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Zones a boot may ask for: those of the enabled compute hosts (Nova's
/// `get_availability_zones(get_only_available=True)`).
pub(crate) async fn zone_available(state: &AppState, zone: &str) -> ApiResult<bool> {
    Ok(state.store.list_hosts().await?.iter().any(|h| h.enabled != 0 && h.availability_zone == zone))
}
