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
}

pub struct CreateForm {
    pub what: What,
    labels: &'static [&'static str],
    fields: Vec<TextArea<'static>>,
    focus: usize,
    /// Networks to put a port on (name, ID), for the port form.
    networks: Vec<(String, String)>,
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
    /// Not a create request: a transfer the app starts (`transfer.rs`).
    Upload(crate::transfer::UploadSpec),
    Download(crate::transfer::DownloadSpec),
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
        CreateForm {
            what: What::Network,
            labels: NETWORK,
            fields,
            focus: 0,
            networks: Vec::new(),
            image: None,
            error: None,
            busy: false,
        }
    }

    /// The port form, for one of these networks (name, ID).
    pub fn port(networks: Vec<(String, String)>, default: Option<&str>) -> CreateForm {
        let fields = vec![
            field(default.unwrap_or_default(), "network name or ID"),
            field("", "name (optional)"),
            field("", "empty: Neutron picks one"),
        ];
        CreateForm { what: What::Port, labels: PORT, fields, focus: 0, networks, image: None, error: None, busy: false }
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
        CreateForm { what, labels, fields, focus: 0, networks: Vec::new(), image: None, error: None, busy: false }
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
        CreateForm {
            what: What::Upload,
            labels: UPLOAD,
            fields,
            focus: 0,
            networks: Vec::new(),
            image: None,
            error: None,
            busy: false,
        }
    }

    /// The download form for one image, with a suggested file.
    pub fn download(id: &str, name: &str, suggested: &str) -> CreateForm {
        CreateForm {
            what: What::Download,
            labels: DOWNLOAD,
            fields: vec![field(suggested, "file to create (must not exist)")],
            focus: 0,
            networks: Vec::new(),
            image: Some((id.to_string(), name.to_string())),
            error: None,
            busy: false,
        }
    }

    /// A fresher network list for the port form (it asks for one when it opens).
    pub fn set_networks(&mut self, networks: Vec<(String, String)>) {
        if self.what == What::Port {
            self.networks = networks;
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
        };
        let h = self.labels.len() as u16 * 2 + 5;
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
        let msg = if let (Some((_, name)), None) = (&self.image, &self.error) {
            Line::from(Span::styled(format!("image {name}"), theme.muted()))
        } else if self.busy {
            Line::from(Span::styled("creating…", theme.accent()))
        } else if let Some(e) = &self.error {
            Line::from(Span::styled(e.clone(), theme.error()))
        } else if self.what == What::Port && !self.networks.is_empty() {
            let names: Vec<&str> = self.networks.iter().map(|(n, _)| n.as_str()).collect();
            Line::from(Span::styled(format!("networks: {}", names.join(", ")), theme.muted()))
        } else {
            Line::default()
        };
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), areas[self.labels.len() + 1]);
    }
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
    use super::subnet_spec;

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
