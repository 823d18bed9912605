//! Live migration (`os-migrateLive`), its progress from the source agent, abort and forced
//! completion (`/servers/{id}/migrations/{migration_id}`).
//!
//! Walk (as Nova's API, conductor `LiveMigrationTask` and compute manager):
//!
//! 1. The API (admin) checks the body for the microversion, the target host (400
//!    `ComputeHostNotFound`), the lock and the state (active or paused, no task: 409) and
//!    refuses a server with volumes (400: volumes live on one host's disk here). The instance
//!    goes to task `migrating` (status MIGRATING), the action `live-migration` starts and a
//!    migration of type `live-migration` is stored `accepted`.
//! 2. The conductor's checks: the source's compute service is up, then the destination: a
//!    forced host (any host before 2.30, `force` 2.30–2.67) is checked as Nova's task does
//!    (not the source, up, enough memory), any other is the scheduler's choice (the source
//!    ignored, an admin's `host` as the only candidate). `block_migration: false` asks for
//!    shared storage, which this cloud has not: `InvalidSharedStorage`. The flavor is claimed
//!    on the destination (`queued`). A failed check ends the migration `error` and the
//!    instance back in its state with no task and a fault; before 2.34 the API answers the
//!    check's 400, from 2.34 (asynchronous) 202, as Nova's.
//! 3. `preparing`: the destination gets [`Action::LiveMigrateIn`] (its filters feed names
//!    the instance's ports from now on). Its answer, a [`LiveMigrationTarget`], goes to the
//!    source with [`Action::LiveMigrateOut`] (`running`); the source posts progress
//!    ([`progress`]) and reads back the abort and force-complete flags.
//! 4. Done: the instance is on the destination (its claim there is its own, the source's is
//!    freed), its ports are bound there, the migration `completed` with the bytes moved, and
//!    the source removes its copy ([`Action::MigrateCleanup`] `remove`).
//! 5. A failed preparation or source step, an abort, or the conductor's deadline (the source's
//!    `timeout_secs` plus a margin): the destination's claim is freed and its copy removed,
//!    the guest runs on the source as before with no task; the migration `error` (with a
//!    fault) or `cancelled` after an abort.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_common::agent::{Action, LiveMigrationControl, LiveMigrationProgress, LiveMigrationTarget, WorkEvent};
use serde_json::{Map, Value};

use super::ApiVersion;
use super::agents::HostAuth;
use super::conductor::{self, ConductError};
use super::migrations::{self as cold, check_lock_and_state, event, record_fault};
use super::scheduler;
use super::servers::{self, task_state, visible, vm_state};
use super::states::{self, Action as UserAction, TaskState};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;
use crate::store::hosts::{Host, Work};
use crate::store::instances::{Expect, Instance, NewState};
use crate::store::migrations::Migration;
use crate::store::{StoreError, fmt_time, new_uuid, parse_time};

/// The instance action of a live migration and its abort and forced completion (Nova's).
const ACTION: &str = "live-migration";
const CANCEL: &str = "live_migration_cancel";
const FORCE_COMPLETE: &str = "live_migration_force_complete";
/// Statuses of a live migration still under way (the host steps may still answer).
const OPEN: [&str; 4] = ["accepted", "queued", "preparing", "running"];

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// `POST /servers/{id}/action` for `os-migrateLive`; `None` for any other action.
pub(crate) async fn action(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    id: &str,
    name: &str,
    args: &Value,
) -> Option<ApiResult<Response>> {
    (name == "os-migrateLive").then_some(())?;
    Some(live_migrate(state, ctx, v, id, args).await.map(|()| StatusCode::ACCEPTED.into_response()))
}

/// The body's keys, checked as Nova's schemas for the microversion.
#[derive(Debug, Default, PartialEq)]
struct Args {
    host: Option<String>,
    /// `None`: `"auto"` (2.25+), which is a block migration here.
    block_migration: Option<bool>,
    force: bool,
}

/// Nova's `parameter_types.boolean` (and `strutils.bool_from_string(strict=True)`).
fn boolean(key: &str, val: &Value, auto: bool) -> ApiResult<Option<bool>> {
    const TRUE: [&str; 6] = ["true", "1", "on", "yes", "y", "t"];
    const FALSE: [&str; 6] = ["false", "0", "off", "no", "n", "f"];
    match val {
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if auto && s == "auto" => Ok(None),
        Value::String(s) if TRUE.contains(&s.to_ascii_lowercase().as_str()) => Ok(Some(true)),
        Value::String(s) if FALSE.contains(&s.to_ascii_lowercase().as_str()) => Ok(Some(false)),
        other => {
            let auto = if auto { ", 'auto'" } else { "" };
            Err(bad(format!(
                "Invalid input for field/attribute {key}. Value: {other}. {other} is not one of [True, 'True', \
                 'TRUE', 'true', '1', 'ON', 'On', 'on', 'YES', 'Yes', 'yes', False, 'False', 'FALSE', 'false', \
                 '0', 'OFF', 'Off', 'off', 'NO', 'No', 'no'{auto}]"
            )))
        }
    }
}

fn parse(v: ApiVersion, args: &Value) -> ApiResult<Args> {
    let b: &Map<String, Value> = args.as_object().ok_or_else(|| {
        bad(format!("Invalid input for field/attribute os-migrateLive. Value: {args}. {args} is not of type 'object'"))
    })?;
    let mut allowed = vec!["block_migration", "host"];
    if !v.at_least(25) {
        allowed.push("disk_over_commit");
    }
    if v.at_least(30) && !v.at_least(68) {
        allowed.push("force");
    }
    if let Some(extra) = b.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "Invalid input for field/attribute os-migrateLive. Additional properties are not allowed ('{extra}' was \
             unexpected)"
        )));
    }
    let required: &[&str] =
        if v.at_least(25) { &["block_migration", "host"] } else { &["block_migration", "disk_over_commit", "host"] };
    if let Some(missing) = required.iter().find(|k| !b.contains_key(**k)) {
        return Err(bad(format!(
            "Invalid input for field/attribute os-migrateLive. '{missing}' is a required property"
        )));
    }
    let mut a = Args::default();
    match &b["host"] {
        Value::Null => {}
        Value::String(h) if !h.is_empty() && h.len() <= 255 => a.host = Some(h.clone()),
        other => return Err(bad(format!("Invalid input for field/attribute host. Value: {other}."))),
    }
    a.block_migration = boolean("block_migration", &b["block_migration"], v.at_least(25))?;
    if let Some(d) = b.get("disk_over_commit") {
        // Accepted and ignored, as Nova's libvirt driver does since it checks the real disk.
        boolean("disk_over_commit", d, false)?;
    }
    if let Some(f) = b.get("force") {
        a.force = boolean("force", f, false)?.unwrap_or(false);
        if a.force && a.host.is_none() {
            return Err(bad("Can't force to a non-provided destination"));
        }
    }
    Ok(a)
}

/// A conductor check that refused the migration (Nova's pre-check exceptions): the API's 400
/// before 2.34, the migration's `error` after.
enum Refused {
    Check(String),
    Internal(ConductError),
}

impl<E: Into<ConductError>> From<E> for Refused {
    fn from(e: E) -> Self {
        Refused::Internal(e.into())
    }
}

async fn live_migrate(state: &AppState, ctx: &Ctx, v: ApiVersion, id: &str, args: &Value) -> ApiResult<()> {
    let a = parse(v, args)?;
    let inst = visible(state, ctx, id).await?;
    let policy = if a.host.is_some() { "migrate_live:host" } else { "migrate_live" };
    ctx.require_admin(&format!("os_compute_api:os-migrate-server:{policy}"))?;
    let target = match &a.host {
        Some(name) => match state.store.get_host_by_name(name).await {
            Ok(h) => Some(h),
            Err(StoreError::NotFound(_)) => return Err(bad(format!("Compute host {name} could not be found."))),
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    check_lock_and_state(ctx, &inst, UserAction::LiveMigrate)?;
    let source = match inst.host_id.as_deref() {
        Some(h) => state.store.get_host(h).await?,
        None => {
            return Err(ApiError::conflict(format!("Instance {} has no compute host; cannot live-migrate.", inst.id)));
        }
    };
    let has_volumes = inst.image_id.is_empty()
        || !state.store.instance_attachments(&inst.id).await?.is_empty()
        || state.store.instance_bdms(&inst.id).await?.iter().any(|b| b.volume_id.is_some());
    if has_volumes {
        // This cloud's volumes are files or LVM volumes on their compute host: no other host
        // reaches them, so a guest using one cannot run anywhere else.
        return Err(bad(format!(
            "Cannot live-migrate instance {}: its volumes are on compute host {} and no other host can reach them.",
            inst.id, source.name
        )));
    }
    // The task first: a concurrent action loses here.
    let to = NewState { vm_state: &inst.vm_state, task_state: Some(TaskState::Migrating.as_str()), power_state: None };
    if state.store.transition(&inst.id, Expect::Task(None), to).await?.is_none() {
        let fresh = state.store.get_instance(&inst.id).await?;
        return Err(states::refuse(UserAction::LiveMigrate, &inst.id, vm_state(&fresh), task_state(&fresh)));
    }
    servers::record_action(state, ctx, &inst.id, ACTION, &ctx.request_id).await?;
    event(state, &inst.id, ACTION, "conductor_live_migrate_instance", None, false).await?;
    let mut m = Migration {
        uuid: new_uuid(),
        instance_uuid: inst.id.clone(),
        project_id: inst.project_id.clone(),
        user_id: ctx.user.id.clone(),
        migration_type: ACTION.into(),
        status: "accepted".into(),
        source_host_id: Some(source.id.clone()),
        source_compute: Some(source.name.clone()),
        dest_compute: target.as_ref().map(|t| t.name.clone()),
        old_flavor_id: inst.flavor_id.clone(),
        new_flavor_id: inst.flavor_id.clone(),
        old_flavor: inst.flavor.clone(),
        new_flavor: inst.flavor.clone(),
        power_on: i64::from(inst.vm_state == "active"),
        prior_vm_state: inst.vm_state.clone(),
        ..Default::default()
    };
    state.store.create_migration(&mut m, None).await?;
    let forced = target.is_some() && (!v.at_least(30) || a.force);
    let refusal = match start(state, &inst, &m, &source, target.as_ref(), forced, a.block_migration).await {
        Ok(()) => return Ok(()),
        Err(Refused::Check(message)) => message,
        Err(Refused::Internal(e)) => format!("Live migration of instance {} failed: {e}", inst.id),
    };
    tracing::warn!(instance = %inst.id, migration = %m.uuid, %refusal, "live migration refused");
    let m = state.store.get_migration(m.id).await?;
    fail(state, &inst.id, &m, "error", &refusal, &refusal).await.map_err(ApiError::internal)?;
    // Nova's conductor answers its pre-checks' failures only to a synchronous call (< 2.34).
    if v.at_least(34) { Ok(()) } else { Err(bad(refusal)) }
}

/// Step 2 and 3 of the walk: the conductor's checks, the destination's claim, its preparation.
async fn start(
    state: &AppState,
    inst: &Instance,
    m: &Migration,
    source: &Host,
    target: Option<&Host>,
    forced: bool,
    block_migration: Option<bool>,
) -> Result<(), Refused> {
    let unavailable = |h: &str| Refused::Check(format!("Compute service of {h} is unavailable at this time."));
    if !conductor::host_up(state, source) {
        return Err(unavailable(&source.name));
    }
    let hosts = state.store.list_hosts().await?;
    let flavor: Value = serde_json::from_str(&inst.flavor).map_err(StoreError::from)?;
    let candidates: Vec<Host> = match target {
        Some(t) if forced => {
            if t.id == source.id {
                return Err(Refused::Check(format!(
                    "Unable to migrate instance ({}) to current host ({}).",
                    inst.id, t.name
                )));
            }
            if !conductor::host_up(state, t) {
                return Err(unavailable(&t.name));
            }
            // Nova's `_check_destination_has_enough_memory` (the RAMFilter's arithmetic).
            let avail = t.memory_mb as f64 * state.cfg.compute.ram_allocation_ratio - t.memory_mb_used as f64;
            let mem_inst = conductor::flavor_claim(&flavor).memory_mb;
            if avail <= mem_inst as f64 {
                return Err(Refused::Check(format!(
                    "Migration pre-check error: Unable to migrate {} to {}: Lack of memory(host:{avail:?} <= \
                     instance:{})",
                    inst.id, t.name, mem_inst
                )));
            }
            vec![t.clone()]
        }
        _ => {
            let image = state.store.get_image(&inst.image_id).await.ok();
            let mut request = conductor::request_for_instance(state, inst, &flavor, image.as_ref()).await?;
            request.ignore_hosts = hosts
                .iter()
                .filter(|h| h.id == source.id || target.is_some_and(|t| t.id != h.id))
                .map(|h| h.name.clone())
                .collect();
            let snapshot: Vec<_> = hosts.iter().map(|h| conductor::host_state(state, h)).collect();
            let chosen = scheduler::select(&snapshot, &request, &conductor::settings(state)).map_err(|no| {
                let details = no.rejections.iter().map(|(h, f)| format!("{h}: {f}")).collect::<Vec<_>>().join(", ");
                tracing::info!(instance = %inst.id, %details, "no destination for a live migration");
                Refused::Check("No valid host was found. There are not enough hosts available.".into())
            })?;
            chosen.iter().filter_map(|c| hosts.iter().find(|h| &h.id == c).cloned()).collect()
        }
    };
    if block_migration == Some(false) {
        // Nova's libvirt `check_can_live_migrate_source`: without shared instance storage
        // only a block migration can move local disks, and every host's disks are its own here.
        return Err(Refused::Check(format!(
            "{} is not on shared storage: Shared storage live-migration requires either shared storage or \
             boot-from-volume with no local disks.",
            source.name
        )));
    }
    let mut dest = None;
    for c in candidates {
        if state.store.hold_destination(m.id, &c, &inst.flavor, conductor::ratios(state), "queued").await? {
            dest = Some(c);
            break;
        }
    }
    let Some(dest) = dest else {
        return Err(Refused::Check(match target {
            Some(t) if forced => format!(
                "No valid host was found. Unable to move instance {} to host {}. There is not enough capacity on \
                 the host for the instance.",
                inst.id, t.name
            ),
            _ => "No valid host was found. There are not enough hosts available.".into(),
        }));
    };
    state.hosts.lock().await.invalidate();
    event(state, &inst.id, ACTION, "compute_check_can_live_migrate_destination", Some(&dest.name), false).await?;
    event(state, &inst.id, ACTION, "compute_check_can_live_migrate_source", Some(&source.name), false).await?;
    // Preparing: from here the destination's filters feed names the instance's ports.
    if !state.store.move_migration(m.id, &["queued"], "preparing").await? {
        return Ok(()); // aborted (2.65) in between: the abort cleaned up
    }
    let spec = conductor::current_spec(state, inst).await?;
    let action = Action::LiveMigrateIn { migration_id: m.uuid.clone(), spec: Box::new(spec) };
    queue(state, &inst.id, &dest.id, &action, action_deadline(state)).await?;
    event(state, &inst.id, ACTION, "compute_pre_live_migration", Some(&dest.name), false).await?;
    Ok(())
}

fn action_deadline(state: &AppState) -> u64 {
    state.cfg.compute.action_timeout_secs
}

/// How long the source may take (Nova's `live_migration_completion_timeout` per GiB of RAM
/// and local disk), at least two minutes; a day when the setting is 0.
pub(crate) fn completion_timeout(state: &AppState, flavor: &str) -> u64 {
    let per_gib = state.cfg.compute.live_migration_completion_timeout;
    if per_gib == 0 {
        return 86_400;
    }
    let f: Value = serde_json::from_str(flavor).unwrap_or_default();
    let ram_mib = f["ram"].as_u64().unwrap_or(0);
    let disk_gib = f["disk"].as_u64().unwrap_or(0) + f["ephemeral"].as_u64().unwrap_or(0);
    // RAM in MiB counted as GiB with its fraction (per_gib * MiB / 1024), rounded up.
    let secs = per_gib.saturating_mul(disk_gib) + (per_gib.saturating_mul(ram_mib)).div_ceil(1024);
    secs.max(120)
}

/// The conductor waits this much longer than the source's own timeout: the source aborts and
/// reports first, the deadline only catches a source that went silent.
const DEADLINE_MARGIN_SECS: u64 = 120;

async fn queue(
    state: &AppState,
    instance: &str,
    host_id: &str,
    action: &Action,
    secs: u64,
) -> Result<(), ConductError> {
    let json = serde_json::to_string(action).map_err(StoreError::from)?;
    state.store.enqueue_work(instance, host_id, &json).await?;
    let secs = i64::try_from(secs).unwrap_or(i64::MAX / 2);
    let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
    state.store.set_instance_deadline(instance, Some(&fmt_time(at))).await?;
    state.signals.notify(host_id);
    Ok(())
}

/// Asks `host_id` to remove its copy of the instance (no deadline: the instance's task is
/// over; a host that is away finds the work when it comes back).
async fn cleanup(state: &AppState, instance: &str, host_id: &str, m: &Migration) -> Result<(), ConductError> {
    let action = Action::MigrateCleanup { migration_id: m.uuid.clone(), remove: true };
    let json = serde_json::to_string(&action).map_err(StoreError::from)?;
    state.store.enqueue_work(instance, host_id, &json).await?;
    state.signals.notify(host_id);
    Ok(())
}

/// Step 5: the live migration ends without moving the guest (`error` or `cancelled`): the
/// destination's claim and copy go, the instance keeps its state on the source with no task.
async fn fail(
    state: &AppState,
    id: &str,
    m: &Migration,
    status: &str,
    message: &str,
    details: &str,
) -> Result<(), ConductError> {
    state.store.cancel_work(id, None).await?;
    state.store.end_migration(m.id, status).await?;
    let inst = state.store.get_instance(id).await?;
    if inst.task_state.as_deref() == Some(TaskState::Migrating.as_str()) {
        let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: None };
        state.store.transition(id, Expect::Task(Some(TaskState::Migrating.as_str())), to).await?;
    }
    state.store.set_instance_deadline(id, None).await?;
    if status == "error" {
        record_fault(state, id, message, details).await?;
    }
    if let (Some(dest), Some(name)) = (&m.dest_host_id, &m.dest_compute) {
        event(state, id, ACTION, "compute_rollback_live_migration_at_destination", Some(name), false).await?;
        cleanup(state, id, dest, m).await?;
    }
    state.store.finish_named_action(id, ACTION, "Error", Some("Error"), Some(details)).await?;
    if status == "cancelled" {
        state.store.finish_named_action(id, CANCEL, "Success", None, None).await?;
    }
    Ok(())
}

/// Applies a host's answer to [`Action::LiveMigrateIn`] or [`Action::LiveMigrateOut`].
pub(crate) async fn on_event(
    state: &AppState,
    work: &Work,
    action: &Action,
    event_in: WorkEvent,
) -> Result<(), ConductError> {
    let uuid = match action {
        Action::LiveMigrateIn { migration_id, .. } | Action::LiveMigrateOut { migration_id, .. } => migration_id,
        _ => return Err(ConductError::Invalid("not a live migration action".into())),
    };
    let m = state.store.get_migration_by_uuid(uuid).await?;
    let id = work.instance_id.as_str();
    match (action, event_in) {
        (_, WorkEvent::Progress { .. }) => {}
        (Action::LiveMigrateIn { .. }, WorkEvent::Done { data, .. }) => {
            if !state.store.finish_work(&work.id, "done", None).await? || m.status != "preparing" {
                return Ok(()); // ended meanwhile (abort, deadline, delete)
            }
            let target = data.and_then(|d| serde_json::from_value::<LiveMigrationTarget>(d).ok());
            let Some(target) = target else {
                let message = format!("Live migration of instance {id} failed: the destination named no target");
                return fail(state, id, &m, "error", &message, "LiveMigrateIn answered no LiveMigrationTarget").await;
            };
            if !state.store.move_migration(m.id, &["preparing"], "running").await? {
                return Ok(());
            }
            let source = m.source_host_id.clone().unwrap_or_default();
            let timeout_secs = completion_timeout(state, &m.old_flavor);
            let out = Action::LiveMigrateOut { migration_id: m.uuid.clone(), target, timeout_secs };
            queue(state, id, &source, &out, timeout_secs + DEADLINE_MARGIN_SECS).await?;
            event(state, id, ACTION, "compute_live_migration", m.source_compute.as_deref(), false).await?;
        }
        (Action::LiveMigrateOut { .. }, WorkEvent::Done { power_state, data, .. }) => {
            if !state.store.finish_work(&work.id, "done", None).await? || m.status != "running" {
                return Ok(());
            }
            let bytes = |k: &str| data.as_ref().and_then(|d| d[k].as_u64()).and_then(|n| i64::try_from(n).ok());
            state
                .store
                .finish_live_migration(&m, power_state.code(), bytes("memory_bytes"), bytes("disk_bytes"))
                .await?;
            let dest = m.dest_compute.clone().unwrap_or_default();
            cold::rebind_ports(state, id, &dest).await?;
            event(state, id, ACTION, "compute_post_live_migration_at_destination", Some(&dest), false).await?;
            state.store.finish_named_action(id, ACTION, "Success", None, None).await?;
            if m.live_abort != 0 {
                // Too late to abort: the guest had arrived.
                let why = "The live migration completed before it could be aborted";
                state.store.finish_named_action(id, CANCEL, "Error", Some("Error"), Some(why)).await?;
            }
            tracing::info!(instance = %id, from = ?m.source_compute, to = %dest, "live-migrated");
            if let Some(source) = &m.source_host_id {
                cleanup(state, id, source, &m).await?;
            }
        }
        (_, WorkEvent::Failed { message, details, .. }) => {
            if !state.store.finish_work(&work.id, "failed", Some(&message)).await? || !OPEN.contains(&m.status.as_str())
            {
                return Ok(());
            }
            let status = if m.live_abort != 0 { "cancelled" } else { "error" };
            tracing::warn!(instance = %id, migration = %m.uuid, %message, status, "live migration ended on a host");
            let message = format!("Live migration of instance {id} failed: {message}");
            fail(state, id, &m, status, &message, &details).await?;
        }
        (_, WorkEvent::Done { .. }) => {
            state.store.finish_work(&work.id, "done", None).await?;
        }
    }
    Ok(())
}

/// A host answered a live migration's [`Action::MigrateCleanup`]: nothing changes but the
/// log (the copy that could not be removed is the operator's to remove, as Nova's).
pub(crate) async fn cleaned(
    state: &AppState,
    work: &Work,
    m: &Migration,
    failure: Option<&str>,
) -> Result<(), ConductError> {
    let _ = state;
    if let Some(why) = failure {
        tracing::warn!(migration = %m.uuid, host = %work.host_id, error = %why, "a live migration's leftover could not be removed");
    }
    Ok(())
}

/// A live migration past its deadline fails (the conductor's tick, before the generic
/// deadline): the source went silent. `true` when it did.
pub(crate) async fn enforce_deadline(
    state: &AppState,
    inst: &Instance,
    now_t: chrono::DateTime<chrono::Utc>,
) -> Result<bool, ConductError> {
    if inst.task_state.as_deref() != Some(TaskState::Migrating.as_str())
        || inst.build_deadline.as_deref().and_then(parse_time).is_none_or(|d| d >= now_t)
    {
        return Ok(false);
    }
    let Some(m) = state.store.latest_migration(&inst.id).await? else { return Ok(false) };
    if m.migration_type != ACTION || !OPEN.contains(&m.status.as_str()) {
        return Ok(false);
    }
    let step = if m.status == "running" { "live_migration" } else { "pre_live_migration" };
    let message = format!("The compute host did not complete '{step}' of instance {} in time", inst.id);
    tracing::warn!(instance = %inst.id, migration = %m.uuid, "live migration timed out");
    fail(state, &inst.id, &m, "error", &message, "live migration deadline exceeded").await?;
    Ok(true)
}

// ---- the agent's progress ----

/// `POST /agent/v1/migrations/{uuid}/progress`: the source of a running live migration
/// reports how far it is and learns whether to abort or force completion (404 for anyone
/// else, as for unknown ids).
pub async fn progress(
    State(state): State<AppState>,
    auth: HostAuth,
    Path(uuid): Path<String>,
    Json(p): Json<LiveMigrationProgress>,
) -> ApiResult<axum::Json<LiveMigrationControl>> {
    let not_found = || ApiError::not_found(format!("Migration {uuid} could not be found."));
    let m = match state.store.get_migration_by_uuid(&uuid).await {
        Ok(m) => m,
        Err(StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if m.migration_type != ACTION || m.source_host_id.as_deref() != Some(auth.host_id.as_str()) {
        return Err(not_found());
    }
    let m = state.store.live_migration_progress(m.id, &p).await?.ok_or_else(not_found)?;
    Ok(axum::Json(LiveMigrationControl { abort: m.live_abort != 0, force_complete: m.live_force_complete != 0 }))
}

// ---- abort and force_complete ----

/// `DELETE /servers/{id}/migrations/{migration_id}` (2.24+, admin, 202): aborts a running
/// live migration (the source cancels at its next progress report; the migration ends
/// `cancelled` when it has), and from 2.65 one still `queued` or `preparing` (cancelled at
/// once, the destination cleaned).
pub async fn abort(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, mid)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if !v.at_least(24) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    let inst = visible(&state, &ctx, &id).await?;
    ctx.require_admin("os_compute_api:servers:migrations:delete")?;
    if inst.locked != 0 && !ctx.is_admin() {
        return Err(ApiError::conflict(format!("Instance {} is locked", inst.id)));
    }
    if inst.task_state.as_deref() != Some(TaskState::Migrating.as_str()) {
        return Err(ApiError::conflict(format!(
            "Cannot 'abort live migration' instance {} while it is in task_state {}",
            inst.id,
            inst.task_state.as_deref().unwrap_or("None")
        )));
    }
    let m = migration_of(&state, &inst, &mid).await?.ok_or_else(|| not_found_for(&mid, &inst.id))?;
    let mut allowed = vec!["running"];
    if v.at_least(65) {
        allowed.extend(["queued", "preparing"]);
    }
    if m.migration_type != ACTION || !allowed.contains(&m.status.as_str()) {
        return Err(cold::invalid_migration_state(&m, &inst.id, "abort live migration"));
    }
    servers::record_action(&state, &ctx, &inst.id, CANCEL, &ctx.request_id).await?;
    event(&state, &inst.id, CANCEL, "compute_live_migration_abort", m.source_compute.as_deref(), false).await?;
    // Not yet on the source: cancelled here, before the source starts.
    if m.status != "running" && state.store.move_migration(m.id, &["queued", "preparing"], "cancelled").await? {
        tracing::info!(instance = %inst.id, migration = %m.uuid, "live migration cancelled before it ran");
        fail(&state, &inst.id, &m, "cancelled", "", "").await.map_err(ApiError::internal)?;
        return Ok(StatusCode::ACCEPTED);
    }
    // Running (or it started meanwhile): the source aborts at its next progress report.
    if !state.store.flag_live_migration(m.id, true, &["running"]).await? {
        let fresh = state.store.get_migration(m.id).await?;
        state.store.finish_named_action(&inst.id, CANCEL, "Error", Some("Error"), None).await?;
        return Err(cold::invalid_migration_state(&fresh, &inst.id, "abort live migration"));
    }
    Ok(StatusCode::ACCEPTED)
}

fn not_found_for(mid: &str, instance: &str) -> ApiError {
    ApiError::not_found(format!("Migration {mid} not found for instance {instance}"))
}

async fn migration_of(state: &AppState, inst: &Instance, mid: &str) -> ApiResult<Option<Migration>> {
    let Ok(n) = mid.parse::<i64>() else { return Ok(None) };
    match state.store.get_migration(n).await {
        Ok(m) if m.instance_uuid == inst.id => Ok(Some(m)),
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `POST /servers/{id}/migrations/{migration_id}/action` `force_complete` (2.22+, admin, 202):
/// the source pauses the guest so the copy converges (it runs again on the destination).
pub async fn force_complete(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, mid)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<StatusCode> {
    if !v.at_least(22) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    match body.as_object() {
        Some(o) if o.len() == 1 && o.get("force_complete") == Some(&Value::Null) => {}
        Some(o) if o.contains_key("force_complete") && o.len() == 1 => {
            let val = &o["force_complete"];
            return Err(bad(format!(
                "Invalid input for field/attribute force_complete. Value: {val}. {val} is not of type 'null'"
            )));
        }
        Some(o) if o.contains_key("force_complete") => {
            let extra = o.keys().find(|k| *k != "force_complete").cloned().unwrap_or_default();
            return Err(bad(format!("Additional properties are not allowed ('{extra}' was unexpected)")));
        }
        _ => {
            return Err(bad(
                "Invalid input for field/attribute force_complete. 'force_complete' is a required property",
            ));
        }
    }
    let inst = visible(&state, &ctx, &id).await?;
    ctx.require_admin("os_compute_api:servers:migrations:force_complete")?;
    if inst.locked != 0 && !ctx.is_admin() {
        return Err(ApiError::conflict(format!("Instance {} is locked", inst.id)));
    }
    // Nova: vm_state ACTIVE only (a paused guest is not converging anyway), task MIGRATING.
    if inst.vm_state != "active" {
        return Err(ApiError::conflict(format!(
            "Cannot 'force_complete' instance {} while it is in vm_state {}",
            inst.id, inst.vm_state
        )));
    }
    if inst.task_state.as_deref() != Some(TaskState::Migrating.as_str()) {
        return Err(ApiError::conflict(format!(
            "Cannot 'force_complete' instance {} while it is in task_state {}",
            inst.id,
            inst.task_state.as_deref().unwrap_or("None")
        )));
    }
    // Nova answers a migration that is not this instance's with 400 here (not 404).
    let m = migration_of(&state, &inst, &mid)
        .await?
        .ok_or_else(|| bad(format!("Migration {mid} not found for instance {}", inst.id)))?;
    if m.status != "running" || !state.store.flag_live_migration(m.id, false, &["running"]).await? {
        let fresh = state.store.get_migration(m.id).await?;
        return Err(cold::invalid_migration_state(&fresh, &inst.id, "force complete"));
    }
    servers::record_action(&state, &ctx, &inst.id, FORCE_COMPLETE, &ctx.request_id).await?;
    event(
        &state,
        &inst.id,
        FORCE_COMPLETE,
        "compute_live_migration_force_complete",
        m.source_compute.as_deref(),
        false,
    )
    .await?;
    // The source acts on the flag at its next progress report; Nova's event ends as the
    // request reaches the driver.
    state.store.finish_named_action(&inst.id, FORCE_COMPLETE, "Success", None, None).await?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u32) -> ApiVersion {
        ApiVersion::new(2, minor)
    }

    #[test]
    fn bodies_follow_the_microversion() {
        let ok = |minor, body: Value| parse(v(minor), &body).expect("accepted");
        let refused = |minor, body: Value| parse(v(minor), &body).expect_err("refused").message;
        let a = ok(1, serde_json::json!({"host": null, "block_migration": "True", "disk_over_commit": false}));
        assert_eq!(a, Args { host: None, block_migration: Some(true), force: false });
        assert!(refused(1, serde_json::json!({"host": null, "block_migration": true})).contains("disk_over_commit"));
        assert!(
            refused(1, serde_json::json!({"host": null, "block_migration": "auto", "disk_over_commit": 0}))
                .contains("block_migration")
        );
        assert_eq!(ok(25, serde_json::json!({"host": "h", "block_migration": "auto"})).block_migration, None);
        assert!(
            refused(25, serde_json::json!({"host": "h", "block_migration": true, "disk_over_commit": false}))
                .contains("'disk_over_commit' was unexpected")
        );
        assert!(
            refused(25, serde_json::json!({"host": "h", "block_migration": true, "force": true}))
                .contains("'force' was unexpected")
        );
        assert!(ok(30, serde_json::json!({"host": "h", "block_migration": true, "force": "yes"})).force);
        assert_eq!(
            refused(30, serde_json::json!({"host": null, "block_migration": true, "force": true})),
            "Can't force to a non-provided destination"
        );
        assert!(
            refused(68, serde_json::json!({"host": "h", "block_migration": true, "force": false}))
                .contains("'force' was unexpected")
        );
        assert!(refused(68, serde_json::json!({"block_migration": true})).contains("'host' is a required property"));
        assert!(refused(68, serde_json::json!(null)).contains("is not of type 'object'"));
    }
}
