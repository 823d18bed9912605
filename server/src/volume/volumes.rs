//! `/volumes`: create, list, show, update, delete, metadata and the `action` endpoint
//! (extend, flags, and the attach bookkeeping actions Nova and tempest call).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::mv::{self, Mv};
use super::work;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::volume::{Attachment, DEFAULT_TYPE_ID, Volume, VolumeType, new_attachment};
use crate::store::{StoreError, flag, new_uuid, now};

type JsonResult = ApiResult<axum::Json<Value>>;

/// Statuses from which a volume may be deleted (Cinder's `volume_api.delete`).
const DELETABLE: [&str; 5] = ["available", "error", "error_restoring", "error_extending", "error_managing"];

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Volume {id} could not be found."))
}

/// A volume the caller may see; anything else is a 404 as if it did not exist.
pub(crate) async fn load(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Volume> {
    match state.store.get_volume(id).await {
        Ok(v) if ctx.owns(&v.project_id) => Ok(v),
        Ok(_) | Err(StoreError::NotFound(_)) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}

fn self_links(state: &AppState, v: &Volume) -> Value {
    json!([
        {"rel": "self", "href": state.url(&format!("volume/v3/{}/volumes/{}", v.project_id, v.id))},
        {"rel": "bookmark", "href": state.url(&format!("volume/{}/volumes/{}", v.project_id, v.id))},
    ])
}

/// Cinder's attachment summary inside a volume: only attachments that are attached.
fn attachment_json(a: &Attachment, host_name: Option<&str>) -> Value {
    json!({
        "id": a.volume_id,
        "attachment_id": a.id,
        "volume_id": a.volume_id,
        "server_id": a.instance_id,
        "host_name": host_name,
        "device": a.mountpoint,
        "attached_at": a.updated_at,
    })
}

/// The detailed volume body (Cinder 3.0).
pub(crate) fn detail_json(
    state: &AppState,
    ctx: &Ctx,
    v: &Volume,
    attachments: &[Attachment],
    types: &BTreeMap<String, String>,
) -> Value {
    let metadata: Value = serde_json::from_str(&v.metadata).unwrap_or_else(|_| json!({}));
    let atts: Vec<Value> =
        attachments.iter().filter(|a| a.status == "attached").map(|a| attachment_json(a, None)).collect();
    let mut body = json!({
        "id": v.id,
        "name": v.name,
        "description": v.description,
        "size": v.size,
        "status": v.status,
        "availability_zone": v.availability_zone,
        "created_at": v.created_at,
        "updated_at": v.updated_at,
        "volume_type": types.get(&v.volume_type_id).cloned().unwrap_or_default(),
        "snapshot_id": v.snapshot_id,
        "source_volid": v.source_volid,
        "metadata": metadata,
        "links": self_links(state, v),
        "user_id": v.user_id,
        "bootable": if v.bootable != 0 { "true" } else { "false" },
        "encrypted": false,
        "replication_status": null,
        "consistencygroup_id": null,
        "multiattach": false,
        "attachments": atts,
        "os-vol-tenant-attr:tenant_id": v.project_id,
    });
    if ctx.is_admin()
        && let Some(m) = body.as_object_mut()
    {
        m.insert("os-vol-host-attr:host".into(), json!(v.host_id.as_deref().map(|h| format!("{h}@file#file"))));
        m.insert("os-vol-mig-status-attr:migstat".into(), Value::Null);
        m.insert("os-vol-mig-status-attr:name_id".into(), Value::Null);
    }
    body
}

/// Type id → name, for rendering.
pub(crate) async fn type_names(state: &AppState) -> ApiResult<BTreeMap<String, String>> {
    Ok(state.store.list_volume_types().await?.into_iter().map(|t| (t.id, t.name)).collect())
}

async fn render(state: &AppState, ctx: &Ctx, v: &Volume) -> ApiResult<Value> {
    let atts = state.store.volume_attachments(&v.id).await?;
    Ok(detail_json(state, ctx, v, &atts, &type_names(state).await?))
}

/// Cinder's create and update answers are the plain view: the attribute extensions (tenant,
/// host, migration status) appear on show and list only.
fn plain(mut body: Value) -> Value {
    if let Some(m) = body.as_object_mut() {
        m.retain(|k, _| !k.starts_with("os-vol-"));
    }
    body
}

// ---- create ----

/// A positive whole size in GiB, as a number or a numeric string (Cinder accepts both).
pub(crate) fn size_field(value: Option<&Value>, field: &str) -> ApiResult<i64> {
    let invalid = |v: &Value| {
        bad(format!(
            "Invalid input for field/attribute {field}. Value: {v}. {v} is not valid under any of the given schemas"
        ))
    };
    let v = value.ok_or_else(|| {
        bad(format!("Invalid input for field/attribute {field}. Value: None. 'None' is a required property"))
    })?;
    let n = match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| invalid(v))?,
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| invalid(v))?,
        _ => return Err(invalid(v)),
    };
    if n < 1 {
        return Err(bad(format!(
            "Invalid input for field/attribute {field}. Value: {n}. {n} is less than the minimum of 1"
        )));
    }
    Ok(n)
}

pub(crate) fn opt_str<'a>(b: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(bad(format!(
            "Invalid input for field/attribute {key}. Value: {other}. {other} is not of type 'string'"
        ))),
    }
}

pub(crate) fn metadata_map(v: Option<&Value>) -> ApiResult<Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => {
            for (k, val) in m {
                if k.is_empty() || k.len() > 255 || !val.is_string() || val.as_str().is_some_and(|s| s.len() > 255) {
                    return Err(bad(format!(
                        "Invalid input for field/attribute metadata. Value: {}. Keys and values must be strings of 1 to 255 characters",
                        Value::Object(m.clone())
                    )));
                }
            }
            Ok(m.clone())
        }
        Some(other) => Err(bad(format!(
            "Invalid input for field/attribute metadata. Value: {other}. {other} is not of type 'object'"
        ))),
    }
}

/// The one object a body wraps (`{"volume": {...}}`).
pub(crate) fn wrapped<'a>(body: &'a Value, key: &str) -> ApiResult<&'a Map<String, Value>> {
    body.get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("Missing required element '{key}' in request body.")))
}

pub async fn create(State(state): State<AppState>, ctx: Ctx, ver: Mv, Json(body): Json<Value>) -> ApiResult<Response> {
    ctx.require_member("volume:create")?;
    let project_id = ctx.project_id()?.to_string();
    let b = wrapped(&body, "volume")?;
    if ver.at_least(mv::VOLUME_CREATE_FROM_BACKUP)
        && let Some(backup) = opt_str(b, "backup_id")?
    {
        // No backups exist here (no backup service), so any id names none.
        return Err(ApiError::not_found(format!("Backup {backup} could not be found.")));
    }
    if b.get("multiattach").and_then(Value::as_bool) == Some(true) {
        return Err(bad("Invalid input received: multiattach volumes are not supported."));
    }
    // A snapshot or another volume: the size defaults to the source's, the copy is made on
    // the source's host (where its bytes are).
    let origin = super::snapshots::origin(&state, &ctx, b).await?;
    // `imageRef` (or the older `image_id`): the volume holds that image's bytes.
    let image = match opt_str(b, "imageRef")?.or(opt_str(b, "image_id")?) {
        Some(_) if origin.is_some() => {
            return Err(bad("Invalid input received: a volume has one source: an image, a snapshot or a volume."));
        }
        Some(r) => Some(super::from_image::lookup(&state, &ctx, r).await?),
        None => None,
    };
    let size = match (&origin, &image, b.get("size")) {
        (Some(o), _, None | Some(Value::Null)) => o.size,
        (_, Some(src), None | Some(Value::Null)) => src.default_size,
        _ => size_field(b.get("size"), "size")?,
    };
    if let Some(o) = &origin {
        super::snapshots::check_size(o, size)?;
    }
    if let Some(src) = &image {
        super::from_image::check(&src.image, size)?;
    }
    let vtype: VolumeType = match (opt_str(b, "volume_type")?, &origin) {
        (Some(t), _) => state.store.find_volume_type(t).await.map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::not_found(format!("Volume type with name {t} could not be found.")),
            other => other.into(),
        })?,
        (None, Some(o)) => state.store.find_volume_type(&o.volume_type_id).await?,
        (None, None) => state.store.find_volume_type(DEFAULT_TYPE_ID).await?,
    };
    let zone =
        opt_str(b, "availability_zone")?.map(str::to_string).or(origin.as_ref().map(|o| o.availability_zone.clone()));
    let metadata = metadata_map(b.get("metadata"))?;
    let zones = work::zones(&state).await?;
    let az = match zone {
        Some(z) if !zones.contains(&z) => {
            return Err(bad(format!("Invalid input received: Availability zone '{z}' is invalid.")));
        }
        Some(z) => z,
        None => zones.first().cloned().unwrap_or_else(|| work::DEFAULT_ZONE.to_string()),
    };
    let ts = now();
    let mut v = Volume {
        id: new_uuid(),
        project_id: project_id.clone(),
        user_id: ctx.user.id.clone(),
        name: opt_str(b, "name")?.or(opt_str(b, "display_name")?).map(str::to_string),
        description: opt_str(b, "description")?.or(opt_str(b, "display_description")?).map(str::to_string),
        size,
        status: "creating".into(),
        attach_status: "detached".into(),
        volume_type_id: vtype.id.clone(),
        availability_zone: az,
        host_id: None,
        bootable: flag(image.is_some()),
        readonly: 0,
        metadata: Value::Object(metadata).to_string(),
        deadline: None,
        created_at: ts.clone(),
        updated_at: ts,
        snapshot_id: origin.as_ref().and_then(|o| o.snapshot_id.clone()),
        source_volid: origin.as_ref().and_then(|o| o.source_volid.clone()),
    };
    if let Some(o) = &origin {
        v.bootable = o.bootable;
    }
    let limits = super::quotas::create_limits_of_type(&state, &project_id, &vtype.name).await?;
    // Placement comes first so the row is stored with its host and deadline at once.
    v.host_id = match &origin {
        Some(o) => o.host_id.clone(),
        None => work::place(&state, size, &v.availability_zone).await?,
    };
    if v.host_id.is_none() {
        // Cinder's scheduler answers "No valid backend" by leaving the volume in `error`.
        v.status = "error".into();
    } else {
        v.deadline = Some(work::deadline(work::CREATE_DEADLINE));
    }
    if state.store.create_volume(&v, limits).await?.is_none() {
        let t = Some((vtype.id.as_str(), vtype.name.as_str()));
        return Err(super::quotas::over_quota_of_type(&state, &project_id, t, size, limits).await);
    }
    if let Some(o) = &origin {
        super::snapshots::copy_image_metadata(&state, &o.from_volume, &v.id).await?;
    }
    match (v.host_id.clone(), &image) {
        (Some(host), Some(src)) => super::from_image::enqueue(&state, &v, &host, &src.image).await?,
        (Some(host), None) => work::enqueue_create(&state, &v, &host, origin.map(|o| o.source)).await?,
        (None, Some(src)) => super::from_image::record(&state, &v.id, &src.image).await?,
        (None, None) => {}
    }
    // Cinder's image metadata extension extends show and detail only, not create.
    let mut body = plain(render(&state, &ctx, &v).await?);
    mv::volume_keys(&mut body, ver, ctx.is_admin());
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"volume": body}))).into_response())
}

// ---- list / show ----

/// Cinder's list filters that map to a column; anything else is ignored (as Cinder's
/// `_get_volume_filter_options` drops keys it does not know for non-admins).
fn matches(v: &Volume, q: &Query, types: &BTreeMap<String, String>, ver: Mv) -> bool {
    let eq = |key: &str, actual: Option<&str>| q.get(key).is_none_or(|want| actual == Some(want));
    // 3.34's like filters (`name~=part`): a case-insensitive substring, as SQL LIKE '%part%'.
    let like = |key: &str, actual: Option<&str>| {
        !ver.at_least(mv::LIKE_FILTER)
            || q.get(&format!("{key}~"))
                .is_none_or(|want| actual.is_some_and(|a| a.to_lowercase().contains(&want.to_lowercase())))
    };
    like("name", v.name.as_deref())
        && like("status", Some(&v.status))
        && like("availability_zone", Some(&v.availability_zone))
        && q.get("size").is_none_or(|s| s.trim().parse::<i64>().ok() == Some(v.size))
        && eq("name", v.name.as_deref())
        && eq("status", Some(&v.status))
        && eq("availability_zone", Some(&v.availability_zone))
        && q.get("bootable").is_none_or(|b| mv::bootable_filter(b, ver).ok() == Some(v.bootable != 0))
        && q.get("volume_type")
            .is_none_or(|t| t == v.volume_type_id || types.get(&v.volume_type_id).is_some_and(|n| n == t))
        && q.get("metadata").is_none_or(|m| {
            // `metadata={'k': 'v'}` (Python repr, as cinderclient sends it) or JSON.
            let wanted: Option<Map<String, Value>> = serde_json::from_str(&m.replace('\'', "\"")).ok();
            let have: Map<String, Value> = serde_json::from_str(&v.metadata).unwrap_or_default();
            wanted.is_some_and(|w| w.iter().all(|(k, val)| have.get(k) == Some(val)))
        })
}

/// Sort keys Cinder accepts for volumes that we hold.
fn sort_value(v: &Volume, key: &str) -> ApiResult<(i64, String)> {
    Ok(match key {
        "created_at" => (0, v.created_at.clone()),
        "updated_at" => (0, v.updated_at.clone()),
        "id" => (0, v.id.clone()),
        "name" => (0, v.name.clone().unwrap_or_default()),
        "size" => (v.size, String::new()),
        "status" => (0, v.status.clone()),
        "availability_zone" => (0, v.availability_zone.clone()),
        other => return Err(bad(format!("Invalid input received: Invalid sort key {other}"))),
    })
}

/// One page of volumes, the link marker of the next page and how many matched in all.
async fn list_volumes(
    state: &AppState,
    ctx: &Ctx,
    q: &Query,
    ver: Mv,
) -> ApiResult<(Vec<Volume>, Option<String>, usize)> {
    ctx.require_reader("volume:get_all")?;
    mv::reject_invalid_filters(ctx.is_admin(), q, ver, mv::filters_of("volume"))?;
    if let Some(b) = q.get("bootable") {
        mv::bootable_filter(b, ver)?;
    }
    let all = q.bool("all_tenants")?.unwrap_or(false) || q.get("all_tenants") == Some("");
    let project = if all && ctx.is_admin() {
        q.get("project_id").map(str::to_string)
    } else {
        Some(ctx.project_id()?.to_string())
    };
    let types = type_names(state).await?;
    let mut list: Vec<Volume> = state
        .store
        .list_volumes(project.as_deref())
        .await?
        .into_iter()
        .filter(|v| matches(v, q, &types, ver))
        .collect();
    // `sort=key:dir,key2` or `sort_key`/`sort_dir`; Cinder's default is created_at desc.
    let mut keys: Vec<(String, bool)> = Vec::new();
    if let Some(sort) = q.get("sort") {
        for part in sort.split(',').filter(|p| !p.is_empty()) {
            let (k, d) = part.split_once(':').unwrap_or((part, "desc"));
            keys.push((k.trim().to_string(), parse_dir(d)?));
        }
    } else if let Some(k) = q.get("sort_key") {
        keys.push((k.to_string(), parse_dir(q.get("sort_dir").unwrap_or("desc"))?));
    }
    if keys.is_empty() {
        keys.push(("created_at".into(), true));
    }
    for (k, _) in &keys {
        if let Some(v) = list.first() {
            sort_value(v, k)?;
        } else if !["created_at", "updated_at", "id", "name", "size", "status", "availability_zone"]
            .contains(&k.as_str())
        {
            return Err(bad(format!("Invalid input received: Invalid sort key {k}")));
        }
    }
    let mut err = None;
    list.sort_by(|a, b| {
        for (k, desc) in &keys {
            match (sort_value(a, k), sort_value(b, k)) {
                (Ok(x), Ok(y)) => {
                    let o = if *desc { y.cmp(&x) } else { x.cmp(&y) };
                    if o != std::cmp::Ordering::Equal {
                        return o;
                    }
                }
                (Err(e), _) | (_, Err(e)) => err = Some(e),
            }
        }
        b.id.cmp(&a.id)
    });
    if let Some(e) = err {
        return Err(e);
    }
    let total = list.len();
    if let Some(marker) = q.get("marker") {
        let pos = list
            .iter()
            .position(|v| v.id == marker)
            .ok_or_else(|| bad(format!("Invalid input received: marker [{marker}] not found")))?;
        list.drain(..=pos);
    }
    let limit = q.uint("limit")?.map(|l| l as usize);
    let page_max = limit.unwrap_or(1000).min(1000);
    // A full page has a next link (Cinder's `_get_collection_links`), the last one too.
    let full = if limit.is_some() { list.len() >= page_max } else { list.len() > page_max };
    let next = (full && page_max > 0).then(|| list[page_max - 1].id.clone());
    list.truncate(page_max);
    Ok((list, next, total))
}

pub(crate) fn parse_dir(d: &str) -> ApiResult<bool> {
    match d.trim() {
        "desc" => Ok(true),
        "asc" => Ok(false),
        other => Err(bad(format!("Invalid input received: Unknown sort direction, must be 'desc' or 'asc' ({other})"))),
    }
}

pub(crate) fn next_link(state: &AppState, ctx: &Ctx, path: &str, q: &Query, next: Option<String>) -> Option<Value> {
    let marker = next?;
    let mut pairs: Vec<(String, String)> = q.0.iter().filter(|(k, _)| k != "marker").cloned().collect();
    pairs.push(("marker".into(), marker));
    let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let pid = ctx.project.as_ref().map(|(p, _)| p.id.as_str()).unwrap_or_default();
    Some(json!([{"rel": "next", "href": state.url(&format!("volume/v3/{pid}/{path}?{query}"))}]))
}

/// 3.45's `with_count=true`: the number of volumes matching, whatever the page.
pub(crate) fn add_count(body: &mut Value, q: &Query, ver: Mv, total: usize) -> ApiResult<()> {
    if ver.at_least(mv::SUPPORT_COUNT_INFO) && q.bool("with_count")?.unwrap_or(false) {
        body["count"] = json!(total);
    }
    Ok(())
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, ver: Mv, q: Query) -> JsonResult {
    let (list, next, total) = list_volumes(&state, &ctx, &q, ver).await?;
    let out: Vec<Value> =
        list.iter().map(|v| json!({"id": v.id, "name": v.name, "links": self_links(&state, v)})).collect();
    let mut body = json!({"volumes": out});
    if let Some(l) = next_link(&state, &ctx, "volumes", &q, next) {
        body["volumes_links"] = l;
    }
    add_count(&mut body, &q, ver, total)?;
    Ok(axum::Json(body))
}

pub async fn list_detail(State(state): State<AppState>, ctx: Ctx, ver: Mv, q: Query) -> JsonResult {
    let (list, next, total) = list_volumes(&state, &ctx, &q, ver).await?;
    let ids: Vec<&str> = list.iter().map(|v| v.id.as_str()).collect();
    let mut atts = state.store.attachments_of_volumes(&ids).await?;
    let types = type_names(&state).await?;
    let mut out: Vec<Value> = list
        .iter()
        .map(|v| {
            let mut body = detail_json(&state, &ctx, v, &atts.remove(&v.id).unwrap_or_default(), &types);
            mv::volume_keys(&mut body, ver, ctx.is_admin());
            body
        })
        .collect();
    super::from_image::decorate(&state, &mut out).await?;
    let mut body = json!({"volumes": out});
    if let Some(l) = next_link(&state, &ctx, "volumes/detail", &q, next) {
        body["volumes_links"] = l;
    }
    add_count(&mut body, &q, ver, total)?;
    Ok(axum::Json(body))
}

/// `GET /volumes/summary` (3.12): how many volumes and GiB the caller's project (every
/// project's with `all_tenants` for admins) holds, and from 3.36 every metadata key with its
/// distinct values.
pub async fn summary(State(state): State<AppState>, ctx: Ctx, ver: Mv, q: Query) -> JsonResult {
    ctx.require_reader("volume:get_all")?;
    let all = ctx.is_admin() && (q.get("all_tenants").is_some());
    let project = if all { None } else { Some(ctx.project_id()?.to_string()) };
    let list = state.store.list_volumes(project.as_deref()).await?;
    let size: i64 = list.iter().map(|v| v.size).sum();
    let mut body = json!({"volume-summary": {"total_count": list.len(), "total_size": size}});
    if ver.at_least(mv::VOLUME_SUMMARY_METADATA) {
        let mut meta: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for v in &list {
            let m: Map<String, Value> = serde_json::from_str(&v.metadata).unwrap_or_default();
            for (k, val) in m {
                let values = meta.entry(k).or_default();
                if !values.contains(&val) {
                    values.push(val);
                }
            }
        }
        body["volume-summary"]["metadata"] = json!(meta);
    }
    Ok(axum::Json(body))
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    ver: Mv,
    Path((_p, id)): Path<(String, String)>,
) -> JsonResult {
    ctx.require_reader("volume:get")?;
    let v = load(&state, &ctx, &id).await?;
    let mut body = [render(&state, &ctx, &v).await?];
    super::from_image::decorate(&state, &mut body).await?;
    let [mut body] = body;
    mv::volume_keys(&mut body, ver, ctx.is_admin());
    Ok(axum::Json(json!({"volume": body})))
}

// ---- update / metadata ----

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    ver: Mv,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_member("volume:update")?;
    let b = wrapped(&body, "volume")?;
    let mut v = load(&state, &ctx, &id).await?;
    let known = ["name", "description", "display_name", "display_description", "metadata"];
    if b.is_empty() || b.keys().any(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute volume. Value: {}. Only name, description and metadata may be updated",
            Value::Object(b.clone())
        )));
    }
    if b.contains_key("name") || b.contains_key("display_name") {
        v.name = opt_str(b, "name")?.or(opt_str(b, "display_name")?).map(str::to_string);
    }
    if b.contains_key("description") || b.contains_key("display_description") {
        v.description = opt_str(b, "description")?.or(opt_str(b, "display_description")?).map(str::to_string);
    }
    if b.contains_key("metadata") {
        v.metadata = Value::Object(metadata_map(b.get("metadata"))?).to_string();
    }
    state.store.update_volume(&v).await?;
    let v = state.store.get_volume(&id).await?;
    let mut body = plain(render(&state, &ctx, &v).await?);
    mv::volume_keys(&mut body, ver, ctx.is_admin());
    Ok(axum::Json(json!({"volume": body})))
}

pub async fn show_metadata(
    State(state): State<AppState>,
    ctx: Ctx,
    ver: Mv,
    Path((_p, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    ctx.require_reader("volume:get_volume_metadata")?;
    let v = load(&state, &ctx, &id).await?;
    let m: Value = serde_json::from_str(&v.metadata).unwrap_or_else(|_| json!({}));
    let mut resp = axum::Json(json!({"metadata": m})).into_response();
    // 3.15: the Etag a later If-Match names.
    if ver.at_least(mv::ETAGS)
        && let Ok(tag) = axum::http::HeaderValue::from_str(&mv::metadata_etag(&m))
    {
        resp.headers_mut().insert(axum::http::header::ETAG, tag);
    }
    Ok(resp)
}

/// 3.15's precondition: the metadata is still what the caller's `If-Match` names.
async fn check_if_match(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    ver: Mv,
    headers: &axum::http::HeaderMap,
) -> ApiResult<Option<Response>> {
    if !ver.at_least(mv::ETAGS) || !headers.contains_key(axum::http::header::IF_MATCH) {
        return Ok(None);
    }
    let v = load(state, ctx, id).await?;
    let m: Value = serde_json::from_str(&v.metadata).unwrap_or_else(|_| json!({}));
    Ok(mv::if_match_fails(headers, ver, &m).then(|| StatusCode::PRECONDITION_FAILED.into_response()))
}

async fn set_metadata(state: &AppState, ctx: &Ctx, id: &str, body: &Value, replace: bool) -> JsonResult {
    ctx.require_member("volume:update_volume_metadata")?;
    let given = metadata_map(Some(body.get("metadata").ok_or_else(|| bad("Malformed request body"))?))?;
    let mut v = load(state, ctx, id).await?;
    let mut m: Map<String, Value> =
        if replace { Map::new() } else { serde_json::from_str(&v.metadata).unwrap_or_default() };
    m.extend(given);
    v.metadata = Value::Object(m.clone()).to_string();
    state.store.update_volume(&v).await?;
    Ok(axum::Json(json!({"metadata": m})))
}

pub async fn merge_metadata(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    set_metadata(&state, &ctx, &id, &body, false).await
}

pub async fn replace_metadata(
    State(state): State<AppState>,
    ctx: Ctx,
    ver: Mv,
    headers: axum::http::HeaderMap,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    if let Some(refused) = check_if_match(&state, &ctx, &id, ver, &headers).await? {
        return Ok(refused);
    }
    Ok(set_metadata(&state, &ctx, &id, &body, true).await?.into_response())
}

pub async fn show_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id, key)): Path<(String, String, String)>,
) -> JsonResult {
    ctx.require_reader("volume:get_volume_metadata")?;
    let v = load(&state, &ctx, &id).await?;
    let m: Map<String, Value> = serde_json::from_str(&v.metadata).unwrap_or_default();
    let value = m
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Volume {id} has no metadata with key {key}.")))?;
    Ok(axum::Json(json!({"meta": {key: value}})))
}

pub async fn put_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    ver: Mv,
    headers: axum::http::HeaderMap,
    Path((_p, id, key)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    ctx.require_member("volume:update_volume_metadata")?;
    if let Some(refused) = check_if_match(&state, &ctx, &id, ver, &headers).await? {
        return Ok(refused);
    }
    let meta = metadata_map(Some(body.get("meta").ok_or_else(|| bad("Malformed request body"))?))?;
    if meta.len() != 1 || !meta.contains_key(&key) {
        return Err(bad("Request body and URI mismatch"));
    }
    let mut v = load(&state, &ctx, &id).await?;
    let mut m: Map<String, Value> = serde_json::from_str(&v.metadata).unwrap_or_default();
    m.extend(meta.clone());
    v.metadata = Value::Object(m).to_string();
    state.store.update_volume(&v).await?;
    Ok(axum::Json(json!({"meta": meta})).into_response())
}

pub async fn delete_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id, key)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_member("volume:delete_volume_metadata")?;
    let mut v = load(&state, &ctx, &id).await?;
    let mut m: Map<String, Value> = serde_json::from_str(&v.metadata).unwrap_or_default();
    if m.remove(&key).is_none() {
        return Err(ApiError::not_found(format!("Volume {id} has no metadata with key {key}.")));
    }
    v.metadata = Value::Object(m).to_string();
    state.store.update_volume(&v).await?;
    Ok(StatusCode::OK)
}

// ---- delete ----

pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    ver: Mv,
    q: Query,
    Path((_p, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_member("volume:delete")?;
    // 3.23: `force` deletes whatever the status (admins only, as os-force_delete).
    let force = ver.at_least(mv::VOLUME_DELETE_FORCE) && q.bool("force")?.unwrap_or(false);
    if force {
        ctx.require_admin("volume_extension:volume_admin_actions:force_delete")?;
    }
    let v = load(&state, &ctx, &id).await?;
    // With snapshots a delete is refused (`start_delete`), unless `cascade` takes them first.
    if q.bool("cascade")?.unwrap_or(false) && !state.store.volume_snapshots(&v.id).await?.is_empty() {
        super::snapshots::start_cascade_delete(&state, &v).await?;
        return Ok(StatusCode::ACCEPTED);
    }
    start_delete(&state, &v, force).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Cinder's refusal of a volume delete.
pub(crate) fn delete_refused(v: &Volume) -> ApiError {
    bad(format!(
        "Invalid volume: Volume status must be available or error or error_restoring or error_extending or \
         error_managing and must not be migrating, attached, belong to a group, have snapshots or be \
         disassociated from snapshots after volume transfer. (volume {} is {})",
        v.id, v.status
    ))
}

/// Deletes a volume: a placed one through its agent (`deleting` until the file is gone), an
/// unplaced one at once. Refused while attached; `force` (admin) also takes transitional
/// states other than attached ones.
pub(crate) async fn start_delete(state: &AppState, v: &Volume, force: bool) -> ApiResult<()> {
    let atts = state.store.volume_attachments(&v.id).await?;
    // A forced delete takes any status (Cinder's admin force-delete), but never a volume
    // plugged into a guest.
    let attached = if force { atts.iter().any(|a| a.by_compute != 0) } else { !atts.is_empty() };
    let statuses = [v.status.as_str()];
    let allowed: Vec<&str> = if force { statuses.to_vec() } else { DELETABLE.to_vec() };
    if attached || !allowed.contains(&v.status.as_str()) || !state.store.volume_snapshots(&v.id).await?.is_empty() {
        return Err(delete_refused(v));
    }
    if force {
        for a in &atts {
            state.store.move_attachment(&a.id, None, None, &v.id, &allowed, &v.status, None, None).await?;
        }
    }
    match &v.host_id {
        None => {
            if !state.store.delete_unplaced_volume(&v.id, &allowed).await? {
                return Err(bad(format!("Invalid volume: Volume {} changed state; try again.", v.id)));
            }
        }
        Some(host) => {
            let action = work::action_json(v, work::Kind::Delete)?;
            let d = work::deadline(work::DELETE_DEADLINE);
            if !state.store.begin_volume_work(&v.id, &allowed, "deleting", &d, host, &action).await? {
                return Err(bad(format!("Invalid volume: Volume {} changed state; try again.", v.id)));
            }
            state.signals.notify(host);
        }
    }
    Ok(())
}

// ---- actions ----

pub async fn action(
    State(state): State<AppState>,
    ctx: Ctx,
    ver: Mv,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let obj = body.as_object().filter(|o| o.len() == 1).ok_or_else(|| bad("Malformed request body"))?;
    let Some((name, args)) = obj.iter().next() else { return Err(bad("Malformed request body")) };
    let v = load(&state, &ctx, &id).await?;
    let accepted = || Ok(StatusCode::ACCEPTED.into_response());
    match name.as_str() {
        "os-extend" => {
            ctx.require_member("volume:extend")?;
            let new_size = size_field(args.get("new_size"), "new_size")?;
            // Cinder's `_extend`: the size first, then the status (in-use from 3.42).
            if new_size <= v.size {
                return Err(bad(format!(
                    "Invalid input received: New size for extend must be greater than current size. (current: {}, extended: {}).",
                    v.size, new_size
                )));
            }
            let in_use = v.status == "in-use" && ver.at_least(mv::VOLUME_EXTEND_INUSE);
            let expected = if in_use { "in-use" } else { "available" };
            if v.status != expected {
                return Err(bad(format!(
                    "Invalid volume: Volume {} status must be '{{'status': '{expected}'}}' to extend, currently {}.",
                    v.id, v.status
                )));
            }
            super::quotas::check_extend_typed(&state, &v, new_size - v.size).await?;
            if in_use {
                ctx.require_member("volume:extend_attached_volume")?;
                super::attachments::extend_attached(&state, &ctx, &v, new_size).await?;
                return accepted();
            }
            let Some(host) = v.host_id.clone() else { return Err(bad("Invalid volume: the volume has no host.")) };
            let mut target = v.clone();
            target.size = new_size;
            let action = work::action_json(&target, work::Kind::Extend)?;
            let d = work::deadline(work::EXTEND_DEADLINE);
            if !state.store.begin_volume_work(&v.id, &["available"], "extending", &d, &host, &action).await? {
                return Err(bad(format!("Invalid volume: Volume {} status must be available to extend.", v.id)));
            }
            state.signals.notify(&host);
            accepted()
        }
        "os-set_bootable" => {
            ctx.require_member("volume:update")?;
            let b = bool_arg(args.get("bootable"), "bootable")?;
            let mut v = v;
            v.bootable = flag(b);
            state.store.update_volume(&v).await?;
            Ok(StatusCode::OK.into_response())
        }
        "os-update_readonly_flag" => {
            ctx.require_member("volume:update_readonly_flag")?;
            let b = bool_arg(args.get("readonly"), "readonly")?;
            if v.status != "available" {
                return Err(bad(format!(
                    "Invalid volume: Volume {} status must be available to update readonly flag, but current status is: {}.",
                    v.id, v.status
                )));
            }
            let mut v = v;
            v.readonly = flag(b);
            let mut meta: Map<String, Value> = serde_json::from_str(&v.metadata).unwrap_or_default();
            // Cinder keeps the flag as admin metadata `readonly`, shown in metadata too.
            meta.insert("readonly".into(), json!(if b { "True" } else { "False" }));
            v.metadata = Value::Object(meta).to_string();
            state.store.update_volume(&v).await?;
            accepted()
        }
        "os-reserve" => {
            ctx.require_member("volume:reserve_volume")?;
            // Before the attachments API (3.27) a reservation shows as `attaching`.
            let a = new_attachment(&v.id, None, None, "reserved");
            if !state.store.reserve_volume(&a, "attaching", None, None).await? {
                return Err(bad(format!(
                    "Invalid volume: Volume status must be available to reserve, but the status is {}.",
                    v.status
                )));
            }
            accepted()
        }
        "os-unreserve" => {
            ctx.require_member("volume:unreserve_volume")?;
            for a in state.store.volume_attachments(&v.id).await? {
                if a.status == "reserved" {
                    state
                        .store
                        .move_attachment(&a.id, None, None, &v.id, &["reserved", "attaching"], "available", None, None)
                        .await?;
                }
            }
            accepted()
        }
        "os-begin_detaching" => {
            ctx.require_member("volume:begin_detaching")?;
            if !state.store.set_volume_status(&v.id, &["in-use"], "detaching", None).await? {
                return Err(bad(
                    "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach.",
                ));
            }
            accepted()
        }
        "os-roll_detaching" => {
            ctx.require_member("volume:roll_detaching")?;
            state.store.set_volume_status(&v.id, &["detaching"], "in-use", None).await?;
            accepted()
        }
        "os-attach" => {
            ctx.require_member("volume:attach")?;
            let instance = args.get("instance_uuid").and_then(Value::as_str);
            let host_name = args.get("host_name").and_then(Value::as_str);
            if instance.is_none() && host_name.is_none() {
                return Err(bad("Invalid request to attach volume to an invalid target"));
            }
            let mountpoint =
                args.get("mountpoint").and_then(Value::as_str).ok_or_else(|| bad("Must specify 'mountpoint'"))?;
            let mode = args.get("mode").and_then(Value::as_str).unwrap_or("rw");
            if !["rw", "ro"].contains(&mode) {
                return Err(bad(
                    "Invalid request to attach volume with an invalid mode. Attaching mode should be 'rw' or 'ro'",
                ));
            }
            if v.readonly != 0 && mode != "ro" {
                // Cinder's InvalidVolumeAttachMode.
                return Err(bad(format!("Invalid attaching mode '{mode}' for volume {}.", v.id)));
            }
            // A reservation (os-reserve) becomes this attachment; otherwise a new one.
            let existing = state.store.volume_attachments(&v.id).await?.into_iter().find(|a| a.status == "reserved");
            let a = match existing {
                Some(a) => a,
                None => {
                    let mut a = new_attachment(&v.id, instance, None, "reserved");
                    a.attach_mode = mode.into();
                    if !state.store.reserve_volume(&a, "attaching", None, None).await? {
                        return Err(bad(format!(
                            "Invalid volume: Volume status must be available or reserved to attach, but the status is {}.",
                            v.status
                        )));
                    }
                    a
                }
            };
            state.store.attachment_set_instance(&a.id, instance).await?;
            if !state
                .store
                .move_attachment(
                    &a.id,
                    Some("attached"),
                    Some(mountpoint),
                    &v.id,
                    &["reserved", "attaching"],
                    "in-use",
                    None,
                    None,
                )
                .await?
            {
                return Err(bad(format!("Invalid volume: Volume {} changed state; try again.", v.id)));
            }
            accepted()
        }
        "os-detach" | "os-force_detach" => {
            if name == "os-force_detach" {
                ctx.require_admin("volume_extension:volume_admin_actions:force_detach")?;
            }
            ctx.require_member("volume:detach")?;
            let wanted = args.get("attachment_id").and_then(Value::as_str);
            let atts = state.store.volume_attachments(&v.id).await?;
            // Nothing to detach is accepted and changes nothing, as Cinder's asynchronous
            // detach does.
            let Some(a) = atts.iter().find(|a| wanted.is_none_or(|w| w == a.id)) else {
                return accepted();
            };
            if a.by_compute != 0 {
                // Its disk is plugged into a guest: only the compute API may unplug it.
                return Err(super::attachments::nova_owned(a));
            }
            if !state
                .store
                .move_attachment(
                    &a.id,
                    None,
                    None,
                    &v.id,
                    // An admin's force detach takes the volume from whatever status it is in.
                    &if name == "os-force_detach" {
                        vec![v.status.as_str()]
                    } else {
                        vec!["in-use", "detaching", "attaching", "reserved"]
                    },
                    "available",
                    None,
                    None,
                )
                .await?
            {
                return Err(bad(format!("Invalid volume: Unable to detach volume {} in status {}.", v.id, v.status)));
            }
            accepted()
        }
        "os-initialize_connection" => {
            ctx.require_member("volume:initialize_connection")?;
            if args.get("connector").is_none() {
                return Err(bad("Must specify 'connector'"));
            }
            let info = json!({"connection_info": {
                "driver_volume_type": "file",
                "data": {"volume_id": v.id, "access_mode": if v.readonly != 0 { "ro" } else { "rw" }, "host": v.host_id},
            }});
            Ok((StatusCode::OK, axum::Json(info)).into_response())
        }
        "os-terminate_connection" => {
            ctx.require_member("volume:terminate_connection")?;
            // Cinder's `attachment_deletion_allowed`: the one attachment of a volume plugged
            // into a guest is Nova's to end.
            let atts = state.store.volume_attachments(&v.id).await?;
            if let [a] = atts.as_slice()
                && a.by_compute != 0
            {
                return Err(super::attachments::nova_owned(a));
            }
            accepted()
        }
        "revert" if ver.at_least(mv::VOLUME_REVERT) => {
            ctx.require_member("volume:revert_to_snapshot")?;
            super::snapshots::start_revert(&state, &v, args).await?;
            accepted()
        }
        "os-reset_status" => {
            ctx.require_admin("volume_extension:volume_admin_actions:reset_status")?;
            let to = args.get("status").and_then(Value::as_str).ok_or_else(|| bad("Must specify 'status'"))?;
            const VALID: [&str; 9] = [
                "available",
                "error",
                "in-use",
                "creating",
                "deleting",
                "error_deleting",
                "attaching",
                "detaching",
                "maintenance",
            ];
            if !VALID.contains(&to) {
                return Err(bad(format!("Invalid input received: '{to}' is not a valid status")));
            }
            state.store.set_volume_status(&v.id, &[v.status.as_str()], to, None).await?;
            accepted()
        }
        "os-volume_upload_image" => {
            ctx.require_member("volume_extension:volume_actions:upload_image")?;
            super::upload::start(&state, &ctx, &v, args).await
        }
        "os-force_delete" => {
            ctx.require_admin("volume_extension:volume_admin_actions:force_delete")?;
            start_delete(&state, &v, true).await?;
            accepted()
        }
        other => match super::from_image::action(&state, &ctx, &v, other, args).await {
            Some(answer) => answer,
            None => Err(bad(format!("There is no such action: {other}"))),
        },
    }
}

pub(crate) fn bool_arg(v: Option<&Value>, field: &str) -> ApiResult<bool> {
    match v {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => crate::extract::parse_bool(s).ok_or_else(|| {
            bad(format!("Invalid input for field/attribute {field}. Value: {s}. '{s}' is not a boolean"))
        }),
        Some(other) => Err(bad(format!("Invalid input for field/attribute {field}. Value: {other}."))),
        None => Err(bad(format!("Must specify '{field}'"))),
    }
}
