//! Create forms: a network with its first subnet (CIDR, gateway, DHCP, DNS), a port, identity
//! resources, and an image upload or download. Input is checked here (addresses parse, the
//! gateway is inside the CIDR's family, numbers are numbers) so the cloud gets well-formed
//! requests; what the cloud refuses comes back in the form's error line. Files are not touched
//! here (the update path does no I/O): the worker opens them and says what is wrong.

use std::net::IpAddr;

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use tui_textarea::TextArea;

use super::Effect;
use crate::component::{centered, dialog, field, focused, text_of};
use crate::theme::Theme;

/// A new network and, when a CIDR is given, its subnet.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: Option<SubnetSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SubnetSpec {
    pub cidr: String,
    pub ip_version: u8,
    /// `None`: Neutron picks the first address; `Some(None)`: no gateway.
    pub gateway: Option<Option<String>>,
    pub dhcp: bool,
    pub dns: Vec<String>,
}

/// A new port on a network.
#[derive(Clone, Debug, PartialEq)]
pub struct PortSpec {
    pub network_id: String,
    pub name: String,
    pub fixed_ip: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    Network,
    Port,
    Project,
    User,
    Grant,
    /// A new image from a local file.
    Upload,
    /// An image's data to a local file.
    Download,
    /// A security group, a rule in one, an instance's groups.
    SecGroup,
    SecRule,
    ServerGroups,
    /// A volume, and what is done to one: extend, attach, detach, snapshot, upload to an image.
    Volume,
    Extend,
    Attach,
    Detach,
    VolSnapshot,
    ToImage,
    /// A Nova server group; a host aggregate and its hosts/zone (views/server_groups.rs,
    /// views/aggregates.rs).
    SrvGroup,
    Aggregate,
    AggregateHosts,
    /// An aggregate's metadata: keys set (added or changed) and removed.
    AggregateMeta,
    /// A port attached to / detached from an instance (views/interfaces.rs).
    AddPort,
    RemovePort,
}

pub struct CreateForm {
    pub what: What,
    labels: &'static [&'static str],
    fields: Vec<TextArea<'static>>,
    focus: usize,
    /// What the form picks from by name or ID (name, ID): networks for a port, security groups
    /// for a rule or an instance.
    networks: Vec<(String, String)>,
    /// The instance whose groups change (ID, name, its groups now), for that form.
    server: Option<(String, String, Vec<String>)>,
    /// The volume a volume form acts on; images, snapshots and volumes a new volume may start
    /// from (name, ID).
    volume: VolumeRef,
    images: Vec<(String, String)>,
    snapshots: Vec<(String, String)>,
    volumes: Vec<(String, String)>,
    /// The image to download (ID, name).
    image: Option<(String, String)>,
    pub error: Option<String>,
    pub busy: bool,
}

const NETWORK: &[&str] = &["Name", "Subnet CIDR", "Gateway", "DHCP", "DNS servers"];
const PORT: &[&str] = &["Network", "Name", "Fixed IP"];
const PROJECT: &[&str] = &["Name", "Description"];
const USER: &[&str] = &["Name", "Password", "Project", "Role"];
const GRANT: &[&str] = &["User", "Project", "Role"];
const UPLOAD: &[&str] = &["File", "Name", "Disk format", "Visibility", "Min disk GB", "Min RAM MB"];
const DOWNLOAD: &[&str] = &["Save to"];
const SECGROUP: &[&str] = &["Name", "Description"];
const SECRULE: &[&str] = &["Group", "Direction", "Ethertype", "Protocol", "Ports", "Remote", "Description"];
const SERVER_GROUPS: &[&str] = &["Add", "Remove"];
const VOLUME: &[&str] = &["Name", "Size GB", "Type", "Image", "Snapshot", "From volume", "Description"];
const EXTEND: &[&str] = &["New size GB"];
const ATTACH: &[&str] = &["Instance"];
const DETACH: &[&str] = &["From"];
const VOLSNAPSHOT: &[&str] = &["Name", "Description"];
const TO_IMAGE: &[&str] = &["Image name", "Disk format"];
const SRV_GROUP: &[&str] = &["Name", "Policy", "Max per host"];
const AGGREGATE: &[&str] = &["Name", "Zone"];
const AGGREGATE_HOSTS: &[&str] = &["Add host", "Remove host", "Zone"];
const AGGREGATE_META: &[&str] = &["Set", "Remove"];
const ADD_PORT: &[&str] = &["Network", "Or port"];
const REMOVE_PORT: &[&str] = &["Port"];

/// A new volume as the form describes it (Cinder's fields; its source as an ID: at most one of
/// image, snapshot and source volume).
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeSpec {
    pub name: String,
    /// `None`: the source's size (only with a snapshot or a source volume).
    pub size_gb: Option<u64>,
    /// Empty: the cloud's default type.
    pub volume_type: String,
    /// Cinder's `imageRef` (the volume starts as the image).
    pub image_id: Option<String>,
    pub snapshot_id: Option<String>,
    /// Cinder's `source_volid` (a clone).
    pub source_volid: Option<String>,
    pub description: String,
}

/// The volume a volume form acts on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VolumeRef {
    pub id: String,
    pub name: String,
    pub size_gb: u64,
    /// Attached to (server ID, server name), if it is.
    pub attached: Option<(String, String)>,
}

/// A security group rule as the form describes it (Neutron's fields).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    pub group_id: String,
    pub direction: String,
    pub ethertype: String,
    /// `None`: any protocol.
    pub protocol: Option<String>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: String,
}

/// What a finished form asks the cloud for. Identity forms name users, projects and roles by
/// name or ID; the worker looks them up.
#[derive(Clone, Debug, PartialEq)]
pub enum Create {
    Network(NetworkSpec),
    Port(PortSpec),
    Project {
        name: String,
        description: String,
    },
    /// A user, with a role on a project when one is given.
    User {
        name: String,
        password: String,
        project: Option<String>,
        role: String,
    },
    /// A role for a user on a project.
    Grant {
        user: String,
        project: String,
        role: String,
    },
    SecGroup {
        name: String,
        description: String,
    },
    SecRule(RuleSpec),
    Volume(VolumeSpec),
    Extend {
        volume: VolumeRef,
        size_gb: u64,
    },
    Attach {
        volume: VolumeRef,
        server_id: String,
        server_name: String,
    },
    Detach {
        volume: VolumeRef,
    },
    VolSnapshot {
        volume: VolumeRef,
        name: String,
        description: String,
    },
    ToImage {
        volume: VolumeRef,
        image_name: String,
        disk_format: String,
    },
    /// Security groups (names or IDs) added to and removed from an instance.
    ServerGroups {
        server_id: String,
        server_name: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Not a create request: a transfer the app starts (`transfer.rs`).
    Upload(crate::transfer::UploadSpec),
    Download(crate::transfer::DownloadSpec),
    /// A Nova server group (`max_per_host`: anti-affinity's rule, 2.64+).
    ServerGroup {
        name: String,
        policy: String,
        max_per_host: Option<u32>,
    },
    /// A host aggregate, in an availability zone when one is given.
    Aggregate {
        name: String,
        zone: Option<String>,
    },
    /// Hosts added to / removed from an aggregate (`id`), its zone set (`Some("")`: none).
    AggregateHosts {
        id: String,
        name: String,
        add: Vec<String>,
        remove: Vec<String>,
        zone: Option<String>,
    },
    /// An aggregate's metadata changed in one `set_metadata`: `set` keys to values, `unset`
    /// keys removed (Nova's null), as `openstack aggregate set/unset --property`.
    AggregateMeta {
        id: String,
        name: String,
        set: Vec<(String, String)>,
        unset: Vec<String>,
    },
    /// A new port on a network, or an existing port, attached to an instance.
    AddPort {
        server_id: String,
        server_name: String,
        network_id: Option<String>,
        port_id: Option<String>,
    },
    RemovePort {
        server_id: String,
        server_name: String,
        port_id: String,
    },
}

impl CreateForm {
    pub fn network() -> CreateForm {
        let fields = vec![
            field("", "name (required)"),
            field("", "e.g. 10.0.5.0/24 — empty: no subnet"),
            field("", "empty: first address · none: no gateway"),
            field("yes", "yes / no"),
            field("", "comma-separated, e.g. 1.1.1.1, 9.9.9.9"),
        ];
        CreateForm { what: What::Network, labels: NETWORK, ..CreateForm::blank(fields) }
    }

    /// The port form, for one of these networks (name, ID).
    pub fn port(networks: Vec<(String, String)>, default: Option<&str>) -> CreateForm {
        let fields = vec![
            field(default.unwrap_or_default(), "network name or ID"),
            field("", "name (optional)"),
            field("", "empty: Neutron picks one"),
        ];
        CreateForm { what: What::Port, labels: PORT, networks, ..CreateForm::blank(fields) }
    }

    /// The identity forms (admins): a project, a user (optionally with a role on a project), a
    /// role grant.
    pub fn identity(what: What) -> CreateForm {
        let (labels, fields) = match what {
            What::Project => (PROJECT, vec![field("", "name (required)"), field("", "optional")]),
            What::User => {
                let mut pw = field("", "required");
                pw.set_mask_char('•');
                (
                    USER,
                    vec![
                        field("", "name (required)"),
                        pw,
                        field("", "name or ID (optional)"),
                        field("member", "role name"),
                    ],
                )
            }
            _ => (
                GRANT,
                vec![field("", "user name or ID"), field("", "project name or ID"), field("member", "role name")],
            ),
        };
        CreateForm { what, labels, ..CreateForm::blank(fields) }
    }

    /// The upload form: a local file into a new image.
    pub fn upload() -> CreateForm {
        let fields = vec![
            field("", "path of the local file, e.g. ~/images/cirros.qcow2"),
            field("", "empty: the file's name without extension"),
            field("", "empty: read from the file (qcow2, raw, iso, vmdk, …)"),
            field("private", "private / shared / community / public"),
            field("0", "GB"),
            field("0", "MB"),
        ];
        CreateForm { what: What::Upload, labels: UPLOAD, ..CreateForm::blank(fields) }
    }

    /// The download form for one image, with a suggested file.
    pub fn download(id: &str, name: &str, suggested: &str) -> CreateForm {
        let fields = vec![field(suggested, "file to create (must not exist)")];
        let image = Some((id.to_string(), name.to_string()));
        CreateForm { what: What::Download, labels: DOWNLOAD, image, ..CreateForm::blank(fields) }
    }

    /// A fresher network list for the port form (it asks for one when it opens).
    pub fn set_networks(&mut self, networks: Vec<(String, String)>) {
        if self.what == What::Port {
            self.networks = networks;
        }
    }

    /// A fresher security group list for the rule and instance-groups forms.
    pub fn set_groups(&mut self, groups: Vec<(String, String)>) {
        if matches!(self.what, What::SecRule | What::ServerGroups) {
            self.networks = groups;
        }
    }

    /// Fresher images, snapshots and volumes for the volume form.
    pub fn set_sources(
        &mut self,
        images: Vec<(String, String)>,
        snapshots: Vec<(String, String)>,
        volumes: Vec<(String, String)>,
    ) {
        if self.what == What::Volume {
            self.images = images;
            self.snapshots = snapshots;
            self.volumes = volumes;
        }
    }

    /// A new security group.
    pub fn secgroup() -> CreateForm {
        let fields = vec![field("", "name (required)"), field("", "optional")];
        CreateForm { what: What::SecGroup, labels: SECGROUP, ..CreateForm::blank(fields) }
    }

    /// A new rule, in `default` (a group name or ID) when given, among these groups.
    pub fn secrule(groups: Vec<(String, String)>, default: Option<&str>) -> CreateForm {
        let fields = vec![
            field(default.unwrap_or_default(), "group name or ID"),
            field("ingress", "ingress / egress"),
            field("IPv4", "IPv4 / IPv6"),
            field("tcp", "tcp, udp, icmp, ipv6-icmp, a number, or any"),
            field("", "22 · 8000-8100 · ICMP type/code 8/0 · empty: all"),
            field("", "CIDR (0.0.0.0/0), a group's name or ID, empty: anyone"),
            field("", "optional"),
        ];
        CreateForm { what: What::SecRule, labels: SECRULE, networks: groups, ..CreateForm::blank(fields) }
    }

    /// Add and remove security groups of an instance (ID, name, its groups now).
    pub fn server_groups(server: (String, String, Vec<String>), groups: Vec<(String, String)>) -> CreateForm {
        let fields = vec![field("", "group names or IDs, comma-separated"), field("", "group names or IDs")];
        CreateForm {
            what: What::ServerGroups,
            labels: SERVER_GROUPS,
            networks: groups,
            server: Some(server),
            ..CreateForm::blank(fields)
        }
    }

    /// A new volume, empty or from one source (an image, a snapshot or another volume);
    /// `from_snapshot` prefills the snapshot (the Snapshots view's `c`), whose size it then
    /// takes unless one is given.
    pub fn volume(
        images: Vec<(String, String)>,
        snapshots: Vec<(String, String)>,
        volumes: Vec<(String, String)>,
        from_snapshot: Option<&str>,
    ) -> CreateForm {
        let size = if from_snapshot.is_some() { "" } else { "1" };
        let fields = vec![
            field("", "name (optional)"),
            field(size, "GB (empty with a source: the source's size)"),
            field("", "empty: the cloud's default type"),
            field("", "image name or ID (optional): the volume starts as the image"),
            field(from_snapshot.unwrap_or_default(), "snapshot name or ID (optional)"),
            field("", "volume name or ID (optional): a copy of it"),
            field("", "optional"),
        ];
        CreateForm { what: What::Volume, labels: VOLUME, images, snapshots, volumes, ..CreateForm::blank(fields) }
    }

    /// One of the forms that act on a volume: extend, attach (instances to pick from, by name
    /// or ID), detach, snapshot, upload to an image.
    pub fn on_volume(what: What, volume: VolumeRef, servers: Vec<(String, String)>) -> CreateForm {
        let (labels, fields) = match what {
            What::Extend => (EXTEND, vec![field(&(volume.size_gb + 1).to_string(), "GB, larger than now")]),
            What::Attach => (ATTACH, vec![field("", "instance name or ID")]),
            What::Detach => {
                (DETACH, vec![field(&volume.attached.clone().map(|a| a.1).unwrap_or_default(), "the instance")])
            }
            What::VolSnapshot => {
                (VOLSNAPSHOT, vec![field(&format!("{}-snap", volume.name), "name"), field("", "optional")])
            }
            _ => (TO_IMAGE, vec![field(&volume.name, "name of the new image"), field("raw", "raw / qcow2 / …")]),
        };
        CreateForm { what, labels, networks: servers, volume, ..CreateForm::blank(fields) }
    }

    /// A new server group; `rules` says whether the cloud takes `max_server_per_host` (2.64+).
    pub fn server_group(rules: bool) -> CreateForm {
        let mut fields = vec![
            field("", "name (required)"),
            field("anti-affinity", "affinity / anti-affinity / soft-affinity / soft-anti-affinity"),
        ];
        let labels = if rules {
            fields.push(field("", "anti-affinity only: instances per host (empty: 1)"));
            SRV_GROUP
        } else {
            &SRV_GROUP[..2]
        };
        let choices = crate::views::server_groups::POLICIES.iter().map(|p| (p.to_string(), p.to_string())).collect();
        CreateForm { what: What::SrvGroup, labels, networks: choices, ..CreateForm::blank(fields) }
    }

    /// A new host aggregate.
    pub fn aggregate() -> CreateForm {
        let fields = vec![field("", "name (required)"), field("", "availability zone (optional)")];
        CreateForm { what: What::Aggregate, labels: AGGREGATE, ..CreateForm::blank(fields) }
    }

    /// Hosts and zone of an aggregate (ID, name, its hosts now, its zone now), hosts picked among
    /// the hypervisors' names.
    pub fn aggregate_hosts(aggregate: (String, String, Vec<String>), zone: &str, hosts: Vec<String>) -> CreateForm {
        let fields = vec![
            field("", "host names, comma-separated"),
            field("", "host names, comma-separated"),
            field(zone, "availability zone (empty: none)"),
        ];
        CreateForm {
            what: What::AggregateHosts,
            labels: AGGREGATE_HOSTS,
            networks: hosts.into_iter().map(|h| (h.clone(), h)).collect(),
            server: Some(aggregate),
            volume: VolumeRef { name: zone.to_string(), ..VolumeRef::default() },
            ..CreateForm::blank(fields)
        }
    }

    /// The metadata of an aggregate (ID, name, its key/value pairs now).
    pub fn aggregate_metadata(aggregate: (String, String), pairs: Vec<(String, String)>) -> CreateForm {
        let fields = vec![field("", "key=value, comma-separated: adds or changes"), field("", "keys, comma-separated")];
        CreateForm {
            what: What::AggregateMeta,
            labels: AGGREGATE_META,
            networks: pairs,
            server: Some((aggregate.0, aggregate.1, Vec::new())),
            ..CreateForm::blank(fields)
        }
    }

    /// Attach a port to an instance (ID, name, its port IDs now): a new one on a network (name
    /// or ID), or an existing free port (name or ID).
    pub fn add_port(server: (String, String, Vec<String>), networks: Vec<(String, String)>) -> CreateForm {
        let only = if networks.len() == 1 { networks[0].0.clone() } else { String::new() };
        let fields = vec![field(&only, "network name or ID"), field("", "or a free port's name or ID")];
        CreateForm {
            what: What::AddPort,
            labels: ADD_PORT,
            networks,
            server: Some(server),
            ..CreateForm::blank(fields)
        }
    }

    /// Detach one of the instance's ports (ID, name, its ports as (label, port ID)).
    pub fn remove_port(server: (String, String), ports: Vec<(String, String)>) -> CreateForm {
        let only = if ports.len() == 1 { ports[0].1.clone() } else { String::new() };
        let fields = vec![field(&only, "port ID, IP or name")];
        CreateForm {
            what: What::RemovePort,
            labels: REMOVE_PORT,
            networks: ports,
            server: Some((server.0, server.1, Vec::new())),
            ..CreateForm::blank(fields)
        }
    }

    /// The instance (or aggregate) a form acts on, by ID.
    pub fn target_id(&self) -> Option<&str> {
        self.server.as_ref().map(|s| s.0.as_str())
    }

    /// Fresher hypervisor host names for the aggregate hosts form.
    pub fn set_hosts(&mut self, hosts: Vec<String>) {
        if self.what == What::AggregateHosts && !hosts.is_empty() {
            self.networks = hosts.into_iter().map(|h| (h.clone(), h)).collect();
        }
    }

    /// Free ports (name, ID) the add-port form may take instead of a network.
    pub fn set_free_ports(&mut self, ports: Vec<(String, String)>) {
        if self.what == What::AddPort {
            self.images = ports;
        }
    }

    /// The instance's ports (label, ID) for the remove-port form, fresher than when it opened.
    pub fn set_instance_ports(&mut self, ports: Vec<(String, String)>) {
        if self.what == What::RemovePort && !ports.is_empty() {
            self.networks = ports;
        }
    }

    fn blank(fields: Vec<TextArea<'static>>) -> CreateForm {
        CreateForm {
            what: What::Project,
            labels: PROJECT,
            fields,
            focus: 0,
            networks: Vec::new(),
            server: None,
            volume: VolumeRef::default(),
            images: Vec::new(),
            snapshots: Vec::new(),
            volumes: Vec::new(),
            image: None,
            error: None,
            busy: false,
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        match key.code {
            KeyCode::Esc => return Effect::Close,
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % self.fields.len(),
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + self.fields.len() - 1) % self.fields.len(),
            KeyCode::Enter if self.focus + 1 < self.fields.len() => self.focus += 1,
            KeyCode::Enter => match self.spec() {
                Ok(c) => {
                    self.error = None;
                    self.busy = true;
                    return Effect::Create(c);
                }
                Err(e) => self.error = Some(e),
            },
            _ => {
                self.fields[self.focus].input(key);
                self.error = None;
            }
        }
        Effect::None
    }

    /// The request the form describes, or what is wrong with it.
    pub fn spec(&self) -> Result<Create, String> {
        let v: Vec<String> = self.fields.iter().map(text_of).collect();
        match self.what {
            What::Network => {
                if v[0].is_empty() {
                    return Err("the network needs a name".into());
                }
                let subnet = if v[1].is_empty() {
                    if v[2..].iter().zip(["", "yes", ""]).any(|(x, d)| x != d) {
                        return Err("gateway, DHCP and DNS belong to a subnet: give its CIDR".into());
                    }
                    None
                } else {
                    Some(subnet_spec(&v[1], &v[2], &v[3], &v[4])?)
                };
                Ok(Create::Network(NetworkSpec { name: v[0].clone(), subnet }))
            }
            What::Port => {
                let net = &v[0];
                if net.is_empty() {
                    return Err("choose the port's network (name or ID)".into());
                }
                let found: Vec<&(String, String)> =
                    self.networks.iter().filter(|(name, id)| name == net || id == net).collect();
                let network_id = match found.as_slice() {
                    [(_, id)] => id.clone(),
                    [] => return Err(format!("no network {net} here")),
                    _ => return Err(format!("several networks are named {net}: give its ID")),
                };
                let fixed_ip = if v[2].is_empty() {
                    None
                } else {
                    let ip: IpAddr = v[2].parse().map_err(|_| format!("{} is not an IP address", v[2]))?;
                    Some(ip.to_string())
                };
                Ok(Create::Port(PortSpec { network_id, name: v[1].clone(), fixed_ip }))
            }
            What::Project if v[0].is_empty() => Err("the project needs a name".into()),
            What::Project => Ok(Create::Project { name: v[0].clone(), description: v[1].clone() }),
            What::User if v[0].is_empty() => Err("the user needs a name".into()),
            What::User if v[1].is_empty() => Err("the user needs a password".into()),
            What::User if !v[2].is_empty() && v[3].is_empty() => Err("which role on that project?".into()),
            What::User => Ok(Create::User {
                name: v[0].clone(),
                password: v[1].clone(),
                project: (!v[2].is_empty()).then(|| v[2].clone()),
                role: v[3].clone(),
            }),
            What::Grant if v.iter().any(String::is_empty) => Err("user, project and role are all needed".into()),
            What::Grant => Ok(Create::Grant { user: v[0].clone(), project: v[1].clone(), role: v[2].clone() }),
            What::Upload => upload_spec(&v),
            What::SecGroup if v[0].is_empty() => Err("the group needs a name".into()),
            What::SecGroup => Ok(Create::SecGroup { name: v[0].clone(), description: v[1].clone() }),
            What::SecRule => rule_spec(&v, &self.networks).map(Create::SecRule),
            What::Volume => {
                let sources = v[3..6].iter().filter(|s| !s.is_empty()).count();
                if sources > 1 {
                    return Err("start from one source: an image, a snapshot or a volume".into());
                }
                let size = match v[1].as_str() {
                    // Cinder takes a snapshot's or a source volume's size when none is given.
                    "" if !v[4].is_empty() || !v[5].is_empty() => None,
                    s => Some(
                        s.parse::<u64>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("size {s}: whole GB, 1 or more"))?,
                    ),
                };
                let image_id = (!v[3].is_empty()).then(|| pick(&self.images, &v[3], "image")).transpose()?;
                let snapshot_id = (!v[4].is_empty()).then(|| pick(&self.snapshots, &v[4], "snapshot")).transpose()?;
                let source_volid = (!v[5].is_empty()).then(|| pick(&self.volumes, &v[5], "volume")).transpose()?;
                Ok(Create::Volume(VolumeSpec {
                    name: v[0].clone(),
                    size_gb: size,
                    volume_type: v[2].clone(),
                    image_id,
                    snapshot_id,
                    source_volid,
                    description: v[6].clone(),
                }))
            }
            What::Extend => {
                let n = v[0].parse::<u64>().map_err(|_| format!("size {}: whole GB", v[0]))?;
                if n <= self.volume.size_gb {
                    return Err(format!("a volume only grows: give more than {} GB", self.volume.size_gb));
                }
                Ok(Create::Extend { volume: self.volume.clone(), size_gb: n })
            }
            What::Attach => {
                if v[0].is_empty() {
                    return Err("which instance?".into());
                }
                let server_id = pick(&self.networks, &v[0], "instance")?;
                let server_name = self
                    .networks
                    .iter()
                    .find(|(_, id)| *id == server_id)
                    .map(|(n, _)| n.clone())
                    .unwrap_or(v[0].clone());
                Ok(Create::Attach { volume: self.volume.clone(), server_id, server_name })
            }
            What::Detach if self.volume.attached.is_none() => Err("the volume is not attached".into()),
            What::Detach => Ok(Create::Detach { volume: self.volume.clone() }),
            What::VolSnapshot => {
                Ok(Create::VolSnapshot { volume: self.volume.clone(), name: v[0].clone(), description: v[1].clone() })
            }
            What::ToImage if v[0].is_empty() => Err("the image needs a name".into()),
            What::ToImage => {
                let f = if v[1].is_empty() { "raw".to_string() } else { v[1].to_lowercase() };
                if !crate::transfer::DISK_FORMATS.contains(&f.as_str()) {
                    return Err(format!("disk format {f}: one of {}", crate::transfer::DISK_FORMATS.join(", ")));
                }
                Ok(Create::ToImage { volume: self.volume.clone(), image_name: v[0].clone(), disk_format: f })
            }
            What::ServerGroups => {
                let list = |s: &str| -> Vec<String> {
                    s.split([',', ' ']).filter(|x| !x.is_empty()).map(str::to_string).collect()
                };
                let (add, remove) = (list(&v[0]), list(&v[1]));
                if add.is_empty() && remove.is_empty() {
                    return Err("name a group to add or to remove".into());
                }
                let (server_id, server_name, _) = self.server.clone().unwrap_or_default();
                Ok(Create::ServerGroups { server_id, server_name, add, remove })
            }
            What::SrvGroup => {
                if v[0].is_empty() {
                    return Err("the group needs a name".into());
                }
                let policy = v[1].trim().to_lowercase();
                if !crate::views::server_groups::POLICIES.contains(&policy.as_str()) {
                    return Err(format!(
                        "policy {policy}: one of {}",
                        crate::views::server_groups::POLICIES.join(", ")
                    ));
                }
                let max = v.get(2).map(|s| s.trim()).filter(|s| !s.is_empty());
                let max_per_host = match max {
                    None => None,
                    Some(_) if policy != "anti-affinity" => {
                        return Err("max per host is anti-affinity's rule only".into());
                    }
                    Some(m) => Some(
                        m.parse::<u32>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("max per host {m}: a whole number, 1 or more"))?,
                    ),
                };
                Ok(Create::ServerGroup { name: v[0].clone(), policy, max_per_host })
            }
            What::Aggregate if v[0].is_empty() => Err("the aggregate needs a name".into()),
            What::Aggregate => {
                Ok(Create::Aggregate { name: v[0].clone(), zone: (!v[1].is_empty()).then(|| v[1].clone()) })
            }
            What::AggregateHosts => {
                let list = |s: &str| -> Result<Vec<String>, String> {
                    s.split([',', ' ']).filter(|x| !x.is_empty()).map(|h| pick(&self.networks, h, "host")).collect()
                };
                let (add, remove) = (list(&v[0])?, list(&v[1])?);
                // The zone field starts at the aggregate's zone: only a change is sent.
                let zone = (v[2] != self.volume.name).then(|| v[2].clone());
                if add.is_empty() && remove.is_empty() && zone.is_none() {
                    return Err("name a host to add or remove, or change the zone".into());
                }
                let (id, name, _) = self.server.clone().unwrap_or_default();
                Ok(Create::AggregateHosts { id, name, add, remove, zone })
            }
            What::AggregateMeta => {
                let (id, name, _) = self.server.clone().unwrap_or_default();
                let (set, unset) = metadata_edit(&v[0], &v[1], &self.networks, &name)?;
                Ok(Create::AggregateMeta { id, name, set, unset })
            }
            What::AddPort => {
                let (server_id, server_name, _) = self.server.clone().unwrap_or_default();
                match (v[0].is_empty(), v[1].is_empty()) {
                    (_, false) => {
                        let port_id = pick(&self.images, &v[1], "free port")?;
                        Ok(Create::AddPort { server_id, server_name, network_id: None, port_id: Some(port_id) })
                    }
                    (false, true) => {
                        let network_id = pick(&self.networks, &v[0], "network")?;
                        Ok(Create::AddPort { server_id, server_name, network_id: Some(network_id), port_id: None })
                    }
                    (true, true) => Err("choose a network for a new port, or a free port".into()),
                }
            }
            What::RemovePort if v[0].is_empty() => Err("which port?".into()),
            What::RemovePort => {
                let (server_id, server_name, _) = self.server.clone().unwrap_or_default();
                // A port by its ID, or by the label the choices show (its IP, its name).
                let port_id = self
                    .networks
                    .iter()
                    .find(|(label, id)| *id == v[0] || label.split(' ').any(|w| w == v[0]))
                    .map(|(_, id)| id.clone())
                    .ok_or_else(|| format!("{} is not one of the instance's ports", v[0]))?;
                Ok(Create::RemovePort { server_id, server_name, port_id })
            }
            What::Download => {
                let (image_id, name) = self.image.clone().unwrap_or_default();
                if v[0].is_empty() {
                    return Err("where should the image be saved?".into());
                }
                if v[0].ends_with('/') {
                    return Err("give a file name, not a directory".into());
                }
                Ok(Create::Download(crate::transfer::DownloadSpec { image_id, name, file: v[0].clone() }))
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let title = match self.what {
            What::Network => "Create network",
            What::Port => "Create port",
            What::Project => "Create project",
            What::User => "Create user",
            What::Grant => "Grant a role",
            What::Upload => "Upload image",
            What::Download => "Download image",
            What::SecGroup => "Create security group",
            What::SecRule => "Add a rule",
            What::ServerGroups => "Security groups of the instance",
            What::Volume => "Create volume",
            What::Extend => "Extend volume",
            What::Attach => "Attach volume",
            What::Detach => "Detach volume",
            What::VolSnapshot => "Snapshot volume",
            What::ToImage => "Upload volume to image",
            What::SrvGroup => "Create server group",
            What::Aggregate => "Create host aggregate",
            What::AggregateHosts => "Hosts and zone of the aggregate",
            What::AggregateMeta => "Metadata of the aggregate",
            What::AddPort => "Attach a port",
            What::RemovePort => "Detach a port",
        };
        // The metadata form lists the pairs under its fields, one a line (and room for a
        // refusal that wraps).
        let listed = if self.what == What::AggregateMeta { self.networks.len().max(1) as u16 + 2 } else { 0 };
        let h = self.labels.len() as u16 * 2 + 5 + listed;
        let r = centered(area, 72, h);
        f.render_widget(Clear, r);
        let block = dialog(title, theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let mut rows = vec![Constraint::Length(1)];
        rows.extend(std::iter::repeat_n(Constraint::Length(2), self.labels.len()));
        rows.push(Constraint::Min(1));
        let areas = Layout::vertical(rows).split(inner);
        let help = "Tab: next field · Enter: next / create · Esc: cancel";
        f.render_widget(Paragraph::new(Span::styled(help, theme.muted())), areas[0]);
        for (i, label) in self.labels.iter().enumerate() {
            let [l, v] = Layout::horizontal([Constraint::Length(14), Constraint::Min(1)]).areas(areas[i + 1]);
            let style = if i == self.focus { theme.accent() } else { theme.muted() };
            f.render_widget(Paragraph::new(Span::styled(format!("{label:>12}: "), style)), l);
            f.render_widget(&focused(&self.fields[i], i == self.focus, theme), Rect { height: 1, ..v });
        }
        if self.what == What::AggregateMeta {
            let (_, name, _) = self.server.clone().unwrap_or_default();
            let mut lines = vec![if self.busy {
                Line::from(Span::styled("sending…", theme.accent()))
            } else if let Some(e) = &self.error {
                Line::from(Span::styled(e.clone(), theme.error()))
            } else {
                Line::from(Span::styled(format!("{name} has:"), theme.muted()))
            }];
            if self.networks.is_empty() {
                lines.push(Line::from(Span::styled("  no metadata", theme.muted())));
            }
            for (k, v) in &self.networks {
                lines
                    .push(Line::from(vec![Span::styled(format!("  {k}"), theme.accent()), Span::raw(format!("={v}"))]));
            }
            f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), areas[self.labels.len() + 1]);
            return;
        }
        let msg = if let (Some(text), None, false) = (self.choices_line(), &self.error, self.busy) {
            Line::from(Span::styled(text, theme.muted()))
        } else if let (Some((_, name)), None) = (&self.image, &self.error) {
            Line::from(Span::styled(format!("image {name}"), theme.muted()))
        } else if !self.volume.id.is_empty() && self.error.is_none() && !self.busy {
            let att = self.volume.attached.as_ref().map(|a| format!(", attached to {}", a.1)).unwrap_or_default();
            Line::from(Span::styled(
                format!("volume {} ({} GB{att})", self.volume.name, self.volume.size_gb),
                theme.muted(),
            ))
        } else if let (Some((_, name, now)), None, false) = (&self.server, &self.error, self.busy) {
            let now = if now.is_empty() { "none".to_string() } else { now.join(", ") };
            let names: Vec<&str> = self.networks.iter().map(|(n, _)| n.as_str()).collect();
            Line::from(Span::styled(format!("{name} has: {now} · groups: {}", names.join(", ")), theme.muted()))
        } else if self.busy {
            Line::from(Span::styled("creating…", theme.accent()))
        } else if let Some(e) = &self.error {
            Line::from(Span::styled(e.clone(), theme.error()))
        } else if matches!(self.what, What::Port | What::SecRule | What::ServerGroups) && !self.networks.is_empty() {
            let names: Vec<&str> = self.networks.iter().map(|(n, _)| n.as_str()).collect();
            let what = if self.what == What::Port { "networks" } else { "groups" };
            Line::from(Span::styled(format!("{what}: {}", names.join(", ")), theme.muted()))
        } else {
            Line::default()
        };
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), areas[self.labels.len() + 1]);
    }
}

impl CreateForm {
    /// What the server group, aggregate and port forms pick from, in words.
    fn choices_line(&self) -> Option<String> {
        let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        match self.what {
            What::SrvGroup => Some(format!("policies: {}", names(&self.networks))),
            What::AggregateHosts => {
                let (_, name, now) = self.server.clone().unwrap_or_default();
                let now = if now.is_empty() { "no hosts".to_string() } else { now.join(", ") };
                Some(format!("{name} has: {now} · hypervisors: {}", names(&self.networks)))
            }
            What::AddPort => {
                let free = if self.images.is_empty() { "none".to_string() } else { names(&self.images) };
                Some(format!("networks: {} · free ports: {free}", names(&self.networks)))
            }
            What::RemovePort => {
                let (_, name, _) = self.server.clone().unwrap_or_default();
                Some(format!("{name}'s ports: {}", names(&self.networks)))
            }
            _ => None,
        }
    }
}

/// Keys set to values, and keys removed.
type MetadataEdit = (Vec<(String, String)>, Vec<String>);

/// What the metadata form asks for: `k=v` pairs to set and keys to remove (comma-separated),
/// checked against the pairs the aggregate has now so a slip is said before anything is sent.
fn metadata_edit(set: &str, remove: &str, now: &[(String, String)], name: &str) -> Result<MetadataEdit, String> {
    let mut pairs = Vec::new();
    for item in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("{item}: give key=value"));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("{item}: the key is empty"));
        }
        pairs.push((k.to_string(), v.trim().to_string()));
    }
    let mut unset = Vec::new();
    for k in remove.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !now.iter().any(|(have, _)| have == k) {
            return Err(format!("{name} has no key {k}"));
        }
        if pairs.iter().any(|(s, _)| s == k) {
            return Err(format!("{k} is both set and removed"));
        }
        unset.push(k.to_string());
    }
    if pairs.is_empty() && unset.is_empty() {
        return Err("set a key=value, or name a key to remove".into());
    }
    Ok((pairs, unset))
}

/// The ID of the one `what` named or numbered `s` among (name, ID) pairs; with no list to look
/// in, `s` is taken as an ID (the cloud then says if it is not one).
fn pick(among: &[(String, String)], s: &str, what: &str) -> Result<String, String> {
    let found: Vec<&(String, String)> = among.iter().filter(|(n, id)| n == s || id == s).collect();
    match found.as_slice() {
        [(_, id)] => Ok(id.clone()),
        [] if among.is_empty() => Ok(s.to_string()),
        [] => Err(format!("no {what} {s} here")),
        _ => Err(format!("several {what}s are named {s}: give its ID")),
    }
}

/// A rule from the form's text, checked as Neutron would: a known direction and ethertype, a
/// protocol name or number, ports only with a protocol (ICMP: type/code), a remote CIDR of the
/// rule's family or a known group.
fn rule_spec(v: &[String], groups: &[(String, String)]) -> Result<RuleSpec, String> {
    let pick = |s: &str| -> Result<String, String> {
        let found: Vec<&(String, String)> = groups.iter().filter(|(n, id)| n == s || id == s).collect();
        match found.as_slice() {
            [(_, id)] => Ok(id.clone()),
            [] if groups.is_empty() && !s.is_empty() => Ok(s.to_string()), // no list: trust the ID
            [] => Err(format!("no security group {s} here")),
            _ => Err(format!("several groups are named {s}: give its ID")),
        }
    };
    if v[0].is_empty() {
        return Err("which group gets the rule?".into());
    }
    let group_id = pick(&v[0])?;
    let direction = match v[1].to_lowercase().as_str() {
        "ingress" | "in" | "" => "ingress",
        "egress" | "out" => "egress",
        other => return Err(format!("direction: ingress or egress, not {other}")),
    };
    let mut ethertype = match v[2].to_lowercase().as_str() {
        "ipv4" | "4" | "" => "IPv4",
        "ipv6" | "6" => "IPv6",
        other => return Err(format!("ethertype: IPv4 or IPv6, not {other}")),
    };
    let protocol = match v[3].to_lowercase().as_str() {
        "" | "any" => None,
        p if p.chars().all(|c| c.is_ascii_digit()) => {
            let n: u8 = p.parse().map_err(|_| format!("protocol number {p}: 0–255"))?;
            Some(n.to_string())
        }
        p @ ("tcp" | "udp" | "icmp" | "ipv6-icmp" | "icmpv6" | "sctp" | "gre" | "esp" | "ah" | "udplite" | "dccp"
        | "egp" | "igmp" | "ipip" | "ospf" | "pgm" | "rsvp" | "vrrp" | "ipv6-encap" | "ipv6-frag"
        | "ipv6-nonxt" | "ipv6-opts" | "ipv6-route") => Some(p.to_string()),
        p => {
            return Err(format!(
                "protocol {p}: tcp, udp, icmp, ipv6-icmp, another name Neutron knows, a number, or any"
            ));
        }
    };
    let icmp = matches!(protocol.as_deref(), Some("icmp" | "ipv6-icmp" | "icmpv6" | "1" | "58"));
    let (port_range_min, port_range_max) = match v[4].trim() {
        "" => (None, None),
        _ if protocol.is_none() => return Err("ports need a protocol (tcp, udp, …)".into()),
        p if icmp => {
            let (t, c) = p.split_once('/').map_or((p, None), |(t, c)| (t, Some(c)));
            let num = |s: &str, what: &str| -> Result<u16, String> {
                s.trim().parse::<u8>().map(u16::from).map_err(|_| format!("ICMP {what} {s}: 0–255"))
            };
            (Some(num(t, "type")?), c.map(|c| num(c, "code")).transpose()?)
        }
        p => {
            let (a, b) = p.split_once('-').unwrap_or((p, p));
            let port = |s: &str| -> Result<u16, String> {
                s.trim().parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| format!("port {s}: 1–65535"))
            };
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("ports {p}: the first must not be above the last"));
            }
            (Some(a), Some(b))
        }
    };
    let (mut remote_ip_prefix, mut remote_group_id) = (None, None);
    let remote = v[5].trim();
    if let Some((addr, prefix)) = remote.split_once('/') {
        let ip: IpAddr = addr.parse().map_err(|_| format!("remote {remote}: {addr} is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        prefix.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("remote {remote}: prefix 0–{max}"))?;
        // A v6 prefix decides the ethertype when the field was left at its default.
        if ip.is_ipv6() && v[2].is_empty() {
            ethertype = "IPv6";
        }
        if ip.is_ipv4() != (ethertype == "IPv4") {
            return Err(format!("remote {remote} is not an {ethertype} prefix"));
        }
        remote_ip_prefix = Some(remote.to_string());
    } else if let Ok(ip) = remote.parse::<IpAddr>() {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        if ip.is_ipv4() != (ethertype == "IPv4") {
            return Err(format!("remote {remote} is not an {ethertype} address"));
        }
        remote_ip_prefix = Some(format!("{ip}/{len}"));
    } else if !remote.is_empty() {
        remote_group_id = Some(pick(remote)?);
    }
    Ok(RuleSpec {
        group_id,
        direction: direction.into(),
        ethertype: ethertype.into(),
        protocol,
        port_range_min,
        port_range_max,
        remote_ip_prefix,
        remote_group_id,
        description: v[6].clone(),
    })
}

/// An upload from the form's text: a file, known format and visibility, whole numbers.
fn upload_spec(v: &[String]) -> Result<Create, String> {
    use crate::transfer::{DISK_FORMATS, UploadSpec, VISIBILITIES};
    if v[0].is_empty() {
        return Err("which file? give its path".into());
    }
    let disk_format = v[2].to_lowercase();
    if !(disk_format.is_empty() || disk_format == "auto" || DISK_FORMATS.contains(&disk_format.as_str())) {
        return Err(format!("disk format {}: one of {}", v[2], DISK_FORMATS.join(", ")));
    }
    let visibility = if v[3].is_empty() { "private".to_string() } else { v[3].to_lowercase() };
    if !VISIBILITIES.contains(&visibility.as_str()) {
        return Err(format!("visibility {}: one of {}", v[3], VISIBILITIES.join(", ")));
    }
    let number = |s: &str, what: &str| -> Result<u64, String> {
        if s.is_empty() { Ok(0) } else { s.parse().map_err(|_| format!("{what}: a whole number, not {s}")) }
    };
    Ok(Create::Upload(UploadSpec {
        file: v[0].clone(),
        name: v[1].clone(),
        disk_format,
        visibility,
        min_disk_gb: number(&v[4], "min disk")?,
        min_ram_mb: number(&v[5], "min RAM")?,
    }))
}

/// A subnet from the form's text: the CIDR's network address and prefix must parse, the
/// gateway (if any) must be of the same family, DNS servers must be addresses.
fn subnet_spec(cidr: &str, gateway: &str, dhcp: &str, dns: &str) -> Result<SubnetSpec, String> {
    let (addr, prefix) = cidr.split_once('/').ok_or_else(|| format!("{cidr} is not a CIDR (address/prefix)"))?;
    let addr: IpAddr = addr.parse().map_err(|_| format!("{cidr}: {addr} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 =
        prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| format!("{cidr}: the prefix must be 0–{max}"))?;
    let gateway = match gateway.trim() {
        "" => None,
        "none" => Some(None),
        g => {
            let ip: IpAddr = g.parse().map_err(|_| format!("gateway {g} is not an IP address"))?;
            if ip.is_ipv4() != addr.is_ipv4() {
                return Err(format!("gateway {g} is not of {cidr}'s address family"));
            }
            Some(Some(ip.to_string()))
        }
    };
    let dhcp = match dhcp.trim().to_lowercase().as_str() {
        "yes" | "y" | "true" | "on" | "" => true,
        "no" | "n" | "false" | "off" => false,
        other => return Err(format!("DHCP: yes or no, not {other}")),
    };
    let dns = dns
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>().map(|ip| ip.to_string()).map_err(|_| format!("DNS server {s} is not an IP address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubnetSpec {
        cidr: format!("{addr}/{prefix}"),
        ip_version: if addr.is_ipv4() { 4 } else { 6 },
        gateway,
        dhcp,
        dns,
    })
}

#[cfg(test)]
mod tests {
    use super::{metadata_edit, subnet_spec};

    #[test]
    fn metadata_input_is_checked() {
        let now = vec![("ssd".to_string(), "true".to_string()), ("tier".to_string(), "1".to_string())];
        let (set, unset) = metadata_edit("ssd=false, gpu = nvidia,", "tier", &now, "fast").expect("valid");
        assert_eq!(set, vec![("ssd".into(), "false".into()), ("gpu".into(), "nvidia".into())]);
        assert_eq!(unset, vec!["tier".to_string()]);
        // An empty value is a value (Nova keeps "").
        assert_eq!(metadata_edit("note=", "", &now, "fast").expect("valid").0, vec![("note".into(), "".into())]);
        assert_eq!(metadata_edit("gpu", "", &now, "fast").expect_err("refused"), "gpu: give key=value");
        assert_eq!(metadata_edit("=x", "", &now, "fast").expect_err("refused"), "=x: the key is empty");
        assert_eq!(metadata_edit("", "nope", &now, "fast").expect_err("refused"), "fast has no key nope");
        assert_eq!(metadata_edit("ssd=1", "ssd", &now, "fast").expect_err("refused"), "ssd is both set and removed");
        assert!(metadata_edit(" ", "", &now, "fast").is_err());
    }

    #[test]
    fn subnet_input_is_checked() {
        let s = subnet_spec("10.0.5.0/24", "", "yes", "1.1.1.1, 9.9.9.9").expect("valid");
        assert_eq!((s.ip_version, s.gateway.clone(), s.dhcp, s.dns.len()), (4, None, true, 2));
        assert_eq!(subnet_spec("fd00::/64", "none", "no", "").expect("v6").gateway, Some(None));
        assert!(subnet_spec("10.0.5.0", "", "yes", "").expect_err("refused").contains("not a CIDR"));
        assert!(subnet_spec("10.0.5.0/33", "", "yes", "").expect_err("refused").contains("prefix"));
        assert!(subnet_spec("10.0.5.0/24", "fd00::1", "yes", "").expect_err("refused").contains("family"));
        assert!(subnet_spec("10.0.5.0/24", "", "maybe", "").expect_err("refused").contains("DHCP"));
        assert!(subnet_spec("10.0.5.0/24", "", "yes", "dns.example").expect_err("refused").contains("DNS"));
    }
}
