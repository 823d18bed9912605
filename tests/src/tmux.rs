//! A real terminal for the dashboard's end-to-end tests: a detached tmux session running a
//! script, read with `capture-pane` and typed into with `send-keys`. The session is killed when
//! the value is dropped, so a failing test leaves no terminal behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tmux {
    session: String,
}

impl Tmux {
    /// Starts `script` in a new 120×36 session named after this process and `tag`.
    pub fn start(script: &Path, tag: &str) -> Tmux {
        let session = format!("meridian-e2e-{}-{tag}", std::process::id());
        let ok = Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x", "120", "-y", "36"])
            .arg(script)
            .stdin(Stdio::null())
            .status()
            .expect("tmux is needed for this test (apt-get install tmux)");
        assert!(ok.success(), "tmux new-session failed");
        Tmux { session }
    }

    /// What the terminal shows now.
    pub fn screen(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.session]).output().expect("capture");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends keys by tmux name (`Enter`, `C-d`, `C-]`).
    pub fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux").args(["send-keys", "-t", &self.session]).args(keys).status().expect("send-keys");
        assert!(ok.success());
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        self.keys(&["-l", text]);
    }

    /// Polls the screen until `pred` holds; returns that screen. Every screen seen goes to
    /// `seen` so the test can tell which states passed by.
    pub fn wait(&self, what: &str, secs: u64, seen: &mut Vec<String>, pred: impl Fn(&str) -> bool) -> String {
        self.poll(what, secs, Some(seen), &String::new, pred)
    }

    /// [`Tmux::wait`] without the history.
    pub fn wait_for(&self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        self.poll(what, secs, None, &String::new, pred)
    }

    /// [`Tmux::wait_for`] that adds `context()` (logs, say) to the failure.
    pub fn wait_or(&self, what: &str, secs: u64, context: &dyn Fn() -> String, pred: impl Fn(&str) -> bool) -> String {
        self.poll(what, secs, None, context, pred)
    }

    fn poll(
        &self,
        what: &str,
        secs: u64,
        mut seen: Option<&mut Vec<String>>,
        context: &dyn Fn() -> String,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if let Some(seen) = seen.as_deref_mut()
                && seen.last() != Some(&s)
            {
                seen.push(s.clone());
            }
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; screen:\n{s}\n{}", context());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.session]).status();
    }
}
