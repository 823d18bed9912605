//! Where volumes live and how their work reaches agents: placement on a host, the work items
//! (see `common/src/agent.rs` for the keying), the events agents report, deadlines, and the
//! compute side's attach/detach.
//!
//! Status machine (Cinder's names; every change stored with its transition):
//!
//! | from | event | to |
//! | --- | --- | --- |
//! | (new) | placed on a host | creating (no host: error) |
//! | creating | agent made the file / failed / deadline | available / error / error |
//! | available | os-extend | extending → available (agent done) / error_extending (failed, deadline) |
//! | in-use (3.42) | os-extend | extending → in-use (agent done, the guest told) / error_extending |
//! | available | POST /attachments (3.27) | reserved → attaching → in-use (no agent; see `attachments`) |
//! | available | Nova attach | attaching → in-use (agent done) / available (failed) / error_attaching (deadline) |
//! | available | os-reserve, os-attach | reserved → in-use (bookkeeping only, no agent) |
//! | in-use | Nova detach | detaching → available (agent done) / in-use (failed) / error_detaching (deadline) |
//! | available, error… | delete | deleting → (row gone) / error_deleting (failed, deadline) |
//! | available (3.40) | revert to the latest snapshot | reverting → available (agent done) / error (failed, deadline) |
//! | available (in-use with force) | os-volume_upload_image | uploading → the status before (done, failed, deadline; the image is removed unless done) |
//!
//! Snapshots (`snapshots.rs`; their work is keyed by the volume, so it runs in order with the
//! volume's own):
//!
//! | from | event | to |
//! | --- | --- | --- |
//! | (new) | create (volume available, or in-use with force) | creating |
//! | creating | agent copied / failed / deadline | available / error / error |
//! | available | revert of its volume (3.40) | restoring → available (done, failed or the volume's deadline) |
//! | available, error | delete (admin force-delete: any status) | deleting → (row gone) / error_deleting (failed, deadline) |
//!
//! A deadline never moves a volume back to a happy state: the agent may still be acting on
//! it, so it goes to the matching error state, from which delete (or a detach of an
//! `error_attaching`/`error_detaching` volume, which the agent carries out idempotently) recovers.

use meridian_common::agent::{Action, VolumeSource, VolumeSpec, WorkEvent};

use crate::compute::conductor;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::hosts::Work;
use crate::store::instances::Instance;
use crate::store::volume::{Attachment, Volume, new_attachment};
use crate::store::{StoreError, StoreResult, fmt_time, now};

/// The zone volumes are in when the hosts name none (Cinder's `storage_availability_zone`).
pub const DEFAULT_ZONE: &str = "nova";

/// How long each transitional status may last.
pub const CREATE_DEADLINE: i64 = 300;
pub const EXTEND_DEADLINE: i64 = 300;
pub const DELETE_DEADLINE: i64 = 300;
pub const ATTACH_DEADLINE: i64 = 180;
pub const DETACH_DEADLINE: i64 = 180;
pub const SNAPSHOT_DEADLINE: i64 = 600;
/// A revert copies a whole snapshot, as a snapshot create does.
pub const REVERT_DEADLINE: i64 = 600;
/// A debug build streams a sparse GiB in seconds; a large full volume over a slow link takes
/// long, and the volume is only read meanwhile.
pub const UPLOAD_DEADLINE: i64 = 3600;

pub fn deadline(secs: i64) -> String {
    fmt_time(chrono::Utc::now() + chrono::Duration::seconds(secs))
}

/// The availability zones of enabled hosts, sorted; the default zone when there are none.
pub async fn zones(state: &AppState) -> ApiResult<Vec<String>> {
    let mut zones: Vec<String> = state
        .store
        .list_hosts()
        .await?
        .into_iter()
        .filter(|h| h.enabled != 0)
        .map(|h| if h.availability_zone.is_empty() { DEFAULT_ZONE.to_string() } else { h.availability_zone })
        .collect();
    zones.sort();
    zones.dedup();
    if zones.is_empty() {
        zones.push(DEFAULT_ZONE.into());
    }
    Ok(zones)
}

/// The host for a new volume: up, enabled, in the zone, with room for it (its disk, under the
/// disk allocation ratio, less instances' claims and volumes already placed), the one with the
/// most room left. `None`: no host has room.
pub async fn place(state: &AppState, size_gb: i64, zone: &str) -> ApiResult<Option<String>> {
    let used = state.store.volume_gb_by_host().await?;
    let ratio = state.cfg.compute.disk_allocation_ratio;
    let best = state
        .store
        .list_hosts()
        .await?
        .into_iter()
        .filter(|h| h.enabled != 0 && conductor::host_up(state, h))
        .filter(|h| h.availability_zone == zone || (h.availability_zone.is_empty() && zone == DEFAULT_ZONE))
        .map(|h| {
            let free = (h.disk_gb as f64 * ratio) as i64 - h.disk_gb_used - used.get(&h.id).copied().unwrap_or(0);
            (free, h.id)
        })
        .filter(|(free, _)| *free >= size_gb)
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
    Ok(best.map(|(_, id)| id))
}

/// Volume-only work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Create,
    Extend,
    Delete,
}

pub(crate) fn spec(v: &Volume) -> VolumeSpec {
    VolumeSpec { id: v.id.clone(), size_gb: u64::try_from(v.size).unwrap_or(0), readonly: v.readonly != 0 }
}

pub fn action_json(v: &Volume, kind: Kind) -> ApiResult<String> {
    let volume = spec(v);
    let action = match kind {
        Kind::Create => Action::VolumeCreate { volume, source: None },
        Kind::Extend => Action::VolumeExtend { volume, attached: None },
        Kind::Delete => Action::VolumeDelete { volume },
    };
    serde_json::to_string(&action).map_err(ApiError::internal)
}

/// Stores a new volume's create (with where its bytes come from) and wakes the host.
pub async fn enqueue_create(state: &AppState, v: &Volume, host: &str, source: Option<VolumeSource>) -> ApiResult<()> {
    let action = Action::VolumeCreate { volume: spec(v), source };
    let action = serde_json::to_string(&action).map_err(ApiError::internal)?;
    state.store.enqueue_work(&v.id, host, &action).await?;
    state.signals.notify(host);
    Ok(())
}

/// Stores a volume's work for its host and wakes the host's long poll.
pub async fn enqueue(state: &AppState, v: &Volume, host: &str, kind: Kind) -> ApiResult<()> {
    state.store.enqueue_work(&v.id, host, &action_json(v, kind)?).await?;
    state.signals.notify(host);
    Ok(())
}

/// Applies an agent's event for volume work. Progress events change nothing.
pub async fn on_event(state: &AppState, work: &Work, action: &Action, event: WorkEvent) -> StoreResult<()> {
    let s = &state.store;
    let (ok, message) = match &event {
        WorkEvent::Progress { .. } => return Ok(()),
        WorkEvent::Done { .. } => (true, None),
        WorkEvent::Failed { message, .. } => (false, Some(message.as_str())),
    };
    let outcome = if ok { "done" } else { "failed" };
    match action {
        Action::VolumeCreate { volume, .. } => {
            let to = if ok { "available" } else { "error" };
            s.finish_volume_work(&volume.id, &work.id, outcome, message, &["creating"], to).await?;
        }
        Action::SnapshotCreate { snapshot_id, .. } => {
            let (to, progress) = if ok { ("available", Some("100%")) } else { ("error", None) };
            s.finish_snapshot_work(snapshot_id, &work.id, outcome, message, &["creating"], to, progress).await?;
        }
        Action::SnapshotDelete { snapshot_id, .. } if ok => {
            s.snapshot_deleted(snapshot_id, &work.id).await?;
        }
        Action::SnapshotDelete { snapshot_id, .. } => {
            s.finish_snapshot_work(snapshot_id, &work.id, outcome, message, &["deleting"], "error_deleting", None)
                .await?;
        }
        Action::VolumeRevert { volume, .. } => {
            // Cinder's manager: the volume `error` on failure, the snapshot `available` either way.
            let to = if ok { "available" } else { "error" };
            s.finish_revert(&volume.id, Some((&work.id, outcome, message)), to).await?;
        }
        Action::VolumeUploadImage { volume, image_id, .. } => {
            let back = status_before_upload(s, &volume.id).await?;
            if s.finish_volume_work(&volume.id, &work.id, outcome, message, &["uploading"], back).await? && !ok {
                tracing::error!(volume = %volume.id, image = %image_id, error = ?message, "upload to image failed; the image is removed");
                remove_image(state, image_id).await;
            }
        }
        Action::VolumeExtend { volume, attached } => {
            // Back to in-use while anything holds an attachment (an extend of an attached
            // volume, 3.42), else available.
            let to = if s.volume_attachments(&volume.id).await?.is_empty() { "available" } else { "in-use" };
            let size = i64::try_from(volume.size_gb).unwrap_or(i64::MAX);
            let finished = if ok {
                s.finish_extend_to(&volume.id, &work.id, size, to).await?
            } else {
                s.finish_volume_work(&volume.id, &work.id, outcome, message, &["extending"], "error_extending").await?
            };
            if finished && let Some(att) = attached {
                let (result, msg) = if ok { ("Success", None) } else { ("Error", message) };
                if let Err(e) = s.finish_named_action(&att.instance_id, "extend_volume", result, msg, None).await {
                    tracing::debug!(instance = %att.instance_id, error = %e, "no extend_volume action to finish");
                }
            }
        }
        // The old copy of a volume that moved hosts: only the work item ends.
        Action::VolumeDelete { volume } if !deleting(s, &volume.id, &work.host_id).await? => {
            if !ok {
                tracing::warn!(volume = %volume.id, host = %work.host_id, error = ?message, "old copy of a moved volume not removed");
            }
            s.finish_work(&work.id, outcome, message).await?;
        }
        Action::VolumeDelete { volume } if ok => {
            s.volume_deleted(&volume.id, &work.id).await?;
        }
        Action::VolumeDelete { volume } => {
            s.finish_volume_work(&volume.id, &work.id, outcome, message, &["deleting"], "error_deleting").await?;
        }
        Action::VolumeAttach { volume, attachment_id, .. } => {
            let (att, to) = if ok { (Some("attached"), "in-use") } else { (None, "available") };
            let done = s
                .finish_attachment_work(&work.id, outcome, message, attachment_id, att, &volume.id, &["attaching"], to)
                .await?;
            if done {
                record_action(state, &work.instance_id, "attach_volume", message).await;
            }
        }
        Action::VolumeDetach { volume, attachment_id, .. } => {
            let (att, to) = if ok { (None, "available") } else { (Some("attached"), "in-use") };
            let from: &[&str] = &["detaching", "error_detaching", "error_attaching"];
            let done =
                s.finish_attachment_work(&work.id, outcome, message, attachment_id, att, &volume.id, from, to).await?;
            if done {
                if ok {
                    // Nova destroys the mapping with the detach: an unshelve or rebuild must not
                    // plug the volume in again.
                    s.delete_bdm_of_volume(&work.instance_id, &volume.id).await?;
                }
                record_action(state, &work.instance_id, "detach_volume", message).await;
            }
        }
        _ => return Err(StoreError::Other(anyhow::anyhow!("not volume work"))),
    }
    Ok(())
}

/// Where an upload returns its volume: `in-use` while attached, else `available`.
async fn status_before_upload(s: &crate::store::Store, id: &str) -> StoreResult<&'static str> {
    Ok(match s.get_volume(id).await {
        Ok(v) if v.attach_status == "attached" => "in-use",
        _ => "available",
    })
}

/// Removes an upload's image that will never get its bytes (row and any data), unless it did
/// become active.
pub(crate) async fn remove_image(state: &AppState, image_id: &str) {
    match state.store.get_image(image_id).await {
        Ok(img) if img.status == "active" => return,
        Ok(_) => {}
        Err(_) => return,
    }
    if let Err(e) = state.store.delete_image(image_id).await {
        tracing::warn!(image = %image_id, error = %e, "could not remove the image of a failed upload");
    }
    crate::image::data::remove_data(state, image_id).await;
}

/// Whether the volume is being deleted from this host (rather than its old copy removed).
async fn deleting(s: &crate::store::Store, id: &str, host: &str) -> StoreResult<bool> {
    match s.get_volume(id).await {
        Ok(v) => Ok(v.host_id.as_deref() == Some(host)),
        // Already gone: a repeated event, harmless either way.
        Err(StoreError::NotFound(_)) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Ends the instance action of an attach or detach (best effort: the volume's state is what
/// matters, and an action may be missing for work queued before this existed).
async fn record_action(state: &AppState, instance_id: &str, name: &str, failure: Option<&str>) {
    let (result, message) = match failure {
        None => ("Success", None),
        Some(m) => ("Error", Some(m)),
    };
    if let Err(e) = state.store.finish_named_action(instance_id, name, result, message, None).await {
        tracing::debug!(instance = %instance_id, error = %e, "no instance action to finish");
    }
}

/// Moves every volume whose transitional status outlived its deadline to the matching error
/// state (see the module table). Called from the conductor's tick.
pub async fn tick(state: &AppState) -> StoreResult<()> {
    for v in state.store.volumes_past_deadline(&now()).await? {
        let to = match v.status.as_str() {
            "creating" => "error",
            "extending" => "error_extending",
            "deleting" => "error_deleting",
            "attaching" => "error_attaching",
            "detaching" => "error_detaching",
            // The volume's bytes may be half written (as a failure: error); the snapshot is
            // whole, so it is available again.
            "reverting" => {
                if state.store.finish_revert(&v.id, None, "error").await? {
                    tracing::warn!(volume = %v.id, "revert passed its deadline");
                }
                continue;
            }
            // An upload only reads the volume: it goes back to where it was, and the image
            // (never to get its bytes: the work item ends here) is removed.
            "uploading" => {
                let back = if v.attach_status == "attached" { "in-use" } else { "available" };
                if state.store.set_volume_status(&v.id, &["uploading"], back, None).await? {
                    tracing::error!(volume = %v.id, "upload to image passed its deadline; the image is removed");
                    for (work_id, action) in state.store.open_volume_work(&v.id).await? {
                        if let Ok(Action::VolumeUploadImage { image_id, .. }) = serde_json::from_str::<Action>(&action)
                        {
                            state.store.finish_work(&work_id, "failed", Some("deadline passed")).await?;
                            remove_image(state, &image_id).await;
                        }
                    }
                }
                continue;
            }
            _ => continue,
        };
        if state.store.set_volume_status(&v.id, &[v.status.as_str()], to, None).await? {
            tracing::warn!(volume = %v.id, from = %v.status, to, "volume work passed its deadline");
        }
    }
    for snap in state.store.snapshots_past_deadline(&now()).await? {
        let to = match snap.status.as_str() {
            "creating" => "error",
            "deleting" => "error_deleting",
            _ => continue,
        };
        if state.store.set_snapshot_status(&snap.id, &[snap.status.as_str()], to, None, None).await? {
            tracing::warn!(snapshot = %snap.id, from = %snap.status, to, "snapshot work passed its deadline");
        }
    }
    Ok(())
}

// ---- the compute side ----

/// The device name for a new attachment: the first `vdX` after the root disk, the config
/// drive and the instance's other attachments, or the one asked for when free.
fn pick_device(mut used: Vec<String>, taken: &[Attachment], asked: Option<&str>) -> ApiResult<String> {
    // `used`: the root disk, the ephemeral and swap disks and the config drive come first.
    used.extend(
        taken.iter().filter_map(|a| a.mountpoint.as_deref()).map(|m| m.trim_start_matches("/dev/").to_string()),
    );
    if let Some(want) = asked {
        let name = want.trim_start_matches("/dev/");
        let valid = name.len() >= 3
            && ["vd", "sd", "xvd", "hd"].iter().any(|p| name.starts_with(p))
            && name.bytes().skip(2).all(|c| c.is_ascii_lowercase());
        if !valid {
            return Err(ApiError::bad_request(format!("The supplied device path ({want}) is invalid.")));
        }
        // Nova lets the hypervisor choose and ignores a taken name; so do we, for a free one.
        let name = format!("vd{}", &name[name.len() - 1..]);
        if !used.contains(&name) {
            return Ok(name);
        }
    }
    (b'b'..=b'z')
        .map(|c| format!("vd{}", c as char))
        .find(|d| !used.contains(d))
        .ok_or_else(|| ApiError::bad_request("No free disk device names for prefix 'vd'"))
}

/// Nova's attach: checks, `available` → `attaching` with the attachment and the agent's work in
/// one transaction. Returns the attachment (with its device).
pub async fn attach(state: &AppState, inst: &Instance, v: &Volume, device: Option<&str>) -> ApiResult<Attachment> {
    let host = inst.host_id.clone().ok_or_else(|| {
        ApiError::conflict(format!(
            "Cannot 'attach_volume' instance {} while it is in vm_state {}",
            inst.id, inst.vm_state
        ))
    })?;
    if v.status != "available" {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: volume {} status must be 'available'. Currently in '{}'",
            v.id, v.status
        )));
    }
    // A volume elsewhere can follow the instance only while it is blank (never attached, so
    // all zeros): it is then made anew on the instance's host and the old copy removed.
    // Anything that may hold data stays where its bytes are.
    let moving = match v.host_id.as_deref() {
        Some(h) if h == host => None,
        Some(h) if never_attached(state, &v.id).await? => Some(h.to_string()),
        _ => {
            return Err(ApiError::conflict(format!(
                "Volume {} is stored on another compute host than instance {}; a volume that has held data can \
                 only be attached to instances on its own host.",
                v.id, inst.id
            )));
        }
    };
    let taken = state.store.instance_attachments(&inst.id).await?;
    let local = crate::compute::bdm::instance_local_devices(state, inst).await?;
    let dev = pick_device(local, &taken, device)?;
    let mut a = new_attachment(&v.id, Some(&inst.id), Some(&host), "attaching");
    a.mountpoint = Some(format!("/dev/{dev}"));
    a.by_compute = 1;
    let action =
        Action::VolumeAttach { volume: spec(v), attachment_id: a.id.clone(), device: dev, create: moving.is_some() };
    let action = serde_json::to_string(&action).map_err(ApiError::internal)?;
    let d = deadline(ATTACH_DEADLINE);
    let reserved = match &moving {
        None => state.store.reserve_volume(&a, "attaching", Some(&d), Some((&host, &action))).await?,
        Some(old) => {
            let delete =
                serde_json::to_string(&Action::VolumeDelete { volume: spec(v) }).map_err(ApiError::internal)?;
            let moved = state.store.relocate_and_reserve(&a, &d, old, &host, &delete, &action).await?;
            state.signals.notify(old);
            moved
        }
    };
    if !reserved {
        return Err(ApiError::bad_request(format!("Invalid volume: volume {} status must be 'available'.", v.id)));
    }
    state.signals.notify(&host);
    Ok(a)
}

/// Nova's attach to a shelved-offloaded server: no host to plug the volume into, so the
/// attachment is made with no host and no device and completed at once (`reserved` →
/// `in-use`, as Cinder's `attachment_complete` without a connector); the unshelve plugs it
/// into the new domain ([`crate::compute::bdm::attached_devices`]). The volume's bytes stay on
/// their host, so the unshelve is scheduled there; a volume on another host than the server's
/// other volumes could never be plugged in with them and is refused.
pub async fn attach_offloaded(state: &AppState, inst: &Instance, v: &Volume) -> ApiResult<Attachment> {
    if v.status != "available" {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: volume {} status must be 'available'. Currently in '{}'",
            v.id, v.status
        )));
    }
    let home = match crate::compute::bdm::required_host(state, &inst.id).await {
        Ok(h) => h,
        Err(crate::compute::bdm::LocalityError::Store(e)) => return Err(e.into()),
        Err(crate::compute::bdm::LocalityError::Split(m)) => return Err(ApiError::conflict(m)),
    };
    if let (Some(home), Some(h)) = (&home, &v.host_id)
        && home != h
    {
        return Err(ApiError::conflict(format!(
            "Volume {} is stored on another compute host than the other volumes of instance {}; an instance can \
             only use volumes of one host.",
            v.id, inst.id
        )));
    }
    let mut a = new_attachment(&v.id, Some(&inst.id), None, "reserved");
    a.by_compute = 1;
    if !state.store.reserve_volume(&a, "reserved", None, None).await? {
        return Err(ApiError::bad_request(format!("Invalid volume: volume {} status must be 'available'.", v.id)));
    }
    if !state.store.move_attachment(&a.id, Some("attached"), None, &v.id, &["reserved"], "in-use", None, None).await? {
        return Err(ApiError::conflict(format!("Volume {} changed while it was being attached.", v.id)));
    }
    a.status = "attached".into();
    Ok(a)
}

/// Nova's detach from a shelved-offloaded server: the attachment goes at once and the volume
/// is available again (deleted when its mapping says `delete_on_termination`).
pub async fn detach_offloaded(state: &AppState, inst: &Instance, a: &Attachment) -> ApiResult<()> {
    let v = state.store.get_volume(&a.volume_id).await?;
    let from = ["in-use", "reserved", "attaching", "error_attaching", "error_detaching"];
    if !state.store.move_attachment(&a.id, None, None, &v.id, &from, "available", None, None).await? {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be \
             'attached' to detach. (volume {} is {})",
            v.id, v.status
        )));
    }
    let doomed = state
        .store
        .instance_bdms(&inst.id)
        .await?
        .iter()
        .any(|b| b.volume_id.as_deref() == Some(v.id.as_str()) && b.delete_on_termination != 0);
    state.store.delete_bdm_of_volume(&inst.id, &v.id).await?;
    if doomed {
        let v = state.store.get_volume(&v.id).await?;
        if let Err(e) = crate::volume::start_delete(state, &v).await {
            tracing::warn!(volume = %v.id, error = %e.message, "delete_on_termination on detach: volume kept");
        }
    }
    Ok(())
}

/// Whether a volume has never been attached (nor reserved for it): its bytes are all zeros.
async fn never_attached(state: &AppState, id: &str) -> StoreResult<bool> {
    let history = state.store.volume_transitions(id).await?;
    Ok(!history.iter().any(|s| matches!(s.as_str(), "attaching" | "reserved" | "in-use" | "detaching")))
}

/// Nova's detach: `in-use` (or a stuck `error_attaching`/`error_detaching`) → `detaching` and
/// the agent's work, in one transaction.
pub async fn detach(state: &AppState, inst: &Instance, a: &Attachment) -> ApiResult<()> {
    let v = state.store.get_volume(&a.volume_id).await?;
    let host =
        inst.host_id.clone().or(a.host_id.clone()).ok_or_else(|| ApiError::conflict("The instance has no host."))?;
    let dev = a.mountpoint.as_deref().unwrap_or("").trim_start_matches("/dev/").to_string();
    let action = Action::VolumeDetach { volume: spec(&v), attachment_id: a.id.clone(), device: dev };
    let action = serde_json::to_string(&action).map_err(ApiError::internal)?;
    let d = deadline(DETACH_DEADLINE);
    let from = ["in-use", "error_attaching", "error_detaching"];
    let work = Some((inst.id.as_str(), host.as_str(), action.as_str()));
    if !state.store.move_attachment(&a.id, Some("detaching"), None, &v.id, &from, "detaching", Some(&d), work).await? {
        return Err(ApiError::bad_request(format!(
            "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be \
             'attached' to detach. (volume {} is {})",
            v.id, v.status
        )));
    }
    state.signals.notify(&host);
    Ok(())
}

/// An instance is gone (its domain destroyed and undefined): its volumes are released, and
/// outlive it. Called when a delete completes.
pub async fn instance_gone(state: &AppState, instance_id: &str) -> StoreResult<()> {
    for a in state.store.instance_attachments(instance_id).await? {
        let from = ["in-use", "attaching", "detaching", "reserved", "error_attaching", "error_detaching"];
        if !state.store.move_attachment(&a.id, None, None, &a.volume_id, &from, "available", None, None).await? {
            // An extend of the attached volume in flight or failed (3.42): the attachment goes
            // with its server, the volume keeps its extend status (its size is the agent's word).
            // An extend in flight keeps its deadline.
            let v = state.store.get_volume(&a.volume_id).await?;
            if matches!(v.status.as_str(), "extending" | "error_extending") {
                let (s, d) = (v.status.as_str(), v.deadline.as_deref());
                state.store.move_attachment(&a.id, None, None, &a.volume_id, &[s], s, d, None).await?;
            }
        }
    }
    // Then those of its block device mappings marked delete_on_termination go.
    crate::compute::bdm::instance_gone(state, instance_id)
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!(e.message)))?;
    Ok(())
}
