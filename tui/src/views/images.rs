use ratatui::layout::Constraint;
use serde_json::Value;

pub use crate::model::Image;
use crate::table::{CellCtx, Column, Resource, Scope, SortKey, age, col, mb};
use meridian_common::{Client, ClientError};

use crate::model::parse_list;
use crate::worker::{DeleteCall, Kind, get_all, path_segment, versioned};

fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => String::new(),
        Some(b) if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{}K", b.div_ceil(1024)),
    }
}

impl Resource for Image {
    const TITLE: &'static str = "Images";
    const TAB: &'static str = "Images";
    const COMMAND: &'static str = "images";
    const NOUN: &'static str = "image";
    const KIND: Kind = Kind::Images;
    const SCOPED: bool = true;
    fn columns(ctx: &CellCtx) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(12)),
            col("STATUS", Constraint::Length(9)),
            col("VISIBILITY", Constraint::Length(10)),
            col("FORMAT", Constraint::Length(6)),
            col("SIZE", Constraint::Length(7)),
            col("MIN RAM", Constraint::Length(7)),
            col("MIN DISK", Constraint::Length(8)),
            col("AGE", Constraint::Length(4)),
        ];
        if ctx.all_projects {
            c.insert(c.len() - 1, col("PROJECT", Constraint::Length(10)));
        }
        c
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        let mut c = vec![
            self.name.clone(),
            self.status.clone(),
            self.visibility.clone(),
            self.disk_format.clone().unwrap_or_default(),
            size(self.size),
            if self.min_ram > 0 { mb(self.min_ram) } else { String::new() },
            if self.min_disk > 0 { format!("{}G", self.min_disk) } else { String::new() },
            age(ctx.now, self.created_at),
        ];
        if ctx.all_projects {
            c.insert(c.len() - 1, ctx.project(self.raw["owner"].as_str()));
        }
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
        match col {
            4 => SortKey::Num(self.size.unwrap_or(0) as f64),
            5 => SortKey::Num(self.min_ram as f64),
            6 => SortKey::Num(self.min_disk as f64),
            c if c == 7 + usize::from(ctx.all_projects) => {
                SortKey::Num(-(self.created_at.map(|t| t.timestamp()).unwrap_or(0) as f64))
            }
            _ => SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase()),
        }
    }
    fn delete_call(id: &str) -> Option<DeleteCall> {
        Some(DeleteCall { service: "image", version: Some("v2"), path: format!("/images/{}", path_segment(id)) })
    }
    async fn list(client: &Client, scope: Scope) -> Result<Vec<Self>, ClientError> {
        let base = versioned(&client.session, "image", "v2")?;
        let v = get_all(client, "image", &base, "/images", "images").await?;
        let mut images: Vec<Image> = parse_list(&Value::Array(v), |i: &mut Image, raw| i.raw = raw);
        // Glance lists every project's images to an admin; the project's own view keeps its
        // images and those others share (public, community, shared).
        if !scope.all_projects
            && let Some(pid) = client.session.project_id()
        {
            images.retain(|i| i.visibility != "private" || i.raw["owner"].as_str() == Some(pid));
        }
        Ok(images)
    }
}
