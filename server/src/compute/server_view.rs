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
    /// `hostId` ([`host_id_hash`] of the project and host).
    pub host_id: String,
    pub addresses: Addresses,
    /// The names of the groups of the server's ports.
    pub security_groups: Vec<String>,
    /// Ids of the volumes attached through the compute API.
    pub volumes: Vec<String>,
    /// Why the server is locked (2.73), when it is and a reason was given.
    pub locked_reason: Option<String>,
    /// Ids of volumes (of these servers) to delete with their server.
    pub delete_on_termination: Vec<String>,
}

#[derive(Serialize)]
struct Link<'a> {
    rel: &'static str,
    href: Joined<'a, 3>,
}

/// Strings written one after the other as one JSON string, never joined in memory: a page of a
/// thousand servers has thousands of links and names.
struct Joined<'a, const N: usize>([&'a str; N]);

impl<const N: usize> Serialize for Joined<'_, N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<const N: usize> std::fmt::Display for Joined<'_, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|part| f.write_str(part))
    }
}

/// A stored time as Nova shows it (`2013-09-23T13:53:12Z`), written without a `String`.
struct NovaTime<'a>(&'a str);

impl Serialize for NovaTime<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The stored form is always `fmt_time`'s (`2013-09-23T13:53:12.123456Z`, UTC): its
        // first 19 bytes are Nova's form without the zone. Anything else goes the long way.
        let b = self.0.as_bytes();
        let stored_form = b.len() == 27
            && b[19] == b'.'
            && b[26] == b'Z'
            && b.iter().enumerate().all(|(i, c)| match i {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 | 26 => true,
                _ => c.is_ascii_digit(),
            });
        match self.0.get(..19) {
            Some(head) if stored_form => Joined([head, "Z"]).serialize(s),
            _ => s.serialize_str(&nova_time(self.0)),
        }
    }
}

/// `{"id", "links"}` of an image or (before 2.47) a flavor.
#[derive(Serialize)]
struct Ref<'a> {
    id: &'a str,
    links: [Link<'a>; 1],
}

#[derive(Serialize)]
#[serde(untagged)]
enum ImageRef<'a> {
    /// Booted from a volume: Nova shows an empty string.
    None(&'static str),
    Image(Ref<'a>),
}

/// The flavor snapshot stored at boot, as 2.47+ embeds it: its values copied through as they
/// are stored (a missing one is `null`).
#[derive(serde::Deserialize, Serialize, Default)]
#[serde(default)]
struct EmbeddedFlavor<'a> {
    #[serde(borrow, serialize_with = "or_null")]
    vcpus: Option<&'a RawValue>,
    #[serde(borrow, serialize_with = "or_null")]
    ram: Option<&'a RawValue>,
    #[serde(borrow, serialize_with = "or_null")]
    disk: Option<&'a RawValue>,
    #[serde(borrow, serialize_with = "or_null")]
    ephemeral: Option<&'a RawValue>,
    #[serde(borrow, serialize_with = "or_null")]
    swap: Option<&'a RawValue>,
    #[serde(borrow, rename(deserialize = "name", serialize = "original_name"), serialize_with = "or_null")]
    original_name: Option<&'a RawValue>,
    #[serde(borrow)]
    extra_specs: Option<&'a RawValue>,
}

/// A stored `null` and a missing value both read as `None` and show as `null`.
fn or_null<S: serde::Serializer>(v: &Option<&RawValue>, s: S) -> Result<S::Ok, S::Error> {
    v.unwrap_or(RawValue::NULL).serialize(s)
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
    host_id: &'a str,
    image: ImageRef<'a>,
    flavor: FlavorRef<'a>,
    created: NovaTime<'a>,
    updated: NovaTime<'a>,
    addresses: &'a Addresses,
    #[serde(rename = "accessIPv4")]
    access_ip_v4: &'a str,
    #[serde(rename = "accessIPv6")]
    access_ip_v6: &'a str,
    links: [Link<'a>; 2],
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
    locked_reason: Nullable<&'a str>,
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
    instance_name: Joined<'a, 2>,
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
pub(crate) fn host_id_hash(project_id: &str, host: Option<&str>) -> String {
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

/// `{public_url}{path}{id}`.
fn link<'a>(state: &'a AppState, rel: &'static str, path: &'static str, id: &'a str) -> Link<'a> {
    Link { rel, href: Joined([&state.cfg.public_url, path, id]) }
}

/// The representation of `inst` for microversion `v` and `shape`, as `ctx` may see it.
pub(crate) fn view<'a>(
    state: &'a AppState,
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
            links: [link(state, "bookmark", "/compute/images/", &inst.image_id)],
        })
    };
    let flavor = if v.at_least(47) {
        let mut f: EmbeddedFlavor<'a> = serde_json::from_str(&inst.flavor).unwrap_or_default();
        f.extra_specs = Some(f.extra_specs.unwrap_or_else(|| raw("{}", "{}")));
        FlavorRef::Embedded(f)
    } else {
        FlavorRef::Ref(Ref {
            id: &inst.flavor_id,
            links: [link(state, "bookmark", "/compute/flavors/", &inst.flavor_id)],
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
            instance_name: Joined(["meridian-", &inst.id]),
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
        host_id: &x.host_id,
        image,
        flavor,
        created: NovaTime(&inst.created_at),
        updated: NovaTime(&inst.updated_at),
        addresses: &x.addresses,
        access_ip_v4: inst.access_ip_v4.as_deref().unwrap_or_default(),
        access_ip_v6: inst.access_ip_v6.as_deref().unwrap_or_default(),
        links: [
            link(state, "self", "/compute/v2.1/servers/", &inst.id),
            link(state, "bookmark", "/compute/servers/", &inst.id),
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
        locked_reason: v.at_least(73).then_some(x.locked_reason.as_deref()),
        full,
    }
}

#[cfg(test)]
mod tests {
    //! The representation against the one written before the list speed-ups
    //! (`server_view_reference`), for every shape, several microversions, an admin and a member,
    //! and rows that take each branch (errors with faults, no host, unusual stored values).

    use super::*;
    use crate::compute::server_view_reference as reference;
    use crate::testing::TestApp;

    fn instance(n: u32) -> Instance {
        Instance {
            id: format!("00000000-0000-4000-8000-00000000000{n}"),
            name: format!("srv-{n}"),
            hostname: format!("srv-{n}"),
            description: None,
            project_id: "p1".into(),
            user_id: "u1".into(),
            flavor_id: "1".into(),
            flavor: r#"{"id":"1","name":"m1.tiny","vcpus":1,"ram":512,"disk":1,"ephemeral":0,"swap":0,"extra_specs":{"hw:cpu_policy":"shared"}}"#.into(),
            image_id: "img-1".into(),
            key_name: None,
            key_data: None,
            user_data: None,
            metadata: "{}".into(),
            tags: "[]".into(),
            availability_zone: None,
            config_drive: String::new(),
            reservation_id: format!("r-{n}"),
            launch_index: 0,
            host_id: None,
            alternates: "[]".into(),
            tried_hosts: "[]".into(),
            claimed: 0,
            requested_networks: "[]".into(),
            owned_ports: "[]".into(),
            vm_state: "active".into(),
            task_state: None,
            power_state: 1,
            fault: None,
            locked: 0,
            build_deadline: None,
            created_at: "2026-01-02T03:04:05.123456Z".into(),
            updated_at: "2026-01-02T03:04:06.000001Z".into(),
            launched_at: Some("2026-01-02T03:04:06.000001Z".into()),
            terminated_at: None,
            deleted: 0,
            access_ip_v4: None,
            access_ip_v6: None,
        }
    }

    fn rows() -> Vec<(Instance, Extras)> {
        let mut a = instance(1);
        a.description = Some("first \"one\" é".into());
        a.key_name = Some("k".into());
        a.user_data = Some("IyEvYmluL3NoCg==".into());
        a.metadata = r#"{"k": "v", "uni": "\u00e9\n"}"#.into();
        a.tags = r#"["a", "b"]"#.into();
        a.availability_zone = Some("az1".into());
        a.config_drive = "True".into();
        a.launch_index = 2;
        a.access_ip_v4 = Some("192.0.2.1".into());
        a.access_ip_v6 = Some("2001:db8::1".into());
        a.locked = 1;
        let mut addresses = Addresses::new();
        addresses.insert(
            "net".into(),
            vec![
                Address { version: 4, addr: "10.0.0.5".into(), kind: "fixed", mac_addr: "fa:16:3e:00:00:01".into() },
                Address { version: 6, addr: "fd00::5".into(), kind: "fixed", mac_addr: "fa:16:3e:00:00:01".into() },
            ],
        );
        addresses.insert("other".into(), vec![]);
        let with_host = Extras {
            host_name: Some("compute-a".into()),
            host_az: Some("nova".into()),
            host_up: Some(true),
            host_id: host_id_hash("p1", Some("compute-a")),
            addresses,
            security_groups: vec!["default".into(), "web".into()],
            volumes: vec!["vol-1".into(), "vol-2".into()],
            locked_reason: None,
            delete_on_termination: vec![],
        };
        let bare = || Extras {
            host_name: None,
            host_az: None,
            host_up: None,
            host_id: String::new(),
            addresses: Addresses::new(),
            security_groups: vec![],
            volumes: vec![],
            locked_reason: None,
            delete_on_termination: vec![],
        };
        // An error with a 500 fault (details for admins only), booted from a volume, a flavor
        // without extra specs or some values, times in another stored form.
        let mut b = instance(2);
        b.vm_state = "error".into();
        b.task_state = Some("spawning".into());
        b.power_state = 0;
        b.image_id = String::new();
        b.fault =
            Some(r#"{"code": 500, "message": "boom", "details": "trace", "created": "2026-01-01T00:00:00Z"}"#.into());
        b.flavor = r#"{"name":"odd \u00e9","vcpus":2,"ram":null}"#.into();
        b.created_at = "2026-01-02T03:04:05Z".into();
        b.updated_at = "2026-01-02T03:04:05+00:00".into();
        b.launched_at = None;
        b.terminated_at = Some("2026-01-03T00:00:00.000000Z".into());
        let mut down = bare();
        down.host_name = Some("compute-b".into());
        down.host_up = Some(false);
        down.host_id = host_id_hash("p1", Some("compute-b"));
        // A build, a 400 fault (shown to everyone) on a row that is not in error (not shown),
        // and stored JSON that does not parse.
        let mut c = instance(3);
        c.vm_state = "building".into();
        c.task_state = Some("scheduling".into());
        c.fault = Some(r#"{"code": 400, "message": "no"}"#.into());
        c.metadata = "not json".into();
        c.tags = "".into();
        c.flavor = "{broken".into();
        let mut d = instance(4);
        d.vm_state = "error".into();
        d.fault = Some("not json".into());
        d.description = Some(String::new());
        vec![(a, with_host), (b, down), (c, bare()), (d, bare())]
    }

    fn json(v: &impl Serialize) -> Value {
        serde_json::from_slice(&serde_json::to_vec(v).expect("serialise")).expect("parse")
    }

    #[tokio::test]
    async fn representations_match_the_reference() {
        let app = TestApp::new().await;
        let admin = crate::auth::validate(&app.state, &app.admin_token).await.expect("validate").expect("admin");
        let mut member = admin.clone();
        member.roles.retain(|r| r.name != "admin");
        assert!(admin.is_admin() && !member.is_admin());
        let rows = rows();
        let mut compared = 0;
        for ctx in [&admin, &member] {
            for minor in [1, 2, 3, 9, 16, 19, 26, 46, 47, 62, 63, 71, 73, 79] {
                let v = ApiVersion::new(2, minor);
                for shape in [Shape::Show, Shape::Detail, Shape::UpdateLegacy] {
                    for (inst, x) in &rows {
                        let new = json(&view(&app.state, ctx, v, inst, x, shape));
                        let old = json(&reference::view(&app.state, ctx, v, inst, x, shape));
                        assert_eq!(new, old, "2.{minor}, admin {}, {}", ctx.is_admin(), inst.name);
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 2 * 14 * 3 * 4);
    }
}
