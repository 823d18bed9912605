//! The piece of screen that owns its keys while it is open (a form, the wizard): it handles raw
//! keys, draws itself, and tells the app what happened.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::Style;
use ratatui::widgets::{Block, BorderType, Borders};
use tui_textarea::TextArea;

use crate::theme::Theme;

#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Not for this component: the app may use it.
    Ignored,
    Consumed,
    Cancel,
    Submit,
}

pub trait Component {
    fn handle_key(&mut self, _key: KeyEvent) -> Outcome {
        Outcome::Ignored
    }
    fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme);
}

/// A centred rectangle of at most `w`×`h` inside `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))]).flex(Flex::Center).areas(area);
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))]).flex(Flex::Center).areas(v);
    r
}

pub fn dialog<'a>(title: &'a str, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(Style::default().fg(theme.accent))
        .title(ratatui::text::Span::styled(format!(" {title} "), theme.title()))
        .style(theme.base())
}

/// A one-line text field.
pub fn field(initial: &str, placeholder: &str) -> TextArea<'static> {
    let mut t = TextArea::new(vec![initial.to_string()]);
    t.set_cursor_line_style(Style::default());
    t.set_placeholder_text(placeholder.to_string());
    t.move_cursor(tui_textarea::CursorMove::End);
    t
}

pub fn text_of(t: &TextArea) -> String {
    t.lines().join("\n").trim().to_string()
}

/// A field styled for drawing, showing its cursor only when focused (a copy, so drawing
/// takes `&self`; fields are one line or a short user-data script).
pub fn focused<'a>(t: &TextArea<'a>, on: bool, theme: &Theme) -> TextArea<'a> {
    let mut t = t.clone();
    let cursor = if on { Style::default().add_modifier(ratatui::style::Modifier::REVERSED) } else { Style::default() };
    t.set_cursor_style(cursor);
    t.set_style(if on { Style::default().fg(theme.fg) } else { theme.muted() });
    t
}
