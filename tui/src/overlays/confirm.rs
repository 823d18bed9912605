//! "Delete image cirros?" — one question for one row or for all marked rows.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::Effect;
use crate::component::{centered, dialog};
use crate::theme::Theme;
use crate::views::Kind;

pub struct Confirm {
    /// What goes if confirmed: kind, ID, name.
    pub targets: Vec<(Kind, String, String)>,
}

impl Confirm {
    pub fn one(kind: Kind, id: String, name: String) -> Confirm {
        Confirm { targets: vec![(kind, id, name)] }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter) {
            Effect::Delete(std::mem::take(&mut self.targets))
        } else {
            Effect::Kept
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let r = centered(area, 60, 5);
        f.render_widget(Clear, r);
        let question = match self.targets.as_slice() {
            [(kind, id, name)] => {
                let label = if name.is_empty() { id.clone() } else { name.clone() };
                Line::from(vec![
                    Span::raw(format!("Delete {} ", kind.noun())),
                    Span::styled(label, theme.title()),
                    Span::raw("?"),
                ])
            }
            many => {
                let noun = many.first().map(|(k, _, _)| k.noun()).unwrap_or("item");
                Line::from(Span::styled(format!("Delete {} {noun}s?", many.len()), theme.title()))
            }
        };
        let text =
            vec![question, Line::from(Span::styled("y / Enter: delete · any other key: keep it", theme.muted()))];
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(dialog("Confirm", theme)), r);
    }
}
