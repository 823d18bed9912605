//! One generic resource table (sort, filter, selection, mouse, drawing only the visible rows)
//! driven by a small per-resource trait, instead of a copy per resource.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use serde_json::Value;

use crate::keymap::Action;
use crate::model::{Flavor, Hypervisor, Image, Keypair, Network, Server, Service, power_state_name};
use crate::theme::Theme;
use crate::worker::Kind;

/// What cells may need besides the row: names to show instead of IDs, the time, the role.
pub struct CellCtx<'a> {
    pub admin: bool,
    pub now: DateTime<Utc>,
    pub image_names: &'a HashMap<String, String>,
    pub flavor_names: &'a HashMap<String, String>,
}

pub struct Column {
    pub title: &'static str,
    pub width: Constraint,
}

const fn col(title: &'static str, width: Constraint) -> Column {
    Column { title, width }
}

#[derive(Clone, Debug, PartialEq, PartialOrd)]
pub enum SortKey {
    Num(f64),
    Text(String),
}

/// A resource the generic table can show.
pub trait Resource: Clone {
    /// The view's title (`Instances`).
    const TITLE: &'static str;
    /// The resource kind (its noun, whether and how it is deleted).
    const KIND: Kind;
    fn columns(admin: bool) -> Vec<Column>;
    fn cells(&self, ctx: &CellCtx) -> Vec<String>;
    fn id(&self) -> &str;
    fn name(&self) -> &str;
    fn raw(&self) -> &Value;
    /// The column whose text is a status to colour.
    fn status_column() -> Option<usize> {
        None
    }
    /// Sorting by a column: its text unless a resource knows better (numbers, times).
    fn sort_key(&self, col: usize, ctx: &CellCtx) -> SortKey {
        SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase())
    }
}

/// How long ago, in the largest whole unit (`45s`, `12m`, `3h`, `9d`).
pub fn age(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else { return String::new() };
    let s = (now - t).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn mb(v: u64) -> String {
    if v >= 1024 && v.is_multiple_of(1024) { format!("{}G", v / 1024) } else { format!("{v}M") }
}

impl Resource for Server {
    const TITLE: &'static str = "Instances";
    const KIND: Kind = Kind::Servers;
    fn columns(admin: bool) -> Vec<Column> {
        let mut c = vec![
            col("NAME", Constraint::Min(10)),
            col("STATUS", Constraint::Length(8)),
            col("TASK", Constraint::Length(12)),
            col("POWER", Constraint::Length(8)),
            col("ADDRESSES", Constraint::Min(9)),
            col("FLAVOR", Constraint::Length(9)),
            col("IMAGE", Constraint::Length(8)),
        ];
        if admin {
            c.push(col("HOST", Constraint::Length(10)));
        }
        c.push(col("AGE", Constraint::Length(4)));
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
        match (col, ctx.admin) {
            (0, _) => text(&self.name),
            (1, _) => text(&self.status),
            (2, _) => text(self.task_state.as_deref().unwrap_or_default()),
            (3, _) => SortKey::Num(self.power_state.unwrap_or(0) as f64),
            (7, true) => text(self.host.as_deref().unwrap_or_default()),
            (7, false) | (8, true) => SortKey::Num(-(self.created.map(|t| t.timestamp()).unwrap_or(0) as f64)),
            _ => SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase()),
        }
    }
}

impl Resource for Flavor {
    const TITLE: &'static str = "Flavors";
    const KIND: Kind = Kind::Flavors;
    fn columns(_: bool) -> Vec<Column> {
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
}

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
    const KIND: Kind = Kind::Images;
    fn columns(_: bool) -> Vec<Column> {
        vec![
            col("NAME", Constraint::Min(12)),
            col("STATUS", Constraint::Length(9)),
            col("VISIBILITY", Constraint::Length(10)),
            col("FORMAT", Constraint::Length(6)),
            col("SIZE", Constraint::Length(7)),
            col("MIN RAM", Constraint::Length(7)),
            col("MIN DISK", Constraint::Length(8)),
            col("AGE", Constraint::Length(4)),
        ]
    }
    fn cells(&self, ctx: &CellCtx) -> Vec<String> {
        vec![
            self.name.clone(),
            self.status.clone(),
            self.visibility.clone(),
            self.disk_format.clone().unwrap_or_default(),
            size(self.size),
            if self.min_ram > 0 { mb(self.min_ram) } else { String::new() },
            if self.min_disk > 0 { format!("{}G", self.min_disk) } else { String::new() },
            age(ctx.now, self.created_at),
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
    fn status_column() -> Option<usize> {
        Some(1)
    }
    fn sort_key(&self, col: usize, ctx: &CellCtx) -> SortKey {
        match col {
            4 => SortKey::Num(self.size.unwrap_or(0) as f64),
            5 => SortKey::Num(self.min_ram as f64),
            6 => SortKey::Num(self.min_disk as f64),
            7 => SortKey::Num(-(self.created_at.map(|t| t.timestamp()).unwrap_or(0) as f64)),
            _ => SortKey::Text(self.cells(ctx).get(col).cloned().unwrap_or_default().to_lowercase()),
        }
    }
}

impl Resource for Network {
    const TITLE: &'static str = "Networks";
    const KIND: Kind = Kind::Networks;
    fn columns(_: bool) -> Vec<Column> {
        vec![
            col("NAME", Constraint::Min(12)),
            col("STATUS", Constraint::Length(7)),
            col("SHARED", Constraint::Length(6)),
            col("EXTERNAL", Constraint::Length(8)),
            col("SUBNETS", Constraint::Min(14)),
        ]
    }
    fn cells(&self, _: &CellCtx) -> Vec<String> {
        let yes = |b: bool| if b { "yes".to_string() } else { "no".to_string() };
        vec![self.name.clone(), self.status.clone(), yes(self.shared), yes(self.external), self.subnet_cidrs.join(", ")]
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
}

impl Resource for Keypair {
    const TITLE: &'static str = "Key pairs";
    const KIND: Kind = Kind::Keypairs;
    fn columns(_: bool) -> Vec<Column> {
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
}

fn used(used: Option<u64>, total: Option<u64>) -> String {
    match (used, total) {
        (Some(u), Some(t)) => format!("{u}/{t}"),
        _ => String::new(),
    }
}

impl Resource for Hypervisor {
    const TITLE: &'static str = "Hypervisors";
    const KIND: Kind = Kind::Hypervisors;
    fn columns(_: bool) -> Vec<Column> {
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
}

impl Resource for Service {
    const TITLE: &'static str = "Services";
    const KIND: Kind = Kind::Services;
    fn columns(_: bool) -> Vec<Column> {
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
}

/// The table's state: items, the filtered and sorted view of them, the selection.
pub struct ResourceTable<R: Resource> {
    pub items: Vec<R>,
    /// Indices into `items`, filtered and sorted.
    view: Vec<usize>,
    filter: String,
    sort: Option<(usize, bool)>,
    selected: usize,
    offset: usize,
    pub loaded: bool,
    /// Where the rows were drawn last (for mouse clicks).
    rows_area: Rect,
    /// Row IDs drawn with the "expected" marker (an action's state before the cloud confirms).
    pub marked: std::collections::HashSet<String>,
    /// Row IDs with a delete on its way: drawn struck through until the cloud answers.
    pub deleting: std::collections::HashSet<String>,
}

impl<R: Resource> Default for ResourceTable<R> {
    fn default() -> Self {
        ResourceTable {
            items: Vec::new(),
            view: Vec::new(),
            filter: String::new(),
            sort: None,
            selected: 0,
            offset: 0,
            loaded: false,
            rows_area: Rect::default(),
            marked: Default::default(),
            deleting: Default::default(),
        }
    }
}

impl<R: Resource> ResourceTable<R> {
    pub fn kind(&self) -> Kind {
        R::KIND
    }

    /// Replaces the items, keeping the selection on the same row ID when it is still there.
    pub fn set_items(&mut self, items: Vec<R>, ctx: &CellCtx) {
        let keep = self.selected().map(|r| r.id().to_string());
        self.items = items;
        self.loaded = true;
        self.recompute(ctx, keep);
    }

    /// Adds or replaces one item (a live update).
    pub fn upsert(&mut self, item: R, ctx: &CellCtx) {
        let keep = self.selected().map(|r| r.id().to_string());
        match self.items.iter_mut().find(|x| x.id() == item.id()) {
            Some(x) => {
                *x = item;
                // Unsorted and unfiltered, a changed row cannot move or vanish.
                if self.sort.is_none() && self.filter.is_empty() {
                    return;
                }
            }
            None => self.items.push(item),
        }
        self.recompute(ctx, keep);
    }

    pub fn remove(&mut self, id: &str, ctx: &CellCtx) {
        let keep = self.selected().map(|r| r.id().to_string());
        self.items.retain(|x| x.id() != id);
        self.marked.remove(id);
        self.deleting.remove(id);
        self.recompute(ctx, keep);
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut R> {
        self.items.iter_mut().find(|x| x.id() == id)
    }

    pub fn get(&self, id: &str) -> Option<&R> {
        self.items.iter().find(|x| x.id() == id)
    }

    pub fn recompute(&mut self, ctx: &CellCtx, keep: Option<String>) {
        let needle = self.filter.to_lowercase();
        self.view = (0..self.items.len())
            .filter(|&i| {
                needle.is_empty() || {
                    let r = &self.items[i];
                    r.id().to_lowercase().contains(&needle)
                        || r.cells(ctx).iter().any(|c| c.to_lowercase().contains(&needle))
                }
            })
            .collect();
        if let Some((col, desc)) = self.sort {
            let mut keyed: Vec<(SortKey, usize)> =
                self.view.iter().map(|&i| (self.items[i].sort_key(col, ctx), i)).collect();
            // Stable, so rows with equal keys keep the cloud's order.
            keyed.sort_by(|a, b| {
                let o = a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal);
                if desc { o.reverse() } else { o }
            });
            self.view = keyed.into_iter().map(|(_, i)| i).collect();
        }
        if let Some(id) = keep
            && let Some(pos) = self.view.iter().position(|&i| self.items[i].id() == id)
        {
            self.selected = pos;
        }
        self.selected = self.selected.min(self.view.len().saturating_sub(1));
    }

    pub fn selected(&self) -> Option<&R> {
        self.view.get(self.selected).map(|&i| &self.items[i])
    }

    pub fn visible_len(&self) -> usize {
        self.view.len()
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }

    pub fn set_filter(&mut self, f: &str, ctx: &CellCtx) {
        let keep = self.selected().map(|r| r.id().to_string());
        self.filter = f.to_string();
        self.recompute(ctx, keep);
    }

    pub fn sort_next(&mut self, ctx: &CellCtx) {
        let n = R::columns(ctx.admin).len();
        self.sort = match self.sort {
            None => Some((0, false)),
            Some((c, _)) if c + 1 < n => Some((c + 1, false)),
            Some(_) => None,
        };
        let keep = self.selected().map(|r| r.id().to_string());
        self.recompute(ctx, keep);
    }

    pub fn sort_reverse(&mut self, ctx: &CellCtx) {
        self.sort = Some(match self.sort {
            None => (0, true),
            Some((c, d)) => (c, !d),
        });
        let keep = self.selected().map(|r| r.id().to_string());
        self.recompute(ctx, keep);
    }

    pub fn navigate(&mut self, action: Action) {
        let page = (self.rows_area.height as usize).max(1);
        let last = self.view.len().saturating_sub(1);
        self.selected = match action {
            Action::Up => self.selected.saturating_sub(1),
            Action::Down => (self.selected + 1).min(last),
            Action::PageUp => self.selected.saturating_sub(page),
            Action::PageDown => (self.selected + page).min(last),
            Action::Top => 0,
            Action::Bottom => last,
            _ => self.selected,
        };
    }

    /// A click at terminal row `y`: selects that row; returns whether it hit one.
    pub fn click(&mut self, x: u16, y: u16) -> bool {
        let a = self.rows_area;
        if x < a.x || x >= a.x + a.width || y < a.y || y >= a.y + a.height {
            return false;
        }
        let idx = self.offset + (y - a.y) as usize;
        if idx < self.view.len() {
            self.selected = idx;
            return true;
        }
        false
    }

    pub fn draw(&mut self, f: &mut Frame, area: Rect, theme: &Theme, ctx: &CellCtx, busy: bool) {
        let columns = R::columns(ctx.admin);
        let sort_mark = |i: usize| match self.sort {
            Some((c, false)) if c == i => "↑",
            Some((c, true)) if c == i => "↓",
            _ => "",
        };
        let header =
            Row::new(columns.iter().enumerate().map(|(i, c)| Cell::from(format!("{}{}", c.title, sort_mark(i)))))
                .style(theme.header());
        let mut title = vec![Span::styled(format!(" {} ", R::TITLE), theme.title())];
        let count = if self.filter.is_empty() {
            format!("[{}] ", self.items.len())
        } else {
            format!("[{}/{}] /{} ", self.view.len(), self.items.len(), self.filter)
        };
        title.push(Span::styled(count, theme.accent()));
        let block = Block::default().borders(Borders::ALL).border_style(theme.border()).title(Line::from(title));
        let inner = block.inner(area);
        f.render_widget(block, area);
        // Header takes one line; the rest shows rows.
        let body_h = inner.height.saturating_sub(1) as usize;
        self.rows_area = Rect { y: inner.y + 1, height: body_h as u16, ..inner };
        if self.view.is_empty() {
            let msg = if !self.loaded || busy {
                "loading…"
            } else if self.filter.is_empty() {
                "nothing here yet"
            } else {
                "no row matches the filter"
            };
            f.render_widget(Table::new(Vec::<Row>::new(), columns.iter().map(|c| c.width)).header(header), inner);
            if body_h > 0 {
                let r = Rect { y: inner.y + 1, height: 1, ..inner };
                f.render_widget(Paragraph::new(Span::styled(format!(" {msg}"), theme.muted())), r);
            }
            return;
        }
        // Keep the selection in view; draw only the rows that fit (cheap at 10,000 rows).
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if body_h > 0 && self.selected >= self.offset + body_h {
            self.offset = self.selected + 1 - body_h;
        }
        self.offset = self.offset.min(self.view.len().saturating_sub(body_h.max(1)));
        let status_col = R::status_column();
        let rows: Vec<Row> = self.view[self.offset..(self.offset + body_h).min(self.view.len())]
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let r = &self.items[i];
                let marked = self.marked.contains(r.id());
                let deleting = self.deleting.contains(r.id());
                let cells = r.cells(ctx).into_iter().enumerate().map(|(ci, text)| {
                    let mut style = if Some(ci) == status_col { theme.status(&text) } else { Style::default() };
                    if marked && (ci == 1 || ci == 2) {
                        style = style.add_modifier(Modifier::ITALIC);
                    }
                    Cell::from(text).style(style)
                });
                let mut style = if self.offset + n == self.selected { theme.selected() } else { Style::default() };
                if deleting {
                    style = style.add_modifier(Modifier::CROSSED_OUT | Modifier::DIM);
                }
                Row::new(cells).style(style)
            })
            .collect();
        let table = Table::new(rows, columns.iter().map(|c| c.width)).header(header).column_spacing(1);
        f.render_widget(table, inner);
    }
}
