//! `/v2/images`: create, list, show, JSON-patch update, delete; tags; deactivate/reactivate.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{
    CONTAINER_FORMATS, DISK_FORMATS, MAX_PROPERTIES, MAX_TAGS, STATUSES, VISIBILITIES, caller_project, denied,
    image_json, py_repr, require_owner, require_reader, visible_image,
};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, LimitedBytes, Query, parse_json};
use crate::state::AppState;
use crate::store::image::{Filter, Image, ImageQuery, SortKey};
use crate::store::{StoreError, fmt_time, new_uuid, now, parse_time};

type JsonResult = ApiResult<axum::Json<Value>>;

/// Glance's `limit_param_default` and `api_limit_max`.
const DEFAULT_LIMIT: i64 = 25;
const MAX_LIMIT: i64 = 1000;

const UUID_PATTERN: &str = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$";

/// Attributes that are part of the image itself (everything else is a free-form property).
const BASE_ATTRS: [&str; 10] = [
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "min_ram",
    "min_disk",
    "owner",
    "disk_format",
    "container_format",
    "tags",
];
/// Never writable by clients.
const READ_ONLY: [&str; 13] = [
    "created_at",
    "updated_at",
    "status",
    "checksum",
    "size",
    "virtual_size",
    "direct_url",
    "self",
    "file",
    "schema",
    "id",
    "os_hash_algo",
    "os_hash_value",
];
const RESERVED: [&str; 4] = ["location", "locations", "deleted", "deleted_at"];
const RESERVED_NAMESPACE: &str = "os_glance";

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok() && s.len() == 36
}

fn schema_error(reason: String) -> ApiError {
    ApiError::bad_request(format!("Provided object does not match schema 'image': {reason}"))
}

fn one_of(v: &Value, allowed: &[&str], nullable: bool) -> Result<(), String> {
    let ok = match v {
        Value::Null => nullable,
        Value::String(s) => allowed.contains(&s.as_str()),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let mut names: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    if nullable {
        names.insert(0, "None".into());
    }
    Err(format!("{} is not one of [{}]", py_repr(v), names.join(", ")))
}

fn string_max(v: &Value, max: usize, nullable: bool) -> Result<(), String> {
    match v {
        Value::Null if nullable => Ok(()),
        Value::String(s) if s.chars().count() <= max => Ok(()),
        Value::String(_) => Err(format!("{} is too long", py_repr(v))),
        _ if nullable => Err(format!("{} is not of type 'null', 'string'", py_repr(v))),
        _ => Err(format!("{} is not of type 'string'", py_repr(v))),
    }
}

fn integer(v: &Value, nullable: bool) -> Result<(), String> {
    match v {
        Value::Null if nullable => Ok(()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
        _ if nullable => Err(format!("{} is not of type 'null', 'integer'", py_repr(v))),
        _ => Err(format!("{} is not of type 'integer'", py_repr(v))),
    }
}

/// Validates one attribute against Glance's image schema; the error is jsonschema's reason.
fn check_schema(key: &str, v: &Value) -> Result<(), String> {
    match key {
        "id" => match v {
            Value::String(s) if is_uuid(s) => Ok(()),
            Value::String(_) => Err(format!("{} does not match '{UUID_PATTERN}'", py_repr(v))),
            _ => Err(format!("{} is not of type 'string'", py_repr(v))),
        },
        "name" | "owner" => string_max(v, 255, true),
        "visibility" => one_of(v, &VISIBILITIES, false),
        "status" => one_of(v, &STATUSES, false),
        "disk_format" => one_of(v, &DISK_FORMATS, true),
        "container_format" => one_of(v, &CONTAINER_FORMATS, true),
        "protected" | "os_hidden" => match v {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("{} is not of type 'boolean'", py_repr(v))),
        },
        "min_ram" | "min_disk" => integer(v, false),
        "size" | "virtual_size" => integer(v, true),
        "checksum" => string_max(v, 32, true),
        "os_hash_algo" => string_max(v, 64, true),
        "os_hash_value" => string_max(v, 128, true),
        "tags" => match v {
            Value::Array(items) => items.iter().try_for_each(|t| string_max(t, 255, false)),
            _ => Err(format!("{} is not of type 'array'", py_repr(v))),
        },
        "locations" => match v {
            Value::Array(_) => Ok(()),
            _ => Err(format!("{} is not of type 'array'", py_repr(v))),
        },
        "kernel_id" | "ramdisk_id" => match v {
            Value::Null => Ok(()),
            Value::String(s) if is_uuid(s) => Ok(()),
            Value::String(_) => Err(format!("{} does not match '{UUID_PATTERN}'", py_repr(v))),
            _ => Err(format!("{} is not of type 'null', 'string'", py_repr(v))),
        },
        // created_at, updated_at, self, file, schema, direct_url and free-form properties.
        _ => match v {
            Value::String(_) => Ok(()),
            _ => Err(format!("{} is not of type 'string'", py_repr(v))),
        },
    }
}

fn non_negative(key: &str, v: &Value) -> ApiResult<i64> {
    match v.as_i64() {
        Some(n) if n >= 0 => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "Invalid value '{}' for parameter '{key}': Cannot be a negative value.",
            v.to_string().trim_matches('"')
        ))),
    }
}

fn reserved_key(key: &str) -> bool {
    RESERVED.contains(&key) || key.starts_with(RESERVED_NAMESPACE)
}

fn tag_set(v: &Value) -> ApiResult<Vec<String>> {
    let mut tags: Vec<String> =
        v.as_array().map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect()).unwrap_or_default();
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        return Err(ApiError::too_large(format!(
            "The limit has been exceeded on the number of allowed image tags. Attempted: {}, Maximum: {MAX_TAGS}",
            tags.len()
        )));
    }
    Ok(tags)
}

fn check_property_count(props: &Map<String, Value>) -> ApiResult<()> {
    if props.len() > MAX_PROPERTIES {
        return Err(ApiError::too_large(format!(
            "The limit has been exceeded on the number of allowed image properties. Attempted: {}, Maximum: {MAX_PROPERTIES}",
            props.len()
        )));
    }
    Ok(())
}

/// Sets one base attribute on `img` from an already schema-checked value.
fn set_base(ctx: &Ctx, img: &mut Image, key: &str, v: &Value) -> ApiResult<()> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    match key {
        "name" => img.name = text(v),
        "visibility" => {
            let vis = v.as_str().unwrap_or_default();
            if vis == "public" && !ctx.is_admin() {
                return Err(denied("publicize_image"));
            }
            img.visibility = vis.to_string();
        }
        "protected" => img.protected = i64::from(v.as_bool().unwrap_or(false)),
        "os_hidden" => img.os_hidden = i64::from(v.as_bool().unwrap_or(false)),
        "min_ram" => img.min_ram = non_negative("min_ram", v)?,
        "min_disk" => img.min_disk = non_negative("min_disk", v)?,
        "owner" => img.owner = text(v),
        "disk_format" | "container_format" => {
            if !matches!(img.status.as_str(), "queued" | "importing") {
                return Err(ApiError::forbidden(format!("Attribute {key} can be only replaced for a queued image.")));
            }
            if key == "disk_format" {
                img.disk_format = text(v);
            } else {
                img.container_format = text(v);
            }
        }
        "tags" => img.tags = tag_set(v)?,
        _ => {}
    }
    Ok(())
}

fn created(img: &Image, state: &AppState) -> Response {
    let mut resp = (StatusCode::CREATED, axum::Json(image_json(img))).into_response();
    if let Ok(loc) = state.url(&format!("image/v2/images/{}", img.id)).parse() {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// `POST /v2/images`: 201 with the new (queued) image.
pub async fn create(State(state): State<AppState>, ctx: Ctx, Json(body): Json<Value>) -> ApiResult<Response> {
    let Value::Object(mut body) = body else {
        return Err(schema_error(format!("{} is not of type 'object'", py_repr(&body))));
    };
    for key in ["direct_url", "self", "file", "schema", "stores"] {
        if body.contains_key(key) {
            return Err(ApiError::forbidden(format!("Attribute '{key}' is read-only.")));
        }
    }
    for (k, v) in &body {
        check_schema(k, v).map_err(schema_error)?;
    }
    for key in
        ["created_at", "updated_at", "status", "checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size"]
    {
        if body.contains_key(key) {
            return Err(ApiError::forbidden(format!("Attribute '{key}' is read-only.")));
        }
    }
    let project = ctx.project_id()?.to_string();
    let mut img = Image {
        id: match body.remove("id") {
            Some(Value::String(id)) => id,
            _ => new_uuid(),
        },
        status: "queued".into(),
        visibility: "shared".into(),
        owner: Some(project.clone()),
        created_at: now(),
        ..Default::default()
    };
    img.updated_at = img.created_at.clone();
    if let Some(owner) = body.get("owner") {
        let owner = owner.as_str();
        if owner != Some(project.as_str()) && !ctx.is_admin() {
            return Err(ApiError::forbidden(format!(
                "You are not permitted to create images owned by '{}'.",
                owner.unwrap_or("None")
            )));
        }
    }
    if !ctx.is_admin() && !ctx.has_role("member") {
        return Err(denied("add_image"));
    }
    let mut props = Map::new();
    for (k, v) in body {
        if BASE_ATTRS.contains(&k.as_str()) {
            set_base(&ctx, &mut img, &k, &v)?;
        } else {
            if k.chars().count() > 255 {
                return Err(ApiError::bad_request("Custom property should not be greater than 255 characters."));
            }
            if reserved_key(&k) {
                return Err(ApiError::forbidden(format!("Attribute '{k}' is reserved.")));
            }
            props.insert(k, v);
        }
    }
    check_property_count(&props)?;
    img.properties = Value::Object(props).to_string();
    state.store.create_image(&img).await?;
    Ok(created(&img, &state))
}

/// `GET /v2/images/{id}`.
pub async fn show(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    let img = visible_image(&state, &ctx, &id).await?;
    Ok(axum::Json(image_json(&img)))
}

/// `GET /v2/images/{id}/tasks` (Glance 2.12): the image's import tasks. This image service
/// imports nothing asynchronously (uploads and instance snapshots store the data at once), so
/// the list is always empty; tempest waits on it after a server snapshot.
pub async fn tasks(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    visible_image(&state, &ctx, &id).await?;
    Ok(axum::Json(serde_json::json!({"tasks": []})))
}

// ---- list ----

/// Splits Glance's `op:value` filter syntax (`in:a,b`, `gte:2016-...`); ISO times without an
/// operator are plain equality.
fn split_op(expr: &str) -> (&str, &str) {
    match expr.split_once(':') {
        Some(_) if parse_time(expr).is_some() => ("eq", expr),
        Some((op, rest)) => (op, rest),
        None => ("eq", expr),
    }
}

/// `a,"b,c",d` → `[a, b,c, d]` (Glance's `split_filter_value_for_quotes`).
fn split_list(s: &str) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err(ApiError::bad_request(format!("Invalid filter value {s}. The quote is not closed.")));
    }
    if !cur.is_empty() || was_quoted || !out.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn time_op(op: &str) -> Option<&'static str> {
    Some(match op {
        "eq" => "=",
        "neq" => "<>",
        "lt" => "<",
        "lte" => "<=",
        "gt" => ">",
        "gte" => ">=",
        _ => return None,
    })
}

/// Parameters handled explicitly; any other key filters on a free-form property.
const LIST_PARAMS: [&str; 25] = [
    "limit",
    "marker",
    "member_status",
    "tag",
    "sort",
    "sort_key",
    "sort_dir",
    "visibility",
    "os_hidden",
    "protected",
    "size",
    "size_min",
    "size_max",
    "id",
    "name",
    "status",
    "owner",
    "disk_format",
    "container_format",
    "checksum",
    "os_hash_value",
    "min_ram",
    "min_disk",
    "created_at",
    "updated_at",
];

fn sort_key(key: &str) -> ApiResult<SortKey> {
    SortKey::parse(key).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid sort key: {key}. It must be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at."
        ))
    })
}

fn sort_desc(dir: &str) -> ApiResult<bool> {
    match dir {
        "asc" => Ok(false),
        "desc" => Ok(true),
        other => Err(ApiError::bad_request(format!("Invalid sort direction: {other}"))),
    }
}

fn parse_sort(q: &Query) -> ApiResult<Vec<(SortKey, bool)>> {
    if let Some(sort) = q.get("sort") {
        if q.has("sort_key") || q.has("sort_dir") {
            return Err(ApiError::bad_request("Old and new sorting syntax cannot be combined"));
        }
        return sort
            .trim()
            .split(',')
            .map(|part| {
                let (key, dir) = part.split_once(':').unwrap_or((part, "desc"));
                let dir = if dir.trim().is_empty() { "desc" } else { dir.trim() };
                Ok((sort_key(key.trim())?, sort_desc(dir)?))
            })
            .collect();
    }
    let keys = q.all("sort_key").into_iter().map(|k| sort_key(k.trim())).collect::<ApiResult<Vec<_>>>()?;
    let dirs = q.all("sort_dir").into_iter().map(|d| sort_desc(d.trim())).collect::<ApiResult<Vec<_>>>()?;
    if dirs.len() > 1 && dirs.len() != keys.len() {
        return Err(ApiError::bad_request("Number of sort dirs does not match the number of sort keys"));
    }
    let keys = if keys.is_empty() { vec![SortKey::CreatedAt] } else { keys };
    Ok(keys.iter().enumerate().map(|(i, k)| (*k, dirs.get(i).or(dirs.first()).copied().unwrap_or(true))).collect())
}

fn true_false(q: &Query, key: &str) -> ApiResult<Option<bool>> {
    match q.get(key).map(str::to_ascii_lowercase) {
        None => Ok(None),
        Some(v) if v == "true" => Ok(Some(true)),
        Some(v) if v == "false" => Ok(Some(false)),
        Some(v) => Err(ApiError::bad_request(format!(
            "Invalid value '{v}' for '{key}' filter. Valid values are 'true' or 'false'."
        ))),
    }
}

/// Turns the query string into a store query (every bad value is a 400 naming the parameter).
fn image_query(ctx: &Ctx, q: &Query) -> ApiResult<ImageQuery> {
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n < 0 => return Err(ApiError::bad_request("limit param must be positive")),
            Ok(n) => n.min(MAX_LIMIT),
            Err(_) => return Err(ApiError::bad_request("limit param must be an integer")),
        },
    };
    let member_status = q.get("member_status").unwrap_or("accepted");
    if !["pending", "accepted", "rejected", "all"].contains(&member_status) {
        return Err(ApiError::bad_request(format!("Invalid status: {member_status}")));
    }
    let visibility = match q.get("visibility") {
        None | Some("") => None,
        Some(v) if v == "all" || VISIBILITIES.contains(&v) => Some(v.to_string()),
        Some(v) => {
            return Err(ApiError::bad_request(format!("Invalid visibility value: {v}")));
        }
    };
    if q.has("changes-since") {
        return Err(ApiError::bad_request("The \"changes-since\" filter is no longer available on v2."));
    }
    let mut filters = Vec::new();
    filters.push(Filter::Int("os_hidden", "=", i64::from(true_false(q, "os_hidden")?.unwrap_or(false))));
    if let Some(p) = true_false(q, "protected")? {
        filters.push(Filter::Int("protected", "=", i64::from(p)));
    }
    for (param, col, op) in [("size_min", "size", ">="), ("size_max", "size", "<=")] {
        if let Some(v) = q.get(param) {
            let n = v.trim().parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("Unable to filter on a range with a non-numeric value: {param}={v}."))
            })?;
            filters.push(Filter::Int(col, op, n));
        }
    }
    for col in ["id", "name", "status", "disk_format", "container_format"] {
        let Some(v) = q.get(col) else { continue };
        match split_op(v) {
            ("in", list) => filters.push(Filter::TextIn(col, split_list(list)?)),
            ("eq", value) => filters.push(Filter::TextIn(col, vec![value.to_string()])),
            (op, _) => {
                return Err(ApiError::bad_request(format!("Unable to filter by unknown operator '{op}'.")));
            }
        }
    }
    for col in ["owner", "checksum", "os_hash_value"] {
        if let Some(v) = q.get(col) {
            filters.push(Filter::TextIn(col, vec![v.to_string()]));
        }
    }
    // Exact matches on the integer columns (Glance filters on any image column).
    for col in ["size", "min_ram", "min_disk"] {
        if let Some(v) = q.get(col) {
            let n = v.trim().parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("Invalid value '{v}' for '{col}' filter: not an integer."))
            })?;
            filters.push(Filter::Int(col, "=", n));
        }
    }
    for col in ["created_at", "updated_at"] {
        let Some(v) = q.get(col) else { continue };
        let (op, when) = split_op(v);
        let op = time_op(op)
            .ok_or_else(|| ApiError::bad_request(format!("Unable to filter by unknown operator '{op}'.")))?;
        let when = parse_time(when).ok_or_else(|| {
            ApiError::bad_request(format!("Bad \"{col}\" query filter format. Use ISO 8601 DateTime notation."))
        })?;
        filters.push(Filter::Time(col, op, fmt_time(when)));
    }
    let properties =
        q.0.iter().filter(|(k, _)| !LIST_PARAMS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(ImageQuery {
        project_id: caller_project(ctx).map(str::to_string),
        is_admin: ctx.is_admin(),
        visibility,
        member_status: member_status.to_string(),
        filters,
        tags: q.all("tag").into_iter().map(|t| t.trim().to_string()).collect(),
        properties,
        sort: parse_sort(q)?,
        marker: q.get("marker").map(str::to_string),
        limit: usize::try_from(limit).unwrap_or(0),
    })
}

/// `GET /v2/images`: Glance's listing with `first`/`next` links.
pub async fn list(State(state): State<AppState>, ctx: Ctx, q: Query) -> JsonResult {
    require_reader(&ctx, "get_images")?;
    let query = image_query(&ctx, &q)?;
    let page = match state.store.list_images(&query).await {
        Ok(page) => page,
        // An unknown (or invisible) marker.
        Err(StoreError::NotFound(msg)) => return Err(ApiError::bad_request(msg)),
        Err(e) => return Err(e.into()),
    };
    let kept: Vec<(&str, &str)> =
        q.0.iter().filter(|(k, _)| k != "marker").map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let encode = |pairs: &[(&str, &str)]| form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let mut out = json!({
        "images": page.images.iter().map(image_json).collect::<Vec<_>>(),
        "first": if kept.is_empty() { "/v2/images".to_string() } else { format!("/v2/images?{}", encode(&kept)) },
        "schema": "/v2/schemas/images",
    });
    if let (true, Some(last)) = (page.more, page.images.last()) {
        let mut next = kept.clone();
        next.push(("marker", &last.id));
        out["next"] = json!(format!("/v2/images?{}", encode(&next)));
    }
    Ok(axum::Json(out))
}

// ---- update (JSON patch) ----

const PATCH_V21: &str = "application/openstack-images-v2.1-json-patch";
const PATCH_V20: &str = "application/openstack-images-v2.0-json-patch";

#[derive(Debug)]
struct Change {
    op: String,
    path: Vec<String>,
    value: Option<Value>,
}

fn decode_pointer(pointer: &str) -> ApiResult<Vec<String>> {
    let bad = |what: &str| ApiError::bad_request(format!("Pointer `{pointer}` {what}"));
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(bad("does not start with \"/\"."));
    };
    let adjacent = rest.char_indices().any(|(i, c)| c == '/' && rest[i + 1..].trim_start().starts_with('/'));
    if adjacent {
        return Err(bad("contains adjacent \"/\"."));
    }
    if !rest.is_empty() && rest.ends_with('/') {
        return Err(bad("end with \"/\"."));
    }
    let chars: Vec<char> = pointer.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c == '~' && !matches!(chars.get(i + 1), Some('0') | Some('1')) {
            return Err(bad("contains \"~\" not part of a recognized escape sequence."));
        }
    }
    let path: Vec<String> =
        rest.split('/').map(|p| p.replace("~1", "/").replace("~0", "~").trim().to_string()).collect();
    if path.iter().any(String::is_empty) {
        return Err(bad("does not contains valid token."));
    }
    Ok(path)
}

/// Glance's `RequestDeserializer.update`: every operation checked before the image is touched.
fn parse_changes(body: &Value, v21: bool) -> ApiResult<Vec<Change>> {
    let ops = body
        .as_array()
        .ok_or_else(|| ApiError::bad_request("Request body must be a JSON array of operation objects."))?;
    let mut changes = Vec::new();
    for raw in ops {
        let raw = raw.as_object().ok_or_else(|| ApiError::bad_request("Operations must be JSON objects."))?;
        let (op, pointer) = if v21 {
            let op = match raw.get("op") {
                None => {
                    return Err(ApiError::bad_request(
                        "Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.",
                    ));
                }
                Some(Value::String(op)) if ["add", "remove", "replace"].contains(&op.as_str()) => op.clone(),
                Some(other) => {
                    let shown = other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string());
                    return Err(ApiError::bad_request(format!(
                        "Invalid operation: `{shown}`. It must be one of the following: add, remove, replace."
                    )));
                }
            };
            let path =
                raw.get("path").ok_or_else(|| ApiError::bad_request("Unable to find 'path' in JSON Schema change"))?;
            (op, path)
        } else {
            let present: Vec<&str> =
                ["add", "remove", "replace"].into_iter().filter(|k| raw.contains_key(*k)).collect();
            match present.as_slice() {
                [op] => (op.to_string(), &raw[*op]),
                [] => {
                    return Err(ApiError::bad_request(
                        "Operation objects must contain exactly one member named \"add\", \"remove\", or \"replace\".",
                    ));
                }
                _ => {
                    return Err(ApiError::bad_request(
                        "Operation objects must contain only one member named \"add\", \"remove\", or \"replace\".",
                    ));
                }
            }
        };
        let pointer =
            pointer.as_str().ok_or_else(|| ApiError::bad_request(format!("Pointer `{pointer}` is not a string.")))?;
        let path = decode_pointer(pointer)?;
        let root = path.first().cloned().unwrap_or_default();
        let depth = if root == "locations" && op != "replace" { 2 } else { 1 };
        if path.len() != depth {
            return Err(ApiError::bad_request(format!(
                "Invalid JSON pointer for this resource: '/{}'",
                path.join("/")
            )));
        }
        let value = if op == "remove" {
            None
        } else {
            Some(raw.get("value").cloned().ok_or_else(|| {
                ApiError::bad_request(format!("Operation \"{op}\" requires a member named \"value\"."))
            })?)
        };
        if READ_ONLY.contains(&root.as_str()) {
            return Err(ApiError::forbidden(format!("Attribute '{root}' is read-only.")));
        }
        if ["location", "deleted", "deleted_at"].contains(&root.as_str()) || root.starts_with(RESERVED_NAMESPACE) {
            return Err(ApiError::forbidden(format!("Attribute '{root}' is reserved.")));
        }
        if let (Some(v), 1) = (&value, path.len()) {
            check_schema(&root, v).map_err(schema_error)?;
        }
        changes.push(Change { op, path, value });
    }
    Ok(changes)
}

/// `PATCH /v2/images/{id}` with `application/openstack-images-v2.1-json-patch` (or v2.0).
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> JsonResult {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default();
    let v21 = match content_type.as_str() {
        PATCH_V21 => true,
        PATCH_V20 => false,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("The request content type '{other}' is not supported; use one of: {PATCH_V20}, {PATCH_V21}"),
            ));
        }
    };
    let changes = parse_changes(&parse_json::<Value>(&body)?, v21)?;
    let mut img = visible_image(&state, &ctx, &id).await?;
    require_owner(&ctx, &img, "modify_image")?;
    let mut props = img.properties_map();
    for change in &changes {
        let root = change.path[0].as_str();
        if root == "locations" {
            let verb = match change.op.as_str() {
                "replace" => "update",
                other => other,
            };
            return Err(ApiError::forbidden(format!(
                "It's not allowed to {verb} locations if locations are invisible."
            )));
        }
        let base = BASE_ATTRS.contains(&root);
        match (change.op.as_str(), &change.value) {
            ("remove", _) => {
                if base {
                    return Err(ApiError::forbidden(format!("Property {root} may not be removed.")));
                }
                if props.remove(root).is_none() {
                    return Err(ApiError::conflict(format!("Property {root} does not exist.")));
                }
            }
            (op, Some(value)) => {
                if root == "owner" && !ctx.is_admin() {
                    return Err(ApiError::forbidden("Owner can't be updated by non admin."));
                }
                if base {
                    set_base(&ctx, &mut img, root, value)?;
                } else if op == "replace" && !props.contains_key(root) {
                    return Err(ApiError::conflict(format!("Property {root} does not exist.")));
                } else if op == "add" && !v21 && props.contains_key(root) {
                    return Err(ApiError::conflict(format!("Property {root} already present.")));
                } else {
                    props.insert(root.to_string(), value.clone());
                }
            }
            (_, None) => {}
        }
    }
    if changes.is_empty() {
        return Ok(axum::Json(image_json(&img)));
    }
    check_property_count(&props)?;
    img.properties = Value::Object(props).to_string();
    state.store.update_image(&img).await?;
    let img = state.store.get_image(&id).await?;
    Ok(axum::Json(image_json(&img)))
}

/// `DELETE /v2/images/{id}`: 204; the data file goes with it.
pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let img = visible_image(&state, &ctx, &id).await?;
    require_owner(&ctx, &img, "delete_image")?;
    if img.protected != 0 {
        return Err(ApiError::forbidden(format!("Image {id} is protected and cannot be deleted.")));
    }
    state.store.delete_image(&id).await.map_err(|e| match e {
        StoreError::NotFound(_) => ApiError::not_found(format!("Failed to find image {id} to delete")),
        other => other.into(),
    })?;
    super::data::remove_data(&state, &id).await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- actions ----

async fn set_active(state: AppState, ctx: Ctx, id: String, deactivate: bool) -> ApiResult<StatusCode> {
    let img = visible_image(&state, &ctx, &id).await?;
    let (action, from, to) =
        if deactivate { ("deactivate", "active", "deactivated") } else { ("reactivate", "deactivated", "active") };
    // Glance's secure-RBAC default: admins, or members of the owning project.
    require_owner(&ctx, &img, action)?;
    if img.status == to {
        return Ok(StatusCode::NO_CONTENT);
    }
    if img.status != from || !state.store.set_image_status(&id, from, to).await? {
        let now = state.store.get_image(&id).await?.status;
        if now != to {
            return Err(ApiError::forbidden(format!("Not allowed to {action} image in status '{now}'")));
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v2/images/{id}/actions/deactivate` (admin or owning project's member): 204.
pub async fn deactivate(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    set_active(state, ctx, id, true).await
}

/// `POST /v2/images/{id}/actions/reactivate` (admin or owning project's member): 204.
pub async fn reactivate(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    set_active(state, ctx, id, false).await
}

// ---- tags ----

/// `PUT /v2/images/{id}/tags/{tag}`: 204 (idempotent).
pub async fn add_tag(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let img = visible_image(&state, &ctx, &id).await?;
    require_owner(&ctx, &img, "modify_image")?;
    if tag.chars().count() > 255 {
        return Err(ApiError::bad_request(format!(
            "Could not update image: Provided object does not match schema 'image': '{tag}' is too long"
        )));
    }
    if !img.tags.contains(&tag) && img.tags.len() >= MAX_TAGS {
        return Err(ApiError::too_large(format!(
            "Image tag limit exceeded for image {id}: The limit has been exceeded on the number of allowed image tags. Attempted: {}, Maximum: {MAX_TAGS}",
            img.tags.len() + 1
        )));
    }
    state.store.add_image_tag(&id, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v2/images/{id}/tags/{tag}`: 204, or 404 when the tag is absent.
pub async fn remove_tag(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let img = visible_image(&state, &ctx, &id).await?;
    require_owner(&ctx, &img, "modify_image")?;
    state.store.remove_image_tag(&id, &tag).await?;
    Ok(StatusCode::NO_CONTENT)
}
