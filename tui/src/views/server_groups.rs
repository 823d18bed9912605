//! Nova server groups (`os-server-groups`): where a group's instances may land (affinity,
//! anti-affinity and their soft forms, `max_server_per_host` for anti-affinity from 2.64). `c`
//! creates one, `ctrl-d` deletes it, Enter shows its members by name. The launch wizard's
//! Security step picks one as the `group` scheduler hint.

use ratatui::layout::Constraint;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::overlays::Create;
use crate::table::{CellCtx, Column, Resource, Scope, SortKey, col};
use crate::worker::{DeleteCall, Kind, Response, path_segment};

/// The policies Nova knows, in the order the form offers them.
pub const POLICIES: &[&str] = &["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"];

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ServerGroup {
    pub id: String,
    pub name: String,
    /// 2.64 and later.
    pub policy: Option<String>,
    /// Before 2.64: a one-element list.
    pub policies: Vec<String>,
    pub rules: Value,
    /// Member server IDs.
    pub members: Vec<String>,
    pub project_id: Option<String>,
    #[serde(skip)]
    pub raw: Value,
    /// The members' names, in the order of `members` (empty where the server list did not have it).
    #[serde(skip)]
    pub member_names: Vec<String>,
}

impl ServerGroup {
    /// The policy whichever microversion the cloud answered at.
    pub fn policy(&self) -> String {
        self.policy.clone().or_else(|| self.policies.first().cloned()).unwrap_or_default()
    }

    /// `max_server_per_host=2`, or empty.
    pub fn rules_text(&self) -> String {
        self.rules
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string))))
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Each member as `name (id)`, or its ID when the name is unknown.
    pub fn members_text(&self) -> Vec<String> {
        self.members
            .iter()
            .enumerate()
            .map(|(i, id)| match self.member_names.get(i).filter(|n| !n.is_empty()) {
                Some(n) => format!("{n} ({id})"),
                None => id.clone(),
            })
            .collect()
    }
}

impl Resource for ServerGroup {
    const TITLE: &'static str = "Server groups";
    const TAB: &'static str = "SrvGroups";
    const COMMAND: &'static str = "servergroups";
    const NOUN: &'static str = "server group";
    const KIND: Kind = Kind::ServerGroups;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(14)),
            col("POLICY", Constraint::Length(18)),
            col("RULES", Constraint::Min(12)),
            col("MEMBERS", Constraint::Length(7)),
        ];
        if ctx.all_projects {
            c.push(col("PROJECT", Constraint::Length(12)));
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let mut c = vec![self.name.clone(), self.policy(), self.rules_text(), self.members.len().to_string()];
        if ctx.all_projects {
            c.push(ctx.project(self.project_id.as_deref()));
        }
        c
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        if self.name.is_empty() { &self.id } else { &self.name }
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn sort_key(&self, col: usize, ctx: &CellCtx) -> SortKey {
        match col {
            3 => SortKey::Num(self.members.len() as f64),
            _ => SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase()),
        }
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: "compute", version: None, path: format!("/os-server-groups/{}", path_segment(id)) })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let q = if scope.all_projects { "?all_projects=True" } else { "" };
        let servers_path = if scope.all_projects { "/servers?all_tenants=1" } else { "/servers" };
        let groups_path = format!("/os-server-groups{q}");
        let (groups, servers) = tokio::join!(client.get("compute", &groups_path), client.get("compute", servers_path));
        let mut groups: Vec<ServerGroup> =
            parse_list(&groups?["server_groups"], |g: &mut ServerGroup, raw| g.raw = raw);
        // Names are a nicety: without the server list the IDs show.
        let servers = servers.map(|s| s["servers"].as_array().cloned().unwrap_or_default()).unwrap_or_default();
        for g in &mut groups {
            g.member_names = g
                .members
                .iter()
                .map(|id| {
                    let s = servers.iter().find(|s| s["id"].as_str() == Some(id));
                    s.and_then(|s| s["name"].as_str()).unwrap_or_default().to_string()
                })
                .collect();
        }
        Ok(groups)
    }
}

/// What the group's detail shows first: its members by name, in the fields view's copy of the JSON.
pub fn with_member_names(mut raw: Value, g: &ServerGroup) -> Value {
    if let Some(m) = raw.as_object_mut() {
        let members = g.members_text();
        let text = if members.is_empty() { "-".to_string() } else { members.join(", ") };
        m.insert("members".into(), Value::String(text));
    }
    raw
}

/// Whether the compute microversion in use is at least `major.minor`.
pub fn at_least(version: Option<&str>, want: (u32, u32)) -> bool {
    let Some(v) = version else { return false };
    let (a, b) = v.split_once('.').unwrap_or((v, "0"));
    (a.parse().unwrap_or(2), b.parse().unwrap_or(0)) >= want
}

/// The body that creates a group at this microversion: `policy` + `rules` from 2.64, a
/// one-policy `policies` list before (where rules do not exist).
pub fn create_body(
    version: Option<&str>,
    name: &str,
    policy: &str,
    max_per_host: Option<u32>,
) -> Result<Value, ClientError> {
    if at_least(version, (2, 64)) {
        let mut g = json!({"name": name, "policy": policy});
        if let Some(n) = max_per_host {
            g["rules"] = json!({"max_server_per_host": n});
        }
        Ok(json!({ "server_group": g }))
    } else if max_per_host.is_some() {
        Err(ClientError::Decode("this cloud's compute API is older than 2.64: no max_server_per_host rule".into()))
    } else {
        Ok(json!({"server_group": {"name": name, "policies": [policy]}}))
    }
}

/// Creates a server group from its form.
pub async fn act(client: &Client, c: &Create) -> Result<Response, ClientError> {
    let Create::ServerGroup { name, policy, max_per_host } = c else {
        return Err(ClientError::Decode("not a server group form".into()));
    };
    let body = create_body(client.compute_version.as_deref(), name, policy, *max_per_host)?;
    match client.post("compute", "/os-server-groups", &body).await {
        Ok(_) => Ok(Response::Created { kind: Kind::ServerGroups, name: name.clone() }),
        // Soft policies came with 2.15: say so rather than only Nova's schema message.
        Err(ClientError::Api { status, message, request_id })
            if status == StatusCode::BAD_REQUEST && policy.starts_with("soft") =>
        {
            Err(ClientError::Api {
                status,
                message: format!("{message} (soft policies need compute 2.15 or later)"),
                request_id,
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_body_follows_the_microversion() {
        let b = create_body(Some("2.79"), "g", "anti-affinity", Some(2)).expect("body");
        assert_eq!(
            b,
            json!({"server_group": {"name": "g", "policy": "anti-affinity", "rules": {"max_server_per_host": 2}}})
        );
        let b = create_body(Some("2.64"), "g", "affinity", None).expect("body");
        assert_eq!(b, json!({"server_group": {"name": "g", "policy": "affinity"}}));
        let b = create_body(Some("2.60"), "g", "affinity", None).expect("body");
        assert_eq!(b, json!({"server_group": {"name": "g", "policies": ["affinity"]}}));
        assert!(create_body(None, "g", "anti-affinity", Some(1)).is_err());
    }

    #[test]
    fn policy_rules_and_members_read_at_any_microversion() {
        let old: ServerGroup =
            serde_json::from_value(json!({"id": "1", "name": "a", "policies": ["affinity"], "members": ["s1", "s2"]}))
                .expect("old");
        assert_eq!((old.policy(), old.rules_text()), ("affinity".into(), String::new()));
        let mut new: ServerGroup = serde_json::from_value(json!({"id": "2", "name": "b", "policy": "anti-affinity",
            "rules": {"max_server_per_host": 3}, "members": ["s1", "s2"]}))
        .expect("new");
        new.member_names = vec!["web-1".into(), String::new()];
        assert_eq!((new.policy(), new.rules_text()), ("anti-affinity".into(), "max_server_per_host=3".into()));
        assert_eq!(new.members_text(), ["web-1 (s1)", "s2"]);
    }
}
