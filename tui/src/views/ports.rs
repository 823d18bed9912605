//! Neutron ports: what is plugged into which network, with which addresses.

use ratatui::layout::Constraint;
use serde::Deserialize;
use serde_json::Value;

use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::table::{CellCtx, Column, Resource, Scope, col};
use crate::views::networks::owner;
use crate::worker::{DeleteCall, Kind, get_all, path_segment, versioned};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Port {
    pub id: String,
    pub name: Option<String>,
    pub status: Option<String>,
    pub network_id: String,
    pub mac_address: Option<String>,
    pub device_owner: Option<String>,
    pub device_id: Option<String>,
    pub fixed_ips: Vec<FixedIp>,
    #[serde(skip)]
    pub raw: Value,
    /// The name of the network (filled from the network list).
    #[serde(skip)]
    pub network_name: String,
    /// Names of the port's security groups (filled from the group list).
    #[serde(skip)]
    pub group_names: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct FixedIp {
    pub ip_address: String,
    pub subnet_id: String,
}

impl Port {
    /// `off` without port security (nothing filtered), else the groups (`none`: all dropped but
    /// DHCP); empty when the cloud does not say (no port-security extension).
    pub fn security(&self) -> String {
        match self.raw["port_security_enabled"].as_bool() {
            Some(false) => "off".into(),
            _ if self.group_names.is_empty()
                && self.raw["security_groups"].as_array().is_some_and(|a| a.is_empty()) =>
            {
                "none".into()
            }
            _ => self.group_names.join(", "),
        }
    }
}

impl Resource for Port {
    const TITLE: &'static str = "Ports";
    const TAB: &'static str = "Ports";
    const COMMAND: &'static str = "ports";
    const NOUN: &'static str = "port";
    const KIND: Kind = Kind::Ports;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(10)),
            col("STATUS", Constraint::Length(6)),
            col("NETWORK", Constraint::Min(10)),
            col("FIXED IPS", Constraint::Min(12)),
            col("MAC", Constraint::Length(17)),
            col("OWNER", Constraint::Min(14)),
            col("SECURITY", Constraint::Min(10)),
        ];
        if ctx.all_projects {
            c.push(col("PROJECT", Constraint::Length(10)));
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let ips: Vec<&str> = self.fixed_ips.iter().map(|f| f.ip_address.as_str()).collect();
        let network = if self.network_name.is_empty() { self.network_id.clone() } else { self.network_name.clone() };
        let mut c = vec![
            self.name.clone().unwrap_or_default(),
            self.status.clone().unwrap_or_default(),
            network,
            ips.join(", "),
            self.mac_address.clone().unwrap_or_default(),
            self.device_owner.clone().unwrap_or_default(),
            self.security(),
        ];
        if ctx.all_projects {
            c.push(ctx.project(owner(&self.raw)));
        }
        c
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn status_column() -> Option<usize> {
        Some(1)
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: "network", version: Some("v2.0"), path: format!("/ports/{}", path_segment(id)) })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = versioned(&client.session, "network", "v2.0")?;
        let (ports, nets, groups) = tokio::join!(
            get_all(client, "network", &base, "/ports", "ports"),
            get_all(client, "network", &base, "/networks", "networks"),
            get_all(client, "network", &base, "/security-groups?fields=id&fields=name", "security_groups"),
        );
        let mut ports: Vec<Port> = parse_list(&Value::Array(ports?), |p: &mut Port, raw| p.raw = raw);
        // Names are a nicety: without the network list the IDs show.
        let nets = nets.unwrap_or_default();
        let groups = groups.unwrap_or_default();
        for p in &mut ports {
            if let Some(n) = nets.iter().find(|n| n["id"].as_str() == Some(&p.network_id)) {
                p.network_name = n["name"].as_str().unwrap_or_default().to_string();
            }
            let ids: Vec<&str> = p.raw["security_groups"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            p.group_names = ids
                .iter()
                .map(|id| {
                    let g = groups.iter().find(|g| g["id"].as_str() == Some(id));
                    g.and_then(|g| g["name"].as_str()).unwrap_or(id).to_string()
                })
                .collect();
        }
        // Neutron lists every project's ports to an admin; the project's own view keeps its own.
        if !scope.all_projects
            && let Some(pid) = client.session.project_id()
        {
            ports.retain(|p| owner(&p.raw) == Some(pid));
        }
        Ok(ports)
    }
}
