//! The app's side of reaching a guest and keeping what it gives: the console pane (`a`), ssh
//! (`x`), generated key pairs (`c` in the key pairs view) and OSC 52 copy (`y`). The pieces are
//! the console view (`views::console`), its wire (`console_pane`), the overlays `key_form`,
//! `key_created` and `ssh_user`, and `ssh`, `keys`, `clipboard`; `app.rs` dispatches to the
//! methods here from its usual places (`reduce`, `key`, `on_action`, `overlay_effect`).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{App, Pending};
use crate::clipboard;
use crate::console_pane::ConsoleEvent;
use crate::keys::Created;
use crate::overlays::{KeyCreated, Overlay, SshUser};
use crate::ssh::{self, SshCall};
use crate::views::View;
use crate::views::console::{ConsoleEffect, ConsolePane, PaneState};
use crate::worker::{Kind, Request};

impl App {
    // ------------------------------------------------------------ console pane

    /// `a`: attach to the target instance's serial console.
    pub(super) fn attach(&mut self) {
        let Some((id, name)) = self.target_server() else {
            self.error = Some(("select an instance first".into(), None));
            return;
        };
        let status = self.tables.servers.get(&id).map(|s| s.status.clone()).unwrap_or_default();
        let name = if name.is_empty() { id.clone() } else { name };
        self.open_console(id, name, status);
    }

    /// `w`: a graphical (noVNC) console URL for the target instance, shown and copied: the
    /// page opens in any browser that can reach the cloud's console proxy.
    pub(super) fn web_console(&mut self) {
        let Some((id, name)) = self.target_server() else {
            self.error = Some(("select an instance first".into(), None));
            return;
        };
        let name = if name.is_empty() { id.clone() } else { name };
        self.send(Request::WebConsole { id, name });
    }

    pub(super) fn web_console_url(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(url) => {
                self.copy("graphical console URL", url.clone());
                // The whole URL (its one-time token included) is what the user needs to open.
                self.info = Some(format!("{name}'s graphical console (copied; single use): {url}"));
            }
            Err(message) => self.error = Some((message, None)),
        }
    }

    fn open_console(&mut self, id: String, name: String, status: String) {
        if let Some(old) = &mut self.console {
            old.detach();
        }
        self.console_sessions += 1;
        self.console = Some(ConsolePane::new(id.clone(), name, status, self.console_sessions));
        self.send(Request::SerialConsole { id });
    }

    /// Carries out what a key in the console pane asked for.
    pub(super) fn console_effect(&mut self, effect: ConsoleEffect) {
        match effect {
            ConsoleEffect::Handled => {}
            ConsoleEffect::Detached => {
                if let Some(pane) = self.console.take() {
                    self.info = Some(format!("detached from {}'s console", pane.server_name));
                }
            }
            ConsoleEffect::Close => self.console = None,
            ConsoleEffect::Reattach => {
                if let Some(pane) = &self.console {
                    let (id, name) = (pane.server_id.clone(), pane.server_name.clone());
                    // The status may have changed since (started after a 409, say).
                    let status =
                        self.tables.servers.get(&id).map(|s| s.status.clone()).unwrap_or_else(|| pane.status.clone());
                    self.open_console(id, name, status);
                }
            }
            ConsoleEffect::CopyUrl(url) => self.copy("console URL", url),
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

    /// The cloud's console URL: the pane that asked for it connects.
    pub(super) fn console_url(&mut self, id: String, result: Result<String, crate::console_pane::UrlError>) {
        self.pending.remove(&Pending::Attach);
        if let Some(pane) = &mut self.console
            && pane.server_id == id
            && pane.state == PaneState::Requesting
        {
            pane.on_url(result);
            if let (PaneState::Connecting, Some(url)) = (&pane.state, pane.url.clone()) {
                let session = pane.session;
                self.send(Request::ConsoleConnect { url, session });
            }
        }
    }

    pub(super) fn console_event(&mut self, ev: ConsoleEvent) {
        if matches!(ev, ConsoleEvent::Opened { .. } | ConsoleEvent::Closed { .. }) {
            self.pending.remove(&Pending::Attach);
        }
        if let Some(pane) = &mut self.console {
            pane.on_event(ev);
        }
    }

    /// The URL request failed outright (not a refusal the pane words itself, say the login
    /// expired and could not be renewed): the pane says so instead of waiting.
    pub(super) fn console_failed(&mut self, id: &str, message: &str) {
        if let Some(pane) = &mut self.console
            && pane.server_id == id
            && pane.state == PaneState::Requesting
        {
            pane.state = PaneState::Closed(message.to_string());
        }
    }

    // ------------------------------------------------------------ ssh

    /// `x`: ssh to the target instance. The user comes from the image, else a prompt asks.
    pub(super) fn ssh_to(&mut self) {
        let Some((id, name)) = self.target_server() else {
            self.error = Some(("select an instance first".into(), None));
            return;
        };
        let Some(server) = self.tables.servers.get(&id).cloned() else { return };
        let name = if name.is_empty() { id.clone() } else { name };
        let Some(address) = ssh::address(&server.raw) else {
            self.error = Some((format!("{name} has no address to ssh to"), None));
            return;
        };
        let user =
            server.image.0.as_deref().and_then(|i| self.tables.images.get(i)).and_then(|i| ssh::login_user(&i.raw));
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
            self.overlay = Some(Overlay::SshUser(SshUser::new(call)));
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

    // ------------------------------------------------------------ key pairs

    /// The cloud made the key pair: the once-only view replaces the form.
    pub(super) fn keypair_created(&mut self, c: Created) {
        self.pending.remove(&Pending::Import);
        self.send(Request::List(Kind::Keypairs));
        self.info = Some(format!("created key pair {}", c.name));
        self.overlay = Some(Overlay::KeyCreated(KeyCreated(c)));
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
            let raw = d.view.kind().and_then(|k| self.tables.get(k).raw_of(&d.id));
            let (what, text) = d.copy_target(raw.as_ref());
            self.copy(&what, text);
            return;
        }
        let row = self.view.kind().and_then(|k| self.tables.get(k).selected_row());
        match row {
            Some((id, _)) => self.copy("id", id),
            None if self.view == View::Overview => self.info = Some("nothing to copy in the overview".into()),
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
}
