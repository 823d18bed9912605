//! What a bulk action left undone: one line per failed row, with the cloud's reason.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::Effect;
use crate::component::{centered, dialog};
use crate::theme::Theme;

pub struct Report {
    pub title: String,
    /// Failed rows: name, reason.
    pub failed: Vec<(String, String)>,
}

impl Report {
    pub fn handle_key(&mut self, _key: KeyEvent) -> Effect {
        Effect::Close
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let h = (self.failed.len() as u16 * 2 + 4).min(area.height.saturating_sub(2));
        let r = centered(area, 76, h);
        f.render_widget(Clear, r);
        let mut lines: Vec<Line> = self
            .failed
            .iter()
            .map(|(name, why)| {
                Line::from(vec![
                    Span::styled("✗ ", theme.error()),
                    Span::styled(format!("{name}: "), theme.title()),
                    Span::raw(why.clone()),
                ])
            })
            .collect();
        lines.push(Line::from(Span::styled("any key: close", theme.muted())));
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(dialog(&self.title, theme)), r);
    }
}
