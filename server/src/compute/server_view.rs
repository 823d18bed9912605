//! A server's representation for a microversion, as a typed value serialised straight to the
//! response body. `/servers/detail?limit=1000` renders a thousand of these; building each as a
//! `serde_json::Value` (a map of ~45 owned keys, then serialised and dropped) was a fifth of the
//! request's time, and the stored JSON columns (metadata, tags, flavor extra specs) are copied
//! through as they are instead of being parsed and written again.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha224};

use super::ApiVersion;
use super::conductor::nova_time;
use crate::auth::Ctx;
use crate::state::AppState;
use crate::store::instances::Instance;

/// Which request the representation answers (the keys differ).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// GET /servers/{id} and /servers/detail.
    Show,
    /// GET /servers/detail items (no server_groups).
    Detail,
    /// PUT /servers/{id} before 2.75 (a reduced body).
    UpdateLegacy,
}

/// One fixed address of a server (`addresses` → network name → these).
#[derive(Serialize, Clone, Debug, PartialEq)]
pub(crate) struct Address {
    pub version: u8,
    pub addr: String,
    #[serde(rename = "OS-EXT-IPS:type")]
    pub kind: &'static str,
    #[serde(rename = "OS-EXT-IPS-MAC:mac_addr")]
    pub mac_addr: String,
}

/// Network name → the server's addresses on it.
pub(crate) type Addresses = BTreeMap<String, Vec<Address>>;

/// What a representation needs besides the instance row.
pub(crate) struct Extras {
    pub host_name: Option<String>,
    pub host_az: Option<String>,
    pub host_up: Option<bool>,
    pub addresses: Addresses,
    /// The names of the groups of the server's ports.
    pub security_groups: Vec<String>,
    /// Ids of the volumes attached through the compute API.
    pub volumes: Vec<String>,
    /// Ids of volumes (of these servers) to delete with their server.
    pub delete_on_termination: Vec<String>,
}

#[derive(Serialize)]
struct Link {
    rel: &'static str,
    href: String,
}

/// `{"id", "links"}` of an image or (before 2.47) a flavor.
#[derive(Serialize)]
struct Ref<'a> {
    id: &'a str,
    links: [Link; 1],
}

#[derive(Serialize)]
#[serde(untagged)]
enum ImageRef<'a> {
    /// Booted from a volume: Nova shows an empty string.
    None(&'static str),
    Image(Ref<'a>),
}

/// The flavor snapshot stored at boot, as 2.47+ embeds it.
#[derive(serde::Deserialize, Serialize, Default)]
#[serde(default)]
struct EmbeddedFlavor<'a> {
    vcpus: Value,
    ram: Value,
    disk: Value,
    ephemeral: Value,
    swap: Value,
    #[serde(rename(deserialize = "name", serialize = "original_name"))]
    original_name: Value,
    #[serde(borrow)]
    extra_specs: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FlavorRef<'a> {
    Embedded(EmbeddedFlavor<'a>),
    Ref(Ref<'a>),
}

#[derive(Serialize)]
struct SecurityGroupName<'a> {
    name: &'a str,
}

/// `Some(None)` is written as `null`; `None` leaves the key out.
type Nullable<T> = Option<Option<T>>;

#[derive(Serialize)]
pub(crate) struct ServerView<'a> {
    id: &'a str,
    name: &'a str,
    status: &'static str,
    tenant_id: &'a str,
    user_id: &'a str,
    metadata: &'a RawValue,
    #[serde(rename = "hostId")]
    host_id: String,
    image: ImageRef<'a>,
    flavor: FlavorRef<'a>,
    created: String,
    updated: String,
    addresses: &'a Addresses,
    #[serde(rename = "accessIPv4")]
    access_ip_v4: &'a str,
    #[serde(rename = "accessIPv6")]
    access_ip_v6: &'a str,
    links: [Link; 2],
    #[serde(rename = "OS-DCF:diskConfig")]
    disk_config: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Nullable<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted_image_certificates: Nullable<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_groups: Option<[(); 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_reason: Nullable<()>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    full: Option<Full<'a>>,
}

/// The keys every shape but the legacy update body has.
#[derive(Serialize)]
struct Full<'a> {
    key_name: Option<&'a str>,
    config_drive: &'a str,
    #[serde(rename = "OS-EXT-AZ:availability_zone")]
    availability_zone: &'a str,
    #[serde(rename = "OS-EXT-STS:vm_state")]
    vm_state: &'a str,
    #[serde(rename = "OS-EXT-STS:task_state")]
    task_state: Option<&'a str>,
    #[serde(rename = "OS-EXT-STS:power_state")]
    power_state: i64,
    #[serde(rename = "OS-SRV-USG:launched_at")]
    launched_at: Option<&'a str>,
    #[serde(rename = "OS-SRV-USG:terminated_at")]
    terminated_at: Option<&'a str>,
    #[serde(rename = "os-extended-volumes:volumes_attached")]
    volumes_attached: Vec<VolumeAttached<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_groups: Option<Vec<SecurityGroupName<'a>>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    admin: Option<AdminAttrs<'a>>,
}

/// One entry of `os-extended-volumes:volumes_attached` (`delete_on_termination` from 2.3).
#[derive(Serialize)]
struct VolumeAttached<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delete_on_termination: Option<bool>,
}

/// `OS-EXT-SRV-ATTR:*` and `host_status`: admins only.
#[derive(Serialize)]
struct AdminAttrs<'a> {
    #[serde(rename = "OS-EXT-SRV-ATTR:host")]
    host: Option<&'a str>,
    #[serde(rename = "OS-EXT-SRV-ATTR:hypervisor_hostname")]
    hypervisor_hostname: Option<&'a str>,
    #[serde(rename = "OS-EXT-SRV-ATTR:instance_name")]
    instance_name: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    v2_3: Option<AdminAttrs23<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_status: Option<&'static str>,
}

/// The admin attributes added in 2.3.
#[derive(Serialize)]
struct AdminAttrs23<'a> {
    #[serde(rename = "OS-EXT-SRV-ATTR:reservation_id")]
    reservation_id: &'a str,
    #[serde(rename = "OS-EXT-SRV-ATTR:launch_index")]
    launch_index: i64,
    #[serde(rename = "OS-EXT-SRV-ATTR:hostname")]
    hostname: &'a str,
    #[serde(rename = "OS-EXT-SRV-ATTR:kernel_id")]
    kernel_id: &'static str,
    #[serde(rename = "OS-EXT-SRV-ATTR:ramdisk_id")]
    ramdisk_id: &'static str,
    #[serde(rename = "OS-EXT-SRV-ATTR:root_device_name")]
    root_device_name: &'static str,
    #[serde(rename = "OS-EXT-SRV-ATTR:user_data")]
    user_data: Option<&'a str>,
}

/// `hostId`: a hash of the project and host, so that a project can tell whether two of its
/// servers share a host without learning the host's name (as Nova).
fn host_id_hash(project_id: &str, host: Option<&str>) -> String {
    match host {
        Some(h) => hex::encode(Sha224::digest(format!("{project_id}{h}").as_bytes())),
        None => String::new(),
    }
}

/// A stored JSON column, or `fallback` when it is not JSON (never expected; a bad row must
/// not fail a whole list).
fn raw<'a>(stored: &'a str, fallback: &'static str) -> &'a RawValue {
    serde_json::from_str(stored).or_else(|_| serde_json::from_str(fallback)).unwrap_or(RawValue::NULL)
}

/// `launched_at` / `terminated_at` keep microseconds and no zone: `2013-09-23T13:53:12.000000`.
fn nova_launch_time(stored: &str) -> &str {
    stored.trim_end_matches('Z')
}

fn link(state: &AppState, rel: &'static str, path: &str) -> Link {
    Link { rel, href: state.url(path) }
}

/// The representation of `inst` for microversion `v` and `shape`, as `ctx` may see it.
pub(crate) fn view<'a>(
    state: &AppState,
    ctx: &Ctx,
    v: ApiVersion,
    inst: &'a Instance,
    x: &'a Extras,
    shape: Shape,
) -> ServerView<'a> {
    let st = super::servers::status(inst);
    let image = if inst.image_id.is_empty() {
        ImageRef::None("")
    } else {
        ImageRef::Image(Ref {
            id: &inst.image_id,
            links: [link(state, "bookmark", &format!("compute/images/{}", inst.image_id))],
        })
    };
    let flavor = if v.at_least(47) {
        let mut f: EmbeddedFlavor<'a> = serde_json::from_str(&inst.flavor).unwrap_or_default();
        f.extra_specs = Some(f.extra_specs.unwrap_or_else(|| raw("{}", "{}")));
        FlavorRef::Embedded(f)
    } else {
        FlavorRef::Ref(Ref {
            id: &inst.flavor_id,
            links: [link(state, "bookmark", &format!("compute/flavors/{}", inst.flavor_id))],
        })
    };
    let fault = inst.fault.as_deref().filter(|_| st == "ERROR").map(|f| {
        let mut fault: Value = serde_json::from_str(f).unwrap_or_else(|_| Value::Object(Default::default()));
        // Nova shows `details` of a 500 fault to admins only.
        if !ctx.is_admin()
            && fault["code"] == 500
            && let Some(m) = fault.as_object_mut()
        {
            m.remove("details");
        }
        fault
    });
    let full = (shape != Shape::UpdateLegacy).then(|| Full {
        key_name: inst.key_name.as_deref(),
        config_drive: &inst.config_drive,
        availability_zone: inst.availability_zone.as_deref().or(x.host_az.as_deref()).unwrap_or_default(),
        vm_state: &inst.vm_state,
        task_state: inst.task_state.as_deref(),
        power_state: inst.power_state,
        launched_at: inst.launched_at.as_deref().map(nova_launch_time),
        terminated_at: inst.terminated_at.as_deref().map(nova_launch_time),
        volumes_attached: x
            .volumes
            .iter()
            .map(|id| VolumeAttached {
                id,
                delete_on_termination: v.at_least(3).then(|| x.delete_on_termination.contains(id)),
            })
            .collect(),
        // The groups of the server's ports, each name once (Nova leaves the key out when none).
        security_groups: (!x.security_groups.is_empty())
            .then(|| x.security_groups.iter().map(|n| SecurityGroupName { name: n }).collect()),
        admin: ctx.is_admin().then(|| AdminAttrs {
            host: x.host_name.as_deref(),
            hypervisor_hostname: x.host_name.as_deref(),
            instance_name: format!("meridian-{}", inst.id),
            v2_3: v.at_least(3).then_some(AdminAttrs23 {
                reservation_id: &inst.reservation_id,
                launch_index: inst.launch_index,
                hostname: &inst.hostname,
                kernel_id: "",
                ramdisk_id: "",
                root_device_name: "/dev/vda",
                user_data: inst.user_data.as_deref(),
            }),
            host_status: v.at_least(16).then_some(match x.host_up {
                Some(true) => "UP",
                Some(false) => "DOWN",
                None => "",
            }),
        }),
    });
    ServerView {
        id: &inst.id,
        name: &inst.name,
        status: st,
        tenant_id: &inst.project_id,
        user_id: &inst.user_id,
        metadata: raw(&inst.metadata, "{}"),
        host_id: host_id_hash(&inst.project_id, x.host_name.as_deref()),
        image,
        flavor,
        created: nova_time(&inst.created_at),
        updated: nova_time(&inst.updated_at),
        addresses: &x.addresses,
        access_ip_v4: inst.access_ip_v4.as_deref().unwrap_or_default(),
        access_ip_v6: inst.access_ip_v6.as_deref().unwrap_or_default(),
        links: [
            link(state, "self", &format!("compute/v2.1/servers/{}", inst.id)),
            link(state, "bookmark", &format!("compute/servers/{}", inst.id)),
        ],
        disk_config: "MANUAL",
        progress: match st {
            "ACTIVE" => Some(100),
            "BUILD" => Some(0),
            _ => None,
        },
        fault,
        locked: v.at_least(9).then_some(inst.locked != 0),
        description: v.at_least(19).then_some(inst.description.as_deref()),
        tags: v.at_least(26).then(|| raw(&inst.tags, "[]")),
        trusted_image_certificates: v.at_least(63).then_some(None),
        server_groups: (v.at_least(71) && shape != Shape::Detail).then_some([]),
        locked_reason: v.at_least(73).then_some(None),
        full,
    }
}
