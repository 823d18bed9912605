use ratatui::layout::Constraint;
use serde_json::Value;

pub use crate::model::Hypervisor;
use crate::table::{CellCtx, Column, Resource, Scope, col};
use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::worker::Kind;

fn used(used: Option<u64>, total: Option<u64>) -> String {
    match (used, total) {
        (Some(u), Some(t)) => format!("{u}/{t}"),
        _ => String::new(),
    }
}

impl Resource for Hypervisor {
    const TITLE: &'static str = "Hypervisors";
    const TAB: &'static str = "Hypervisors";
    const COMMAND: &'static str = "hypervisors";
    const NOUN: &'static str = "hypervisor";
    const ADMIN_ONLY: bool = true;
    const KIND: Kind = Kind::Hypervisors;
    fn columns(_: &CellCtx) -> Vec<Column> {
        vec![
            col("HOSTNAME", Constraint::Min(12)),
            col("STATE", Constraint::Length(5)),
            col("STATUS", Constraint::Length(8)),
            col("TYPE", Constraint::Length(6)),
            col("VCPUS", Constraint::Length(7)),
            col("RAM MB", Constraint::Length(13)),
            col("DISK GB", Constraint::Length(9)),
            col("VMS", Constraint::Length(4)),
        ]
    }
    fn cells(&self, _: &CellCtx) -> Vec<String> {
        vec![
            self.hypervisor_hostname.clone(),
            self.state.clone(),
            self.status.clone(),
            self.hypervisor_type.clone().unwrap_or_default(),
            used(self.vcpus_used, self.vcpus),
            used(self.memory_mb_used, self.memory_mb),
            used(self.local_gb_used, self.local_gb),
            self.running_vms.map(|v| v.to_string()).unwrap_or_default(),
        ]
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.hypervisor_hostname
    }
    fn raw(&self) -> &Value {
        &self.raw
    }
    fn status_column() -> Option<usize> {
        Some(1)
    }
    async fn list(client: &Client, _scope: Scope) -> Result<Vec<Self>, ClientError> {
        let v = client.get("compute", "/os-hypervisors/detail").await?;
        Ok(parse_list(&v["hypervisors"], |h: &mut Hypervisor, raw| h.raw = raw))
    }
}
