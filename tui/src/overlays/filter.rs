//! `/`: the filter line at the bottom; the table filters as the user types.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Clear, Paragraph};
use tui_textarea::TextArea;

use super::Effect;
use crate::component::{field, text_of};
use crate::theme::Theme;

pub struct Filter {
    input: TextArea<'static>,
}

impl Filter {
    pub fn new(current: &str) -> Filter {
        let mut input = field(current, "filter");
        input.set_cursor_style(Style::default().add_modifier(Modifier::REVERSED));
        Filter { input }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        match key.code {
            KeyCode::Esc => Effect::FilterCleared,
            KeyCode::Enter => Effect::Close,
            _ => {
                self.input.input(key);
                Effect::Filter(text_of(&self.input))
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let r = Rect { y: area.y + area.height.saturating_sub(2), height: 1, ..area };
        f.render_widget(Clear, r);
        let [l, v] = Layout::horizontal([Constraint::Length(2), Constraint::Min(1)]).areas(r);
        f.render_widget(Paragraph::new(Span::styled("/", theme.accent())), l);
        f.render_widget(&self.input, v);
    }
}
