use ratatui::layout::Constraint;
use serde_json::Value;

pub use crate::model::Server;
use crate::table::{CellCtx, Column, Resource, Scope, SortKey, age, col, min_width};
use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::model::{power_state_name, short_status};
use crate::worker::{DeleteCall, Kind, get_all, path_segment};

/// STATUS wide enough for the longest Nova status (SHELVED_OFFLOADED), and for the longest
/// short form (`SHELVED_OFF`, `HARD_REBOOT`).
const STATUS_FULL: u16 = 17;
const STATUS_SHORT: u16 = 11;
const TASK: u16 = 12;
const TASK_WIDE: u16 = 16;

impl Resource for Server {
    const TITLE: &'static str = "Instances";
    const TAB: &'static str = "Instances";
    const COMMAND: &'static str = "servers";
    const NOUN: &'static str = "instance";
    const KIND: Kind = Kind::Servers;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(10)),
            col("STATUS", Constraint::Length(STATUS_FULL)),
            col("TASK", Constraint::Length(TASK)),
            col("POWER", Constraint::Length(8)),
            col("ADDRESSES", Constraint::Min(9)),
            col("FLAVOR", Constraint::Length(9)),
            col("IMAGE", Constraint::Length(8)),
        ];
        if ctx.admin {
            c.push(col("HOST", Constraint::Length(10)));
        }
        if ctx.all_projects {
            c.push(col("PROJECT", Constraint::Length(10)));
        }
        c.push(col("AGE", Constraint::Length(4)));
        c
    }
    fn fit_columns(ctx: &CellCtx, width: u16) -> Vec<Column> {
        let mut c = Self::columns(ctx);
        // Every Nova status in full when it fits beside every column; else its short form, then
        // IMAGE and FLAVOR go (the detail has them) before NAME, TASK or ADDRESSES are squeezed.
        if min_width(&c) > width {
            c[1].width = Constraint::Length(STATUS_SHORT);
            c[1].short = Some(short_status);
        }
        // Room to spare: whole task names (resize_migrating, resize_reverting).
        c[2].width = Constraint::Length(TASK_WIDE);
        if min_width(&c) > width {
            c[2].width = Constraint::Length(TASK);
        }
        for drop in [6, 5] {
            if min_width(&c) > width {
                c[drop].hidden = true;
            }
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let flavor = self
            .flavor
            .original_name
            .clone()
            .or_else(|| self.flavor.id.as_ref().map(|id| ctx.flavor_names.get(id).cloned().unwrap_or(id.clone())))
            .unwrap_or_default();
        let image = match &self.image.0 {
            Some(id) => ctx.image_names.get(id).cloned().unwrap_or_else(|| id.chars().take(8).collect()),
            None => "(volume)".into(),
        };
        let mut c = vec![
            self.name.clone(),
            self.status.clone(),
            self.task_state.clone().unwrap_or_default(),
            power_state_name(self.power_state).to_string(),
            self.addresses_text(),
            flavor,
            image,
        ];
        if ctx.admin {
            c.push(self.host.clone().unwrap_or_default());
        }
        if ctx.all_projects {
            c.push(ctx.project(self.raw["tenant_id"].as_str()));
        }
        c.push(age(ctx.now, self.created));
        c
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
    fn status_column() -> Option<usize> {
        Some(1)
    }
    fn sort_key(&self, col: usize, ctx: &CellCtx) -> SortKey {
        // Straight from the fields: building every cell of 10,000 rows per live update is too slow.
        let text = |s: &str| SortKey::Text(s.to_lowercase());
        let age_col = 7 + usize::from(ctx.admin) + usize::from(ctx.all_projects);
        match col {
            0 => text(&self.name),
            1 => text(&self.status),
            2 => text(self.task_state.as_deref().unwrap_or_default()),
            3 => SortKey::Num(self.power_state.unwrap_or(0) as f64),
            7 if ctx.admin => text(self.host.as_deref().unwrap_or_default()),
            c if c == age_col => SortKey::Num(-(self.created.map(|t| t.timestamp()).unwrap_or(0) as f64)),
            _ => SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase()),
        }
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: "compute", version: None, path: format!("/servers/{}", path_segment(id)) })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = client.session.endpoint("compute")?;
        let path = if scope.all_projects { "/servers/detail?all_tenants=1" } else { "/servers/detail" };
        let v = get_all(client, "compute", &base, path, "servers").await?;
        Ok(parse_list(&Value::Array(v), |s: &mut Server, raw| s.raw = raw))
    }
}
