//! Keystone projects (admins): list, disable/enable, delete.

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
pub struct IdProject {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: Option<bool>,
    pub description: Option<String>,
    #[serde(skip)]
    pub raw: Value,
}

impl Resource for IdProject {
    const TITLE: &'static str = "Projects";
    const TAB: &'static str = "Projects";
    const COMMAND: &'static str = "projects";
    const NOUN: &'static str = "project";
    const KIND: Kind = Kind::IdProjects;
    const ADMIN_ONLY: bool = true;
    fn columns(_: &CellCtx) -> Vec<Column> {
        vec![
            col("NAME", Constraint::Min(12)),
            col("DOMAIN", Constraint::Length(10)),
            col("ENABLED", Constraint::Length(7)),
            col("DESCRIPTION", Constraint::Min(12)),
            col("ID", Constraint::Length(32)),
        ]
    }
    fn cells(&self, _: &CellCtx) -> Vec<String> {
        vec![
            self.name.clone(),
            self.domain_id.clone(),
            yes(self.enabled.unwrap_or(true)),
            self.description.clone().unwrap_or_default(),
            self.id.clone(),
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
        Some(identity(format!("/projects/{}", path_segment(id))))
    }
    fn enabled(&self) -> Option<bool> {
        Some(self.enabled.unwrap_or(true))
    }
    fn enable_call(id: &str, on: bool) -> Option<(DeleteCall, Value)> {
        Some((identity(format!("/projects/{}", path_segment(id))), json!({"project": {"enabled": on}})))
    }
    async fn list(client: &Client, _scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = versioned(&client.session, "identity", "v3")?;
        let v = get_all(client, "identity", &base, "/projects", "projects").await?;
        Ok(parse_list(&Value::Array(v), |p: &mut IdProject, raw| p.raw = raw))
    }
}
