//! Rebuild, rescue / unrescue, `os-resetState`, and soft delete with `restore` / `forceDelete`
//! (issue 17): the server actions, the agent's answers to them, and the reclaim of soft-deleted
//! servers by the conductor's tick.
//!
//! Walks (as Nova's compute manager):
//! - rebuild: task `rebuilding` → `rebuild_block_device_mapping` → `rebuild_spawning` → none,
//!   vm_state `active` (a stopped server is powered off again after the boot: a `Stop` follows
//!   the `Rebuild` under `rebuild_spawning`, and it ends `stopped`); a failure ends in ERROR.
//! - rescue: `rescuing` → vm_state `rescued`; unrescue: `unrescuing` → `active`.
//! - soft delete (`[compute] reclaim_instance_interval` > 0): `soft-deleting` → vm_state
//!   `soft-delete` (the guest powered off by a `Stop`); `restore`: `restoring` → `active` (a
//!   `Start`); `forceDelete` is a delete. The tick deletes for good what has been soft-deleted
//!   longer than the interval.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use meridian_common::agent::{Action, ImageSpec, PowerState, WorkEvent};
use serde_json::{Map, Value, json};

use super::ApiVersion;
use super::conductor::{self, ConductError, nova_time};
use super::servers::{self, Shape, task_state, visible, vm_state};
use super::states::{self, Action as UserAction, TaskState};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::hosts::{Host, Work};
use crate::store::image::Image;
use crate::store::instances::{Expect, Instance, NewState};
use crate::store::{StoreError, fmt_time, now};

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// `POST /servers/{id}/action` for the actions of this module; `None` for any other action.
pub(crate) async fn action(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    id: &str,
    name: &str,
    args: &Value,
) -> Option<ApiResult<Response>> {
    Some(match name {
        "rebuild" => rebuild(state, ctx, v, id, args).await,
        "rescue" => rescue(state, ctx, id, args).await,
        "unrescue" => unrescue(state, ctx, id).await.map(|()| StatusCode::ACCEPTED.into_response()),
        "os-resetState" => reset_state(state, ctx, id, args).await.map(|()| StatusCode::ACCEPTED.into_response()),
        "restore" => restore(state, ctx, id).await.map(|()| StatusCode::ACCEPTED.into_response()),
        "forceDelete" => force_delete(state, ctx, id).await.map(|()| StatusCode::ACCEPTED.into_response()),
        _ => return None,
    })
}

/// Nova's lock check (before the state check: `check_instance_lock` is the outer decorator).
fn check_lock(ctx: &Ctx, inst: &Instance) -> ApiResult<()> {
    if inst.locked != 0 && !ctx.is_admin() {
        return Err(ApiError::conflict(format!("Instance {} is locked", inst.id)));
    }
    Ok(())
}

fn check_state(inst: &Instance, action: UserAction) -> ApiResult<()> {
    let (vm, task) = (vm_state(inst), task_state(inst));
    if !states::allowed(action, vm, task) {
        return Err(states::refuse(action, &inst.id, vm, task));
    }
    Ok(())
}

/// Moves the instance into `action`'s first task, expecting it idle (Nova's
/// `save(expected_task_state=[None])`); a 409 when someone else got there first.
async fn begin(state: &AppState, inst: &Instance, action: UserAction) -> ApiResult<Instance> {
    let to = NewState {
        vm_state: &inst.vm_state,
        task_state: action.first_task().map(TaskState::as_str),
        power_state: None,
    };
    match state.store.transition(&inst.id, Expect::Task(None), to).await? {
        Some(moved) => Ok(moved),
        None => {
            let now_inst = state.store.get_instance(&inst.id).await?;
            Err(states::refuse(action, &inst.id, vm_state(&now_inst), task_state(&now_inst)))
        }
    }
}

/// The instance's host when it is up.
async fn live_host(state: &AppState, inst: &Instance) -> ApiResult<Option<Host>> {
    Ok(match &inst.host_id {
        Some(h) => match state.store.get_host(h).await {
            Ok(h) if conductor::host_up(state, &h) => Some(h),
            Ok(_) | Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    })
}

/// Queues `work` for the host under the deadline, with the action's `compute_<verb>_instance`
/// event.
async fn dispatch(
    state: &AppState,
    inst: &Instance,
    host: &Host,
    work: &Action,
    name: &str,
    verb: &str,
) -> ApiResult<()> {
    let json = serde_json::to_string(work).map_err(ApiError::internal)?;
    state.store.enqueue_work(&inst.id, &host.id, &json).await?;
    super::lifecycle::arm_deadline(state, &inst.id).await?;
    if let Some(a) = state.store.latest_action(&inst.id, name).await? {
        state.store.start_event(&a.id, &format!("compute_{verb}_instance"), Some(&host.name)).await?;
    }
    state.signals.notify(&host.id);
    Ok(())
}

/// Undoes [`begin`] when the host cannot be reached, with Nova's 409 for a down compute.
async fn host_unavailable(state: &AppState, inst: &Instance, name: &str) -> ApiError {
    let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: None };
    if let Err(e) = state.store.transition(&inst.id, Expect::Any, to).await {
        return e.into();
    }
    if let Err(e) = state.store.finish_named_action(&inst.id, name, "Error", Some("Error"), None).await {
        return e.into();
    }
    ApiError::conflict(format!("Compute host of instance {} is not available; cannot {name}.", inst.id))
}

/// Whether the instance boots from a volume (its root disk is a volume).
async fn volume_backed(state: &AppState, inst: &Instance) -> ApiResult<bool> {
    Ok(state.store.instance_bdms(&inst.id).await?.iter().any(|b| b.boot_index == Some(0) && b.volume_id.is_some()))
}

// ---- rebuild ----

/// The parsed `rebuild` body: `Some(x)` for a key that was given (`Some(None)`: given as null).
#[derive(Debug, Default)]
struct RebuildArgs {
    image_id: String,
    name: Option<String>,
    admin_pass: Option<String>,
    metadata: Option<Map<String, Value>>,
    access_ip_v4: Option<Option<String>>,
    access_ip_v6: Option<Option<String>>,
    description: Option<Option<String>>,
    key_name: Option<Option<String>>,
    user_data: Option<Option<String>>,
    trusted_certs: Option<Value>,
    hostname: Option<String>,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    bad(format!("Invalid input for field/attribute {field}. {why}"))
}

fn opt_string(b: &Map<String, Value>, key: &str) -> ApiResult<Option<Option<String>>> {
    match b.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(other) => Err(invalid(key, format!("Value: {other}. {other} is not of type 'string', 'null'"))),
    }
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

/// Nova's rebuild schema for the request's microversion.
fn parse_rebuild(v: ApiVersion, args: &Value) -> ApiResult<RebuildArgs> {
    let b =
        args.as_object().ok_or_else(|| invalid("rebuild", format!("Value: {args}. {args} is not of type 'object'")))?;
    let mut allowed: Vec<&str> = vec![
        "name",
        "imageRef",
        "adminPass",
        "metadata",
        "preserve_ephemeral",
        "OS-DCF:diskConfig",
        "accessIPv4",
        "accessIPv6",
    ];
    if !v.at_least(57) {
        allowed.push("personality");
    }
    for (min, key) in
        [(19, "description"), (54, "key_name"), (57, "user_data"), (63, "trusted_image_certificates"), (90, "hostname")]
    {
        if v.at_least(min) {
            allowed.push(key);
        }
    }
    if let Some(extra) = b.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid("rebuild", format!("Additional properties are not allowed ('{extra}' was unexpected)")));
    }
    let image = match b.get("imageRef") {
        None => return Err(invalid("rebuild", "'imageRef' is a required property")),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(invalid("imageRef", format!("Value: {other}. {other} is not of type 'string'"))),
    };
    // Nova's `image_id` format is a UUID; clients may send the image's URL (its last segment).
    let image_id = image.rsplit('/').next().unwrap_or(&image).to_string();
    if !is_uuid(&image_id) {
        return Err(invalid("imageRef", format!("Value: {image}. '{image}' is not a 'uuid'")));
    }
    let mut out = RebuildArgs { image_id, ..Default::default() };
    if let Some(n) = b.get("name") {
        let n = n.as_str().ok_or_else(|| invalid("name", format!("Value: {n}. {n} is not of type 'string'")))?;
        // Nova's `name` pattern: 1-255 characters, no leading or trailing white space.
        if n.trim().is_empty() || n.chars().count() > 255 || n.trim() != n {
            return Err(invalid("name", format!("Value: {n}. '{n}' does not match the name pattern")));
        }
        out.name = Some(n.to_string());
    }
    if let Some(p) = b.get("adminPass") {
        out.admin_pass = Some(
            p.as_str()
                .ok_or_else(|| invalid("adminPass", format!("Value: {p}. {p} is not of type 'string'")))?
                .to_string(),
        );
    }
    match b.get("metadata") {
        None => {}
        Some(Value::Object(m)) => {
            for (k, val) in m {
                if k.is_empty() || k.chars().count() > 255 {
                    return Err(invalid("metadata", format!("Key '{k}' must be 1-255 characters")));
                }
                match val {
                    Value::String(s) if s.chars().count() <= 255 => {}
                    _ => {
                        return Err(invalid(
                            "metadata",
                            format!("Value of '{k}' must be a string of at most 255 characters"),
                        ));
                    }
                }
            }
            if m.len() > 128 {
                return Err(ApiError::forbidden(format!(
                    "Quota exceeded for metadata_items: Requested {}, but the limit is 128",
                    m.len()
                )));
            }
            out.metadata = Some(m.clone());
        }
        Some(other) => return Err(invalid("metadata", format!("Value: {other}. {other} is not of type 'object'"))),
    }
    match b.get("preserve_ephemeral") {
        None | Some(Value::Bool(_)) => {}
        Some(Value::String(s)) if crate::extract::parse_bool(s).is_some() => {}
        Some(other) => {
            return Err(invalid("preserve_ephemeral", format!("Value: {other}. {other} is not of type 'boolean'")));
        }
    }
    match b.get("OS-DCF:diskConfig") {
        None => {}
        Some(Value::String(s)) if s == "AUTO" || s == "MANUAL" => {}
        Some(other) => {
            return Err(invalid(
                "OS-DCF:diskConfig",
                format!("Value: {other}. {other} is not one of ['AUTO', 'MANUAL']"),
            ));
        }
    }
    for (key, v6) in [("accessIPv4", false), ("accessIPv6", true)] {
        let Some(given) = opt_string(b, key)? else { continue };
        let canonical = match given.as_deref() {
            None | Some("") => None,
            Some(t) if v6 => Some(
                t.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| invalid(key, format!("Value: {t}. '{t}' is not a 'ipv6'")))?
                    .to_string(),
            ),
            Some(t) => Some(
                t.parse::<std::net::Ipv4Addr>()
                    .map_err(|_| invalid(key, format!("Value: {t}. '{t}' is not a 'ipv4'")))?
                    .to_string(),
            ),
        };
        if v6 {
            out.access_ip_v6 = Some(canonical);
        } else {
            out.access_ip_v4 = Some(canonical);
        }
    }
    if let Some(p) = b.get("personality")
        && !p.is_array()
    {
        return Err(invalid("personality", format!("Value: {p}. {p} is not of type 'array'")));
    }
    if v.at_least(19) {
        out.description = opt_string(b, "description")?;
        if let Some(Some(d)) = &out.description
            && d.chars().count() > 255
        {
            return Err(invalid("description", "Value is longer than 255 characters"));
        }
    }
    if v.at_least(54) {
        out.key_name = opt_string(b, "key_name")?;
    }
    if v.at_least(57) {
        out.user_data = opt_string(b, "user_data")?;
        if let Some(Some(u)) = &out.user_data {
            if u.len() > 65535 {
                return Err(invalid("user_data", "Value length exceeds 65535."));
            }
            base64::engine::general_purpose::STANDARD
                .decode(u.trim())
                .map_err(|_| invalid("user_data", format!("Value: {u}. '{u}' is not a 'base64'")))?;
        }
    }
    if v.at_least(63) {
        out.trusted_certs = b.get("trusted_image_certificates").cloned();
    }
    if v.at_least(90)
        && let Some(h) = b.get("hostname")
    {
        let h = h.as_str().ok_or_else(|| invalid("hostname", format!("Value: {h}. {h} is not of type 'string'")))?;
        let ok = !h.is_empty()
            && h.len() <= 63
            && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || (c == '.' && v.at_least(94)))
            && !h.starts_with('-')
            && !h.ends_with('-');
        if !ok {
            return Err(invalid("hostname", format!("Value: {h}. '{h}' does not match the hostname pattern")));
        }
        out.hostname = Some(h.to_string());
    }
    Ok(out)
}

/// The image checks of Nova's `_checks_for_create_and_rebuild` against the server's flavor.
async fn rebuild_image(state: &AppState, ctx: &Ctx, inst: &Instance, image_id: &str) -> ApiResult<Image> {
    let image = match state.store.get_image(image_id).await {
        Ok(i) => i,
        Err(StoreError::NotFound(_)) => return Err(bad("Cannot find image for rebuild")),
        Err(e) => return Err(e.into()),
    };
    if !state.store.image_visible_to(&image, Some(&inst.project_id), ctx.is_admin()).await? {
        return Err(bad("Cannot find image for rebuild"));
    }
    if image.status != "active" {
        return Err(bad(format!("Image {image_id} is not active.")));
    }
    let flavor: Value = serde_json::from_str(&inst.flavor).unwrap_or_default();
    let (ram, disk) = (flavor["ram"].as_i64().unwrap_or(0), flavor["disk"].as_i64().unwrap_or(0));
    if image.min_ram > ram {
        return Err(bad("Flavor's memory is too small for requested image."));
    }
    if disk > 0 {
        let size_gb = (image.size.unwrap_or(0) + (1 << 30) - 1) >> 30;
        if image.min_disk > disk {
            return Err(bad("Flavor's disk is too small for requested image."));
        }
        if size_gb > disk {
            return Err(bad(format!(
                "Flavor's disk is too small for requested image. Flavor disk is {disk} GB, image is {size_gb} GB."
            )));
        }
    }
    Ok(image)
}

/// Nova's ImagePropertiesFilter against the server's own host (what the scheduler checks when
/// a rebuild changes the image): `None` when the host fits.
fn host_misfit(host: &Host, image: &Image) -> Option<String> {
    let props = conductor::properties_of(image);
    let request = super::scheduler::Request {
        architecture: props.get("architecture").or_else(|| props.get("hw_architecture")).cloned(),
        hypervisor_type: props.get("img_hv_type").or_else(|| props.get("hypervisor_type")).cloned(),
        ..Default::default()
    };
    let me = super::scheduler::HostState {
        id: host.id.clone(),
        name: host.name.clone(),
        enabled: true,
        up: true,
        availability_zone: host.availability_zone.clone(),
        hypervisor_type: host.hypervisor_type.clone(),
        cpu_arch: host.cpu_arch.clone(),
        vcpus: i64::MAX / 4,
        memory_mb: i64::MAX / 4,
        disk_gb: i64::MAX / 4,
        vcpus_used: 0,
        memory_mb_used: 0,
        disk_gb_used: 0,
    };
    super::scheduler::rejection(&me, &request, &super::scheduler::Settings::default())
        .filter(|f| *f == "ImagePropertiesFilter")
        .map(|_| {
            "No valid host was found. The image's properties do not fit the server's host (ImagePropertiesFilter)."
                .to_string()
        })
}

async fn rebuild(state: &AppState, ctx: &Ctx, v: ApiVersion, id: &str, args: &Value) -> ApiResult<Response> {
    let a = parse_rebuild(v, args)?;
    let inst = visible(state, ctx, id).await?;
    ctx.require_member("os_compute_api:servers:rebuild")?;
    if a.trusted_certs.as_ref().is_some_and(|t| !t.is_null()) {
        ctx.require_member("os_compute_api:servers:rebuild:trusted_certs")?;
    }
    check_lock(ctx, &inst)?;
    check_state(&inst, UserAction::Rebuild)?;
    if a.trusted_certs.as_ref().is_some_and(|t| !t.is_null()) {
        // This cloud does not verify image signatures (Nova's `verify_glance_signatures` off).
        return Err(bad(
            "Image certificate validation failed: image signature verification is not enabled in this cloud.",
        ));
    }
    if volume_backed(state, &inst).await? {
        if v.at_least(93) {
            return Err(bad("Reimaging the root volume of a volume-backed server is not supported by this cloud."));
        }
        return Err(bad("Rebuilding volume-backed instances is not supported"));
    }
    let key = match &a.key_name {
        Some(Some(k)) => {
            Some(state.store.get_keypair(&ctx.user.id, k).await.map_err(|_| bad("Invalid key_name provided."))?)
        }
        _ => None,
    };
    let image = rebuild_image(state, ctx, &inst, &a.image_id).await?;
    let moved = begin(state, &inst, UserAction::Rebuild).await?;
    let original_image = moved.image_id.clone();
    let mut updated = moved.clone();
    if let Some(n) = &a.name {
        updated.name.clone_from(n);
    }
    if let Some(m) = &a.metadata {
        updated.metadata = Value::Object(m.clone()).to_string();
    }
    if let Some(d) = &a.description {
        updated.description.clone_from(d);
    }
    if let Some(ip) = &a.access_ip_v4 {
        updated.access_ip_v4.clone_from(ip);
    }
    if let Some(ip) = &a.access_ip_v6 {
        updated.access_ip_v6.clone_from(ip);
    }
    if let Some(h) = &a.hostname {
        updated.hostname.clone_from(h);
    }
    if a.key_name.is_some() {
        updated.key_name = key.as_ref().map(|k| k.name.clone());
        updated.key_data = key.as_ref().map(|k| k.public_key.clone());
    }
    if let Some(u) = &a.user_data {
        updated.user_data.clone_from(u);
    }
    updated.image_id.clone_from(&image.id);
    state.store.update_instance_fields(&updated).await?;
    state.store.set_rebuild_fields(&updated).await?;
    servers::record_action(state, ctx, &inst.id, "rebuild", &ctx.request_id).await?;
    let admin_pass = a.admin_pass.clone().unwrap_or_else(|| crate::auth::random_secret()[..12].to_string());
    match live_host(state, &updated).await? {
        None => return Err(host_unavailable(state, &updated, "rebuild").await),
        Some(host) => {
            let misfit = if original_image != image.id { host_misfit(&host, &image) } else { None };
            match misfit {
                // As Nova's conductor: the image goes back, the server to ERROR with a fault.
                Some(why) => {
                    updated.image_id = original_image;
                    state.store.set_rebuild_fields(&updated).await?;
                    let to = NewState { vm_state: "error", task_state: None, power_state: None };
                    state.store.transition(&inst.id, Expect::Any, to).await?;
                    record_fault(state, &inst.id, &why, "NoValidHost")
                        .await
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    if let Some(act) = state.store.latest_action(&inst.id, "rebuild").await? {
                        state.store.start_event(&act.id, "conductor_rebuild_server", None).await?;
                    }
                    state.store.finish_named_action(&inst.id, "rebuild", "Error", Some("Error"), Some(&why)).await?;
                }
                None => {
                    let spec = conductor::current_spec(state, &updated)
                        .await
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    dispatch(state, &updated, &host, &Action::Rebuild(Box::new(spec)), "rebuild", "rebuild").await?;
                }
            }
        }
    }
    let now_inst = state.store.get_instance(&inst.id).await?;
    let shape = if v.at_least(75) { Shape::Show } else { Shape::UpdateLegacy };
    let mut body = servers::render(state, ctx, v, &now_inst, shape).await?;
    if let Some(s) = body.as_object_mut() {
        // Nova's rebuild view: no `OS-EXT-SRV-ATTR:user_data` (user_data is added below from
        // 2.57), and before 2.75 addresses without their OS-EXT-IPS keys.
        s.remove("OS-EXT-SRV-ATTR:user_data");
        if !v.at_least(75)
            && let Some(Value::Object(nets)) = s.get_mut("addresses")
        {
            for list in nets.values_mut().filter_map(Value::as_array_mut) {
                for a in list.iter_mut().filter_map(Value::as_object_mut) {
                    a.retain(|k, _| k == "version" || k == "addr");
                }
            }
        }
        if !v.at_least(75) && v.at_least(54) {
            s.insert("key_name".into(), json!(now_inst.key_name));
        }
        s.insert("adminPass".into(), json!(admin_pass));
        if v.at_least(57) {
            s.insert("user_data".into(), json!(now_inst.user_data));
        }
    }
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"server": body}))).into_response())
}

// ---- rescue ----

async fn rescue(state: &AppState, ctx: &Ctx, id: &str, args: &Value) -> ApiResult<Response> {
    let (admin_pass, rescue_ref) = match args {
        Value::Null => (None, None),
        Value::Object(o) => {
            if let Some(extra) = o.keys().find(|k| *k != "adminPass" && *k != "rescue_image_ref") {
                return Err(invalid(
                    "rescue",
                    format!("Additional properties are not allowed ('{extra}' was unexpected)"),
                ));
            }
            let pass = match o.get("adminPass") {
                None => None,
                Some(Value::String(p)) => Some(p.clone()),
                Some(other) => {
                    return Err(invalid("adminPass", format!("Value: {other}. {other} is not of type 'string'")));
                }
            };
            let image = match o.get("rescue_image_ref") {
                None => None,
                Some(Value::String(r)) if is_uuid(r) => Some(r.clone()),
                Some(other) => {
                    return Err(invalid("rescue_image_ref", format!("Value: {other}. {other} is not a 'uuid'")));
                }
            };
            (pass, image)
        }
        other => return Err(invalid("rescue", format!("Value: {other}. {other} is not of type 'object', 'null'"))),
    };
    let inst = visible(state, ctx, id).await?;
    ctx.require_member("os_compute_api:os-rescue")?;
    check_lock(ctx, &inst)?;
    check_state(&inst, UserAction::Rescue)?;
    let image_id = rescue_ref.clone().unwrap_or_else(|| inst.image_id.clone());
    let image = match state.store.get_image(&image_id).await {
        Ok(i) if i.status == "active" => Some(i),
        Ok(_) | Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let image = match (image, &rescue_ref) {
        (Some(i), _) => i,
        (None, Some(r)) => return Err(bad(format!("Requested rescue image '{r}' is not supported"))),
        // The server's own image is gone: nothing to boot the rescue from.
        (None, None) => {
            return Err(bad(format!(
                "Instance {} cannot be rescued: the image it was booted from is no longer available",
                inst.id
            )));
        }
    };
    if rescue_ref.is_some() && conductor::properties_of(&image).contains_key("img_block_device_mapping") {
        return Err(bad(format!("Requested rescue image '{image_id}' is not supported")));
    }
    if volume_backed(state, &inst).await? {
        return Err(bad(format!("Instance {} cannot be rescued: Cannot rescue a volume-backed instance", inst.id)));
    }
    let password = admin_pass.unwrap_or_else(|| crate::auth::random_secret()[..12].to_string());
    let moved = begin(state, &inst, UserAction::Rescue).await?;
    servers::record_action(state, ctx, &inst.id, "rescue", &ctx.request_id).await?;
    let Some(host) = live_host(state, &moved).await? else {
        return Err(host_unavailable(state, &moved, "rescue").await);
    };
    let work = Action::Rescue { image: image_spec(&image), admin_password: Some(password.clone()) };
    dispatch(state, &moved, &host, &work, "rescue", "rescue").await?;
    // Nova answers 200 with the password (`enable_instance_password` is on by default).
    Ok((StatusCode::OK, axum::Json(json!({"adminPass": password}))).into_response())
}

fn image_spec(img: &Image) -> ImageSpec {
    ImageSpec {
        id: img.id.clone(),
        size: img.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        checksum: img.checksum.clone().unwrap_or_default(),
        disk_format: img.disk_format.clone().unwrap_or_else(|| "raw".into()),
        properties: conductor::properties_of(img),
    }
}

async fn unrescue(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<()> {
    let inst = visible(state, ctx, id).await?;
    ctx.require_member("os_compute_api:os-rescue:unrescue")?;
    check_lock(ctx, &inst)?;
    check_state(&inst, UserAction::Unrescue)?;
    let moved = begin(state, &inst, UserAction::Unrescue).await?;
    servers::record_action(state, ctx, &inst.id, "unrescue", &ctx.request_id).await?;
    let Some(host) = live_host(state, &moved).await? else {
        return Err(host_unavailable(state, &moved, "unrescue").await);
    };
    dispatch(state, &moved, &host, &Action::Unrescue, "unrescue", "unrescue").await
}

// ---- os-resetState ----

async fn reset_state(state: &AppState, ctx: &Ctx, id: &str, args: &Value) -> ApiResult<()> {
    let target = match args.get("state") {
        Some(Value::String(s)) if s == "active" || s == "error" => s.clone(),
        Some(other) => {
            return Err(invalid("state", format!("Value: {other}. {other} is not one of ['active', 'error']")));
        }
        None if args.is_object() => return Err(invalid("os-resetState", "'state' is a required property")),
        None => return Err(invalid("os-resetState", format!("Value: {args}. {args} is not of type 'object'"))),
    };
    if let Some(extra) = args.as_object().and_then(|o| o.keys().find(|k| *k != "state")) {
        return Err(invalid(
            "os-resetState",
            format!("Additional properties are not allowed ('{extra}' was unexpected)"),
        ));
    }
    let inst = visible(state, ctx, id).await?;
    ctx.require_admin("os_compute_api:os-admin-actions:reset_state")?;
    // As Nova: an instance action `resetState` (no events), the state set, the task cleared.
    servers::record_action(state, ctx, &inst.id, "resetState", &ctx.request_id).await?;
    let to = NewState { vm_state: &target, task_state: None, power_state: None };
    state.store.transition(&inst.id, Expect::Any, to).await?;
    state.store.set_instance_deadline(&inst.id, None).await?;
    state.store.finish_named_action(&inst.id, "resetState", "Success", None, None).await?;
    Ok(())
}

// ---- soft delete, restore, forceDelete ----

/// `DELETE /servers/{id}` when `reclaim_instance_interval` is on: `true` when the server was
/// soft-deleted (or is on its way), `false` when it takes the ordinary delete (never launched,
/// already soft-deleted, or busy with a task: Nova's delete then deletes).
pub(crate) async fn soft_delete(state: &AppState, ctx: &Ctx, inst: &Instance) -> ApiResult<bool> {
    if state.cfg.compute.reclaim_instance_interval == 0
        || inst.launched_at.is_none()
        || inst.task_state.is_some()
        || inst.vm_state == "soft-delete"
    {
        return Ok(false);
    }
    check_lock(ctx, inst)?;
    let to =
        NewState { vm_state: &inst.vm_state, task_state: Some(TaskState::SoftDeleting.as_str()), power_state: None };
    let Some(moved) = state.store.transition(&inst.id, Expect::Task(None), to).await? else {
        return Ok(false);
    };
    // Nova records a soft delete as the `delete` action.
    servers::record_action(state, ctx, &inst.id, "delete", &ctx.request_id).await?;
    match live_host(state, &moved).await? {
        Some(host) => dispatch(state, &moved, &host, &Action::Stop, "delete", "soft_delete").await?,
        None => {
            // No host to power off (Nova's local soft delete): soft-deleted at once.
            soft_deleted(state, &inst.id, None).await.map_err(|e| ApiError::internal(e.to_string()))?;
        }
    }
    Ok(true)
}

async fn soft_deleted(state: &AppState, id: &str, power: Option<PowerState>) -> Result<(), ConductError> {
    let to = NewState { vm_state: "soft-delete", task_state: None, power_state: power.map(PowerState::code) };
    state.store.transition(id, Expect::Task(Some(TaskState::SoftDeleting.as_str())), to).await?;
    state.store.set_soft_deleted_at(id, Some(&now())).await?;
    state.store.set_instance_deadline(id, None).await?;
    state.store.finish_named_action(id, "delete", "Success", None, None).await?;
    Ok(())
}

async fn restore(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<()> {
    let inst = visible(state, ctx, id).await?;
    ctx.require_member("os_compute_api:os-deferred-delete:restore")?;
    check_lock(ctx, &inst)?;
    check_state(&inst, UserAction::Restore)?;
    // Its resources and quota were held all along: nothing to claim again.
    let moved = begin(state, &inst, UserAction::Restore).await?;
    servers::record_action(state, ctx, &inst.id, "restore", &ctx.request_id).await?;
    state.store.set_soft_deleted_at(&inst.id, None).await?;
    match live_host(state, &moved).await? {
        Some(host) => dispatch(state, &moved, &host, &Action::Start, "restore", "restore").await,
        None if moved.host_id.is_none() => {
            let to = NewState { vm_state: "active", task_state: None, power_state: None };
            state.store.transition(&inst.id, Expect::Any, to).await?;
            state.store.finish_named_action(&inst.id, "restore", "Success", None, None).await?;
            Ok(())
        }
        None => {
            state.store.set_soft_deleted_at(&inst.id, Some(&now())).await?;
            Err(host_unavailable(state, &moved, "restore").await)
        }
    }
}

async fn force_delete(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<()> {
    let inst = visible(state, ctx, id).await?;
    ctx.require_member("os_compute_api:os-deferred-delete:force")?;
    check_lock(ctx, &inst)?;
    check_state(&inst, UserAction::ForceDelete)?;
    // Nova's force_delete is its `_delete`: the `delete` action, `compute_terminate_instance`.
    servers::start_action(state, ctx, &inst, UserAction::Delete).await
}

/// The tick's reclaim (Nova's `_reclaim_queued_deletes`): soft-deleted servers older than the
/// interval are deleted for good. How many it started.
pub(crate) async fn reclaim(state: &AppState) -> Result<usize, ConductError> {
    let interval = state.cfg.compute.reclaim_instance_interval;
    if interval == 0 {
        return Ok(0);
    }
    let secs = i64::try_from(interval).unwrap_or(i64::MAX / 2);
    let before = fmt_time(chrono::Utc::now() - chrono::Duration::seconds(secs));
    let mut started = 0;
    for inst in state.store.reclaimable_instances(&before).await? {
        let to =
            NewState { vm_state: &inst.vm_state, task_state: Some(TaskState::Deleting.as_str()), power_state: None };
        if state.store.transition(&inst.id, Expect::Task(None), to).await?.is_none() {
            continue;
        }
        tracing::info!(instance = %inst.id, "reclaiming a soft-deleted server");
        let host = match &inst.host_id {
            Some(h) => match state.store.get_host(h).await {
                Ok(h) if conductor::host_up(state, &h) => Some(h),
                _ => None,
            },
            None => None,
        };
        match host {
            Some(h) => {
                let json = serde_json::to_string(&Action::Delete).map_err(StoreError::from)?;
                state.store.enqueue_work(&inst.id, &h.id, &json).await?;
                state.signals.notify(&h.id);
            }
            None => conductor::complete_delete(state, &inst.id).await?,
        }
        started += 1;
    }
    Ok(started)
}

// ---- the agent's answers ----

/// Whether this module applies an event of `action` on an instance now in `task` (the work
/// of rebuild, rescue, unrescue, and the power changes of soft delete, restore and a stopped
/// server's rebuild).
pub(crate) fn applies(action: &Action, task: Option<&str>) -> bool {
    match action {
        Action::Rebuild(_) | Action::Rescue { .. } | Action::Unrescue => true,
        Action::Stop => matches!(task, Some("soft-deleting" | "rebuild_spawning")),
        Action::Start => task == Some("restoring"),
        _ => false,
    }
}

/// Applies the host's answer to work of this module ([`applies`]).
pub(crate) async fn on_event(
    state: &AppState,
    work: &Work,
    action: &Action,
    event: WorkEvent,
) -> Result<(), ConductError> {
    let id = work.instance_id.as_str();
    match (action, event) {
        (Action::Rebuild(_), WorkEvent::Progress { task_state }) => {
            if !matches!(task_state.as_str(), "rebuild_block_device_mapping" | "rebuild_spawning") {
                return Err(ConductError::Invalid(format!("unknown rebuild progress '{task_state}'")));
            }
            let inst = state.store.get_instance(id).await?;
            if task_state_of(&inst).is_some_and(|t| t.starts_with("rebuild")) {
                let to = NewState { vm_state: &inst.vm_state, task_state: Some(&task_state), power_state: None };
                state.store.transition(id, Expect::Task(inst.task_state.as_deref()), to).await?;
            }
        }
        (_, WorkEvent::Progress { .. }) => {}
        (Action::Rebuild(_), WorkEvent::Done { power_state, .. }) => {
            if !state.store.finish_work(&work.id, "done", None).await? {
                return Ok(());
            }
            let inst = state.store.get_instance(id).await?;
            if !task_state_of(&inst).is_some_and(|t| t.starts_with("rebuild")) {
                return Ok(()); // ended meanwhile (deadline, delete, reset)
            }
            if inst.vm_state == "stopped" {
                // Nova powers a stopped server off again after the rebuild's boot.
                let to = NewState {
                    vm_state: "stopped",
                    task_state: Some("rebuild_spawning"),
                    power_state: Some(power_state.code()),
                };
                state.store.transition(id, Expect::Task(inst.task_state.as_deref()), to).await?;
                let json = serde_json::to_string(&Action::Stop).map_err(StoreError::from)?;
                state.store.enqueue_work(id, &work.host_id, &json).await?;
                state.signals.notify(&work.host_id);
                return Ok(());
            }
            let to = NewState { vm_state: "active", task_state: None, power_state: Some(power_state.code()) };
            state.store.transition(id, Expect::Task(inst.task_state.as_deref()), to).await?;
            state.store.set_instance_launched(id).await?;
            finish(state, id, "rebuild").await?;
        }
        (Action::Stop, WorkEvent::Done { power_state, .. }) => {
            if !state.store.finish_work(&work.id, "done", None).await? {
                return Ok(());
            }
            let inst = state.store.get_instance(id).await?;
            match inst.task_state.as_deref() {
                Some("soft-deleting") => soft_deleted(state, id, Some(power_state)).await?,
                Some("rebuild_spawning") => {
                    let to = NewState { vm_state: "stopped", task_state: None, power_state: Some(power_state.code()) };
                    state.store.transition(id, Expect::Task(Some("rebuild_spawning")), to).await?;
                    finish(state, id, "rebuild").await?;
                }
                _ => {}
            }
        }
        (Action::Start, WorkEvent::Done { power_state, .. }) => {
            if state.store.finish_work(&work.id, "done", None).await? {
                let to = NewState { vm_state: "active", task_state: None, power_state: Some(power_state.code()) };
                if state.store.transition(id, Expect::Task(Some("restoring")), to).await?.is_some() {
                    finish(state, id, "restore").await?;
                }
            }
        }
        (Action::Rescue { .. }, WorkEvent::Done { power_state, .. }) => {
            if state.store.finish_work(&work.id, "done", None).await? {
                let to = NewState { vm_state: "rescued", task_state: None, power_state: Some(power_state.code()) };
                if state.store.transition(id, Expect::Task(Some("rescuing")), to).await?.is_some() {
                    finish(state, id, "rescue").await?;
                }
            }
        }
        (Action::Unrescue, WorkEvent::Done { power_state, .. }) => {
            if state.store.finish_work(&work.id, "done", None).await? {
                let to = NewState { vm_state: "active", task_state: None, power_state: Some(power_state.code()) };
                if state.store.transition(id, Expect::Task(Some("unrescuing")), to).await?.is_some() {
                    finish(state, id, "unrescue").await?;
                }
            }
        }
        (_, WorkEvent::Failed { message, details, .. }) => {
            if !state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                return Ok(());
            }
            let inst = state.store.get_instance(id).await?;
            let task = inst.task_state.clone();
            // Nova: a failed rebuild or rescue leaves the server in ERROR; the others clear
            // the task and keep the vm_state.
            let (name, vm) = match (action, task.as_deref()) {
                (Action::Rebuild(_), Some(t)) if t.starts_with("rebuild") => ("rebuild", "error"),
                (Action::Stop, Some("rebuild_spawning")) => ("rebuild", "error"),
                (Action::Rescue { .. }, Some("rescuing")) => ("rescue", "error"),
                (Action::Unrescue, Some("unrescuing")) => ("unrescue", inst.vm_state.as_str()),
                (Action::Stop, Some("soft-deleting")) => ("delete", inst.vm_state.as_str()),
                (Action::Start, Some("restoring")) => ("restore", inst.vm_state.as_str()),
                _ => return Ok(()), // the task ended meanwhile
            };
            let to = NewState { vm_state: vm, task_state: None, power_state: None };
            state.store.transition(id, Expect::Task(task.as_deref()), to).await?;
            state.store.set_instance_deadline(id, None).await?;
            record_fault(state, id, &message, &details).await?;
            state.store.finish_named_action(id, name, "Error", Some("Error"), Some(&details)).await?;
            tracing::warn!(instance = %id, action = name, %message, "action failed on the host");
        }
        (_, WorkEvent::Done { .. }) => {
            state.store.finish_work(&work.id, "done", None).await?;
        }
    }
    Ok(())
}

fn task_state_of(inst: &Instance) -> Option<&str> {
    inst.task_state.as_deref()
}

async fn finish(state: &AppState, id: &str, name: &str) -> Result<(), ConductError> {
    state.store.set_instance_deadline(id, None).await?;
    state.store.finish_named_action(id, name, "Success", None, None).await?;
    Ok(())
}

async fn record_fault(state: &AppState, id: &str, message: &str, details: &str) -> Result<(), ConductError> {
    let fault = json!({"code": 500, "message": message, "details": details, "created": nova_time(&now())});
    state.store.set_instance_fault(id, Some(&fault.to_string())).await?;
    Ok(())
}
