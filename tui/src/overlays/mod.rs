//! Overlays: what is drawn over a view and owns the keys while it is open. Each is its own
//! component: it takes keys and returns an [`Effect`] for the app to carry out, and draws with
//! `&self`. A new overlay is a module here, a variant of [`Overlay`] and its two dispatch arms.
//! (The console pane is not one: it replaces the view, see `views::console`.)

pub mod confirm;
pub mod create;
pub mod filter;
pub mod help;
pub mod key_created;
pub mod key_form;
pub mod lock_reason;
pub mod palette;
pub mod projects;
pub mod report;
pub mod server_pick;
pub mod server_snapshot;
pub mod ssh_user;
pub mod transfers;

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::Rect;

use crate::component::{Component, Outcome};
use crate::config::Profile;
use crate::keymap::Keymap;
use crate::login::LoginForm;
use crate::theme::Theme;
use crate::wizard::Wizard;

pub use confirm::Confirm;
pub use confirm::Verb;
pub use create::{Create, CreateForm};
pub use filter::Filter;
pub use help::Help;
pub use key_created::KeyCreated;
pub use key_form::KeyForm;
pub use lock_reason::LockReason;
pub use palette::Palette;
pub use projects::Projects;
pub use report::Report;
pub use server_pick::{Choice, Pick, ServerDo, ServerPick};
pub use server_snapshot::ServerSnapshot;
pub use ssh_user::SshUser;
pub use transfers::Transfers;

/// What the app needs to know for an overlay's keys and drawing.
pub struct Ctx<'a> {
    pub keymap: &'a Keymap,
    pub clouds: &'a [Profile],
    /// The project the session is scoped to (marked in the switcher).
    pub project_id: &'a str,
    /// This session's image uploads and downloads, oldest first.
    pub transfers: &'a [crate::transfer::Progress],
}

/// What an overlay asks the app to do after a key.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Kept open; nothing else to do.
    None,
    Close,
    Quit,
    /// The palette's command, the overlay closed.
    Command(String),
    /// The filter text changed (the overlay stays open).
    Filter(String),
    /// The filter was cancelled: closed, the filter cleared.
    FilterCleared,
    /// Confirmed: do it to these rows (one or many), the overlay closed.
    Confirmed(Confirm),
    /// Declined: nothing done, the overlay closed.
    Kept(Verb),
    SwitchProject {
        id: String,
        name: String,
    },
    SwitchCloud(Profile),
    /// The login form was submitted.
    Login(Profile),
    /// The wizard submitted its launch, or asked to import a key.
    Launch,
    ImportKeypair {
        name: String,
        public_key: String,
    },
    /// A create form was submitted (it stays open, busy, until the cloud answers).
    Create(Create),
    /// The key pair form was submitted (it stays open, busy, until the cloud answers).
    CreateKeypair {
        name: String,
        source: crate::keys::KeySource,
    },
    /// Run ssh (the login user was asked for), the overlay closed.
    Ssh(Box<crate::ssh::SshCall>),
    /// Stop this upload or download (the overlay stays open to show it end).
    CancelTransfer(u64),
    /// Lock the instance, with the reason typed (if any), the overlay closed.
    Lock {
        id: String,
        reason: Option<String>,
    },
    /// Snapshot each instance to a new image of the name given, the overlay closed.
    Snapshot {
        /// (instance id, image name)
        targets: Vec<(String, String)>,
    },
    /// Do this lifecycle action to each instance (rebuild, resize, …), the overlay closed.
    ServerDo {
        /// (instance id, name)
        targets: Vec<(String, String)>,
        todo: ServerDo,
    },
}

pub enum Overlay {
    Palette(Palette),
    Filter(Filter),
    Help(Help),
    Confirm(Confirm),
    Wizard(Box<Wizard>),
    Projects(Projects),
    Login(LoginForm),
    Report(Report),
    Create(CreateForm),
    KeyForm(Box<KeyForm>),
    KeyCreated(KeyCreated),
    SshUser(SshUser),
    Transfers(Transfers),
    LockReason(LockReason),
    ServerSnapshot(ServerSnapshot),
    ServerPick(Box<ServerPick>),
}

impl Overlay {
    pub fn handle_key(&mut self, key: KeyEvent, ctx: &Ctx) -> Effect {
        match self {
            Overlay::Palette(p) => p.handle_key(key),
            Overlay::Filter(p) => p.handle_key(key),
            Overlay::Help(h) => h.handle_key(key, ctx),
            Overlay::Confirm(c) => c.handle_key(key),
            Overlay::Projects(p) => p.handle_key(key, ctx),
            Overlay::Report(r) => r.handle_key(key),
            Overlay::Create(c) => c.handle_key(key),
            Overlay::KeyForm(k) => k.handle_key(key),
            Overlay::KeyCreated(k) => k.handle_key(key),
            Overlay::SshUser(s) => s.handle_key(key),
            Overlay::LockReason(l) => l.handle_key(key),
            Overlay::ServerSnapshot(s) => s.handle_key(key),
            Overlay::ServerPick(s) => s.handle_key(key),
            Overlay::Transfers(t) => t.handle_key(key, ctx),
            Overlay::Login(form) => match form.handle_key(key) {
                Outcome::Submit => match form.profile() {
                    Ok(p) => {
                        form.busy = true;
                        Effect::Login(p)
                    }
                    Err(_) => Effect::None,
                },
                Outcome::Cancel => Effect::Quit,
                _ => Effect::None,
            },
            Overlay::Wizard(w) => {
                let outcome = w.handle_key(key);
                if let Some((name, public_key)) = w.take_import() {
                    return Effect::ImportKeypair { name, public_key };
                }
                match outcome {
                    Outcome::Cancel => Effect::Close,
                    Outcome::Submit if w.spec().is_ok() => Effect::Launch,
                    _ => Effect::None,
                }
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme, ctx: &Ctx) {
        match self {
            Overlay::Palette(p) => p.draw(f, area, theme),
            Overlay::Filter(p) => p.draw(f, area, theme),
            Overlay::Help(h) => h.draw(f, area, theme, ctx),
            Overlay::Confirm(c) => c.draw(f, area, theme),
            Overlay::Projects(p) => p.draw(f, area, theme, ctx),
            Overlay::Report(r) => r.draw(f, area, theme),
            Overlay::Create(c) => c.draw(f, area, theme),
            Overlay::KeyForm(k) => k.draw(f, area, theme),
            Overlay::KeyCreated(k) => k.draw(f, area, theme),
            Overlay::SshUser(s) => s.draw(f, area, theme),
            Overlay::LockReason(l) => l.draw(f, area, theme),
            Overlay::ServerSnapshot(s) => s.draw(f, area, theme),
            Overlay::ServerPick(s) => s.draw(f, area, theme),
            Overlay::Transfers(t) => t.draw(f, area, theme, ctx),
            Overlay::Login(form) => form.draw(f, area, theme),
            Overlay::Wizard(w) => w.draw(f, area, theme),
        }
    }
}
