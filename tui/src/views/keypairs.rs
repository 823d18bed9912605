use ratatui::layout::Constraint;
use serde_json::Value;

pub use crate::model::Keypair;
use crate::table::{CellCtx, Column, Resource, Scope, col};
use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::worker::{DeleteCall, Kind, path_segment};

impl Resource for Keypair {
    const TITLE: &'static str = "Key pairs";
    const TAB: &'static str = "Keypairs";
    const COMMAND: &'static str = "keypairs";
    const NOUN: &'static str = "key pair";
    const KIND: Kind = Kind::Keypairs;
    fn columns(_: &CellCtx) -> Vec<Column> {
        vec![
            col("NAME", Constraint::Min(12)),
            col("TYPE", Constraint::Length(6)),
            col("FINGERPRINT", Constraint::Min(20)),
        ]
    }
    fn cells(&self, _: &CellCtx) -> Vec<String> {
        vec![self.name.clone(), self.kind.clone().unwrap_or_else(|| "ssh".into()), self.fingerprint.clone()]
    }
    fn id(&self) -> &str {
        &self.name
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: "compute", version: None, path: format!("/os-keypairs/{}", path_segment(id)) })
    }
    async fn list(client: &Client, _scope: Scope) -> Result<Vec<Self>, ClientError> {
        let v = client.get("compute", "/os-keypairs").await?;
        let items: Vec<Value> = v["keypairs"].as_array().into_iter().flatten().map(|k| k["keypair"].clone()).collect();
        Ok(parse_list(&Value::Array(items), |k: &mut Keypair, raw| k.raw = raw))
    }
}
