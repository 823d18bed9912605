//! Volumes made from images (Cinder's `imageRef` on create) and their image metadata (Cinder's
//! `volume_glance_metadata`, the `os-vol-image-meta` extension): the `volume_image_metadata`
//! key of volume bodies and the `os-set_image_metadata`, `os-unset_image_metadata` and
//! `os-show_image_metadata` actions.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_common::agent::ImageSpec;
use serde_json::{Map, Value, json};

use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::image::Image;
use crate::store::volume::Volume;

const GIB: i64 = 1 << 30;

/// The keys of a volume's image metadata that describe the image itself; the rest are its
/// properties.
pub const BASE_KEYS: [&str; 8] =
    ["image_id", "image_name", "checksum", "container_format", "disk_format", "min_disk", "min_ram", "size"];

/// An image a new volume is made from, checked.
#[derive(Debug, Clone)]
pub struct Source {
    pub image: Image,
    /// The size the volume gets when the request names none (GiB).
    pub default_size: i64,
}

/// The image of `image_ref` (an id or a URL ending in one) as the caller may see it: Cinder's
/// 400 "Invalid image identifier…" for anything else.
pub async fn lookup(state: &AppState, ctx: &Ctx, image_ref: &str) -> ApiResult<Source> {
    let invalid = || ApiError::bad_request("Invalid image identifier or unable to access requested image.");
    let id = image_ref.rsplit('/').next().unwrap_or(image_ref);
    let image = match state.store.get_image(id).await {
        Ok(i) => i,
        Err(StoreError::NotFound(_)) => return Err(invalid()),
        Err(e) => return Err(e.into()),
    };
    if !state.store.image_visible_to(&image, ctx.project_id().ok(), ctx.is_admin()).await? {
        return Err(invalid());
    }
    let size_gb = size_gb(&image);
    Ok(Source { default_size: size_gb.max(image.min_disk).max(1), image })
}

/// The image's size in whole GiB, rounded up.
fn size_gb(image: &Image) -> i64 {
    (image.size.unwrap_or(0) + GIB - 1) / GIB
}

/// Cinder's `check_image_metadata`: active, not larger than the volume, its min_disk met.
pub fn check(image: &Image, volume_size: i64) -> ApiResult<()> {
    if image.status != "active" {
        return Err(ApiError::bad_request(format!("Invalid input received: Image {} is not active.", image.id)));
    }
    let image_gb = size_gb(image);
    if image_gb > volume_size {
        return Err(ApiError::bad_request(format!(
            "Invalid input received: Size of specified image {image_gb}GB is larger than volume size {volume_size}GB."
        )));
    }
    if volume_size < image.min_disk {
        return Err(ApiError::bad_request(format!(
            "Invalid input received: Volume size {volume_size}GB cannot be smaller than the image minDisk size {}GB.",
            image.min_disk
        )));
    }
    Ok(())
}

/// What the volume keeps of its image (Cinder's glance metadata): every value a string.
pub fn image_metadata(image: &Image) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v));
        }
    };
    put("image_id", Some(image.id.clone()));
    put("image_name", image.name.clone());
    put("checksum", image.checksum.clone());
    put("container_format", image.container_format.clone());
    put("disk_format", image.disk_format.clone());
    put("min_disk", Some(image.min_disk.to_string()));
    put("min_ram", Some(image.min_ram.to_string()));
    put("size", image.size.map(|s| s.to_string()));
    for (k, v) in image.properties_map() {
        let v = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        m.insert(k, Value::String(v));
    }
    m
}

/// The agent's view of the image (as a build's).
pub fn image_spec(image: &Image) -> ImageSpec {
    ImageSpec {
        id: image.id.clone(),
        size: image.size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        checksum: image.checksum.clone().unwrap_or_default(),
        disk_format: image.disk_format.clone().unwrap_or_else(|| "raw".into()),
        properties: crate::compute::conductor::properties_of(image),
    }
}

/// Records the image metadata of a volume just made from `image`.
pub async fn record(state: &AppState, volume_id: &str, image: &Image) -> ApiResult<()> {
    let m = Value::Object(image_metadata(image)).to_string();
    state.store.set_volume_image_metadata(volume_id, &m).await?;
    Ok(())
}

/// Adds `volume_image_metadata` to the volume bodies that have some (Cinder shows the key only
/// then), reading all of them at once.
pub async fn decorate(state: &AppState, bodies: &mut [Value]) -> ApiResult<()> {
    let ids: Vec<String> = bodies.iter().filter_map(|b| b["id"].as_str().map(str::to_string)).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let metas = state.store.image_metadata_of_volumes(&refs).await?;
    for b in bodies.iter_mut() {
        let Some(meta) = b["id"].as_str().and_then(|id| metas.get(id)) else { continue };
        let meta: Value = serde_json::from_str(meta).unwrap_or_else(|_| json!({}));
        if meta.as_object().is_some_and(|m| !m.is_empty())
            && let Some(obj) = b.as_object_mut()
        {
            obj.insert("volume_image_metadata".into(), meta);
        }
    }
    Ok(())
}

async fn current(state: &AppState, v: &Volume) -> ApiResult<Map<String, Value>> {
    Ok(state.store.volume_image_metadata(&v.id).await?.and_then(|m| serde_json::from_str(&m).ok()).unwrap_or_default())
}

/// The image metadata actions; `None` when `name` is none of them.
pub async fn action(state: &AppState, ctx: &Ctx, v: &Volume, name: &str, args: &Value) -> Option<ApiResult<Response>> {
    let run = async {
        match name {
            "os-show_image_metadata" => {
                ctx.require_reader("volume_extension:volume_image_metadata:show")?;
                let m = current(state, v).await?;
                Ok((StatusCode::OK, axum::Json(json!({"metadata": m}))).into_response())
            }
            "os-set_image_metadata" => {
                ctx.require_member("volume_extension:volume_image_metadata:set")?;
                let new = args
                    .get("metadata")
                    .and_then(Value::as_object)
                    .ok_or_else(|| ApiError::bad_request("Malformed request body."))?;
                for (k, val) in new {
                    let ok = !k.is_empty() && k.len() <= 255 && val.as_str().is_some_and(|s| s.len() <= 255);
                    if !ok {
                        return Err(ApiError::bad_request(format!(
                            "Invalid input for field/attribute metadata. Value: {}. Keys and values must be strings of 1 to 255 characters",
                            Value::Object(new.clone())
                        )));
                    }
                }
                let mut m = current(state, v).await?;
                m.extend(new.clone());
                state.store.set_volume_image_metadata(&v.id, &Value::Object(m.clone()).to_string()).await?;
                Ok((StatusCode::OK, axum::Json(json!({"metadata": m}))).into_response())
            }
            "os-unset_image_metadata" => {
                ctx.require_member("volume_extension:volume_image_metadata:remove")?;
                let key = args
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::bad_request("Malformed request body."))?;
                let mut m = current(state, v).await?;
                if m.remove(key).is_none() {
                    return Err(ApiError::not_found(format!(
                        "Glance metadata for volume/snapshot {} cannot be found.",
                        v.id
                    )));
                }
                state.store.set_volume_image_metadata(&v.id, &Value::Object(m).to_string()).await?;
                Ok(StatusCode::OK.into_response())
            }
            _ => Err(ApiError::internal("not an image metadata action")),
        }
    };
    if !matches!(name, "os-show_image_metadata" | "os-set_image_metadata" | "os-unset_image_metadata") {
        return None;
    }
    Some(run.await)
}

/// Image properties a volume lends to a server booted from it (Nova reads the volume's image
/// metadata as the instance's image meta): the image's id and its properties.
pub async fn boot_image(state: &AppState, volume_id: &str) -> ApiResult<Option<(String, BTreeMap<String, String>)>> {
    let Some(m) = state.store.volume_image_metadata(volume_id).await? else { return Ok(None) };
    let m: BTreeMap<String, String> = serde_json::from_str(&m).unwrap_or_default();
    Ok(Some((m.get("image_id").cloned().unwrap_or_default(), m)))
}

/// Records the image metadata of a placed volume and queues its creation from the image for
/// its host (the agent fetches the image as a build does, which the agents' image route admits
/// for an open `VolumeCreate` naming it).
pub async fn enqueue(state: &AppState, v: &Volume, host: &str, image: &Image) -> ApiResult<()> {
    record(state, &v.id, image).await?;
    let action = meridian_common::agent::Action::VolumeCreate {
        volume: meridian_common::agent::VolumeSpec {
            id: v.id.clone(),
            size_gb: u64::try_from(v.size).unwrap_or(0),
            readonly: v.readonly != 0,
        },
        source: Some(meridian_common::agent::VolumeSource::Image { image: image_spec(image) }),
    };
    let action = serde_json::to_string(&action).map_err(ApiError::internal)?;
    state.store.enqueue_work(&v.id, host, &action).await?;
    state.signals.notify(host);
    Ok(())
}

/// A volume for a server's build, placed on the build's host (`host_id`): from `image` or
/// blank, counted against the project's volume quotas like any other. Returns its id.
pub async fn create_on_host(
    state: &AppState,
    inst: &crate::store::instances::Instance,
    name: &str,
    size: i64,
    zone: &str,
    host_id: &str,
    image: Option<&Image>,
) -> ApiResult<String> {
    let ts = crate::store::now();
    let v = Volume {
        id: crate::store::new_uuid(),
        project_id: inst.project_id.clone(),
        user_id: inst.user_id.clone(),
        name: Some(name.to_string()),
        description: None,
        size,
        status: "creating".into(),
        attach_status: "detached".into(),
        volume_type_id: crate::store::volume::DEFAULT_TYPE_ID.into(),
        availability_zone: zone.to_string(),
        host_id: Some(host_id.to_string()),
        bootable: crate::store::flag(image.is_some()),
        readonly: 0,
        metadata: "{}".into(),
        deadline: Some(super::work::deadline(super::work::CREATE_DEADLINE)),
        created_at: ts.clone(),
        updated_at: ts,
        snapshot_id: None,
        source_volid: None,
    };
    let limits = super::quotas::create_limits(state, &v.project_id).await?;
    if state.store.create_volume(&v, limits).await?.is_none() {
        return Err(super::quotas::over_quota(state, &v.project_id, size, limits).await);
    }
    match image {
        Some(img) => enqueue(state, &v, host_id, img).await?,
        None => super::work::enqueue(state, &v, host_id, super::work::Kind::Create).await?,
    }
    Ok(v.id)
}
