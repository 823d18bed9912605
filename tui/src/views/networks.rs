use ratatui::layout::Constraint;
use serde_json::{Value, json};

pub use crate::model::Network;
use crate::table::{CellCtx, Column, Resource, Scope, col};
use meridian_common::{Client, ClientError};

use crate::model::{Subnet, parse_list};
use crate::worker::{DeleteCall, Kind, get_all, path_segment, versioned};

impl Resource for Network {
    const TITLE: &'static str = "Networks";
    const TAB: &'static str = "Networks";
    const COMMAND: &'static str = "networks";
    const NOUN: &'static str = "network";
    const KIND: Kind = Kind::Networks;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(12)),
            col("STATUS", Constraint::Length(7)),
            col("SHARED", Constraint::Length(6)),
            col("EXTERNAL", Constraint::Length(8)),
            col("SUBNETS", Constraint::Min(14)),
        ];
        if ctx.all_projects {
            c.push(col("PROJECT", Constraint::Length(10)));
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let yes = |b: bool| if b { "yes".to_string() } else { "no".to_string() };
        let mut c = vec![
            self.name.clone(),
            self.status.clone(),
            yes(self.shared),
            yes(self.external),
            self.subnet_cidrs.join(", "),
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
    fn status_column() -> Option<usize> {
        Some(1)
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: "network", version: Some("v2.0"), path: format!("/networks/{}", path_segment(id)) })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let mut nets = list_networks(client).await?;
        // Neutron lists every project's networks to an admin; the project's own view keeps its
        // networks and those it may use (shared, external).
        if !scope.all_projects
            && let Some(pid) = client.session.project_id()
        {
            nets.retain(|n| n.shared || n.external || owner(&n.raw) == Some(pid));
        }
        Ok(nets)
    }
}

/// Networks with their subnets' CIDRs (the table) and the subnets themselves (the detail pane).
async fn list_networks(client: &Client) -> Result<Vec<Network>, ClientError> {
    let base = versioned(&client.session, "network", "v2.0")?;
    let (nets, subnets) = tokio::join!(
        get_all(client, "network", &base, "/networks", "networks"),
        get_all(client, "network", &base, "/subnets", "subnets"),
    );
    let subnets: Vec<Subnet> = parse_list(&Value::Array(subnets?), |_: &mut Subnet, _| {});
    let mut nets: Vec<Network> = parse_list(&Value::Array(nets?), |n: &mut Network, raw| n.raw = raw);
    for n in &mut nets {
        n.subnet_cidrs = subnets.iter().filter(|s| s.network_id == n.id).map(|s| s.cidr.clone()).collect();
        if let Some(obj) = n.raw.as_object_mut() {
            let subs: Vec<Value> = subnets
                .iter()
                .filter(|s| s.network_id == n.id)
                .map(|s| json!({"id": s.id, "name": s.name, "cidr": s.cidr, "gateway_ip": s.gateway_ip, "ip_version": s.ip_version}))
                .collect();
            obj.insert("subnet_details".into(), Value::Array(subs));
        }
    }
    Ok(nets)
}

/// The project a Neutron resource belongs to (`project_id`, or the older `tenant_id`).
pub fn owner(raw: &Value) -> Option<&str> {
    raw["project_id"].as_str().or(raw["tenant_id"].as_str())
}
