//! The app's side of reaching a guest and keeping what it gives: the console pane (`a`), ssh
//! (`x`), generated key pairs (`c` in the key pairs view) and OSC 52 copy (`y`). The pieces
//! themselves live in `console_pane`, `ssh`, `keys` and `clipboard`; this is the glue to the
//! app's state, kept in one child module so the hooks in `app.rs` stay one line each.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::{App, Overlay, Tab, View, flatten};
use crate::clipboard;
use crate::component::{Component, Outcome, centered, dialog, field, text_of};
use crate::console_pane::{self, ConsolePane, PaneKey, PaneState};
use crate::keys;
use crate::ssh::{self, SshCall};
use crate::theme::Theme;
use crate::worker::{Kind, Request, Response};

impl App {
    // ------------------------------------------------------------ console pane

    /// `a`: attach to the target instance's serial console.
    pub(super) fn attach(&mut self) {
        let Some((id, name)) = self.target_server() else {
            self.error = Some(("select an instance first".into(), None));
            return;
        };
        let status = self.servers.get(&id).map(|s| s.status.clone()).unwrap_or_default();
        let name = if name.is_empty() { id.clone() } else { name };
        self.open_console(id, name, status);
    }

    fn open_console(&mut self, id: String, name: String, status: String) {
        if let Some(old) = &mut self.console {
            old.detach();
        }
        self.console_sessions += 1;
        self.console = Some(ConsolePane::new(id.clone(), name, status, self.console_sessions));
        self.send(Request::SerialConsole { id });
    }

    /// Keys while the console pane is open (and no overlay is): all go to the guest but Ctrl-].
    pub(super) fn console_key(&mut self, key: KeyEvent) {
        let Some(pane) = &mut self.console else { return };
        if pane.connected() {
            if pane.handle_key(key) == PaneKey::Detach {
                let name = pane.server_name.clone();
                self.console = None;
                self.info = Some(format!("detached from {name}'s console"));
            }
            return;
        }
        // Not (or no longer) connected: the pane's own keys.
        match key.code {
            KeyCode::Esc => self.console = None,
            _ if console_pane::is_detach(&key) => self.console = None,
            KeyCode::Char('a') if matches!(pane.state, PaneState::Closed(_)) => {
                let (id, name) = (pane.server_id.clone(), pane.server_name.clone());
                let status = self.servers.get(&id).map(|s| s.status.clone()).unwrap_or_else(|| pane.status.clone());
                self.open_console(id, name, status);
            }
            KeyCode::Char('y') => {
                if let Some(url) = pane.url.clone() {
                    self.copy("console URL", url);
                }
            }
            KeyCode::PageUp | KeyCode::PageDown if key.modifiers.contains(KeyModifiers::SHIFT) => {
                pane.handle_key(key);
            }
            _ => {}
        }
    }

    /// Text pasted into the terminal (bracketed paste): to the guest when the console is
    /// attached, else typed into whatever has the keys.
    pub fn on_paste(&mut self, text: &str) {
        if self.overlay.is_none()
            && let Some(pane) = &mut self.console
            && pane.connected()
        {
            pane.paste(text);
            return;
        }
        for c in text.chars() {
            let code = if c == '\n' || c == '\r' { KeyCode::Enter } else { KeyCode::Char(c) };
            self.on_key(KeyEvent::new(code, KeyModifiers::NONE));
        }
    }

    /// Responses for this module; `Some` hands back what is not.
    pub(super) fn reach_response(&mut self, r: Response) -> Option<Response> {
        match r {
            Response::ConsoleUrl { id, result } => {
                self.pending.remove(&super::Pending::Attach);
                if let Some(pane) = &mut self.console
                    && pane.server_id == id
                    && pane.state == PaneState::Requesting
                {
                    let ok = result.is_ok();
                    pane.on_url(result);
                    if ok && let Some(url) = pane.url.clone() {
                        let session = pane.session;
                        self.send(Request::ConsoleConnect { url, session });
                    }
                }
                None
            }
            Response::ConsoleEvent(ev) => {
                if matches!(ev, console_pane::ConsoleEvent::Opened { .. } | console_pane::ConsoleEvent::Closed { .. }) {
                    self.pending.remove(&super::Pending::Attach);
                }
                if let Some(pane) = &mut self.console {
                    pane.on_event(ev);
                }
                None
            }
            Response::KeypairCreated(c) => {
                self.pending.remove(&super::Pending::Import);
                self.send(Request::List(Kind::Keypairs));
                self.info = Some(format!("created key pair {}", c.name));
                self.overlay = Some(Overlay::KeyCreated(Box::new(c)));
                None
            }
            other => Some(other),
        }
    }

    /// A failed request of this module: in place, in the form that sent it.
    pub(super) fn reach_failed(&mut self, request: &Request, message: &str) {
        if let (Request::CreateKeypair { .. }, Some(Overlay::KeyForm(form))) = (request, &mut self.overlay) {
            form.busy = false;
            form.error = Some(message.to_string());
        }
    }

    pub(super) fn draw_console(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        if let Some(pane) = &mut self.console {
            pane.draw(f, area, theme);
        }
    }

    pub(super) fn draw_console_hints(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let connected = self.console.as_ref().is_some_and(ConsolePane::connected);
        let hints: &[(&str, &str)] = if connected {
            &[("ctrl-]", "detach"), ("shift-pgup", "scroll back"), ("shift-pgdown", "scroll on")]
        } else {
            &[("esc", "close"), ("a", "attach again"), ("y", "copy URL")]
        };
        let mut spans = Vec::new();
        for (k, label) in hints {
            spans.push(Span::styled(format!("<{k}>"), theme.accent()));
            spans.push(Span::styled(format!("{label} "), theme.muted()));
        }
        if connected {
            spans.push(Span::styled("every other key goes to the guest", theme.muted()));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    // ------------------------------------------------------------ ssh

    /// `x`: ssh to the target instance. The user comes from the image, else a prompt asks.
    pub(super) fn ssh_to(&mut self) {
        let Some((id, name)) = self.target_server() else {
            self.error = Some(("select an instance first".into(), None));
            return;
        };
        let Some(server) = self.servers.get(&id).cloned() else { return };
        let name = if name.is_empty() { id.clone() } else { name };
        let Some(address) = ssh::address(&server.raw) else {
            self.error = Some((format!("{name} has no address to ssh to"), None));
            return;
        };
        let user = server.image.0.as_deref().and_then(|i| self.images.get(i)).and_then(|i| ssh::login_user(&i.raw));
        let call = SshCall {
            server_name: name,
            user: user.clone().unwrap_or_default(),
            address,
            cloud: self.session.as_ref().map(|s| s.cloud.clone()).unwrap_or_default(),
            keypair: server.key_name.clone().filter(|k| !k.is_empty()),
            key: None,
        };
        if user.is_some() {
            self.ssh = Some(call);
        } else {
            self.overlay = Some(Overlay::SshUser { input: field("", "login user"), call: Box::new(call) });
        }
    }

    /// The ssh run the event loop should start (it hands the terminal over).
    pub fn take_ssh(&mut self) -> Option<SshCall> {
        self.ssh.take()
    }

    /// What ssh ended with (`Ok(code)`; `None` code: killed by a signal).
    pub fn ssh_finished(&mut self, call: &SshCall, result: Result<Option<i32>, String>) {
        match result {
            Ok(Some(0)) => self.info = Some(format!("back from ssh {}@{}", call.user, call.address)),
            Ok(Some(code)) => {
                self.error =
                    Some((format!("ssh to {} exited with status {code} ({})", call.server_name, call.display()), None))
            }
            Ok(None) => self.error = Some((format!("ssh to {} was killed by a signal", call.server_name), None)),
            Err(e) => self.error = Some((format!("cannot run ssh: {e}"), None)),
        }
    }

    pub(super) fn ssh_user_key(&mut self, key: KeyEvent) {
        let Some(Overlay::SshUser { input, call }) = &mut self.overlay else { return };
        match key.code {
            KeyCode::Esc => self.overlay = None,
            KeyCode::Enter => {
                let user = text_of(input);
                if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c == '@') {
                    return;
                }
                let mut call = (**call).clone();
                call.user = user;
                self.overlay = None;
                self.ssh = Some(call);
            }
            _ => {
                input.input(key);
            }
        }
    }

    // ------------------------------------------------------------ key pairs

    /// `c` in the key pairs view.
    pub(super) fn open_key_form(&mut self) {
        self.overlay = Some(Overlay::KeyForm(Box::default()));
    }

    pub(super) fn key_form_key(&mut self, key: KeyEvent) {
        let cloud = self.session.as_ref().map(|s| s.cloud.clone()).unwrap_or_default();
        let Some(Overlay::KeyForm(form)) = &mut self.overlay else { return };
        match form.handle_key(key) {
            Outcome::Cancel => self.overlay = None,
            Outcome::Submit => {
                if let Ok((name, source)) = form.request() {
                    form.busy = true;
                    self.send(Request::CreateKeypair { cloud, name, source });
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ copy

    /// `y`: the console URL in the pane, the field at the top of a scrolled detail (else its
    /// id), or the selected row's id.
    pub(super) fn copy_selected(&mut self) {
        if let Some(url) = self.console.as_ref().and_then(|p| p.url.clone()) {
            self.copy("console URL", url);
            return;
        }
        if let Some(d) = &self.detail {
            let (id, scroll, fields) = (d.id.clone(), d.scroll, d.tab == Tab::Fields && d.raw == super::Raw::Fields);
            if fields && scroll > 0 {
                let raw = match d.view {
                    View::Servers => self.servers.get(&id).map(|s| s.raw.clone()),
                    View::Flavors => self.flavors.get(&id).map(|s| s.raw.clone()),
                    View::Images => self.images.get(&id).map(|s| s.raw.clone()),
                    View::Networks => self.networks.get(&id).map(|s| s.raw.clone()),
                    View::Keypairs => self.keypairs.get(&id).map(|s| s.raw.clone()),
                    View::Hypervisors => self.hypervisors.get(&id).map(|s| s.raw.clone()),
                    View::Services => self.services.get(&id).map(|s| s.raw.clone()),
                    View::Overview => None,
                };
                let mut out = Vec::new();
                flatten("", &raw.unwrap_or_default(), &mut out);
                if let Some((k, v)) = out.into_iter().nth(usize::from(scroll)) {
                    self.copy(&k, v);
                    return;
                }
            }
            self.copy("id", id);
            return;
        }
        match self.selected() {
            Some((id, _, _)) => self.copy("id", id),
            None => self.info = Some("nothing selected to copy".into()),
        }
    }

    fn copy(&mut self, what: &str, text: String) {
        if text.len() > clipboard::MAX_BYTES {
            self.error = Some((format!("{what} is too long for the terminal's clipboard"), None));
            return;
        }
        self.info = Some(clipboard::describe(what, &text));
        self.clipboard = Some(text);
    }

    /// Text the event loop should put on the clipboard (OSC 52) after this frame.
    pub fn take_clipboard(&mut self) -> Option<String> {
        self.clipboard.take()
    }

    // ------------------------------------------------------------ overlays

    pub(super) fn draw_reach_overlay(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        match &mut self.overlay {
            Some(Overlay::KeyForm(form)) => form.draw(f, area, theme),
            Some(Overlay::KeyCreated(c)) => keys::draw_created(f, area, theme, c),
            Some(Overlay::SshUser { input, call }) => {
                let r = centered(area, 60, 6);
                f.render_widget(Clear, r);
                let title = format!("ssh to {}", call.server_name);
                let block = dialog(&title, theme);
                let inner = block.inner(r);
                f.render_widget(block, r);
                let rows = ratatui::layout::Layout::vertical([ratatui::layout::Constraint::Length(1); 4]).split(inner);
                f.render_widget(
                    Paragraph::new(Span::styled(
                        format!("The image does not name its login user. User at {}:", call.address),
                        theme.muted(),
                    )),
                    rows[0],
                );
                f.render_widget(&*input, rows[1]);
                f.render_widget(Paragraph::new(Span::styled("<enter>connect <esc>cancel", theme.muted())), rows[3]);
            }
            _ => {}
        }
    }
}
