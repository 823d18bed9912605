//! `/servers`: create (single and multiple), list/detail with filters and paging, show, update,
//! delete, the power actions, console output and metadata — each body shaped for the requested
//! microversion.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

use super::conductor::{self, NetRequest};
use super::flavors::MAX_LIMIT;
pub(crate) use super::server_view::Shape;
use super::server_view::{Address, Addresses, Extras, host_id_hash, view};
use super::states::{self, Action as UserAction, TaskState, VmState};
use super::{ApiVersion, links};
use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::state::AppState;
use crate::store::hosts::Host;
use crate::store::image::Image;
use crate::store::instances::{
    Expect, Instance, InstanceAction, InstanceExtras, InstanceFilter, InstanceMatch, InstancePage, InstanceSort,
    NewState, PortAddress,
};
use crate::store::{StoreError, new_uuid, now};

type JsonResult = ApiResult<axum::Json<Value>>;

const MAX_METADATA_ITEMS: usize = 128;

pub(crate) fn vm_state(i: &Instance) -> VmState {
    VmState::parse(&i.vm_state).unwrap_or(VmState::Error)
}

pub(crate) fn task_state(i: &Instance) -> Option<TaskState> {
    i.task_state.as_deref().and_then(TaskState::parse)
}

pub(crate) fn status(i: &Instance) -> &'static str {
    states::status(vm_state(i), task_state(i))
}

/// An instance the caller may see; others (and deleted ones) are 404, as Nova answers.
pub(crate) async fn visible(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Instance> {
    let inst = visible_or_deleted(state, ctx, id).await?;
    if inst.deleted != 0 {
        return Err(ApiError::not_found(format!("Instance {id} could not be found.")));
    }
    Ok(inst)
}

/// As [`visible`], but a deleted instance is found too (instance actions from 2.21).
pub(crate) async fn visible_or_deleted(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Instance> {
    let missing = || ApiError::not_found(format!("Instance {id} could not be found."));
    let inst = match state.store.get_instance(id).await {
        Ok(i) => i,
        Err(StoreError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(e.into()),
    };
    if !ctx.owns(&inst.project_id) {
        return Err(missing());
    }
    Ok(inst)
}

/// The extras of each instance, in order, read in a fixed number of statements however many
/// there are.
async fn extras_of(state: &AppState, insts: &[Instance]) -> ApiResult<Vec<Extras>> {
    let ids: Vec<&str> = insts.iter().map(|i| i.id.as_str()).collect();
    let mut parts = state.store.instance_extras(&ids).await?;
    let parts = insts.iter().map(|i| parts.remove(&i.id).unwrap_or_default()).collect();
    with_hosts(state, insts, parts).await
}

/// [`Extras`] from what the store read for each instance (in order) and their hosts (one read).
async fn with_hosts(state: &AppState, insts: &[Instance], parts: Vec<InstanceExtras>) -> ApiResult<Vec<Extras>> {
    let mut host_ids: Vec<&str> = insts.iter().filter_map(|i| i.host_id.as_deref()).collect();
    host_ids.sort_unstable();
    host_ids.dedup();
    let hosts: BTreeMap<String, Host> =
        state.store.hosts_by_ids(&host_ids).await?.into_iter().map(|h| (h.id.clone(), h)).collect();
    // `hostId` is a hash per project and host: a page holds few pairs.
    let mut hashes: BTreeMap<(&str, &str), String> = BTreeMap::new();
    // Lock reasons (2.73) are read only for the locked instances of the page, which are few.
    let locked: Vec<&str> = insts.iter().filter(|i| i.locked != 0).map(|i| i.id.as_str()).collect();
    let mut locks = if locked.is_empty() { BTreeMap::new() } else { state.store.lock_info(&locked).await? };
    // Mappings marked delete_on_termination, read only for instances with volumes.
    let with_volumes: Vec<&str> =
        insts.iter().zip(&parts).filter(|(_, x)| !x.volumes.is_empty()).map(|(i, _)| i.id.as_str()).collect();
    let doomed = if with_volumes.is_empty() {
        Vec::new()
    } else {
        super::bdm::delete_on_termination(state, &with_volumes).await?
    };
    Ok(insts
        .iter()
        .zip(parts)
        .map(|(inst, x)| {
            let host = inst.host_id.as_deref().and_then(|h| hosts.get(h));
            let host_id = match host {
                Some(h) => hashes
                    .entry((inst.project_id.as_str(), h.name.as_str()))
                    .or_insert_with(|| host_id_hash(&inst.project_id, Some(&h.name)))
                    .clone(),
                None => String::new(),
            };
            Extras {
                host_name: host.map(|h| h.name.clone()),
                host_az: host.map(|h| h.availability_zone.clone()),
                host_up: host.map(|h| conductor::host_up(state, h) && h.enabled != 0),
                host_id,
                addresses: addresses_of(x.addresses),
                delete_on_termination: x.volumes.iter().filter(|v| doomed.contains(v)).cloned().collect(),
                security_groups: x.security_groups,
                volumes: x.volumes,
                locked_reason: locks.remove(&inst.id).and_then(|l| l.locked_reason),
            }
        })
        .collect())
}

/// `addresses`: network name → the addresses of the ports on it.
fn addresses_of(rows: Vec<PortAddress>) -> Addresses {
    let mut out = Addresses::new();
    for a in rows {
        let list = out.entry(a.network_name.unwrap_or(a.network_id)).or_default();
        if let Some(ip) = a.ip_address {
            let version = if ip.contains(':') { 6 } else { 4 };
            list.push(Address { version, addr: ip, kind: "fixed", mac_addr: a.mac_address });
        }
    }
    out
}

/// `addresses` of each instance that has ports: network name → the port addresses on it.
async fn addresses_by_instance(state: &AppState, ids: &[&str]) -> ApiResult<BTreeMap<String, Addresses>> {
    let mut out: BTreeMap<String, Addresses> = BTreeMap::new();
    for a in state.store.instance_addresses(ids).await? {
        let name = a.network_name.unwrap_or(a.network_id);
        let list = out.entry(a.device_id).or_default().entry(name).or_default();
        if let Some(ip) = a.ip_address {
            let version = if ip.contains(':') { 6 } else { 4 };
            list.push(Address { version, addr: ip, kind: "fixed", mac_addr: a.mac_address });
        }
    }
    Ok(out)
}

/// `addresses`: network name → the port addresses on it.
async fn addresses(state: &AppState, instance_id: &str) -> ApiResult<Addresses> {
    Ok(addresses_by_instance(state, &[instance_id]).await?.remove(instance_id).unwrap_or_default())
}

pub(crate) async fn render(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    inst: &Instance,
    shape: Shape,
) -> ApiResult<Value> {
    let mut all = render_many(state, ctx, v, std::slice::from_ref(inst), shape).await?;
    Ok(all.pop().unwrap_or(Value::Null))
}

/// [`render`] for many instances, in a fixed number of statements.
pub(crate) async fn render_many(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    insts: &[Instance],
    shape: Shape,
) -> ApiResult<Vec<Value>> {
    let extras = extras_of(state, insts).await?;
    insts
        .iter()
        .zip(&extras)
        .map(|(inst, x)| serde_json::to_value(view(state, ctx, v, inst, x, shape)).map_err(ApiError::internal))
        .collect()
}

// ---- create ----

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn str_field<'a>(b: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(bad(format!(
            "Invalid input for field/attribute {key}. Value: {other}. {other} is not of type 'string'"
        ))),
    }
}

/// What `config_drive` says of an instance with a config drive (Nova's value).
pub(crate) const CONFIG_DRIVE_ATTACHED: &str = "True";

/// `accessIPv4` / `accessIPv6`: an address of that family, or empty / null for none.
fn access_ip(b: &Map<String, Value>, key: &str) -> ApiResult<Option<String>> {
    let text = match b.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(t)) => t.as_str(),
        Some(other) => return Err(bad(format!("Invalid input for field/attribute {key}. Value: {other}."))),
    };
    if text.is_empty() {
        return Ok(None);
    }
    // Stored in canonical form, as Nova does (`0000::babe:220.12.22.2` → `::babe:dc0c:1602`).
    let (canonical, family) = match key {
        "accessIPv4" => (text.parse::<std::net::Ipv4Addr>().ok().map(|a| a.to_string()), "ipv4"),
        _ => (text.parse::<std::net::Ipv6Addr>().ok().map(|a| a.to_string()), "ipv6"),
    };
    canonical.map(Some).ok_or_else(|| {
        bad(format!("Invalid input for field/attribute {key}. Value: {text}. '{text}' is not a '{family}'"))
    })
}

fn count_field(b: &Map<String, Value>, key: &str) -> ApiResult<Option<i64>> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().filter(|n| *n >= 1).map(Some).ok_or_else(|| {
            bad(format!("Invalid input for field/attribute {key}. Value: {n}. {n} is less than the minimum of 1"))
        }),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| bad(format!("Invalid input for field/attribute {key}. Value: {s}."))),
        Some(other) => Err(bad(format!("Invalid input for field/attribute {key}. Value: {other}."))),
    }
}

fn metadata_field(b: &Map<String, Value>) -> ApiResult<BTreeMap<String, String>> {
    match b.get("metadata") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => check_metadata(m),
        Some(other) => Err(bad(format!(
            "Invalid input for field/attribute metadata. Value: {other}. {other} is not of type 'object'"
        ))),
    }
}

fn check_metadata(m: &Map<String, Value>) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        if k.is_empty() || k.len() > 255 {
            return Err(bad(format!("Invalid input for field/attribute metadata. Key '{k}' must be 1-255 characters")));
        }
        let v = v.as_str().ok_or_else(|| {
            bad(format!("Invalid input for field/attribute metadata. Value of '{k}' is not of type 'string'"))
        })?;
        if v.len() > 255 {
            return Err(bad(format!(
                "Invalid input for field/attribute metadata. Value of '{k}' is longer than 255 characters"
            )));
        }
        out.insert(k.clone(), v.to_string());
    }
    if out.len() > MAX_METADATA_ITEMS {
        return Err(ApiError::forbidden(format!(
            "Quota exceeded for metadata_items: Requested {}, but the limit is {MAX_METADATA_ITEMS}",
            out.len()
        )));
    }
    Ok(out)
}

/// The hostname Nova derives from a display name.
fn hostname_from(name: &str) -> String {
    let mut h: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c.to_ascii_lowercase() } else { '-' })
        .collect();
    h = h.trim_matches('-').to_string();
    h.truncate(63);
    if h.is_empty() { "server".into() } else { h }
}

/// Resolves `networks` into concrete requests, validating every reference.
async fn resolve_networks(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    raw: Option<&Value>,
    project_id: &str,
) -> ApiResult<Vec<NetRequest>> {
    let visible_nets = || async {
        let nets = state.store.list_networks(Some(project_id)).await.map_err(ApiError::from)?;
        Ok::<_, ApiError>(nets.into_iter().filter(|n| n.external == 0 || n.shared != 0).collect::<Vec<_>>())
    };
    let auto = || async {
        let nets = visible_nets().await?;
        match nets.len() {
            0 => Ok(Vec::new()),
            1 => Ok(vec![NetRequest {
                network_id: Some(nets[0].id.clone()),
                fixed_ip: None,
                port_id: None,
                security_groups: Vec::new(),
            }]),
            _ => Err(ApiError::conflict("Multiple possible networks found, use a Network ID to be more specific.")),
        }
    };
    match raw {
        None | Some(Value::Null) if v.at_least(37) => {
            Err(bad("Invalid input for field/attribute server. 'networks' is a required property"))
        }
        None | Some(Value::Null) => auto().await,
        Some(Value::String(s)) if s == "auto" && v.at_least(37) => auto().await,
        Some(Value::String(s)) if s == "none" && v.at_least(37) => Ok(Vec::new()),
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for item in list {
                let o = item
                    .as_object()
                    .ok_or_else(|| bad("Invalid input for field/attribute networks. Each item must be an object"))?;
                if let Some(port) = str_field(o, "port")? {
                    let p = state
                        .store
                        .get_port(port)
                        .await
                        .map_err(|_| bad(format!("Port {port} could not be found.")))?;
                    if !ctx.is_admin() && p.project_id != project_id {
                        return Err(bad(format!("Port {port} could not be found.")));
                    }
                    if !p.device_id.is_empty() {
                        return Err(ApiError::conflict(format!("Port {port} is still in use.")));
                    }
                    out.push(NetRequest {
                        network_id: Some(p.network_id.clone()),
                        fixed_ip: None,
                        port_id: Some(port.to_string()),
                        security_groups: Vec::new(),
                    });
                    continue;
                }
                let uuid = str_field(o, "uuid")?.ok_or_else(|| {
                    bad("Invalid input for field/attribute networks. Each network needs 'uuid' or 'port'")
                })?;
                let net = state
                    .store
                    .get_network(uuid)
                    .await
                    .map_err(|_| bad(format!("Network {uuid} could not be found.")))?;
                if !ctx.is_admin() && net.project_id != project_id && net.shared == 0 {
                    return Err(bad(format!("Network {uuid} could not be found.")));
                }
                let fixed_ip = match str_field(o, "fixed_ip")? {
                    Some(ip) => {
                        ip.parse::<std::net::IpAddr>().map_err(|_| {
                            bad(format!(
                                "Invalid input for field/attribute fixed_ip. Value: {ip}. '{ip}' is not a 'ip-address'"
                            ))
                        })?;
                        Some(ip.to_string())
                    }
                    None => None,
                };
                if net.subnets.is_empty() {
                    return Err(bad(format!("Network {uuid} requires a subnet in order to boot instances on.")));
                }
                out.push(NetRequest {
                    network_id: Some(uuid.to_string()),
                    fixed_ip,
                    port_id: None,
                    security_groups: Vec::new(),
                });
            }
            Ok(out)
        }
        Some(other) => Err(bad(format!("Invalid input for field/attribute networks. Value: {other}."))),
    }
}

/// `max_count` as asked (1 when absent), for checks before the quota's count.
fn max_count_requested(b: &Map<String, Value>) -> ApiResult<i64> {
    let min = count_field(b, "min_count")?.unwrap_or(1);
    Ok(count_field(b, "max_count")?.unwrap_or(min))
}

/// The image to boot: `imageRef`, or the image of an image→local boot device.
fn image_ref(b: &Map<String, Value>) -> ApiResult<String> {
    if let Some(r) = str_field(b, "imageRef")?.filter(|s| !s.is_empty()) {
        // Clients may send a full URL; the id is its last segment.
        return Ok(r.rsplit('/').next().unwrap_or(r).to_string());
    }
    if let Some(Value::Array(bdms)) = b.get("block_device_mapping_v2") {
        for bdm in bdms {
            let boot = bdm.get("boot_index").is_some_and(|i| i == 0 || i == "0");
            if boot
                && bdm["source_type"] == "image"
                && bdm["destination_type"] != "volume"
                && let Some(u) = bdm["uuid"].as_str()
            {
                return Ok(u.to_string());
            }
        }
    }
    Err(bad("Invalid input for field/attribute imageRef. An image is required (imageRef or an image block device)."))
}

/// The image whose own mappings a boot takes (Nova's boot image meta): `imageRef`, else the
/// request's image mapping with boot index 0. `None` when there is none or the caller cannot
/// see it (the usual checks then refuse the request).
async fn defining_image(
    state: &AppState,
    ctx: &Ctx,
    b: &Map<String, Value>,
    reqs: &[super::bdm::Requested],
) -> ApiResult<Option<Image>> {
    let id = match str_field(b, "imageRef")? {
        Some(r) if !r.is_empty() => r.rsplit('/').next().unwrap_or(r).to_string(),
        _ => match reqs.iter().find(|m| m.boot_index == Some(0) && m.source_type == "image") {
            Some(m) => m.uuid.clone().unwrap_or_default(),
            None => return Ok(None),
        },
    };
    let img = match state.store.get_image(&id).await {
        Ok(i) => i,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let project = ctx.project_id()?;
    Ok(state.store.image_visible_to(&img, Some(project), ctx.is_admin()).await?.then_some(img))
}

/// `POST /servers`
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    ctx.require_member("os_compute_api:servers:create")?;
    let project_id = ctx.project_id()?.to_string();
    let b = body
        .get("server")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("Invalid input for field/attribute server. 'server' is a required property"))?;
    let name = str_field(b, "name")?
        .ok_or_else(|| bad("Invalid input for field/attribute server. 'name' is a required property"))?;
    if name.trim().is_empty() || name.len() > 255 {
        return Err(bad(format!("Invalid input for field/attribute name. Value: {name}. Must be 1-255 characters")));
    }
    let flavor_ref = str_field(b, "flavorRef")?
        .ok_or_else(|| bad("Invalid input for field/attribute server. 'flavorRef' is a required property"))?;
    let flavor_id = flavor_ref.rsplit('/').next().unwrap_or(flavor_ref);
    let flavor = match state.store.get_flavor(flavor_id).await {
        Ok(f) => f,
        Err(StoreError::NotFound(_)) => {
            return Err(bad(format!("Flavor {flavor_id} could not be found.")));
        }
        Err(e) => return Err(e.into()),
    };
    if flavor.is_public == 0 && !ctx.is_admin() && !state.store.flavor_access(&flavor.id).await?.contains(&project_id) {
        return Err(bad(format!("Flavor {flavor_id} could not be found.")));
    }
    // Boot from volume: the root disk is a volume of `block_device_mapping_v2` (then
    // `imageRef` may be empty and the flavor's disk does not matter).
    let image_given = str_field(b, "imageRef")?.is_some_and(|r| !r.is_empty());
    let mut bdm_requests = if b.contains_key("block_device_mapping") {
        super::bdm::parse_legacy(b, image_given)?
    } else {
        super::bdm::parse(b, image_given)?
    };
    // An image may define mappings of its own (a volume-backed server's snapshot maps its
    // volume snapshots): they merge with the request's, and may make the root a volume.
    let defining = defining_image(&state, &ctx, b, &bdm_requests).await?;
    let mut root_from_image = None;
    if let Some(img) = &defining
        && let Some(image_bdms) = super::bdm::image_defined(img)?
    {
        if image_bdms.iter().any(|m| m.boot_index == Some(0)) {
            root_from_image = Some(img.clone());
        }
        bdm_requests = super::bdm::merge(image_bdms, bdm_requests);
    }
    let volume_boot = super::bdm::volume_boot(&bdm_requests);
    let mut bdms = if bdm_requests.is_empty() {
        super::bdm::Checked::default()
    } else {
        super::bdm::check(&state, &ctx, &bdm_requests, image_given).await?
    };
    let local_disks = super::bdm::check_local(&bdm_requests, flavor.ephemeral, flavor.swap, !volume_boot)?;
    if let Some(img) = root_from_image {
        // The image stays what the server's properties come from (its root is a snapshot).
        if img.status != "active" {
            return Err(bad(format!("Image {} is not active.", img.id)));
        }
        bdms.boot_image = Some(img);
    }
    let image = if volume_boot {
        let image = super::bdm::boot_image_or_blank(bdms.boot_image.clone());
        if image.min_ram > flavor.ram {
            return Err(bad("Flavor's memory is too small for requested image."));
        }
        image
    } else {
        let image_id = image_ref(b)?;
        let image = match state.store.get_image(&image_id).await {
            Ok(i) => i,
            Err(StoreError::NotFound(_)) => return Err(bad("Can not find requested image")),
            Err(e) => return Err(e.into()),
        };
        if !state.store.image_visible_to(&image, Some(&project_id), ctx.is_admin()).await? {
            return Err(bad("Can not find requested image"));
        }
        if image.status != "active" {
            return Err(bad(format!("Image {image_id} is not active.")));
        }
        if image.min_ram > flavor.ram {
            return Err(bad("Flavor's memory is too small for requested image."));
        }
        if image.min_disk > flavor.disk && flavor.disk > 0 {
            return Err(bad("Flavor's disk is too small for requested image."));
        }
        let image_size_gb = (image.size.unwrap_or(0) + (1 << 30) - 1) >> 30;
        if flavor.disk > 0 && image_size_gb > flavor.disk {
            return Err(bad(format!(
                "Flavor's disk is too small for requested image. Flavor disk is {} GB, image is {image_size_gb} GB.",
                flavor.disk
            )));
        }
        image
    };
    // A volume-booted server shows `image: ""` unless the request named one (as Nova).
    let instance_image_id = match (volume_boot, str_field(b, "imageRef")?) {
        (false, _) => image.id.clone(),
        (true, Some(r)) if !r.is_empty() => r.rsplit('/').next().unwrap_or(r).to_string(),
        (true, _) => String::new(),
    };
    if !bdms.volumes.is_empty() && max_count_requested(b)? > 1 {
        return Err(bad(
            "Block Device Mapping is Invalid: an existing volume cannot be attached to more than one server.",
        ));
    }
    let key = match str_field(b, "key_name")? {
        Some(k) => Some(state.store.get_keypair(&ctx.user.id, k).await.map_err(|_| bad("Invalid key_name provided."))?),
        None => None,
    };
    let metadata = metadata_field(b)?;
    let user_data = match str_field(b, "user_data")? {
        Some(u) => {
            if u.len() > 65535 {
                return Err(bad("Invalid input for field/attribute user_data. Value length exceeds 65535."));
            }
            base64::engine::general_purpose::STANDARD
                .decode(u.trim())
                .map_err(|_| bad("User data needs to be valid base 64."))?;
            Some(u.to_string())
        }
        None => None,
    };
    let access_ip_v4 = access_ip(b, "accessIPv4")?;
    let access_ip_v6 = access_ip(b, "accessIPv6")?;
    // Nova uses the caller's password when given (and echoes it), else makes one.
    let admin_pass = match str_field(b, "adminPass")? {
        Some(p) => p.to_string(),
        None => crate::auth::random_secret()[..12].to_string(),
    };
    // A requested config drive is always attached, whatever the host's own policy.
    let config_drive = match b.get("config_drive") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(c)) => *c,
        Some(Value::String(c)) if c.is_empty() => false,
        Some(Value::String(c)) => crate::extract::parse_bool(c)
            .ok_or_else(|| bad(format!("Invalid input for field/attribute config_drive. Value: {c}.")))?,
        Some(other) => return Err(bad(format!("Invalid input for field/attribute config_drive. Value: {other}."))),
    };
    let az = str_field(b, "availability_zone")?
        .map(|z| z.split(':').next().unwrap_or(z).to_string())
        .filter(|z| !z.is_empty());
    // Nova refuses a zone no enabled host is in (unless a host is forced with `zone:host`).
    if let Some(z) = &az
        && !str_field(b, "availability_zone")?.is_some_and(|r| r.contains(':'))
        && !super::server_groups::zone_available(&state, z).await?
    {
        return Err(bad("The requested availability zone is not available"));
    }
    // Scheduler hints, stored with each instance; the `group` hint makes it a member.
    let hints = super::server_groups::boot_hints(&body)?;
    let group = match super::server_groups::group_hint(&hints) {
        Some(id) => Some(super::server_groups::group_for_boot(&state, &ctx, &id).await?),
        None => None,
    };
    let description = match b.get("description") {
        None | Some(Value::Null) => None,
        Some(_) if !v.at_least(19) => {
            return Err(bad(
                "Invalid input for field/attribute server. Additional properties are not allowed ('description' was unexpected)",
            ));
        }
        Some(Value::String(d)) if d.len() <= 255 => Some(d.clone()),
        Some(other) => {
            return Err(bad(format!("Invalid input for field/attribute description. Value: {other}.")));
        }
    };
    let tags: Vec<String> = match b.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) if !v.at_least(52) => {
            return Err(bad(
                "Invalid input for field/attribute server. Additional properties are not allowed ('tags' was unexpected)",
            ));
        }
        Some(raw) => super::tags::check_tags("tags", raw)?,
    };
    let min_count = count_field(b, "min_count")?.unwrap_or(1);
    let max_count = count_field(b, "max_count")?.unwrap_or(min_count);
    if max_count < min_count {
        return Err(bad("min_count must be <= max_count"));
    }
    let mut networks = resolve_networks(&state, &ctx, v, b.get("networks"), &project_id).await?;
    // The ports the build creates get these groups (none named: the project's default group).
    let groups = super::security_groups::resolve_requested(&state, &project_id, b.get("security_groups")).await?;
    for n in networks.iter_mut().filter(|n| n.port_id.is_none()) {
        n.security_groups.clone_from(&groups);
    }
    if networks.iter().any(|n| n.port_id.is_some() || n.fixed_ip.is_some()) && max_count > 1 {
        return Err(bad(
            "Unable to launch multiple instances with a single configured port ID or fixed IP. Please launch your instance one by one with different ports.",
        ));
    }

    // Quotas: as many as fit between min_count and max_count (Nova's behaviour).
    let (used_n, used_cores, used_ram) = state.store.project_usage(&project_id).await?;
    let [lim_n, lim_cores, lim_ram] =
        super::quotas::limits_for(&state, &project_id, &["instances", "cores", "ram"]).await?;
    // A user's own quota (when an admin set one) applies to that user's share as well.
    let (user_n, user_cores, user_ram) = state.store.user_usage(&project_id, &ctx.user.id).await?;
    let [ulim_n, ulim_cores, ulim_ram] =
        super::quotas::user_limits_for(&state, &project_id, &ctx.user.id, &["instances", "cores", "ram"]).await?;
    let fits = |n: i64| {
        (lim_n < 0 || used_n + n <= lim_n)
            && (lim_cores < 0 || used_cores + n * flavor.vcpus <= lim_cores)
            && (lim_ram < 0 || used_ram + n * flavor.ram <= lim_ram)
            && (ulim_n < 0 || user_n + n <= ulim_n)
            && (ulim_cores < 0 || user_cores + n * flavor.vcpus <= ulim_cores)
            && (ulim_ram < 0 || user_ram + n * flavor.ram <= ulim_ram)
    };
    let count = (min_count..=max_count).rev().find(|n| fits(*n)).ok_or_else(|| {
        let (res, used, lim, req) = if lim_n >= 0 && used_n + min_count > lim_n {
            ("instances", used_n, lim_n, min_count)
        } else if lim_cores >= 0 && used_cores + min_count * flavor.vcpus > lim_cores {
            ("cores", used_cores, lim_cores, min_count * flavor.vcpus)
        } else if lim_ram >= 0 && used_ram + min_count * flavor.ram > lim_ram {
            ("ram", used_ram, lim_ram, min_count * flavor.ram)
        } else if ulim_n >= 0 && user_n + min_count > ulim_n {
            ("instances", user_n, ulim_n, min_count)
        } else if ulim_cores >= 0 && user_cores + min_count * flavor.vcpus > ulim_cores {
            ("cores", user_cores, ulim_cores, min_count * flavor.vcpus)
        } else {
            ("ram", user_ram, ulim_ram, min_count * flavor.ram)
        };
        ApiError::forbidden(format!(
            "Quota exceeded for {res}: Requested {req}, but already used {used} of {lim} {res}"
        ))
    })?;

    // The group's member quota, for every instance of the request before any is made.
    if let Some((g, limit)) = &group
        && *limit >= 0
        && state.store.group_members(&[&g.id]).await?.len() as i64 + count > *limit
    {
        return Err(ApiError::forbidden("Quota exceeded, too many servers in group"));
    }
    let flavor_snapshot = json!({
        "id": flavor.id, "name": flavor.name, "vcpus": flavor.vcpus, "ram": flavor.ram, "disk": flavor.disk,
        "ephemeral": flavor.ephemeral, "swap": flavor.swap, "extra_specs": flavor.extra_specs_map(),
    })
    .to_string();
    let reservation_id = format!("r-{}", &new_uuid()[..8]);
    let request_id = ctx.request_id.clone();
    let mut first = None;
    for index in 0..count {
        let display = if count > 1 { format!("{name}-{}", index + 1) } else { name.to_string() };
        let ts = now();
        let inst = Instance {
            id: new_uuid(),
            hostname: hostname_from(&display),
            name: display,
            description: description.clone(),
            project_id: project_id.clone(),
            user_id: ctx.user.id.clone(),
            flavor_id: flavor.id.clone(),
            flavor: flavor_snapshot.clone(),
            image_id: instance_image_id.clone(),
            key_name: key.as_ref().map(|k| k.name.clone()),
            key_data: key.as_ref().map(|k| k.public_key.clone()),
            user_data: user_data.clone(),
            metadata: json!(metadata).to_string(),
            tags: json!(tags).to_string(),
            availability_zone: az.clone(),
            config_drive: if config_drive { CONFIG_DRIVE_ATTACHED.into() } else { String::new() },
            reservation_id: reservation_id.clone(),
            launch_index: index,
            host_id: None,
            alternates: "[]".into(),
            tried_hosts: "[]".into(),
            claimed: 0,
            requested_networks: json!(networks).to_string(),
            owned_ports: "[]".into(),
            vm_state: "building".into(),
            task_state: Some("scheduling".into()),
            power_state: 0,
            fault: None,
            locked: 0,
            build_deadline: None,
            created_at: ts.clone(),
            updated_at: ts.clone(),
            launched_at: None,
            terminated_at: None,
            deleted: 0,
            access_ip_v4: access_ip_v4.clone(),
            access_ip_v6: access_ip_v6.clone(),
        };
        // The instance and its `create` action land together (one commit, and never one
        // without the other).
        if !bdms.mappings.is_empty() {
            // Stored (existing volumes reserved) before the instance, which the build reads.
            super::bdm::store_for(&state, &inst, &bdms).await?;
        }
        if !local_disks.is_empty() {
            super::bdm::store_local(&state, &inst, &local_disks).await?;
        }
        if let Some((g, limit)) = &group
            && !state.store.add_group_members(&g.id, &[&inst.id], *limit).await?
        {
            return Err(ApiError::forbidden("Quota exceeded, too many servers in group"));
        }
        if !hints.is_empty() {
            state.store.set_scheduler_hints(&inst.id, &Value::Object(hints.clone()).to_string()).await?;
        }
        state.store.create_instance(&inst, Some(&new_action(&ctx, &inst.id, "create", &request_id))).await?;
        conductor::spawn_new_build(&state, inst.clone(), image.clone());
        if first.is_none() {
            first = Some(inst);
        }
    }
    let inst = first.ok_or_else(|| ApiError::internal("no instance created"))?;
    if b.get("return_reservation_id").is_some_and(|r| r == true || r == "True" || r == "true") {
        return Ok((StatusCode::ACCEPTED, axum::Json(json!({"reservation_id": reservation_id}))).into_response());
    }
    let body = json!({"server": {
        "id": inst.id,
        "links": links(&state, &format!("servers/{}", inst.id)),
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": requested_group_names(b.get("security_groups")),
        "adminPass": admin_pass,
    }});
    let mut resp = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&state.url(&format!("compute/v2.1/servers/{}", inst.id))) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// The groups a create response names: those requested, else `default` (as Nova answers).
fn requested_group_names(raw: Option<&Value>) -> Value {
    let names: Vec<Value> = raw
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|g| g.get("name").cloned()).map(|n| json!({"name": n})).collect())
        .unwrap_or_default();
    if names.is_empty() { json!([{"name": "default"}]) } else { Value::Array(names) }
}

fn new_action(ctx: &Ctx, instance_id: &str, action: &str, request_id: &str) -> InstanceAction {
    let ts = now();
    InstanceAction {
        id: new_uuid(),
        instance_id: instance_id.to_string(),
        request_id: request_id.to_string(),
        action: action.to_string(),
        project_id: ctx.project_id().map(str::to_string).unwrap_or_default(),
        user_id: ctx.user.id.clone(),
        message: None,
        start_time: ts.clone(),
        finish_time: None,
        updated_at: ts,
    }
}

pub(crate) async fn record_action(
    state: &AppState,
    ctx: &Ctx,
    instance_id: &str,
    action: &str,
    request_id: &str,
) -> ApiResult<()> {
    state.store.start_action(&new_action(ctx, instance_id, action, request_id)).await?;
    Ok(())
}

// ---- list / show ----

/// Every server status Nova knows (a filter on one we never show simply matches nothing).
const NOVA_STATUSES: [&str; 21] = [
    "ACTIVE",
    "BUILD",
    "CONFIRMING_RESIZE",
    "DELETED",
    "ERROR",
    "HARD_REBOOT",
    "MIGRATING",
    "PASSWORD",
    "PAUSED",
    "REBOOT",
    "REBUILD",
    "RESCUE",
    "RESIZE",
    "REVERT_RESIZE",
    "SHELVED",
    "SHELVED_OFFLOADED",
    "SHUTOFF",
    "SOFT_DELETED",
    "SUSPENDED",
    "UNKNOWN",
    "VERIFY_RESIZE",
];

const SORT_KEYS: [&str; 8] =
    ["created_at", "display_name", "updated_at", "uuid", "vm_state", "task_state", "launched_at", "host"];

async fn list_inner(state: AppState, ctx: Ctx, v: ApiVersion, q: Query, detail: bool) -> ApiResult<Response> {
    ctx.require_reader("os_compute_api:servers:index")?;
    let all_tenants = q.has("all_tenants")
        && q.get("all_tenants").is_none_or(|s| s.is_empty() || crate::extract::parse_bool(s) != Some(false));
    if all_tenants {
        ctx.require_admin("os_compute_api:servers:index:get_all_tenants")?;
    }
    let project = if all_tenants {
        q.get("project_id").or(q.get("tenant_id")).map(str::to_string)
    } else {
        Some(ctx.project_id()?.to_string())
    };
    let changes_since = match q.get("changes-since") {
        Some(s) => Some(crate::store::fmt_time(
            chrono::DateTime::parse_from_rfc3339(s)
                .or_else(|_| chrono::DateTime::parse_from_rfc3339(&format!("{s}Z")))
                .map_err(|_| {
                    bad(format!(
                        "Invalid input for query parameters changes-since. Value: {s}. '{s}' is not a 'date-time'"
                    ))
                })?
                .with_timezone(&chrono::Utc),
        )),
        None => None,
    };
    let host_filter = match q.get("host") {
        Some(h) if ctx.is_admin() => {
            Some(state.store.get_host_by_name(h).await.map(|h| h.id).unwrap_or_else(|_| "-none-".into()))
        }
        _ => None,
    };
    let name_re = match q.get("name") {
        Some(n) => Some(regex::Regex::new(n).map_err(|_| {
            bad(format!("Invalid input for query parameters name. Value: {n}. Not a valid regular expression"))
        })?),
        None => None,
    };
    let status_filter: Vec<String> = q.all("status").iter().map(|s| s.to_ascii_uppercase()).collect();
    for s in &status_filter {
        if !NOVA_STATUSES.contains(&s.as_str()) {
            // Nova: an empty list before 2.38, a 400 from 2.38.
            if v.at_least(38) {
                return Err(bad(format!("Invalid status value {s}")));
            }
            return Ok(axum::Json(json!({"servers": []})).into_response());
        }
    }
    // `ip` / `ip6`: regular expressions searched in the servers' addresses (as Nova does).
    let ip_re = |key: &str| -> ApiResult<Option<regex::Regex>> {
        q.get(key)
            .map(|p| {
                regex::Regex::new(p).map_err(|_| {
                    bad(format!("Invalid input for query parameters {key}. Value: {p}. Not a valid regular expression"))
                })
            })
            .transpose()
    };
    let (ip4_re, ip6_re) = (ip_re("ip")?, ip_re("ip6")?);
    let sort_key = q.get("sort_key").unwrap_or("created_at");
    let sort = InstanceSort::parse(sort_key)
        .filter(|_| SORT_KEYS.contains(&sort_key))
        .ok_or_else(|| bad(format!("Invalid input for query parameters sort_key. Value: {sort_key}.")))?;
    let desc = match q.get("sort_dir").unwrap_or("desc") {
        "desc" => true,
        "asc" => false,
        other => {
            return Err(bad(format!("Invalid input for query parameters sort_dir. Value: {other}.")));
        }
    };
    let filter = InstanceFilter {
        project_id: project,
        host_id: host_filter,
        changes_since,
        include_deleted: ctx.is_admin()
            && q.get("deleted").is_some_and(|d| crate::extract::parse_bool(d) == Some(true)),
    };
    let last_part = |key: &str| q.get(key).map(|v| v.rsplit('/').next().unwrap_or_default().to_string());
    let matching = InstanceMatch {
        image_id: last_part("image"),
        flavor_id: last_part("flavor"),
        reservation_id: q.get("reservation_id").map(str::to_string),
    };
    let marker_error = |e: ApiError| {
        if e.status == StatusCode::BAD_REQUEST && e.message.starts_with("marker") {
            bad(format!("marker [{}] not found", q.get("marker").unwrap_or_default()))
        } else {
            e
        }
    };
    let tag_filter = super::tags::TagFilter::from_query(&q, v);
    let locked_filter = super::tags::locked_filter(&q, v)?;
    let in_memory = name_re.is_some()
        || !status_filter.is_empty()
        || ip4_re.is_some()
        || ip6_re.is_some()
        || tag_filter.is_some()
        || locked_filter.is_some();
    // The detailed page read in SQL comes with its extras (see `list_instances_page_with_extras`).
    let mut read_extras = None;
    let (rows, page) = if in_memory {
        // Filters SQL cannot express (regular expressions, the status derived from two
        // columns): the SQL-filtered listing in order, then these filters and the page here.
        let all = InstancePage { sort, desc, marker: None, limit: None };
        let mut rows: Vec<Instance> = state
            .store
            .list_instances_page(&filter, &matching, &all)
            .await?
            .into_iter()
            .filter(|i| name_re.as_ref().is_none_or(|re| re.is_match(&i.name)))
            .filter(|i| status_filter.is_empty() || status_filter.iter().any(|s| s == status(i)))
            .filter(|i| tag_filter.as_ref().is_none_or(|f| f.matches(i)))
            .filter(|i| locked_filter.is_none_or(|l| l == (i.locked != 0)))
            .collect();
        if ip4_re.is_some() || ip6_re.is_some() {
            let mut ips: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (id, ip) in state.store.listed_instance_ips(&filter, &matching).await? {
                ips.entry(id).or_default().push(ip);
            }
            let none = Vec::new();
            rows.retain(|i| {
                let ips = ips.get(&i.id).unwrap_or(&none);
                let hit = |re: &Option<regex::Regex>, v6: bool| {
                    re.as_ref().is_none_or(|re| ips.iter().any(|a| a.contains(':') == v6 && re.is_match(a)))
                };
                hit(&ip4_re, false) && hit(&ip6_re, true)
            });
        }
        let page = super::flavors::paginate(&mut rows, &q, |i| &i.id).map_err(marker_error)?;
        (rows, page)
    } else {
        let marker = q.get("marker");
        let limit = q.uint("limit")?.map(|l| usize::try_from(l).unwrap_or(MAX_LIMIT).min(MAX_LIMIT));
        let effective = i64::try_from(limit.unwrap_or(MAX_LIMIT)).unwrap_or(i64::MAX);
        let want = InstancePage { sort, desc, marker, limit: Some(effective) };
        let read = if detail {
            state.store.list_instances_page_with_extras(&filter, &matching, &want).await.map(|listed| {
                let (rows, extras): (Vec<_>, Vec<_>) = listed.into_iter().unzip();
                read_extras = Some(extras);
                rows
            })
        } else {
            state.store.list_instances_page(&filter, &matching, &want).await
        };
        let rows = match read {
            Ok(rows) => rows,
            Err(StoreError::NotFound(_)) => {
                return Err(bad(format!("marker [{}] not found", marker.unwrap_or_default())));
            }
            Err(e) => return Err(e.into()),
        };
        (rows, limit)
    };
    let path = if detail { "servers/detail" } else { "servers" };
    let servers_links = super::next_links(&state, path, page, rows.len(), rows.last().map(|i| i.id.as_str()));
    // Serialised straight from the rows (see `server_view`): a page of a thousand servers is
    // never held as `serde_json::Value`s.
    // Sized for a typical item (about 1.5 KiB detailed), so the body is not copied as it grows.
    let mut body = Vec::with_capacity(256 + rows.len() * if detail { 2048 } else { 256 });
    if detail {
        let extras = match read_extras {
            Some(parts) => with_hosts(&state, &rows, parts).await?,
            None => extras_of(&state, &rows).await?,
        };
        let servers: Vec<_> =
            rows.iter().zip(&extras).map(|(inst, x)| view(&state, &ctx, v, inst, x, Shape::Detail)).collect();
        serde_json::to_writer(&mut body, &ListBody { servers, servers_links })
    } else {
        let servers: Vec<_> = rows
            .iter()
            .map(|i| Brief { id: &i.id, name: &i.name, links: links(&state, &format!("servers/{}", i.id)) })
            .collect();
        serde_json::to_writer(&mut body, &ListBody { servers, servers_links })
    }
    .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// `GET /servers` items.
#[derive(serde::Serialize)]
struct Brief<'a> {
    id: &'a str,
    name: &'a str,
    links: Value,
}

#[derive(serde::Serialize)]
struct ListBody<T> {
    servers: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    servers_links: Option<Value>,
}

pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> ApiResult<Response> {
    list_inner(state, ctx, v, q, false).await
}

pub async fn list_detail(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    q: Query,
) -> ApiResult<Response> {
    list_inner(state, ctx, v, q, true).await
}

pub async fn show(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
) -> JsonResult {
    ctx.require_reader("os_compute_api:servers:show")?;
    let inst = visible(&state, &ctx, &id).await?;
    let mut server = render(&state, &ctx, v, &inst, Shape::Show).await?;
    // 2.71: the server group the server is in (Nova shows at most one).
    if v.at_least(71) {
        let groups = state.store.groups_of_instance(&inst.id).await?;
        server["server_groups"] = json!(groups.iter().take(1).map(|g| g.id.as_str()).collect::<Vec<_>>());
    }
    Ok(axum::Json(json!({"server": server})))
}

/// `PUT /servers/{id}`: name and (2.19+) description.
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Extension(v): Extension<ApiVersion>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_member("os_compute_api:servers:update")?;
    let inst = visible(&state, &ctx, &id).await?;
    let b = body
        .get("server")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("Invalid input for field/attribute server. 'server' is a required property"))?;
    let mut name = inst.name.clone();
    let mut hostname = inst.hostname.clone();
    let mut description = inst.description.clone();
    let (mut access_ip_v4, mut access_ip_v6) = (inst.access_ip_v4.clone(), inst.access_ip_v6.clone());
    for (k, val) in b {
        match k.as_str() {
            "name" => {
                let n = val
                    .as_str()
                    .filter(|n| !n.trim().is_empty() && n.len() <= 255)
                    .ok_or_else(|| bad(format!("Invalid input for field/attribute name. Value: {val}.")))?;
                name = n.to_string();
                hostname = hostname_from(n);
            }
            "description" if v.at_least(19) => {
                description = match val {
                    Value::Null => None,
                    Value::String(d) if d.len() <= 255 => Some(d.clone()),
                    other => {
                        return Err(bad(format!("Invalid input for field/attribute description. Value: {other}.")));
                    }
                }
            }
            "accessIPv4" => access_ip_v4 = access_ip(b, k)?,
            "accessIPv6" => access_ip_v6 = access_ip(b, k)?,
            other => {
                return Err(bad(format!(
                    "Invalid input for field/attribute server. Additional properties are not allowed ('{other}' was unexpected)"
                )));
            }
        }
    }
    state
        .store
        .update_instance_fields(&Instance { name, hostname, description, access_ip_v4, access_ip_v6, ..inst })
        .await?;
    let inst = state.store.get_instance(&id).await?;
    let shape = if v.at_least(75) { Shape::Show } else { Shape::UpdateLegacy };
    Ok(axum::Json(json!({"server": render(&state, &ctx, v, &inst, shape).await?})))
}

// ---- delete and actions ----

/// Sets the action's first task state and hands the work to the instance's host.
pub(crate) async fn start_action(state: &AppState, ctx: &Ctx, read: &Instance, action: UserAction) -> ApiResult<()> {
    /// How often a change that raced with ours (a build finishing, a heartbeat's power sync)
    /// is read again and the request decided anew before it is refused.
    const ATTEMPTS: usize = 5;
    // Decided before any state changes: an action with arguments has its own module.
    let agent_action = super::lifecycle::agent_action(action)
        .ok_or_else(|| ApiError::internal(format!("'{}' is not a simple action", action.name())))?;
    let mut inst = read.clone();
    for attempt in 1..=ATTEMPTS {
        let vm = vm_state(&inst);
        let task = task_state(&inst);
        if action == UserAction::Delete && task == Some(TaskState::Deleting) {
            return Ok(()); // another delete got there first: already on its way
        }
        // Nova checks the lock before the state (`check_instance_lock` is the outer decorator).
        if inst.locked != 0 && !ctx.is_admin() {
            return Err(ApiError::conflict(format!("Instance {} is locked", inst.id)));
        }
        if !states::allowed(action, vm, task) {
            return Err(states::refuse(action, &inst.id, vm, task));
        }
        let to = NewState {
            vm_state: &inst.vm_state,
            task_state: action.first_task().map(TaskState::as_str),
            power_state: None,
        };
        let expect_task = inst.task_state.as_deref();
        if state.store.transition(&inst.id, Expect::Task(expect_task), to).await?.is_some() {
            break;
        }
        // Someone else changed it between our read and our write: decide again on what is
        // there now (Nova retries on its expected task state the same way), not on what was.
        inst = state.store.get_instance(&inst.id).await?;
        if attempt == ATTEMPTS {
            return Err(states::refuse(action, &inst.id, vm_state(&inst), task_state(&inst)));
        }
    }
    let inst = &inst;
    record_action(state, ctx, &inst.id, action.name(), &ctx.request_id).await?;
    let host = match &inst.host_id {
        Some(h) => state.store.get_host(h).await.ok().filter(|h| conductor::host_up(state, h)),
        None => None,
    };
    match host {
        Some(h) => {
            if action == UserAction::Delete {
                // A build still queued for the host is superseded by the delete.
                state.store.cancel_work(&inst.id, None).await?;
            } else if action == UserAction::RebootHard {
                // A stuck soft reboot's work is superseded.
                state.store.cancel_work(&inst.id, Some(&h.id)).await?;
            }
            let json = serde_json::to_string(&agent_action).map_err(ApiError::internal)?;
            state.store.enqueue_work(&inst.id, &h.id, &json).await?;
            if action != UserAction::Delete {
                super::lifecycle::arm_deadline(state, &inst.id).await?;
            }
            if let Some(a) = state.store.latest_action(&inst.id, action.name()).await? {
                state
                    .store
                    .start_event(
                        &a.id,
                        &format!("compute_{}_instance", super::lifecycle::event_verb(action)),
                        Some(&h.name),
                    )
                    .await?;
            }
            state.signals.notify(&h.id);
        }
        None if action == UserAction::Delete => {
            // No host (never scheduled) or the host is down: delete locally, as Nova does.
            conductor::complete_delete(state, &inst.id).await.map_err(|e| ApiError::internal(e.to_string()))?;
        }
        None => {
            let to = NewState { vm_state: &inst.vm_state, task_state: None, power_state: None };
            state.store.transition(&inst.id, Expect::Any, to).await?;
            return Err(ApiError::conflict(format!(
                "Compute host of instance {} is not available; cannot {}.",
                inst.id,
                action.name()
            )));
        }
    }
    Ok(())
}

/// `DELETE /servers/{id}`: 204.
pub async fn delete(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.require_member("os_compute_api:servers:delete")?;
    let inst = visible(&state, &ctx, &id).await?;
    if inst.task_state.as_deref() == Some("deleting") {
        return Ok(StatusCode::NO_CONTENT); // already on its way
    }
    // With `reclaim_instance_interval` set, a launched server is soft-deleted instead.
    if super::rebuild::soft_delete(&state, &ctx, &inst).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    start_action(&state, &ctx, &inst, UserAction::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /servers/{id}/action`
pub async fn action(
    State(state): State<AppState>,
    Extension(v): Extension<ApiVersion>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let obj = body
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| bad("The action body must hold exactly one action."))?;
    let (name, args) = obj.iter().next().ok_or_else(|| bad("No action given."))?;
    if let Some(answer) = super::consoles::action(&state, &ctx, v, &id, name, &body).await {
        return answer;
    }
    if let Some(answer) = super::lifecycle::action(&state, &ctx, v, &id, name, args).await {
        return answer;
    }
    if let Some(answer) = super::rebuild::action(&state, &ctx, v, &id, name, args).await {
        return answer;
    }
    if let Some(answer) = super::server_images::action(&state, &ctx, v, &id, name, args).await {
        return answer;
    }
    if let Some(answer) = super::migrations::action(&state, &ctx, v, &id, name, args).await {
        return answer;
    }
    if let Some(answer) = super::evacuate::action(&state, &ctx, v, &id, name, args).await {
        return answer;
    }
    if let Some(answer) = super::live_migration::action(&state, &ctx, v, &id, name, args).await {
        return answer;
    }
    match name.as_str() {
        "os-stop" | "os-start" | "reboot" => {
            ctx.require_member(&format!("os_compute_api:servers:{name}"))?;
            let inst = visible(&state, &ctx, &id).await?;
            let action = match name.as_str() {
                "os-stop" => UserAction::Stop,
                "os-start" => UserAction::Start,
                _ => match args.get("type").and_then(Value::as_str).map(str::to_ascii_uppercase).as_deref() {
                    Some("SOFT") => UserAction::RebootSoft,
                    Some("HARD") => UserAction::RebootHard,
                    _ => {
                        return Err(bad("Invalid input for field/attribute type. Value must be one of 'SOFT', 'HARD'"));
                    }
                },
            };
            start_action(&state, &ctx, &inst, action).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "addSecurityGroup" | "removeSecurityGroup" => {
            super::security_groups::action(&state, &ctx, &id, name == "addSecurityGroup", args).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        "os-getConsoleOutput" => {
            ctx.require_member("os_compute_api:os-console-output")?;
            let inst = visible(&state, &ctx, &id).await?;
            let length = match args.get("length") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => n.as_i64().filter(|n| *n >= -1),
                Some(Value::String(s)) => s.parse::<i64>().ok().filter(|n| *n >= -1),
                _ => return Err(bad("Invalid input for field/attribute length.")),
            };
            let lines = match length {
                None | Some(-1) => None,
                Some(n) => Some(u32::try_from(n).map_err(|_| bad("Invalid input for field/attribute length."))?),
            };
            let output = console_output(&state, &inst, lines).await?;
            Ok(axum::Json(json!({"output": output})).into_response())
        }
        // Nova casts this to the compute host, whose libvirt driver has nothing to inject (the
        // guest reads its network from DHCP and the metadata service, as here).
        "injectNetworkInfo" => {
            ctx.require_admin("os_compute_api:os-admin-actions:inject_network_info")?;
            visible(&state, &ctx, &id).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        other => Err(bad(format!("There is no such action: {other}"))),
    }
}

/// Asks the instance's agent for its console log and waits (up to 10 s) for the answer.
async fn console_output(state: &AppState, inst: &Instance, lines: Option<u32>) -> ApiResult<String> {
    let vm = vm_state(inst);
    // The log is a file on the host: readable whether the guest runs, is paused or saved.
    // (Nova checks only that there is a host; a rescued guest's console is the rescue boot's.)
    if !matches!(
        vm,
        VmState::Active | VmState::Stopped | VmState::Error | VmState::Paused | VmState::Suspended | VmState::Rescued
    ) || inst.host_id.is_none()
    {
        return Err(ApiError::conflict(format!(
            "Cannot 'get_console_output' instance {} while it is in vm_state {}",
            inst.id, inst.vm_state
        )));
    }
    let host_id = inst.host_id.clone().unwrap_or_default();
    let host = state.store.get_host(&host_id).await?;
    if !conductor::host_up(state, &host) {
        return Err(ApiError::conflict("The compute host of this instance is not available.".to_string()));
    }
    let action =
        serde_json::to_string(&meridian_common::agent::Action::ConsoleLog { lines }).map_err(ApiError::internal)?;
    let work_id = state.store.enqueue_work(&inst.id, &host_id, &action).await?;
    let signal = state.signals.get(&work_id);
    state.signals.notify(&host_id);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut timed_out = false;
    loop {
        let notified = signal.notified();
        // The answer is taken out of the database as it is read: console text (up to 1 MiB,
        // asked for every few seconds by a dashboard following a console) is never kept.
        if let Some(w) = state.store.take_finished_work(&work_id).await? {
            let result = w.result.unwrap_or_default();
            return match w.state.as_str() {
                "done" => Ok(result),
                "failed" => Err(ApiError::conflict(format!("Console log not available: {result}"))),
                _ => Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "The compute host did not return the console log in time.",
                )),
            };
        }
        if timed_out {
            // Cancelled below, or finished meanwhile and taken above; gone either way.
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "The compute host did not return the console log in time.",
            ));
        }
        // The wake-up is in-process; the answer may be recorded by another replica, so the
        // database is also looked at every half second.
        let wake = (tokio::time::Instant::now() + std::time::Duration::from_millis(500)).min(deadline);
        if tokio::time::timeout_at(wake, notified).await.is_err() && tokio::time::Instant::now() >= deadline {
            // Cancelled, it is never delivered again; an answer arriving first wins instead
            // (taken on the next turn).
            state.store.finish_work(&work_id, "cancelled", None).await?;
            timed_out = true;
        }
    }
}

// ---- metadata ----

pub async fn list_metadata(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    ctx.require_reader("os_compute_api:server-metadata:index")?;
    let inst = visible(&state, &ctx, &id).await?;
    let m: Value = serde_json::from_str(&inst.metadata).unwrap_or_else(|_| json!({}));
    Ok(axum::Json(json!({"metadata": m})))
}

async fn write_metadata(state: &AppState, inst: &Instance, m: &BTreeMap<String, String>) -> ApiResult<()> {
    if m.len() > MAX_METADATA_ITEMS {
        return Err(ApiError::forbidden(format!(
            "Quota exceeded for metadata_items: Requested {}, but the limit is {MAX_METADATA_ITEMS}",
            m.len()
        )));
    }
    state.store.update_instance_fields(&Instance { metadata: json!(m).to_string(), ..inst.clone() }).await?;
    Ok(())
}

fn current_metadata(inst: &Instance) -> BTreeMap<String, String> {
    serde_json::from_str(&inst.metadata).unwrap_or_default()
}

fn metadata_body(body: &Value, key: &str) -> ApiResult<BTreeMap<String, String>> {
    let m = body
        .get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| bad(format!("Invalid input for field/attribute {key}. '{key}' is a required property")))?;
    check_metadata(m)
}

/// `POST …/metadata`: merge.
pub async fn merge_metadata(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_member("os_compute_api:server-metadata:create")?;
    let inst = visible(&state, &ctx, &id).await?;
    let mut m = current_metadata(&inst);
    m.extend(metadata_body(&body, "metadata")?);
    write_metadata(&state, &inst, &m).await?;
    Ok(axum::Json(json!({"metadata": m})))
}

/// `PUT …/metadata`: replace.
pub async fn replace_metadata(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_member("os_compute_api:server-metadata:update_all")?;
    let inst = visible(&state, &ctx, &id).await?;
    let m = metadata_body(&body, "metadata")?;
    write_metadata(&state, &inst, &m).await?;
    Ok(axum::Json(json!({"metadata": m})))
}

pub async fn show_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> JsonResult {
    ctx.require_reader("os_compute_api:server-metadata:show")?;
    let inst = visible(&state, &ctx, &id).await?;
    let m = current_metadata(&inst);
    let v = m.get(&key).ok_or_else(|| ApiError::not_found("Metadata item was not found"))?;
    Ok(axum::Json(json!({"meta": {key: v}})))
}

pub async fn put_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> JsonResult {
    ctx.require_member("os_compute_api:server-metadata:update")?;
    let inst = visible(&state, &ctx, &id).await?;
    let item = metadata_body(&body, "meta")?;
    if item.len() != 1 || !item.contains_key(&key) {
        return Err(bad("Request body and URI mismatch"));
    }
    let mut m = current_metadata(&inst);
    m.extend(item.clone());
    write_metadata(&state, &inst, &m).await?;
    Ok(axum::Json(json!({"meta": item})))
}

pub async fn delete_metadata_item(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ctx.require_member("os_compute_api:server-metadata:delete")?;
    let inst = visible(&state, &ctx, &id).await?;
    let mut m = current_metadata(&inst);
    if m.remove(&key).is_none() {
        return Err(ApiError::not_found("Metadata item was not found"));
    }
    write_metadata(&state, &inst, &m).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- ips ----

/// The `addresses` of a server as `/ips` shows them: version and address only.
async fn plain_addresses(state: &AppState, ctx: &Ctx, id: &str) -> ApiResult<Map<String, Value>> {
    ctx.require_reader("os_compute_api:ips:index")?;
    let inst = visible(state, ctx, id).await?;
    Ok(addresses(state, &inst.id)
        .await?
        .into_iter()
        .map(|(net, list)| {
            let plain = list.iter().map(|a| json!({"version": a.version, "addr": a.addr})).collect();
            (net, Value::Array(plain))
        })
        .collect())
}

/// `GET /servers/{id}/ips`
pub async fn list_ips(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> JsonResult {
    Ok(axum::Json(json!({"addresses": plain_addresses(&state, &ctx, &id).await?})))
}

/// `GET /servers/{id}/ips/{network}`: the addresses on one network, by its name.
pub async fn show_ips(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((id, network)): Path<(String, String)>,
) -> JsonResult {
    let mut all = plain_addresses(&state, &ctx, &id).await?;
    let list =
        all.remove(&network).ok_or_else(|| ApiError::not_found("Instance is not a member of specified network"))?;
    let mut o = Map::new();
    o.insert(network, list);
    Ok(axum::Json(Value::Object(o)))
}
