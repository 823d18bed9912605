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
use crate::theme::Theme;
use crate::worker::{DeleteCall, Kind};
use meridian_common::{Client, ClientError};
use std::cell::Cell as Memo;
use std::collections::HashSet;
use std::future::Future;

/// What cells may need besides the row: names to show instead of IDs, the time, the role,
/// whether an admin is looking at every project (then project-scoped views add a PROJECT column).
pub struct CellCtx<'a> {
    pub admin: bool,
    pub now: DateTime<Utc>,
    pub image_names: &'a HashMap<String, String>,
    pub flavor_names: &'a HashMap<String, String>,
    pub all_projects: bool,
    /// Project ID → name, from Keystone when the admin may list projects.
    pub project_names: &'a HashMap<String, String>,
}

impl CellCtx<'_> {
    /// A project's name, else its ID.
    pub fn project(&self, id: Option<&str>) -> String {
        let id = id.unwrap_or_default();
        self.project_names.get(id).cloned().unwrap_or_else(|| id.to_string())
    }
}

/// Which rows a list asks the cloud for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// An admin's view of every project (`all_tenants` for Nova; Glance and Neutron list every
    /// project's resources to an admin anyway, so without it they are narrowed to the project).
    pub all_projects: bool,
}

pub struct Column {
    pub title: &'static str,
    pub width: Constraint,
    /// Left out of the drawing (the terminal is too narrow); sorting and filtering still see it.
    pub hidden: bool,
    /// The short form of a cell whose text is wider than a `Length` column (`VERIFY` for
    /// `VERIFY_RESIZE`); without one the text is cut.
    pub short: Option<ShortForm>,
}

/// A cell's short form (`VERIFY` for `VERIFY_RESIZE`).
pub type ShortForm = fn(&str) -> &str;

pub const fn col(title: &'static str, width: Constraint) -> Column {
    Column { title, width, hidden: false, short: None }
}

/// The width the shown columns need at least, with the table's one-cell spacing between them.
pub fn min_width(cols: &[Column]) -> u16 {
    let shown: Vec<&Column> = cols.iter().filter(|c| !c.hidden).collect();
    let cells: u16 = shown
        .iter()
        .map(|c| match c.width {
            Constraint::Length(n) | Constraint::Min(n) => n,
            _ => 0,
        })
        .sum();
    cells + (shown.len() as u16).saturating_sub(1)
}

#[derive(Clone, Debug, PartialEq, PartialOrd)]
pub enum SortKey {
    Num(f64),
    Text(String),
}

/// A resource the generic table can show: its columns and cells, its words, how it is listed
/// and deleted. A view module implements this for its model and registers it in `views::registry!`.
pub trait Resource: Clone + Send + Sync + 'static {
    /// The table's title (`Instances`).
    const TITLE: &'static str;
    /// The tab's label (`Instances`, `Keypairs`).
    const TAB: &'static str;
    /// The palette command that opens the view (`servers`).
    const COMMAND: &'static str;
    /// One of these, in words (`Delete image cirros?`).
    const NOUN: &'static str;
    /// The registry's kind for this resource.
    const KIND: Kind;
    /// Only administrators see the view.
    const ADMIN_ONLY: bool = false;
    /// Rows belong to projects: the all-projects toggle applies (and adds a PROJECT column).
    const SCOPED: bool = false;
    fn columns(ctx: &CellCtx) -> Vec<Column>;
    /// The columns as drawn in `width` cells: the same columns (indices stay those of `cells`),
    /// some of them narrower or hidden when a resource knows how to fit a narrow terminal.
    fn fit_columns(ctx: &CellCtx, _width: u16) -> Vec<Column> {
        Self::columns(ctx)
    }
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
    /// The call that deletes one (`None`: not deleted from the dashboard).
    fn delete_call(_id: &str) -> Option<DeleteCall> {
        None
    }
    /// Whether the row is enabled, for resources that can be disabled (projects, users).
    fn enabled(&self) -> Option<bool> {
        None
    }
    /// The PATCH (path and body) that enables or disables `id`.
    fn enable_call(_id: &str, _on: bool) -> Option<(DeleteCall, Value)> {
        None
    }
    /// Reads the whole list from the cloud (run by the worker, never by the UI).
    fn list(client: &Client, scope: Scope) -> impl Future<Output = Result<Vec<Self>, ClientError>> + Send;
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

pub fn mb(v: u64) -> String {
    if v >= 1024 && v.is_multiple_of(1024) { format!("{}G", v / 1024) } else { format!("{v}M") }
}

/// How one row of a bulk action is getting on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Sent,
    Done,
    Failed,
}

/// The table's state: items, the filtered and sorted view of them, the selection.
pub struct ResourceTable<R: Resource> {
    pub items: Vec<R>,
    /// Indices into `items`, filtered and sorted.
    view: Vec<usize>,
    filter: String,
    sort: Option<(usize, bool)>,
    selected: usize,
    /// The first row drawn and where the rows were drawn last (for paging and mouse clicks):
    /// what drawing remembers of the layout, so drawing itself can take `&self`.
    offset: Memo<usize>,
    rows_area: Memo<Rect>,
    pub loaded: bool,
    /// Row IDs drawn with the "expected" marker (an action's state before the cloud confirms).
    pub expecting: HashSet<String>,
    /// Row IDs marked with Space for a bulk action.
    pub picked: HashSet<String>,
    /// Rows of a bulk action: how each is getting on (shown in the mark column).
    pub progress: HashMap<String, Progress>,
    /// Row IDs with a delete on its way: drawn struck through until the cloud answers.
    pub deleting: HashSet<String>,
}

impl<R: Resource> Default for ResourceTable<R> {
    fn default() -> Self {
        ResourceTable {
            items: Vec::new(),
            view: Vec::new(),
            filter: String::new(),
            sort: None,
            selected: 0,
            offset: Memo::new(0),
            rows_area: Memo::new(Rect::default()),
            loaded: false,
            expecting: Default::default(),
            picked: Default::default(),
            progress: Default::default(),
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
        // Marks of rows that are gone go with them.
        let ids: HashSet<&str> = self.items.iter().map(|r| r.id()).collect();
        self.picked.retain(|id| ids.contains(id.as_str()));
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
        self.expecting.remove(id);
        self.picked.remove(id);
        self.progress.remove(id);
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

    /// Space: marks or unmarks the selected row and moves to the next one.
    pub fn toggle_pick(&mut self) {
        let Some(id) = self.selected().map(|r| r.id().to_string()) else { return };
        if !self.picked.remove(&id) {
            self.picked.insert(id);
        }
        self.navigate(Action::Down);
    }

    /// The marked rows (ID, name) in the order shown.
    pub fn picked_rows(&self) -> Vec<(String, String)> {
        self.view
            .iter()
            .map(|&i| &self.items[i])
            .filter(|r| self.picked.contains(r.id()))
            .map(|r| (r.id().to_string(), r.name().to_string()))
            .collect()
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
        let n = R::columns(ctx).len();
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
        let page = (self.rows_area.get().height as usize).max(1);
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
        let a = self.rows_area.get();
        if x < a.x || x >= a.x + a.width || y < a.y || y >= a.y + a.height {
            return false;
        }
        let idx = self.offset.get() + (y - a.y) as usize;
        if idx < self.view.len() {
            self.selected = idx;
            return true;
        }
        false
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme, ctx: &CellCtx, busy: bool) {
        // The mark column shows only while rows are marked or a bulk action reports on them.
        let marks = !self.picked.is_empty() || !self.progress.is_empty();
        let inner_w = area.width.saturating_sub(2).saturating_sub(if marks { 2 } else { 0 });
        let fitted = R::fit_columns(ctx, inner_w);
        // Which of the resource's columns are drawn (hidden ones leave no gap).
        let shown: Vec<bool> = fitted.iter().map(|c| !c.hidden).collect();
        let shorts: Vec<Option<(u16, ShortForm)>> = fitted
            .iter()
            .map(|c| match (c.width, c.short) {
                (Constraint::Length(n), Some(f)) => Some((n, f)),
                _ => None,
            })
            .collect();
        let mut columns: Vec<Column> = fitted.into_iter().filter(|c| !c.hidden).collect();
        if marks {
            columns.insert(0, col(" ", Constraint::Length(1)));
        }
        // A drawn column's index among the resource's columns.
        let drawn: Vec<usize> = (0..shown.len()).filter(|&i| shown[i]).collect();
        let data_col = |i: usize| {
            let i = if marks { i.checked_sub(1)? } else { i };
            drawn.get(i).copied()
        };
        let sort_mark = |i: usize| match (self.sort, data_col(i)) {
            (Some((c, false)), Some(d)) if c == d => "↑",
            (Some((c, true)), Some(d)) if c == d => "↓",
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
        if R::SCOPED && ctx.all_projects {
            title.push(Span::styled("all projects ", theme.title()));
        }
        if !self.picked.is_empty() {
            title.push(Span::styled(format!("{} marked ", self.picked.len()), theme.title()));
        }
        let block = Block::default().borders(Borders::ALL).border_style(theme.border()).title(Line::from(title));
        let inner = block.inner(area);
        f.render_widget(block, area);
        // Header takes one line; the rest shows rows.
        let body_h = inner.height.saturating_sub(1) as usize;
        self.rows_area.set(Rect { y: inner.y + 1, height: body_h as u16, ..inner });
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
        let mut offset = self.offset.get();
        if self.selected < offset {
            offset = self.selected;
        } else if body_h > 0 && self.selected >= offset + body_h {
            offset = self.selected + 1 - body_h;
        }
        offset = offset.min(self.view.len().saturating_sub(body_h.max(1)));
        self.offset.set(offset);
        let status_col = R::status_column();
        let rows: Vec<Row> = self.view[offset..(offset + body_h).min(self.view.len())]
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let r = &self.items[i];
                let expecting = self.expecting.contains(r.id());
                let deleting = self.deleting.contains(r.id());
                let cells = r.cells(ctx).into_iter().enumerate().filter(|(ci, _)| shown[*ci]).map(|(ci, text)| {
                    // Coloured by the full text, shown short when it does not fit.
                    let mut style = if Some(ci) == status_col { theme.status(&text) } else { Style::default() };
                    if expecting && (ci == 1 || ci == 2) {
                        style = style.add_modifier(Modifier::ITALIC);
                    }
                    let text = match shorts[ci] {
                        Some((n, short)) if text.chars().count() > n as usize => short(&text).to_string(),
                        _ => text,
                    };
                    Cell::from(text).style(style)
                });
                let mark = marks.then(|| {
                    let (sym, style) = match self.progress.get(r.id()) {
                        Some(Progress::Sent) => ("…", theme.accent()),
                        Some(Progress::Done) => ("✓", theme.accent()),
                        Some(Progress::Failed) => ("✗", theme.error()),
                        None if self.picked.contains(r.id()) => ("●", theme.title()),
                        None => (" ", Style::default()),
                    };
                    Cell::from(sym).style(style)
                });
                let cells: Vec<Cell> = mark.into_iter().chain(cells).collect();
                let mut style = if offset + n == self.selected { theme.selected() } else { Style::default() };
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

/// What the app does with any table without knowing its resource type (the registry hands out
/// `&dyn AnyTable` by kind).
pub trait AnyTable {
    fn kind(&self) -> Kind;
    fn loaded(&self) -> bool;
    fn navigate(&mut self, action: Action);
    fn filter(&self) -> &str;
    fn set_filter(&mut self, f: &str, ctx: &CellCtx);
    fn sort_next(&mut self, ctx: &CellCtx);
    fn sort_reverse(&mut self, ctx: &CellCtx);
    fn click(&mut self, x: u16, y: u16) -> bool;
    /// The selected row's ID and name.
    fn selected_row(&self) -> Option<(String, String)>;
    /// A row's ID and name.
    fn row(&self, id: &str) -> Option<(String, String)>;
    /// A row's JSON as the cloud sent it.
    fn raw_of(&self, id: &str) -> Option<Value>;
    /// The selected row's ID, name and whether it is enabled (if it can be disabled).
    fn selected_enabled(&self) -> Option<(String, String, bool)>;
    fn remove(&mut self, id: &str, ctx: &CellCtx);
    fn deleting(&mut self) -> &mut HashSet<String>;
    fn is_deleting(&self, id: &str) -> bool;
    fn toggle_pick(&mut self);
    /// The marked rows (ID, name) in the order shown.
    fn picked_rows(&self) -> Vec<(String, String)>;
    fn clear_picks(&mut self);
    fn set_progress(&mut self, id: &str, p: Option<Progress>);
    fn has_progress(&self) -> bool;
    /// Keeps the progress of these rows only.
    fn retain_progress(&mut self, ids: &[String]);
    fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme, ctx: &CellCtx, busy: bool);
}

impl<R: Resource> AnyTable for ResourceTable<R> {
    fn kind(&self) -> Kind {
        R::KIND
    }
    fn loaded(&self) -> bool {
        self.loaded
    }
    fn navigate(&mut self, action: Action) {
        ResourceTable::navigate(self, action)
    }
    fn filter(&self) -> &str {
        &self.filter
    }
    fn set_filter(&mut self, f: &str, ctx: &CellCtx) {
        ResourceTable::set_filter(self, f, ctx)
    }
    fn sort_next(&mut self, ctx: &CellCtx) {
        ResourceTable::sort_next(self, ctx)
    }
    fn sort_reverse(&mut self, ctx: &CellCtx) {
        ResourceTable::sort_reverse(self, ctx)
    }
    fn click(&mut self, x: u16, y: u16) -> bool {
        ResourceTable::click(self, x, y)
    }
    fn selected_row(&self) -> Option<(String, String)> {
        self.selected().map(|r| (r.id().to_string(), r.name().to_string()))
    }
    fn row(&self, id: &str) -> Option<(String, String)> {
        self.get(id).map(|r| (r.id().to_string(), r.name().to_string()))
    }
    fn raw_of(&self, id: &str) -> Option<Value> {
        self.get(id).map(|r| r.raw().clone())
    }
    fn selected_enabled(&self) -> Option<(String, String, bool)> {
        let r = self.selected()?;
        Some((r.id().to_string(), r.name().to_string(), r.enabled()?))
    }
    fn remove(&mut self, id: &str, ctx: &CellCtx) {
        ResourceTable::remove(self, id, ctx)
    }
    fn deleting(&mut self) -> &mut HashSet<String> {
        &mut self.deleting
    }
    fn is_deleting(&self, id: &str) -> bool {
        self.deleting.contains(id)
    }
    fn toggle_pick(&mut self) {
        ResourceTable::toggle_pick(self)
    }
    fn picked_rows(&self) -> Vec<(String, String)> {
        ResourceTable::picked_rows(self)
    }
    fn clear_picks(&mut self) {
        self.picked.clear();
    }
    fn set_progress(&mut self, id: &str, p: Option<Progress>) {
        match p {
            Some(p) => self.progress.insert(id.to_string(), p),
            None => self.progress.remove(id),
        };
    }
    fn has_progress(&self) -> bool {
        !self.progress.is_empty()
    }
    fn retain_progress(&mut self, ids: &[String]) {
        self.progress.retain(|id, _| ids.contains(id));
    }
    fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme, ctx: &CellCtx, busy: bool) {
        ResourceTable::draw(self, f, area, theme, ctx, busy)
    }
}
