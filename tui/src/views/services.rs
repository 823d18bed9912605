use ratatui::layout::Constraint;
use serde_json::Value;

pub use crate::model::Service;
use crate::table::{CellCtx, Column, Resource, Scope, age, col};
use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::worker::Kind;

impl Resource for Service {
    const TITLE: &'static str = "Services";
    const TAB: &'static str = "Services";
    const COMMAND: &'static str = "services";
    const NOUN: &'static str = "service";
    const ADMIN_ONLY: bool = true;
    const KIND: Kind = Kind::Services;
    fn columns(_: &CellCtx) -> Vec<Column> {
        vec![
            col("BINARY", Constraint::Min(14)),
            col("HOST", Constraint::Min(10)),
            col("ZONE", Constraint::Length(8)),
            col("STATUS", Constraint::Length(8)),
            col("STATE", Constraint::Length(5)),
            col("UPDATED", Constraint::Length(7)),
        ]
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        vec![
            self.binary.clone(),
            self.host.clone(),
            self.zone.clone(),
            self.status.clone(),
            self.state.clone(),
            age(ctx.now, self.updated_at),
        ]
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.binary
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn status_column() -> Option<usize> {
        Some(4)
    }
    async fn list(client: &Client, _scope: Scope) -> Result<Vec<Self>, ClientError> {
        let v = client.get("compute", "/os-services").await?;
        Ok(parse_list(&v["services"], |s: &mut Service, raw| s.raw = raw))
    }
}
