//! The login form (auth URL, user, password hidden, project, domain), and the cloud picker.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Wrap};
use tui_textarea::TextArea;

use crate::component::{Component, Outcome, centered, dialog, field, focused, text_of};
use crate::config::Profile;
use crate::theme::Theme;

const LABELS: [&str; 5] = ["Auth URL", "User", "Password", "Project", "Domain"];

pub struct LoginForm {
    fields: Vec<TextArea<'static>>,
    focus: usize,
    /// The cloud name this form logs in to (kept for the state file).
    name: String,
    pub error: Option<String>,
    pub busy: bool,
    /// Why the form is shown (start, or "session expired" over the running app).
    pub reason: Option<String>,
}

impl LoginForm {
    pub fn new(p: &Profile) -> LoginForm {
        let domain = if p.user_domain.is_empty() { "Default" } else { p.user_domain.as_str() };
        let mut fields = vec![
            field(&p.auth_url, "https://cloud.example.com:5000/v3"),
            field(&p.username, "user name"),
            field(p.password.as_deref().unwrap_or_default(), "password"),
            field(&p.project_name, "project name"),
            field(domain, "Default"),
        ];
        fields[2].set_mask_char('•');
        // Start where the user has something to type.
        let focus = fields.iter().position(|f| text_of(f).is_empty()).unwrap_or(2);
        LoginForm {
            fields,
            focus,
            name: if p.name.is_empty() { "form".into() } else { p.name.clone() },
            error: None,
            busy: false,
            reason: None,
        }
    }

    /// The profile as typed; `Err` explains what is missing.
    pub fn profile(&self) -> Result<Profile, String> {
        let v: Vec<String> = self.fields.iter().map(text_of).collect();
        for (i, label) in LABELS.iter().enumerate().take(4) {
            if v[i].is_empty() {
                return Err(format!("{label} is required"));
            }
        }
        if !(v[0].starts_with("http://") || v[0].starts_with("https://")) {
            return Err("Auth URL must start with http:// or https://".into());
        }
        let domain = if v[4].is_empty() { "Default".to_string() } else { v[4].clone() };
        Ok(Profile {
            name: self.name.clone(),
            auth_url: v[0].clone(),
            username: v[1].clone(),
            password: Some(self.fields[2].lines().join("")),
            project_name: v[3].clone(),
            user_domain: domain.clone(),
            project_domain: domain,
            region: None,
            // The form logs in with a password.
            ..Profile::default()
        })
    }
}

impl Component for LoginForm {
    fn handle_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Esc => return Outcome::Cancel,
            KeyCode::Tab | KeyCode::Down => self.focus = (self.focus + 1) % self.fields.len(),
            KeyCode::BackTab | KeyCode::Up => self.focus = (self.focus + self.fields.len() - 1) % self.fields.len(),
            KeyCode::Enter => match self.profile() {
                Ok(_) => return Outcome::Submit,
                Err(e) => {
                    self.error = Some(e);
                    // Enter on an earlier field moves on, like a form.
                    if self.focus + 1 < self.fields.len() {
                        self.focus += 1;
                    }
                }
            },
            KeyCode::Char('m') if key.modifiers.contains(KeyModifiers::CONTROL) => return Outcome::Consumed,
            _ => {
                self.fields[self.focus].input(key);
                self.error = None;
            }
        }
        Outcome::Consumed
    }

    fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let r = centered(area, 70, 17);
        f.render_widget(ratatui::widgets::Clear, r);
        let block = dialog("Log in (Keystone v3)", theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let mut rows = vec![Constraint::Length(1)];
        rows.extend(std::iter::repeat_n(Constraint::Length(2), LABELS.len()));
        rows.push(Constraint::Min(1));
        let areas = Layout::vertical(rows).split(inner);
        let head = self.reason.clone().unwrap_or_else(|| "Tab: next field · Enter: log in · Esc: quit".into());
        f.render_widget(Paragraph::new(Span::styled(head, theme.muted())), areas[0]);
        for (i, label) in LABELS.iter().enumerate() {
            let [l, v] = Layout::horizontal([Constraint::Length(11), Constraint::Min(1)]).areas(areas[i + 1]);
            let style = if i == self.focus { theme.accent() } else { theme.muted() };
            f.render_widget(Paragraph::new(Span::styled(format!("{label:>9}: "), style)), l);
            f.render_widget(&focused(&self.fields[i], i == self.focus, theme), Rect { height: 1, ..v });
        }
        let msg = if self.busy {
            Line::from(Span::styled("logging in…", theme.accent()))
        } else if let Some(e) = &self.error {
            Line::from(Span::styled(e.clone(), theme.error()))
        } else {
            Line::from(Span::styled("The password is only kept in memory.", theme.muted()))
        };
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), areas[LABELS.len() + 1]);
    }
}

/// Chooses one of several clouds from clouds.yaml.
pub struct Picker {
    pub clouds: Vec<Profile>,
    pub state: ListState,
}

impl Picker {
    pub fn new(clouds: Vec<Profile>) -> Picker {
        Picker { clouds, state: ListState::default().with_selected(Some(0)) }
    }
    /// The chosen cloud, or `None` for "another cloud…" (the empty form).
    pub fn chosen(&self) -> Option<Profile> {
        self.state.selected().and_then(|i| self.clouds.get(i)).cloned()
    }
}

impl Component for Picker {
    fn handle_key(&mut self, key: KeyEvent) -> Outcome {
        let n = self.clouds.len() + 1;
        let i = self.state.selected().unwrap_or(0);
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.state.select(Some((i + n - 1) % n)),
            KeyCode::Down | KeyCode::Char('j') => self.state.select(Some((i + 1) % n)),
            KeyCode::Enter => return Outcome::Submit,
            KeyCode::Esc | KeyCode::Char('q') => return Outcome::Cancel,
            _ => return Outcome::Ignored,
        }
        Outcome::Consumed
    }

    fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let h = (self.clouds.len() as u16 + 5).min(area.height);
        let r = centered(area, 64, h);
        f.render_widget(ratatui::widgets::Clear, r);
        let block = dialog("Choose a cloud (clouds.yaml)", theme);
        let mut items: Vec<ListItem> = self
            .clouds
            .iter()
            .map(|c| {
                ListItem::new(Line::from(vec![
                    Span::styled(format!("{:<16}", c.name), theme.accent()),
                    Span::raw(format!(" {}@{} ", c.username, c.project_name)),
                    Span::styled(c.auth_url.clone(), theme.muted()),
                ]))
            })
            .collect();
        items.push(ListItem::new(Span::styled("another cloud… (login form)", theme.muted())));
        let list = List::new(items).block(block).highlight_style(theme.selected()).highlight_symbol("› ");
        f.render_stateful_widget(list, r, &mut self.state.clone());
    }
}
