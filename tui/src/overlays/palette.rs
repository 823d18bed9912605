//! `:`: the command palette (views by name, aliases, commands), with completion.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Clear, List, ListItem, ListState, Paragraph};
use tui_textarea::TextArea;

use super::Effect;
use crate::component::{dialog, field, text_of};
use crate::theme::Theme;
use crate::views::View;

/// Palette commands besides the views.
pub const COMMANDS: &[&str] = &["launch", "project", "theme", "refresh", "help", "quit"];
/// Other names for views.
pub const ALIASES: &[(&str, View)] = &[("instances", View::Servers), ("vms", View::Servers)];

pub struct Palette {
    input: TextArea<'static>,
    sel: usize,
}

impl Default for Palette {
    fn default() -> Self {
        Palette::new()
    }
}

fn input(text: &str) -> TextArea<'static> {
    let mut t = field(text, "command");
    t.set_cursor_style(Style::default().add_modifier(Modifier::REVERSED));
    t
}

impl Palette {
    pub fn new() -> Palette {
        Palette { input: input(""), sel: 0 }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        let text = text_of(&self.input);
        let c = completions(&text);
        let sel = self.sel.min(c.len().saturating_sub(1));
        match key.code {
            KeyCode::Esc => return Effect::Close,
            KeyCode::Up => self.sel = sel.saturating_sub(1),
            KeyCode::Down => self.sel = (sel + 1).min(c.len().saturating_sub(1)),
            KeyCode::Tab => {
                if let Some(first) = c.get(sel) {
                    self.input = input(first);
                }
                self.sel = 0;
            }
            KeyCode::Enter => {
                let exact = c.contains(&text) || text.starts_with("theme ");
                let cmd = if exact { text } else { c.get(sel).cloned().unwrap_or(text) };
                return Effect::Command(cmd);
            }
            _ => {
                self.input.input(key);
                self.sel = 0;
            }
        }
        Effect::None
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let c = completions(&text_of(&self.input));
        let sel = self.sel.min(c.len().saturating_sub(1));
        let h = (c.len() as u16 + 3).min(area.height.saturating_sub(2));
        let r = Rect { x: area.x + 1, y: area.y + 1, width: 40.min(area.width.saturating_sub(2)), height: h };
        f.render_widget(Clear, r);
        let block = dialog("command", theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let [l, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
        let [colon, v] = Layout::horizontal([Constraint::Length(1), Constraint::Min(1)]).areas(l);
        f.render_widget(Paragraph::new(Span::styled(":", theme.accent())), colon);
        f.render_widget(&self.input, v);
        let items: Vec<ListItem> = c.iter().map(|x| ListItem::new(x.clone())).collect();
        let mut st = ListState::default().with_selected((!c.is_empty()).then_some(sel));
        f.render_stateful_widget(List::new(items).highlight_style(theme.selected()), rest, &mut st);
    }
}

/// Palette completions for what has been typed (prefix matches first, then substrings).
pub fn completions(typed: &str) -> Vec<String> {
    let t = typed.trim().to_lowercase();
    let all: Vec<&str> = View::ALL
        .iter()
        .map(|v| v.command())
        .chain(ALIASES.iter().map(|(a, _)| *a))
        .chain(COMMANDS.iter().copied())
        .collect();
    let mut out: Vec<String> = all.iter().filter(|c| c.starts_with(&t)).map(|c| c.to_string()).collect();
    out.extend(all.iter().filter(|c| !c.starts_with(&t) && c.contains(&t)).map(|c| c.to_string()));
    out
}
