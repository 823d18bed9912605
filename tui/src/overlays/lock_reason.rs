//! `L` on an unlocked instance: asks why (Nova's `locked_reason`, optional), then locks it.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Clear, Paragraph};
use tui_textarea::TextArea;

use super::Effect;
use crate::component::{centered, dialog, field, focused, text_of};
use crate::theme::Theme;

/// Nova's limit on `locked_reason`.
const MAX_REASON: usize = 255;

pub struct LockReason {
    input: TextArea<'static>,
    id: String,
    name: String,
}

impl LockReason {
    pub fn new(id: String, name: String) -> LockReason {
        LockReason { input: field("", "reason (optional)"), id, name }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        match key.code {
            KeyCode::Esc => Effect::Close,
            KeyCode::Enter => {
                let reason = text_of(&self.input).trim().to_string();
                if reason.chars().count() > MAX_REASON {
                    return Effect::None;
                }
                Effect::Lock { id: self.id.clone(), reason: (!reason.is_empty()).then_some(reason) }
            }
            _ => {
                self.input.input(key);
                Effect::None
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let r = centered(area, 60, 6);
        f.render_widget(Clear, r);
        let name = if self.name.is_empty() { &self.id } else { &self.name };
        let title = format!("lock {name}");
        let block = dialog(&title, theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let rows = Layout::vertical([Constraint::Length(1); 4]).split(inner);
        f.render_widget(
            Paragraph::new(Span::styled("Only admins may act on it until it is unlocked. Why?", theme.muted())),
            rows[0],
        );
        f.render_widget(&focused(&self.input, true, theme), rows[1]);
        f.render_widget(Paragraph::new(Span::styled("<enter>lock <esc>cancel", theme.muted())), rows[3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;

    #[test]
    fn enter_locks_with_the_reason_typed_or_none() {
        let press = |p: &mut LockReason, code| p.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
        let mut prompt = LockReason::new("id-1".into(), "db".into());
        assert_eq!(press(&mut prompt, KeyCode::Enter), Effect::Lock { id: "id-1".into(), reason: None });
        for c in " upgrade ".chars() {
            press(&mut prompt, KeyCode::Char(c));
        }
        assert_eq!(
            press(&mut prompt, KeyCode::Enter),
            Effect::Lock { id: "id-1".into(), reason: Some("upgrade".into()) }
        );
        assert_eq!(press(&mut prompt, KeyCode::Esc), Effect::Close);
    }
}
