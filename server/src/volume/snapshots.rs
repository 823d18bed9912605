//! `/snapshots`: create, list (summary and detail), show, update, delete, metadata and the
//! admin actions (`os-reset_status`, `os-force_delete`) plus `os-update_snapshot_status`, as
//! Cinder 3.0 answers them. A snapshot's bytes are copied by the volume's agent beside the
//! volume (work keyed by the volume); see `work.rs` for the status machine.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_common::agent::{Action, VolumeSource};
use serde_json::{Map, Value, json};

use super::mv::{self, Mv};
use super::volumes::{bad, bool_arg, load, metadata_map, next_link, opt_str, parse_dir, wrapped};
use super::work;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::snapshots::{CreateRefused, RevertRefused, Snapshot, SnapshotLimits};
use crate::store::volume::Volume;
use crate::store::{StoreError, new_uuid, now};

type JsonResult = ApiResult<axum::Json<Value>>;

/// Statuses a snapshot may be deleted from without force (Cinder's `delete_snapshot`).
const DELETABLE: [&str; 2] = ["available", "error"];
/// Statuses an admin may reset a snapshot to (Cinder's `SnapshotStatus`).
const RESETTABLE: [&str; 8] =
    ["creating", "available", "deleting", "error", "error_deleting", "unmanaging", "backing-up", "restoring"];

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Snapshot {id} could not be found."))
}

/// A snapshot the caller may see; anything else is a 404 as if it did not exist.
pub(crate) async fn load_snapshot(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Snapshot> {
    match state.store.get_snapshot(id).await {
        Ok(s) if ctx.owns(&s.project_id) => Ok(s),
        Ok(_) | Err(StoreError::NotFound(_)) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// Cinder 3.0's snapshot view; `extended` adds the `os-extended-snapshot-attributes` that
/// show and the detailed list carry (create, update and the summary list do not).
fn snapshot_json(s: &Snapshot, extended: bool) -> Value {
    let metadata: Value = serde_json::from_str(&s.metadata).unwrap_or_else(|_| json!({}));
    let mut body = json!({
        "id": s.id,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "name": s.name,
        "description": s.description,
        "volume_id": s.volume_id,
        "status": s.status,
        "size": s.size,
        "metadata": metadata,
    });
    if extended && let Some(m) = body.as_object_mut() {
        m.insert("os-extended-snapshot-attributes:progress".into(), json!(s.progress));
        m.insert("os-extended-snapshot-attributes:project_id".into(), json!(s.project_id));
    }
    body
}

/// The detail view at a microversion (show, create, update and the detailed list).
fn detail_json(s: &Snapshot, extended: bool, v: Mv) -> Value {
    let mut body = snapshot_json(s, extended);
    mv::snapshot_keys(&mut body, v, &s.user_id);
    body
}

/// The limits a snapshot create is checked against.
async fn limits(state: &AppState, project_id: &str) -> ApiResult<SnapshotLimits> {
    let (snapshots, gigabytes) = super::quotas::snapshot_limits(state, project_id).await?;
    Ok(SnapshotLimits { snapshots, gigabytes })
}

// ---- create ----

pub async fn create(State(state): State<AppState>, ctx: Ctx, ver: Mv, Json(body): Json<Value>) -> ApiResult<Response> {
    ctx.require_member("volume:create_snapshot")?;
    ctx.project_id()?;
    let b = wrapped(&body, "snapshot")?;
    // Cinder looks the volume up first: no id (or an unknown one) is the volume's 404.
    let volume_id = match b.get("volume_id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "None".to_string(),
        Some(other) => other.to_string(),
    };
    let v = load(&state, &ctx, &volume_id).await?;
    let force = match b.get("force") {
        None | Some(Value::Null) => false,
        some => bool_arg(some, "force").map_err(|_| {
            bad(format!("Invalid value '{}' for force.", b.get("force").map(Value::to_string).unwrap_or_default()))
        })?,
    };
    let allowed: &[&str] = if force { &["available", "in-use"] } else { &["available"] };
    if !allowed.contains(&v.status.as_str()) {
        return Err(bad(format!(
            "Invalid volume: Volume {} status must be {}, but current status is: {}.",
            v.id,
            allowed.join(" or "),
            v.status
        )));
    }
    let metadata = metadata_map(b.get("metadata"))?;
    let name = opt_str(b, "name")?.or(opt_str(b, "display_name")?).map(str::to_string);
    let description = opt_str(b, "description")?.or(opt_str(b, "display_description")?).map(str::to_string);
    let s = start_create(&state, &ctx, &v, name, description, metadata, force).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"snapshot": detail_json(&s, false, ver)}))).into_response())
}

/// Makes a snapshot of `v` (`creating`, with the agent's copy queued), as Cinder's
/// `create_snapshot` (`force`: an in-use volume too, as `create_snapshot_force`). Shared by
/// the API and Nova's snapshot of a volume-backed server.
pub(crate) async fn start_create(
    state: &AppState,
    ctx: &Ctx,
    v: &Volume,
    name: Option<String>,
    description: Option<String>,
    metadata: Map<String, Value>,
    force: bool,
) -> ApiResult<Snapshot> {
    let project_id = ctx.project_id()?.to_string();
    let allowed: &[&str] = if force { &["available", "in-use"] } else { &["available"] };
    let Some(host) = v.host_id.clone() else {
        return Err(bad(format!("Invalid volume: Volume {} has no host.", v.id)));
    };
    let ts = now();
    let s = Snapshot {
        id: new_uuid(),
        volume_id: v.id.clone(),
        project_id: project_id.clone(),
        user_id: ctx.user.id.clone(),
        name,
        description,
        size: v.size,
        status: "creating".into(),
        progress: "0%".into(),
        metadata: Value::Object(metadata).to_string(),
        deadline: Some(work::deadline(work::SNAPSHOT_DEADLINE)),
        created_at: ts.clone(),
        updated_at: ts,
    };
    // An in-use volume's guest is paused for the copy (crash-consistent, as Cinder's force).
    let instance_id = if v.status == "in-use" {
        state.store.volume_attachments(&v.id).await?.into_iter().find_map(|a| a.instance_id)
    } else {
        None
    };
    let action = Action::SnapshotCreate { volume: work::spec(v), snapshot_id: s.id.clone(), instance_id };
    let action = serde_json::to_string(&action).map_err(ApiError::internal)?;
    let l = limits(state, &project_id).await?;
    match state.store.create_snapshot(&s, allowed, l, &host, &action).await? {
        Ok(()) => {}
        Err(CreateRefused::VolumeState) => {
            return Err(bad(format!("Invalid volume: Volume {} status must be {}.", v.id, allowed.join(" or "))));
        }
        Err(CreateRefused::Quota) => return Err(over_quota(state, &project_id, &s, l).await),
    }
    state.signals.notify(&host);
    Ok(s)
}

/// The 413 for a snapshot the limits refused, naming the limit as Cinder does.
async fn over_quota(state: &AppState, project_id: &str, s: &Snapshot, l: SnapshotLimits) -> ApiError {
    let (count, _) = match state.store.snapshot_usage(project_id).await {
        Ok(u) => u,
        Err(e) => return e.into(),
    };
    if l.snapshots >= 0 && count >= l.snapshots {
        return ApiError::too_large(format!(
            "SnapshotLimitExceeded: Maximum number of snapshots allowed ({}) exceeded",
            l.snapshots
        ));
    }
    let used = match state.store.volume_usage(project_id).await {
        Ok(u) => u.gigabytes,
        Err(e) => return e.into(),
    };
    ApiError::too_large(format!(
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. \
         Requested {}G, quota is {}G and {}G has been consumed.",
        s.size, l.gigabytes, used
    ))
}

// ---- list / show ----

/// Sort keys Cinder accepts for snapshots that we hold (`display_name` is the name's column;
/// `name` from 3.30).
fn sort_value(s: &Snapshot, key: &str, ver: Mv) -> Option<(i64, String)> {
    Some(match key {
        "created_at" => (0, s.created_at.clone()),
        "updated_at" => (0, s.updated_at.clone()),
        "id" => (0, s.id.clone()),
        "display_name" => (0, s.name.clone().unwrap_or_default()),
        "name" if ver.at_least(mv::SNAPSHOT_SORT) => (0, s.name.clone().unwrap_or_default()),
        "size" | "volume_size" => (s.size, String::new()),
        "status" => (0, s.status.clone()),
        "volume_id" => (0, s.volume_id.clone()),
        _ => return None,
    })
}

fn matches(s: &Snapshot, q: &Query, ver: Mv) -> bool {
    let eq = |key: &str, actual: Option<&str>| q.get(key).is_none_or(|want| actual == Some(want));
    // 3.34's like filters (`name~=part`): a case-insensitive substring, as SQL LIKE '%part%'.
    let like = |key: &str, actual: Option<&str>| {
        !ver.at_least(mv::LIKE_FILTER)
            || q.get(&format!("{key}~"))
                .is_none_or(|want| actual.is_some_and(|a| a.to_lowercase().contains(&want.to_lowercase())))
    };
    like("name", s.name.as_deref())
        && like("status", Some(&s.status))
        && like("volume_id", Some(&s.volume_id))
        && eq("name", s.name.as_deref())
        && eq("display_name", s.name.as_deref())
        && eq("status", Some(&s.status))
        && eq("volume_id", Some(&s.volume_id))
        && q.get("metadata").is_none_or(|m| {
            // `metadata={'k': 'v'}` (Python repr, as cinderclient sends it) or JSON.
            let wanted: Option<Map<String, Value>> = serde_json::from_str(&m.replace('\'', "\"")).ok();
            let have: Map<String, Value> = serde_json::from_str(&s.metadata).unwrap_or_default();
            wanted.is_some_and(|w| w.iter().all(|(k, val)| have.get(k) == Some(val)))
        })
}

/// One page of snapshots, the link marker of the next page and how many matched in all.
async fn list_snapshots(
    state: &AppState,
    ctx: &Ctx,
    q: &Query,
    ver: Mv,
) -> ApiResult<(Vec<Snapshot>, Option<String>, usize)> {
    ctx.require_reader("volume:get_all_snapshots")?;
    mv::reject_invalid_filters(ctx.is_admin(), q, ver, mv::filters_of("snapshot"))?;
    let all = q.bool("all_tenants")?.unwrap_or(false) || q.get("all_tenants") == Some("");
    let project = if all && ctx.is_admin() {
        q.get("project_id").map(str::to_string)
    } else {
        Some(ctx.project_id()?.to_string())
    };
    let limit = q.uint("limit")?.map(|l| l as usize);
    let offset = q.uint("offset")?.map(|o| o as usize).unwrap_or(0);
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
    let probe = Snapshot {
        id: String::new(),
        volume_id: String::new(),
        project_id: String::new(),
        user_id: String::new(),
        name: None,
        description: None,
        size: 0,
        status: String::new(),
        progress: String::new(),
        metadata: String::new(),
        deadline: None,
        created_at: String::new(),
        updated_at: String::new(),
    };
    if let Some((k, _)) = keys.iter().find(|(k, _)| sort_value(&probe, k, ver).is_none()) {
        return Err(bad(format!("Invalid input received: Invalid sort key {k}")));
    }
    let mut list: Vec<Snapshot> =
        state.store.list_snapshots(project.as_deref()).await?.into_iter().filter(|s| matches(s, q, ver)).collect();
    let total = list.len();
    list.sort_by(|a, b| {
        for (k, desc) in &keys {
            let (x, y) = (sort_value(a, k, ver), sort_value(b, k, ver));
            let o = if *desc { y.cmp(&x) } else { x.cmp(&y) };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        b.id.cmp(&a.id)
    });
    if let Some(marker) = q.get("marker") {
        let pos = list
            .iter()
            .position(|s| s.id == marker)
            .ok_or_else(|| ApiError::not_found(format!("Marker {marker} could not be found.")))?;
        list.drain(..=pos);
    }
    list.drain(..offset.min(list.len()));
    let page_max = limit.unwrap_or(1000).min(1000);
    let full = if limit.is_some() { list.len() >= page_max } else { list.len() > page_max };
    let next = (full && page_max > 0).then(|| list[page_max - 1].id.clone());
    list.truncate(page_max);
    Ok((list, next, total))
}

async fn list_as(state: &AppState, ctx: &Ctx, q: &Query, ver: Mv, detail: bool) -> JsonResult {
    let (list, next, total) = list_snapshots(state, ctx, q, ver).await?;
    // The summary list is Cinder's v2 summary view at every version.
    let out: Vec<Value> =
        list.iter().map(|s| if detail { detail_json(s, true, ver) } else { snapshot_json(s, false) }).collect();
    let mut body = json!({"snapshots": out});
    let path = if detail { "snapshots/detail" } else { "snapshots" };
    if let Some(l) = next_link(state, ctx, path, q, next) {
        body["snapshots_links"] = l;
    }
    super::volumes::add_count(&mut body, q, ver, total)?;
    Ok(axum::Json(body))
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, ver: Mv, q: Query) -> JsonResult {
    list_as(&state, &ctx, &q, ver, false).await
}

pub async fn list_detail(State(state): State<AppState>, ctx: Ctx, ver: Mv, q: Query) -> JsonResult {
    list_as(&state, &ctx, &q, ver, true).await
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    ver: Mv,
    Path((_p, id)): Path<(String, String)>,
) -> JsonResult {
    ctx.require_reader("volume:get_snapshot")?;
    let s = load_snapshot(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"snapshot": detail_json(&s, true, ver)})))
}

// ---- update / metadata ----

pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    ver: Mv,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_member("volume:update_snapshot")?;
    let b = wrapped(&body, "snapshot")?;
    let mut s = load_snapshot(&state, &ctx, &id).await?;
    let known = ["name", "description", "display_name", "display_description"];
    if b.is_empty() || b.keys().any(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute snapshot. Value: {}. Only name and description may be updated",
            Value::Object(b.clone())
        )));
    }
    if b.contains_key("name") || b.contains_key("display_name") {
        s.name = opt_str(b, "name")?.or(opt_str(b, "display_name")?).map(str::to_string);
    }
    if b.contains_key("description") || b.contains_key("display_description") {
        s.description = opt_str(b, "description")?.or(opt_str(b, "display_description")?).map(str::to_string);
    }
    state.store.update_snapshot(&s).await?;
    let s = state.store.get_snapshot(&id).await?;
    Ok(axum::Json(json!({"snapshot": detail_json(&s, false, ver)})))
}

fn meta_of(s: &Snapshot) -> Map<String, Value> {
    serde_json::from_str(&s.metadata).unwrap_or_default()
}

pub async fn show_metadata(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id)): Path<(String, String)>,
) -> JsonResult {
    ctx.require_reader("volume:get_snapshot_metadata")?;
    let s = load_snapshot(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"metadata": meta_of(&s)})))
}

async fn set_metadata(state: &AppState, ctx: &Ctx, id: &str, body: &Value, replace: bool) -> JsonResult {
    ctx.require_member("volume:update_snapshot_metadata")?;
    let given = metadata_map(Some(body.get("metadata").ok_or_else(|| bad("Malformed request body"))?))?;
    let mut s = load_snapshot(state, ctx, id).await?;
    let mut m = if replace { Map::new() } else { meta_of(&s) };
    m.extend(given);
    s.metadata = Value::Object(m.clone()).to_string();
    state.store.update_snapshot(&s).await?;
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
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    set_metadata(&state, &ctx, &id, &body, true).await
}

pub async fn show_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id, key)): Path<(String, String, String)>,
) -> JsonResult {
    ctx.require_reader("volume:get_snapshot_metadata")?;
    let s = load_snapshot(&state, &ctx, &id).await?;
    let value = meta_of(&s)
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Snapshot {id} has no metadata with key {key}.")))?;
    Ok(axum::Json(json!({"meta": {key: value}})))
}

pub async fn put_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id, key)): Path<(String, String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_member("volume:update_snapshot_metadata")?;
    let meta = metadata_map(Some(body.get("meta").ok_or_else(|| bad("Malformed request body"))?))?;
    if meta.len() != 1 || !meta.contains_key(&key) {
        return Err(bad("Request body and URI mismatch"));
    }
    let mut s = load_snapshot(&state, &ctx, &id).await?;
    let mut m = meta_of(&s);
    m.extend(meta.clone());
    s.metadata = Value::Object(m).to_string();
    state.store.update_snapshot(&s).await?;
    Ok(axum::Json(json!({"meta": meta})))
}

pub async fn delete_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id, key)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_member("volume:delete_snapshot_metadata")?;
    let mut s = load_snapshot(&state, &ctx, &id).await?;
    let mut m = meta_of(&s);
    if m.remove(&key).is_none() {
        return Err(ApiError::not_found(format!("Snapshot {id} has no metadata with key {key}.")));
    }
    s.metadata = Value::Object(m).to_string();
    state.store.update_snapshot(&s).await?;
    Ok(StatusCode::OK)
}

// ---- delete ----

pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_member("volume:delete_snapshot")?;
    let s = load_snapshot(&state, &ctx, &id).await?;
    start_delete(&state, &s, false).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `deleting` with the agent's work (keyed by the volume). `force` (admin) takes any status.
pub(crate) async fn start_delete(state: &AppState, s: &Snapshot, force: bool) -> ApiResult<()> {
    let from: Vec<&str> = if force { vec![s.status.as_str()] } else { DELETABLE.to_vec() };
    let refused = || {
        bad(format!(
            "Invalid snapshot: Snapshot status must be {} and must not be part of a group.",
            DELETABLE.join(" or ")
        ))
    };
    if !from.contains(&s.status.as_str()) {
        return Err(refused());
    }
    let v = state.store.get_volume(&s.volume_id).await?;
    let Some(host) = v.host_id.clone() else {
        return Err(ApiError::internal(format!("snapshot {} of a volume without a host", s.id)));
    };
    let action = Action::SnapshotDelete { volume: work::spec(&v), snapshot_id: s.id.clone() };
    let action = serde_json::to_string(&action).map_err(ApiError::internal)?;
    let d = work::deadline(work::SNAPSHOT_DEADLINE);
    if !state.store.begin_snapshot_work(&s.id, &from, "deleting", &d, &v.id, &host, &action).await? {
        return Err(refused());
    }
    state.signals.notify(&host);
    Ok(())
}

/// A volume's delete with `cascade=true`: its snapshots (available or error, as Cinder's
/// "undeletable snapshots" filter) and then the volume, all `deleting` with their agent work
/// queued in order, in one transaction.
pub(crate) async fn start_cascade_delete(state: &AppState, v: &Volume) -> ApiResult<()> {
    let atts = state.store.volume_attachments(&v.id).await?;
    let snaps = state.store.volume_snapshots(&v.id).await?;
    const VOLUME_FROM: [&str; 5] = ["available", "error", "error_restoring", "error_extending", "error_managing"];
    if !atts.is_empty()
        || !VOLUME_FROM.contains(&v.status.as_str())
        || snaps.iter().any(|s| !DELETABLE.contains(&s.status.as_str()))
    {
        return Err(super::volumes::delete_refused(v));
    }
    let Some(host) = v.host_id.clone() else {
        return Err(ApiError::internal(format!("volume {} has snapshots but no host", v.id)));
    };
    let mut items = Vec::with_capacity(snaps.len());
    for s in &snaps {
        let a = Action::SnapshotDelete { volume: work::spec(v), snapshot_id: s.id.clone() };
        items.push((s.id.clone(), serde_json::to_string(&a).map_err(ApiError::internal)?));
    }
    let volume_action = work::action_json(v, work::Kind::Delete)?;
    let d = work::deadline(work::DELETE_DEADLINE);
    if !state.store.begin_cascade_delete(&v.id, &VOLUME_FROM, &items, &DELETABLE, &d, &host, &volume_action).await? {
        return Err(super::volumes::delete_refused(v));
    }
    state.signals.notify(&host);
    Ok(())
}

// ---- actions ----

pub async fn action(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let obj = body.as_object().filter(|o| o.len() == 1).ok_or_else(|| bad("Malformed request body"))?;
    let Some((name, args)) = obj.iter().next() else { return Err(bad("Malformed request body")) };
    let s = load_snapshot(&state, &ctx, &id).await?;
    match name.as_str() {
        "os-reset_status" => {
            ctx.require_admin("volume_extension:snapshot_admin_actions:reset_status")?;
            let to = args.get("status").and_then(Value::as_str).ok_or_else(|| bad("Must specify 'status'"))?;
            if !RESETTABLE.contains(&to) {
                return Err(bad(format!("Invalid input received: '{to}' is not a valid status")));
            }
            state.store.set_snapshot_status(&s.id, &[s.status.as_str()], to, None, None).await?;
        }
        "os-update_snapshot_status" => {
            ctx.require_member("snapshot_extension:snapshot_actions:update_snapshot_status")?;
            let to = args.get("status").and_then(Value::as_str).ok_or_else(|| bad("'status' must be specified."))?;
            // Cinder's `status_map`: which statuses a driver may report from which.
            let allowed: &[&str] = match s.status.as_str() {
                "creating" => &["creating", "available", "error"],
                "deleting" => &["deleting", "error_deleting"],
                other => {
                    return Err(bad(format!(
                        "Invalid snapshot: Snapshot status {other} not allowed for update_snapshot_status"
                    )));
                }
            };
            if !allowed.contains(&to) {
                return Err(bad(format!(
                    "Invalid snapshot: Provided snapshot status {to} not allowed for snapshot with status {}.",
                    s.status
                )));
            }
            let progress = args.get("progress").and_then(Value::as_str);
            state.store.set_snapshot_status(&s.id, &[s.status.as_str()], to, None, progress).await?;
        }
        "os-force_delete" => {
            ctx.require_admin("volume_extension:snapshot_admin_actions:force_delete")?;
            start_delete(&state, &s, true).await?;
        }
        other => return Err(bad(format!("There is no such action: {other}"))),
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

// ---- revert (3.40) ----

/// Cinder's `revert`: only to the volume's latest snapshot, of the volume's size, with both
/// `available` (a 409 otherwise); the volume goes `reverting` and the snapshot `restoring`
/// while the agent copies the snapshot's bytes over the volume's.
pub(crate) async fn start_revert(state: &AppState, v: &Volume, args: &Value) -> ApiResult<()> {
    let snapshot_id = args.get("snapshot_id").and_then(Value::as_str);
    // Cinder's `get_latest_snapshot`: the newest by creation, whatever its status.
    let Some(latest) = state.store.volume_snapshots(&v.id).await?.pop() else {
        return Err(bad(format!("Volume {} doesn't have any snapshots.", v.id)));
    };
    if snapshot_id != Some(latest.id.as_str()) {
        return Err(bad(format!(
            "Specified snapshot {} is None or not the latest one of volume {}.",
            snapshot_id.unwrap_or("None"),
            v.id
        )));
    }
    if v.size != latest.size {
        return Err(bad(format!(
            "Can't revert volume {} to its latest snapshot {}. The volume size must be equal to the snapshot size.",
            v.id, latest.id
        )));
    }
    let volume_refused = || {
        ApiError::conflict(format!(
            "Invalid volume: Can't revert volume {} to its latest snapshot {}. Volume's status must be 'available'.",
            v.id, latest.id
        ))
    };
    if v.status != "available" {
        return Err(volume_refused());
    }
    let Some(host) = v.host_id.clone() else {
        return Err(ApiError::internal(format!("snapshot {} of a volume without a host", latest.id)));
    };
    let action = Action::VolumeRevert { volume: work::spec(v), snapshot_id: latest.id.clone() };
    let action = serde_json::to_string(&action).map_err(ApiError::internal)?;
    let d = work::deadline(work::REVERT_DEADLINE);
    match state.store.begin_revert(&v.id, &latest.id, &d, &host, &action).await? {
        Ok(()) => {}
        Err(RevertRefused::Volume) => return Err(volume_refused()),
        Err(RevertRefused::Snapshot) => {
            return Err(ApiError::conflict(format!(
                "Invalid snapshot: Can't revert volume {} to its latest snapshot {}. Snapshot's status must be \
                 'available'.",
                v.id, latest.id
            )));
        }
    }
    state.signals.notify(&host);
    Ok(())
}

// ---- for volumes ----

/// Where a new volume's bytes come from (`snapshot_id` or `source_volid` of a create body),
/// checked as Cinder checks them, with the host it must be placed on.
pub(crate) struct Origin {
    pub source: VolumeSource,
    /// The size the new volume defaults to and may not go below.
    pub size: i64,
    pub host_id: Option<String>,
    pub volume_type_id: String,
    pub availability_zone: String,
    pub bootable: i64,
    pub snapshot_id: Option<String>,
    pub source_volid: Option<String>,
    /// The volume whose bytes (and image metadata) the new one takes: the snapshot's or the
    /// clone's source.
    pub from_volume: String,
}

/// Reads `snapshot_id` / `source_volid` of a volume create. `None`: neither was given.
pub(crate) async fn origin(state: &AppState, ctx: &Ctx, b: &Map<String, Value>) -> ApiResult<Option<Origin>> {
    if let Some(snap_id) = opt_str(b, "snapshot_id")? {
        let s = load_snapshot(state, ctx, snap_id).await?;
        if s.status != "available" {
            return Err(bad("Invalid snapshot: Originating snapshot status must be one of 'available' values"));
        }
        let v: Volume = state.store.get_volume(&s.volume_id).await?;
        return Ok(Some(Origin {
            source: VolumeSource::Snapshot { snapshot_id: s.id.clone() },
            size: s.size,
            host_id: v.host_id,
            volume_type_id: v.volume_type_id,
            availability_zone: v.availability_zone,
            bootable: v.bootable,
            from_volume: v.id.clone(),
            snapshot_id: Some(s.id),
            source_volid: None,
        }));
    }
    if let Some(src_id) = opt_str(b, "source_volid")? {
        let v = load(state, ctx, src_id).await?;
        if !["available", "in-use"].contains(&v.status.as_str()) {
            return Err(bad(format!(
                "Invalid volume: Unable to create a volume from an originating source volume when its status is \
                 not one of available, in-use values (volume {} is {}).",
                v.id, v.status
            )));
        }
        return Ok(Some(Origin {
            source: VolumeSource::Volume { volume_id: v.id.clone() },
            size: v.size,
            host_id: v.host_id,
            volume_type_id: v.volume_type_id,
            availability_zone: v.availability_zone,
            bootable: v.bootable,
            from_volume: v.id.clone(),
            snapshot_id: None,
            source_volid: Some(v.id),
        }));
    }
    Ok(None)
}

/// Cinder's 400 for a volume smaller than its source.
pub(crate) fn check_size(o: &Origin, size: i64) -> ApiResult<()> {
    if size >= o.size {
        return Ok(());
    }
    Err(bad(if o.snapshot_id.is_some() {
        format!(
            "Invalid input received: Volume size '{size}'GB cannot be smaller than the snapshot size {}GB. They must \
             be >= original snapshot size.",
            o.size
        )
    } else {
        format!(
            "Invalid input received: Volume size '{size}'GB cannot be smaller than original volume size {}GB. They \
             must be >= original volume size.",
            o.size
        )
    }))
}

/// A volume for a server's build made from snapshot `snapshot_id` (a mapping of an image that
/// a volume-backed server's snapshot made): on the snapshot's host, which must be the build's
/// (`host_id`; the scheduler put the server there), with the source volume's type, zone,
/// bootable flag and image metadata, as Cinder's create from a snapshot. Returns its id.
pub(crate) async fn volume_for_build(
    state: &AppState,
    inst: &crate::store::instances::Instance,
    name: &str,
    size: i64,
    snapshot_id: &str,
    host_id: &str,
) -> ApiResult<String> {
    let s = match state.store.get_snapshot(snapshot_id).await {
        Ok(s) => s,
        Err(StoreError::NotFound(_)) => return Err(not_found(snapshot_id)),
        Err(e) => return Err(e.into()),
    };
    if s.status != "available" {
        return Err(bad("Invalid snapshot: Originating snapshot status must be one of 'available' values"));
    }
    let src: Volume = state.store.get_volume(&s.volume_id).await?;
    if src.host_id.as_deref() != Some(host_id) {
        return Err(bad(format!(
            "Snapshot {snapshot_id} is stored on another compute host than the server's; a volume is made \
             beside its snapshot."
        )));
    }
    let o = Origin {
        source: VolumeSource::Snapshot { snapshot_id: s.id.clone() },
        size: s.size,
        host_id: src.host_id.clone(),
        volume_type_id: src.volume_type_id.clone(),
        availability_zone: src.availability_zone.clone(),
        bootable: src.bootable,
        snapshot_id: Some(s.id.clone()),
        source_volid: None,
        from_volume: src.id.clone(),
    };
    check_size(&o, size)?;
    let ts = now();
    let v = Volume {
        id: new_uuid(),
        project_id: inst.project_id.clone(),
        user_id: inst.user_id.clone(),
        name: Some(name.to_string()),
        description: None,
        size,
        status: "creating".into(),
        attach_status: "detached".into(),
        volume_type_id: o.volume_type_id.clone(),
        availability_zone: o.availability_zone.clone(),
        host_id: Some(host_id.to_string()),
        bootable: o.bootable,
        readonly: 0,
        metadata: "{}".into(),
        deadline: Some(work::deadline(work::CREATE_DEADLINE)),
        created_at: ts.clone(),
        updated_at: ts,
        snapshot_id: o.snapshot_id.clone(),
        source_volid: None,
    };
    let limits = super::quotas::create_limits(state, &v.project_id).await?;
    if state.store.create_volume(&v, limits).await?.is_none() {
        return Err(super::quotas::over_quota(state, &v.project_id, size, limits).await);
    }
    copy_image_metadata(state, &src.id, &v.id).await?;
    work::enqueue_create(state, &v, host_id, Some(o.source)).await?;
    Ok(v.id)
}

/// Cinder copies the source volume's image metadata to a volume made from its snapshot
/// (`volume_glance_metadata_copy_to_volume`).
pub(crate) async fn copy_image_metadata(state: &AppState, from_volume: &str, to_volume: &str) -> ApiResult<()> {
    if let Some(m) = state.store.volume_image_metadata(from_volume).await? {
        state.store.set_volume_image_metadata(to_volume, &m).await?;
    }
    Ok(())
}
