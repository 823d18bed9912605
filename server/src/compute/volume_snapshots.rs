//! `createImage` of a volume-backed server (Nova's `snapshot_volume_backed`): every volume of
//! the server gets a forced Cinder snapshot named `snapshot for <image name>`, and the image
//! is a Glance image with no data (`active`, size 0, raw/bare) whose `block_device_mapping`
//! property maps each snapshot as Nova writes it (`bdm_v2`, `root_device_name`). Booting from
//! that image makes new volumes from the snapshots (see `bdm::image_defined`).
//!
//! Nova takes no task state for this and waits for the snapshots inside its unquiesce call;
//! here the request waits for them too, bounded by a deadline. A snapshot that fails or is
//! late ends the request with a fault: the snapshots are deleted and no image is made.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::servers;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::image::Image;
use crate::store::instances::Instance;
use crate::store::snapshots::Snapshot;
use crate::store::volume::Volume;

/// The request waits at most this long for its snapshots (Nova's wait happens inside an RPC
/// call that `rpc_response_timeout`, 60 s by default, bounds); `[compute]
/// action_timeout_secs` shortens it.
const MAX_WAIT_SECS: u64 = 60;

/// How often the snapshots are looked at while waiting (Nova's loop polls every 0.5 s).
const POLL: Duration = Duration::from_millis(250);

/// The device a volume-backed server boots from (Nova's `root_device_name` of a libvirt guest).
pub(crate) const ROOT_DEVICE: &str = "/dev/vda";

/// One volume of the server, as its block device mapping describes it.
struct Mapped {
    volume: Volume,
    boot_index: Option<i64>,
    device_name: String,
    delete_on_termination: bool,
    volume_size: i64,
}

/// The server's volumes: its boot-time mappings, then volumes attached since (Nova keeps a
/// mapping for both).
async fn volumes_of(state: &AppState, inst: &Instance) -> ApiResult<Vec<Mapped>> {
    let bdms = state.store.instance_bdms(&inst.id).await?;
    let devices = super::bdm::devices_after(&bdms, super::bdm::instance_local_devices(state, inst).await?);
    let attachments = state.store.instance_attachments(&inst.id).await?;
    let mut out = Vec::new();
    for (b, dev) in bdms.iter().zip(devices) {
        let Some(vid) = &b.volume_id else { continue };
        let volume = state.store.get_volume(vid).await?;
        let mounted = attachments.iter().find(|a| &a.volume_id == vid).and_then(|a| a.mountpoint.clone());
        out.push(Mapped {
            volume_size: b.volume_size.unwrap_or(volume.size),
            volume,
            boot_index: b.boot_index,
            device_name: mounted.unwrap_or_else(|| format!("/dev/{dev}")),
            delete_on_termination: b.delete_on_termination != 0,
        });
    }
    for a in attachments {
        if out.iter().any(|m| m.volume.id == a.volume_id) {
            continue;
        }
        let volume = state.store.get_volume(&a.volume_id).await?;
        out.push(Mapped {
            volume_size: volume.size,
            volume,
            boot_index: None,
            device_name: a.mountpoint.clone().unwrap_or_default(),
            delete_on_termination: false,
        });
    }
    Ok(out)
}

/// The image the server's properties come from: its image, else its boot volume's image
/// metadata (what Nova keeps as the instance's `image_*` system metadata).
async fn base_image(state: &AppState, inst: &Instance) -> ApiResult<Option<Image>> {
    if !inst.image_id.is_empty() {
        match state.store.get_image(&inst.image_id).await {
            Ok(i) => return Ok(Some(i)),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let bdms = state.store.instance_bdms(&inst.id).await?;
    let Some(root) = bdms.iter().find(|b| b.boot_index == Some(0)).and_then(|b| b.volume_id.clone()) else {
        return Ok(None);
    };
    let Some((_, meta)) = crate::volume::from_image::boot_image(state, &root).await? else { return Ok(None) };
    let props: Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| !crate::volume::from_image::BASE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Ok(Some(Image {
        min_ram: meta.get("min_ram").and_then(|m| m.parse().ok()).unwrap_or(0),
        min_disk: meta.get("min_disk").and_then(|m| m.parse().ok()).unwrap_or(0),
        properties: Value::Object(props).to_string(),
        ..Default::default()
    }))
}

/// One mapping as Nova's `snapshot_from_bdm(...).get_image_mapping()` has it: every field of
/// a `BlockDeviceDict` (unset ones `null`), the snapshot as the source.
fn image_mapping(m: &Mapped, snapshot_id: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("source_type", json!("snapshot")),
        ("destination_type", json!("volume")),
        ("guest_format", Value::Null),
        ("device_type", json!("disk")),
        ("disk_bus", json!("virtio")),
        ("boot_index", json!(m.boot_index)),
        ("device_name", json!(m.device_name)),
        ("delete_on_termination", json!(m.delete_on_termination)),
        ("snapshot_id", json!(snapshot_id)),
        ("volume_id", Value::Null),
        ("volume_size", json!(m.volume_size)),
        ("image_id", Value::Null),
        ("no_device", Value::Null),
        ("tag", Value::Null),
        ("volume_type", Value::Null),
        ("encrypted", Value::Null),
        ("encryption_secret_uuid", Value::Null),
        ("encryption_format", Value::Null),
        ("encryption_options", Value::Null),
    ]
}

/// The `block_device_mapping` property as Nova stores it: Python's `json.dumps` of the list
/// (`", "` and `": "` separators, fields in mapping order).
fn python_json(mappings: &[Vec<(&'static str, Value)>]) -> String {
    let dicts: Vec<String> = mappings
        .iter()
        .map(|fields| {
            let items: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
            format!("{{{}}}", items.join(", "))
        })
        .collect();
    format!("[{}]", dicts.join(", "))
}

/// `createImage` of a volume-backed server; returns the new image's id.
pub(crate) async fn create_image(
    state: &AppState,
    ctx: &Ctx,
    inst: &Instance,
    name: &str,
    metadata: Map<String, Value>,
) -> ApiResult<String> {
    let volumes = volumes_of(state, inst).await?;
    let project_id = ctx.project_id()?.to_string();
    // Nova checks the snapshot quota up front so it does not stop half-way through the list.
    if !volumes.is_empty() {
        let (max, _) = crate::volume::quotas::snapshot_limits(state, &project_id).await?;
        let (used, _) = state.store.snapshot_usage(&project_id).await?;
        let wanted = i64::try_from(volumes.len()).unwrap_or(i64::MAX);
        if max > -1 && used.saturating_add(wanted) > max {
            return Err(ApiError::forbidden("Quota exceeded for resources: snapshots"));
        }
    }
    let image = new_image(state, ctx, inst, name, metadata).await?;
    servers::record_action(state, ctx, &inst.id, "createImage", &ctx.request_id).await?;
    if let Some(a) = state.store.latest_action(&inst.id, "createImage").await? {
        state.store.start_event(&a.id, "api_snapshot_instance", None).await?;
    }
    let (mappings, made) = match snapshot_all(state, ctx, &volumes, name).await {
        Ok(done) => done,
        Err(e) => {
            state.store.finish_named_action(&inst.id, "createImage", "Error", Some("Error"), Some(&e.message)).await?;
            return Err(e);
        }
    };
    let mut img = image;
    let mut props = img.properties_map();
    if !mappings.is_empty() {
        props.insert("block_device_mapping".into(), json!(python_json(&mappings)));
        props.insert("bdm_v2".into(), json!("True"));
    }
    img.properties = Value::Object(props).to_string();
    if let Err(e) = publish(state, &img).await {
        tracing::warn!(instance = %inst.id, image = %img.id, error = %e.message, "the snapshot image could not be made");
        clean_up(state, &made).await;
        state.store.finish_named_action(&inst.id, "createImage", "Error", Some("Error"), Some(&e.message)).await?;
        return Err(e);
    }
    state.store.finish_named_action(&inst.id, "createImage", "Success", None, None).await?;
    Ok(img.id)
}

/// The image's record (`queued`), then its empty data, which makes it `active` with size 0 and
/// the checksums of nothing (Nova's "force activate" upload of `''`).
async fn publish(state: &AppState, img: &Image) -> ApiResult<()> {
    state.store.create_image(img).await?;
    if let Err(e) = crate::image::data::store_data(state, img, Some(0), Body::empty()).await {
        super::server_images::delete_image(state, &img.id).await;
        return Err(e);
    }
    Ok(())
}

/// Nova's `initialize_instance_snapshot_metadata` for a volume-backed server, with the
/// `size`/format Nova forces for an image without data; the mapping is added later.
async fn new_image(
    state: &AppState,
    ctx: &Ctx,
    inst: &Instance,
    name: &str,
    metadata: Map<String, Value>,
) -> ApiResult<Image> {
    let base = base_image(state, inst).await?;
    let props = super::server_images::inherited_properties(ctx, inst, base.as_ref(), &["bdm_v2"]);
    let mut extra = metadata;
    // Always this cloud's root device, whatever the client's metadata said.
    extra.insert("root_device_name".into(), json!(ROOT_DEVICE));
    Ok(super::server_images::queued_image(ctx, inst, name, base.as_ref(), props, extra, "raw"))
}

/// One image mapping per volume, and the snapshots made.
type Made = (Vec<Vec<(&'static str, Value)>>, Vec<Snapshot>);

/// Snapshots every volume (forced: they are in use) and waits for them; returns their image
/// mappings. Any failure deletes the snapshots made so far.
async fn snapshot_all(state: &AppState, ctx: &Ctx, volumes: &[Mapped], image_name: &str) -> ApiResult<Made> {
    let mut made: Vec<Snapshot> = Vec::new();
    for m in volumes {
        let made_one = crate::volume::snapshots::start_create(
            state,
            ctx,
            &m.volume,
            Some(format!("snapshot for {image_name}")),
            m.volume.description.clone(),
            Map::new(),
            true,
        )
        .await;
        match made_one {
            Ok(s) => made.push(s),
            Err(e) => {
                clean_up(state, &made).await;
                return Err(e);
            }
        }
    }
    let wait = state.cfg.compute.action_timeout_secs.min(MAX_WAIT_SECS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    for s in &made {
        loop {
            let now_s = state.store.get_snapshot(&s.id).await?;
            match now_s.status.as_str() {
                "available" => break,
                "creating" if tokio::time::Instant::now() < deadline => tokio::time::sleep(POLL).await,
                "creating" => {
                    clean_up(state, &made).await;
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "Snapshot {} of volume {} did not finish within {wait} seconds; no image was created \
                             and the server's snapshots are deleted.",
                            s.id, s.volume_id
                        ),
                    ));
                }
                other => {
                    clean_up(state, &made).await;
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "Snapshot {} of volume {} failed (status {other}); no image was created and the \
                             server's snapshots are deleted.",
                            s.id, s.volume_id
                        ),
                    ));
                }
            }
        }
    }
    let mappings = volumes.iter().zip(&made).map(|(m, s)| image_mapping(m, &s.id)).collect();
    Ok((mappings, made))
}

/// Deletes the snapshots of a failed createImage. One still being made is deleted once its
/// copy ends (its own deadline ends it at the latest).
async fn clean_up(state: &AppState, made: &[Snapshot]) {
    for s in made {
        match state.store.get_snapshot(&s.id).await {
            Ok(now_s) if now_s.status == "creating" => {
                let (state, id) = (state.clone(), s.id.clone());
                tokio::spawn(async move { delete_when_made(&state, &id).await });
            }
            Ok(now_s) => delete_snapshot(state, &now_s).await,
            Err(StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!(snapshot = %s.id, error = %e, "a failed createImage's snapshot is kept"),
        }
    }
}

async fn delete_when_made(state: &AppState, id: &str) {
    loop {
        match state.store.get_snapshot(id).await {
            Ok(s) if s.status == "creating" => tokio::time::sleep(POLL).await,
            Ok(s) => return delete_snapshot(state, &s).await,
            Err(StoreError::NotFound(_)) => return,
            Err(e) => {
                tracing::warn!(snapshot = %id, error = %e, "a failed createImage's snapshot is kept");
                return;
            }
        }
    }
}

async fn delete_snapshot(state: &AppState, s: &Snapshot) {
    if let Err(e) = crate::volume::snapshots::start_delete(state, s, false).await {
        tracing::warn!(snapshot = %s.id, error = %e.message, "a failed createImage's snapshot is kept");
    }
}
