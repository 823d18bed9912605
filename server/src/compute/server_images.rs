//! Server images (issue 17): `createImage`, `createBackup`, `shelve`, `shelveOffload` and
//! `unshelve`, and the agents' answers to them.
//!
//! The API makes the Glance image (`queued`, with Nova's snapshot properties) and hands the
//! host an [`Action::ImageCreate`]; the agent copies the root disk and uploads it through
//! `PUT /agent/v1/images/{id}/file` (the image becomes `active`), reporting the upload's task
//! states as it goes. A failure or the action's deadline deletes the image and clears the
//! task. Shelve powers the guest off and snapshots it; offloading (at once, after
//! `[compute] shelved_offload_time`, or by `shelveOffload`) removes the domain and disk from
//! the host and gives its resources back; unshelving an offloaded server schedules it anew and
//! builds it from the shelved image with the same ports.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meridian_common::agent::{Action, PowerState, WorkEvent};
use serde_json::{Map, Value, json};

use super::ApiVersion;
use super::conductor::{self, ConductError, nova_time};
use super::scheduler;
use super::servers::{self, visible};
use super::states::{self, Action as UserAction, TaskState, VmState};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::hosts::{Host, Work};
use crate::store::image::Image;
use crate::store::instances::{Expect, Instance, NewState};
use crate::store::{StoreError, new_uuid, now};

/// Nova's `NON_INHERITABLE_IMAGE_PROPERTIES` plus the default
/// `[DEFAULT] non_inheritable_image_properties`.
pub(crate) const NON_INHERITABLE: [&str; 8] = [
    "cinder_encryption_key_id",
    "cinder_encryption_key_deletion_policy",
    "img_signature",
    "img_signature_hash_method",
    "img_signature_key_type",
    "img_signature_certificate_uuid",
    "cache_in_nova",
    "bittorrent",
];

/// Image metadata items a request may carry before 2.39 (Nova's `metadata_items` quota).
const MAX_IMAGE_METADATA: usize = 128;

/// `POST /servers/{id}/action` for this module's actions; `None` for any other action.
pub(crate) async fn action(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    id: &str,
    name: &str,
    args: &Value,
) -> Option<ApiResult<Response>> {
    Some(match name {
        "createImage" => create_image(state, ctx, v, id, args).await,
        "createBackup" => create_backup(state, ctx, v, id, args).await,
        "shelve" => shelve(state, ctx, id).await.map(|()| StatusCode::ACCEPTED.into_response()),
        "shelveOffload" => shelve_offload(state, ctx, id).await.map(|()| StatusCode::ACCEPTED.into_response()),
        "unshelve" => unshelve(state, ctx, v, id, args).await.map(|()| StatusCode::ACCEPTED.into_response()),
        _ => return None,
    })
}

fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for field/attribute {field}. {why}"))
}

/// The action's object, with only `allowed` keys and every `required` one.
fn action_object<'a>(
    name: &str,
    args: &'a Value,
    allowed: &[&str],
    required: &[&str],
) -> ApiResult<&'a Map<String, Value>> {
    let o = args.as_object().ok_or_else(|| invalid(name, format!("Value: {args}. {args} is not of type 'object'")))?;
    if let Some(extra) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(name, format!("Additional properties are not allowed ('{extra}' was unexpected)")));
    }
    if let Some(missing) = required.iter().find(|k| !o.contains_key(**k)) {
        return Err(invalid(name, format!("'{missing}' is a required property")));
    }
    Ok(o)
}

/// Nova's `parameter_types.name`: 1–255 characters, no leading or trailing whitespace.
fn image_name(o: &Map<String, Value>) -> ApiResult<String> {
    match o.get("name") {
        Some(Value::String(s)) if s.is_empty() => Err(invalid("name", "'' is too short")),
        Some(Value::String(s)) if s.chars().count() > 255 => Err(invalid("name", "Value is too long")),
        Some(Value::String(s)) if s.trim() != s => {
            Err(invalid("name", format!("Value: {s}. '{s}' does not match leading/trailing whitespace rules")))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(invalid("name", format!("Value: {other}. {other} is not of type 'string'"))),
        None => Err(invalid("name", "'name' is a required property")),
    }
}

/// The image metadata of createImage / createBackup: string keys (1–255 of
/// `[a-zA-Z0-9-_:. ]`) to strings of at most 255 characters.
fn image_metadata(v: ApiVersion, o: &Map<String, Value>) -> ApiResult<Map<String, Value>> {
    let m = match o.get("metadata") {
        None => return Ok(Map::new()),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(invalid("metadata", format!("Value: {other}. {other} is not of type 'object'"))),
    };
    let key_ok = |k: &str| {
        (1..=255).contains(&k.chars().count()) && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c))
    };
    for (k, val) in m {
        if !key_ok(k) {
            return Err(invalid("metadata", format!("Additional properties are not allowed ('{k}' was unexpected)")));
        }
        match val {
            Value::String(s) if s.chars().count() <= 255 => {}
            Value::String(_) => return Err(invalid(&format!("metadata/{k}"), "Value is too long")),
            other => return Err(invalid(&format!("metadata/{k}"), format!("{other} is not of type 'string'"))),
        }
    }
    // From 2.39 Nova checks no quota here (Glance's own limits apply).
    if !v.at_least(39) && m.len() > MAX_IMAGE_METADATA {
        return Err(ApiError::forbidden("Image metadata limit exceeded"));
    }
    Ok(m.clone())
}

/// Whether the instance boots from a volume (Nova's `is_volume_backed_instance`): no image, or
/// a root mapping that is a volume (a server booted from a volume snapshot's image has both).
async fn volume_backed(state: &AppState, inst: &Instance) -> ApiResult<bool> {
    if inst.image_id.is_empty() {
        return Ok(true);
    }
    // Every stored mapping has a volume as its destination.
    let bdms = state.store.instance_bdms(&inst.id).await?;
    Ok(bdms.iter().any(|b| b.boot_index == Some(0)))
}

/// The image format a snapshot is written in: the instance's disk is a qcow2 overlay, and
/// Nova's libvirt driver writes a snapshot in its disk's format (`snapshot_image_format`
/// unset).
const SNAPSHOT_FORMAT: &str = "qcow2";

/// The new image of an instance as Nova's `compute_utils.create_image` makes it: the base
/// image's inheritable properties, the instance's own, then `extra` (which wins).
async fn new_image(
    state: &AppState,
    ctx: &Ctx,
    inst: &Instance,
    name: &str,
    image_type: &str,
    extra: Map<String, Value>,
) -> ApiResult<Image> {
    let base = match state.store.get_image(&inst.image_id).await {
        Ok(img) => Some(img),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut props = inherited_properties(ctx, inst, base.as_ref(), &[]);
    props.insert("image_location".into(), json!("snapshot"));
    props.insert("image_state".into(), json!("available"));
    props.insert("owner_id".into(), json!(inst.project_id));
    props.insert("instance_uuid".into(), json!(inst.id));
    props.insert("user_id".into(), json!(ctx.user.id));
    props.insert("image_type".into(), json!(image_type));
    Ok(queued_image(ctx, inst, name, base.as_ref(), props, extra, SNAPSHOT_FORMAT))
}

/// What every image made of an instance starts with (Nova's
/// `initialize_instance_snapshot_metadata`): the base image's properties but the
/// non-inheritable ones, Glance's own, the client's upload markers, the base's block device
/// mappings and `also`; then `base_image_ref` and `boot_roles`.
pub(crate) fn inherited_properties(
    ctx: &Ctx,
    inst: &Instance,
    base: Option<&Image>,
    also: &[&str],
) -> Map<String, Value> {
    let mut props: Map<String, Value> = base.map(Image::properties_map).unwrap_or_default();
    props.retain(|k, _| {
        !NON_INHERITABLE.contains(&k.as_str())
            && !k.starts_with("os_glance")
            && !matches!(k.as_str(), "mappings" | "block_device_mapping" | "img_mappings" | "img_block_device_mapping")
            // What the client put on the base image for its own upload says nothing of this one.
            && !k.starts_with("owner_specified.")
            && !also.contains(&k.as_str())
    });
    let roles: Vec<&str> = ctx.roles.iter().map(|r| r.name.as_str()).collect();
    props.insert("base_image_ref".into(), json!(inst.image_id));
    props.insert("boot_roles".into(), json!(roles.join(",")));
    props
}

/// The `queued` image record of an instance's new image: `props`, the owner's project when
/// another project's admin makes it, then `extra` (which wins); private to the instance's
/// project (shared when made by another's), at least as big as the base and the root disk.
pub(crate) fn queued_image(
    ctx: &Ctx,
    inst: &Instance,
    name: &str,
    base: Option<&Image>,
    mut props: Map<String, Value>,
    extra: Map<String, Value>,
    disk_format: &str,
) -> Image {
    let own_project = ctx.project_id().is_ok_and(|p| p == inst.project_id);
    if !own_project {
        props.insert("instance_owner".into(), json!(inst.project_id));
    }
    props.extend(extra);
    let flavor: Value = serde_json::from_str(&inst.flavor).unwrap_or_default();
    let root_gb = flavor["disk"].as_i64().unwrap_or(0);
    let ts = now();
    Image {
        id: new_uuid(),
        name: Some(name.to_string()),
        status: "queued".into(),
        visibility: if own_project { "private" } else { "shared" }.into(),
        owner: Some(inst.project_id.clone()),
        min_ram: base.map_or(0, |b| b.min_ram),
        min_disk: base.map_or(0, |b| b.min_disk).max(root_gb),
        disk_format: Some(disk_format.into()),
        container_format: Some("bare".into()),
        properties: Value::Object(props).to_string(),
        created_at: ts.clone(),
        updated_at: ts,
        ..Default::default()
    }
}

/// Deletes an image with its data (a failed upload's, a rotated backup, a shelved image that
/// is no longer needed); absent is fine.
pub(crate) async fn delete_image(state: &AppState, image_id: &str) {
    match state.store.delete_image(image_id).await {
        Ok(()) | Err(StoreError::NotFound(_)) => {}
        Err(e) => tracing::warn!(image = %image_id, error = %e, "could not delete an instance's image"),
    }
    crate::image::data::remove_data(state, image_id).await;
    if let Err(e) = state.store.drop_instance_image(image_id).await {
        tracing::warn!(image = %image_id, error = %e, "could not forget an instance's image");
    }
}

/// The instance's host when it is up, for work that needs it.
async fn live_host(state: &AppState, inst: &Instance) -> ApiResult<Option<Host>> {
    Ok(match &inst.host_id {
        Some(h) => state.store.get_host(h).await.ok().filter(|h| conductor::host_up(state, h)),
        None => None,
    })
}

/// Moves the instance to `task` if `action` may start (the lock checked when `locked` says so,
/// as Nova's `check_instance_lock`): the instance as it was just before.
async fn begin(
    state: &AppState,
    ctx: &Ctx,
    read: &Instance,
    action: UserAction,
    task: TaskState,
    check_lock: bool,
) -> ApiResult<Instance> {
    let mut inst = read.clone();
    for _ in 0..5 {
        let (vm, t) = (servers::vm_state(&inst), servers::task_state(&inst));
        if check_lock && inst.locked != 0 && !ctx.is_admin() {
            return Err(ApiError::conflict(format!("Instance {} is locked", inst.id)));
        }
        if !states::allowed(action, vm, t) {
            return Err(states::refuse(action, &inst.id, vm, t));
        }
        let to = NewState { vm_state: &inst.vm_state, task_state: Some(task.as_str()), power_state: None };
        if state.store.transition(&inst.id, Expect::Task(inst.task_state.as_deref()), to).await?.is_some() {
            return Ok(inst);
        }
        inst = state.store.get_instance(&inst.id).await?;
    }
    Err(states::refuse(action, &inst.id, servers::vm_state(&inst), servers::task_state(&inst)))
}

/// Checks `action` may start now, before anything is made for it (the image).
fn check(ctx: &Ctx, inst: &Instance, action: UserAction, check_lock: bool) -> ApiResult<()> {
    if check_lock && inst.locked != 0 && !ctx.is_admin() {
        return Err(ApiError::conflict(format!("Instance {} is locked", inst.id)));
    }
    let (vm, t) = (servers::vm_state(inst), servers::task_state(inst));
    if !states::allowed(action, vm, t) {
        return Err(states::refuse(action, &inst.id, vm, t));
    }
    Ok(())
}

/// Records the action, hands `work` to the host and arms the deadline; a host that is down
/// ends the task again with Nova's 409.
async fn dispatch(
    state: &AppState,
    ctx: &Ctx,
    inst: &Instance,
    action: UserAction,
    event: &str,
    host: Option<Host>,
    work: &Action,
) -> ApiResult<()> {
    servers::record_action(state, ctx, &inst.id, action.name(), &ctx.request_id).await?;
    let Some(h) = host else {
        let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: None };
        state.store.transition(&inst.id, Expect::Any, to).await?;
        state.store.finish_named_action(&inst.id, action.name(), "Error", Some("Error"), None).await?;
        return Err(ApiError::conflict(format!(
            "Compute host of instance {} is not available; cannot {}.",
            inst.id,
            action.name()
        )));
    };
    let json = serde_json::to_string(work).map_err(ApiError::internal)?;
    state.store.enqueue_work(&inst.id, &h.id, &json).await?;
    super::lifecycle::arm_deadline(state, &inst.id).await?;
    if let Some(a) = state.store.latest_action(&inst.id, action.name()).await? {
        state.store.start_event(&a.id, event, Some(&h.name)).await?;
    }
    state.signals.notify(&h.id);
    Ok(())
}

/// The 202 of createImage / createBackup: from 2.45 `{"image_id": …}`, before it a `Location`
/// header naming the image (createBackup: only when `rotation` > 0).
fn image_answer(state: &AppState, v: ApiVersion, image_id: &str, location: bool) -> Response {
    if v.at_least(45) {
        return (StatusCode::ACCEPTED, axum::Json(json!({"image_id": image_id}))).into_response();
    }
    let mut resp = StatusCode::ACCEPTED.into_response();
    let url = format!("{}/image/images/{image_id}", state.cfg.public_url.trim_end_matches('/'));
    if location && let Ok(h) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, h);
    }
    resp
}

/// Makes the image and starts the host's copy for a snapshot or backup.
async fn start_image_work(
    state: &AppState,
    ctx: &Ctx,
    inst: &Instance,
    action: UserAction,
    img: Image,
    backup: Option<(&str, i64)>,
) -> ApiResult<()> {
    let (task, kind, event) = match action {
        UserAction::CreateBackup => (TaskState::ImageBackup, "backup", "compute_backup_instance"),
        _ => (TaskState::ImageSnapshotPending, "snapshot", "compute_snapshot_instance"),
    };
    state.store.create_image(&img).await?;
    state.store.add_instance_image(&img.id, &inst.id, kind, backup).await?;
    let inst = match begin(state, ctx, inst, action, task, false).await {
        Ok(i) => i,
        Err(e) => {
            // Nova deletes the image when the instance changed before the snapshot started.
            delete_image(state, &img.id).await;
            return Err(e);
        }
    };
    let host = live_host(state, &inst).await?;
    let work = Action::ImageCreate {
        image_id: img.id.clone(),
        disk_format: img.disk_format.clone().unwrap_or_else(|| "qcow2".into()),
        shelving: false,
    };
    if let Err(e) = dispatch(state, ctx, &inst, action, event, host, &work).await {
        delete_image(state, &img.id).await;
        return Err(e);
    }
    Ok(())
}

async fn create_image(state: &AppState, ctx: &Ctx, v: ApiVersion, id: &str, args: &Value) -> ApiResult<Response> {
    ctx.require_member("os_compute_api:servers:create_image")?;
    let inst = visible(state, ctx, id).await?;
    let o = action_object("createImage", args, &["name", "metadata"], &["name"])?;
    let name = image_name(o)?;
    let metadata = image_metadata(v, o)?;
    if volume_backed(state, &inst).await? {
        ctx.require_member("os_compute_api:servers:create_image:allow_volume_backed")?;
        // Nova's `snapshot_volume_backed`: the same states, no task state, no lock check.
        check(ctx, &inst, UserAction::CreateImage, false)?;
        let image_id = super::volume_snapshots::create_image(state, ctx, &inst, &name, metadata).await?;
        return Ok(image_answer(state, v, &image_id, true));
    }
    check(ctx, &inst, UserAction::CreateImage, false)?;
    let img = new_image(state, ctx, &inst, &name, "snapshot", metadata).await?;
    let image_id = img.id.clone();
    start_image_work(state, ctx, &inst, UserAction::CreateImage, img, None).await?;
    Ok(image_answer(state, v, &image_id, true))
}

/// Nova's `parameter_types.non_negative_integer`: an integer, or a string of digits.
fn rotation_of(o: &Map<String, Value>) -> ApiResult<i64> {
    let bad = |v: &Value| invalid("rotation", format!("Value: {v}. {v} is not of type 'integer', 'string'"));
    match o.get("rotation") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(r) if r >= 0 => Ok(r),
            Some(r) => Err(invalid("rotation", format!("Value: {r}. {r} is less than the minimum of 0"))),
            None => Err(bad(&Value::Number(n.clone()))),
        },
        Some(Value::String(s)) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
            s.parse().map_err(|_| invalid("rotation", format!("Value: {s}. Value is too large")))
        }
        Some(Value::String(s)) => Err(invalid("rotation", format!("Value: {s}. '{s}' does not match '^[0-9]*$'"))),
        Some(other) => Err(bad(other)),
        None => Err(invalid("createBackup", "'rotation' is a required property")),
    }
}

async fn create_backup(state: &AppState, ctx: &Ctx, v: ApiVersion, id: &str, args: &Value) -> ApiResult<Response> {
    let inst = visible(state, ctx, id).await?;
    ctx.require_member("os_compute_api:os-create-backup")?;
    let o = action_object(
        "createBackup",
        args,
        &["name", "backup_type", "rotation", "metadata"],
        &["name", "backup_type", "rotation"],
    )?;
    let name = image_name(o)?;
    let backup_type = match o.get("backup_type") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(invalid("backup_type", format!("Value: {other}. {other} is not of type 'string'"))),
        None => return Err(invalid("createBackup", "'backup_type' is a required property")),
    };
    let rotation = rotation_of(o)?;
    let mut metadata = image_metadata(v, o)?;
    // Nova's state check comes first, then the refusal of a volume-backed server.
    check(ctx, &inst, UserAction::CreateBackup, false)?;
    if volume_backed(state, &inst).await? {
        return Err(ApiError::bad_request("Backup is not supported for volume-backed instances."));
    }
    metadata.insert("backup_type".into(), json!(backup_type));
    let img = new_image(state, ctx, &inst, &name, "backup", metadata).await?;
    let image_id = img.id.clone();
    start_image_work(state, ctx, &inst, UserAction::CreateBackup, img, Some((&backup_type, rotation))).await?;
    Ok(image_answer(state, v, &image_id, rotation > 0))
}

async fn shelve(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<()> {
    ctx.require_member("os_compute_api:os-shelve:shelve")?;
    let inst = visible(state, ctx, id).await?;
    check(ctx, &inst, UserAction::Shelve, true)?;
    if volume_backed(state, &inst).await? {
        // Nova: no image; the instance is offloaded at once.
        let inst = begin(state, ctx, &inst, UserAction::Shelve, TaskState::ShelvingOffloading, true).await?;
        let host = live_host(state, &inst).await?;
        state.store.set_shelf(&inst.id, None, host.as_ref().map(|h| h.name.as_str())).await?;
        return dispatch(
            state,
            ctx,
            &inst,
            UserAction::Shelve,
            "compute_shelve_offload_instance",
            host,
            &Action::Delete,
        )
        .await;
    }
    let img = new_image(state, ctx, &inst, &format!("{}-shelved", inst.name), "snapshot", Map::new()).await?;
    state.store.create_image(&img).await?;
    state.store.add_instance_image(&img.id, &inst.id, "shelve", None).await?;
    let inst = match begin(state, ctx, &inst, UserAction::Shelve, TaskState::Shelving, true).await {
        Ok(i) => i,
        Err(e) => {
            delete_image(state, &img.id).await;
            return Err(e);
        }
    };
    let host = live_host(state, &inst).await?;
    let work = Action::ImageCreate {
        image_id: img.id.clone(),
        disk_format: img.disk_format.clone().unwrap_or_else(|| "qcow2".into()),
        shelving: true,
    };
    if let Err(e) = dispatch(state, ctx, &inst, UserAction::Shelve, "compute_shelve_instance", host, &work).await {
        delete_image(state, &img.id).await;
        return Err(e);
    }
    Ok(())
}

async fn shelve_offload(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<()> {
    ctx.require_admin("os_compute_api:os-shelve:shelve_offload")?;
    let inst = visible(state, ctx, id).await?;
    let inst = begin(state, ctx, &inst, UserAction::ShelveOffload, TaskState::ShelvingOffloading, true).await?;
    let host = live_host(state, &inst).await?;
    dispatch(state, ctx, &inst, UserAction::ShelveOffload, "compute_shelve_offload_instance", host, &Action::Delete)
        .await
}

/// `unshelve`: `null`, or from 2.77 `{"availability_zone": …}` and from 2.91 `{"host": …}`
/// (admin only; an `availability_zone` of `null` unpins the server).
async fn unshelve(state: &AppState, ctx: &Ctx, v: ApiVersion, id: &str, args: &Value) -> ApiResult<()> {
    ctx.require_member("os_compute_api:os-shelve:unshelve")?;
    let inst = visible(state, ctx, id).await?;
    let mut az: Option<Option<String>> = None;
    let mut host_name: Option<String> = None;
    if v.at_least(77) && !args.is_null() {
        let allowed: &[&str] = if v.at_least(91) { &["availability_zone", "host"] } else { &["availability_zone"] };
        let o = action_object("unshelve", args, allowed, &[])?;
        match o.get("availability_zone") {
            None => {}
            Some(Value::Null) if v.at_least(91) => az = Some(None),
            Some(Value::String(s)) if !s.is_empty() => az = Some(Some(s.clone())),
            Some(other) => {
                return Err(invalid("availability_zone", format!("Value: {other}. {other} is not of type 'string'")));
            }
        }
        match o.get("host") {
            None => {}
            Some(Value::String(s)) if !s.is_empty() => {
                ctx.require_admin("os_compute_api:os-shelve:unshelve_to_host")?;
                host_name = Some(s.clone());
            }
            Some(other) => return Err(invalid("host", format!("Value: {other}. {other} is not of type 'string'"))),
        }
    }
    check(ctx, &inst, UserAction::Unshelve, true)?;
    if (az.is_some() || host_name.is_some()) && inst.vm_state != VmState::ShelvedOffloaded.as_str() {
        return Err(ApiError::conflict(format!(
            "Specifying an availability zone or a host when unshelving server \"{}\" with status \"{}\" is not \
             supported. The server status must be SHELVED_OFFLOADED.",
            inst.id, inst.vm_state
        )));
    }
    if inst.vm_state == VmState::Shelved.as_str() {
        // Still on its host: Nova's conductor just starts it (task powering-on).
        let inst = begin(state, ctx, &inst, UserAction::Unshelve, TaskState::PoweringOn, true).await?;
        let host = live_host(state, &inst).await?;
        return dispatch(state, ctx, &inst, UserAction::Unshelve, "compute_start_instance", host, &Action::Start).await;
    }
    let hosts = state.store.list_hosts().await?;
    let only = match &host_name {
        Some(name) => {
            let Some(h) = hosts.iter().find(|h| &h.name == name) else {
                return Err(ApiError::bad_request(format!("Compute host {name} could not be found.")));
            };
            if let Some(Some(zone)) = &az
                && &h.availability_zone != zone
            {
                return Err(ApiError::conflict(format!("Host \"{name}\" is not in the availability zone \"{zone}\".")));
            }
            Some(h.id.clone())
        }
        None => None,
    };
    if let Some(Some(zone)) = &az
        && !hosts.iter().any(|h| &h.availability_zone == zone)
    {
        return Err(ApiError::bad_request("The requested availability zone is not available"));
    }
    let inst = begin(state, ctx, &inst, UserAction::Unshelve, TaskState::Unshelving, true).await?;
    servers::record_action(state, ctx, &inst.id, UserAction::Unshelve.name(), &ctx.request_id).await?;
    if let Some(zone) = &az {
        state.store.set_instance_availability_zone(&inst.id, zone.as_deref()).await?;
    }
    super::lifecycle::arm_deadline(state, &inst.id).await?;
    let (state2, id2) = (state.clone(), inst.id.clone());
    let zone = match &az {
        Some(z) => z.clone(),
        None => inst.availability_zone.clone(),
    };
    tokio::spawn(async move {
        if let Err(e) = place_and_build(&state2, &id2, zone, only).await {
            let message = e.to_string();
            if let Err(e2) = fail_unshelve(&state2, &id2, &message, &format!("{e:?}")).await {
                tracing::error!(instance = %id2, error = %e2, "could not record an unshelve failure");
            }
        }
    });
    Ok(())
}

/// Schedules an unshelving server and hands its build (from the shelved image, same ports)
/// to the chosen host.
async fn place_and_build(
    state: &AppState,
    id: &str,
    zone: Option<String>,
    only: Option<String>,
) -> Result<(), ConductError> {
    let inst = state.store.get_instance(id).await?;
    let shelf = state.store.shelf(id).await?;
    let image = match shelf.as_ref().and_then(|s| s.image_id.clone()) {
        Some(image_id) => Some(state.store.get_image(&image_id).await?),
        None => None,
    };
    let flavor: Value = serde_json::from_str(&inst.flavor).map_err(StoreError::from)?;
    let claim = conductor::flavor_claim(&flavor);
    let s = conductor::settings(state);
    let only_volume_host = super::bdm::required_host(state, id).await.ok().flatten();
    let hosts = state.store.list_hosts().await?;
    let snapshot: Vec<scheduler::HostState> = hosts.iter().map(|h| conductor::host_state(state, h)).collect();
    // The instance's own request (its hints and server group apply again), in the zone asked.
    let mut request = conductor::request_for_instance(state, &inst, &flavor, image.as_ref()).await?;
    request.availability_zone = zone;
    request.ignore_hosts = hosts
        .iter()
        .filter(|h| only.as_ref().is_some_and(|o| *o != h.id) || only_volume_host.as_ref().is_some_and(|o| *o != h.id))
        .map(|h| h.name.clone())
        .collect();
    let candidates = scheduler::select(&snapshot, &request, &s).map_err(|no| ConductError::Invalid(no.message()))?;
    let mut placed = None;
    for host_id in candidates {
        if state.store.place_unshelve(id, &host_id, claim, conductor::ratios(state)).await? {
            placed = Some(host_id);
            break;
        }
    }
    state.hosts.lock().await.invalidate();
    let host_id = placed.ok_or_else(|| {
        ConductError::Invalid("No valid host was found. There are not enough hosts available.".into())
    })?;
    let host = state.store.get_host(&host_id).await?;
    let inst = state.store.get_instance(id).await?;
    let nics = conductor::ensure_ports(state, &inst, &host).await?;
    let mut block_devices = super::bdm::prepare(state, &inst, &host).await.map_err(ConductError::Invalid)?;
    // The volumes attached through the compute API (before the shelve, or while offloaded)
    // are plugged into the new domain too.
    let mut taken = super::bdm::instance_local_devices(state, &inst).await?;
    taken.extend(block_devices.iter().map(|b| b.device.clone()));
    let attached = super::bdm::attached_devices(state, &inst, &host, taken).await.map_err(ConductError::Invalid)?;
    block_devices.extend(attached);
    let mut spec = conductor::build_spec(state, &inst, nics, image).await?;
    spec.block_devices = block_devices;
    let action = serde_json::to_string(&Action::Build(Box::new(spec))).map_err(StoreError::from)?;
    state.store.enqueue_work(id, &host_id, &action).await?;
    if let Some(a) = state.store.latest_action(id, "unshelve").await? {
        state.store.start_event(&a.id, "compute_unshelve_instance", Some(&host.name)).await?;
    }
    state.signals.notify(&host_id);
    Ok(())
}

/// An unshelve that failed: the claim goes back, the server stays offloaded with a fault.
async fn fail_unshelve(state: &AppState, id: &str, message: &str, details: &str) -> Result<(), ConductError> {
    state.store.cancel_work(id, None).await?;
    conductor::unbind_ports(state, id).await?;
    let to = NewState { vm_state: VmState::ShelvedOffloaded.as_str(), task_state: None, power_state: Some(0) };
    state.store.transition(id, Expect::Any, to).await?;
    state.store.unplace_unshelve(id).await?;
    state.store.set_instance_deadline(id, None).await?;
    record_fault(state, id, message, details).await?;
    state.store.finish_named_action(id, "unshelve", "Error", Some("Error"), Some(details)).await?;
    tracing::warn!(instance = %id, %message, "unshelve failed");
    Ok(())
}

async fn record_fault(state: &AppState, id: &str, message: &str, details: &str) -> Result<(), ConductError> {
    let fault = json!({"code": 500, "message": message, "details": details, "created": nova_time(&now())});
    state.store.set_instance_fault(id, Some(&fault.to_string())).await?;
    Ok(())
}

// ---- the hosts' answers ----

/// Which of this module's flows a work item belongs to, if any: the conductor asks before it
/// applies a build, delete or start the usual way.
pub(crate) async fn owns(state: &AppState, work: &Work, action: &Action) -> Result<bool, ConductError> {
    let vm_task = |i: &Instance| (i.vm_state.clone(), i.task_state.clone());
    Ok(match action {
        Action::ImageCreate { .. } => true,
        Action::Build(_) | Action::Delete | Action::Start => {
            let (vm, task) = match state.store.get_instance(&work.instance_id).await {
                Ok(i) => vm_task(&i),
                Err(StoreError::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            match action {
                Action::Build(_) => vm == VmState::ShelvedOffloaded.as_str(),
                Action::Delete => task.as_deref() == Some(TaskState::ShelvingOffloading.as_str()),
                _ => vm == VmState::Shelved.as_str(),
            }
        }
        _ => false,
    })
}

/// Applies a host's answer to work [`owns`] claimed.
pub(crate) async fn on_event(
    state: &AppState,
    work: &Work,
    action: &Action,
    event: WorkEvent,
) -> Result<(), ConductError> {
    match action {
        Action::ImageCreate { image_id, .. } => on_image_event(state, work, image_id, event).await,
        Action::Build(_) => on_unshelve_event(state, work, event).await,
        Action::Delete => on_offload_event(state, work, event).await,
        Action::Start => on_start_event(state, work, event).await,
        _ => Err(ConductError::Invalid("not a server image action".into())),
    }
}

const SNAPSHOT_TASKS: [&str; 4] =
    ["image_snapshot_pending", "image_snapshot", "image_pending_upload", "image_uploading"];
const BACKUP_TASKS: [&str; 3] = ["image_backup", "image_pending_upload", "image_uploading"];
const SHELVE_TASKS: [&str; 3] = ["shelving", "shelving_image_pending_upload", "shelving_image_uploading"];

async fn on_image_event(state: &AppState, work: &Work, image_id: &str, event: WorkEvent) -> Result<(), ConductError> {
    let id = work.instance_id.as_str();
    let Some(rec) = state.store.instance_image(image_id).await? else {
        // The image's flow already ended (deadline, failure): only the work item ends.
        if !matches!(event, WorkEvent::Progress { .. }) {
            state.store.finish_work(&work.id, "failed", Some("the image's flow already ended")).await?;
        }
        return Ok(());
    };
    let (tasks, action): (&[&str], &str) = match rec.kind.as_str() {
        "backup" => (&BACKUP_TASKS, "createBackup"),
        "shelve" => (&SHELVE_TASKS, "shelve"),
        _ => (&SNAPSHOT_TASKS, "createImage"),
    };
    match event {
        WorkEvent::Progress { task_state } => {
            if !tasks.contains(&task_state.as_str()) {
                // e.g. a backup's copy reports image_snapshot, which Nova's backup never shows.
                return Ok(());
            }
            let inst = state.store.get_instance(id).await?;
            let to = NewState { vm_state: &inst.vm_state, task_state: Some(&task_state), power_state: None };
            state.store.transition(id, Expect::OneOf(tasks), to).await?;
        }
        WorkEvent::Done { power_state, .. } => {
            let uploaded = state.store.get_image(image_id).await.is_ok_and(|i| i.status == "active");
            if !uploaded {
                let msg = format!("Image {image_id} was not uploaded by the compute host");
                return image_failed(state, work, &rec.kind, action, image_id, tasks, &msg, &msg).await;
            }
            if !state.store.finish_work(&work.id, "done", None).await? {
                return Ok(());
            }
            state.store.finish_instance_image(image_id).await?;
            let inst = state.store.get_instance(id).await?;
            if rec.kind == "shelve" {
                let host = match &inst.host_id {
                    Some(h) => state.store.get_host(h).await.ok().map(|h| h.name),
                    None => None,
                };
                state.store.set_shelf(id, Some(image_id), host.as_deref()).await?;
                return shelved(state, work, &inst, power_state).await;
            }
            let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: Some(power_state.code()) };
            state.store.transition(id, Expect::OneOf(tasks), to).await?;
            state.store.set_instance_deadline(id, None).await?;
            if let (Some(backup_type), Some(rotation)) = (&rec.backup_type, rec.rotation) {
                rotate(state, id, backup_type, rotation).await?;
            }
            state.store.finish_named_action(id, action, "Success", None, None).await?;
        }
        WorkEvent::Failed { message, details, .. } => {
            if state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                image_failed(state, work, &rec.kind, action, image_id, tasks, &message, &details).await?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn image_failed(
    state: &AppState,
    work: &Work,
    kind: &str,
    action: &str,
    image_id: &str,
    tasks: &[&str],
    message: &str,
    details: &str,
) -> Result<(), ConductError> {
    let id = work.instance_id.as_str();
    state.store.finish_work(&work.id, "failed", Some(message)).await?;
    delete_image(state, image_id).await;
    let inst = state.store.get_instance(id).await?;
    let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: None };
    state.store.transition(id, Expect::OneOf(tasks), to).await?;
    state.store.set_instance_deadline(id, None).await?;
    record_fault(state, id, message, details).await?;
    state.store.finish_named_action(id, action, "Error", Some("Error"), Some(details)).await?;
    tracing::warn!(instance = %id, kind, %message, "image of the instance failed; the image is deleted");
    Ok(())
}

/// Nova's `_rotate_backups`: backups of the instance with this type beyond `rotation` go,
/// oldest first (rotation 0 removes them all, the new one too).
async fn rotate(state: &AppState, id: &str, backup_type: &str, rotation: i64) -> Result<(), ConductError> {
    let backups = state.store.instance_backups(id, backup_type).await?;
    let keep = usize::try_from(rotation).unwrap_or(usize::MAX);
    for old in backups.iter().skip(keep) {
        tracing::info!(instance = %id, image = %old.image_id, "rotating out an old backup");
        delete_image(state, &old.image_id).await;
    }
    Ok(())
}

/// The end of a shelve's snapshot: `shelved`, then offloaded at once when
/// `shelved_offload_time` is 0.
async fn shelved(state: &AppState, work: &Work, inst: &Instance, power: PowerState) -> Result<(), ConductError> {
    let id = inst.id.as_str();
    let offload_now = state.cfg.compute.shelved_offload_time == 0;
    let task = offload_now.then_some(TaskState::ShelvingOffloading.as_str());
    let to = NewState { vm_state: VmState::Shelved.as_str(), task_state: task, power_state: Some(power.code()) };
    if state.store.transition(id, Expect::OneOf(&SHELVE_TASKS), to).await?.is_none() {
        return Ok(()); // deleted meanwhile
    }
    if !offload_now {
        state.store.set_instance_deadline(id, None).await?;
        state.store.finish_named_action(id, "shelve", "Success", None, None).await?;
        return Ok(());
    }
    let json = serde_json::to_string(&Action::Delete).map_err(StoreError::from)?;
    state.store.enqueue_work(id, &work.host_id, &json).await?;
    super::lifecycle::arm_deadline(state, id).await.map_err(|e| ConductError::Invalid(e.message))?;
    state.signals.notify(&work.host_id);
    Ok(())
}

/// The host removed the domain and disk: the server leaves it.
async fn on_offload_event(state: &AppState, work: &Work, event: WorkEvent) -> Result<(), ConductError> {
    let id = work.instance_id.as_str();
    match event {
        WorkEvent::Progress { .. } => {}
        WorkEvent::Done { .. } => {
            if state.store.finish_work(&work.id, "done", None).await? && state.store.offload_instance(id, 0).await? {
                conductor::unbind_ports(state, id).await?;
                state.store.finish_named_action(id, "shelve", "Success", None, None).await?;
                state.store.finish_named_action(id, "shelveOffload", "Success", None, None).await?;
            }
        }
        WorkEvent::Failed { message, details, .. } => {
            if state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                let to = NewState { vm_state: VmState::Shelved.as_str(), task_state: None, power_state: None };
                state.store.transition(id, Expect::Task(Some("shelving_offloading")), to).await?;
                state.store.set_instance_deadline(id, None).await?;
                record_fault(state, id, &message, &details).await?;
                for name in ["shelve", "shelveOffload"] {
                    state.store.finish_named_action(id, name, "Error", Some("Error"), Some(&details)).await?;
                }
            }
        }
    }
    Ok(())
}

/// The shelved image is no longer needed once the server runs again (Nova deletes it and
/// the `shelved_*` system metadata).
async fn unshelved(state: &AppState, id: &str) -> Result<(), ConductError> {
    if let Some(shelf) = state.store.shelf(id).await? {
        if let Some(image_id) = &shelf.image_id {
            delete_image(state, image_id).await;
        }
        state.store.clear_shelf(id).await?;
    }
    state.store.set_instance_deadline(id, None).await?;
    state.store.finish_named_action(id, "unshelve", "Success", None, None).await?;
    Ok(())
}

/// A shelved (not offloaded) server powered on again.
async fn on_start_event(state: &AppState, work: &Work, event: WorkEvent) -> Result<(), ConductError> {
    let id = work.instance_id.as_str();
    match event {
        WorkEvent::Progress { .. } => {}
        WorkEvent::Done { power_state, .. } => {
            if state.store.finish_work(&work.id, "done", None).await? {
                let to = NewState { vm_state: "active", task_state: None, power_state: Some(power_state.code()) };
                if state.store.transition(id, Expect::Task(Some("powering-on")), to).await?.is_some() {
                    unshelved(state, id).await?;
                }
            }
        }
        WorkEvent::Failed { message, details, .. } => {
            if state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                let to = NewState { vm_state: VmState::Shelved.as_str(), task_state: None, power_state: None };
                state.store.transition(id, Expect::Task(Some("powering-on")), to).await?;
                state.store.set_instance_deadline(id, None).await?;
                record_fault(state, id, &message, &details).await?;
                state.store.finish_named_action(id, "unshelve", "Error", Some("Error"), Some(&details)).await?;
            }
        }
    }
    Ok(())
}

/// The build of an offloaded server on its new host.
async fn on_unshelve_event(state: &AppState, work: &Work, event: WorkEvent) -> Result<(), ConductError> {
    let id = work.instance_id.as_str();
    let running = ["unshelving", "spawning"];
    match event {
        WorkEvent::Progress { task_state } => {
            if task_state == "spawning" {
                let to = NewState {
                    vm_state: VmState::ShelvedOffloaded.as_str(),
                    task_state: Some("spawning"),
                    power_state: None,
                };
                state.store.transition(id, Expect::OneOf(&running), to).await?;
            }
        }
        WorkEvent::Done { power_state, .. } => {
            if state.store.finish_work(&work.id, "done", None).await? {
                let to = NewState { vm_state: "active", task_state: None, power_state: Some(power_state.code()) };
                if state.store.transition(id, Expect::OneOf(&running), to).await?.is_some() {
                    unshelved(state, id).await?;
                }
            }
        }
        WorkEvent::Failed { message, details, .. } => {
            if state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                fail_unshelve(state, id, &format!("Unshelve of instance {id} failed: {message}"), &details).await?;
            }
        }
    }
    Ok(())
}

// ---- the conductor's tick ----

/// What the tick does for this module: an unshelve past its deadline ends (the server stays
/// offloaded), and shelved servers older than `shelved_offload_time` are offloaded. `true`
/// when it handled `inst`.
pub(crate) async fn tick_instance(
    state: &AppState,
    inst: &Instance,
    now_t: chrono::DateTime<chrono::Utc>,
) -> Result<bool, ConductError> {
    if inst.vm_state != VmState::ShelvedOffloaded.as_str()
        || !matches!(inst.task_state.as_deref(), Some("unshelving" | "spawning"))
    {
        return Ok(false);
    }
    if inst.build_deadline.as_deref().and_then(crate::store::parse_time).is_none_or(|d| d >= now_t) {
        return Ok(false);
    }
    let message = format!(
        "The compute host did not complete 'unshelve' of instance {} within {} seconds",
        inst.id, state.cfg.compute.action_timeout_secs
    );
    fail_unshelve(state, &inst.id, &message, "action_timeout_secs exceeded").await?;
    Ok(true)
}

/// After [`super::lifecycle::enforce_deadline`] ended an image task: the image in the making
/// is deleted (the task is already cleared, with a fault and an Error action).
pub(crate) async fn timed_out(state: &AppState, inst: &Instance) -> Result<(), ConductError> {
    for img in state.store.uploading_instance_images(&inst.id).await? {
        delete_image(state, &img.image_id).await;
    }
    Ok(())
}

/// Offloads shelved servers whose `shelved_offload_time` has passed (Nova's periodic
/// `_poll_shelved_instances`; no instance action, as there).
pub(crate) async fn offload_due(state: &AppState) -> Result<(), ConductError> {
    let secs = state.cfg.compute.shelved_offload_time;
    if secs <= 0 {
        return Ok(());
    }
    let before = crate::store::fmt_time(chrono::Utc::now() - chrono::Duration::seconds(secs));
    for id in state.store.shelved_before(&before).await? {
        let inst = state.store.get_instance(&id).await?;
        let to = NewState {
            vm_state: VmState::Shelved.as_str(),
            task_state: Some(TaskState::ShelvingOffloading.as_str()),
            power_state: None,
        };
        if state.store.transition(&id, Expect::Task(None), to).await?.is_none() {
            continue;
        }
        let host = match &inst.host_id {
            Some(h) => state.store.get_host(h).await.ok().filter(|h| conductor::host_up(state, h)),
            None => None,
        };
        match host {
            Some(h) => {
                let json = serde_json::to_string(&Action::Delete).map_err(StoreError::from)?;
                state.store.enqueue_work(&id, &h.id, &json).await?;
                super::lifecycle::arm_deadline(state, &id).await.map_err(|e| ConductError::Invalid(e.message))?;
                state.signals.notify(&h.id);
            }
            None => {
                // The host is gone: nothing of the server is left to remove there.
                if state.store.offload_instance(&id, 0).await? {
                    conductor::unbind_ports(state, &id).await?;
                }
            }
        }
    }
    Ok(())
}

/// A deleted server's shelved image goes with it (Nova deletes it too).
pub(crate) async fn instance_deleted(state: &AppState, id: &str) -> Result<(), ConductError> {
    if let Some(shelf) = state.store.shelf(id).await? {
        if let Some(image_id) = &shelf.image_id {
            delete_image(state, image_id).await;
        }
        state.store.clear_shelf(id).await?;
    }
    Ok(())
}
