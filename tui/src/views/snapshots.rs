//! Cinder volume snapshots: point-in-time copies a new volume can start from.

use ratatui::layout::Constraint;
use serde::Deserialize;
use serde_json::Value;

use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::table::{CellCtx, Column, Resource, Scope, age, col};
use crate::views::volumes::{SERVICE, endpoint};
use crate::worker::{DeleteCall, Kind, get_all, path_segment};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub size: u64,
    pub volume_id: String,
    pub description: Option<String>,
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip)]
    pub raw: Value,
    #[serde(skip)]
    pub volume_name: String,
}

impl Resource for Snapshot {
    const TITLE: &'static str = "Volume snapshots";
    const TAB: &'static str = "Snapshots";
    const COMMAND: &'static str = "snapshots";
    const NOUN: &'static str = "snapshot";
    const KIND: Kind = Kind::Snapshots;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(12)),
            col("STATUS", Constraint::Length(10)),
            col("SIZE", Constraint::Length(5)),
            col("VOLUME", Constraint::Min(12)),
            col("DESCRIPTION", Constraint::Min(12)),
            col("AGE", Constraint::Length(4)),
        ];
        if ctx.all_projects {
            c.insert(c.len() - 1, col("PROJECT", Constraint::Length(10)));
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let mut c = vec![
            self.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| self.id.clone()),
            self.status.clone(),
            format!("{}G", self.size),
            if self.volume_name.is_empty() { self.volume_id.clone() } else { self.volume_name.clone() },
            self.description.clone().unwrap_or_default(),
            age(ctx.now, self.created_at),
        ];
        if ctx.all_projects {
            c.insert(c.len() - 1, ctx.project(self.raw["os-extended-snapshot-attributes:project_id"].as_str()));
        }
        c
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        self.name.as_deref().filter(|n| !n.is_empty()).unwrap_or(&self.id)
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn status_column() -> Option<usize> {
        Some(1)
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: SERVICE, version: None, path: format!("/snapshots/{}", path_segment(id)) })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = endpoint(&client.session)?;
        let q = if scope.all_projects { "?all_tenants=1" } else { "" };
        let (snaps_path, vols_path) = (format!("/snapshots/detail{q}"), format!("/volumes{q}"));
        let (snaps, vols) = tokio::join!(
            get_all(client, SERVICE, &base, &snaps_path, "snapshots"),
            get_all(client, SERVICE, &base, &vols_path, "volumes"),
        );
        let mut snaps: Vec<Snapshot> = parse_list(&Value::Array(snaps?), |s: &mut Snapshot, raw| s.raw = raw);
        let vols = vols.unwrap_or_default();
        for s in &mut snaps {
            if let Some(v) = vols.iter().find(|v| v["id"].as_str() == Some(&s.volume_id)) {
                s.volume_name = v["name"].as_str().unwrap_or_default().to_string();
            }
        }
        Ok(snaps)
    }
}
