//! Pause/unpause, suspend/resume and lock/unlock (issue 17): the server actions, the agent's
//! answers to them, and the deadline every host-side action runs under.
//!
//! The power actions go through [`servers::start_action`] like stop/start/reboot (one state
//! table, one lock check, the instance action and its `compute_*_instance` event, the work item
//! for the host); their answers land here from the conductor. Lock and unlock are API-only, as
//! Nova's: they record an action with an `api_lock`/`api_unlock` event and change the row.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_common::agent::{Action, WorkEvent};
use serde_json::{Value, json};

use super::ApiVersion;
use super::conductor::{ConductError, nova_time};
use super::servers::{self, visible};
use super::states::{Action as UserAction, TaskState};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::hosts::Work;
use crate::store::instances::{Expect, Instance, NewState};
use crate::store::{fmt_time, now, parse_time};

/// `POST /servers/{id}/action` for the actions of this module; `None` for any other action.
pub(crate) async fn action(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    id: &str,
    name: &str,
    args: &Value,
) -> Option<ApiResult<Response>> {
    let answer = match name {
        // Nova's schemas take any value for these four (`{}` from tempest, `null` from the CLI).
        "pause" => power(state, ctx, id, UserAction::Pause, "os-pause-server:pause").await,
        "unpause" => power(state, ctx, id, UserAction::Unpause, "os-pause-server:unpause").await,
        "suspend" => power(state, ctx, id, UserAction::Suspend, "os-suspend-server:suspend").await,
        "resume" => power(state, ctx, id, UserAction::Resume, "os-suspend-server:resume").await,
        "lock" => lock(state, ctx, v, id, args).await,
        "unlock" => unlock(state, ctx, id).await,
        _ => return None,
    };
    Some(answer.map(|()| StatusCode::ACCEPTED.into_response()))
}

async fn power(state: &AppState, ctx: &Ctx, id: &str, action: UserAction, policy: &str) -> ApiResult<()> {
    ctx.require_member(&format!("os_compute_api:{policy}"))?;
    let inst = visible(state, ctx, id).await?;
    servers::start_action(state, ctx, &inst, action).await
}

/// Who a lock by `ctx` is held by (Nova's `locked_by`): the instance's own project or an admin.
fn holder(ctx: &Ctx, inst: &Instance) -> &'static str {
    if ctx.project_id().is_ok_and(|p| p == inst.project_id) { "owner" } else { "admin" }
}

/// `lock`: `null`, or from 2.73 `{"locked_reason": "…"}` (1–255 characters).
fn lock_reason(v: ApiVersion, args: &Value) -> ApiResult<Option<String>> {
    if !v.at_least(73) {
        return Ok(None);
    }
    let invalid = |why: &str| ApiError::bad_request(format!("Invalid input for field/attribute lock. {why}"));
    match args {
        Value::Null => Ok(None),
        Value::Object(o) => {
            if let Some(extra) = o.keys().find(|k| *k != "locked_reason") {
                return Err(invalid(&format!("Additional properties are not allowed ('{extra}' was unexpected)")));
            }
            match o.get("locked_reason") {
                None => Ok(None),
                Some(Value::String(r)) if !r.is_empty() && r.chars().count() <= 255 => Ok(Some(r.clone())),
                Some(Value::String(r)) if r.is_empty() => Err(invalid("'' is too short")),
                Some(other) => Err(invalid(&format!("Value: {other}. Must be a string of 1-255 characters"))),
            }
        }
        other => Err(invalid(&format!("Value: {other}. {other} is not of type 'object', 'null'"))),
    }
}

async fn lock(state: &AppState, ctx: &Ctx, v: ApiVersion, id: &str, args: &Value) -> ApiResult<()> {
    ctx.require_member("os_compute_api:os-lock-server:lock")?;
    let inst = visible(state, ctx, id).await?;
    let reason = lock_reason(v, args)?;
    let by = holder(ctx, &inst);
    // Nova: locking again by the owner changes nothing (not even the reason).
    if inst.locked != 0 && by == "owner" {
        return Ok(());
    }
    api_action(state, ctx, &inst, "lock").await?;
    state.store.set_instance_lock(&inst.id, Some(by), reason.as_deref()).await?;
    state.store.finish_named_action(&inst.id, "lock", "Success", None, None).await?;
    Ok(())
}

async fn unlock(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<()> {
    ctx.require_member("os_compute_api:os-lock-server:unlock")?;
    let inst = visible(state, ctx, id).await?;
    let held_by = state.store.lock_info(&[inst.id.as_str()]).await?.remove(&inst.id).and_then(|l| l.locked_by);
    // An admin's lock is the admin's to lift (Nova's `is_expected_locked_by`).
    if held_by.is_some_and(|by| by != holder(ctx, &inst)) {
        ctx.require_admin("os_compute_api:os-lock-server:unlock:unlock_override")?;
    }
    api_action(state, ctx, &inst, "unlock").await?;
    state.store.set_instance_lock(&inst.id, None, None).await?;
    state.store.finish_named_action(&inst.id, "unlock", "Success", None, None).await?;
    Ok(())
}

/// An instance action done by the API itself, with its `api_<name>` event (as Nova's
/// `wrap_instance_event(prefix='api')`).
async fn api_action(state: &AppState, ctx: &Ctx, inst: &Instance, name: &str) -> ApiResult<()> {
    servers::record_action(state, ctx, &inst.id, name, &ctx.request_id).await?;
    if let Some(a) = state.store.latest_action(&inst.id, name).await? {
        state.store.start_event(&a.id, &format!("api_{name}"), None).await?;
    }
    Ok(())
}

/// The host-side work of a simple user action, one that [`servers::start_action`] runs (`None`
/// for the actions whose work needs arguments: their own modules start them).
pub(crate) fn agent_action(action: UserAction) -> Option<Action> {
    Some(match action {
        UserAction::Stop => Action::Stop,
        UserAction::Start => Action::Start,
        UserAction::RebootSoft => Action::Reboot { hard: false },
        UserAction::RebootHard => Action::Reboot { hard: true },
        UserAction::Delete | UserAction::ForceDelete => Action::Delete,
        UserAction::Pause => Action::Pause,
        UserAction::Unpause => Action::Unpause,
        UserAction::Suspend => Action::Suspend,
        UserAction::Resume => Action::Resume,
        _ => return None,
    })
}

/// Nova's compute-manager event name of a user action (`compute_<verb>_instance`).
pub(crate) fn event_verb(action: UserAction) -> &'static str {
    match action {
        UserAction::Delete => "terminate",
        other => other.name(),
    }
}

/// Starts the deadline of a host-side action: when the host has not answered by then, the
/// conductor's tick ends the task ([`enforce_deadline`]).
pub(crate) async fn arm_deadline(state: &AppState, id: &str) -> ApiResult<()> {
    let secs = i64::try_from(state.cfg.compute.action_timeout_secs).unwrap_or(i64::MAX);
    let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
    state.store.set_instance_deadline(id, Some(&fmt_time(at))).await?;
    Ok(())
}

/// What this module's actions do once the host says done: (task while running, vm_state after).
fn walk(action: &Action) -> Option<(TaskState, &'static str, &'static str)> {
    Some(match action {
        Action::Pause => (TaskState::Pausing, "paused", "pause"),
        Action::Unpause => (TaskState::Unpausing, "active", "unpause"),
        Action::Suspend => (TaskState::Suspending, "suspended", "suspend"),
        Action::Resume => (TaskState::Resuming, "active", "resume"),
        _ => return None,
    })
}

/// Applies the host's answer to a pause, unpause, suspend or resume.
pub(crate) async fn on_event(
    state: &AppState,
    work: &Work,
    action: &Action,
    event: WorkEvent,
) -> Result<(), ConductError> {
    let Some((task, done_vm, name)) = walk(action) else {
        return Err(ConductError::Invalid("not a pause or suspend action".into()));
    };
    let id = work.instance_id.as_str();
    // Only the task this work belongs to is ended: a delete that started meanwhile keeps going.
    let expect = Expect::Task(Some(task.as_str()));
    match event {
        WorkEvent::Progress { .. } => {}
        WorkEvent::Done { power_state, .. } => {
            if state.store.finish_work(&work.id, "done", None).await? {
                let to = NewState { vm_state: done_vm, task_state: None, power_state: Some(power_state.code()) };
                state.store.transition(id, expect, to).await?;
                state.store.set_instance_deadline(id, None).await?;
                state.store.finish_named_action(id, name, "Success", None, None).await?;
            }
        }
        WorkEvent::Failed { message, details, .. } => {
            if state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                // As Nova: the task is cleared, the vm_state stays, the action records the error.
                let inst = state.store.get_instance(id).await?;
                let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: None };
                state.store.transition(id, expect, to).await?;
                record_fault(state, id, &message, &details).await?;
                state.store.finish_named_action(id, name, "Error", Some("Error"), Some(&details)).await?;
                tracing::warn!(instance = %id, action = name, %message, "action failed on the host");
            }
        }
    }
    Ok(())
}

/// Nova records an instance fault for an action that failed on the host (shown in the server
/// body only if the instance goes to ERROR).
async fn record_fault(state: &AppState, id: &str, message: &str, details: &str) -> Result<(), ConductError> {
    let fault = json!({"code": 500, "message": message, "details": details, "created": nova_time(&now())});
    state.store.set_instance_fault(id, Some(&fault.to_string())).await?;
    Ok(())
}

/// The user action a task state belongs to (its name in instance actions).
fn action_of(task: TaskState) -> Option<&'static str> {
    use TaskState as T;
    Some(match task {
        T::PoweringOff => "stop",
        T::PoweringOn => "start",
        T::Rebooting | T::RebootPending | T::RebootStarted => "reboot",
        T::RebootingHard | T::RebootPendingHard | T::RebootStartedHard => "reboot",
        T::Pausing => "pause",
        T::Unpausing => "unpause",
        T::Suspending => "suspend",
        T::Resuming => "resume",
        T::ImageSnapshot | T::ImageSnapshotPending | T::ImagePendingUpload | T::ImageUploading => "createImage",
        T::ImageBackup => "createBackup",
        T::UpdatingPassword => "changePassword",
        T::ResizePrep | T::ResizeMigrating | T::ResizeMigrated | T::ResizeFinish => "resize",
        T::ResizeReverting => "revertResize",
        T::ResizeConfirming => "confirmResize",
        T::Rebuilding | T::RebuildBlockDeviceMapping | T::RebuildSpawning => "rebuild",
        T::Migrating => "live-migration",
        T::Rescuing => "rescue",
        T::Unrescuing => "unrescue",
        T::SoftDeleting => "delete",
        T::Restoring => "restore",
        T::Shelving | T::ShelvingImagePendingUpload | T::ShelvingImageUploading => "shelve",
        T::ShelvingOffloading => "shelveOffload",
        T::Unshelving => "unshelve",
        T::Scheduling | T::Networking | T::BlockDeviceMapping | T::Spawning | T::Deleting => return None,
    })
}

/// Ends a host-side action whose host did not answer by its deadline: its work is cancelled
/// (an answer arriving later is ignored), the task is cleared with the vm_state kept, the
/// action and a fault record the timeout. `true` when it did.
pub(crate) async fn enforce_deadline(
    state: &AppState,
    inst: &Instance,
    now_t: chrono::DateTime<chrono::Utc>,
) -> Result<bool, ConductError> {
    if inst.vm_state == "building" {
        return Ok(false);
    }
    let Some(task) = inst.task_state.as_deref().and_then(TaskState::parse) else {
        return Ok(false);
    };
    let Some(name) = action_of(task) else {
        return Ok(false);
    };
    if inst.build_deadline.as_deref().and_then(parse_time).is_none_or(|d| d >= now_t) {
        return Ok(false);
    }
    let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: None };
    if state.store.transition(&inst.id, Expect::Task(Some(task.as_str())), to).await?.is_none() {
        return Ok(false); // the answer came first
    }
    state.store.cancel_work(&inst.id, None).await?;
    state.store.set_instance_deadline(&inst.id, None).await?;
    let message = format!(
        "The compute host did not complete '{name}' of instance {} within {} seconds",
        inst.id, state.cfg.compute.action_timeout_secs
    );
    record_fault(state, &inst.id, &message, "action_timeout_secs exceeded").await?;
    state.store.finish_named_action(&inst.id, name, "Error", Some("Error"), Some(&message)).await?;
    // An image in the making (snapshot, backup, shelve) goes with its task.
    super::server_images::timed_out(state, inst).await?;
    tracing::warn!(instance = %inst.id, action = name, "action timed out on the host");
    Ok(true)
}
