//! Neutron subnets: CIDR, gateway, DHCP and DNS of each, under its network.

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
pub struct Subnet {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub cidr: String,
    pub ip_version: Option<u8>,
    pub gateway_ip: Option<String>,
    pub enable_dhcp: Option<bool>,
    pub dns_nameservers: Vec<String>,
    #[serde(skip)]
    pub raw: Value,
    /// The name of the network (filled from the network list).
    #[serde(skip)]
    pub network_name: String,
}

impl Resource for Subnet {
    const TITLE: &'static str = "Subnets";
    const TAB: &'static str = "Subnets";
    const COMMAND: &'static str = "subnets";
    const NOUN: &'static str = "subnet";
    const KIND: Kind = Kind::Subnets;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(10)),
            col("NETWORK", Constraint::Min(10)),
            col("CIDR", Constraint::Length(18)),
            col("GATEWAY", Constraint::Length(15)),
            col("DHCP", Constraint::Length(4)),
            col("DNS", Constraint::Min(10)),
        ];
        if ctx.all_projects {
            c.push(col("PROJECT", Constraint::Length(10)));
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let network = if self.network_name.is_empty() { self.network_id.clone() } else { self.network_name.clone() };
        let mut c = vec![
            self.name.clone(),
            network,
            self.cidr.clone(),
            self.gateway_ip.clone().unwrap_or_else(|| "none".into()),
            if self.enable_dhcp.unwrap_or(true) { "yes".into() } else { "no".into() },
            self.dns_nameservers.join(", "),
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
        &self.name
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: "network", version: Some("v2.0"), path: format!("/subnets/{}", path_segment(id)) })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = versioned(&client.session, "network", "v2.0")?;
        let (subnets, nets) = tokio::join!(
            get_all(client, "network", &base, "/subnets", "subnets"),
            get_all(client, "network", &base, "/networks", "networks"),
        );
        let mut subnets: Vec<Subnet> = parse_list(&Value::Array(subnets?), |s: &mut Subnet, raw| s.raw = raw);
        // Names are a nicety: without the network list the IDs show.
        let nets = nets.unwrap_or_default();
        for s in &mut subnets {
            if let Some(n) = nets.iter().find(|n| n["id"].as_str() == Some(&s.network_id)) {
                s.network_name = n["name"].as_str().unwrap_or_default().to_string();
            }
        }
        // An admin gets every project's subnets from Neutron; the project's view keeps its own
        // and those of networks it may use (shared, external).
        if !scope.all_projects
            && let Some(pid) = client.session.project_id()
        {
            let usable = |net_id: &str| {
                nets.iter().any(|n| {
                    n["id"].as_str() == Some(net_id)
                        && (n["shared"] == true || n["router:external"] == true || owner(n) == Some(pid))
                })
            };
            subnets.retain(|s| owner(&s.raw) == Some(pid) || usable(&s.network_id));
        }
        Ok(subnets)
    }
}
