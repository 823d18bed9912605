//! The create-key-pair form (`c` in the key pairs view): a name, generate or import, and the
//! public key file to import. The worker does the creating (`keys::create`).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use tui_textarea::TextArea;

use super::Effect;
use crate::component::{centered, dialog, field, focused, text_of};
use crate::keys::KeySource;
use crate::theme::Theme;

pub struct KeyForm {
    pub name: TextArea<'static>,
    pub generate: bool,
    pub file: TextArea<'static>,
    /// 0 name, 1 method, 2 file.
    focus: usize,
    pub error: Option<String>,
    /// Sent; waiting for the cloud (the form stays open until it answers).
    pub busy: bool,
}

impl Default for KeyForm {
    fn default() -> Self {
        KeyForm {
            name: field("", "key pair name"),
            generate: true,
            file: field("~/.ssh/id_ed25519.pub", "public key file"),
            focus: 0,
            error: None,
            busy: false,
        }
    }
}

impl KeyForm {
    /// What to send, or the problem with what was typed.
    pub fn request(&self) -> Result<(String, KeySource), String> {
        let name = text_of(&self.name);
        if name.is_empty() {
            return Err("a key pair needs a name".into());
        }
        if name.len() > 255 || name.chars().any(|c| c.is_control()) {
            return Err("a key pair name is at most 255 printable characters".into());
        }
        if self.generate {
            return Ok((name, KeySource::Generate));
        }
        let file = text_of(&self.file);
        if file.is_empty() {
            return Err("name the public key file to import".into());
        }
        Ok((name, KeySource::ImportFile(file)))
    }

    fn fields(&self) -> usize {
        if self.generate { 2 } else { 3 }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        if self.busy {
            return if key.code == KeyCode::Esc { Effect::Close } else { Effect::None };
        }
        match key.code {
            KeyCode::Esc => return Effect::Close,
            KeyCode::Enter => {
                return match self.request() {
                    Ok((name, source)) => {
                        self.busy = true;
                        self.error = None;
                        Effect::CreateKeypair { name, source }
                    }
                    Err(e) => {
                        self.error = Some(e);
                        Effect::None
                    }
                };
            }
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % self.fields(),
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + self.fields() - 1) % self.fields(),
            KeyCode::Char(' ') | KeyCode::Left | KeyCode::Right if self.focus == 1 => self.generate = !self.generate,
            _ if self.focus == 0 && !key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.name.input(key);
            }
            _ if self.focus == 2 => {
                self.file.input(key);
            }
            _ => {}
        }
        self.error = None;
        Effect::None
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let r = centered(area, 64, 11);
        f.render_widget(Clear, r);
        let block = dialog("Create key pair", theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let rows = Layout::vertical([Constraint::Length(1); 8]).split(inner);
        let label =
            |t: &str, on: bool| Span::styled(format!("{t:<9}"), if on { theme.accent() } else { theme.muted() });
        let [l0, v0] = Layout::horizontal([Constraint::Length(9), Constraint::Min(1)]).areas(rows[0]);
        f.render_widget(Paragraph::new(label("Name", self.focus == 0)), l0);
        f.render_widget(&focused(&self.name, self.focus == 0, theme), v0);
        let radio = |on: bool, t: &str| format!("({}) {t}", if on { "•" } else { " " });
        let method = Line::from(vec![
            label("Method", self.focus == 1),
            Span::styled(
                format!("{}   {}", radio(self.generate, "generate"), radio(!self.generate, "import public key")),
                if self.focus == 1 { theme.selected() } else { theme.base() },
            ),
        ]);
        f.render_widget(Paragraph::new(method), rows[2]);
        if !self.generate {
            let [l2, v2] = Layout::horizontal([Constraint::Length(9), Constraint::Min(1)]).areas(rows[4]);
            f.render_widget(Paragraph::new(label("File", self.focus == 2)), l2);
            f.render_widget(&focused(&self.file, self.focus == 2, theme), v2);
        } else {
            f.render_widget(
                Paragraph::new(Span::styled("the private key is saved on this machine and shown once", theme.muted())),
                rows[4],
            );
        }
        let foot = match (&self.error, self.busy) {
            (Some(e), _) => Span::styled(e.clone(), theme.error()),
            (None, true) => Span::styled("creating…", theme.muted()),
            (None, false) => {
                Span::styled("<tab>next field <space>switch method <enter>create <esc>cancel", theme.muted())
            }
        };
        f.render_widget(Paragraph::new(foot).wrap(Wrap { trim: true }), Rect { height: 2, ..rows[6] });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(form: &mut KeyForm, code: KeyCode) -> Effect {
        form.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn the_form_says_what_is_missing_and_sends_once() {
        let mut form = KeyForm::default();
        assert_eq!(press(&mut form, KeyCode::Enter), Effect::None);
        assert_eq!(form.error.as_deref(), Some("a key pair needs a name"));
        for c in "k1".chars() {
            press(&mut form, KeyCode::Char(c));
        }
        assert_eq!(form.request(), Ok(("k1".into(), KeySource::Generate)));
        press(&mut form, KeyCode::Tab);
        press(&mut form, KeyCode::Char(' '));
        assert_eq!(form.request(), Ok(("k1".into(), KeySource::ImportFile("~/.ssh/id_ed25519.pub".into()))));
        assert_eq!(
            press(&mut form, KeyCode::Enter),
            Effect::CreateKeypair { name: "k1".into(), source: KeySource::ImportFile("~/.ssh/id_ed25519.pub".into()) }
        );
        // Busy until the cloud answers: a second Enter sends nothing, Esc still closes.
        assert!(form.busy);
        assert_eq!(press(&mut form, KeyCode::Enter), Effect::None);
        assert_eq!(press(&mut form, KeyCode::Esc), Effect::Close);
    }
}
