//! Neutron security group rules, every group's in one list with the group's name: what may
//! come in and go out. Filter by the group's name (Enter on a group in the SecGroups view
//! does it).

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
pub struct SecRule {
    pub id: String,
    pub security_group_id: String,
    pub direction: String,
    pub ethertype: String,
    pub protocol: Option<String>,
    pub port_range_min: Option<i64>,
    pub port_range_max: Option<i64>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: Option<String>,
    #[serde(skip)]
    pub raw: Value,
    /// The rule's group's name, and the remote group's (from the group list).
    #[serde(skip)]
    pub group_name: String,
    #[serde(skip)]
    pub remote_group_name: Option<String>,
}

impl SecRule {
    /// `22`, `8000-8100`, `type 8 code 0` for ICMP, `any`.
    pub fn ports(&self) -> String {
        let icmp = matches!(self.protocol.as_deref(), Some("icmp" | "ipv6-icmp" | "icmpv6" | "1" | "58"));
        match (self.port_range_min, self.port_range_max) {
            (None, _) => "any".into(),
            (Some(t), c) if icmp => match c {
                Some(c) => format!("type {t} code {c}"),
                None => format!("type {t}"),
            },
            (Some(a), Some(b)) if a != b => format!("{a}-{b}"),
            (Some(a), _) => a.to_string(),
        }
    }

    /// `0.0.0.0/0`, `group web`, or `any`.
    pub fn remote(&self) -> String {
        if let Some(p) = &self.remote_ip_prefix {
            return p.clone();
        }
        match (&self.remote_group_id, &self.remote_group_name) {
            (Some(_), Some(n)) => format!("group {n}"),
            (Some(id), None) => format!("group {id}"),
            _ => "any".into(),
        }
    }
}

impl Resource for SecRule {
    const TITLE: &'static str = "Security group rules";
    const TAB: &'static str = "Rules";
    const COMMAND: &'static str = "rules";
    const NOUN: &'static str = "rule";
    const KIND: Kind = Kind::SecRules;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("GROUP", Constraint::Min(10)),
            col("DIRECTION", Constraint::Length(9)),
            col("ETHER", Constraint::Length(5)),
            col("PROTOCOL", Constraint::Length(9)),
            col("PORTS", Constraint::Length(16)),
            col("REMOTE", Constraint::Min(14)),
            col("DESCRIPTION", Constraint::Min(10)),
        ];
        if ctx.all_projects {
            c.push(col("PROJECT", Constraint::Length(10)));
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let mut c = vec![
            self.group_name.clone(),
            self.direction.clone(),
            self.ethertype.clone(),
            self.protocol.clone().unwrap_or_else(|| "any".into()),
            self.ports(),
            self.remote(),
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
    /// A rule has no name: its group's, for words such as "Delete rule of web?".
    fn name(&self) -> &str {
        &self.group_name
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall {
            service: "network",
            version: Some("v2.0"),
            path: format!("/security-group-rules/{}", path_segment(id)),
        })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = versioned(&client.session, "network", "v2.0")?;
        let (rules, groups) = tokio::join!(
            get_all(client, "network", &base, "/security-group-rules", "security_group_rules"),
            get_all(client, "network", &base, "/security-groups?fields=id&fields=name", "security_groups"),
        );
        let mut rules: Vec<SecRule> = parse_list(&Value::Array(rules?), |r: &mut SecRule, raw| r.raw = raw);
        let groups = groups.unwrap_or_default();
        let name_of = |id: &str| {
            groups.iter().find(|g| g["id"].as_str() == Some(id)).and_then(|g| g["name"].as_str()).map(str::to_string)
        };
        for r in &mut rules {
            r.group_name = name_of(&r.security_group_id).unwrap_or_else(|| r.security_group_id.clone());
            r.remote_group_name = r.remote_group_id.as_deref().and_then(name_of);
        }
        if !scope.all_projects
            && let Some(pid) = client.session.project_id()
        {
            rules.retain(|r| owner(&r.raw) == Some(pid));
        }
        // By group, then ingress before egress, as Horizon shows them.
        rules.sort_by(|a, b| {
            (&a.group_name, &a.direction, &a.ethertype).cmp(&(&b.group_name, &b.direction, &b.ethertype))
        });
        Ok(rules)
    }
}
