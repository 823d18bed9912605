//! Boot from volume: `block_device_mapping_v2` on `POST /servers` (Nova's schema, `from_api`
//! and `_validate_bdm` checks and messages), the scheduler's volume locality (Cinder's
//! `InstanceLocalityFilter` the other way round: an instance goes where its volumes are), and
//! the build's `block_device_mapping` phase, which makes and attaches the volumes before the
//! agent gets the build.
//!
//! Only `destination_type: volume` mappings are kept (table `block_device_mappings`); the one
//! `image → local` mapping Nova allows is the image boot it already is.

use std::time::Duration;

use meridian_common::agent::{BlockDevice, EphemeralDisk, LocalDisks, VolumeSpec};
use serde_json::{Map, Value};

use super::servers::CONFIG_DRIVE_ATTACHED;
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::bfv::{Bdm, LocalDiskRow};
use crate::store::hosts::Host;
use crate::store::image::Image;
use crate::store::instances::Instance;
use crate::store::volume::{Volume, new_attachment};
use crate::store::{StoreError, fmt_time, now};

/// One mapping of the request, checked for form (Nova's schema and `BlockDeviceDict`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub source_type: String,
    pub destination_type: String,
    pub uuid: Option<String>,
    pub boot_index: Option<i64>,
    pub volume_size: Option<i64>,
    pub delete_on_termination: bool,
    pub device_name: Option<String>,
    /// A local disk's file system (`swap` makes it the swap disk).
    pub guest_format: Option<String>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn invalid_bdm(details: &str) -> ApiError {
    bad(format!("Block Device Mapping is Invalid: {details}"))
}

/// Keys Nova's `block_device_mapping_v2` schema admits (the legacy ones included).
const KEYS: [&str; 17] = [
    "virtual_name",
    "volume_id",
    "snapshot_id",
    "volume_size",
    "device_name",
    "delete_on_termination",
    "no_device",
    "connection_info",
    "source_type",
    "uuid",
    "image_id",
    "destination_type",
    "guest_format",
    "device_type",
    "disk_bus",
    "boot_index",
    "tag",
];

/// The items of the list `field` of a server create body, each an object holding only `keys`
/// (else Nova's schema fault naming the item); `None` when the list is absent or null.
fn items<'a>(b: &'a Map<String, Value>, field: &str, keys: &[&str]) -> ApiResult<Option<Vec<&'a Map<String, Value>>>> {
    let list = match b.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(l)) => l,
        Some(other) => {
            return Err(bad(format!(
                "Invalid input for field/attribute {field}. Value: {other}. {other} is not of type 'array'"
            )));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let why = |w: String| bad(format!("Invalid input for field/attribute {field}/{i}. Value: {item}. {w}"));
        let m = item.as_object().ok_or_else(|| why(format!("{item} is not of type 'object'")))?;
        if let Some(k) = m.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(why(format!("Additional properties are not allowed ('{k}' was unexpected)")));
        }
        out.push(m);
    }
    Ok(Some(out))
}

/// Parses `block_device_mapping_v2` (absent: none). `image_given`: the request has an
/// `imageRef`, which makes an `image → local` mapping with boot index 0 the image boot.
pub fn parse(b: &Map<String, Value>, image_given: bool) -> ApiResult<Vec<Requested>> {
    let Some(list) = items(b, "block_device_mapping_v2", &KEYS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for m in list {
        let string = |key: &str| -> ApiResult<Option<String>> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(bad(format!(
                    "Invalid input for field/attribute {key}. Value: {v}. {v} is not of type 'string'"
                ))),
            }
        };
        if m.get("no_device").is_some_and(|v| !v.is_null() && v != false) {
            continue; // "no device": nothing to map
        }
        let source_type = string("source_type")?;
        if let Some(s) = &source_type
            && !["volume", "image", "snapshot", "blank"].contains(&s.as_str())
        {
            return Err(bad(format!(
                "Invalid input for field/attribute source_type. Value: {s}. '{s}' is not one of ['volume', 'image', 'snapshot', 'blank']"
            )));
        }
        let destination_type = string("destination_type")?;
        if let Some(d) = &destination_type
            && !["local", "volume"].contains(&d.as_str())
        {
            return Err(bad(format!(
                "Invalid input for field/attribute destination_type. Value: {d}. '{d}' is not one of ['local', 'volume']"
            )));
        }
        let uuid = string("uuid")?;
        if let Some(u) = &uuid
            && (u.is_empty()
                || u.len() > 255
                || !u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(bad(format!(
                "Invalid input for field/attribute uuid. Value: {u}. '{u}' does not match '^[a-zA-Z0-9._-]*$'"
            )));
        }
        let guest_format = string("guest_format")?;
        if guest_format.as_ref().is_some_and(|g| g.len() > 255) {
            let g = guest_format.clone().unwrap_or_default();
            return Err(bad(format!("Invalid input for field/attribute guest_format. Value: {g}. '{g}' is too long")));
        }
        let device_name = string("device_name")?;
        if let Some(d) = &device_name
            && (d.is_empty()
                || d.len() > 255
                || !d.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
        {
            return Err(bad(format!(
                "Invalid input for field/attribute device_name. Value: {d}. '{d}' does not match '^[a-zA-Z0-9._/-]*$'"
            )));
        }
        let boot_index = match m.get("boot_index") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| invalid_bdm("Boot index is invalid."))?),
            Some(Value::String(s)) => Some(s.trim().parse::<i64>().map_err(|_| {
                bad(format!(
                    "Invalid input for field/attribute boot_index. Value: {s}. '{s}' does not match '^-?[0-9]+$'"
                ))
            })?),
            Some(v) => {
                return Err(bad(format!(
                    "Invalid input for field/attribute boot_index. Value: {v}. {v} is not of type 'integer', 'string', 'null'"
                )));
            }
        };
        let volume_size = match m.get("volume_size") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let n = match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse::<i64>().ok(),
                    _ => None,
                };
                match n {
                    Some(n) if n >= 1 => Some(n),
                    // Nova's `volume_size` is 1..; a string that is no number fails the same.
                    _ => {
                        return Err(bad(format!(
                            "Invalid input for field/attribute volume_size. Value: {v}. {v} is not valid under any of the given schemas"
                        )));
                    }
                }
            }
        };
        let delete_on_termination = match m.get("delete_on_termination") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(v)) => *v,
            Some(Value::String(s)) => crate::extract::parse_bool(s).ok_or_else(|| {
                bad(format!(
                    "Invalid input for field/attribute delete_on_termination. Value: {s}. '{s}' is not valid under any of the given schemas"
                ))
            })?,
            Some(v) => {
                return Err(bad(format!(
                    "Invalid input for field/attribute delete_on_termination. Value: {v}. {v} is not valid under any of the given schemas"
                )));
            }
        };
        // The legacy keys name the source too (`volume_id`, `snapshot_id`, `image_id`).
        let (source_type, uuid) = match (source_type, uuid) {
            (Some(s), u) => (s, u),
            (None, None) => {
                let legacy = [("volume_id", "volume"), ("snapshot_id", "snapshot"), ("image_id", "image")]
                    .into_iter()
                    .find_map(|(k, s)| string(k).ok().flatten().map(|id| (s.to_string(), Some(id))));
                legacy.ok_or_else(|| invalid_bdm("Some required fields are missing"))?
            }
            (None, Some(_)) => return Err(invalid_bdm("Some required fields are missing")),
        };
        // Nova's `BlockDeviceDict.from_api`.
        if source_type == "blank" && uuid.is_some() {
            return Err(invalid_bdm("Invalid device UUID."));
        }
        if source_type != "blank" && uuid.is_none() {
            return Err(invalid_bdm("Missing device UUID."));
        }
        let destination_type = destination_type.unwrap_or_else(|| "volume".into());
        if source_type == "image" && destination_type == "local" && !(image_given && boot_index == Some(0)) {
            return Err(invalid_bdm("Mapping image to local is not supported."));
        }
        out.push(Requested {
            source_type,
            destination_type,
            uuid,
            boot_index,
            volume_size,
            delete_on_termination,
            device_name,
            guest_format,
        });
    }
    Ok(out)
}

/// Keys of Nova's legacy `block_device_mapping` (v1) items.
const LEGACY_KEYS: [&str; 8] = [
    "virtual_name",
    "volume_id",
    "snapshot_id",
    "volume_size",
    "device_name",
    "delete_on_termination",
    "no_device",
    "connection_info",
];

/// Parses the legacy `block_device_mapping` (v1) as Nova converts it (`from_legacy_mapping`
/// with the root device `vda`): `volume_id`/`snapshot_id` map a volume (the one named
/// `vda` or `/dev/vda` is the root disk, boot index 0), `virtual_name` `swap`/`ephemeralN` a
/// local disk; then the v2 rules of [`parse`] apply.
pub fn parse_legacy(b: &Map<String, Value>, image_given: bool) -> ApiResult<Vec<Requested>> {
    if b.contains_key("block_device_mapping_v2") {
        return Err(bad("Using different block_device_mapping syntaxes is not allowed."));
    }
    let Some(list) = items(b, "block_device_mapping", &LEGACY_KEYS)? else {
        return Ok(Vec::new());
    };
    let mut converted = Vec::new();
    for m in list {
        if m.get("no_device").is_some_and(|v| !v.is_null() && v != false) {
            continue;
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let device = text("device_name");
        let root = device.as_deref().is_some_and(|d| d.trim_start_matches("/dev/") == "vda");
        let mut v2 = Map::new();
        let (source, uuid) = if let Some(id) = text("volume_id") {
            ("volume", Some(id))
        } else if let Some(id) = text("snapshot_id") {
            ("snapshot", Some(id))
        } else {
            match text("virtual_name").as_deref() {
                Some("swap") => {
                    v2.insert("guest_format".into(), Value::String("swap".into()));
                    ("blank", None)
                }
                Some(v) if v.starts_with("ephemeral") => ("blank", None),
                _ => return Err(invalid_bdm("Unrecognized legacy format.")),
            }
        };
        if source != "blank" && root && image_given {
            return Err(bad("The volume cannot be assigned the same device name as the root device vda"));
        }
        v2.insert("source_type".into(), Value::String(source.into()));
        v2.insert("destination_type".into(), Value::String(if source == "blank" { "local" } else { "volume" }.into()));
        if let Some(u) = uuid {
            v2.insert("uuid".into(), Value::String(u));
        }
        let boot = source != "blank" && root;
        v2.insert("boot_index".into(), Value::from(if boot { 0 } else { -1 }));
        for k in ["device_name", "volume_size", "delete_on_termination"] {
            if let Some(v) = m.get(k) {
                v2.insert(k.into(), v.clone());
            }
        }
        converted.push(Value::Object(v2));
    }
    let mut as_v2 = Map::new();
    as_v2.insert("block_device_mapping_v2".into(), Value::Array(converted));
    parse(&as_v2, image_given)
}

/// Whether the root disk is a volume (a mapping with boot index 0 whose destination is one).
pub fn volume_boot(reqs: &[Requested]) -> bool {
    reqs.iter().any(|r| r.boot_index == Some(0) && r.destination_type == "volume")
}

/// Nova's boot sequence check: the non-negative boot indexes are 0, 1, … (the image boot,
/// when `imageRef` is given and no mapping has index 0, counts as 0).
pub fn check_boot_sequence(reqs: &[Requested], image_given: bool) -> ApiResult<()> {
    let mut idx: Vec<i64> = reqs.iter().filter_map(|r| r.boot_index).filter(|i| *i >= 0).collect();
    if image_given && !idx.contains(&0) {
        idx.push(0);
    }
    idx.sort_unstable();
    if idx.is_empty() || idx.iter().enumerate().any(|(i, v)| i64::try_from(i).ok() != Some(*v)) {
        return Err(invalid_bdm(
            "Boot sequence for the instance and image/block device mapping combination is not valid.",
        ));
    }
    Ok(())
}

/// The mappings an image defines (Nova's `_get_image_defined_bdms`): its `block_device_mapping`
/// property in the v2 form (`bdm_v2`), as the snapshot of a volume-backed server writes it.
/// `None` when the image defines none.
pub fn image_defined(img: &Image) -> ApiResult<Option<Vec<Requested>>> {
    let props = img.properties_map();
    let list = match props.get("block_device_mapping") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|_| invalid_bdm(&format!("the block_device_mapping of image {} is not JSON.", img.id)))?,
        Some(other) => other.clone(),
    };
    let Value::Array(list) = list else {
        return Err(invalid_bdm(&format!("the block_device_mapping of image {} is not a list.", img.id)));
    };
    if list.is_empty() {
        return Ok(None);
    }
    // Python's truth of the property: any non-empty string (Glance keeps strings) is v2.
    let v2 = match props.get("bdm_v2") {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Bool(b)) => *b,
        _ => false,
    };
    if !v2 {
        return Err(invalid_bdm(&format!(
            "image {} has legacy block device mappings, which this cloud does not support.",
            img.id
        )));
    }
    let mut out = Vec::new();
    for item in &list {
        let m = item
            .as_object()
            .ok_or_else(|| invalid_bdm(&format!("image {} has a mapping that is no object.", img.id)))?;
        if m.get("no_device").is_some_and(|v| !v.is_null() && v != false) {
            continue;
        }
        let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let source_type = text("source_type").ok_or_else(|| invalid_bdm("Some required fields are missing"))?;
        let uuid = text(&format!("{source_type}_id"));
        let number = |k: &str| match m.get(k) {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let delete_on_termination = match m.get("delete_on_termination") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => crate::extract::parse_bool(s).unwrap_or(false),
            _ => false,
        };
        out.push(Requested {
            destination_type: text("destination_type").unwrap_or_else(|| "volume".into()),
            source_type,
            uuid,
            boot_index: number("boot_index"),
            volume_size: number("volume_size"),
            delete_on_termination,
            device_name: text("device_name"),
            guest_format: text("guest_format"),
        });
    }
    Ok(Some(out))
}

/// Nova's `_check_and_transform_bdm` with image-defined mappings: when the image defines the
/// root disk, the request's image-to-root mapping goes; the request's mappings override the
/// image's by device name (`_merge_bdms_lists`).
pub fn merge(image_bdms: Vec<Requested>, request: Vec<Requested>) -> Vec<Requested> {
    let root_in_image = image_bdms.iter().any(|b| b.boot_index == Some(0));
    let request: Vec<Requested> = if root_in_image {
        request.into_iter().filter(|b| !(b.boot_index == Some(0) && b.source_type == "image")).collect()
    } else {
        request
    };
    let names: Vec<&str> = request.iter().filter_map(|b| b.device_name.as_deref()).collect();
    let kept: Vec<Requested> =
        image_bdms.into_iter().filter(|b| b.device_name.as_deref().is_none_or(|d| !names.contains(&d))).collect();
    let mut out = request;
    out.extend(kept);
    out
}

/// Nova's `max_local_block_devices` default: local disks a request may ask for, the image's
/// root disk included.
pub const MAX_LOCAL_BLOCK_DEVICES: usize = 3;

fn is_swap(r: &Requested) -> bool {
    r.source_type == "blank" && r.destination_type == "local" && r.guest_format.as_deref() == Some("swap")
}

fn is_ephemeral(r: &Requested) -> bool {
    r.source_type == "blank" && r.destination_type == "local" && r.guest_format.as_deref() != Some("swap")
}

/// The end of Nova's `_validate_bdm` for local disks, against the flavor's ephemeral (GiB) and
/// swap (MiB) sizes: the ephemeral disks (a mapping without a size takes the flavor's) may sum
/// to the flavor's, one swap disk of at most the flavor's, and at most
/// [`MAX_LOCAL_BLOCK_DEVICES`] local disks with the image's root disk (`image_root`: the
/// server boots from `imageRef`). Returns the server's local disks, in order, for
/// [`store_local`] (`(kind, size, guest_format)`); empty when the request maps none (the
/// flavor's then).
pub fn check_local(
    reqs: &[Requested],
    flavor_ephemeral_gb: i64,
    flavor_swap_mb: i64,
    image_root: bool,
) -> ApiResult<Vec<(String, i64, Option<String>)>> {
    let ephemeral: i64 =
        reqs.iter().filter(|r| is_ephemeral(r)).map(|r| r.volume_size.unwrap_or(flavor_ephemeral_gb)).sum();
    if ephemeral > flavor_ephemeral_gb {
        return Err(bad(
            "Ephemeral disks requested are larger than the instance type allows. If no size is given in one block \
             device mapping, flavor ephemeral size will be used.",
        ));
    }
    let swaps: Vec<&Requested> = reqs.iter().filter(|r| is_swap(r)).collect();
    if swaps.len() > 1 {
        return Err(invalid_bdm("More than one swap drive requested."));
    }
    if swaps.first().is_some_and(|s| s.volume_size.unwrap_or(0) > flavor_swap_mb) {
        return Err(bad("Swap drive requested is larger than instance type allows."));
    }
    // The image's root disk is a local mapping too (Nova adds it for `imageRef`), unless a
    // mapping already is it.
    let image_bdm = reqs.iter().any(|r| r.source_type == "image" && r.destination_type == "local");
    let locals = reqs.iter().filter(|r| r.destination_type == "local").count() + usize::from(image_root && !image_bdm);
    if locals > MAX_LOCAL_BLOCK_DEVICES {
        return Err(invalid_bdm("You specified more local devices than the limit allows"));
    }
    if !reqs.iter().any(|r| r.source_type == "blank" && r.destination_type == "local") {
        return Ok(Vec::new());
    }
    // As Nova's libvirt driver lays them out: the mappings' ephemeral disks, else the
    // flavor's one; the mapping's swap disk, else the flavor's.
    let mut out: Vec<(String, i64, Option<String>)> = reqs
        .iter()
        .filter(|r| is_ephemeral(r))
        .map(|r| ("ephemeral".to_string(), r.volume_size.unwrap_or(flavor_ephemeral_gb), r.guest_format.clone()))
        .collect();
    if out.is_empty() && flavor_ephemeral_gb > 0 {
        out.push(("ephemeral".to_string(), flavor_ephemeral_gb, None));
    }
    let swap_mb = match swaps.first() {
        Some(s) => s.volume_size.unwrap_or(0),
        None => flavor_swap_mb,
    };
    if swap_mb > 0 {
        out.push(("swap".to_string(), swap_mb, Some("swap".to_string())));
    }
    out.retain(|(_, size, _)| *size > 0);
    Ok(out)
}

/// Stores the local disks [`check_local`] returned for a new instance.
pub async fn store_local(state: &AppState, inst: &Instance, disks: &[(String, i64, Option<String>)]) -> ApiResult<()> {
    let rows: Vec<LocalDiskRow> = disks
        .iter()
        .enumerate()
        .map(|(i, (kind, size, fmt))| LocalDiskRow {
            instance_id: inst.id.clone(),
            position: i64::try_from(i).unwrap_or(0),
            kind: kind.clone(),
            size: *size,
            guest_format: fmt.clone(),
            created_at: now(),
        })
        .collect();
    state.store.create_local_disks(&rows).await?;
    Ok(())
}

/// The build's local disks of an instance whose mappings asked for its own (`None`: the
/// flavor's).
pub async fn local_disks_spec(state: &AppState, instance_id: &str) -> Result<Option<LocalDisks>, StoreError> {
    let rows = state.store.instance_local_disks(instance_id).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut out = LocalDisks::default();
    for r in rows {
        let size = u64::try_from(r.size).unwrap_or(0);
        match r.kind.as_str() {
            "ephemeral" => out.ephemerals.push(EphemeralDisk { size_gb: size, guest_format: r.guest_format }),
            "swap" => out.swap_mb = size,
            _ => {}
        }
    }
    Ok(Some(out))
}

/// What the checks against the services found.
#[derive(Debug, Default)]
pub struct Checked {
    /// The kept mappings (destination volume), in request order.
    pub mappings: Vec<Requested>,
    /// Existing volumes of `source_type: volume` mappings, by mapping position.
    pub volumes: Vec<(usize, Volume)>,
    /// The image the server's properties come from: the boot mapping's image, or the image a
    /// boot volume was made from; `None` for a volume with no image behind it.
    pub boot_image: Option<Image>,
}

/// Nova's `_validate_bdm` against Glance and Cinder: images, volumes and snapshots exist and
/// are usable, sizes are given, the boot volume is bootable.
pub async fn check(state: &AppState, ctx: &Ctx, reqs: &[Requested], image_given: bool) -> ApiResult<Checked> {
    check_boot_sequence(reqs, image_given)?;
    let project = ctx.project_id()?.to_string();
    let mut out = Checked::default();
    for r in reqs {
        if r.destination_type == "local" {
            // The image boot itself (parse allowed only that one), or an ephemeral or swap
            // disk (checked against the flavor by `check_local`).
            if matches!(r.source_type.as_str(), "image" | "blank") {
                continue;
            }
            return Err(invalid_bdm("only blank local block devices (ephemeral, swap) are supported by this cloud."));
        }
        let position = out.mappings.len();
        let boot = r.boot_index == Some(0);
        let id = r.uuid.clone().unwrap_or_default();
        match r.source_type.as_str() {
            "image" => {
                let img = match state.store.get_image(&id).await {
                    Ok(i) if state.store.image_visible_to(&i, Some(&project), ctx.is_admin()).await? => i,
                    Ok(_) | Err(StoreError::NotFound(_)) => {
                        return Err(invalid_bdm(&format!("failed to get image {id}.")));
                    }
                    Err(e) => return Err(e.into()),
                };
                let Some(size) = r.volume_size else {
                    return Err(bad("Images with destination_type 'volume' need to have a non-zero size specified"));
                };
                if img.status != "active" {
                    return Err(bad(format!("Image {id} is not active.")));
                }
                crate::volume::from_image::check(&img, size)?;
                if boot {
                    out.boot_image = Some(img);
                }
            }
            "blank" => {
                if r.volume_size.is_none() {
                    return Err(bad("Blank volumes (source: 'blank', dest: 'volume') need to have non-zero size"));
                }
            }
            "snapshot" => {
                let snap = match state.store.get_snapshot(&id).await {
                    Ok(s) if ctx.owns(&s.project_id) => s,
                    Ok(_) | Err(StoreError::NotFound(_)) => {
                        return Err(invalid_bdm(&format!("failed to get snapshot {id}.")));
                    }
                    Err(e) => return Err(e.into()),
                };
                if snap.status != "available" {
                    return Err(bad("Invalid snapshot: Originating snapshot status must be one of 'available' values"));
                }
                // Nova sizes the volume as the snapshot when the mapping gives no size.
                let size = r.volume_size.unwrap_or(snap.size);
                if size < snap.size {
                    return Err(bad(format!(
                        "Invalid input received: Volume size '{size}'GB cannot be smaller than the snapshot size \
                         {}GB. They must be >= original snapshot size.",
                        snap.size
                    )));
                }
                out.mappings.push(Requested { volume_size: Some(size), ..r.clone() });
                continue;
            }
            _ => {
                let v = match state.store.get_volume(&id).await {
                    Ok(v) if ctx.owns(&v.project_id) => v,
                    Ok(_) | Err(StoreError::NotFound(_)) => {
                        return Err(bad(format!("Volume {id} could not be found.")));
                    }
                    Err(e) => return Err(e.into()),
                };
                if boot && v.bootable == 0 {
                    return Err(bad(format!("Block Device {id} is not bootable.")));
                }
                if v.status != "available" {
                    return Err(bad(format!(
                        "Invalid volume: volume '{id}' status must be 'available'. Currently in '{}'",
                        v.status
                    )));
                }
                if out.volumes.iter().any(|(_, o)| o.id == v.id) {
                    return Err(invalid_bdm(&format!("volume {id} is mapped twice.")));
                }
                if boot {
                    out.boot_image = match crate::volume::from_image::boot_image(state, &v.id).await? {
                        Some((image_id, meta)) => Some(image_from_metadata(state, &image_id, &meta).await?),
                        None => None,
                    };
                }
                out.volumes.push((position, v));
            }
        }
        out.mappings.push(r.clone());
    }
    Ok(out)
}

/// The image a volume was made from, as far as its image metadata tells (the image itself
/// when it still exists, for its current properties).
async fn image_from_metadata(
    state: &AppState,
    image_id: &str,
    meta: &std::collections::BTreeMap<String, String>,
) -> ApiResult<Image> {
    if !image_id.is_empty() {
        match state.store.get_image(image_id).await {
            Ok(i) => return Ok(i),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let props: Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| !crate::volume::from_image::BASE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Ok(Image {
        id: image_id.to_string(),
        status: "active".into(),
        min_ram: meta.get("min_ram").and_then(|m| m.parse().ok()).unwrap_or(0),
        disk_format: Some("raw".into()),
        properties: Value::Object(props).to_string(),
        ..Default::default()
    })
}

/// The image a volume-booted instance's build describes (its properties only: the root disk
/// is the volume). Volume data is raw.
pub fn boot_image_or_blank(image: Option<Image>) -> Image {
    let mut img = image.unwrap_or_else(|| Image { status: "active".into(), ..Default::default() });
    img.disk_format = Some("raw".into());
    img
}

/// Stores an instance's mappings and reserves its existing volumes for it (so no other server
/// or attach takes them meanwhile, as Nova's attachment_create at the API).
pub async fn store_for(state: &AppState, inst: &Instance, checked: &Checked) -> ApiResult<()> {
    let mut rows = Vec::new();
    for (position, r) in checked.mappings.iter().enumerate() {
        let existing = checked.volumes.iter().find(|(p, _)| *p == position).map(|(_, v)| v);
        let mut attachment_id = None;
        if let Some(v) = existing {
            let a = new_attachment(&v.id, Some(&inst.id), None, "reserved");
            if !state.store.reserve_volume(&a, "attaching", None, None).await? {
                return Err(bad(format!("Invalid volume: volume '{}' status must be 'available'.", v.id)));
            }
            attachment_id = Some(a.id);
        }
        rows.push(Bdm {
            instance_id: inst.id.clone(),
            position: i64::try_from(position).unwrap_or(0),
            source_type: r.source_type.clone(),
            source_id: r.uuid.clone(),
            volume_id: existing.map(|v| v.id.clone()),
            volume_size: r.volume_size.or(existing.map(|v| v.size)),
            boot_index: r.boot_index,
            device_name: r.device_name.clone(),
            delete_on_termination: i64::from(r.delete_on_termination),
            attachment_id,
            created_at: now(),
        });
    }
    state.store.create_bdms(&rows).await?;
    Ok(())
}

/// Where an instance must run for its existing volumes: `Ok(None)` anywhere, `Ok(Some(host))`
/// on that host, `Err(message)` nowhere (its volumes sit on two hosts).
pub async fn required_host(state: &AppState, instance_id: &str) -> Result<Option<String>, LocalityError> {
    let mut host: Option<(String, String)> = None;
    let bdms = state.store.instance_bdms(instance_id).await.map_err(LocalityError::Store)?;
    // Volumes attached through the compute API too (while running or shelved offloaded).
    let attached: Vec<String> = state
        .store
        .instance_attachments(instance_id)
        .await
        .map_err(LocalityError::Store)?
        .into_iter()
        .filter(|a| a.by_compute != 0)
        .map(|a| a.volume_id)
        .filter(|v| !bdms.iter().any(|b| b.volume_id.as_ref() == Some(v)))
        .collect();
    let mut vids = Vec::new();
    for b in bdms {
        // Existing volumes, those an earlier attempt of this build made, and the volumes of
        // snapshots a new volume is to be made from (the copy is made beside its snapshot).
        let vid = match (b.volume_id, b.source_type.as_str(), &b.source_id) {
            (Some(v), _, _) => v,
            (None, "snapshot", Some(sid)) => match state.store.get_snapshot(sid).await {
                Ok(s) => s.volume_id,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(LocalityError::Store(e)),
            },
            _ => continue,
        };
        vids.push(vid);
    }
    vids.extend(attached);
    for vid in vids {
        let v = match state.store.get_volume(&vid).await {
            Ok(v) => v,
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(LocalityError::Store(e)),
        };
        let Some(h) = v.host_id else { continue };
        match &host {
            Some((other, other_vol)) if *other != h => {
                return Err(LocalityError::Split(format!(
                    "No valid host was found. The instance's volumes {other_vol} and {vid} are stored on different \
                     compute hosts; an instance can only use volumes of its own host."
                )));
            }
            Some(_) => {}
            None => host = Some((h, vid)),
        }
    }
    Ok(host.map(|(h, _)| h))
}

#[derive(Debug)]
pub enum LocalityError {
    Store(StoreError),
    Split(String),
}

/// How often the build's volume phase looks at its volumes.
const POLL: Duration = Duration::from_millis(250);

/// The device of mapping `position` (of `count`): the boot volume is `vda`; the others follow
/// in request order, after the image disk or boot volume and a requested config drive.
#[cfg(test)]
pub fn devices(bdms: &[Bdm], config_drive: bool) -> Vec<String> {
    devices_after(bdms, local_devices(0, 0, config_drive))
}

/// The devices the host gives an instance before any volume, as the agent lays them out:
/// the root disk `vda`, the flavor's ephemeral disk (`ephemeral_gb` > 0) and swap disk
/// (`swap_mb` > 0) in Nova's order, then an attached config drive.
pub fn local_devices(ephemeral_gb: i64, swap_mb: i64, config_drive: bool) -> Vec<String> {
    let count = 1 + usize::from(ephemeral_gb > 0) + usize::from(swap_mb > 0) + usize::from(config_drive);
    (b'a'..).take(count).map(|c| format!("vd{}", c as char)).collect()
}

/// The devices the host gives an instance before any volume: the root disk, its ephemeral
/// disks (its own, or the flavor's one), its swap disk and an attached config drive.
pub async fn instance_local_devices(state: &AppState, inst: &Instance) -> Result<Vec<String>, StoreError> {
    let config_drive = inst.config_drive == CONFIG_DRIVE_ATTACHED;
    if let Some(own) = local_disks_spec(state, &inst.id).await? {
        let count = 1 + own.ephemerals.len() + usize::from(own.swap_mb > 0) + usize::from(config_drive);
        return Ok((b'a'..).take(count).map(|c| format!("vd{}", c as char)).collect());
    }
    let f: Value = serde_json::from_str(&inst.flavor).unwrap_or_default();
    let n = |k: &str| f[k].as_i64().unwrap_or(0);
    Ok(local_devices(n("ephemeral"), n("swap"), config_drive))
}

/// [`devices`] after the given devices of the host's own.
pub fn devices_after(bdms: &[Bdm], mut used: Vec<String>) -> Vec<String> {
    let boot_volume = bdms.iter().any(|b| b.boot_index == Some(0));
    let mut out = Vec::new();
    for b in bdms {
        if boot_volume && b.boot_index == Some(0) {
            out.push("vda".to_string());
            continue;
        }
        let next = (b'b'..=b'z').map(|c| format!("vd{}", c as char)).find(|d| !used.contains(d));
        let dev = next.unwrap_or_else(|| "vdz".into());
        used.push(dev.clone());
        out.push(dev);
    }
    out
}

/// The build's `block_device_mapping` phase (idempotent): the instance moves to that task,
/// its new volumes are made on `host` (from their image, or blank), every volume is waited for
/// until available and then attached. Returns the build's block devices; an error ends the
/// build with its message as the fault. Bounded by the build deadline set here.
pub async fn prepare(state: &AppState, inst: &Instance, host: &Host) -> Result<Vec<BlockDevice>, String> {
    let store_err = |e: StoreError| format!("{e}");
    let bdms = state.store.instance_bdms(&inst.id).await.map_err(store_err)?;
    if bdms.is_empty() {
        return Ok(Vec::new());
    }
    state.store.build_progress(&inst.id, "block_device_mapping").await.map_err(store_err)?;
    let timeout = i64::try_from(state.cfg.compute.build_timeout_secs).unwrap_or(i64::MAX);
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(timeout);
    state.store.set_instance_deadline(&inst.id, Some(&fmt_time(deadline))).await.map_err(store_err)?;
    let devices = devices_after(&bdms, instance_local_devices(state, inst).await.map_err(store_err)?);
    let mut out = Vec::new();
    for (b, dev) in bdms.iter().zip(devices) {
        let volume_id = match &b.volume_id {
            Some(v) => v.clone(),
            None => create_volume(state, inst, host, b).await?,
        };
        let v = wait_available(state, &volume_id, b.attachment_id.as_deref(), deadline).await?;
        let attachment_id = attach(state, inst, host, b, &v, &dev).await?;
        out.push(BlockDevice {
            volume: VolumeSpec {
                id: v.id.clone(),
                size_gb: u64::try_from(v.size).unwrap_or(0),
                readonly: v.readonly != 0,
            },
            device: dev,
            boot_index: b.boot_index.and_then(|i| u32::try_from(i).ok()),
            attachment_id,
        });
    }
    Ok(out)
}

/// The volumes attached to an instance through the compute API (not its block device
/// mappings, which [`prepare`] plugs in) as block devices of a build on `host`: an unshelve
/// plugs into the new domain the volumes it had and those attached while it was offloaded
/// (which have no device yet). Each keeps its device when free, else takes the next after
/// `taken`; the attachment records the host and device. A volume stored elsewhere fails the
/// build (the scheduler puts the instance on its volumes' host).
pub async fn attached_devices(
    state: &AppState,
    inst: &Instance,
    host: &Host,
    mut taken: Vec<String>,
) -> Result<Vec<BlockDevice>, String> {
    let store_err = |e: StoreError| format!("{e}");
    let bdms = state.store.instance_bdms(&inst.id).await.map_err(store_err)?;
    let attachments: Vec<_> = state
        .store
        .instance_attachments(&inst.id)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|a| a.by_compute != 0 && !bdms.iter().any(|b| b.volume_id.as_ref() == Some(&a.volume_id)))
        .collect();
    // Devices kept first, so a volume without one cannot take a kept one's name.
    let keep: Vec<Option<String>> = attachments
        .iter()
        .map(|a| {
            let dev = a.mountpoint.as_deref()?.trim_start_matches("/dev/").to_string();
            (!taken.contains(&dev)).then_some(dev)
        })
        .collect();
    taken.extend(keep.iter().flatten().cloned());
    let mut out = Vec::new();
    for (a, kept) in attachments.into_iter().zip(keep) {
        let v = state.store.get_volume(&a.volume_id).await.map_err(store_err)?;
        if v.host_id.as_deref() != Some(host.id.as_str()) {
            return Err(format!(
                "Volume {} attached to instance {} is stored on another compute host than {}.",
                v.id, inst.id, host.name
            ));
        }
        let dev = match kept {
            Some(d) => d,
            None => {
                let d = (b'b'..=b'z')
                    .map(|c| format!("vd{}", c as char))
                    .find(|d| !taken.contains(d))
                    .ok_or_else(|| "No free disk device names for prefix 'vd'".to_string())?;
                taken.push(d.clone());
                d
            }
        };
        let mountpoint = format!("/dev/{dev}");
        state.store.set_attachment_device(&a.id, &host.id, &mountpoint).await.map_err(store_err)?;
        out.push(BlockDevice {
            volume: VolumeSpec {
                id: v.id.clone(),
                size_gb: u64::try_from(v.size).unwrap_or(0),
                readonly: v.readonly != 0,
            },
            device: dev,
            boot_index: None,
            attachment_id: a.id,
        });
    }
    Ok(out)
}

/// Makes the volume of an `image`/`blank` mapping on the build's host, recorded in the mapping
/// first thing (a repeated phase finds it there).
async fn create_volume(state: &AppState, inst: &Instance, host: &Host, b: &Bdm) -> Result<String, String> {
    let size = b.volume_size.unwrap_or(1);
    let name = format!("{}-{}", inst.name, b.position);
    if let ("snapshot", Some(sid)) = (b.source_type.as_str(), &b.source_id) {
        let v = crate::volume::snapshots::volume_for_build(state, inst, &name, size, sid, &host.id)
            .await
            .map_err(|e| e.message)?;
        state.store.set_bdm_volume(&inst.id, b.position, &v, None).await.map_err(|e| format!("{e}"))?;
        return Ok(v);
    }
    let image = match (b.source_type.as_str(), &b.source_id) {
        ("image", Some(id)) => Some(state.store.get_image(id).await.map_err(|e| format!("image {id}: {e}"))?),
        _ => None,
    };
    let zone = if host.availability_zone.is_empty() {
        crate::volume::work::DEFAULT_ZONE.to_string()
    } else {
        host.availability_zone.clone()
    };
    let v = crate::volume::from_image::create_on_host(state, inst, &name, size, &zone, &host.id, image.as_ref())
        .await
        .map_err(|e| e.message)?;
    state.store.set_bdm_volume(&inst.id, b.position, &v, None).await.map_err(|e| format!("{e}"))?;
    Ok(v)
}

/// Waits until the volume is available (made), or reserved for this mapping.
async fn wait_available(
    state: &AppState,
    id: &str,
    reserved_by: Option<&str>,
    deadline: chrono::DateTime<chrono::Utc>,
) -> Result<Volume, String> {
    let started = std::time::Instant::now();
    let mut attempts = 0u64;
    loop {
        attempts += 1;
        let v = state.store.get_volume(id).await.map_err(|e| format!("volume {id}: {e}"))?;
        let ready = v.status == "available"
            || (reserved_by.is_some() && matches!(v.status.as_str(), "attaching" | "reserved" | "in-use"));
        if ready {
            return Ok(v);
        }
        let waited = started.elapsed().as_secs();
        if v.status != "creating" || chrono::Utc::now() >= deadline {
            // Nova's VolumeNotCreated.
            return Err(format!(
                "Volume {id} did not finish being created even after we waited {waited} seconds or {attempts} \
                 attempts. And its status is {}.",
                v.status
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Attaches the mapping's volume to the instance (bookkeeping: the build plugs it into the new
/// domain), as device `dev`. A repeat finds the attachment made.
async fn attach(
    state: &AppState,
    inst: &Instance,
    host: &Host,
    b: &Bdm,
    v: &Volume,
    dev: &str,
) -> Result<String, String> {
    let err = |e: StoreError| format!("volume {}: {e}", v.id);
    let mountpoint = format!("/dev/{dev}");
    let a = match &b.attachment_id {
        Some(id) => state.store.get_attachment(id).await.map_err(err)?,
        None => {
            let mut a = new_attachment(&v.id, Some(&inst.id), Some(&host.id), "attaching");
            if !state.store.reserve_volume(&a, "attaching", None, None).await.map_err(err)? {
                return Err(format!("Invalid volume: volume '{}' status must be 'available'.", v.id));
            }
            a.status = "attaching".into();
            state.store.set_bdm_volume(&inst.id, b.position, &v.id, Some(&a.id)).await.map_err(err)?;
            a
        }
    };
    if a.status != "attached" {
        state.store.set_attachment_compute(&a.id, &host.id).await.map_err(err)?;
        let moved = state
            .store
            .move_attachment(
                &a.id,
                Some("attached"),
                Some(&mountpoint),
                &v.id,
                &["attaching", "reserved"],
                "in-use",
                None,
                None,
            )
            .await
            .map_err(err)?;
        if !moved {
            return Err(format!("Invalid volume: volume '{}' could not be attached (status {}).", v.id, v.status));
        }
    }
    Ok(a.id)
}

/// An instance is gone: its mappings go, and with them the volumes marked
/// `delete_on_termination` (already released from the instance by the caller).
pub async fn instance_gone(state: &AppState, instance_id: &str) -> ApiResult<()> {
    for b in state.store.instance_bdms(instance_id).await? {
        let Some(vid) = b.volume_id.filter(|_| b.delete_on_termination != 0) else { continue };
        let v = match state.store.get_volume(&vid).await {
            Ok(v) => v,
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = crate::volume::start_delete(state, &v).await {
            // Another attachment or an odd status: the volume stays, as Nova leaves it.
            tracing::warn!(volume = %vid, instance = %instance_id, error = %e.message, "delete_on_termination: volume kept");
        }
    }
    state.store.delete_bdms(instance_id).await?;
    state.store.delete_local_disks(instance_id).await?;
    Ok(())
}

/// Volume ids of the instances' mappings marked `delete_on_termination` (for their
/// `volumes_attached` entries).
pub async fn delete_on_termination(state: &AppState, ids: &[&str]) -> ApiResult<Vec<String>> {
    Ok(state
        .store
        .bdms_of_instances(ids)
        .await?
        .into_values()
        .flatten()
        .filter(|b| b.delete_on_termination != 0)
        .filter_map(|b| b.volume_id)
        .collect())
}
