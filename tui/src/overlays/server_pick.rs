//! The dialogs of the instance lifecycle actions that need a choice: rebuild (an image and an
//! optional new name), rescue (a rescue image, the instance's own by default), resize (a
//! flavor, the current one marked), migrate and evacuate (a target host or the scheduler's
//! choice), reset state (active or error) and the confirm/revert prompt of a resize waiting in
//! VERIFY_RESIZE. One list of choices; Enter does it to every target (the selected instance or
//! the marked ones), Esc cancels. The dialog is the confirmation.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use tui_textarea::TextArea;

use super::Effect;
use crate::component::{centered, dialog, field, focused, text_of};
use crate::theme::Theme;
use crate::worker::{ServerCall, ServerOp};

/// Nova's limit on a server name.
const MAX_NAME: usize = 255;

/// Which dialog this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Rebuild,
    Rescue,
    Resize,
    Migrate,
    Evacuate,
    ResetState,
    /// A resize (or cold migration) waits in VERIFY_RESIZE: keep it or go back.
    VerifyResize,
    /// Live migration (the guest keeps running): which host.
    LiveMigrate,
    /// A live migration is in progress: force it to complete or abort it.
    LiveControl,
}

impl Pick {
    fn verb(self) -> &'static str {
        match self {
            Pick::Rebuild => "rebuild",
            Pick::Rescue => "rescue",
            Pick::Resize => "resize",
            Pick::Migrate => "migrate",
            Pick::Evacuate => "evacuate",
            Pick::ResetState => "reset the state of",
            Pick::VerifyResize => "finish the resize of",
            Pick::LiveMigrate => "live-migrate",
            Pick::LiveControl => "finish the live migration of",
        }
    }
}

/// One line of the list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choice {
    pub label: String,
    /// Shown after the label, muted (a flavor's size, a host's state).
    pub detail: String,
    /// What choosing it sends (an image, flavor or host ID/name); `None`: the default.
    pub value: Option<String>,
    /// Why it cannot be chosen (the current flavor), shown when Enter is pressed on it.
    pub refused: Option<String>,
}

impl Choice {
    pub fn new(label: impl Into<String>, detail: impl Into<String>, value: Option<String>) -> Choice {
        Choice { label: label.into(), detail: detail.into(), value, refused: None }
    }
}

/// What to do to one instance, as chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerDo {
    Call(ServerCall),
    Op(ServerOp),
}

pub struct ServerPick {
    pub what: Pick,
    /// (id, name) of each instance it applies to.
    targets: Vec<(String, String)>,
    choices: Vec<Choice>,
    selected: usize,
    /// Rebuild of one instance: the optional new name.
    name: Option<TextArea<'static>>,
    name_focused: bool,
    /// A sentence under the list: why Enter did nothing, what this cloud cannot do, or the
    /// cloud's refusal of what was sent.
    pub notice: Option<String>,
    /// Sent for one instance, waiting for the answer: a refusal comes back into the dialog (in
    /// full, wrapped) instead of the status line, where a long fault would be cut.
    pub busy: bool,
}

impl ServerPick {
    /// `selected`: the choice highlighted first (the current image, the own-image default).
    pub fn new(what: Pick, targets: Vec<(String, String)>, choices: Vec<Choice>, selected: usize) -> ServerPick {
        let name = (what == Pick::Rebuild && targets.len() == 1).then(|| field("", "keep the name"));
        let selected = selected.min(choices.len().saturating_sub(1));
        ServerPick { what, targets, choices, selected, name, name_focused: false, notice: None, busy: false }
    }

    /// Reset state: the two states Nova takes.
    pub fn reset_state(targets: Vec<(String, String)>) -> ServerPick {
        let choices = vec![
            Choice::new("active", "what it is, once fixed by hand", Some("active".into())),
            Choice::new("error", "mark it broken (delete, rebuild or evacuate follow)", Some("error".into())),
        ];
        ServerPick::new(Pick::ResetState, targets, choices, 0)
    }

    /// The prompt of a resize waiting for an answer.
    pub fn verify_resize(targets: Vec<(String, String)>, flavor: &str) -> ServerPick {
        let now = if flavor.is_empty() { String::new() } else { format!("keep {flavor}") };
        let choices = vec![
            Choice::new("confirm", if now.is_empty() { "keep the new flavor/host".into() } else { now }, None),
            Choice::new("revert", "back to the old flavor on the old host", None),
        ];
        ServerPick::new(Pick::VerifyResize, targets, choices, 0)
    }

    /// The prompt of a live migration in progress.
    pub fn live_control(targets: Vec<(String, String)>) -> ServerPick {
        let choices = vec![
            Choice::new("force complete", "pause the guest so the copy converges", None),
            Choice::new("abort", "cancel it: the guest stays where it is", None),
        ];
        ServerPick::new(Pick::LiveControl, targets, choices, 0)
    }

    pub fn targets(&self) -> &[(String, String)] {
        &self.targets
    }

    /// New choices (the list they come from was read again); the selection stays on the same
    /// value when it is still there, else goes to `default`.
    pub fn set_choices(&mut self, choices: Vec<Choice>, default: usize) {
        let was = self.choices.get(self.selected).map(|c| c.value.clone());
        let keep = if self.choices.is_empty() { None } else { was };
        self.selected = keep
            .and_then(|v| choices.iter().position(|c| c.value == v))
            .unwrap_or(default)
            .min(choices.len().saturating_sub(1));
        self.choices = choices;
    }

    fn done(&self, choice: usize) -> Effect {
        let Some(c) = self.choices.get(choice) else { return Effect::None };
        let value = c.value.clone();
        let todo = match self.what {
            Pick::Rebuild => {
                let Some(image_id) = value else { return Effect::None };
                let name = self.name.as_ref().map(text_of).filter(|n| !n.is_empty());
                ServerDo::Call(ServerCall::Rebuild { image_id, name })
            }
            Pick::Rescue => ServerDo::Call(ServerCall::Rescue { image_id: value }),
            Pick::Resize => {
                let Some(flavor_id) = value else { return Effect::None };
                ServerDo::Call(ServerCall::Resize { flavor_id })
            }
            Pick::Migrate => ServerDo::Call(ServerCall::Migrate { host: value }),
            Pick::Evacuate => ServerDo::Call(ServerCall::Evacuate { host: value }),
            Pick::LiveMigrate => ServerDo::Call(ServerCall::LiveMigrate { host: value }),
            Pick::LiveControl => ServerDo::Call(ServerCall::LiveMigrationControl { abort: choice == 1 }),
            Pick::ResetState => ServerDo::Call(ServerCall::ResetState { error: value.as_deref() == Some("error") }),
            Pick::VerifyResize if choice == 0 => ServerDo::Op(ServerOp::ConfirmResize),
            Pick::VerifyResize => ServerDo::Op(ServerOp::RevertResize),
        };
        Effect::ServerDo { targets: self.targets.clone(), todo }
    }

    /// Whether the dialog waits for the cloud's answer about instance `id`.
    pub fn waits_for(&self, id: &str) -> bool {
        self.busy && matches!(self.targets.as_slice(), [(only, _)] if only == id)
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Effect {
        if self.busy {
            // Esc leaves the answer to the status line; nothing else while it is on its way.
            return if key.code == KeyCode::Esc { Effect::Close } else { Effect::None };
        }
        if self.name_focused
            && let Some(name) = &mut self.name
        {
            match key.code {
                KeyCode::Esc => return Effect::Close,
                KeyCode::Tab | KeyCode::BackTab | KeyCode::Up | KeyCode::Down => self.name_focused = false,
                KeyCode::Enter => {}
                _ => {
                    name.input(key);
                    return Effect::None;
                }
            }
            if key.code != KeyCode::Enter {
                return Effect::None;
            }
        }
        let last = self.choices.len().saturating_sub(1);
        match key.code {
            KeyCode::Esc => return Effect::Close,
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(last),
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(10),
            KeyCode::PageDown => self.selected = (self.selected + 10).min(last),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = last,
            KeyCode::Tab | KeyCode::BackTab if self.name.is_some() => self.name_focused = true,
            // The prompt's own letters.
            KeyCode::Char('c') if self.what == Pick::VerifyResize => return self.done(0),
            KeyCode::Char('r') if self.what == Pick::VerifyResize => return self.done(1),
            KeyCode::Enter => {
                if let Some(why) = self.choices.get(self.selected).and_then(|c| c.refused.clone()) {
                    self.notice = Some(why);
                    return Effect::None;
                }
                if self.name.as_ref().is_some_and(|n| text_of(n).chars().count() > MAX_NAME) {
                    self.notice = Some(format!("a name has at most {MAX_NAME} characters"));
                    return Effect::None;
                }
                return self.done(self.selected);
            }
            _ => {}
        }
        self.notice = None;
        Effect::None
    }

    fn question(&self) -> String {
        let many = self.targets.len() > 1;
        match self.what {
            Pick::Rebuild if many => "Rebuild each from which image? Disks are replaced; ports and addresses kept.",
            Pick::Rebuild => "Rebuild from which image? The disk is replaced; ports and addresses are kept.",
            Pick::Rescue => "Boot a rescue system from which image? The root disk is attached as a second disk.",
            Pick::Resize => "Resize to which flavor? It then waits in VERIFY_RESIZE for confirm or revert.",
            Pick::Migrate => "Cold-migrate to which host? It then waits in VERIFY_RESIZE for confirm.",
            Pick::Evacuate => "Its host is down: rebuild it on which host? Only for a host that is down.",
            Pick::ResetState => "Set the state Nova records (nothing changes on the host):",
            Pick::VerifyResize => "The resize is done and waits for you: keep it or go back?",
            Pick::LiveMigrate => "Live-migrate to which host? It keeps running; its disks are copied along.",
            Pick::LiveControl => "A live migration is in progress: finish it now or abort it?",
        }
        .into()
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let list_rows = self.choices.len().clamp(1, 10) as u16;
        let name_rows = if self.name.is_some() { 2 } else { 0 };
        let r = centered(area, 76, list_rows + name_rows + 8);
        f.render_widget(Clear, r);
        let title = match self.targets.as_slice() {
            [(id, name)] => format!("{} {}", self.what.verb(), if name.is_empty() { id } else { name }),
            many => format!("{} {} instances", self.what.verb(), many.len()),
        };
        let block = dialog(&title, theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let [q, list, name_area, notice, keys] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Length(list_rows),
            Constraint::Length(name_rows),
            Constraint::Length(3),
            Constraint::Length(1),
        ])
        .areas(inner);
        f.render_widget(Paragraph::new(Span::styled(self.question(), theme.muted())).wrap(Wrap { trim: true }), q);
        // A window of the list that keeps the selection in sight.
        let start = self.selected.saturating_sub(list_rows as usize - 1);
        let width = self.choices.iter().map(|c| c.label.chars().count()).max().unwrap_or(0).min(32);
        let lines: Vec<Line> = self
            .choices
            .iter()
            .enumerate()
            .skip(start)
            .take(list_rows as usize)
            .map(|(i, c)| {
                let chosen = i == self.selected;
                // The choice stays marked while the name is being typed.
                let style = if chosen && !self.name_focused { theme.selected() } else { theme.base() };
                Line::from(vec![
                    Span::styled(format!("{} {:<width$} ", if chosen { "›" } else { " " }, c.label), style),
                    Span::styled(c.detail.clone(), theme.muted()),
                ])
            })
            .collect();
        f.render_widget(Paragraph::new(lines), list);
        if let Some(name) = &self.name {
            let [label, input] = Layout::vertical([Constraint::Length(1); 2]).areas(name_area);
            f.render_widget(Paragraph::new(Span::styled("New name (optional):", theme.muted())), label);
            f.render_widget(&focused(name, self.name_focused, theme), input);
        }
        if let Some(n) = &self.notice {
            f.render_widget(Paragraph::new(Span::styled(n.clone(), theme.error())).wrap(Wrap { trim: true }), notice);
        }
        let verb = match self.what {
            _ if self.busy => "sending… <esc>close (the answer then shows in the status line)".to_string(),
            Pick::VerifyResize => "<c>confirm <r>revert <enter>chosen <esc>later".to_string(),
            Pick::ResetState => "<↑↓>choose <enter>set <esc>cancel".to_string(),
            _ if self.name.is_some() => format!("<↑↓>choose <tab>name <enter>{} <esc>cancel", self.what.verb()),
            _ => format!("<↑↓>choose <enter>{} <esc>cancel", self.what.verb()),
        };
        f.render_widget(Paragraph::new(Span::styled(verb, theme.muted())), keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;

    fn press(p: &mut ServerPick, code: KeyCode) -> Effect {
        p.handle_key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn one() -> Vec<(String, String)> {
        vec![("id-1".into(), "web".into())]
    }

    #[test]
    fn rebuild_sends_the_chosen_image_and_the_typed_name() {
        let images = vec![Choice::new("a", "", Some("img-a".into())), Choice::new("b", "", Some("img-b".into()))];
        let mut p = ServerPick::new(Pick::Rebuild, one(), images.clone(), 0);
        press(&mut p, KeyCode::Down);
        press(&mut p, KeyCode::Tab);
        for c in "web2".chars() {
            press(&mut p, KeyCode::Char(c));
        }
        let want = ServerDo::Call(ServerCall::Rebuild { image_id: "img-b".into(), name: Some("web2".into()) });
        assert_eq!(press(&mut p, KeyCode::Enter), Effect::ServerDo { targets: one(), todo: want });
        // Without a name the name is kept; several targets get no name field.
        let two = vec![("a".into(), "x".into()), ("b".into(), "y".into())];
        let mut p = ServerPick::new(Pick::Rebuild, two.clone(), images, 0);
        press(&mut p, KeyCode::Tab); // no name field: the list keeps the keys
        press(&mut p, KeyCode::Char('j'));
        let want = ServerDo::Call(ServerCall::Rebuild { image_id: "img-b".into(), name: None });
        assert_eq!(press(&mut p, KeyCode::Enter), Effect::ServerDo { targets: two, todo: want });
    }

    #[test]
    fn the_current_flavor_is_refused_in_words_and_esc_cancels() {
        let mut current = Choice::new("m1.nano", "(current)", Some("1".into()));
        current.refused = Some("web has this flavor already".into());
        let mut p =
            ServerPick::new(Pick::Resize, one(), vec![current, Choice::new("m1.micro", "", Some("2".into()))], 0);
        assert_eq!(press(&mut p, KeyCode::Enter), Effect::None);
        assert_eq!(p.notice.as_deref(), Some("web has this flavor already"));
        press(&mut p, KeyCode::Down);
        let want = ServerDo::Call(ServerCall::Resize { flavor_id: "2".into() });
        assert_eq!(press(&mut p, KeyCode::Enter), Effect::ServerDo { targets: one(), todo: want });
        assert_eq!(press(&mut p, KeyCode::Esc), Effect::Close);
    }

    #[test]
    fn the_verify_prompt_confirms_or_reverts() {
        let mut p = ServerPick::verify_resize(one(), "m1.micro");
        let confirm = Effect::ServerDo { targets: one(), todo: ServerDo::Op(ServerOp::ConfirmResize) };
        assert_eq!(press(&mut p, KeyCode::Char('c')), confirm);
        assert_eq!(press(&mut p, KeyCode::Enter), confirm);
        let revert = Effect::ServerDo { targets: one(), todo: ServerDo::Op(ServerOp::RevertResize) };
        assert_eq!(press(&mut p, KeyCode::Char('r')), revert);
        press(&mut p, KeyCode::Down);
        assert_eq!(press(&mut p, KeyCode::Enter), revert);
    }

    #[test]
    fn reset_state_and_hosts_send_their_values() {
        let mut p = ServerPick::reset_state(one());
        press(&mut p, KeyCode::Down);
        let want = ServerDo::Call(ServerCall::ResetState { error: true });
        assert_eq!(press(&mut p, KeyCode::Enter), Effect::ServerDo { targets: one(), todo: want });
        let hosts = vec![Choice::new("any host", "", None), Choice::new("c2", "up", Some("c2".into()))];
        let mut p = ServerPick::new(Pick::Migrate, one(), hosts.clone(), 0);
        let want = ServerDo::Call(ServerCall::Migrate { host: None });
        assert_eq!(press(&mut p, KeyCode::Enter), Effect::ServerDo { targets: one(), todo: want });
        let mut p = ServerPick::new(Pick::Evacuate, one(), hosts, 1);
        let want = ServerDo::Call(ServerCall::Evacuate { host: Some("c2".into()) });
        assert_eq!(press(&mut p, KeyCode::Enter), Effect::ServerDo { targets: one(), todo: want });
    }
}
