//! The attachments API (3.27+, `os-complete` 3.44+) and extend of an attached volume (3.42+).
//!
//! Attachments live in `volume_attachments` beside the ones Nova's `os-volume_attachments`
//! makes (`by_compute`). Ones made here are Cinder's bookkeeping for an outside consumer: the
//! volume moves `available` → `reserved` (create without a connector) → `attaching` (update
//! with a connector: the connection info is answered) → `in-use` (`os-complete`); deleting the
//! last attachment makes it `available` again (Cinder's `volume_attached` / `finish_detach`).
//! Nothing is plugged into a guest by them; an attachment Nova made is detached through Nova
//! only (409, as Cinder's `ConflictNovaUsingAttachment`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_common::agent::{Action, ExtendAttached};
use serde_json::{Map, Value, json};

use super::mv::{self, Mv};
use super::volumes::{bad, load, wrapped};
use super::work;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::instances::InstanceAction;
use crate::store::volume::{Attachment, Volume, new_attachment};
use crate::store::{StoreError, new_uuid, now};

type JsonResult = ApiResult<axum::Json<Value>>;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Volume attachment {id} could not be found."))
}

/// Cinder's attach status of an attachment (ours: reserved, attaching, attached, detaching).
fn status(a: &Attachment) -> &str {
    &a.status
}

/// The connection info of the file backend: the volume lives on its host, by its id.
fn connection_info(v: &Volume, a: &Attachment) -> Value {
    json!({
        "driver_volume_type": "file",
        "data": {
            "volume_id": v.id,
            "attachment_id": a.id,
            "access_mode": if v.readonly != 0 || a.attach_mode == "ro" { "ro" } else { "rw" },
            "host": v.host_id,
        },
    })
}

fn summary(a: &Attachment) -> Value {
    json!({"id": a.id, "status": status(a), "instance": a.instance_id, "volume_id": a.volume_id})
}

/// Cinder's detail view: times are '' until set; the connection info only once a connector
/// was given (an attachment past `reserved`).
fn detail(a: &Attachment, v: Option<&Volume>) -> Value {
    let mut body = summary(a);
    let connected = a.status != "reserved";
    let info = match v {
        Some(v) if connected => connection_info(v, a),
        _ => json!({}),
    };
    if let Some(m) = body.as_object_mut() {
        m.insert("attached_at".into(), json!(if connected { a.updated_at.as_str() } else { "" }));
        m.insert("detached_at".into(), json!(""));
        m.insert("attach_mode".into(), json!(a.attach_mode));
        m.insert("connection_info".into(), info);
    }
    body
}

/// An attachment of a volume the caller may see (404 otherwise), with its volume.
async fn load_attachment(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<(Attachment, Volume)> {
    let a = match state.store.get_attachment(id).await {
        Ok(a) => a,
        Err(StoreError::NotFound(_)) => return Err(not_found(id)),
        Err(e) => return Err(e.into()),
    };
    let v = load(state, ctx, &a.volume_id).await.map_err(|_| not_found(id))?;
    Ok((a, v))
}

/// The attachments visible to the caller, filtered and paged as Cinder's `_items`.
async fn items(state: &AppState, ctx: &Ctx, ver: Mv, q: &Query) -> ApiResult<Vec<(Attachment, Volume)>> {
    ctx.require_reader("volume:attachment_get_all")?;
    mv::reject_invalid_filters(ctx.is_admin(), q, ver, mv::filters_of("attachment"))?;
    let all = ctx.is_admin() && q.get("all_tenants").is_some();
    let project = if all { None } else { Some(ctx.project_id()?.to_string()) };
    let volumes = state.store.list_volumes(project.as_deref()).await?;
    let ids: Vec<&str> = volumes.iter().map(|v| v.id.as_str()).collect();
    let mut by_volume = state.store.attachments_of_volumes(&ids).await?;
    let mut out: Vec<(Attachment, Volume)> = Vec::new();
    for v in &volumes {
        for a in by_volume.remove(&v.id).unwrap_or_default() {
            let keep = q.get("volume_id").is_none_or(|w| w == a.volume_id)
                && q.get("instance_id").is_none_or(|w| a.instance_id.as_deref() == Some(w))
                && q.get("status").or(q.get("attach_status")).is_none_or(|w| w == a.status);
            if keep {
                out.push((a, v.clone()));
            }
        }
    }
    // Cinder's default order: newest first.
    out.sort_by(|x, y| y.0.created_at.cmp(&x.0.created_at).then_with(|| y.0.id.cmp(&x.0.id)));
    if let Some(marker) = q.get("marker") {
        let pos = out
            .iter()
            .position(|(a, _)| a.id == marker)
            .ok_or_else(|| ApiError::not_found(format!("Volume attachment {marker} could not be found.")))?;
        out.drain(..=pos);
    }
    if let Some(limit) = q.uint("limit")? {
        out.truncate(limit as usize);
    }
    Ok(out)
}

pub async fn list(State(state): State<AppState>, ctx: Ctx, ver: Mv, q: Query) -> JsonResult {
    let list = items(&state, &ctx, ver, &q).await?;
    Ok(axum::Json(json!({"attachments": list.iter().map(|(a, _)| summary(a)).collect::<Vec<_>>()})))
}

pub async fn list_detail(State(state): State<AppState>, ctx: Ctx, ver: Mv, q: Query) -> JsonResult {
    let list = items(&state, &ctx, ver, &q).await?;
    Ok(axum::Json(json!({"attachments": list.iter().map(|(a, v)| detail(a, Some(v))).collect::<Vec<_>>()})))
}

pub async fn show(State(state): State<AppState>, ctx: Ctx, Path((_p, id)): Path<(String, String)>) -> JsonResult {
    ctx.require_reader("volume:attachment_get")?;
    let (a, v) = load_attachment(&state, &ctx, &id).await?;
    Ok(axum::Json(json!({"attachment": detail(&a, Some(&v))})))
}

fn uuid_field(b: &Map<String, Value>, key: &str, required: bool) -> ApiResult<Option<String>> {
    match b.get(key) {
        None if required => Err(bad(format!(
            "Invalid input for field/attribute attachment. Value: {}. '{key}' is a required property",
            Value::Object(b.clone())
        ))),
        None | Some(Value::Null) if !required => Ok(None),
        None => Ok(None),
        Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => Ok(Some(s.clone())),
        Some(other) => {
            Err(bad(format!("Invalid input for field/attribute {key}. Value: {other}. {other} is not a 'uuid'")))
        }
    }
}

fn connector_field(b: &Map<String, Value>, required: bool) -> ApiResult<Option<Map<String, Value>>> {
    match b.get("connector") {
        Some(Value::Object(c)) => Ok(Some(c.clone())),
        None | Some(Value::Null) if !required => Ok(None),
        None => Err(bad(format!(
            "Invalid input for field/attribute attachment. Value: {}. 'connector' is a required property",
            Value::Object(b.clone())
        ))),
        Some(other) => Err(bad(format!(
            "Invalid input for field/attribute connector. Value: {other}. {other} is not of type 'object', 'null'"
        ))),
    }
}

fn check_keys(b: &Map<String, Value>, known: &[&str]) -> ApiResult<()> {
    match b.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(format!(
            "Invalid input for field/attribute attachment. Value: {}. Additional properties are not allowed ('{k}' was unexpected)",
            Value::Object(b.clone())
        ))),
        None => Ok(()),
    }
}

/// Cinder's `volume_attached(mark_attached=False)`: the attachment and volume become
/// `attaching`, with the connector's mountpoint and mode.
async fn connect(state: &AppState, a: &Attachment, v: &Volume, connector: &Map<String, Value>) -> ApiResult<()> {
    let mountpoint = connector.get("mountpoint").and_then(Value::as_str).unwrap_or("na");
    let mode = if v.readonly != 0 || a.attach_mode == "ro" {
        "ro"
    } else {
        connector.get("mode").and_then(Value::as_str).filter(|m| *m == "ro").unwrap_or("rw")
    };
    state.store.attachment_set_mode(&a.id, mode).await?;
    let from = ["reserved", "attaching", "in-use"];
    if !state
        .store
        .move_attachment(&a.id, Some("attaching"), Some(mountpoint), &v.id, &from, "attaching", None, None)
        .await?
    {
        return Err(ApiError::conflict(format!(
            "Conflicting resource: the volume {} changed state (now {}); try again.",
            v.id, v.status
        )));
    }
    Ok(())
}

/// `POST /attachments`: reserves the volume for the instance, and connects at once when a
/// connector is given. 200 with the attachment's detail.
pub async fn create(State(state): State<AppState>, ctx: Ctx, Json(body): Json<Value>) -> ApiResult<Response> {
    ctx.require_member("volume:attachment_create")?;
    let b = wrapped(&body, "attachment")?;
    check_keys(b, &["volume_uuid", "instance_uuid", "connector"])?;
    let volume_id = uuid_field(b, "volume_uuid", true)?.unwrap_or_default();
    let instance = uuid_field(b, "instance_uuid", false)?;
    let connector = connector_field(b, false)?;
    let v = load(&state, &ctx, &volume_id).await?;
    if v.status.contains("error") {
        return Err(bad(format!(
            "Invalid volume: Volume attachments can not be created if the volume is in an error state. The Volume {} \
             currently has a status of: {} ",
            v.id, v.status
        )));
    }
    let mut a = new_attachment(&v.id, instance.as_deref(), None, "reserved");
    // Cinder's `attach_mode` is the string 'null' until a connector says (or the volume is
    // read-only, which wins).
    a.attach_mode = if v.readonly != 0 { "ro".into() } else { "null".into() };
    if !state.store.reserve_volume(&a, "reserved", None, None).await? {
        return Err(bad(format!(
            "Invalid volume: Volume {} status must be available or downloading to reserve, but the current status is {}.",
            v.id, v.status
        )));
    }
    if let Some(c) = &connector {
        connect(&state, &a, &v, c).await?;
    }
    let a = state.store.get_attachment(&a.id).await?;
    let v = state.store.get_volume(&v.id).await?;
    Ok((StatusCode::OK, axum::Json(json!({"attachment": detail(&a, Some(&v))}))).into_response())
}

/// `PUT /attachments/{id}`: the connector → the connection info; the volume `attaching`.
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_member("volume:attachment_update")?;
    let b = wrapped(&body, "attachment")?;
    check_keys(b, &["connector"])?;
    let connector = connector_field(b, true)?.unwrap_or_default();
    let (a, v) = load_attachment(&state, &ctx, &id).await?;
    if v.status.contains("error") {
        return Err(ApiError::conflict(format!(
            "Volume attachments can not be updated if the volume is in an error state. The Volume {} currently has \
             a status of: {} ",
            v.id, v.status
        )));
    }
    // Nova's own attachment is plugged by its agent; its connection is already made.
    if a.by_compute == 0 {
        connect(&state, &a, &v, &connector).await?;
    }
    let a = state.store.get_attachment(&a.id).await?;
    let v = state.store.get_volume(&v.id).await?;
    Ok(axum::Json(json!({"attachment": detail(&a, Some(&v))})))
}

/// Cinder's `ConflictNovaUsingAttachment`: a disk plugged into a guest leaves through Nova.
pub(crate) fn nova_owned(a: &Attachment) -> ApiError {
    ApiError::conflict(format!(
        "Detach volume from instance {} using the Compute API",
        a.instance_id.as_deref().unwrap_or("")
    ))
}

/// `DELETE /attachments/{id}`: the attachment goes; the volume is `available` once none is
/// left. 200 with the attachments that remain.
pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path((_p, id)): Path<(String, String)>) -> JsonResult {
    ctx.require_member("volume:attachment_delete")?;
    let (a, v) = load_attachment(&state, &ctx, &id).await?;
    if a.by_compute != 0 {
        return Err(nova_owned(&a));
    }
    let others = state.store.volume_attachments(&v.id).await?.into_iter().filter(|o| o.id != a.id).count();
    // Cinder's `volume_detached`: available when none remain (an upload in progress keeps its
    // status), in-use otherwise.
    let to = if others > 0 {
        "in-use"
    } else if v.status == "uploading" {
        "uploading"
    } else {
        "available"
    };
    if !state.store.move_attachment(&a.id, None, None, &v.id, &[v.status.as_str()], to, None, None).await? {
        return Err(ApiError::conflict(format!("Conflicting resource: the volume {} changed state; try again.", v.id)));
    }
    let rest: Vec<Value> = state.store.volume_attachments(&v.id).await?.iter().map(summary).collect();
    Ok(axum::Json(json!({"attachments": rest})))
}

/// `POST /attachments/{id}/action`: `os-complete` (3.44) marks the attachment attached and the
/// volume `in-use`. 204.
pub async fn action(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_p, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<StatusCode> {
    let obj = body.as_object().filter(|o| o.len() == 1).ok_or_else(|| bad("Malformed request body"))?;
    match obj.keys().next().map(String::as_str) {
        Some("os-complete") => {
            ctx.require_member("volume:attachment_complete")?;
            let (a, v) = load_attachment(&state, &ctx, &id).await?;
            let from = ["reserved", "attaching", "in-use"];
            if !state.store.move_attachment(&a.id, Some("attached"), None, &v.id, &from, "in-use", None, None).await? {
                return Err(bad(format!(
                    "Invalid volume: Volume {} status must be reserved, attaching or in-use to complete an \
                     attachment, but the current status is {}.",
                    v.id, v.status
                )));
            }
            Ok(StatusCode::NO_CONTENT)
        }
        Some(other) => Err(bad(format!("There is no such action: {other}"))),
        None => Err(bad("Malformed request body")),
    }
}

// ---- extend while attached (3.42) ----

/// os-extend of an `in-use` volume: the agent grows the bytes and tells the running guest
/// (libvirt's block resize); the volume goes `extending` → `in-use` at the new size. When
/// Nova's attachment plugs it into a guest, the instance gets Nova's `extend_volume` action
/// with its `compute_extend_volume` event, finished when the agent answers.
pub(crate) async fn extend_attached(state: &AppState, ctx: &Ctx, v: &Volume, new_size: i64) -> ApiResult<()> {
    let Some(host) = v.host_id.clone() else { return Err(bad("Invalid volume: the volume has no host.")) };
    let atts = state.store.volume_attachments(&v.id).await?;
    let plugged = atts.iter().find(|a| a.by_compute != 0 && a.status == "attached" && a.instance_id.is_some());
    let attached = plugged.map(|a| ExtendAttached {
        instance_id: a.instance_id.clone().unwrap_or_default(),
        device: a.mountpoint.as_deref().unwrap_or("").trim_start_matches("/dev/").to_string(),
    });
    let mut target = v.clone();
    target.size = new_size;
    let action = Action::VolumeExtend { volume: work::spec(&target), attached: attached.clone() };
    let action = serde_json::to_string(&action).map_err(ApiError::internal)?;
    let d = work::deadline(work::EXTEND_DEADLINE);
    if !state.store.begin_volume_work(&v.id, &["in-use"], "extending", &d, &host, &action).await? {
        return Err(bad(format!(
            "Invalid volume: Volume {} status must be '{{'status': 'in-use'}}' to extend, currently {}.",
            v.id, v.status
        )));
    }
    if let Some(att) = attached {
        let ts = now();
        let act = InstanceAction {
            id: new_uuid(),
            instance_id: att.instance_id.clone(),
            request_id: ctx.request_id.clone(),
            action: "extend_volume".into(),
            project_id: ctx.project_id().map(str::to_string).unwrap_or_default(),
            user_id: ctx.user.id.clone(),
            message: None,
            start_time: ts.clone(),
            finish_time: None,
            updated_at: ts,
        };
        // The action is the record of the guest's side; the volume's state does not hang on it.
        if let Err(e) = state.store.start_action(&act).await {
            tracing::warn!(instance = %att.instance_id, error = %e, "extend_volume action not recorded");
        } else if let Err(e) = state.store.start_event(&act.id, "compute_extend_volume", Some(&host)).await {
            tracing::warn!(instance = %att.instance_id, error = %e, "compute_extend_volume event not recorded");
        }
    }
    state.signals.notify(&host);
    Ok(())
}
