//! Key pairs made in the dashboard, as Horizon makes them: Nova generates the pair (a create
//! without `public_key`, which clouds allow below microversion 2.92) and returns the private key
//! once; a cloud that refuses gets a pair generated here (ed25519, `ssh-key`) and its public half
//! imported. The private key is written once to `<data dir>/keys/<cloud>/<name>` (0600, never
//! over an existing file) and shown once. Importing a public key from a file is the other way.
//!
//! [`create`] runs in the worker (network and files); [`KeyForm`] is the form.

use std::io::Write;
use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use meridian_common::{Client, ClientError};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use reqwest::StatusCode;
use serde_json::json;
use tui_textarea::TextArea;

use crate::component::{Component, Outcome, centered, dialog, field, focus, text_of};
use crate::theme::Theme;

/// Where the public key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    Generate,
    /// A public key file on this machine (`~` expanded).
    ImportFile(String),
}

/// The outcome of a create, for the once-only overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub name: String,
    /// Generated: where the private key was saved (`Err`: why it could not be, the key is then
    /// only in `private_key`).
    pub saved: Option<Result<PathBuf, String>>,
    pub private_key: Option<String>,
    /// "the cloud" or "this dashboard".
    pub generated_by: Option<&'static str>,
}

/// Creates the key pair `name` on the cloud; see the module docs.
pub async fn create(
    client: &Client,
    keys_dir: &Path,
    cloud: &str,
    name: &str,
    source: &KeySource,
) -> Result<Created, ClientError> {
    match source {
        KeySource::ImportFile(file) => {
            let path = expand_home(file);
            let public_key = std::fs::read_to_string(&path)
                .map_err(|e| ClientError::Decode(format!("cannot read {}: {e}", path.display())))?;
            let public_key = public_key.trim().to_string();
            if ssh_key::PublicKey::from_openssh(&public_key).is_err() {
                return Err(ClientError::Decode(format!("{} is not an OpenSSH public key", path.display())));
            }
            client
                .post("compute", "/os-keypairs", &json!({"keypair": {"name": name, "public_key": public_key}}))
                .await?;
            Ok(Created { name: name.into(), saved: None, private_key: None, generated_by: None })
        }
        KeySource::Generate => {
            let dest = crate::ssh::key_path(keys_dir, cloud, name);
            // Checked first so that no key pair is made whose private key could not be kept.
            if dest.exists() {
                return Err(ClientError::Decode(format!(
                    "{} already exists (a key of an earlier key pair {name}); delete it or pick another name",
                    dest.display()
                )));
            }
            let (private_key, by) =
                match client.post("compute", "/os-keypairs", &json!({"keypair": {"name": name}})).await {
                    Ok(v) => match v["keypair"]["private_key"].as_str() {
                        Some(k) => (k.to_string(), "the cloud"),
                        None => return Err(ClientError::Decode("the cloud returned no private key".into())),
                    },
                    // Microversion 2.92 made public_key required: generate here and import.
                    Err(e) if e.status() == Some(StatusCode::BAD_REQUEST) => {
                        let (private, public) = generate_ed25519(name)?;
                        client
                            .post("compute", "/os-keypairs", &json!({"keypair": {"name": name, "public_key": public}}))
                            .await?;
                        (private, "this dashboard")
                    }
                    Err(e) => return Err(e),
                };
            let saved = save_private_key(&dest, &private_key).map(|()| dest).map_err(|e| e.to_string());
            Ok(Created {
                name: name.into(),
                saved: Some(saved),
                private_key: Some(private_key),
                generated_by: Some(by),
            })
        }
    }
}

/// A new ed25519 pair in OpenSSH formats (private, public).
pub fn generate_ed25519(comment: &str) -> Result<(String, String), ClientError> {
    let bad = |e: ssh_key::Error| ClientError::Decode(format!("generating a key: {e}"));
    let mut key = ssh_key::PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519).map_err(bad)?;
    key.set_comment(comment);
    let private = key.to_openssh(ssh_key::LineEnding::LF).map_err(bad)?.to_string();
    let public = key.public_key().to_openssh().map_err(bad)?;
    Ok((private, public))
}

/// Writes the key with mode 0600 into a 0700 directory; an existing file is never replaced.
pub fn save_private_key(dest: &Path, key: &str) -> std::io::Result<()> {
    if let Some(dir) = dest.parent() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(dest)?;
    f.write_all(key.as_bytes())?;
    if !key.ends_with('\n') {
        f.write_all(b"\n")?;
    }
    f.sync_all()
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// The create-key-pair form: a name, generate or import, and the file to import.
pub struct KeyForm {
    pub name: TextArea<'static>,
    pub generate: bool,
    pub file: TextArea<'static>,
    /// 0 name, 1 method, 2 file.
    focus: usize,
    pub error: Option<String>,
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
}

impl Component for KeyForm {
    fn handle_key(&mut self, key: KeyEvent) -> Outcome {
        if self.busy {
            return if key.code == KeyCode::Esc { Outcome::Cancel } else { Outcome::Consumed };
        }
        match key.code {
            KeyCode::Esc => return Outcome::Cancel,
            KeyCode::Enter => {
                return match self.request() {
                    Ok(_) => Outcome::Submit,
                    Err(e) => {
                        self.error = Some(e);
                        Outcome::Consumed
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
        Outcome::Consumed
    }

    fn draw(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        let r = centered(area, 64, 11);
        f.render_widget(Clear, r);
        let block = dialog("Create key pair", theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let rows = Layout::vertical([Constraint::Length(1); 8]).split(inner);
        focus(&mut self.name, self.focus == 0, theme);
        focus(&mut self.file, self.focus == 2, theme);
        let label =
            |t: &str, on: bool| Span::styled(format!("{t:<9}"), if on { theme.accent() } else { theme.muted() });
        let [l0, v0] = Layout::horizontal([Constraint::Length(9), Constraint::Min(1)]).areas(rows[0]);
        f.render_widget(Paragraph::new(label("Name", self.focus == 0)), l0);
        f.render_widget(&self.name, v0);
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
            f.render_widget(&self.file, v2);
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

/// The once-only view of a generated private key.
pub fn draw_created(f: &mut Frame, area: Rect, theme: &Theme, c: &Created) {
    let key_lines = c.private_key.as_deref().map_or(0, |k| k.lines().count()) as u16;
    let r = centered(area, 76, key_lines + 8);
    f.render_widget(Clear, r);
    let title = format!("Key pair {}", c.name);
    let block = dialog(&title, theme);
    let inner = block.inner(r);
    f.render_widget(block, r);
    let mut lines = Vec::new();
    match (&c.saved, c.generated_by) {
        (Some(Ok(p)), Some(by)) => {
            lines.push(Line::from(format!("Generated by {by}. Private key saved to")));
            lines.push(Line::from(Span::styled(p.display().to_string(), theme.accent())));
        }
        (Some(Err(e)), _) => {
            lines.push(Line::from(Span::styled(format!("Could not save the private key: {e}"), theme.error())));
            lines.push(Line::from("Copy it now: it is not shown again."));
        }
        _ => lines.push(Line::from("Public key imported.")),
    }
    if let Some(k) = &c.private_key {
        lines.push(Line::from(Span::styled("Shown once; the cloud does not keep it:", theme.muted())));
        lines.extend(k.lines().map(|l| Line::from(l.to_string())));
    }
    lines.push(Line::from(Span::styled("<esc>close", theme.muted())));
    f.render_widget(Paragraph::new(lines).style(theme.base()), inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pairs_are_openssh_ed25519() {
        let (private, public) = generate_ed25519("k1").expect("generate");
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{private}");
        assert!(public.starts_with("ssh-ed25519 ") && public.ends_with(" k1"), "{public}");
        let parsed = ssh_key::PrivateKey::from_openssh(&private).expect("parse");
        assert_eq!(parsed.public_key().to_openssh().expect("public"), public);
    }

    #[test]
    fn the_private_key_file_is_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("keys/dev/k1");
        save_private_key(&dest, "secret").expect("save");
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), "secret\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dest).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dmode = std::fs::metadata(dest.parent().expect("dir")).expect("meta").permissions().mode() & 0o777;
            assert_eq!(dmode, 0o700);
        }
        let again = save_private_key(&dest, "other").expect_err("must not overwrite");
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), "secret\n");
    }

    #[test]
    fn the_form_says_what_is_missing() {
        let mut form = KeyForm::default();
        assert_eq!(form.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)), Outcome::Consumed);
        assert_eq!(form.error.as_deref(), Some("a key pair needs a name"));
        for c in "k1".chars() {
            form.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
        assert_eq!(form.request(), Ok(("k1".into(), KeySource::Generate)));
        form.handle_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
        form.handle_key(KeyEvent::new(KeyCode::Char(' '), KeyModifiers::NONE));
        assert_eq!(form.request(), Ok(("k1".into(), KeySource::ImportFile("~/.ssh/id_ed25519.pub".into()))));
    }
}
