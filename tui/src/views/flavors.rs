use ratatui::layout::Constraint;
use serde_json::Value;

pub use crate::model::Flavor;
use crate::table::{CellCtx, Column, Resource, Scope, SortKey, col, mb};
use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::worker::{DeleteCall, Kind, get_all, path_segment};

impl Resource for Flavor {
    const TITLE: &'static str = "Flavors";
    const TAB: &'static str = "Flavors";
    const COMMAND: &'static str = "flavors";
    const NOUN: &'static str = "flavor";
    const KIND: Kind = Kind::Flavors;
    fn columns(_: &CellCtx) -> Vec<Column> {
        vec![
            col("NAME", Constraint::Min(12)),
            col("VCPUS", Constraint::Length(6)),
            col("RAM", Constraint::Length(7)),
            col("DISK", Constraint::Length(6)),
            col("EPHEMERAL", Constraint::Length(9)),
            col("PUBLIC", Constraint::Length(6)),
            col("ID", Constraint::Min(8)),
        ]
    }
    fn cells(&self, _: &CellCtx) -> Vec<String> {
        vec![
            self.name.clone(),
            self.vcpus.to_string(),
            mb(self.ram),
            format!("{}G", self.disk),
            format!("{}G", self.ephemeral),
            match self.is_public {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => String::new(),
            },
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
    fn sort_key(&self, col: usize, ctx: &CellCtx) -> SortKey {
        match col {
            1 => SortKey::Num(self.vcpus as f64),
            2 => SortKey::Num(self.ram as f64),
            3 => SortKey::Num(self.disk as f64),
            4 => SortKey::Num(self.ephemeral as f64),
            _ => SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase()),
        }
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: "compute", version: None, path: format!("/flavors/{}", path_segment(id)) })
    }
    async fn list(client: &Client, _scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = client.session.endpoint("compute")?;
        let v = get_all(client, "compute", &base, "/flavors/detail", "flavors").await?;
        Ok(parse_list(&Value::Array(v), |f: &mut Flavor, raw| f.raw = raw))
    }
}
