//! "Delete image cirros?", "Stop 3 instances?" — one question for one row or for all marked rows.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::Effect;
use crate::component::{centered, dialog};
use crate::theme::Theme;
use crate::views::Kind;
use crate::worker::ServerOp;

/// What is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Delete,
    /// An instance action (start, stop, reboot) on marked instances.
    Server(ServerOp),
}

impl Verb {
    pub fn word(self) -> &'static str {
        match self {
            Verb::Delete => "delete",
            Verb::Server(op) => op.verb(),
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct Confirm {
    pub verb: Verb,
    pub kind: Kind,
    /// The rows it applies to: ID, name.
    pub targets: Vec<(String, String)>,
}

impl Confirm {
    pub fn one(kind: Kind, id: String, name: String) -> Confirm {
        Confirm { verb: Verb::Delete, kind, targets: vec![(id, name)] }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter) {
            let targets = std::mem::take(&mut self.targets);
            Effect::Confirmed(Confirm { verb: self.verb, kind: self.kind, targets })
        } else {
            Effect::Kept(self.verb)
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let r = centered(area, 60, 5);
        f.render_widget(Clear, r);
        let word = self.verb.word();
        let (question, answer) = match self.targets.as_slice() {
            [(id, name)] => {
                let label = if name.is_empty() { id.clone() } else { name.clone() };
                let q = Line::from(vec![
                    Span::raw(format!("{} {} ", capital(word), self.kind.noun())),
                    Span::styled(label, theme.title()),
                    Span::raw("?"),
                ]);
                (q, format!("y / Enter: {word} · any other key: keep it"))
            }
            many => {
                let q = format!("{} {} {}s?", capital(word), many.len(), self.kind.noun());
                (Line::from(Span::styled(q, theme.title())), format!("y / Enter: {word} them · any other key: cancel"))
            }
        };
        let text = vec![question, Line::from(Span::styled(answer, theme.muted()))];
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(dialog("Confirm", theme)), r);
    }
}

/// `stop` → `Stop`.
fn capital(word: &str) -> String {
    let mut c = word.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}
