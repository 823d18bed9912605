//! The detail pane of one resource: its fields (or JSON/YAML), and for instances the state
//! timeline and the console log. Keys come in as actions; what needs the network goes out as
//! [`DetailEffect::Send`].

use std::cell::Cell;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell as TableCell, Paragraph, Row, Table};
use serde_json::Value;

use crate::keymap::Action;
use crate::model::{Transition, power_state_name};
use crate::theme::Theme;
use crate::views::View;
use crate::views::actions::{self, InstanceAction};
use crate::views::events::event_words;
use crate::worker::Request;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Fields,
    Timeline,
    Console,
    /// Nova's instance actions and their events.
    Actions,
    /// The instance's interfaces and, when asked for, its diagnostics (views/interfaces.rs).
    Interfaces,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Raw {
    Fields,
    Json,
    Yaml,
}

pub struct Detail {
    pub view: View,
    pub id: String,
    pub tab: Tab,
    raw: Raw,
    /// The first body line shown; drawing clamps it (and moves it to the end while following).
    scroll: Cell<u16>,
    pub follow: bool,
    pub timeline: Option<(Vec<Transition>, &'static str)>,
    pub console: Option<String>,
    pub actions: Option<Vec<InstanceAction>>,
    pub interfaces: Option<Vec<crate::views::interfaces::Interface>>,
    /// Network ID → name, for the interfaces' NETWORK column.
    pub network_names: std::collections::HashMap<String, String>,
    pub diagnostics: Option<Result<Value, String>>,
    /// An instance's live migration in progress (`None` inside: none), or why it cannot be
    /// read; shown atop the fields while the instance is MIGRATING.
    pub live_migration: Option<Result<Option<Value>, String>>,
    /// Lines and height of the last drawn body, to clamp scrolling.
    body_lines: Cell<u16>,
    body_height: Cell<u16>,
}

/// What a key in the detail asks of the app.
#[derive(Debug, PartialEq)]
pub enum DetailEffect {
    Handled,
    Close,
    /// Boxed: a request is large next to the other effects.
    Send(Box<Request>),
    /// Following the console stopped: no more console polls.
    Unfollow,
    /// Reload the view's list (the fields come from it).
    Reload,
}

impl Detail {
    /// Whether the body shows the resource's fields (not its JSON or YAML, not another tab).
    pub fn shows_fields(&self) -> bool {
        self.tab == Tab::Fields && self.raw == Raw::Fields
    }

    /// A new detail and the request that loads its tab, if any.
    pub fn open(view: View, id: String, tab: Tab) -> (Detail, Option<Request>) {
        let req = match tab {
            Tab::Console => Some(Request::Console(id.clone())),
            Tab::Timeline => Some(Request::Timeline(id.clone())),
            Tab::Actions => Some(Request::Actions(id.clone())),
            Tab::Interfaces => Some(Request::Interfaces(id.clone())),
            Tab::Fields => None,
        };
        let d = Detail {
            view,
            id,
            tab,
            raw: Raw::Fields,
            scroll: Cell::new(0),
            follow: tab == Tab::Console,
            timeline: None,
            console: None,
            actions: None,
            interfaces: None,
            network_names: Default::default(),
            diagnostics: None,
            live_migration: None,
            body_lines: Cell::new(0),
            body_height: Cell::new(0),
        };
        (d, req)
    }

    /// A key's action; `None` lets the table-level handler have it.
    pub fn action(&mut self, action: Action) -> Option<DetailEffect> {
        let height = self.body_height.get();
        let max = self.body_lines.get().saturating_sub(height);
        let scroll = self.scroll.get();
        let set = |v: u16| self.scroll.set(v);
        match action {
            Action::Back => return Some(DetailEffect::Close),
            Action::Up => {
                set(scroll.saturating_sub(1));
                self.follow = false;
            }
            Action::Down => set((scroll + 1).min(max)),
            Action::PageUp => {
                set(scroll.saturating_sub(height.max(1)));
                self.follow = false;
            }
            Action::PageDown => set((scroll + height.max(1)).min(max)),
            Action::Top => {
                set(0);
                self.follow = false;
            }
            Action::Bottom => set(max),
            Action::ToggleRaw => {
                self.raw = match self.raw {
                    Raw::Fields => Raw::Json,
                    Raw::Json => Raw::Yaml,
                    Raw::Yaml => Raw::Fields,
                };
                set(0);
            }
            Action::NextTab | Action::PrevTab if self.view == View::Servers => {
                let tabs = [Tab::Fields, Tab::Timeline, Tab::Console, Tab::Actions, Tab::Interfaces];
                let n = tabs.len();
                let i = tabs.iter().position(|t| *t == self.tab).unwrap_or(0);
                self.tab = tabs[if action == Action::NextTab { (i + 1) % n } else { (i + n - 1) % n }];
                set(0);
                let id = self.id.clone();
                return Some(match self.tab {
                    Tab::Timeline => DetailEffect::Send(Box::new(Request::Timeline(id))),
                    Tab::Console => {
                        self.follow = true;
                        DetailEffect::Send(Box::new(Request::Console(id)))
                    }
                    Tab::Actions => {
                        self.follow = false;
                        DetailEffect::Send(Box::new(Request::Actions(id)))
                    }
                    Tab::Interfaces => {
                        self.follow = false;
                        DetailEffect::Send(Box::new(Request::Interfaces(id)))
                    }
                    Tab::Fields => DetailEffect::Handled,
                });
            }
            Action::NextTab | Action::PrevTab | Action::Select => {}
            Action::Follow if self.tab == Tab::Console => {
                self.follow = !self.follow;
                if !self.follow {
                    return Some(DetailEffect::Unfollow);
                }
                set(max);
                return Some(DetailEffect::Send(Box::new(Request::Console(self.id.clone()))));
            }
            Action::Refresh => {
                let id = self.id.clone();
                return Some(match self.tab {
                    Tab::Timeline => DetailEffect::Send(Box::new(Request::Timeline(id))),
                    Tab::Console => DetailEffect::Send(Box::new(Request::Console(id))),
                    Tab::Actions => DetailEffect::Send(Box::new(Request::Actions(id))),
                    Tab::Interfaces => DetailEffect::Send(Box::new(Request::Interfaces(id))),
                    Tab::Fields => DetailEffect::Reload,
                });
            }
            Action::Console => {
                self.tab = Tab::Console;
                self.follow = true;
                return Some(DetailEffect::Send(Box::new(Request::Console(self.id.clone()))));
            }
            _ => return None,
        }
        Some(DetailEffect::Handled)
    }

    /// What `y` copies: once the fields are scrolled, the field on the top line (an address,
    /// say), else the resource's ID. `raw` is the resource's JSON.
    pub fn copy_target(&self, raw: Option<&Value>) -> (String, String) {
        let scroll = usize::from(self.scroll.get());
        if self.tab == Tab::Fields
            && self.raw == Raw::Fields
            && scroll > 0
            && let Some(raw) = raw
        {
            let mut out = Vec::new();
            flatten("", raw, &mut out);
            if let Some(field) = out.into_iter().nth(scroll) {
                return field;
            }
        }
        ("id".into(), self.id.clone())
    }

    /// Draws the pane for the resource's JSON (`None`: the resource is gone).
    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme, raw: Option<Value>) {
        let gone = raw.is_none();
        let raw = raw.unwrap_or(Value::Null);
        let name =
            raw["name"].as_str().or(raw["hypervisor_hostname"].as_str()).or(raw["binary"].as_str()).unwrap_or(&self.id);
        let mut title =
            vec![Span::styled(format!(" {} {} ", self.view.title().trim_end_matches('s'), name), theme.title())];
        let tabs: &[(Tab, &str)] = if self.view == View::Servers {
            &[
                (Tab::Fields, "Fields"),
                (Tab::Timeline, "Timeline"),
                (Tab::Console, "Console"),
                (Tab::Actions, "Actions"),
                (Tab::Interfaces, "Interfaces"),
            ]
        } else {
            &[(Tab::Fields, "Fields")]
        };
        for (t, label) in tabs {
            let st = if *t == self.tab { theme.selected() } else { theme.muted() };
            title.push(Span::styled(format!(" {label} "), st));
        }
        if self.tab == Tab::Fields {
            let mode = match self.raw {
                Raw::Fields => "",
                Raw::Json => " JSON ",
                Raw::Yaml => " YAML ",
            };
            title.push(Span::styled(mode, theme.accent()));
        }
        if self.tab == Tab::Console && self.follow {
            title.push(Span::styled(" following ", theme.accent()));
        }
        let block = Block::default().borders(Borders::ALL).border_style(theme.border()).title(Line::from(title));
        let inner = block.inner(area);
        f.render_widget(block, area);
        let lines: Vec<Line> = match self.tab {
            Tab::Fields if gone => vec![Line::from(Span::styled("this resource is gone", theme.muted()))],
            Tab::Fields => match self.raw {
                Raw::Fields => {
                    let mut out = Vec::new();
                    flatten("", &raw, &mut out);
                    let w = out.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0).min(36);
                    let mut lines = live_migration_lines(self.live_migration.as_ref(), theme);
                    lines.extend(out.into_iter().map(|(k, v)| {
                        Line::from(vec![Span::styled(format!("{k:<w$} "), theme.accent()), Span::raw(v)])
                    }));
                    lines
                }
                Raw::Json => serde_json::to_string_pretty(&raw)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| Line::raw(l.to_string()))
                    .collect(),
                Raw::Yaml => serde_norway::to_string(&raw)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| Line::raw(l.to_string()))
                    .collect(),
            },
            Tab::Timeline => {
                draw_timeline(f, inner, theme, self.timeline.as_ref());
                self.body_lines.set(0);
                self.body_height.set(inner.height);
                return;
            }
            Tab::Actions => actions::lines(self.actions.as_deref(), theme),
            Tab::Interfaces => {
                let names = |id: &str| self.network_names.get(id).cloned().unwrap_or_default();
                crate::views::interfaces::lines(self.interfaces.as_deref(), &names, self.diagnostics.as_ref(), theme)
            }
            Tab::Console => match &self.console {
                None => vec![Line::from(Span::styled("loading the console log…", theme.muted()))],
                Some(c) if c.is_empty() => vec![Line::from(Span::styled("(the console log is empty)", theme.muted()))],
                Some(c) => c.lines().map(|l| Line::raw(l.to_string())).collect(),
            },
        };
        let n = lines.len() as u16;
        self.body_lines.set(n);
        self.body_height.set(inner.height);
        let max = n.saturating_sub(inner.height);
        let scroll = if self.follow && self.tab == Tab::Console { max } else { self.scroll.get().min(max) };
        self.scroll.set(scroll);
        f.render_widget(Paragraph::new(lines).scroll((scroll, 0)), inner);
    }
}

/// The live migration in progress, as `GET /servers/{id}/migrations` shows it: where to, its
/// status and how much of the memory and disks has moved.
fn live_migration_lines(m: Option<&Result<Option<Value>, String>>, theme: &Theme) -> Vec<Line<'static>> {
    let m = match m {
        None | Some(Ok(None)) => return Vec::new(),
        Some(Err(e)) => {
            return vec![Line::from(Span::styled(format!("live migration: {e}"), theme.error())), Line::raw("")];
        }
        Some(Ok(Some(m))) => m,
    };
    let part = |what: &str, done: &str, total: &str| -> Option<String> {
        let (done, total) = (m[done].as_u64()?, m[total].as_u64()?);
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        Some(format!("{what} {pct}% ({} of {} MiB)", done >> 20, total >> 20))
    };
    let moved: Vec<String> = [
        part("memory", "memory_processed_bytes", "memory_total_bytes"),
        part("disk", "disk_processed_bytes", "disk_total_bytes"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let route =
        format!("{} → {}", m["source_compute"].as_str().unwrap_or("?"), m["dest_compute"].as_str().unwrap_or("?"));
    vec![
        Line::from(vec![
            Span::styled("live migration ", theme.accent()),
            Span::styled(m["status"].as_str().unwrap_or("").to_string(), theme.status("MIGRATING")),
            Span::raw(format!("  {route}")),
        ]),
        Line::from(Span::raw(if moved.is_empty() {
            "no progress reported yet".to_string()
        } else {
            moved.join(" · ")
        })),
        Line::raw(""),
    ]
}

fn draw_timeline(f: &mut Frame, area: Rect, theme: &Theme, entries: Option<&(Vec<Transition>, &str)>) {
    let Some((entries, source)) = entries else {
        f.render_widget(Paragraph::new(Span::styled("loading the timeline…", theme.muted())), area);
        return;
    };
    let longest = entries.iter().filter_map(|e| e.duration_s).fold(0.0f64, f64::max);
    let bar_w = 12usize;
    let header = Row::new(["TIME", "VM STATE", "TASK", "POWER", "TOOK", ""]).style(theme.header());
    let rows: Vec<Row> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let took = match e.duration_s {
                Some(s) if s < 1.0 => format!("{:.0} ms", s * 1000.0),
                Some(s) if s < 120.0 => format!("{s:.1} s"),
                Some(s) => format!("{:.1} min", s / 60.0),
                None if i + 1 == entries.len() => "now".into(),
                None => String::new(),
            };
            let bar = match e.duration_s {
                Some(s) if longest > 0.0 => "█".repeat(((s / longest) * bar_w as f64).ceil().max(1.0) as usize),
                _ => String::new(),
            };
            let vm = e.vm_state.clone().unwrap_or_default();
            Row::new(vec![
                TableCell::from(e.at.map(|t| t.format("%H:%M:%S%.3f").to_string()).unwrap_or_default()),
                TableCell::from(vm.clone()).style(theme.status(&vm)),
                TableCell::from(e.task_state.as_deref().map_or_else(|| "-".into(), event_words)),
                TableCell::from(power_state_name(e.power_state)),
                TableCell::from(took),
                TableCell::from(bar).style(Style::default().fg(theme.gauge)),
            ])
        })
        .collect();
    let [t, foot] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(bar_w as u16),
        ],
    )
    .header(header);
    f.render_widget(table, t);
    let total: f64 = entries.iter().filter_map(|e| e.duration_s).sum();
    f.render_widget(
        Paragraph::new(Span::styled(
            format!(" {} steps, {total:.1} s in all · from {source}", entries.len()),
            theme.muted(),
        )),
        foot,
    );
}

/// Every field of a JSON object as `path: value` lines (nested objects dotted, arrays indexed).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) if !a.is_empty() && a.iter().any(|x| x.is_object()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Null => out.push((prefix.to_string(), "-".into())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// A serial console log made safe to draw: terminal escape sequences and carriage returns
/// removed, tabs expanded, other control characters dropped (they would move the terminal's
/// cursor and break the frame around the log).
pub fn printable(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut col = 0usize;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                out.push('\n');
                col = 0;
            }
            '\t' => {
                let n = 8 - col % 8;
                out.extend(std::iter::repeat_n(' ', n));
                col += n;
            }
            '\u{1b}' => {
                // CSI `ESC [ … final` or a two-character escape.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            c if c.is_control() => {}
            c => {
                out.push(c);
                col += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod console_tests {
    use super::printable;

    #[test]
    fn console_text_is_made_safe_to_draw() {
        assert_eq!(printable("a\tb\r\nx\u{1b}[1;32mgreen\u{1b}[0m\u{7}!"), "a       b\nxgreen!");
        assert_eq!(printable("login:\t"), "login:  ");
    }
}
