//! The instance metadata tree, as Nova serves it (`nova/api/metadata/base.py`): one generator
//! behind both the agent's config drive and the server's metadata service, so the two carry the
//! same content by construction.
//!
//! Two trees: the OpenStack one (`/openstack/<version>/meta_data.json`, `user_data`,
//! `network_data.json`, `vendor_data.json`, `vendor_data2.json`, `password`; Nova's dated
//! versions and `latest`) and the EC2 one (`/<version>/meta-data/…`, `/<version>/user-data`;
//! `1.0` … `2009-04-04` and `latest`). Listings are newline-separated names, folders with a
//! trailing `/`, no trailing newline; anything else is `None` (404). Content types are Nova's:
//! `application/json` for `meta_data.json`, `vendor_data.json` and `vendor_data2.json`,
//! `text/plain` for everything else (`network_data.json` included, as Nova sends it).
//!
//! Meridian differs from Nova where it has no such thing: no floating IPs (`public-ipv4` is
//! empty), no device tags (`devices` is empty), no pinned CPUs, no injected files, no static
//! vendor data (`{}`), no `dhcp_domain` (the hostname is the instance's own), and EC2 ids derived from the UUIDs (`i-` and the first 8 hex digits) rather than
//! from an id-mapping table.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::agent::{BuildSpec, NicSpec};

/// The EC2 API versions (`1.0` is the oldest); `latest` is the last.
pub const EC2_VERSIONS: [&str; 9] = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
];

/// The OpenStack metadata versions (Folsom … Epoxy); `latest` is the last.
pub const OPENSTACK_VERSIONS: [&str; 10] =
    [FOLSOM, GRIZZLY, HAVANA, LIBERTY, NEWTON_ONE, NEWTON_TWO, "2017-02-22", "2018-08-27", VICTORIA, "2025-04-04"];

const FOLSOM: &str = "2012-08-10";
const GRIZZLY: &str = "2013-04-04";
const HAVANA: &str = "2013-10-17";
const LIBERTY: &str = "2015-10-15";
const NEWTON_ONE: &str = "2016-06-30";
const NEWTON_TWO: &str = "2016-10-06";
const VICTORIA: &str = "2020-10-14";

/// Nova's `config_drive_skip_versions`: the EC2 versions a config drive leaves out.
const DRIVE_EC2_VERSIONS: [&str; 2] = ["2009-04-04", "latest"];

pub const TEXT_PLAIN: &str = "text/plain";
pub const APPLICATION_JSON: &str = "application/json";

/// The instance's key pair, named as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPair {
    pub name: String,
    /// `ssh` or `x509`.
    pub kind: String,
    pub public_key: String,
}

impl KeyPair {
    /// A key pair from its name and public key; the type is read from the key (Nova's
    /// `keypair.type`: x509 certificates are PEM, everything else is an SSH key).
    pub fn new(name: &str, public_key: &str) -> KeyPair {
        let kind = if public_key.trim_start().starts_with("-----BEGIN CERTIFICATE") { "x509" } else { "ssh" };
        KeyPair { name: name.to_string(), kind: kind.to_string(), public_key: public_key.to_string() }
    }
}

/// Everything the metadata of one instance is made of.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub uuid: String,
    pub name: String,
    pub hostname: String,
    pub availability_zone: String,
    pub project_id: String,
    pub launch_index: u32,
    pub reservation_id: String,
    pub key: Option<KeyPair>,
    /// Decoded user data; `None` when the user gave none (then `user_data` is 404).
    pub user_data: Option<Vec<u8>>,
    pub meta: BTreeMap<String, String>,
    pub image_id: String,
    pub kernel_id: Option<String>,
    pub ramdisk_id: Option<String>,
    /// The flavor's name (EC2 `instance-type`).
    pub instance_type: String,
    /// The root disk as the guest names it (`vda`).
    pub root_device: String,
    /// The local disks beside the root disk (the server's own mappings', else the flavor's) as
    /// EC2 `block-device-mapping` keys and device paths, as Nova's `instance_block_mapping`
    /// gives them (`ephemeral0` → `/dev/vdb`, `swap` → `/dev/vdc`): what cloud-init mounts
    /// and swaps on.
    pub local_devices: Vec<(String, String)>,
    /// The devices of the instance's volumes, the boot volume's too (`/dev/vdb`, …): Nova's
    /// `ebs0`, `ebs1`, … in device order. The config drive has the build's volumes; the
    /// metadata service fills in those attached when it answers.
    pub volume_devices: Vec<String>,
    pub security_groups: Vec<String>,
    pub nics: Vec<NicSpec>,
}

/// One answer of the metadata service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    fn text(body: impl Into<Vec<u8>>) -> Answer {
        Answer { content_type: TEXT_PLAIN, body: body.into() }
    }
    fn json(v: &Value) -> Answer {
        Answer { content_type: APPLICATION_JSON, body: v.to_string().into_bytes() }
    }
}

/// A node of the EC2 tree; printed as Nova's `ec2_md_print` does.
#[derive(Clone, Debug)]
enum Node {
    /// A folder. A child folder holding a `_name` entry is listed by that name instead of
    /// `key/` (EC2's `public-keys/` → `0=keyname`).
    Map(BTreeMap<String, Node>),
    List(Vec<String>),
    Text(String),
    Bytes(Vec<u8>),
    Int(i64),
}

impl Node {
    fn print(&self) -> Vec<u8> {
        match self {
            Node::Map(m) => {
                let names: Vec<String> = m
                    .iter()
                    .filter(|(k, _)| k.as_str() != "_name")
                    .map(|(k, v)| match v {
                        Node::Map(child) => match child.get("_name") {
                            Some(Node::Text(n)) => n.clone(),
                            _ => format!("{k}/"),
                        },
                        _ => k.clone(),
                    })
                    .collect();
                names.join("\n").into_bytes()
            }
            Node::List(l) => l.join("\n").into_bytes(),
            Node::Text(t) => t.clone().into_bytes(),
            Node::Bytes(b) => b.clone(),
            Node::Int(i) => i.to_string().into_bytes(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Node::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
            Node::List(l) => json!(l),
            Node::Text(t) => json!(t),
            Node::Bytes(b) => json!(String::from_utf8_lossy(b)),
            Node::Int(i) => json!(i),
        }
    }
}

fn text(s: &str) -> Node {
    Node::Text(s.to_string())
}

/// `prefix-` and the first 8 hex digits of a UUID, the shape of an EC2 id.
fn ec2_id(prefix: &str, uuid: &str) -> String {
    let hex: String = uuid.chars().filter(char::is_ascii_hexdigit).take(8).collect();
    format!("{prefix}-{:0>8}", hex.to_ascii_lowercase())
}

/// Whether `requested` is `required` or later in `versions`.
fn at_least(versions: &[&str], required: &str, requested: &str) -> bool {
    let pos = |v: &str| versions.iter().position(|x| *x == v);
    matches!((pos(requested), pos(required)), (Some(a), Some(b)) if a >= b)
}

/// `posixpath.normpath`'s tokens: empty and `.` segments dropped, `..` goes up.
fn tokens(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    out
}

/// The local disks of [`Metadata::local_devices`]: as the agent lays them out, they follow the
/// root disk on its bus, the ephemeral disks first (the server's own mappings', else the
/// flavor's one), then swap.
fn local_devices(spec: &BuildSpec, root_device: &str) -> Vec<(String, String)> {
    let (ephemerals, swap) = match &spec.local_disks {
        Some(own) => (own.ephemerals.len(), own.swap_mb > 0),
        None => (usize::from(spec.flavor.ephemeral_gb > 0), spec.flavor.swap_mb > 0),
    };
    let prefix = root_device.strip_suffix('a').unwrap_or(root_device);
    let keys = (0..ephemerals).map(|i| format!("ephemeral{i}")).chain(swap.then(|| "swap".to_string()));
    keys.zip(b'b'..=b'z').map(|(key, c)| (key, format!("/dev/{prefix}{}", c as char))).collect()
}

/// 512 random bytes in base64, fresh for every call (Nova's `random_seed`).
pub fn random_seed() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 512];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Metadata {
    /// The metadata of the instance a build spec describes (the agent's config drive).
    pub fn from_build_spec(
        uuid: &str,
        availability_zone: &str,
        spec: &BuildSpec,
    ) -> Result<Metadata, base64::DecodeError> {
        let props = &spec.image.properties;
        let prop = |k: &str| props.get(k).filter(|v| !v.is_empty()).cloned();
        let root_device = match props.get("hw_disk_bus").map(String::as_str) {
            Some("scsi" | "sata") => "sda",
            Some("ide") => "hda",
            _ => "vda",
        };
        Ok(Metadata {
            uuid: uuid.to_string(),
            name: spec.name.clone(),
            hostname: spec.hostname.clone(),
            availability_zone: availability_zone.to_string(),
            project_id: spec.project_id.clone(),
            launch_index: spec.launch_index,
            reservation_id: spec.reservation_id.clone(),
            key: spec.public_key.as_deref().map(|k| KeyPair::new(spec.key_name.as_deref().unwrap_or("default"), k)),
            user_data: decode_user_data(spec.user_data.as_deref())?,
            meta: spec.metadata.clone(),
            image_id: spec.image.id.clone(),
            kernel_id: prop("kernel_id"),
            ramdisk_id: prop("ramdisk_id"),
            instance_type: spec.flavor.name.clone(),
            root_device: root_device.to_string(),
            local_devices: local_devices(spec, root_device),
            volume_devices: spec.block_devices.iter().map(|b| format!("/dev/{}", b.device)).collect(),
            // A spec from before the field existed: Nova's default group.
            security_groups: if spec.security_groups.is_empty() {
                vec!["default".to_string()]
            } else {
                spec.security_groups.clone()
            },
            nics: spec.nics.clone(),
        })
    }

    /// `meta_data.json` of an OpenStack `version` (already resolved from `latest`).
    pub fn meta_data(&self, version: &str) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("uuid".into(), json!(self.uuid));
        if !self.meta.is_empty() {
            m.insert("meta".into(), json!(self.meta));
        }
        if let Some(k) = &self.key {
            m.insert("public_keys".into(), json!({ k.name.clone(): k.public_key }));
            m.insert("keys".into(), json!([{ "name": k.name, "type": k.kind, "data": k.public_key }]));
        }
        m.insert("hostname".into(), json!(self.hostname));
        m.insert("name".into(), json!(self.name));
        m.insert("launch_index".into(), json!(self.launch_index));
        m.insert("availability_zone".into(), json!(self.availability_zone));
        let os = |required| at_least(&OPENSTACK_VERSIONS, required, version);
        if os(GRIZZLY) {
            m.insert("random_seed".into(), json!(random_seed()));
        }
        if os(LIBERTY) {
            m.insert("project_id".into(), json!(self.project_id));
        }
        if os(NEWTON_ONE) {
            m.insert("devices".into(), json!([]));
        }
        if os(VICTORIA) {
            m.insert("dedicated_cpus".into(), json!([]));
        }
        Value::Object(m)
    }

    /// `network_data.json`.
    pub fn network_data(&self) -> Value {
        network_data(&self.nics)
    }

    /// The EC2 tree of one version (already resolved from `latest`): `meta-data` and, when
    /// there is user data, `user-data`.
    fn ec2(&self, version: &str) -> BTreeMap<String, Node> {
        let ec2 = |required| at_least(&EC2_VERSIONS, required, version);
        let fixed_ip = self
            .nics
            .iter()
            .flat_map(|n| &n.ips)
            .find(|ip| ip.address.parse::<std::net::Ipv4Addr>().is_ok())
            .map(|ip| ip.address.clone())
            .unwrap_or_default();
        let mut md: BTreeMap<String, Node> = BTreeMap::new();
        md.insert("ami-id".into(), Node::Text(ec2_id("ami", &self.image_id)));
        md.insert("ami-launch-index".into(), Node::Int(i64::from(self.launch_index)));
        md.insert("ami-manifest-path".into(), text("FIXME"));
        md.insert("instance-id".into(), Node::Text(ec2_id("i", &self.uuid)));
        md.insert("hostname".into(), text(&self.hostname));
        md.insert("local-ipv4".into(), Node::Text(fixed_ip));
        md.insert("reservation-id".into(), text(&self.reservation_id));
        md.insert("security-groups".into(), Node::List(self.security_groups.clone()));
        if let Some(k) = &self.key {
            let key0 = BTreeMap::from([
                ("_name".to_string(), Node::Text(format!("0={}", k.name))),
                ("openssh-key".to_string(), text(&k.public_key)),
            ]);
            md.insert("public-keys".into(), Node::Map(BTreeMap::from([("0".to_string(), Node::Map(key0))])));
        }
        if ec2("2007-01-19") {
            md.insert("local-hostname".into(), text(&self.hostname));
            md.insert("public-hostname".into(), text(&self.hostname));
            md.insert("public-ipv4".into(), text(""));
        }
        if ec2("2007-08-29") {
            md.insert("instance-type".into(), text(&self.instance_type));
        }
        if ec2("2007-12-15") {
            let mut bdm = BTreeMap::from([
                ("ami".to_string(), text(&self.root_device)),
                ("root".to_string(), Node::Text(format!("/dev/{}", self.root_device))),
            ]);
            for (key, dev) in &self.local_devices {
                bdm.insert(key.clone(), text(dev));
            }
            let mut volumes: Vec<&String> = self.volume_devices.iter().collect();
            volumes.sort();
            for (n, dev) in volumes.into_iter().enumerate() {
                bdm.insert(format!("ebs{n}"), text(dev));
            }
            md.insert("block-device-mapping".into(), Node::Map(bdm));
            if let Some(k) = &self.kernel_id {
                md.insert("kernel-id".into(), Node::Text(ec2_id("aki", k)));
            }
            if let Some(r) = &self.ramdisk_id {
                md.insert("ramdisk-id".into(), Node::Text(ec2_id("ari", r)));
            }
        }
        if ec2("2008-02-01") {
            let placement = BTreeMap::from([("availability-zone".to_string(), text(&self.availability_zone))]);
            md.insert("placement".into(), Node::Map(placement));
        }
        if ec2("2008-09-01") {
            md.insert("instance-action".into(), text("none"));
        }
        let mut data = BTreeMap::from([("meta-data".to_string(), Node::Map(md))]);
        if let Some(ud) = &self.user_data {
            data.insert("user-data".into(), Node::Bytes(ud.clone()));
        }
        data
    }

    /// Answers a request for `path` (relative to the metadata root, as the guest sent it);
    /// `None` is 404. Paths that start with neither `ec2` nor `openstack` are EC2 paths.
    pub fn lookup(&self, path: &str) -> Option<Answer> {
        let mut t = tokens(path);
        if t.is_empty() {
            return Some(Answer::text(versions_listing(&EC2_VERSIONS)));
        }
        if t[0] != "ec2" && t[0] != "openstack" {
            t.insert(0, "ec2");
        }
        if t.len() == 1 {
            let list = if t[0] == "openstack" { &OPENSTACK_VERSIONS[..] } else { &EC2_VERSIONS[..] };
            return Some(Answer::text(versions_listing(list)));
        }
        if t[0] == "openstack" {
            self.openstack_item(&t[1..])
        } else {
            let version = resolve(&EC2_VERSIONS, t[1])?;
            let mut node = Node::Map(self.ec2(version));
            for tok in &t[2..] {
                node = match node {
                    Node::Map(mut m) => m.remove(*tok)?,
                    _ => return None,
                };
            }
            Some(Answer::text(node.print()))
        }
    }

    fn openstack_item(&self, t: &[&str]) -> Option<Answer> {
        // No injected files: `/openstack/content/…` has nothing.
        let version = resolve(&OPENSTACK_VERSIONS, t[0])?;
        let os = |required| at_least(&OPENSTACK_VERSIONS, required, version);
        if t.len() == 1 {
            let mut names = vec!["meta_data.json"];
            if self.user_data.is_some() {
                names.push("user_data");
            }
            if os(GRIZZLY) {
                names.push("password");
            }
            if os(HAVANA) {
                names.push("vendor_data.json");
            }
            if os(LIBERTY) {
                names.push("network_data.json");
            }
            if os(NEWTON_TWO) {
                names.push("vendor_data2.json");
            }
            return Some(Answer::text(names.join("\n")));
        }
        match t[1..].join("/").as_str() {
            "meta_data.json" => Some(Answer::json(&self.meta_data(version))),
            "user_data" => self.user_data.clone().map(Answer::text),
            // Meridian sets no passwords; Nova answers an instance without one with nothing.
            "password" if os(GRIZZLY) => Some(Answer::text("")),
            "vendor_data.json" if os(HAVANA) => Some(Answer::json(&json!({}))),
            "vendor_data2.json" if os(NEWTON_TWO) => Some(Answer::json(&vendor_data2())),
            // Nova leaves the type of this one at text/plain.
            "network_data.json" => Some(Answer::text(self.network_data().to_string())),
            _ => None,
        }
    }

    /// The config drive's files, as Nova's `metadata_for_config_drive`: `ec2/2009-04-04` and
    /// `ec2/latest` (`meta-data.json`, `user-data`), then every OpenStack version and `latest`
    /// (`meta_data.json`, `user_data`, `vendor_data.json`, `network_data.json`,
    /// `vendor_data2.json` as of the versions that have them). Paths are relative.
    pub fn config_drive_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for version in DRIVE_EC2_VERSIONS {
            let Some(v) = resolve(&EC2_VERSIONS, version) else { continue };
            let mut data = self.ec2(v);
            if let Some(Node::Bytes(ud)) = data.remove("user-data") {
                files.push((format!("ec2/{version}/user-data"), ud));
            }
            let md = data.remove("meta-data").map(|n| n.to_json()).unwrap_or_else(|| json!({}));
            files.push((format!("ec2/{version}/meta-data.json"), md.to_string().into_bytes()));
        }
        for version in OPENSTACK_VERSIONS.iter().copied().chain(["latest"]) {
            for name in ["meta_data.json", "user_data", "vendor_data.json", "network_data.json", "vendor_data2.json"] {
                let path = format!("openstack/{version}/{name}");
                // network_data.json is on the drive from Liberty on, though the service
                // answers it for every version (as Nova's).
                if name == "network_data.json"
                    && !at_least(&OPENSTACK_VERSIONS, LIBERTY, resolve(&OPENSTACK_VERSIONS, version).unwrap_or(""))
                {
                    continue;
                }
                if let Some(a) = self.lookup(&path) {
                    files.push((path, a.body));
                }
            }
        }
        files
    }
}

/// `vendor_data2.json` with Nova's default providers (`StaticJSON` without a file).
fn vendor_data2() -> Value {
    json!({ "static": {} })
}

/// A version as requested (`latest` is the newest) if it is one of `versions`.
fn resolve<'a>(versions: &[&'a str], requested: &str) -> Option<&'a str> {
    if requested == "latest" {
        return versions.last().copied();
    }
    versions.iter().copied().find(|v| *v == requested)
}

fn versions_listing(versions: &[&str]) -> String {
    let mut all: Vec<&str> = versions.to_vec();
    all.push("latest");
    all.join("\n")
}

/// User data as the API received it (base64) decoded; empty counts as none.
pub fn decode_user_data(b64: Option<&str>) -> Result<Option<Vec<u8>>, base64::DecodeError> {
    match b64.map(str::trim) {
        Some(s) if !s.is_empty() => base64::engine::general_purpose::STANDARD.decode(s).map(Some),
        _ => Ok(None),
    }
}

/// `network_data.json`: one link per NIC (by MAC) and its fixed IPv4/IPv6 addresses as static
/// networks, in Nova's format.
pub fn network_data(nics: &[NicSpec]) -> Value {
    let mut links = Vec::new();
    let mut networks = Vec::new();
    let mut dns = Vec::new();
    for nic in nics {
        let link = format!("tap{}", nic.port_id.chars().take(11).collect::<String>());
        links.push(json!({
            "id": link,
            "type": "ethernet",
            "ethernet_mac_address": nic.mac_address.to_ascii_lowercase(),
            "mtu": (nic.mtu > 0).then_some(nic.mtu),
            "vif_id": nic.port_id,
        }));
        for ip in &nic.ips {
            let Ok(net) = ip.cidr.parse::<ipnet::IpNet>() else { continue };
            let v6 = matches!(net, ipnet::IpNet::V6(_));
            let routes: Vec<Value> = ip
                .gateway
                .iter()
                .map(|gw| {
                    let (any, mask) = if v6 { ("::", "::") } else { ("0.0.0.0", "0.0.0.0") };
                    json!({ "network": any, "netmask": mask, "gateway": gw })
                })
                .collect();
            networks.push(json!({
                "id": format!("network{}", networks.len()),
                "type": if v6 { "ipv6" } else { "ipv4" },
                "link": link,
                "ip_address": ip.address,
                "netmask": net.netmask().to_string(),
                "routes": routes,
                "network_id": nic.network_id,
            }));
            for d in &ip.dns_nameservers {
                if !dns.contains(d) {
                    dns.push(d.clone());
                }
            }
        }
    }
    let services: Vec<Value> = dns.iter().map(|d| json!({ "type": "dns", "address": d })).collect();
    json!({ "links": links, "networks": networks, "services": services })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::FixedIp;

    fn md() -> Metadata {
        Metadata {
            uuid: "0e7c1c1e-1111-4222-8333-444455556666".into(),
            name: "web one".into(),
            hostname: "web-one".into(),
            availability_zone: "az1".into(),
            project_id: "p1".into(),
            launch_index: 0,
            reservation_id: "r-abcdef12".into(),
            key: Some(KeyPair::new("mykey", "ssh-ed25519 AAAA me@host")),
            user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
            meta: BTreeMap::from([("role".to_string(), "db".to_string())]),
            image_id: "9f1e2d3c-aaaa-bbbb-cccc-000000000000".into(),
            kernel_id: None,
            ramdisk_id: None,
            instance_type: "m1.tiny".into(),
            root_device: "vda".into(),
            local_devices: Vec::new(),
            volume_devices: Vec::new(),
            security_groups: vec!["default".into()],
            nics: vec![NicSpec {
                port_id: "port-1".into(),
                mac_address: "FA:16:3E:00:00:01".into(),
                network_id: "net-1".into(),
                mtu: 1450,
                ips: vec![FixedIp {
                    address: "10.0.0.5".into(),
                    cidr: "10.0.0.0/24".into(),
                    gateway: Some("10.0.0.1".into()),
                    dns_nameservers: vec![],
                }],
            }],
        }
    }

    fn get(m: &Metadata, path: &str) -> (String, &'static str) {
        let a = m.lookup(path).unwrap_or_else(|| panic!("{path}: 404"));
        (String::from_utf8(a.body).expect("utf-8"), a.content_type)
    }

    #[test]
    fn roots_list_the_versions() {
        let m = md();
        let ec2 = "1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n2008-02-01\n2008-09-01\n2009-04-04\nlatest";
        assert_eq!(get(&m, "/"), (ec2.to_string(), TEXT_PLAIN));
        assert_eq!(get(&m, "").0, ec2);
        let os = get(&m, "/openstack/").0;
        assert_eq!(
            os,
            "2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n2017-02-22\n2018-08-27\n\
             2020-10-14\n2025-04-04\nlatest"
        );
        assert_eq!(get(&m, "/ec2").0, ec2);
    }

    #[test]
    fn openstack_version_folders_list_what_each_version_has() {
        let m = md();
        assert_eq!(get(&m, "/openstack/2012-08-10").0, "meta_data.json\nuser_data");
        assert_eq!(get(&m, "/openstack/2013-10-17/").0, "meta_data.json\nuser_data\npassword\nvendor_data.json");
        let latest = "meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\nvendor_data2.json";
        assert_eq!(get(&m, "/openstack/latest").0, latest);
        let mut none = md();
        none.user_data = None;
        assert!(!get(&none, "/openstack/latest").0.contains("user_data"));
        assert!(none.lookup("/openstack/latest/user_data").is_none());
        assert!(m.lookup("/openstack/2012-08-10/vendor_data.json").is_none(), "Havana added it");
        assert!(m.lookup("/openstack/2015-10-15/vendor_data2.json").is_none(), "Newton added it");
        assert!(m.lookup("/openstack/1999-01-01/meta_data.json").is_none());
        assert!(m.lookup("/openstack/latest/nothing").is_none());
        assert!(m.lookup("/openstack/latest/meta_data.json/uuid").is_none());
        assert!(m.lookup("/openstack/content/0000").is_none());
    }

    #[test]
    fn meta_data_is_novas_with_keys_by_name_and_a_fresh_seed() {
        let m = md();
        let (body, ct) = get(&m, "/openstack/latest/meta_data.json");
        assert_eq!(ct, APPLICATION_JSON);
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["uuid"], "0e7c1c1e-1111-4222-8333-444455556666");
        assert_eq!(v["name"], "web one");
        assert_eq!(v["hostname"], "web-one");
        assert_eq!(v["availability_zone"], "az1");
        assert_eq!(v["project_id"], "p1");
        assert_eq!(v["launch_index"], 0);
        assert_eq!(v["meta"], json!({"role": "db"}));
        assert_eq!(v["public_keys"], json!({"mykey": "ssh-ed25519 AAAA me@host"}));
        assert_eq!(v["keys"], json!([{"name": "mykey", "type": "ssh", "data": "ssh-ed25519 AAAA me@host"}]));
        assert_eq!(v["devices"], json!([]));
        let seed = v["random_seed"].as_str().expect("seed");
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(seed).expect("base64").len(), 512);
        let again: Value = serde_json::from_str(&get(&m, "/openstack/latest/meta_data.json").0).expect("json");
        assert_ne!(again["random_seed"], v["random_seed"], "fresh per request");
        // Older versions carry less.
        let folsom: Value = serde_json::from_str(&get(&m, "/openstack/2012-08-10/meta_data.json").0).expect("json");
        assert!(folsom.get("random_seed").is_none() && folsom.get("project_id").is_none(), "{folsom}");
        // No key pair, no metadata: the keys are absent, as Nova's.
        let mut bare = md();
        bare.key = None;
        bare.meta.clear();
        let v: Value = serde_json::from_str(&get(&bare, "/openstack/latest/meta_data.json").0).expect("json");
        assert!(v.get("public_keys").is_none() && v.get("keys").is_none() && v.get("meta").is_none(), "{v}");
        // An x509 key pair says so.
        assert_eq!(KeyPair::new("c", "-----BEGIN CERTIFICATE-----\nMII").kind, "x509");
    }

    #[test]
    fn the_other_openstack_files() {
        let m = md();
        assert_eq!(get(&m, "/openstack/latest/user_data"), ("#!/bin/sh\necho hi\n".to_string(), TEXT_PLAIN));
        assert_eq!(get(&m, "/openstack/latest/vendor_data.json"), ("{}".to_string(), APPLICATION_JSON));
        assert_eq!(get(&m, "/openstack/latest/vendor_data2.json"), (r#"{"static":{}}"#.to_string(), APPLICATION_JSON));
        assert_eq!(get(&m, "/openstack/latest/password"), (String::new(), TEXT_PLAIN));
        let (nd, ct) = get(&m, "/openstack/latest/network_data.json");
        assert_eq!(ct, TEXT_PLAIN, "Nova leaves network_data.json at text/plain");
        let nd: Value = serde_json::from_str(&nd).expect("json");
        assert_eq!(nd["networks"][0]["ip_address"], "10.0.0.5");
        assert_eq!(nd["links"][0]["ethernet_mac_address"], "fa:16:3e:00:00:01");
    }

    #[test]
    fn ec2_tree() {
        let m = md();
        assert_eq!(get(&m, "/latest").0, "meta-data/\nuser-data");
        assert_eq!(get(&m, "/latest/user-data").0, "#!/bin/sh\necho hi\n");
        assert_eq!(
            get(&m, "/latest/meta-data/").0,
            "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\ninstance-action\n\
             instance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nplacement/\npublic-hostname\npublic-ipv4\n\
             public-keys/\nreservation-id\nsecurity-groups"
        );
        let leaf = |p: &str| get(&m, &format!("/latest/meta-data/{p}")).0;
        assert_eq!(leaf("ami-id"), "ami-9f1e2d3c");
        assert_eq!(leaf("instance-id"), "i-0e7c1c1e");
        assert_eq!(leaf("hostname"), "web-one");
        assert_eq!(leaf("local-hostname"), "web-one");
        assert_eq!(leaf("local-ipv4"), "10.0.0.5");
        assert_eq!(leaf("reservation-id"), "r-abcdef12");
        assert_eq!(leaf("security-groups"), "default");
        assert_eq!(leaf("instance-type"), "m1.tiny");
        assert_eq!(leaf("ami-launch-index"), "0");
        assert_eq!(leaf("placement"), "availability-zone");
        assert_eq!(leaf("placement/availability-zone"), "az1");
        assert_eq!(leaf("block-device-mapping/root"), "/dev/vda");
        assert_eq!(leaf("block-device-mapping"), "ami\nroot");
        // The flavor's local disks are listed as Nova lists them (what cloud-init mounts).
        let mut with_local = m.clone();
        with_local.local_devices = vec![("ephemeral0".into(), "/dev/vdb".into()), ("swap".into(), "/dev/vdc".into())];
        with_local.volume_devices = vec!["/dev/vdf".into(), "/dev/vdd".into()];
        let leaf_l = |p: &str| get(&with_local, &format!("/latest/meta-data/{p}")).0;
        assert_eq!(leaf_l("block-device-mapping"), "ami\nebs0\nebs1\nephemeral0\nroot\nswap");
        assert_eq!(leaf_l("block-device-mapping/ephemeral0"), "/dev/vdb");
        assert_eq!(leaf_l("block-device-mapping/swap"), "/dev/vdc");
        // Volumes are numbered in device order, as Nova sorts them.
        assert_eq!(leaf_l("block-device-mapping/ebs0"), "/dev/vdd");
        assert_eq!(leaf_l("block-device-mapping/ebs1"), "/dev/vdf");
        // public-keys/ lists `0=<key name>`; 0/ is a folder with the key.
        assert_eq!(leaf("public-keys"), "0=mykey");
        assert_eq!(leaf("public-keys/0"), "openssh-key");
        assert_eq!(leaf("public-keys/0/openssh-key"), "ssh-ed25519 AAAA me@host");
        // Paths without a version are EC2 too; dated versions carry what they had.
        assert_eq!(get(&m, "/ec2/2009-04-04/meta-data/hostname").0, "web-one");
        let v1 = get(&m, "/1.0/meta-data").0;
        assert!(!v1.contains("local-hostname") && !v1.contains("placement") && v1.contains("hostname"), "{v1}");
        assert!(m.lookup("/1.0/meta-data/placement/availability-zone").is_none());
        assert!(m.lookup("/latest/meta-data/nothing").is_none());
        assert!(m.lookup("/latest/meta-data/hostname/more").is_none());
        assert!(m.lookup("/2010-01-01/meta-data").is_none());
        assert_eq!(get(&m, "/latest/meta-data/../meta-data//hostname").0, "web-one", "normalised as a path");
    }

    #[test]
    fn the_config_drive_holds_novas_files() {
        let m = md();
        let files: BTreeMap<String, Vec<u8>> = m.config_drive_files().into_iter().collect();
        for version in OPENSTACK_VERSIONS.iter().chain(&["latest"]) {
            assert!(files.contains_key(&format!("openstack/{version}/meta_data.json")), "{version}");
            assert!(files.contains_key(&format!("openstack/{version}/user_data")), "{version}");
            assert!(!files.contains_key(&format!("openstack/{version}/password")), "{version}");
        }
        assert!(!files.contains_key("openstack/2012-08-10/vendor_data.json"));
        assert!(files.contains_key("openstack/2013-10-17/vendor_data.json"));
        assert!(!files.contains_key("openstack/2013-10-17/network_data.json"));
        assert!(files.contains_key("openstack/2015-10-15/network_data.json"));
        assert!(files.contains_key("openstack/2016-10-06/vendor_data2.json"));
        assert!(files.contains_key("openstack/latest/vendor_data2.json"));
        let ec2: Vec<&String> = files.keys().filter(|k| k.starts_with("ec2/")).collect();
        assert_eq!(
            ec2,
            [
                "ec2/2009-04-04/meta-data.json",
                "ec2/2009-04-04/user-data",
                "ec2/latest/meta-data.json",
                "ec2/latest/user-data"
            ]
        );
        let ec2md: Value = serde_json::from_slice(&files["ec2/latest/meta-data.json"]).expect("json");
        assert_eq!(ec2md["public-keys"]["0"]["openssh-key"], "ssh-ed25519 AAAA me@host");
        assert_eq!(ec2md["security-groups"], json!(["default"]));
        // The drive's meta_data.json is the service's (bar the random seed).
        let mut drive: Value = serde_json::from_slice(&files["openstack/latest/meta_data.json"]).expect("json");
        let mut live: Value = serde_json::from_str(&get(&m, "/openstack/latest/meta_data.json").0).expect("json");
        drive["random_seed"] = json!(null);
        live["random_seed"] = json!(null);
        assert_eq!(drive, live);
    }
}
