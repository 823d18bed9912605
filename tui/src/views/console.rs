//! The console pane (`a`): one attach to one instance's serial console, shown in place of the
//! view. It is plain state — a `vt100` emulator fed by [`ConsoleEvent`]s, drawn with `tui-term` —
//! and takes keys as the detail does: what needs the app comes back as a [`ConsoleEffect`].
//! The wire (URL, websocket task, key bytes) is in [`crate::console_pane`].

use std::cell::RefCell;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use tokio::sync::mpsc::UnboundedSender;
use tui_term::widget::PseudoTerminal;

use crate::console_pane::{ConsoleEvent, UrlError, is_detach, key_bytes, paste_bytes};
use crate::theme::Theme;

/// Lines the emulator keeps above the screen.
const SCROLLBACK: usize = 2000;

/// Where the pane is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaneState {
    /// Waiting for the cloud's URL.
    Requesting,
    /// URL in hand, websocket opening.
    Connecting,
    Connected,
    /// Ended (or never started); the message says why.
    Closed(String),
}

/// What a key in the pane asks of the app.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleEffect {
    /// Sent to the guest, scrolled, or nothing to do.
    Handled,
    /// Ctrl-] while connected: leave the console (the guest keeps running).
    Detached,
    /// Esc (or Ctrl-]) once the console has ended: close the pane.
    Close,
    /// `a` in an ended pane: ask the cloud for a fresh URL.
    Reattach,
    /// `y` before connecting or after the end: copy the console URL.
    CopyUrl(String),
}

/// The console pane's state: one attach to one instance.
pub struct ConsolePane {
    pub server_id: String,
    pub server_name: String,
    /// The instance's status when attaching (for the 409 message).
    pub status: String,
    pub session: u64,
    pub url: Option<String>,
    pub state: PaneState,
    /// In a `RefCell` because drawing sizes the emulator to the pane, as a terminal window's
    /// size follows the window: only drawing knows the pane's size (the reshape keeps such
    /// layout state in cells that drawing writes).
    parser: RefCell<vt100::Parser>,
    input: Option<UnboundedSender<Vec<u8>>>,
    /// Whether the guest sent anything since the websocket opened: a serial line replays
    /// nothing, so a guest idle at its prompt leaves the pane blank until a key.
    heard: bool,
}

impl ConsolePane {
    pub fn new(server_id: String, server_name: String, status: String, session: u64) -> ConsolePane {
        ConsolePane {
            server_id,
            server_name,
            status,
            session,
            url: None,
            state: PaneState::Requesting,
            parser: RefCell::new(vt100::Parser::new(24, 80, SCROLLBACK)),
            input: None,
            heard: false,
        }
    }

    /// The cloud's answer to the URL request.
    pub fn on_url(&mut self, result: Result<String, UrlError>) {
        match result {
            Ok(url) => {
                self.url = Some(url);
                self.state = PaneState::Connecting;
            }
            Err(UrlError::NoSerial) => {
                self.state =
                    PaneState::Closed("This cloud has no serial consoles (Nova's [serial_console] is disabled)".into())
            }
            Err(UrlError::NotRunning) => {
                let status = if self.status.is_empty() { "not running" } else { &self.status };
                self.state = PaneState::Closed(format!("{} is {status}; start it to attach", self.server_name));
            }
            Err(UrlError::Other(m)) => {
                self.state = PaneState::Closed(format!("no console for {}: {m}", self.server_name))
            }
        }
    }

    /// An event from the websocket task; events of an older session are dropped.
    pub fn on_event(&mut self, ev: ConsoleEvent) {
        match ev {
            ConsoleEvent::Opened { session, input } if session == self.session => {
                self.input = Some(input);
                self.state = PaneState::Connected;
            }
            ConsoleEvent::Output { session, bytes } if session == self.session => {
                self.heard |= !bytes.is_empty();
                self.parser.get_mut().process(&bytes);
            }
            ConsoleEvent::Closed { session, reason } if session == self.session => {
                self.input = None;
                if !matches!(self.state, PaneState::Closed(_)) {
                    self.state = PaneState::Closed(reason);
                }
            }
            _ => {}
        }
    }

    /// Detaches: dropping the key sender ends the websocket task, which closes the socket.
    pub fn detach(&mut self) {
        self.input = None;
    }

    /// A key: while connected every key but Ctrl-] (and Shift-PgUp/PgDn, the scrollback) goes
    /// to the guest; otherwise the pane's own keys (Esc, `a`, `y`).
    pub fn key(&mut self, key: KeyEvent) -> ConsoleEffect {
        if self.connected() {
            if is_detach(&key) {
                self.detach();
                return ConsoleEffect::Detached;
            }
            if !self.scroll(&key) {
                let bytes = key_bytes(&key, self.parser.get_mut().screen().application_cursor());
                if let Some(bytes) = bytes {
                    self.parser.get_mut().set_scrollback(0);
                    self.send(bytes);
                }
            }
            return ConsoleEffect::Handled;
        }
        match key.code {
            KeyCode::Esc => ConsoleEffect::Close,
            _ if is_detach(&key) => ConsoleEffect::Close,
            KeyCode::Char('a') if matches!(self.state, PaneState::Closed(_)) => ConsoleEffect::Reattach,
            KeyCode::Char('y') => self.url.clone().map_or(ConsoleEffect::Handled, ConsoleEffect::CopyUrl),
            _ => {
                self.scroll(&key);
                ConsoleEffect::Handled
            }
        }
    }

    /// Shift-PgUp/PgDn move through the scrollback by half a screen; whether `key` was one.
    fn scroll(&mut self, key: &KeyEvent) -> bool {
        if !key.modifiers.contains(KeyModifiers::SHIFT) {
            return false;
        }
        let parser = self.parser.get_mut();
        let rows = usize::from(parser.screen().size().0);
        let now = parser.screen().scrollback();
        match key.code {
            // vt100 0.15 cannot show an offset past one screen (it underflows): a page at most.
            KeyCode::PageUp => parser.set_scrollback((now + rows / 2).min(rows)),
            KeyCode::PageDown => parser.set_scrollback(now.saturating_sub(rows / 2)),
            _ => return false,
        }
        true
    }

    /// Pasted text, wrapped in bracketed-paste markers when the guest asked for them.
    pub fn paste(&mut self, text: &str) {
        let bracketed = self.parser.get_mut().screen().bracketed_paste();
        self.send(paste_bytes(text, bracketed));
    }

    fn send(&mut self, bytes: Vec<u8>) {
        if let Some(tx) = &self.input
            && tx.send(bytes).is_err()
        {
            self.input = None;
        }
    }

    /// Keystrokes would reach the guest.
    pub fn connected(&self) -> bool {
        self.input.is_some() && self.state == PaneState::Connected
    }

    /// The emulator's screen text (tests, copying).
    pub fn contents(&self) -> String {
        self.parser.borrow().screen().contents()
    }

    /// The emulator takes the size of the pane's inside, so the guest's full-screen programs fit
    /// (a serial line has no window-size signal: `stty rows/cols` in the guest matches it).
    pub fn resize(&self, rows: u16, cols: u16) {
        let mut parser = self.parser.borrow_mut();
        if (rows, cols) == parser.screen().size() || rows == 0 || cols == 0 {
            return;
        }
        // vt100 cuts rows off the bottom when the screen shrinks; a terminal keeps the cursor's
        // line and pushes the top into the scrollback instead: scroll up (SU) and follow (CUU).
        let (cursor_row, _) = parser.screen().cursor_position();
        if cursor_row >= rows {
            let n = cursor_row - rows + 1;
            parser.process(format!("\x1b[{n}S\x1b[{n}A").as_bytes());
        }
        parser.set_size(rows, cols);
    }

    /// The title's state word.
    fn state_label(&self) -> &'static str {
        match &self.state {
            PaneState::Requesting => "requesting a console…",
            PaneState::Connecting => "connecting…",
            PaneState::Connected => "connected",
            PaneState::Closed(_) => "closed",
        }
    }

    /// The hint line's keys: the pane's own, not the keymap's (every other key is the guest's).
    pub fn hints(&self) -> &'static [(&'static str, &'static str)] {
        if self.connected() {
            &[("ctrl-]", "detach"), ("shift-pgup", "scroll back"), ("shift-pgdown", "scroll on")]
        } else {
            &[("esc", "close"), ("a", "attach again"), ("y", "copy URL")]
        }
    }

    pub fn draw_hints(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let mut spans = Vec::new();
        for (k, label) in self.hints() {
            spans.push(Span::styled(format!("<{k}>"), theme.accent()));
            spans.push(Span::styled(format!("{label} "), theme.muted()));
        }
        if self.connected() {
            spans.push(Span::styled("every other key goes to the guest", theme.muted()));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let mut title = vec![
            Span::styled(format!(" Console {} ", self.server_name), theme.title()),
            Span::styled(format!(" {} ", self.state_label()), theme.muted()),
        ];
        let block = Block::default().borders(Borders::ALL).border_style(Style::default().fg(theme.accent));
        let inner = block.inner(area);
        self.resize(inner.height, inner.width);
        let parser = self.parser.borrow();
        let screen = parser.screen();
        let scrolled = screen.scrollback();
        if scrolled > 0 {
            title.push(Span::styled(format!(" scrolled back {scrolled} "), theme.accent()));
        }
        if self.connected() {
            title.push(Span::styled(" ctrl-] detach ", theme.muted()));
        }
        let block = block.title(Line::from(title)).style(theme.base());
        f.render_widget(Clear, area);
        let mut cursor = tui_term::widget::Cursor::default();
        if !self.connected() || scrolled > 0 || screen.hide_cursor() {
            cursor.hide();
        }
        f.render_widget(PseudoTerminal::new(screen).block(block).cursor(cursor), area);
        if self.connected() && !self.heard && inner.height > 0 {
            // Said once, over the still blank screen, until the guest's first byte.
            let hint = "connected; the guest has printed nothing since — Enter asks it for a prompt";
            let at = Rect { height: 1, ..inner };
            f.render_widget(Paragraph::new(Span::styled(hint, theme.muted())).style(theme.base()), at);
        }
        if let PaneState::Closed(msg) = &self.state {
            // The reason sits on the pane's last line, over whatever the guest printed.
            let h = 2.min(inner.height);
            let at = Rect { x: inner.x, y: inner.y + inner.height - h, width: inner.width, height: h };
            let text = Line::from(Span::styled(msg.clone(), theme.error().add_modifier(Modifier::BOLD)));
            f.render_widget(Clear, at);
            f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).style(theme.base()), at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn press(pane: &mut ConsolePane, code: KeyCode, m: KeyModifiers) -> ConsoleEffect {
        pane.key(KeyEvent::new(code, m))
    }

    #[test]
    fn ctrl_bracket_detaches_and_is_not_sent() {
        let mut pane = ConsolePane::new("id".into(), "web1".into(), "ACTIVE".into(), 1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        pane.on_event(ConsoleEvent::Opened { session: 1, input: tx });
        assert_eq!(press(&mut pane, KeyCode::Char('x'), KeyModifiers::NONE), ConsoleEffect::Handled);
        assert_eq!(press(&mut pane, KeyCode::Char(']'), KeyModifiers::CONTROL), ConsoleEffect::Detached);
        assert_eq!(rx.try_recv().ok(), Some(b"x".to_vec()));
        // Detaching dropped the sender: the session task sees the end of its key channel.
        assert!(matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)));
    }

    #[test]
    fn an_ended_pane_takes_its_own_keys() {
        let mut pane = ConsolePane::new("id".into(), "web1".into(), "ACTIVE".into(), 1);
        pane.on_url(Ok("ws://proxy/?token=t".into()));
        // Connecting: `a` is not for the guest yet, and does not attach twice.
        assert_eq!(press(&mut pane, KeyCode::Char('a'), KeyModifiers::NONE), ConsoleEffect::Handled);
        assert_eq!(
            press(&mut pane, KeyCode::Char('y'), KeyModifiers::NONE),
            ConsoleEffect::CopyUrl("ws://proxy/?token=t".into())
        );
        pane.on_event(ConsoleEvent::Closed { session: 1, reason: "gone".into() });
        assert_eq!(pane.state, PaneState::Closed("gone".into()));
        assert_eq!(press(&mut pane, KeyCode::Char('a'), KeyModifiers::NONE), ConsoleEffect::Reattach);
        assert_eq!(press(&mut pane, KeyCode::Esc, KeyModifiers::NONE), ConsoleEffect::Close);
    }

    #[test]
    fn a_silent_guest_gets_a_hint_until_its_first_byte() {
        let draw = |pane: &ConsolePane| {
            let mut term = ratatui::Terminal::new(ratatui::backend::TestBackend::new(90, 6)).expect("terminal");
            term.draw(|f| pane.draw(f, f.area(), &Theme::dark())).expect("draw");
            let buf = term.backend().buffer().clone();
            (0..buf.area.height)
                .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let mut pane = ConsolePane::new("id".into(), "web1".into(), "ACTIVE".into(), 1);
        let (tx, _rx) = mpsc::unbounded_channel();
        pane.on_event(ConsoleEvent::Opened { session: 1, input: tx });
        assert!(draw(&pane).contains("Enter asks it for a prompt"), "{}", draw(&pane));
        pane.on_event(ConsoleEvent::Output { session: 1, bytes: b"\r\nweb1 login: ".to_vec() });
        let screen = draw(&pane);
        assert!(screen.contains("web1 login:") && !screen.contains("Enter asks"), "{screen}");
    }

    #[test]
    fn shrinking_keeps_the_cursors_line_and_scrolls_the_top_away() {
        let mut pane = ConsolePane::new("id".into(), "web1".into(), "ACTIVE".into(), 1);
        let text: String = (1..=10).map(|i| format!("line {i}\r\n")).collect();
        pane.on_event(ConsoleEvent::Output { session: 1, bytes: format!("{text}# ").into_bytes() });
        pane.resize(4, 80);
        assert_eq!(pane.contents(), "line 8\nline 9\nline 10\n# ");
        // What went above is in the scrollback.
        press(&mut pane, KeyCode::PageUp, KeyModifiers::SHIFT);
        assert!(pane.contents().starts_with("line 6\nline 7"), "{}", pane.contents());
    }

    #[test]
    fn events_of_an_older_session_are_ignored() {
        let mut pane = ConsolePane::new("id".into(), "web1".into(), "ACTIVE".into(), 2);
        pane.on_event(ConsoleEvent::Output { session: 1, bytes: b"old".to_vec() });
        pane.on_event(ConsoleEvent::Output { session: 2, bytes: b"new".to_vec() });
        assert!(pane.contents().starts_with("new"), "{}", pane.contents());
    }

    #[test]
    fn a_stopped_instance_is_named_with_its_status() {
        let mut pane = ConsolePane::new("id".into(), "web1".into(), "SHUTOFF".into(), 1);
        pane.on_url(Err(UrlError::NotRunning));
        assert_eq!(pane.state, PaneState::Closed("web1 is SHUTOFF; start it to attach".into()));
    }
}
