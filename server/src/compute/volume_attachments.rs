//! `/servers/{id}/os-volume_attachments`: attach (hot plug, or into the definition of a stopped
//! guest), list, show, detach. The volume side (states, agent work) is `volume::work`.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ApiVersion;
use super::servers::{record_action, visible};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::volume::Attachment;
use crate::volume::work;

/// `doomed`: the volume is deleted with its server (`delete_on_termination`, shown from 2.79).
fn view(v: ApiVersion, server_id: &str, a: &Attachment, doomed: bool) -> Value {
    let mut body = json!({
        "id": a.volume_id,
        "serverId": server_id,
        "volumeId": a.volume_id,
    });
    // Nova leaves `device` out until the mapping has one (a volume attached to a
    // shelved-offloaded server gets its device when the server is unshelved).
    if let Some(d) = &a.mountpoint {
        body["device"] = json!(d);
    }
    if v.at_least(70) {
        body["tag"] = Value::Null;
    }
    if v.at_least(79) {
        body["delete_on_termination"] = json!(doomed);
    }
    body
}

/// Volume ids of the server's mappings marked `delete_on_termination`, read only where the
/// microversion shows them.
async fn doomed(state: &AppState, v: ApiVersion, server_id: &str) -> ApiResult<Vec<String>> {
    if !v.at_least(79) {
        return Ok(Vec::new());
    }
    super::bdm::delete_on_termination(state, &[server_id]).await
}

/// Attachments Nova would list: those the compute API made, not yet gone.
async fn attachments(state: &AppState, server_id: &str) -> ApiResult<Vec<Attachment>> {
    Ok(state.store.instance_attachments(server_id).await?.into_iter().filter(|a| a.by_compute != 0).collect())
}

fn bdm_missing(volume_id: &str) -> ApiError {
    ApiError::not_found(format!("No volume Block Device Mapping with id {volume_id}."))
}

pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    ctx.require_reader("os_compute_api:os-volumes-attachments:index")?;
    let inst = visible(&state, &ctx, &id).await?;
    let doomed = doomed(&state, v, &inst.id).await?;
    let list: Vec<Value> = attachments(&state, &inst.id)
        .await?
        .iter()
        .map(|a| view(v, &inst.id, a, doomed.contains(&a.volume_id)))
        .collect();
    Ok(axum::Json(json!({"volumeAttachments": list})))
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, volume_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    ctx.require_reader("os_compute_api:os-volumes-attachments:show")?;
    let inst = visible(&state, &ctx, &id).await?;
    let a = attachments(&state, &inst.id)
        .await?
        .into_iter()
        .find(|a| a.volume_id == volume_id)
        .ok_or_else(|| bdm_missing(&volume_id))?;
    let doomed = doomed(&state, v, &inst.id).await?.contains(&a.volume_id);
    Ok(axum::Json(json!({"volumeAttachment": view(v, &inst.id, &a, doomed)})))
}

/// vm_states an attach or detach may start from (Nova's `check_instance_state` for both).
const ATTACHABLE: [&str; 8] =
    ["active", "paused", "stopped", "suspended", "resized", "soft_delete", "shelved", "shelved_offloaded"];

/// Nova's `_check_request_version`: a shelved or shelved-offloaded server takes attach and
/// detach from 2.20 on only (before the lock and state checks).
fn check_shelved_version(v: ApiVersion, inst: &crate::store::instances::Instance, action: &str) -> ApiResult<()> {
    if matches!(inst.vm_state.as_str(), "shelved" | "shelved_offloaded") && !v.at_least(20) {
        return Err(ApiError::conflict(format!(
            "Cannot '{action}' instance {} while it is in vm_state {}",
            inst.id, inst.vm_state
        )));
    }
    Ok(())
}

fn offloaded(inst: &crate::store::instances::Instance) -> bool {
    inst.vm_state == "shelved_offloaded"
}

fn check_state(inst: &crate::store::instances::Instance, action: &str) -> ApiResult<()> {
    if inst.task_state.is_some() || !ATTACHABLE.contains(&inst.vm_state.as_str()) {
        let detail = match &inst.task_state {
            Some(t) => format!("task_state {t}"),
            None => format!("vm_state {}", inst.vm_state),
        };
        return Err(ApiError::conflict(format!("Cannot '{action}' instance {} while it is in {detail}", inst.id)));
    }
    Ok(())
}

/// Nova's `check_instance_lock` on attach, detach and swap: a locked server refuses
/// non-admins (checked before the state, as the outer decorator).
fn check_lock(ctx: &Ctx, inst: &crate::store::instances::Instance) -> ApiResult<()> {
    if inst.locked != 0 && !ctx.is_admin() {
        return Err(ApiError::conflict(format!("Instance {} is locked", inst.id)));
    }
    Ok(())
}

pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<axum::Json<Value>> {
    ctx.require_member("os_compute_api:os-volumes-attachments:create")?;
    let b = body
        .get("volumeAttachment")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::bad_request("Invalid input for field/attribute volumeAttachment."))?;
    let volume_id = match b.get("volumeId") {
        Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() => s.clone(),
        other => {
            let shown = other.cloned().unwrap_or(Value::Null);
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute volumeId. Value: {shown}. {shown} is not a 'uuid'"
            )));
        }
    };
    let device = match b.get("device") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ApiError::bad_request(format!("Invalid input for field/attribute device. Value: {other}.")));
        }
    };
    if b.get("delete_on_termination").and_then(Value::as_bool) == Some(true)
        || b.get("tag").is_some_and(|t| !t.is_null())
    {
        return Err(ApiError::bad_request("Tagged attachments and delete_on_termination are not supported yet."));
    }
    let inst = visible(&state, &ctx, &id).await?;
    check_shelved_version(v, &inst, "attach_volume")?;
    check_lock(&ctx, &inst)?;
    check_state(&inst, "attach_volume")?;
    let vol = match state.store.get_volume(&volume_id).await {
        Ok(vol) if ctx.owns(&vol.project_id) => vol,
        Ok(_) | Err(StoreError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("Volume {volume_id} could not be found.")));
        }
        Err(e) => return Err(e.into()),
    };
    if attachments(&state, &inst.id).await?.iter().any(|a| a.volume_id == vol.id) {
        return Err(ApiError::bad_request(format!("Invalid volume: volume {} already attached", vol.id)));
    }
    if offloaded(&inst) {
        // No host to plug it into: reserved and completed at once (in-use, no device), plugged
        // into the domain the unshelve builds (Nova's `_attach_volume_shelved_offloaded`).
        let a = work::attach_offloaded(&state, &inst, &vol).await?;
        record_action(&state, &ctx, &inst.id, "attach_volume", &ctx.request_id).await?;
        state.store.finish_named_action(&inst.id, "attach_volume", "Success", None, None).await?;
        let mut body = view(v, &inst.id, &a, false);
        body["device"] = Value::Null;
        return Ok(axum::Json(json!({"volumeAttachment": body})));
    }
    let a = work::attach(&state, &inst, &vol, device.as_deref()).await?;
    record_action(&state, &ctx, &inst.id, "attach_volume", &ctx.request_id).await?;
    // A new attachment is never marked (Nova's attach refuses delete_on_termination here).
    Ok(axum::Json(json!({"volumeAttachment": view(v, &inst.id, &a, false)})))
}

pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, volume_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_member("os_compute_api:os-volumes-attachments:delete")?;
    let inst = visible(&state, &ctx, &id).await?;
    check_shelved_version(v, &inst, "detach_volume")?;
    // The volume a server boots from stays with it (Nova checks this before the lock and state).
    let boot = state.store.bdm_of_volume(&volume_id).await?;
    if boot.is_some_and(|b| b.instance_id == inst.id && b.boot_index == Some(0)) {
        return Err(ApiError::bad_request("Cannot detach a root device volume"));
    }
    check_lock(&ctx, &inst)?;
    check_state(&inst, "detach_volume")?;
    let a = attachments(&state, &inst.id)
        .await?
        .into_iter()
        .find(|a| a.volume_id == volume_id)
        .ok_or_else(|| bdm_missing(&volume_id))?;
    if offloaded(&inst) {
        // Nothing is plugged anywhere: the attachment goes at once (Nova's
        // `_detach_volume_shelved_offloaded`), the volume is available again.
        work::detach_offloaded(&state, &inst, &a).await?;
        record_action(&state, &ctx, &inst.id, "detach_volume", &ctx.request_id).await?;
        state.store.finish_named_action(&inst.id, "detach_volume", "Success", None, None).await?;
        return Ok(StatusCode::ACCEPTED);
    }
    work::detach(&state, &inst, &a).await?;
    record_action(&state, &ctx, &inst.id, "detach_volume", &ctx.request_id).await?;
    Ok(StatusCode::ACCEPTED)
}
