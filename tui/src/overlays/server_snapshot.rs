//! `n` on an instance (or on marked instances): asks the new image's name, prefilled with
//! `<server>-snapshot-<date>`, then snapshots each one (Nova's createImage).

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Clear, Paragraph};
use tui_textarea::TextArea;

use super::Effect;
use crate::component::{centered, dialog, field, focused, text_of};
use crate::theme::Theme;

/// Nova's limit on an image name.
const MAX_NAME: usize = 255;

pub struct ServerSnapshot {
    input: TextArea<'static>,
    /// (id, name) of each instance to snapshot.
    targets: Vec<(String, String)>,
}

impl ServerSnapshot {
    /// `date` stamps the prefilled name (`20261207-1405`). One target: the whole image name;
    /// several: the suffix each server's name gets (`<server>-<suffix>`).
    pub fn new(targets: Vec<(String, String)>, date: &str) -> ServerSnapshot {
        let prefill = match targets.as_slice() {
            [(id, name)] => format!("{}-snapshot-{date}", if name.is_empty() { id } else { name }),
            _ => format!("snapshot-{date}"),
        };
        ServerSnapshot { input: field(&prefill, "image name"), targets }
    }

    /// The image name each target gets for what is typed now.
    fn names(&self) -> Vec<(String, String)> {
        let typed = text_of(&self.input).trim().to_string();
        match self.targets.as_slice() {
            [(id, _)] => vec![(id.clone(), typed)],
            many => many
                .iter()
                .map(|(id, name)| (id.clone(), format!("{}-{typed}", if name.is_empty() { id } else { name })))
                .collect(),
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        match key.code {
            KeyCode::Esc => Effect::Close,
            KeyCode::Enter => {
                let names = self.names();
                if names.iter().any(|(_, n)| n.is_empty() || n.chars().count() > MAX_NAME) {
                    return Effect::None;
                }
                Effect::Snapshot { targets: names }
            }
            _ => {
                self.input.input(key);
                Effect::None
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let r = centered(area, 64, 6);
        f.render_widget(Clear, r);
        let title = match self.targets.as_slice() {
            [(id, name)] => format!("snapshot {}", if name.is_empty() { id } else { name }),
            many => format!("snapshot {} instances", many.len()),
        };
        let block = dialog(&title, theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let rows = Layout::vertical([Constraint::Length(1); 4]).split(inner);
        let hint = if self.targets.len() == 1 {
            "The root disk becomes a new image. Its name:"
        } else {
            "Each root disk becomes an image named <instance>-<this>:"
        };
        f.render_widget(Paragraph::new(Span::styled(hint, theme.muted())), rows[0]);
        f.render_widget(&focused(&self.input, true, theme), rows[1]);
        f.render_widget(Paragraph::new(Span::styled("<enter>snapshot <esc>cancel", theme.muted())), rows[3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;

    fn press(p: &mut ServerSnapshot, code: KeyCode) -> Effect {
        p.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn the_name_is_prefilled_and_editable() {
        let mut one = ServerSnapshot::new(vec![("id-1".into(), "db".into())], "20261207-1405");
        assert_eq!(
            press(&mut one, KeyCode::Enter),
            Effect::Snapshot { targets: vec![("id-1".into(), "db-snapshot-20261207-1405".into())] }
        );
        press(&mut one, KeyCode::Char('x'));
        assert_eq!(
            press(&mut one, KeyCode::Enter),
            Effect::Snapshot { targets: vec![("id-1".into(), "db-snapshot-20261207-1405x".into())] }
        );
        assert_eq!(press(&mut one, KeyCode::Esc), Effect::Close);
    }

    #[test]
    fn marked_rows_each_get_their_own_name() {
        let mut many = ServerSnapshot::new(vec![("a".into(), "web1".into()), ("b".into(), "".into())], "20261207");
        assert_eq!(
            press(&mut many, KeyCode::Enter),
            Effect::Snapshot {
                targets: vec![
                    ("a".into(), "web1-snapshot-20261207".into()),
                    ("b".into(), "b-snapshot-20261207".into())
                ]
            }
        );
    }
}
