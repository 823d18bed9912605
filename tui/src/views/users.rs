//! Keystone users (admins): list, disable/enable, delete.

use ratatui::layout::Constraint;
use serde::Deserialize;
use serde_json::{Value, json};

use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::table::{CellCtx, Column, Resource, Scope, col};
use crate::views::identity::{identity, yes};
use crate::worker::{DeleteCall, Kind, get_all, path_segment, versioned};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: Option<bool>,
    pub email: Option<String>,
    pub default_project_id: Option<String>,
    #[serde(skip)]
    pub raw: Value,
}

impl Resource for User {
    const TITLE: &'static str = "Users";
    const TAB: &'static str = "Users";
    const COMMAND: &'static str = "users";
    const NOUN: &'static str = "user";
    const KIND: Kind = Kind::Users;
    const ADMIN_ONLY: bool = true;
    fn columns(_: &CellCtx) -> Vec<Column> {
        vec![
            col("NAME", Constraint::Min(12)),
            col("DOMAIN", Constraint::Length(10)),
            col("ENABLED", Constraint::Length(7)),
            col("EMAIL", Constraint::Min(12)),
            col("DEFAULT PROJECT", Constraint::Min(15)),
        ]
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let project = self.default_project_id.as_deref().map(|p| ctx.project(Some(p))).unwrap_or_default();
        vec![
            self.name.clone(),
            self.domain_id.clone(),
            yes(self.enabled.unwrap_or(true)),
            self.email.clone().unwrap_or_default(),
            project,
        ]
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
        Some(identity(format!("/users/{}", path_segment(id))))
    }
    fn enabled(&self) -> Option<bool> {
        Some(self.enabled.unwrap_or(true))
    }
    fn enable_call(id: &str, on: bool) -> Option<(DeleteCall, Value)> {
        Some((identity(format!("/users/{}", path_segment(id))), json!({"user": {"enabled": on}})))
    }
    async fn list(client: &Client, _scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = versioned(&client.session, "identity", "v3")?;
        let v = get_all(client, "identity", &base, "/users", "users").await?;
        Ok(parse_list(&Value::Array(v), |u: &mut User, raw| u.raw = raw))
    }
}
