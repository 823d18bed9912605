//! Evacuate (issue 17): rebuild a server whose compute host is down on another host, from its
//! image, with the same ports and addresses; and the removal of the copy the dead host still
//! has when it comes back (Nova's `_destroy_evacuated_instances`).
//!
//! Walk (as Nova's API, conductor and compute manager):
//! 1. The API (admin only) checks the body for the microversion, the target host, the state
//!    (active, stopped or error, no task) and that the source's compute service is down
//!    (missed heartbeats or `forced_down`), else 400 "Compute service of … is still in use.".
//!    The instance goes to task `rebuilding`, a migration of type `evacuation` is stored
//!    `accepted`.
//! 2. The scheduler picks another host with the instance's own request (its hints and server
//!    group; the source excluded; an admin's `host` is checked by the filters unless `force`d,
//!    2.29–2.67). The flavor is claimed there and the migration goes `pre-migrating`. No host:
//!    the migration `error`, the server ERROR with Nova's "No valid host was found" fault; the
//!    API still answers 200, as Nova's asynchronous conductor does.
//! 3. The ports are bound to the new host and it gets [`Action::Rebuild`] (a build there:
//!    `rebuild_block_device_mapping`, `rebuild_spawning`). Done: the instance moves to that
//!    host (its claim there becomes its own), the migration is `done` and keeps the source's
//!    claim. A server that was stopped is powered off again (a `Stop` under
//!    `rebuild_spawning`) and stays `stopped`; others end `active`.
//! 4. A failure or the deadline (`action_timeout_secs`): the migration `failed`, the new
//!    host's claim freed and its partial copy removed, the ports back on the source, the server
//!    ERROR with a fault, still on its source (so it can be evacuated again).
//! 5. When the source registers or heartbeats again, each `done` evacuation from it gets a
//!    [`Action::MigrateCleanup`] (`remove`) there: its domain and disks go, and the migration
//!    becomes `completed`, freeing the source's claim.
//!
//! Volumes: this cloud's volumes live on their compute host (local LVM/files), so they die
//! with it. A server with volumes (attached or its root disk) cannot be evacuated: 400, as the
//! scheduler could find no host that reaches them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_common::agent::{Action, PowerState, WorkEvent};
use serde_json::{Map, Value, json};

use super::ApiVersion;
use super::conductor::{self, ConductError, nova_time};
use super::scheduler;
use super::servers::{self, task_state, visible, vm_state};
use super::states::{self, Action as UserAction, TaskState};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::hosts::{Host, Work};
use crate::store::instances::{Expect, Instance, NewState};
use crate::store::migrations::{Migration, MigrationFilter};
use crate::store::{StoreError, new_uuid, now, parse_time};

/// `POST /servers/{id}/action` for `evacuate`; `None` for any other action.
pub(crate) async fn action(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    id: &str,
    name: &str,
    args: &Value,
) -> Option<ApiResult<Response>> {
    (name == "evacuate").then_some(())?;
    Some(evacuate(state, ctx, v, id, args).await)
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// The body's keys, checked as Nova's schemas for the microversion.
#[derive(Debug, Default)]
struct Args {
    host: Option<String>,
    admin_pass: Option<String>,
    on_shared_storage: bool,
    force: bool,
}

fn parse(v: ApiVersion, args: &Value) -> ApiResult<Args> {
    let b: &Map<String, Value> = args.as_object().ok_or_else(|| {
        bad(format!("Invalid input for field/attribute evacuate. Value: {args}. {args} is not of type 'object'"))
    })?;
    let mut allowed = vec!["host", "adminPass"];
    if !v.at_least(14) {
        allowed.push("onSharedStorage");
    }
    if v.at_least(29) && !v.at_least(68) {
        allowed.push("force");
    }
    if let Some(extra) = b.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute evacuate. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let mut a = Args::default();
    match b.get("host") {
        None => {}
        Some(Value::String(h)) if !h.is_empty() && h.len() <= 255 => a.host = Some(h.clone()),
        Some(other) => return Err(bad(format!("Invalid input for field/attribute host. Value: {other}."))),
    }
    match b.get("adminPass") {
        None => {}
        Some(Value::String(p)) => a.admin_pass = Some(p.clone()),
        Some(other) => {
            return Err(bad(format!(
                "Invalid input for field/attribute adminPass. Value: {other}. {other} is not of type 'string'"
            )));
        }
    }
    let boolean = |key: &str, val: &Value| -> ApiResult<bool> {
        match val {
            Value::Bool(x) => Ok(*x),
            Value::String(s) if ["true", "1", "yes", "on", "y", "t"].contains(&s.to_ascii_lowercase().as_str()) => {
                Ok(true)
            }
            Value::String(s) if ["false", "0", "no", "off", "n", "f"].contains(&s.to_ascii_lowercase().as_str()) => {
                Ok(false)
            }
            other => Err(bad(format!(
                "Invalid input for field/attribute {key}. Value: {other}. {other} is not of type 'boolean', 'string'"
            ))),
        }
    };
    if !v.at_least(14) {
        let Some(shared) = b.get("onSharedStorage") else {
            return Err(bad("Invalid input for field/attribute evacuate. 'onSharedStorage' is a required property"));
        };
        a.on_shared_storage = boolean("onSharedStorage", shared)?;
        if a.on_shared_storage && a.admin_pass.is_some() {
            return Err(bad("admin password can't be changed on existing disk"));
        }
    }
    if let Some(f) = b.get("force") {
        a.force = boolean("force", f)?;
        if a.force && a.host.is_none() {
            return Err(bad("Can't force to a non-provided destination"));
        }
    }
    Ok(a)
}

async fn evacuate(state: &AppState, ctx: &Ctx, v: ApiVersion, id: &str, args: &Value) -> ApiResult<Response> {
    let a = parse(v, args)?;
    let inst = visible(state, ctx, id).await?;
    ctx.require_admin("os_compute_api:os-evacuate")?;
    let target = match &a.host {
        Some(name) => match state.store.get_host_by_name(name).await {
            Ok(h) => Some(h),
            Err(StoreError::NotFound(_)) => return Err(ApiError::not_found(format!("Compute host {name} not found."))),
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    if let Some(t) = &target
        && inst.host_id.as_deref() == Some(t.id.as_str())
    {
        return Err(bad("The target host can't be the same one."));
    }
    let (vm, task) = (vm_state(&inst), task_state(&inst));
    if !states::allowed(UserAction::Evacuate, vm, task) {
        return Err(states::refuse(UserAction::Evacuate, &inst.id, vm, task));
    }
    let source = match inst.host_id.as_deref() {
        Some(h) => state.store.get_host(h).await?,
        None => return Err(bad(format!("Instance {} has no compute host to evacuate from.", inst.id))),
    };
    if conductor::host_up(state, &source) {
        tracing::error!(instance = %inst.id, host = %source.name, "evacuate refused: the compute service is up");
        return Err(bad(format!("Compute service of {} is still in use.", source.name)));
    }
    if a.on_shared_storage {
        // Instance files live on each host's own disk here; Nova's compute would fail the
        // rebuild with InvalidSharedStorage, this cloud says so at once.
        return Err(bad(format!(
            "Invalid state of instance files on shared storage: this cloud has no shared instance storage \
             (evacuate server {} with onSharedStorage false).",
            inst.id
        )));
    }
    let has_volumes = inst.image_id.is_empty()
        || !state.store.instance_attachments(&inst.id).await?.is_empty()
        || state.store.instance_bdms(&inst.id).await?.iter().any(|b| b.volume_id.is_some());
    if has_volumes {
        return Err(bad(format!(
            "Cannot evacuate instance {}: its volumes are on compute host {}, which is down, and no other host \
             can reach them.",
            inst.id, source.name
        )));
    }
    let to = NewState { vm_state: &inst.vm_state, task_state: Some(TaskState::Rebuilding.as_str()), power_state: None };
    if state.store.transition(&inst.id, Expect::Task(None), to).await?.is_none() {
        let fresh = state.store.get_instance(&inst.id).await?;
        return Err(states::refuse(UserAction::Evacuate, &inst.id, vm_state(&fresh), task_state(&fresh)));
    }
    servers::record_action(state, ctx, &inst.id, "evacuate", &ctx.request_id).await?;
    let password = a.admin_pass.clone().unwrap_or_else(|| crate::auth::random_secret()[..12].to_string());
    let mut m = Migration {
        uuid: new_uuid(),
        instance_uuid: inst.id.clone(),
        project_id: inst.project_id.clone(),
        user_id: ctx.user.id.clone(),
        migration_type: "evacuation".into(),
        status: "accepted".into(),
        source_host_id: Some(source.id.clone()),
        source_compute: Some(source.name.clone()),
        dest_compute: target.as_ref().map(|t| t.name.clone()),
        old_flavor_id: inst.flavor_id.clone(),
        new_flavor_id: inst.flavor_id.clone(),
        old_flavor: inst.flavor.clone(),
        new_flavor: inst.flavor.clone(),
        // The guest ends as it was: a stopped server stays stopped (Nova before 2.95).
        power_on: i64::from(inst.vm_state != "stopped"),
        prior_vm_state: inst.vm_state.clone(),
        ..Default::default()
    };
    state.store.create_migration(&mut m, None).await?;
    if let Err(e) = schedule_and_send(state, &inst, &m, &source, target.as_ref(), a.force).await {
        // Whatever broke, the server does not stay in a task.
        let message = format!("Evacuation of instance {} failed: {e}", inst.id);
        if let Err(f) = fail(state, &inst.id, &m, &message, "evacuate could not be started").await {
            tracing::error!(instance = %inst.id, error = %f, "cannot record a failed evacuation");
        }
        return Err(ApiError::internal(e));
    }
    // Nova answers 200: the password before 2.14 (`enable_instance_password` on), else nothing.
    if v.at_least(14) {
        Ok(StatusCode::OK.into_response())
    } else {
        Ok((StatusCode::OK, axum::Json(json!({"adminPass": password}))).into_response())
    }
}

/// Step 2 and 3 of the walk: a host, its claim, the ports, the rebuild there.
async fn schedule_and_send(
    state: &AppState,
    inst: &Instance,
    m: &Migration,
    source: &Host,
    target: Option<&Host>,
    force: bool,
) -> Result<(), ConductError> {
    if let Some(a) = state.store.latest_action(&inst.id, "evacuate").await? {
        state.store.start_event(&a.id, "conductor_rebuild_server", None).await?;
    }
    let hosts = state.store.list_hosts().await?;
    let flavor: Value = serde_json::from_str(&inst.flavor).map_err(StoreError::from)?;
    let candidates: Vec<String> = match target {
        // A forced host skips the scheduler's filters (2.29–2.67), not the claim.
        Some(t) if force => vec![t.id.clone()],
        _ => {
            let image = state.store.get_image(&inst.image_id).await.ok();
            let mut request = conductor::request_for_instance(state, inst, &flavor, image.as_ref()).await?;
            request.ignore_hosts = hosts
                .iter()
                .filter(|h| h.id == source.id || target.is_some_and(|t| t.id != h.id))
                .map(|h| h.name.clone())
                .collect();
            let snapshot: Vec<_> = hosts.iter().map(|h| conductor::host_state(state, h)).collect();
            match scheduler::select(&snapshot, &request, &conductor::settings(state)) {
                Ok(c) => c,
                Err(no) => {
                    let details = no.rejections.iter().map(|(h, f)| format!("{h}: {f}")).collect::<Vec<_>>().join(", ");
                    tracing::info!(instance = %inst.id, %details, "no host for an evacuation");
                    Vec::new()
                }
            }
        }
    };
    let mut chosen = None;
    for c in &candidates {
        let Some(dest) = hosts.iter().find(|h| &h.id == c) else { continue };
        if state.store.hold_for_evacuation(m.id, dest, &inst.flavor, conductor::ratios(state)).await? {
            chosen = Some(dest.clone());
            break;
        }
    }
    let Some(dest) = chosen else {
        // Nova's conductor: NoValidHost ends the migration `error` and the server in ERROR.
        state.store.end_migration(m.id, "error").await?;
        let message = "No valid host was found. No valid host found for evacuate";
        error_out(state, &inst.id, message, "NoValidHost").await?;
        return Ok(());
    };
    state.hosts.lock().await.invalidate();
    // The ports follow the server to its new host before the guest is plugged there.
    rebind_ports(state, &inst.id, &dest.name).await?;
    let spec = conductor::current_spec(state, inst).await?;
    let json = serde_json::to_string(&Action::Rebuild(Box::new(spec))).map_err(StoreError::from)?;
    state.store.enqueue_work(&inst.id, &dest.id, &json).await?;
    arm(state, &inst.id).await?;
    if let Some(a) = state.store.latest_action(&inst.id, "evacuate").await? {
        state.store.start_event(&a.id, "compute_rebuild_instance", Some(&dest.name)).await?;
    }
    state.signals.notify(&dest.id);
    Ok(())
}

/// Every host step of an evacuation runs under `[compute] action_timeout_secs`.
async fn arm(state: &AppState, id: &str) -> Result<(), StoreError> {
    let secs = i64::try_from(state.cfg.compute.action_timeout_secs).unwrap_or(i64::MAX);
    let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
    state.store.set_instance_deadline(id, Some(&crate::store::fmt_time(at))).await
}

async fn rebind_ports(state: &AppState, id: &str, host: &str) -> Result<(), ConductError> {
    for p in state.store.ports_by_device(id).await? {
        state.store.bind_port(&p.id, host).await?;
    }
    Ok(())
}

/// The server to ERROR with a fault, its evacuate action failed, no task and no deadline.
async fn error_out(state: &AppState, id: &str, message: &str, details: &str) -> Result<(), ConductError> {
    let to = NewState { vm_state: "error", task_state: None, power_state: None };
    state.store.transition(id, Expect::Any, to).await?;
    state.store.set_instance_deadline(id, None).await?;
    let fault = json!({"code": 500, "message": message, "details": details, "created": nova_time(&now())});
    state.store.set_instance_fault(id, Some(&fault.to_string())).await?;
    state.store.finish_named_action(id, "evacuate", "Error", Some("Error"), Some(details)).await?;
    tracing::warn!(instance = %id, %message, "evacuation failed");
    Ok(())
}

/// Step 4: the evacuation failed after a host was chosen (or could not start).
async fn fail(state: &AppState, id: &str, m: &Migration, message: &str, details: &str) -> Result<(), ConductError> {
    state.store.cancel_work(id, m.dest_host_id.as_deref()).await?;
    state.store.end_migration(m.id, "failed").await?;
    if let Some(source) = &m.source_compute {
        rebind_ports(state, id, source).await?;
    }
    error_out(state, id, message, details).await?;
    // What the new host made of the instance goes (it never had it before).
    if let Some(dest) = &m.dest_host_id {
        let json = serde_json::to_string(&Action::MigrateCleanup { migration_id: m.uuid.clone(), remove: true })
            .map_err(StoreError::from)?;
        state.store.enqueue_work(id, dest, &json).await?;
        state.signals.notify(dest);
    }
    Ok(())
}

/// The evacuation in flight whose new host `work` runs on, if `work` is its rebuild (or the
/// power-off of a server that stays stopped).
pub(crate) async fn owns(state: &AppState, work: &Work, action: &Action) -> Result<Option<Migration>, StoreError> {
    if !matches!(action, Action::Rebuild(_) | Action::Stop) {
        return Ok(None);
    }
    Ok(state.store.latest_migration(&work.instance_id).await?.filter(|m| {
        m.migration_type == "evacuation"
            && m.status == "pre-migrating"
            && m.dest_host_id.as_deref() == Some(work.host_id.as_str())
    }))
}

/// Applies the new host's answer to an evacuation's work ([`owns`]).
pub(crate) async fn on_event(
    state: &AppState,
    work: &Work,
    action: &Action,
    m: &Migration,
    event: WorkEvent,
) -> Result<(), ConductError> {
    let id = work.instance_id.as_str();
    match (action, event) {
        (Action::Rebuild(_), WorkEvent::Progress { task_state }) => {
            if !matches!(task_state.as_str(), "rebuild_block_device_mapping" | "rebuild_spawning") {
                return Err(ConductError::Invalid(format!("unknown rebuild progress '{task_state}'")));
            }
            let inst = state.store.get_instance(id).await?;
            if inst.task_state.as_deref().is_some_and(|t| t.starts_with("rebuild")) {
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
            if !inst.task_state.as_deref().is_some_and(|t| t.starts_with("rebuild")) {
                return Ok(()); // ended meanwhile (deadline, delete)
            }
            if m.power_on == 0 {
                // Runs now on the new host; powered off again, as Nova does for a stopped one.
                let to = NewState {
                    vm_state: &inst.vm_state,
                    task_state: Some(TaskState::RebuildSpawning.as_str()),
                    power_state: Some(power_state.code()),
                };
                state.store.transition(id, Expect::Task(inst.task_state.as_deref()), to).await?;
                let json = serde_json::to_string(&Action::Stop).map_err(StoreError::from)?;
                state.store.enqueue_work(id, &work.host_id, &json).await?;
                arm(state, id).await?;
                state.signals.notify(&work.host_id);
                return Ok(());
            }
            finished(state, id, m, "active", power_state).await?;
        }
        (Action::Stop, WorkEvent::Done { power_state, .. }) => {
            if state.store.finish_work(&work.id, "done", None).await?
                && state.store.get_instance(id).await?.task_state.as_deref() == Some("rebuild_spawning")
            {
                finished(state, id, m, "stopped", power_state).await?;
            }
        }
        (_, WorkEvent::Failed { message, details, .. }) => {
            if !state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                return Ok(());
            }
            fail(state, id, m, &message, &details).await?;
        }
        (_, WorkEvent::Done { .. }) => {
            state.store.finish_work(&work.id, "done", None).await?;
        }
    }
    Ok(())
}

/// The guest is on its new host: the instance moves there, the migration is `done`.
async fn finished(state: &AppState, id: &str, m: &Migration, vm: &str, power: PowerState) -> Result<(), ConductError> {
    state.store.finish_evacuation(m, vm, power.code()).await?;
    state.store.set_instance_launched(id).await?;
    state.store.set_instance_fault(id, None).await?;
    state.store.finish_named_action(id, "evacuate", "Success", None, None).await?;
    tracing::info!(instance = %id, from = ?m.source_compute, to = ?m.dest_compute, "evacuated");
    // The source may already be back (forced down while running): clean it now.
    if let Some(source) = &m.source_host_id {
        reclaim_source(state, source).await?;
    }
    Ok(())
}

/// An evacuation past its deadline fails (the conductor's tick, before the generic deadline).
/// `true` when it did.
pub(crate) async fn enforce_deadline(
    state: &AppState,
    inst: &Instance,
    now_t: chrono::DateTime<chrono::Utc>,
) -> Result<bool, ConductError> {
    if !inst.task_state.as_deref().is_some_and(|t| t.starts_with("rebuild"))
        || inst.build_deadline.as_deref().and_then(parse_time).is_none_or(|d| d >= now_t)
    {
        return Ok(false);
    }
    let Some(m) = state.store.latest_migration(&inst.id).await? else { return Ok(false) };
    if m.migration_type != "evacuation" || !matches!(m.status.as_str(), "accepted" | "pre-migrating") {
        return Ok(false);
    }
    let message = format!(
        "The compute host did not complete 'evacuate' of instance {} within {} seconds",
        inst.id, state.cfg.compute.action_timeout_secs
    );
    fail(state, &inst.id, &m, &message, "action_timeout_secs exceeded").await?;
    Ok(true)
}

/// Step 5: a host that is back (registering or heartbeating) is told to remove what was
/// evacuated away from it, once per instance (no new cleanup while one is queued there).
pub(crate) async fn reclaim_source(state: &AppState, host_id: &str) -> Result<usize, ConductError> {
    let host = state.store.get_host(host_id).await?;
    let filter = MigrationFilter {
        source_compute: Some(host.name.clone()),
        migration_type: Some("evacuation".into()),
        statuses: vec!["done".into()],
        ..Default::default()
    };
    let mut queued = 0;
    for m in state.store.list_migrations(&filter).await? {
        if m.source_host_id.as_deref() != Some(host_id) || state.store.live_work(&m.instance_uuid, host_id).await? > 0 {
            continue;
        }
        let json = serde_json::to_string(&Action::MigrateCleanup { migration_id: m.uuid.clone(), remove: true })
            .map_err(StoreError::from)?;
        state.store.enqueue_work(&m.instance_uuid, host_id, &json).await?;
        state.signals.notify(host_id);
        tracing::info!(instance = %m.instance_uuid, host = %host.name, "removing an evacuated instance's leftover");
        queued += 1;
    }
    Ok(queued)
}

/// A host answered an evacuation's [`Action::MigrateCleanup`]: the source's removal of its
/// copy makes the evacuation `completed` and frees the source's claim; the new host's
/// removal of a failed attempt's copy changes nothing. A failed removal on the source is
/// asked again at its next registration or heartbeat.
pub(crate) async fn cleaned(
    state: &AppState,
    work: &Work,
    m: &Migration,
    failure: Option<&str>,
) -> Result<(), ConductError> {
    let on_source = m.source_host_id.as_deref() == Some(work.host_id.as_str());
    match failure {
        None if on_source && m.status != "failed" => state.store.end_migration(m.id, "completed").await?,
        None => {}
        Some(why) => {
            tracing::warn!(migration = %m.uuid, host = %work.host_id, error = %why, "an evacuated instance's copy could not be removed")
        }
    }
    Ok(())
}
