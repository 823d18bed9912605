//! `/types`: volume types (admins create, update and delete; everyone lists the public ones)
//! and their extra specs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;
use crate::store::volume::{DEFAULT_TYPE_ID, VolumeType};
use crate::store::{StoreError, flag, new_uuid, now};

type JsonResult = ApiResult<axum::Json<Value>>;

fn specs(t: &VolumeType) -> Map<String, Value> {
    serde_json::from_str(&t.extra_specs).unwrap_or_default()
}

fn type_json(t: &VolumeType) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public != 0,
        "os-volume-type-access:is_public": t.is_public != 0,
        "extra_specs": specs(t),
    })
}

async fn find(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<VolumeType> {
    match state.store.find_volume_type(id).await {
        Ok(t) if t.is_public != 0 || ctx.is_admin() => Ok(t),
        Ok(_) | Err(StoreError::NotFound(_)) => {
            Err(ApiError::not_found(format!("Volume type {id} could not be found.")))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn list(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_reader("volume_extension:volume_type_access")?;
    let list: Vec<Value> = state
        .store
        .list_volume_types()
        .await?
        .iter()
        .filter(|t| t.is_public != 0 || ctx.is_admin())
        .map(type_json)
        .collect();
    Ok(axum::Json(json!({"volume_types": list})))
}

pub async fn show(State(state): State<AppState>, ctx: Ctx, Path((_p, id)): Path<(String, String)>) -> JsonResult {
    ctx.require_reader("volume_extension:type_get")?;
    Ok(axum::Json(json!({"volume_type": type_json(&find(&state, &ctx, &id).await?)})))
}

pub async fn show_default(State(state): State<AppState>, ctx: Ctx) -> JsonResult {
    ctx.require_reader("volume_extension:default_get")?;
    Ok(axum::Json(json!({"volume_type": type_json(&state.store.find_volume_type(DEFAULT_TYPE_ID).await?)})))
}

fn name_field(b: &Map<String, Value>, required: bool) -> ApiResult<Option<String>> {
    match b.get("name") {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 => Ok(Some(s.trim().to_string())),
        other => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute name. Value: {}. The name must be 1 to 255 characters",
            other.cloned().unwrap_or(Value::Null)
        ))),
    }
}

fn spec_map(v: Option<&Value>) -> ApiResult<Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => {
            let mut out = Map::new();
            for (k, val) in m {
                let s = match val {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid input received: extra spec {k} must be a string"
                        )));
                    }
                };
                if k.is_empty() || k.len() > 255 || s.len() > 255 {
                    return Err(ApiError::bad_request(
                        "Invalid input received: extra spec keys and values must be 1 to 255 characters",
                    ));
                }
                out.insert(k.clone(), json!(s));
            }
            Ok(out)
        }
        Some(other) => {
            Err(ApiError::bad_request(format!("Invalid input for field/attribute extra_specs. Value: {other}.")))
        }
    }
}

fn public_flag(b: &Map<String, Value>) -> ApiResult<Option<bool>> {
    match b.get("os-volume-type-access:is_public").or(b.get("is_public")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(v)) => Ok(Some(*v)),
        Some(Value::String(s)) => crate::extract::parse_bool(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("Invalid value '{s}' for is_public. Accepted values: True or False."))
        }),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid value '{other}' for is_public. Accepted values: True or False."
        ))),
    }
}

pub async fn create(State(state): State<AppState>, ctx: Ctx, Json(body): Json<Value>) -> JsonResult {
    ctx.require_admin("volume_extension:types_manage")?;
    let b = super::volumes::wrapped(&body, "volume_type")?;
    let name = name_field(b, true)?.unwrap_or_default();
    let ts = now();
    let t = VolumeType {
        id: new_uuid(),
        name,
        description: b.get("description").and_then(Value::as_str).map(str::to_string),
        is_public: flag(public_flag(b)?.unwrap_or(true)),
        extra_specs: Value::Object(spec_map(b.get("extra_specs"))?).to_string(),
        created_at: ts.clone(),
        updated_at: ts,
    };
    state.store.create_volume_type(&t).await?;
    Ok(axum::Json(json!({"volume_type": type_json(&t)})))
}

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("volume_extension:types_manage")?;
    let b = super::volumes::wrapped(&body, "volume_type")?;
    let mut t = find(&state, &ctx, &id).await?;
    if let Some(n) = name_field(b, false)? {
        if t.id == DEFAULT_TYPE_ID && n != t.name {
            return Err(ApiError::bad_request("The default volume type __DEFAULT__ cannot be renamed."));
        }
        t.name = n;
    }
    if let Some(d) = b.get("description") {
        t.description = d.as_str().map(str::to_string);
    }
    if let Some(p) = public_flag(b)? {
        t.is_public = flag(p);
    }
    state.store.update_volume_type(&t).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::conflict(format!("Volume Type {} already exists.", t.name)),
        other => other.into(),
    })?;
    // Cinder's update answer has no access flag.
    let mut body = type_json(&t);
    if let Some(m) = body.as_object_mut() {
        m.remove("os-volume-type-access:is_public");
    }
    Ok(axum::Json(json!({"volume_type": body})))
}

pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("volume_extension:types_manage")?;
    let t = find(&state, &ctx, &id).await?;
    if t.id == DEFAULT_TYPE_ID {
        return Err(ApiError::bad_request(
            "The volume type __DEFAULT__ is the default volume type and cannot be deleted.",
        ));
    }
    state.store.delete_volume_type(&t.id).await.map_err(|e| match e {
        StoreError::Conflict(m) => ApiError::bad_request(m),
        other => other.into(),
    })?;
    Ok(StatusCode::ACCEPTED)
}

pub async fn list_specs(State(state): State<AppState>, ctx: Ctx, Path((_p, id)): Path<(String, String)>) -> JsonResult {
    ctx.require_admin("volume_extension:types_extra_specs:index")?;
    Ok(axum::Json(json!({"extra_specs": specs(&find(&state, &ctx, &id).await?)})))
}

pub async fn create_specs(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("volume_extension:types_extra_specs:create")?;
    let specs_body = body
        .get("extra_specs")
        .ok_or_else(|| ApiError::bad_request("Missing required element 'extra_specs' in request body."))?;
    // Cinder's schema wants an object: a null body is a 400, not an empty update.
    if specs_body.is_null() {
        return Err(ApiError::bad_request(
            "Invalid input for field/attribute extra_specs. Value: None. None is not of type 'object'",
        ));
    }
    let given = spec_map(Some(specs_body))?;
    let mut t = find(&state, &ctx, &id).await?;
    let mut all = specs(&t);
    all.extend(given.clone());
    t.extra_specs = Value::Object(all).to_string();
    state.store.update_volume_type(&t).await?;
    Ok(axum::Json(json!({"extra_specs": given})))
}

pub async fn show_spec(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id, key)): Path<(String, String, String)>,
) -> JsonResult {
    ctx.require_admin("volume_extension:types_extra_specs:show")?;
    let t = find(&state, &ctx, &id).await?;
    let v = specs(&t)
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Volume Type {id} has no extra specs with key {key}.")))?;
    Ok(axum::Json(json!({ key: v })))
}

pub async fn update_spec(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id, key)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_admin("volume_extension:types_extra_specs:update")?;
    let given = spec_map(Some(&body))?;
    if given.len() != 1 || !given.contains_key(&key) {
        return Err(ApiError::bad_request("Request body and URI mismatch"));
    }
    let mut t = find(&state, &ctx, &id).await?;
    let mut all = specs(&t);
    all.extend(given.clone());
    t.extra_specs = Value::Object(all).to_string();
    state.store.update_volume_type(&t).await?;
    Ok(axum::Json(Value::Object(given)))
}

pub async fn delete_spec(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id, key)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_admin("volume_extension:types_extra_specs:delete")?;
    let mut t = find(&state, &ctx, &id).await?;
    let mut all = specs(&t);
    if all.remove(&key).is_none() {
        return Err(ApiError::not_found(format!("Volume Type {id} has no extra specs with key {key}.")));
    }
    t.extra_specs = Value::Object(all).to_string();
    state.store.update_volume_type(&t).await?;
    Ok(StatusCode::ACCEPTED)
}
