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
        let word = self.verb.word();
        let label = |(id, name): &(String, String)| if name.is_empty() { id.clone() } else { name.clone() };
        // A force delete cannot be undone: every instance is named, however many are marked.
        let forever = self.verb == Verb::Server(ServerOp::ForceDelete);
        let (mut text, answer) = match self.targets.as_slice() {
            [one] => {
                let q = Line::from(vec![
                    Span::raw(format!("{} {} ", capital(word), self.kind.noun())),
                    Span::styled(label(one), theme.title()),
                    Span::raw("?"),
                ]);
                (vec![q], format!("y / Enter: {word} · any other key: keep it"))
            }
            many => {
                let q = format!("{} {} {}s?", capital(word), many.len(), self.kind.noun());
                let mut text = vec![Line::from(Span::styled(q, theme.title()))];
                if forever {
                    let names: Vec<String> = many.iter().map(label).collect();
                    text.push(Line::from(Span::styled(names.join(", "), theme.title())));
                }
                (text, format!("y / Enter: {word} them · any other key: cancel"))
            }
        };
        if forever {
            text.push(Line::from(Span::styled("Deleted for good now: no restore after this.", theme.error())));
        }
        text.push(Line::from(Span::styled(answer, theme.muted())));
        let width = 60u16;
        // Lines as wrapped in the dialog, plus its border.
        let inner = usize::from(width.min(area.width).saturating_sub(2)).max(1);
        // (plus one: word wrapping can take a line more than the width says).
        let rows: usize = text.iter().map(|l| l.width().div_ceil(inner).max(1)).sum::<usize>() + 1;
        let r = centered(area, width, (rows as u16 + 2).max(5));
        f.render_widget(Clear, r);
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(dialog("Confirm", theme)), r);
    }
}

/// `stop` → `Stop`.
fn capital(word: &str) -> String {
    let mut c = word.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}
