//! Neutron security groups: the project's firewall profiles, with how many rules each has and
//! how many ports use it. Enter lists the group's rules (the Rules view, filtered).

use ratatui::layout::Constraint;
use serde::Deserialize;
use serde_json::Value;

use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::table::{CellCtx, Column, Resource, Scope, SortKey, col};
use crate::views::networks::owner;
use crate::worker::{DeleteCall, Kind, get_all, path_segment, versioned};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct SecGroup {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// Neutron's `stateful` (absent on clouds without the extension: stateful).
    pub stateful: Option<bool>,
    pub security_group_rules: Vec<Value>,
    #[serde(skip)]
    pub raw: Value,
    /// Ports (of the listed scope) that carry the group.
    #[serde(skip)]
    pub ports: usize,
}

impl Resource for SecGroup {
    const TITLE: &'static str = "Security groups";
    const TAB: &'static str = "SecGroups";
    const COMMAND: &'static str = "secgroups";
    const NOUN: &'static str = "security group";
    const KIND: Kind = Kind::SecGroups;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(12)),
            col("RULES", Constraint::Length(5)),
            col("PORTS", Constraint::Length(5)),
            col("STATEFUL", Constraint::Length(8)),
            col("DESCRIPTION", Constraint::Min(16)),
        ];
        if ctx.all_projects {
            c.push(col("PROJECT", Constraint::Length(10)));
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let mut c = vec![
            self.name.clone(),
            self.security_group_rules.len().to_string(),
            self.ports.to_string(),
            if self.stateful.unwrap_or(true) { "yes".into() } else { "no".into() },
            self.description.clone().unwrap_or_default(),
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
    fn sort_key(&self, col: usize, ctx: &CellCtx) -> SortKey {
        match col {
            1 => SortKey::Num(self.security_group_rules.len() as f64),
            2 => SortKey::Num(self.ports as f64),
            _ => SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase()),
        }
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall {
            service: "network",
            version: Some("v2.0"),
            path: format!("/security-groups/{}", path_segment(id)),
        })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = versioned(&client.session, "network", "v2.0")?;
        let (groups, ports) = tokio::join!(
            get_all(client, "network", &base, "/security-groups", "security_groups"),
            get_all(client, "network", &base, "/ports?fields=id&fields=security_groups", "ports"),
        );
        let mut groups: Vec<SecGroup> = parse_list(&Value::Array(groups?), |g: &mut SecGroup, raw| g.raw = raw);
        // Usage is a nicety: without the port list it shows 0.
        let ports = ports.unwrap_or_default();
        for g in &mut groups {
            g.ports = ports
                .iter()
                .filter(|p| {
                    p["security_groups"].as_array().is_some_and(|s| s.iter().any(|x| x.as_str() == Some(&g.id)))
                })
                .count();
        }
        if !scope.all_projects
            && let Some(pid) = client.session.project_id()
        {
            groups.retain(|g| owner(&g.raw) == Some(pid));
        }
        Ok(groups)
    }
}
