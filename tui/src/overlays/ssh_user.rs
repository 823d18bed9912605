//! `x` on an instance whose image names no login user: asks for one, then ssh runs.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Clear, Paragraph};
use tui_textarea::TextArea;

use super::Effect;
use crate::component::{centered, dialog, field, focused, text_of};
use crate::ssh::SshCall;
use crate::theme::Theme;

pub struct SshUser {
    input: TextArea<'static>,
    call: Box<SshCall>,
}

impl SshUser {
    pub fn new(call: SshCall) -> SshUser {
        SshUser { input: field("", "login user"), call: Box::new(call) }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        match key.code {
            KeyCode::Esc => Effect::Close,
            KeyCode::Enter => {
                let user = text_of(&self.input);
                // Not a user ssh could take as one word (and `@` would change the host).
                if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c == '@') {
                    return Effect::None;
                }
                let mut call = (*self.call).clone();
                call.user = user;
                Effect::Ssh(Box::new(call))
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
        let title = format!("ssh to {}", self.call.server_name);
        let block = dialog(&title, theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let rows = Layout::vertical([Constraint::Length(1); 4]).split(inner);
        f.render_widget(
            Paragraph::new(Span::styled(
                format!("The image does not name its login user. User at {}:", self.call.address),
                theme.muted(),
            )),
            rows[0],
        );
        f.render_widget(&focused(&self.input, true, theme), rows[1]);
        f.render_widget(Paragraph::new(Span::styled("<enter>connect <esc>cancel", theme.muted())), rows[3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;

    #[test]
    fn a_user_ssh_can_take_runs_ssh_with_it() {
        let call = SshCall {
            server_name: "db".into(),
            user: String::new(),
            address: "10.0.0.3".into(),
            cloud: "dev".into(),
            keypair: None,
            key: None,
        };
        let mut prompt = SshUser::new(call);
        let press = |p: &mut SshUser, code| p.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
        assert_eq!(press(&mut prompt, KeyCode::Enter), Effect::None, "no user yet");
        for c in "a b".chars() {
            press(&mut prompt, KeyCode::Char(c));
        }
        assert_eq!(press(&mut prompt, KeyCode::Enter), Effect::None, "a space is not a user");
        press(&mut prompt, KeyCode::Backspace);
        press(&mut prompt, KeyCode::Backspace);
        match press(&mut prompt, KeyCode::Enter) {
            Effect::Ssh(call) => assert_eq!((call.user.as_str(), call.address.as_str()), ("a", "10.0.0.3")),
            other => panic!("{other:?}"),
        }
    }
}
