//! Keystone role assignments (admins): who has which role where; revoke by deleting.

use ratatui::layout::Constraint;
use serde_json::Value;

use meridian_common::{Client, ClientError};

use crate::table::{CellCtx, Column, Resource, Scope, col};
use crate::views::identity::{identity, yes};
use crate::worker::{DeleteCall, Kind, get_all, versioned};

/// One role assignment (`GET /v3/role_assignments?include_names`): who has which role where.
/// Its ID is the grant's own path, which is also how it is revoked.
#[derive(Clone, Debug, Default)]
pub struct Assignment {
    /// `projects/{p}/users/{u}/roles/{r}` (or `domains/…`, `groups/…`).
    pub id: String,
    pub actor: String,
    pub actor_kind: &'static str,
    pub role: String,
    pub scope: String,
    pub inherited: bool,
    pub raw: Value,
}

impl Assignment {
    fn from_json(v: &Value) -> Option<Assignment> {
        let name = |x: &Value| x["name"].as_str().or(x["id"].as_str()).unwrap_or_default().to_string();
        let (actor_kind, actor, actor_seg) = if v["user"].is_object() {
            ("user", name(&v["user"]), format!("users/{}", v["user"]["id"].as_str()?))
        } else {
            ("group", name(&v["group"]), format!("groups/{}", v["group"]["id"].as_str()?))
        };
        let s = &v["scope"];
        let (scope, scope_seg) = if s["project"].is_object() {
            (format!("project {}", name(&s["project"])), format!("projects/{}", s["project"]["id"].as_str()?))
        } else if s["domain"].is_object() {
            (format!("domain {}", name(&s["domain"])), format!("domains/{}", s["domain"]["id"].as_str()?))
        } else if s["system"].is_object() {
            ("system".to_string(), "system".to_string())
        } else {
            return None;
        };
        let role_id = v["role"]["id"].as_str()?;
        Some(Assignment {
            id: format!("{scope_seg}/{actor_seg}/roles/{role_id}"),
            actor,
            actor_kind,
            role: name(&v["role"]),
            scope,
            inherited: s["OS-INHERIT:inherited_to"].is_string(),
            raw: v.clone(),
        })
    }
}

impl Resource for Assignment {
    const TITLE: &'static str = "Role assignments";
    const TAB: &'static str = "Roles";
    const COMMAND: &'static str = "roles";
    const NOUN: &'static str = "role assignment";
    const KIND: Kind = Kind::Assignments;
    const ADMIN_ONLY: bool = true;
    fn columns(_: &CellCtx) -> Vec<Column> {
        vec![
            col("WHO", Constraint::Min(12)),
            col("KIND", Constraint::Length(5)),
            col("ROLE", Constraint::Length(12)),
            col("SCOPE", Constraint::Min(14)),
            col("INHERITED", Constraint::Length(9)),
        ]
    }
    fn cells(&self, _: &CellCtx) -> Vec<String> {
        vec![self.actor.clone(), self.actor_kind.into(), self.role.clone(), self.scope.clone(), yes(self.inherited)]
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.role
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        // The ID is the grant's path (built from IDs the cloud gave), so it is used as is.
        Some(identity(format!("/{id}")))
    }
    async fn list(client: &Client, _scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = versioned(&client.session, "identity", "v3")?;
        let v = get_all(client, "identity", &base, "/role_assignments?include_names=true", "role_assignments").await?;
        // Inherited grants have their own path (`OS-INHERIT`); they are listed, not revoked here.
        Ok(v.iter().filter_map(Assignment::from_json).collect())
    }
}
