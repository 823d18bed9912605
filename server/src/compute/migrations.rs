//! Resize, cold migration and their confirm/revert (issue 17), the disk relay between agents,
//! and the migration records' API (`os-migrations`, `/servers/{id}/migrations`).
//!
//! Walk of a resize or cold migration (task states as Nova's):
//!
//! 1. The API checks lock, state, flavor and quota, picks the destination (the scheduler with
//!    the new flavor; the source is ignored for a cold migration, and for a resize unless
//!    `[compute] allow_resize_to_same_host`), claims the new flavor there for the migration
//!    and answers 202 with the instance in `resize_prep` and the migration `pre-migrating`.
//! 2. Another host: the source gets [`Action::MigrateOut`] (`resize_migrating`, migration
//!    `migrating`): the guest off, its disk through `PUT /agent/v1/migrations/{uuid}/disk`.
//!    Then (`resize_migrated`, `post-migrating`) the destination gets [`Action::MigrateIn`]
//!    (`resize_finish`): the disk, the same ports, the new flavor. The same host:
//!    [`Action::ResizeLocal`] does both in place, keeping a copy of the disk.
//! 3. Done: vm_state `resized` (`VERIFY_RESIZE`), the instance on the destination with the new
//!    flavor, the migration `finished` holding the source's old claim.
//! 4. `confirmResize` (or the conductor's tick after `resize_confirm_window`): the source's
//!    domain and disk removed, the old claim freed, migration `confirmed`, the instance
//!    `active` (or `stopped`). `revertResize`: the destination's copy removed, the source's
//!    guest started again with the old flavor, migration `reverted`.
//!
//! Failures: a failed or overdue step ends the migration `error`, frees the destination's
//! claim, removes what the destination made, and puts the guest back on the source as it
//! was (its disk is never deleted before a confirm); the action records the error and a fault.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_common::agent::{Action, PowerState, WorkEvent};
use serde_json::{Value, json};

use super::ApiVersion;
use super::agents::HostAuth;
use super::conductor::{self, ConductError, nova_time};
use super::scheduler;
use super::servers::{self, task_state, visible, vm_state};
use super::states::{self, Action as UserAction, TaskState};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::state::AppState;
use crate::store::hosts::{Host, Ratios, Work};
use crate::store::instances::{Expect, Instance, NewState};
use crate::store::migrations::{Migration, MigrationFilter};
use crate::store::{StoreError, fmt_time, new_uuid, now, parse_time};

type JsonResult = ApiResult<axum::Json<Value>>;

/// `POST /servers/{id}/action` for this module's actions; `None` for any other.
pub(crate) async fn action(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    id: &str,
    name: &str,
    args: &Value,
) -> Option<ApiResult<Response>> {
    let answer = match name {
        "resize" => resize(state, ctx, id, args).await.map(|()| StatusCode::ACCEPTED),
        "migrate" => migrate(state, ctx, v, id, args).await.map(|()| StatusCode::ACCEPTED),
        "confirmResize" => confirm(state, ctx, id).await.map(|()| StatusCode::NO_CONTENT),
        "revertResize" => revert(state, ctx, id).await.map(|()| StatusCode::ACCEPTED),
        _ => return None,
    };
    Some(answer.map(IntoResponse::into_response))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// Nova checks the lock (outer decorator) before the state.
pub(crate) fn check_lock_and_state(ctx: &Ctx, inst: &Instance, action: UserAction) -> ApiResult<()> {
    if inst.locked != 0 && !ctx.is_admin() {
        return Err(ApiError::conflict(format!("Instance {} is locked", inst.id)));
    }
    let (vm, task) = (vm_state(inst), task_state(inst));
    if !states::allowed(action, vm, task) {
        return Err(states::refuse(action, &inst.id, vm, task));
    }
    Ok(())
}

/// `resize`: `{"flavorRef": …, "OS-DCF:diskConfig"?: "AUTO"|"MANUAL"}`.
async fn resize(state: &AppState, ctx: &Ctx, id: &str, args: &Value) -> ApiResult<()> {
    let body = args.as_object().ok_or_else(|| {
        bad(format!("Invalid input for field/attribute resize. Value: {args}. {args} is not of type 'object'"))
    })?;
    if let Some(extra) = body.keys().find(|k| !matches!(k.as_str(), "flavorRef" | "OS-DCF:diskConfig")) {
        return Err(bad(format!(
            "Invalid input for field/attribute resize. Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    let flavor_ref = match body.get("flavorRef") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => s.clone(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(other) => {
            return Err(bad(format!("Invalid input for field/attribute flavorRef. Value: {other}.")));
        }
        None => return Err(bad("Invalid input for field/attribute resize. 'flavorRef' is a required property")),
    };
    if let Some(dc) = body.get("OS-DCF:diskConfig")
        && !matches!(dc.as_str(), Some("AUTO" | "MANUAL"))
    {
        return Err(bad(format!(
            "Invalid input for field/attribute OS-DCF:diskConfig. Value: {dc}. {dc} is not one of ['AUTO', 'MANUAL']"
        )));
    }
    let inst = visible(state, ctx, id).await?;
    ctx.require_member("os_compute_api:servers:resize")?;
    check_lock_and_state(ctx, &inst, UserAction::Resize)?;
    let flavor = match state.store.get_flavor(&flavor_ref).await {
        Ok(f) => f,
        Err(StoreError::NotFound(_)) => return Err(bad(format!("Flavor {flavor_ref} could not be found."))),
        Err(e) => return Err(e.into()),
    };
    let old: Value = serde_json::from_str(&inst.flavor).map_err(ApiError::internal)?;
    if old["id"].as_str() == Some(flavor.id.as_str()) || inst.flavor_id == flavor.id {
        return Err(bad("When resizing, instances must change flavor!"));
    }
    let volume_backed = inst.image_id.is_empty();
    let old_disk = old["disk"].as_i64().unwrap_or(0);
    if flavor.disk == 0 && old_disk != 0 && !volume_backed {
        return Err(bad("Server disk was unable to be resized because: Resize to zero disk flavor is not allowed."));
    }
    if !volume_backed && flavor.disk < old_disk {
        // Nova's libvirt driver refuses this on the host (FlavorDiskSmallerThanCurrent); here
        // the API refuses it at once, with the same words.
        return Err(bad(format!(
            "Flavor's disk is smaller than the current disk. Flavor disk is {} bytes, current disk is {} bytes.",
            flavor.disk << 30,
            old_disk << 30
        )));
    }
    // Nova's libvirt `migrate_disk_and_power_off` refuses a smaller ephemeral size than the
    // server's (its mappings' ephemeral disks, else its flavor's) on the host; here the API
    // refuses it at once, with the same words (ResizeError).
    let own: i64 = state
        .store
        .instance_local_disks(&inst.id)
        .await?
        .iter()
        .filter(|d| d.kind == "ephemeral")
        .map(|d| d.size)
        .sum();
    let ephemeral = if own > 0 { own } else { old["ephemeral"].as_i64().unwrap_or(0) };
    if flavor.ephemeral < ephemeral {
        return Err(bad("Resize error: Unable to resize disk down."));
    }
    // Quota: the upsize's deltas (Nova's `_check_quota_for_upsize`).
    let (d_cores, d_ram) =
        (flavor.vcpus - old["vcpus"].as_i64().unwrap_or(0), flavor.ram - old["ram"].as_i64().unwrap_or(0));
    if d_cores > 0 || d_ram > 0 {
        let (_, used_cores, used_ram) = state.store.project_usage(&inst.project_id).await?;
        let [lim_cores, lim_ram] = super::quotas::limits_for(state, &inst.project_id, &["cores", "ram"]).await?;
        for (res, delta, used, lim) in [("cores", d_cores, used_cores, lim_cores), ("ram", d_ram, used_ram, lim_ram)] {
            if delta > 0 && lim >= 0 && used + delta > lim {
                return Err(ApiError::forbidden(format!(
                    "Quota exceeded for {res}: Requested {delta}, but already used {used} of {lim} {res}"
                )));
            }
        }
    }
    let new = json!({
        "id": flavor.id, "name": flavor.name, "vcpus": flavor.vcpus, "ram": flavor.ram, "disk": flavor.disk,
        "ephemeral": flavor.ephemeral, "swap": flavor.swap, "extra_specs": flavor.extra_specs_map(),
    });
    let same_host_ok = state.cfg.compute.allow_resize_to_same_host;
    start(state, ctx, &inst, Kind::Resize, new, None, same_host_ok).await
}

/// `migrate`: `null`, or from 2.56 `{"host": name|null}` (admin).
async fn migrate(state: &AppState, ctx: &Ctx, v: ApiVersion, id: &str, args: &Value) -> ApiResult<()> {
    let host = match args {
        Value::Null => None,
        Value::Object(o) if v.at_least(56) => {
            if let Some(extra) = o.keys().find(|k| *k != "host") {
                return Err(bad(format!(
                    "Invalid input for field/attribute migrate. Additional properties are not allowed ('{extra}' was unexpected)"
                )));
            }
            match o.get("host") {
                None | Some(Value::Null) => None,
                Some(Value::String(h)) if !h.is_empty() && h.len() <= 255 => Some(h.clone()),
                Some(other) => return Err(bad(format!("Invalid input for field/attribute host. Value: {other}."))),
            }
        }
        Value::Object(o) if o.is_empty() => None,
        other => {
            return Err(bad(format!(
                "Invalid input for field/attribute migrate. Value: {other}. {other} is not of type 'null'"
            )));
        }
    };
    let policy = if host.is_some() { "migrate:host" } else { "migrate" };
    ctx.require_admin(&format!("os_compute_api:os-migrate-server:{policy}"))?;
    let inst = visible(state, ctx, id).await?;
    check_lock_and_state(ctx, &inst, UserAction::Migrate)?;
    let flavor: Value = serde_json::from_str(&inst.flavor).map_err(ApiError::internal)?;
    start(state, ctx, &inst, Kind::Migrate, flavor, host, false).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Resize,
    Migrate,
}

impl Kind {
    fn action(self) -> UserAction {
        match self {
            Kind::Resize => UserAction::Resize,
            Kind::Migrate => UserAction::Migrate,
        }
    }
    fn migration_type(self) -> &'static str {
        match self {
            Kind::Resize => "resize",
            Kind::Migrate => "migration",
        }
    }
    fn no_host(self) -> &'static str {
        match self {
            Kind::Resize => "No valid host was found. No valid host found for resize",
            Kind::Migrate => "No valid host was found. No valid host found for cold migrate",
        }
    }
}

fn ratios(state: &AppState) -> Ratios {
    let c = &state.cfg.compute;
    Ratios { cpu: c.cpu_allocation_ratio, ram: c.ram_allocation_ratio, disk: c.disk_allocation_ratio }
}

/// Picks the destination, claims the new flavor there, stores the migration and hands the
/// first step to the host(s).
#[allow(clippy::too_many_arguments)]
async fn start(
    state: &AppState,
    ctx: &Ctx,
    inst: &Instance,
    kind: Kind,
    new_flavor: Value,
    target: Option<String>,
    same_host_ok: bool,
) -> ApiResult<()> {
    let source_id = inst.host_id.clone().ok_or_else(|| {
        ApiError::conflict(format!("Instance {} has no compute host; cannot {}.", inst.id, kind.action().name()))
    })?;
    let hosts = state.store.list_hosts().await?;
    let source = hosts
        .iter()
        .find(|h| h.id == source_id)
        .cloned()
        .ok_or_else(|| ApiError::conflict(format!("Compute host of instance {} is not available.", inst.id)))?;
    if !conductor::host_up(state, &source) {
        return Err(ApiError::conflict(format!(
            "Compute host of instance {} is not available; cannot {}.",
            inst.id,
            kind.action().name()
        )));
    }
    if inst.image_id.is_empty() && !same_host_ok {
        // Volumes stay on their host here, so a volume-backed server cannot leave it.
        return Err(bad(format!(
            "{}: the instance's volumes cannot leave compute host {}.",
            kind.no_host(),
            source.name
        )));
    }
    if let Some(t) = &target {
        let Some(h) = hosts.iter().find(|h| &h.name == t) else {
            return Err(bad(format!("Compute host {t} could not be found.")));
        };
        if h.id == source.id {
            return Err(bad(format!("Unable to migrate instance ({}) to current host ({t}).", inst.id)));
        }
    }
    let image = state.store.get_image(&inst.image_id).await.ok();
    // The instance's own request (its hints and server group apply again), with the new flavor.
    let mut request = conductor::request_for_instance(state, inst, &new_flavor, image.as_ref()).await?;
    request.ignore_hosts = hosts
        .iter()
        .filter(|h| {
            (h.id == source.id && !same_host_ok)
                || target.as_ref().is_some_and(|t| &h.name != t)
                || (inst.image_id.is_empty() && h.id != source.id)
        })
        .map(|h| h.name.clone())
        .collect();
    let snapshot: Vec<_> = hosts.iter().map(|h| conductor::host_state(state, h)).collect();
    let mut candidates = scheduler::select(&snapshot, &request, &conductor::settings(state)).map_err(|no| {
        let details = no.rejections.iter().map(|(h, f)| format!("{h}: {f}")).collect::<Vec<_>>().join(", ");
        tracing::info!(instance = %inst.id, %details, "no destination for a {}", kind.migration_type());
        bad(kind.no_host())
    })?;
    // Prefer another host when the same one is allowed but others fit too (as Nova's spread).
    if same_host_ok && candidates.len() > 1 && kind == Kind::Resize {
        candidates.sort_by_key(|c| *c == source.id);
    }
    // The task first: a concurrent action loses here, not after a claim.
    let to = NewState { vm_state: &inst.vm_state, task_state: Some(TaskState::ResizePrep.as_str()), power_state: None };
    if state.store.transition(&inst.id, Expect::Task(None), to).await?.is_none() {
        let fresh = state.store.get_instance(&inst.id).await?;
        return Err(states::refuse(kind.action(), &inst.id, vm_state(&fresh), task_state(&fresh)));
    }
    let mut chosen = None;
    for c in &candidates {
        let Some(dest) = hosts.iter().find(|h| &h.id == c) else { continue };
        let mut m = Migration {
            uuid: new_uuid(),
            instance_uuid: inst.id.clone(),
            project_id: inst.project_id.clone(),
            user_id: ctx.user.id.clone(),
            migration_type: kind.migration_type().into(),
            status: "pre-migrating".into(),
            source_host_id: Some(source.id.clone()),
            source_compute: Some(source.name.clone()),
            dest_host_id: Some(dest.id.clone()),
            dest_compute: Some(dest.name.clone()),
            dest_host: Some(dest.host_ip.clone()),
            old_flavor_id: inst.flavor_id.clone(),
            new_flavor_id: new_flavor["id"].as_str().unwrap_or(&inst.flavor_id).to_string(),
            old_flavor: inst.flavor.clone(),
            new_flavor: new_flavor.to_string(),
            held_host_id: Some(dest.id.clone()),
            held_flavor: Some(new_flavor.to_string()),
            power_on: i64::from(inst.vm_state == "active"),
            prior_vm_state: inst.vm_state.clone(),
            ..Default::default()
        };
        if state.store.create_migration(&mut m, Some(ratios(state))).await? {
            chosen = Some((m, dest.clone()));
            break;
        }
    }
    let Some((m, dest)) = chosen else {
        let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: None };
        state.store.transition(&inst.id, Expect::Any, to).await?;
        return Err(bad(kind.no_host()));
    };
    state.hosts.lock().await.invalidate();
    let name = kind.action().name();
    servers::record_action(state, ctx, &inst.id, name, &ctx.request_id).await?;
    event(state, &inst.id, name, "conductor_migrate_server", None, true).await?;
    event(state, &inst.id, name, "compute_prep_resize", Some(&dest.name), true).await?;
    let fresh = state.store.get_instance(&inst.id).await?;
    if let Err(e) = first_step(state, &fresh, &m, &source).await {
        let message = e.to_string();
        if let Err(r) = roll_back(state, &fresh, &m, &message, &format!("{e:?}")).await {
            tracing::error!(instance = %inst.id, error = %r, "cannot roll a migration back");
        }
        return Err(ApiError::internal(e));
    }
    Ok(())
}

/// Records a finished (`done`) or started event under the newest action `action`.
pub(crate) async fn event(
    state: &AppState,
    instance: &str,
    action: &str,
    name: &str,
    host: Option<&str>,
    done: bool,
) -> Result<(), StoreError> {
    if let Some(a) = state.store.latest_action(instance, action).await? {
        // Open events finish with their action (`finish_named_action`); `done` marks the
        // steps that end as soon as they start (the conductor's, the preparation).
        let _ = done;
        state.store.start_event(&a.id, name, host).await?;
    }
    Ok(())
}

/// The instance's spec for a host, with `flavor` (a snapshot JSON) instead of its own.
async fn spec_with(
    state: &AppState,
    inst: &Instance,
    flavor: &str,
    flavor_id: &str,
) -> Result<meridian_common::agent::BuildSpec, ConductError> {
    let with = Instance { flavor: flavor.to_string(), flavor_id: flavor_id.to_string(), ..inst.clone() };
    conductor::current_spec(state, &with).await
}

/// The first host step: [`Action::ResizeLocal`] on the one host, or [`Action::MigrateOut`] on
/// the source.
async fn first_step(state: &AppState, inst: &Instance, m: &Migration, source: &Host) -> Result<(), ConductError> {
    let action = if m.same_host() {
        let spec = spec_with(state, inst, &m.new_flavor, &m.new_flavor_id).await?;
        Action::ResizeLocal { migration_id: m.uuid.clone(), spec: Box::new(spec), power_on: m.power_on != 0 }
    } else {
        Action::MigrateOut { migration_id: m.uuid.clone() }
    };
    state.store.set_migration_status(m.id, "migrating").await?;
    let to =
        NewState { vm_state: &inst.vm_state, task_state: Some(TaskState::ResizeMigrating.as_str()), power_state: None };
    state.store.transition(&inst.id, Expect::Task(Some(TaskState::ResizePrep.as_str())), to).await?;
    queue(state, &inst.id, source, &action).await?;
    let name = action_name(m);
    event(state, &inst.id, name, "compute_resize_instance", Some(&source.name), false).await?;
    Ok(())
}

/// The instance action a migration belongs to.
fn action_name(m: &Migration) -> &'static str {
    match m.migration_type.as_str() {
        "resize" => "resize",
        "live-migration" => "live-migration",
        "evacuation" => "evacuate",
        _ => "migrate",
    }
}

async fn queue(state: &AppState, instance: &str, host: &Host, action: &Action) -> Result<(), ConductError> {
    let json = serde_json::to_string(action).map_err(StoreError::from)?;
    state.store.enqueue_work(instance, &host.id, &json).await?;
    arm(state, instance).await?;
    state.signals.notify(&host.id);
    Ok(())
}

/// Every migration step runs under `[compute] action_timeout_secs`.
async fn arm(state: &AppState, instance: &str) -> Result<(), StoreError> {
    let secs = i64::try_from(state.cfg.compute.action_timeout_secs).unwrap_or(i64::MAX);
    let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
    state.store.set_instance_deadline(instance, Some(&fmt_time(at))).await
}

/// The finished migration of a resized instance (400 as Nova's `MigrationNotFoundByStatus`).
async fn finished_migration(state: &AppState, inst: &Instance) -> ApiResult<Migration> {
    match state.store.latest_migration(&inst.id).await? {
        Some(m) if m.status == "finished" => Ok(m),
        _ => Err(bad(format!("Instance {} is not in a resized state that can be confirmed or reverted.", inst.id))),
    }
}

/// `confirmResize`: 204.
async fn confirm(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<()> {
    ctx.require_member("os_compute_api:servers:confirm_resize")?;
    let inst = visible(state, ctx, id).await?;
    check_lock_and_state(ctx, &inst, UserAction::ConfirmResize)?;
    let m = finished_migration(state, &inst).await?;
    servers::record_action(state, ctx, &inst.id, UserAction::ConfirmResize.name(), &ctx.request_id).await?;
    start_confirm(state, &inst, &m).await.map_err(ApiError::internal)
}

async fn start_confirm(state: &AppState, inst: &Instance, m: &Migration) -> Result<(), ConductError> {
    state.store.set_migration_status(m.id, "confirming").await?;
    let source = m.source_host_id.clone().unwrap_or_default();
    let cleanup = Action::MigrateCleanup { migration_id: m.uuid.clone(), remove: !m.same_host() };
    match state.store.get_host(&source).await {
        Ok(h) => {
            queue(state, &inst.id, &h, &cleanup).await?;
            event(state, &inst.id, "confirmResize", "compute_confirm_resize", Some(&h.name), false).await?;
        }
        // The source is gone for good: nothing to clean there.
        Err(StoreError::NotFound(_)) => confirmed(state, &inst.id, m).await?,
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The source is clean: the old claim goes, the instance leaves VERIFY_RESIZE.
async fn confirmed(state: &AppState, id: &str, m: &Migration) -> Result<(), ConductError> {
    state.store.end_migration(m.id, "confirmed").await?;
    let inst = state.store.get_instance(id).await?;
    if inst.vm_state == "resized" {
        let vm = if m.power_on != 0 { "active" } else { "stopped" };
        let to = NewState { vm_state: vm, task_state: None, power_state: None };
        state.store.transition(id, Expect::Task(None), to).await?;
    }
    state.store.set_instance_deadline(id, None).await?;
    state.store.finish_named_action(id, "confirmResize", "Success", None, None).await?;
    Ok(())
}

/// `revertResize`: 202.
async fn revert(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<()> {
    ctx.require_member("os_compute_api:servers:revert_resize")?;
    let inst = visible(state, ctx, id).await?;
    check_lock_and_state(ctx, &inst, UserAction::RevertResize)?;
    let m = finished_migration(state, &inst).await?;
    let to =
        NewState { vm_state: &inst.vm_state, task_state: Some(TaskState::ResizeReverting.as_str()), power_state: None };
    if state.store.transition(&inst.id, Expect::Task(None), to).await?.is_none() {
        let fresh = state.store.get_instance(&inst.id).await?;
        return Err(states::refuse(UserAction::RevertResize, &inst.id, vm_state(&fresh), task_state(&fresh)));
    }
    state.store.set_migration_status(m.id, "reverting").await?;
    servers::record_action(state, ctx, &inst.id, UserAction::RevertResize.name(), &ctx.request_id).await?;
    let step = async {
        let dest = state.store.get_host(m.dest_host_id.as_deref().unwrap_or_default()).await?;
        if m.same_host() {
            let spec = spec_with(state, &inst, &m.old_flavor, &m.old_flavor_id).await?;
            let action = Action::ResizeLocalRevert {
                migration_id: m.uuid.clone(),
                spec: Box::new(spec),
                power_on: m.power_on != 0,
            };
            queue(state, &inst.id, &dest, &action).await?;
        } else {
            queue(state, &inst.id, &dest, &Action::MigrateCleanup { migration_id: m.uuid.clone(), remove: true })
                .await?;
        }
        event(state, &inst.id, "revertResize", "compute_revert_resize", Some(&dest.name), false).await?;
        Ok::<(), ConductError>(())
    };
    step.await.map_err(ApiError::internal)
}

/// Applies a host's answer to one of this module's work items.
pub(crate) async fn on_event(
    state: &AppState,
    work: &Work,
    action: &Action,
    event_in: WorkEvent,
) -> Result<(), ConductError> {
    let uuid = match action {
        Action::MigrateOut { migration_id }
        | Action::MigrateIn { migration_id, .. }
        | Action::ResizeLocal { migration_id, .. }
        | Action::ResizeLocalRevert { migration_id, .. }
        | Action::MigrateRevert { migration_id, .. }
        | Action::MigrateCleanup { migration_id, .. } => migration_id.clone(),
        _ => return Err(ConductError::Invalid("not a migration action".into())),
    };
    let m = state.store.get_migration_by_uuid(&uuid).await?;
    let id = work.instance_id.as_str();
    let (power, failure) = match event_in {
        WorkEvent::Progress { task_state } => {
            let inst = state.store.get_instance(id).await?;
            let known = ["resize_migrating", "resize_migrated", "resize_finish"];
            if known.contains(&task_state.as_str())
                && inst.task_state.as_deref().is_some_and(|t| t.starts_with("resize_") && t != "resize_reverting")
            {
                let to = NewState { vm_state: &inst.vm_state, task_state: Some(&task_state), power_state: None };
                state.store.transition(id, Expect::Any, to).await?;
            }
            return Ok(());
        }
        WorkEvent::Done { power_state, .. } => {
            if !state.store.finish_work(&work.id, "done", None).await? {
                return Ok(());
            }
            (power_state, None)
        }
        WorkEvent::Failed { message, details, .. } => {
            if !state.store.finish_work(&work.id, "failed", Some(&message)).await? {
                return Ok(());
            }
            (PowerState::NoState, Some((message, details)))
        }
    };
    let inst = state.store.get_instance(id).await?;
    if inst.deleted != 0 {
        return Ok(());
    }
    let name = action_name(&m);
    // An evacuated instance's copy removed from a host: `evacuate` applies it.
    if matches!(action, Action::MigrateCleanup { .. }) && m.migration_type == "evacuation" {
        return super::evacuate::cleaned(state, work, &m, failure.as_ref().map(|(msg, _)| msg.as_str())).await;
    }
    // A live migration's leftover removed from its source or destination: `live_migration`.
    if matches!(action, Action::MigrateCleanup { .. }) && m.migration_type == "live-migration" {
        return super::live_migration::cleaned(state, work, &m, failure.as_ref().map(|(msg, _)| msg.as_str())).await;
    }
    match (action, failure) {
        // Source sent its disk: the destination receives it.
        (Action::MigrateOut { .. }, None) => {
            if m.status != "migrating" {
                return Ok(()); // ended meanwhile (deadline, delete)
            }
            state.store.set_migration_status(m.id, "post-migrating").await?;
            let to = NewState {
                vm_state: &inst.vm_state,
                task_state: Some(TaskState::ResizeMigrated.as_str()),
                power_state: Some(power.code()),
            };
            state.store.transition(id, Expect::Any, to).await?;
            let dest = state.store.get_host(m.dest_host_id.as_deref().unwrap_or_default()).await?;
            let spec = spec_with(state, &inst, &m.new_flavor, &m.new_flavor_id).await?;
            let action =
                Action::MigrateIn { migration_id: m.uuid.clone(), spec: Box::new(spec), power_on: m.power_on != 0 };
            queue(state, id, &dest, &action).await?;
            event(state, id, name, "compute_finish_resize", Some(&dest.name), false).await?;
        }
        // The guest runs (or is defined) at its destination: VERIFY_RESIZE.
        (Action::MigrateIn { .. } | Action::ResizeLocal { .. }, None) => {
            if !matches!(m.status.as_str(), "migrating" | "post-migrating") {
                return Ok(());
            }
            state.store.finish_migration(&m, "resized", power.code()).await?;
            rebind_ports(state, id, m.dest_compute.as_deref().unwrap_or_default()).await?;
            remove_staged(state, &m).await;
            state.store.finish_named_action(id, name, "Success", None, None).await?;
            if m.same_host() {
                event(state, id, name, "compute_finish_resize", m.dest_compute.as_deref(), true).await?;
            }
        }
        // Confirm: the source is clean.
        (Action::MigrateCleanup { .. }, None) if m.status == "confirming" => confirmed(state, id, &m).await?,
        // Revert of another host's copy: removed; the source starts its guest again.
        (Action::MigrateCleanup { .. }, None) if m.status == "reverting" => {
            let source = state.store.get_host(m.source_host_id.as_deref().unwrap_or_default()).await?;
            let action = Action::MigrateRevert { migration_id: m.uuid.clone(), power_on: m.power_on != 0 };
            queue(state, id, &source, &action).await?;
            event(state, id, "revertResize", "compute_finish_revert_resize", Some(&source.name), false).await?;
        }
        (Action::MigrateCleanup { .. }, None) => {}
        // Revert: the guest is back on the source with its old flavor.
        (Action::MigrateRevert { .. } | Action::ResizeLocalRevert { .. }, None) if m.status == "reverting" => {
            let vm = if m.power_on != 0 { "active" } else { "stopped" };
            state.store.revert_migration(&m, vm, power.code()).await?;
            rebind_ports(state, id, m.source_compute.as_deref().unwrap_or_default()).await?;
            state.store.finish_named_action(id, "revertResize", "Success", None, None).await?;
        }
        // The guest is back on the source after a failed migration.
        (Action::MigrateRevert { .. } | Action::ResizeLocalRevert { .. }, None) => {
            let to = NewState {
                vm_state: &inst.vm_state,
                task_state: inst.task_state.as_deref(),
                power_state: Some(power.code()),
            };
            state.store.transition(id, Expect::Any, to).await?;
        }
        // Not a migration action (refused above).
        (_, None) => {}
        // A step failed on a host.
        (_, Some((message, details))) => {
            tracing::warn!(instance = %id, migration = %m.uuid, %message, "migration step failed");
            match action {
                Action::MigrateOut { .. } | Action::MigrateIn { .. } | Action::ResizeLocal { .. } => {
                    if matches!(m.status.as_str(), "migrating" | "post-migrating" | "pre-migrating") {
                        roll_back(state, &inst, &m, &message, &details).await?;
                    }
                }
                Action::MigrateCleanup { .. } if m.status == "confirming" => {
                    // The source could not be cleaned: the guest runs at its destination all
                    // the same; the leftover stays for an operator (as Nova's).
                    record_fault(state, id, &message, &details).await?;
                    state.store.end_migration(m.id, "error").await?;
                    let vm = if m.power_on != 0 { "active" } else { "stopped" };
                    let to = NewState { vm_state: vm, task_state: None, power_state: None };
                    state.store.transition(id, Expect::Any, to).await?;
                    state
                        .store
                        .finish_named_action(id, "confirmResize", "Error", Some("Error"), Some(&details))
                        .await?;
                }
                _ => {
                    // A revert failed: ERROR with a fault, as Nova leaves it.
                    record_fault(state, id, &message, &details).await?;
                    state.store.set_migration_status(m.id, "error").await?;
                    let to = NewState { vm_state: "error", task_state: None, power_state: None };
                    state.store.transition(id, Expect::Any, to).await?;
                    state.store.set_instance_deadline(id, None).await?;
                    state.store.finish_named_action(id, "revertResize", "Error", Some("Error"), Some(&details)).await?;
                }
            }
        }
    }
    Ok(())
}

/// A migration that did not get to run at its destination: the destination's claim and copy
/// go, the guest is started again on the source as it was, the action and a fault say why.
async fn roll_back(
    state: &AppState,
    inst: &Instance,
    m: &Migration,
    message: &str,
    details: &str,
) -> Result<(), ConductError> {
    state.store.cancel_work(&inst.id, None).await?;
    state.store.end_migration(m.id, "error").await?;
    remove_staged(state, m).await;
    let to = NewState { vm_state: &m.prior_vm_state, task_state: None, power_state: None };
    state.store.transition(&inst.id, Expect::Any, to).await?;
    state.store.set_instance_deadline(&inst.id, None).await?;
    record_fault(state, &inst.id, message, details).await?;
    state.store.finish_named_action(&inst.id, action_name(m), "Error", Some("Error"), Some(details)).await?;
    let source = state.store.get_host(m.source_host_id.as_deref().unwrap_or_default()).await;
    if let Ok(source) = source {
        let back = if m.same_host() {
            let spec = spec_with(state, inst, &m.old_flavor, &m.old_flavor_id).await?;
            Action::ResizeLocalRevert { migration_id: m.uuid.clone(), spec: Box::new(spec), power_on: m.power_on != 0 }
        } else {
            Action::MigrateRevert { migration_id: m.uuid.clone(), power_on: m.power_on != 0 }
        };
        let json = serde_json::to_string(&back).map_err(StoreError::from)?;
        state.store.enqueue_work(&inst.id, &source.id, &json).await?;
        state.signals.notify(&source.id);
    }
    if !m.same_host()
        && let Some(dest) = &m.dest_host_id
    {
        let json = serde_json::to_string(&Action::MigrateCleanup { migration_id: m.uuid.clone(), remove: true })
            .map_err(StoreError::from)?;
        state.store.enqueue_work(&inst.id, dest, &json).await?;
        state.signals.notify(dest);
    }
    Ok(())
}

/// Nova records an instance fault for a failed step.
pub(crate) async fn record_fault(state: &AppState, id: &str, message: &str, details: &str) -> Result<(), ConductError> {
    let fault = json!({"code": 500, "message": message, "details": details, "created": nova_time(&now())});
    state.store.set_instance_fault(id, Some(&fault.to_string())).await?;
    Ok(())
}

/// The instance's ports follow it: bound to `host` (their filters move with the placement).
pub(crate) async fn rebind_ports(state: &AppState, id: &str, host: &str) -> Result<(), ConductError> {
    for p in state.store.ports_by_device(id).await? {
        state.store.bind_port(&p.id, host).await?;
    }
    Ok(())
}

/// A host action of a migration that outlived its deadline (an agent killed mid-way, a
/// host gone): rolled back as a failure, with the guest put back on the source. `true` when it
/// did. Called by the conductor's tick before the generic deadline.
pub(crate) async fn enforce_deadline(
    state: &AppState,
    inst: &Instance,
    now_t: chrono::DateTime<chrono::Utc>,
) -> Result<bool, ConductError> {
    let Some(task) = inst.task_state.as_deref() else { return Ok(false) };
    if !task.starts_with("resize_") || inst.build_deadline.as_deref().and_then(parse_time).is_none_or(|d| d >= now_t) {
        return Ok(false);
    }
    let Some(m) = state.store.latest_migration(&inst.id).await? else { return Ok(false) };
    let message = format!(
        "The compute host did not complete '{}' of instance {} within {} seconds",
        if task == "resize_reverting" { "revertResize" } else { action_name(&m) },
        inst.id,
        state.cfg.compute.action_timeout_secs
    );
    tracing::warn!(instance = %inst.id, migration = %m.uuid, "migration step timed out");
    if task == "resize_reverting" {
        state.store.cancel_work(&inst.id, None).await?;
        record_fault(state, &inst.id, &message, "action_timeout_secs exceeded").await?;
        state.store.set_migration_status(m.id, "error").await?;
        let to = NewState { vm_state: "error", task_state: None, power_state: None };
        state.store.transition(&inst.id, Expect::Any, to).await?;
        state.store.set_instance_deadline(&inst.id, None).await?;
        state.store.finish_named_action(&inst.id, "revertResize", "Error", Some("Error"), Some(&message)).await?;
    } else {
        roll_back(state, inst, &m, &message, "action_timeout_secs exceeded").await?;
    }
    Ok(true)
}

/// Housekeeping from the conductor's tick: auto-confirm after `resize_confirm_window`, and a
/// confirm whose source never answered is finished here (the leftover is the host's to
/// remove when it comes back: its cleanup work stays queued).
pub(crate) async fn tick(state: &AppState) -> Result<(), ConductError> {
    let window = state.cfg.compute.resize_confirm_window;
    if window > 0 {
        let before = fmt_time(chrono::Utc::now() - chrono::Duration::seconds(window as i64));
        for m in state.store.finished_migrations_before(&before).await? {
            let Ok(inst) = state.store.get_instance(&m.instance_uuid).await else { continue };
            if inst.deleted != 0 || inst.vm_state != "resized" || inst.task_state.is_some() {
                continue;
            }
            tracing::info!(instance = %inst.id, migration = %m.uuid, "confirming a resize automatically");
            let action = crate::store::instances::InstanceAction {
                id: new_uuid(),
                instance_id: inst.id.clone(),
                request_id: format!("req-{}", new_uuid()),
                action: "confirmResize".into(),
                project_id: inst.project_id.clone(),
                user_id: inst.user_id.clone(),
                message: None,
                start_time: now(),
                finish_time: None,
                updated_at: now(),
            };
            state.store.start_action(&action).await?;
            start_confirm(state, &inst, &m).await?;
        }
    }
    let now_t = chrono::Utc::now();
    let filter = MigrationFilter { status: Some("confirming".into()), ..Default::default() };
    for m in state.store.list_migrations(&filter).await? {
        let Ok(inst) = state.store.get_instance(&m.instance_uuid).await else { continue };
        if inst.build_deadline.as_deref().and_then(parse_time).is_some_and(|d| d < now_t) {
            tracing::warn!(instance = %inst.id, migration = %m.uuid, "the source did not clean up in time; confirmed here");
            confirmed(state, &inst.id, &m).await?;
        }
    }
    Ok(())
}

/// An instance was deleted: its migrations end (a finished one counts as confirmed), their
/// claims go back, and another host that still has a copy is told to remove it.
pub(crate) async fn instance_gone(state: &AppState, id: &str) -> Result<(), ConductError> {
    let inst = state.store.get_instance(id).await?;
    let filter = MigrationFilter { instance_uuid: Some(id.to_string()), ..Default::default() };
    for m in state.store.list_migrations(&filter).await? {
        let open =
            !matches!(m.status.as_str(), "confirmed" | "reverted" | "error" | "failed" | "completed" | "cancelled");
        if !open && m.held_host_id.is_none() {
            continue;
        }
        let status = if m.status == "finished" || m.status == "confirming" { "confirmed" } else { "error" };
        state.store.end_migration(m.id, status).await?;
        remove_staged(state, &m).await;
        for other in [&m.source_host_id, &m.dest_host_id].into_iter().flatten() {
            if Some(other) != inst.host_id.as_ref() && open {
                let json =
                    serde_json::to_string(&Action::MigrateCleanup { migration_id: m.uuid.clone(), remove: true })
                        .map_err(StoreError::from)?;
                state.store.enqueue_work(id, other, &json).await?;
                state.signals.notify(other);
            }
        }
    }
    Ok(())
}

// ---- the disk relay ----

fn staged_dir(state: &AppState, m: &Migration) -> std::path::PathBuf {
    state.cfg.data_dir.join("migrations").join(&m.uuid)
}

async fn remove_staged(state: &AppState, m: &Migration) {
    match tokio::fs::remove_dir_all(staged_dir(state, m)).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(migration = %m.uuid, error = %e, "cannot remove a staged migration disk"),
    }
}

/// The relay's bound on one disk: the larger flavor's root disk plus qcow2 metadata.
fn max_disk_bytes(m: &Migration) -> u64 {
    let gb = |f: &str| serde_json::from_str::<Value>(f).ok().and_then(|v| v["disk"].as_u64()).unwrap_or(0);
    let root = gb(&m.old_flavor).max(gb(&m.new_flavor)).max(1);
    (root << 30) + (root << 24) + (64 << 20)
}

/// `PUT /agent/v1/migrations/{uuid}/disk`: the source of a migration that is moving its disk
/// sends it (404 for anyone else, as for unknown ids). Streamed to the server's data dir, its
/// length checked against `Content-Length` and the flavor.
pub async fn disk_put(
    State(state): State<AppState>,
    auth: HostAuth,
    Path(uuid): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let m = relay_migration(&state, &uuid).await?;
    if m.source_host_id.as_deref() != Some(auth.host_id.as_str()) || m.status != "migrating" {
        return Err(ApiError::not_found(format!("Migration {uuid} could not be found.")));
    }
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::new(StatusCode::LENGTH_REQUIRED, "A Content-Length is required."))?;
    let limit = max_disk_bytes(&m);
    if declared > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The disk ({declared} bytes) is larger than the flavor allows ({limit} bytes)."),
        ));
    }
    let dir = staged_dir(&state, &m);
    tokio::fs::create_dir_all(&dir).await.map_err(ApiError::internal)?;
    let tmp = dir.join("disk.part");
    let mut file = tokio::fs::File::create(&tmp).await.map_err(ApiError::internal)?;
    let mut stream = body.into_data_stream();
    let mut got = 0u64;
    use futures_util::StreamExt as _;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| bad(format!("The disk upload broke off: {e}")))?;
        got += chunk.len() as u64;
        if got > declared {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(bad("The disk is longer than its Content-Length."));
        }
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await.map_err(ApiError::internal)?;
    }
    if got != declared {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(bad(format!("The disk ended after {got} of {declared} bytes.")));
    }
    file.sync_all().await.map_err(ApiError::internal)?;
    drop(file);
    tokio::fs::rename(&tmp, dir.join("disk")).await.map_err(ApiError::internal)?;
    state.store.set_migration_disk(m.id, i64::try_from(got).unwrap_or(i64::MAX)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /agent/v1/migrations/{uuid}/disk`: the destination of a migration reads the disk the
/// source sent (404 for anyone else).
pub async fn disk_get(State(state): State<AppState>, auth: HostAuth, Path(uuid): Path<String>) -> ApiResult<Response> {
    let m = relay_migration(&state, &uuid).await?;
    if m.dest_host_id.as_deref() != Some(auth.host_id.as_str()) || m.status != "post-migrating" {
        return Err(ApiError::not_found(format!("Migration {uuid} could not be found.")));
    }
    let path = staged_dir(&state, &m).join("disk");
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| ApiError::conflict(format!("Migration {uuid} has no disk staged.")))?;
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)).into_response();
    let h = resp.headers_mut();
    h.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/octet-stream"));
    h.insert(axum::http::header::CONTENT_LENGTH, axum::http::HeaderValue::from(len));
    Ok(resp)
}

async fn relay_migration(state: &AppState, uuid: &str) -> ApiResult<Migration> {
    match state.store.get_migration_by_uuid(uuid).await {
        Ok(m) => Ok(m),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(format!("Migration {uuid} could not be found."))),
        Err(e) => Err(e.into()),
    }
}

// ---- the records' API ----

/// A flavor id as Nova's integer `*_instance_type_id` (our flavor ids are strings: a numeric
/// one is shown as its number, any other as null).
fn type_id(flavor_id: &str) -> Value {
    flavor_id.parse::<i64>().map(Value::from).unwrap_or(Value::Null)
}

const LIVE_IN_PROGRESS: [&str; 4] = ["queued", "preparing", "running", "post-migrating"];

fn migration_json(v: ApiVersion, m: &Migration, base: &str) -> Value {
    let mut o = json!({
        "id": m.id,
        "instance_uuid": m.instance_uuid,
        "status": m.status,
        "source_compute": m.source_compute,
        "source_node": m.source_compute,
        "dest_compute": m.dest_compute,
        "dest_node": m.dest_compute,
        "dest_host": m.dest_host,
        "old_instance_type_id": type_id(&m.old_flavor_id),
        "new_instance_type_id": type_id(&m.new_flavor_id),
        "created_at": m.created_at.trim_end_matches('Z'),
        "updated_at": m.updated_at.trim_end_matches('Z'),
    });
    if v.at_least(23) {
        o["migration_type"] = json!(m.migration_type);
        if m.migration_type == "live-migration" && LIVE_IN_PROGRESS.contains(&m.status.as_str()) {
            let href = format!("{base}/servers/{}/migrations/{}", m.instance_uuid, m.id);
            o["links"] = json!([{"rel": "self", "href": href}, {"rel": "bookmark", "href": href}]);
        }
    }
    if v.at_least(59) {
        o["uuid"] = json!(m.uuid);
    }
    if v.at_least(80) {
        o["user_id"] = json!(m.user_id);
        o["project_id"] = json!(m.project_id);
    }
    o
}

fn time_param(q: &Query, key: &str) -> ApiResult<Option<String>> {
    match q.get(key) {
        None => Ok(None),
        Some(s) => {
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc()))
                .map_err(|_| bad(format!("Invalid input for query parameters {key}. Value: {s}.")))?;
            Ok(Some(fmt_time(t)))
        }
    }
}

/// `GET /os-migrations` (admin).
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> JsonResult {
    ctx.require_admin("os_compute_api:os-migrations:index")?;
    let s = |k: &str| q.get(k).map(str::to_string);
    let mut f = MigrationFilter {
        host: s("host"),
        source_compute: s("source_compute"),
        status: s("status"),
        instance_uuid: s("instance_uuid"),
        migration_type: s("migration_type"),
        ..Default::default()
    };
    if v.at_least(59) {
        f.changes_since = time_param(&q, "changes-since")?;
    }
    if v.at_least(66) {
        f.changes_before = time_param(&q, "changes-before")?;
        if let (Some(a), Some(b)) = (&f.changes_since, &f.changes_before)
            && b < a
        {
            return Err(bad("The value of changes-since must be less than or equal to changes-before."));
        }
    }
    if v.at_least(80) {
        f.user_id = s("user_id");
        f.project_id = s("project_id");
    }
    let mut all = state.store.list_migrations(&f).await?;
    let base = state.url("compute/v2.1");
    let mut links = None;
    if v.at_least(59) {
        if let Some(marker) = q.get("marker") {
            let pos = all
                .iter()
                .position(|m| m.uuid == marker)
                .ok_or_else(|| bad(format!("Marker {marker} could not be found.")))?;
            all.drain(..=pos);
        }
        if let Some(limit) = q.uint("limit")? {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            all.truncate(limit);
            // A full page has a next link (as Nova's: the next page may be empty).
            if all.len() == limit
                && let Some(last) = all.last()
            {
                let href = format!("{base}/os-migrations?limit={limit}&marker={}", last.uuid);
                links = Some(json!([{"rel": "next", "href": href}]));
            }
        }
    }
    let list: Vec<Value> = all.iter().map(|m| migration_json(v, m, &base)).collect();
    let mut out = json!({"migrations": list});
    if let Some(l) = links {
        out["migrations_links"] = l;
    }
    Ok(axum::Json(out))
}

fn server_migration_json(m: &Migration) -> Value {
    json!({
        "id": m.id,
        "uuid": m.uuid,
        "server_uuid": m.instance_uuid,
        "status": m.status,
        "source_compute": m.source_compute,
        "source_node": m.source_compute,
        "dest_compute": m.dest_compute,
        "dest_node": m.dest_compute,
        "dest_host": m.dest_host,
        "memory_total_bytes": m.memory_total,
        "memory_processed_bytes": m.memory_processed,
        "memory_remaining_bytes": m.memory_remaining,
        "disk_total_bytes": m.disk_total,
        "disk_processed_bytes": m.disk_processed,
        "disk_remaining_bytes": m.disk_remaining,
        "created_at": m.created_at.trim_end_matches('Z'),
        "updated_at": m.updated_at.trim_end_matches('Z'),
        "user_id": m.user_id,
        "project_id": m.project_id,
    })
}

fn trim_for(v: ApiVersion, mut o: Value) -> Value {
    if let Some(map) = o.as_object_mut() {
        if !v.at_least(59) {
            map.remove("uuid");
        }
        if !v.at_least(80) {
            map.remove("user_id");
            map.remove("project_id");
        }
    }
    o
}

/// `GET /servers/{id}/migrations` (2.23+, admin): the server's live migrations in progress.
pub async fn server_list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    if !v.at_least(23) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    ctx.require_admin("os_compute_api:servers:migrations:index")?;
    let inst = visible(&state, &ctx, &id).await?;
    let f = MigrationFilter {
        instance_uuid: Some(inst.id.clone()),
        migration_type: Some("live-migration".into()),
        statuses: LIVE_IN_PROGRESS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let list: Vec<Value> =
        state.store.list_migrations(&f).await?.iter().map(|m| trim_for(v, server_migration_json(m))).collect();
    Ok(axum::Json(json!({"migrations": list})))
}

async fn server_migration(state: &AppState, ctx: &Ctx, id: &str, mid: &str) -> ApiResult<(Instance, Migration)> {
    let inst = visible(state, ctx, id).await?;
    let not_found = || ApiError::not_found(format!("Migration {mid} not found for instance {}", inst.id));
    let n: i64 = mid.parse().map_err(|_| not_found())?;
    let m = match state.store.get_migration(n).await {
        Ok(m) if m.instance_uuid == inst.id => m,
        Ok(_) | Err(StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    Ok((inst, m))
}

/// `GET /servers/{id}/migrations/{migration_id}` (2.23+, admin).
pub async fn server_show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path((id, mid)): Path<(String, String)>,
) -> JsonResult {
    if !v.at_least(23) {
        return Err(ApiError::not_found("The resource could not be found."));
    }
    ctx.require_admin("os_compute_api:servers:migrations:show")?;
    let (inst, m) = server_migration(&state, &ctx, &id, &mid).await?;
    if m.migration_type != "live-migration" || !LIVE_IN_PROGRESS.contains(&m.status.as_str()) {
        return Err(ApiError::not_found(format!(
            "In-progress live migration {mid} is not found for server {}.",
            inst.id
        )));
    }
    Ok(axum::Json(json!({"migration": trim_for(v, server_migration_json(&m))})))
}

/// Nova's `InvalidMigrationState` (400 in the server migrations API).
pub(crate) fn invalid_migration_state(m: &Migration, instance: &str, method: &str) -> ApiError {
    bad(format!(
        "Migration {} state of instance {instance} is {}. Cannot {method} while the migration is in this state.",
        m.id, m.status
    ))
}
