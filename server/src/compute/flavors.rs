//! `/flavors`: list/show per microversion, admin create/update/delete, extra specs and access.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::{ApiVersion, links};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::compute::{Flavor, FlavorFilter};
use crate::store::{StoreError, new_uuid};

type JsonResult = ApiResult<axum::Json<Value>>;

/// Nova's `osapi_max_limit`.
pub const MAX_LIMIT: usize = 1000;

const LIST_PARAMS: [&str; 7] = ["minRam", "minDisk", "is_public", "sort_key", "sort_dir", "limit", "marker"];
const SORT_KEYS: [&str; 10] = [
    "created_at",
    "description",
    "disabled",
    "ephemeral_gb",
    "flavorid",
    "id",
    "is_public",
    "memory_mb",
    "name",
    "root_gb",
];

fn flavor_json(state: &AppState, v: ApiVersion, f: &Flavor, detail: bool) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(f.id));
    o.insert("name".into(), json!(f.name));
    o.insert("links".into(), links(state, &format!("flavors/{}", f.id)));
    if v.at_least(55) {
        o.insert("description".into(), json!(f.description));
    }
    if detail {
        o.insert("ram".into(), json!(f.ram));
        o.insert("disk".into(), json!(f.disk));
        o.insert("vcpus".into(), json!(f.vcpus));
        // Before 2.75 a zero swap is the empty string.
        o.insert("swap".into(), if f.swap == 0 && !v.at_least(75) { json!("") } else { json!(f.swap) });
        o.insert("OS-FLV-EXT-DATA:ephemeral".into(), json!(f.ephemeral));
        o.insert("OS-FLV-DISABLED:disabled".into(), json!(false));
        o.insert("os-flavor-access:is_public".into(), json!(f.is_public != 0));
        o.insert("rxtx_factor".into(), json!(f.rxtx_factor));
        if v.at_least(61) {
            o.insert("extra_specs".into(), json!(f.extra_specs_map()));
        }
    }
    Value::Object(o)
}

/// A flavor the caller may use: public, or private with access for the project (admins: all).
async fn visible_flavor(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Flavor> {
    let f = state.store.get_flavor(id).await?;
    if f.is_public == 0 && !ctx.is_admin() {
        let pid = ctx.project_id()?;
        if !state.store.flavor_access(id).await?.iter().any(|p| p == pid) {
            return Err(ApiError::not_found(format!("Flavor {id} could not be found.")));
        }
    }
    Ok(f)
}

async fn list_inner(state: AppState, ctx: Ctx, v: ApiVersion, q: Query, detail: bool) -> JsonResult {
    ctx.require_reader("os_compute_api:flavors:index")?;
    if v.at_least(75)
        && let Some((k, _)) = q.0.iter().find(|(k, _)| !LIST_PARAMS.contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid input for query parameters {k}. Value: {k}. Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    let sort_key = q.get("sort_key").unwrap_or("flavorid");
    if !SORT_KEYS.contains(&sort_key) {
        return Err(ApiError::bad_request(format!("Invalid input for query parameters sort_key. Value: {sort_key}.")));
    }
    let sort_desc = match q.get("sort_dir").unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => {
            return Err(ApiError::bad_request(format!("Invalid input for query parameters sort_dir. Value: {other}.")));
        }
    };
    // Only admins choose public/private; "none" means both.
    let is_public = match q.get("is_public").map(str::to_ascii_lowercase) {
        Some(s) if ctx.is_admin() && s == "none" => None,
        Some(s) if ctx.is_admin() => Some(
            crate::extract::parse_bool(&s)
                .ok_or_else(|| ApiError::bad_request(format!("Invalid is_public filter [{s}]")))?,
        ),
        _ if ctx.is_admin() => Some(true),
        _ => None,
    };
    let filter = FlavorFilter {
        min_ram: q.uint("minRam")?,
        min_disk: q.uint("minDisk")?,
        is_public,
        project_id: if ctx.is_admin() { None } else { Some(ctx.project_id()?.to_string()) },
        sort_key: sort_key.to_string(),
        sort_desc,
    };
    let mut flavors = state.store.list_flavors(&filter).await?;
    let page = paginate(&mut flavors, &q, |f| &f.id)?;
    let body: Vec<Value> = flavors.iter().map(|f| flavor_json(&state, v, f, detail)).collect();
    let mut out = json!({"flavors": body});
    let path = if detail { "flavors/detail" } else { "flavors" };
    if let Some(l) = super::next_links(&state, path, page, flavors.len(), flavors.last().map(|f| f.id.as_str())) {
        out["flavors_links"] = l;
    }
    Ok(axum::Json(out))
}

/// Applies Nova's `marker`/`limit` to an ordered list; returns the effective limit if one was
/// given. An unknown marker is a 400, as in Nova.
pub(crate) fn paginate<T>(items: &mut Vec<T>, q: &Query, id: impl Fn(&T) -> &str) -> ApiResult<Option<usize>> {
    if let Some(marker) = q.get("marker") {
        let pos = items
            .iter()
            .position(|i| id(i) == marker)
            .ok_or_else(|| ApiError::bad_request(format!("marker [{marker}] not found")))?;
        items.drain(..=pos);
    }
    let limit = q.uint("limit")?.map(|l| usize::try_from(l).unwrap_or(MAX_LIMIT).min(MAX_LIMIT));
    let effective = limit.unwrap_or(MAX_LIMIT);
    items.truncate(effective);
    Ok(limit)
}

pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    list_inner(state, ctx, v, q, false).await
}

pub async fn list_detail(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    list_inner(state, ctx, v, q, true).await
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    ctx.require_reader("os_compute_api:flavors:show")?;
    let f = visible_flavor(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"flavor": flavor_json(&state, v, &f, true)})))
}

/// Nova accepts integers or strings of digits for flavor sizes.
fn int_field(body: &Map<String, Value>, key: &str, min: i64, default: Option<i64>) -> ApiResult<i64> {
    let bad = |why: &str| ApiError::bad_request(format!("Invalid input for field/attribute {key}. {why}"));
    let n = match body.get(key) {
        None | Some(Value::Null) => return default.ok_or_else(|| bad("This field is required.")),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| bad("Value must be an integer."))?,
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => {
            s.parse::<i64>().map_err(|_| bad("Value is too large."))?
        }
        Some(Value::String(s)) if s.is_empty() && key == "swap" => 0,
        Some(other) => return Err(bad(&format!("Value: {other}. Value must be an integer."))),
    };
    if n < min {
        return Err(bad(&format!("Value: {n}. {n} is less than the minimum of {min}")));
    }
    if n > i64::from(i32::MAX) {
        return Err(bad(&format!("Value: {n}. {n} is greater than the maximum of {}", i32::MAX)));
    }
    Ok(n)
}

fn flavor_name(body: &Map<String, Value>) -> ApiResult<String> {
    let name = body.get("name").and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request("Invalid input for field/attribute name. 'name' is a required property")
    })?;
    let trimmed = name.trim();
    if trimmed.is_empty() || name.len() > 255 || trimmed != name {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute name. Value: {name}. Must be 1-255 characters without leading or trailing whitespace."
        )));
    }
    Ok(name.to_string())
}

fn object<'a>(body: &'a Value, key: &str) -> ApiResult<&'a Map<String, Value>> {
    body.get(key).and_then(Value::as_object).ok_or_else(|| {
        ApiError::bad_request(format!("Invalid input for field/attribute {key}. '{key}' is a required property"))
    })
}

/// `POST /flavors` (admin). Answers 200, as Nova does.
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-flavor-manage:create")?;
    let b = object(&body, "flavor")?;
    let id = match b.get("id") {
        None | Some(Value::Null) => new_uuid(),
        Some(Value::String(s)) if s == "auto" => new_uuid(),
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 255
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c))
                && s.trim() == s =>
        {
            s.clone()
        }
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(other) => {
            return Err(ApiError::bad_request(format!("Invalid input for field/attribute id. Value: {other}.")));
        }
    };
    let description = match b.get("description") {
        None | Some(Value::Null) => None,
        Some(_) if !v.at_least(55) => {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute flavor. Additional properties are not allowed ('description' was unexpected)",
            ));
        }
        Some(Value::String(s)) if s.len() <= 65535 => Some(s.clone()),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute description. Value: {other}."
            )));
        }
    };
    let rxtx_factor = match b.get("rxtx_factor") {
        None | Some(Value::Null) => 1.0,
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| *f > 0.0)
            .ok_or_else(|| ApiError::bad_request("Invalid input for field/attribute rxtx_factor."))?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute rxtx_factor. Value: {other}."
            )));
        }
    };
    let is_public = match b.get("os-flavor-access:is_public") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(x)) => *x,
        Some(Value::String(s)) => crate::extract::parse_bool(s).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid input for field/attribute os-flavor-access:is_public. Value: {s}."))
        })?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute os-flavor-access:is_public. Value: {other}."
            )));
        }
    };
    let f = Flavor {
        id,
        name: flavor_name(b)?,
        vcpus: int_field(b, "vcpus", 1, None)?,
        ram: int_field(b, "ram", 1, None)?,
        disk: int_field(b, "disk", 0, None)?,
        ephemeral: int_field(b, "OS-FLV-EXT-DATA:ephemeral", 0, Some(0))?,
        swap: int_field(b, "swap", 0, Some(0))?,
        rxtx_factor,
        is_public: i64::from(is_public),
        description,
        extra_specs: "{}".into(),
    };
    match state.store.create_flavor(&f).await {
        Err(StoreError::Conflict(_)) => {
            let taken = state.store.get_flavor(&f.id).await.is_ok();
            let msg = if taken {
                format!("Flavor with ID {} already exists.", f.id)
            } else {
                format!("Flavor with name {} already exists.", f.name)
            };
            return Err(ApiError::conflict(msg));
        }
        other => other?,
    }
    Ok(axum::Json(json!({"flavor": flavor_json(&state, v, &f, true)})))
}

/// `PUT /flavors/{id}` (2.55+): only the description changes.
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    if !v.at_least(55) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "The method is not supported before microversion 2.55.",
        ));
    }
    ctx.require_admin("os_compute_api:os-flavor-manage:update")?;
    let b = object(&body, "flavor")?;
    if b.keys().any(|k| k != "description") {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute flavor. Only 'description' can be updated.",
        ));
    }
    let description = match b.get("description") {
        Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 65535 => Some(s.as_str()),
        _ => {
            return Err(ApiError::bad_request("Invalid input for field/attribute description."));
        }
    };
    state.store.update_flavor_description(&id, description).await?;
    let f = state.store.get_flavor(&id).await?;
    Ok(axum::Json(json!({"flavor": flavor_json(&state, v, &f, true)})))
}

/// `DELETE /flavors/{id}` (admin): 202.
pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_admin("os_compute_api:os-flavor-manage:delete")?;
    state.store.delete_flavor(&id).await?;
    Ok(StatusCode::ACCEPTED)
}

// ---- extra specs ----

fn spec_map(body: &Value, key: &str) -> ApiResult<BTreeMap<String, String>> {
    let m = object(body, key)?;
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let valid_key =
            !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c));
        if !valid_key {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute extra_specs. Key '{k}' is not valid."
            )));
        }
        let value = match v {
            Value::String(s) if s.len() <= 255 => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute extra_specs. Value: {other}."
                )));
            }
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
}

pub async fn list_specs(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    ctx.require_reader("os_compute_api:os-flavor-extra-specs:index")?;
    let f = visible_flavor(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"extra_specs": f.extra_specs_map()})))
}

pub async fn create_specs(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-flavor-extra-specs:create")?;
    let new = spec_map(&body, "extra_specs")?;
    let added = new.clone();
    state
        .store
        .edit_flavor_extra_specs(&id, move |specs| {
            specs.extend(added);
            Ok(())
        })
        .await?;
    Ok(axum::Json(json!({"extra_specs": new})))
}

pub async fn show_spec(State(state): State<AppState>, ctx: Ctx, Path((id, key)): Path<(String, String)>) -> JsonResult {
    ctx.require_reader("os_compute_api:os-flavor-extra-specs:show")?;
    let f = visible_flavor(&state, &ctx, &id).await?;
    let specs = f.extra_specs_map();
    let value = specs
        .get(&key)
        .ok_or_else(|| ApiError::not_found(format!("Flavor {id} has no extra specs with key {key}.")))?;
    Ok(axum::Json(json!({ key: value })))
}

pub async fn update_spec(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-flavor-extra-specs:update")?;
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("The request body must be an object."))?;
    if obj.len() != 1 || !obj.contains_key(&key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    let new = spec_map(&json!({"s": body}), "s")?;
    let added = new.clone();
    state
        .store
        .edit_flavor_extra_specs(&id, move |specs| {
            specs.extend(added);
            Ok(())
        })
        .await?;
    Ok(axum::Json(json!(new)))
}

pub async fn delete_spec(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("os_compute_api:os-flavor-extra-specs:delete")?;
    let missing = format!("Flavor {id} has no extra specs with key {key}.");
    state
        .store
        .edit_flavor_extra_specs(&id, |specs| match specs.remove(&key) {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound(missing)),
        })
        .await?;
    Ok(StatusCode::OK)
}

// ---- access ----

async fn access_json(state: &AppState, id: &str) -> JsonResult {
    let list: Vec<Value> =
        state.store.flavor_access(id).await?.into_iter().map(|p| json!({"flavor_id": id, "tenant_id": p})).collect();
    Ok(axum::Json(json!({"flavor_access": list})))
}

pub async fn list_access(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    ctx.require_admin("os_compute_api:os-flavor-access")?;
    let f = state.store.get_flavor(&id).await?;
    if f.is_public != 0 {
        return Err(ApiError::not_found("Access list not available for public flavors."));
    }
    access_json(&state, &id).await
}

/// `POST /flavors/{id}/action`: `addTenantAccess` / `removeTenantAccess`.
pub async fn action(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    let tenant = |key: &str| {
        body.get(key).and_then(|a| a.get("tenant")).and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid input for field/attribute {key}. 'tenant' is a required property"))
        })
    };
    let f = state.store.get_flavor(&id).await?;
    if body.get("addTenantAccess").is_some() {
        ctx.require_admin("os_compute_api:os-flavor-access:add_tenant_access")?;
        if f.is_public != 0 {
            return Err(ApiError::conflict("Can not add access to a public flavor."));
        }
        state.store.add_flavor_access(&id, &tenant("addTenantAccess")?).await?;
    } else if body.get("removeTenantAccess").is_some() {
        ctx.require_admin("os_compute_api:os-flavor-access:remove_tenant_access")?;
        state.store.remove_flavor_access(&id, &tenant("removeTenantAccess")?).await?;
    } else {
        return Err(ApiError::bad_request("Unknown flavor action; use addTenantAccess or removeTenantAccess."));
    }
    access_json(&state, &id).await
}
