//! The application state and its three entry points: keys and mouse in, worker responses in,
//! a frame out. Nothing here touches the network or the disk: requests (the state file's writes
//! among them) go to the worker's channel.
//!
//! The pieces live elsewhere: the resource views and their registry in [`crate::views`], the
//! detail pane in [`crate::views::detail`], overlays in [`crate::overlays`]. This module routes
//! keys (`on_key` → the open overlay, else the open console pane, or the keymap → `on_action` →
//! the open detail, else the current view) and folds responses into the state. The console pane, ssh, key pair creation
//! and copying are glued in by the child module `reach`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossterm::event::{KeyEvent, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::component::{Component, Outcome};
use crate::config::{Profile, State};
use crate::keymap::{Action, Keymap};
use crate::login::{LoginForm, Picker};
use crate::model::{Keypair, Server};
use crate::overlays::{
    self, Confirm, CreateForm, Effect, Filter, Help, LockReason, Overlay, Palette, Projects, Report, Verb,
};
use crate::table::{CellCtx, Progress};
use crate::theme::Theme;
use crate::views::console::ConsolePane;
use crate::views::detail::{Detail, DetailEffect, Tab, printable};
use crate::views::{Tables, overview};
use crate::worker::{Kind, Listing, Overview, ProfileBox, Request, Response, ServerOp, SessionInfo};

mod compute_extras;
mod lifecycle;
mod reach;

pub use crate::overlays::palette::completions;
pub use crate::views::View;

/// A bulk action under way: which rows still wait for the cloud's answer, which failed.
struct Bulk {
    verb: Verb,
    kind: Kind,
    total: usize,
    /// ID → name of the rows without an answer yet.
    waiting: HashMap<String, String>,
    failed: Vec<(String, String)>,
}

pub enum Screen {
    Picker(Picker),
    Login(LoginForm),
    Main,
}

/// What a request is waiting for (the spinner turns while any is pending).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Pending {
    Login,
    List(Kind),
    Overview,
    Timeline,
    Console,
    Actions,
    Create,
    Action(String),
    Launch,
    Import,
    Projects,
    /// A console URL or websocket on its way.
    Attach,
    /// An instance's interfaces or diagnostics.
    Interfaces,
}

fn pending_of(r: &Request) -> Option<Pending> {
    Some(match r {
        Request::Login(_) | Request::SwitchProject { .. } => Pending::Login,
        Request::List(k) => Pending::List(*k),
        Request::Overview => Pending::Overview,
        Request::Timeline(_) => Pending::Timeline,
        Request::Console(_) => Pending::Console,
        Request::Actions(_) => Pending::Actions,
        Request::Create(_) => Pending::Create,
        Request::SetEnabled { id, .. } => Pending::Action(id.clone()),
        Request::Action { id, .. }
        | Request::Delete { id, .. }
        | Request::Lock { id, .. }
        | Request::CreateImage { id, .. }
        | Request::ServerCall { id, .. } => Pending::Action(id.clone()),
        Request::Launch(_) => Pending::Launch,
        Request::ImportKeypair { .. } => Pending::Import,
        Request::Projects => Pending::Projects,
        Request::SerialConsole { .. } | Request::ConsoleConnect { .. } | Request::WebConsole { .. } => Pending::Attach,
        Request::CreateKeypair { .. } => Pending::Import,
        Request::Interfaces(_) | Request::Diagnostics(_) => Pending::Interfaces,
        Request::LiveMigration(_) => return None,
        Request::SaveState { .. }
        | Request::AllProjects(_)
        | Request::ProjectNames
        | Request::Upload { .. }
        | Request::Download { .. }
        | Request::CancelTransfer(_) => return None,
    })
}

/// Settings the app starts with.
pub struct AppConfig {
    pub keymap: Keymap,
    pub themes: Vec<Theme>,
    pub theme: usize,
    /// Where to remember the last cloud/project (`None`: do not write, as in tests).
    pub state_path: Option<PathBuf>,
    pub state: State,
    /// Clouds from clouds.yaml, offered by the project/cloud switcher.
    pub clouds: Vec<Profile>,
    /// Told whether the instances list is on screen (the poller watches it closely only then).
    pub instances_visible: Option<tokio::sync::watch::Sender<bool>>,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            keymap: Keymap::default(),
            themes: vec![Theme::dark()],
            theme: 0,
            state_path: None,
            state: State::default(),
            clouds: Vec::new(),
            instances_visible: None,
        }
    }
}

const SPINNER: [&str; 8] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧"];
const CONSOLE_FOLLOW: Duration = Duration::from_secs(2);
/// Lists that live tracking does not cover (images, flavors, …) are reloaded this often while shown.
const STABLE_REFRESH: Duration = Duration::from_secs(60);
/// How often an otherwise idle instances list is redrawn (only ages change; no requests).
const AGE_REDRAW: Duration = Duration::from_secs(30);

pub struct App {
    tx: tokio::sync::mpsc::UnboundedSender<Request>,
    pub screen: Screen,
    pub session: Option<SessionInfo>,
    profile: Option<Profile>,
    view: View,
    history: Vec<View>,
    /// Every resource table, by kind (see `views::registry!`).
    pub tables: Tables,
    overview: Option<Overview>,
    detail: Option<Detail>,
    overlay: Option<Overlay>,
    pending: HashSet<Pending>,
    error: Option<(String, Option<Request>)>,
    info: Option<String>,
    live: String,
    spinner: usize,
    image_names: HashMap<String, String>,
    flavor_names: HashMap<String, String>,
    /// Rows shown with an action's expected state: their last real state, to restore on failure.
    expected: HashMap<String, Server>,
    bulk: Option<Bulk>,
    /// An admin's all-projects view of the project-scoped lists.
    all_projects: bool,
    project_names: HashMap<String, String>,
    pub quit: bool,
    /// A fixed clock (snapshot tests); `None`: the real one.
    pub clock: Option<DateTime<Utc>>,
    cfg: AppConfig,
    /// Where the last frame drew each tab (for clicks); drawing records it.
    tab_areas: RefCell<Vec<(Rect, View)>>,
    last_click: Option<(Instant, u16)>,
    next_console: Option<Instant>,
    next_refresh: Option<Instant>,
    /// The open console pane (it replaces the view while open) and the attach counter that
    /// tells its websocket's events from an earlier attach's.
    console: Option<ConsolePane>,
    console_sessions: u64,
    /// Text for the event loop to put on the clipboard, and ssh for it to run.
    clipboard: Option<String>,
    ssh: Option<crate::ssh::SshCall>,
    /// This session's image uploads and downloads (the last few finished ones kept to show).
    transfers: Vec<crate::transfer::Progress>,
    transfer_ids: u64,
}

/// The cell context from the app's fields (a macro, so the tables stay separately borrowable).
macro_rules! cctx {
    ($app:ident) => {
        CellCtx {
            admin: $app.session.as_ref().is_some_and(|s| s.admin),
            now: $app.clock.unwrap_or_else(Utc::now),
            image_names: &$app.image_names,
            flavor_names: &$app.flavor_names,
            all_projects: $app.all_projects,
            project_names: &$app.project_names,
        }
    };
}

impl App {
    pub fn new(tx: tokio::sync::mpsc::UnboundedSender<Request>, screen: Screen, cfg: AppConfig) -> App {
        App {
            tx,
            screen,
            session: None,
            profile: None,
            view: View::Servers,
            history: Vec::new(),
            tables: Tables::default(),
            overview: None,
            detail: None,
            overlay: None,
            pending: HashSet::new(),
            error: None,
            info: None,
            live: String::new(),
            spinner: 0,
            image_names: HashMap::new(),
            flavor_names: HashMap::new(),
            expected: HashMap::new(),
            bulk: None,
            all_projects: false,
            project_names: HashMap::new(),
            quit: false,
            clock: None,
            cfg,
            tab_areas: RefCell::new(Vec::new()),
            last_click: None,
            next_console: None,
            next_refresh: None,
            console: None,
            console_sessions: 0,
            clipboard: None,
            ssh: None,
            transfers: Vec::new(),
            transfer_ids: 0,
        }
    }

    /// Starts logging in with a complete profile, or shows the form for what is missing.
    pub fn login(&mut self, p: Profile) {
        if p.credentials().is_some() {
            if let Screen::Login(form) = &mut self.screen {
                form.busy = true;
            }
            self.profile = Some(p.clone());
            self.send(Request::Login(Box::new(ProfileBox(p))));
        } else {
            self.screen = Screen::Login(LoginForm::new(&p));
        }
    }

    fn theme(&self) -> &Theme {
        &self.cfg.themes[self.cfg.theme.min(self.cfg.themes.len() - 1)]
    }

    pub fn theme_name(&self) -> &str {
        &self.theme().name
    }

    pub fn set_theme(&mut self, name: &str) -> bool {
        match self.cfg.themes.iter().position(|t| t.name == name) {
            Some(i) => {
                self.cfg.theme = i;
                true
            }
            None => false,
        }
    }

    fn admin(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.admin)
    }

    fn send(&mut self, r: Request) {
        if let Some(p) = pending_of(&r) {
            self.pending.insert(p);
        }
        let _ = self.tx.send(r);
    }

    /// Has the worker write the state file (the update path does no file I/O).
    fn save_state(&mut self) {
        if let Some(path) = self.cfg.state_path.clone() {
            let state = self.cfg.state.clone();
            self.send(Request::SaveState { path, state });
        }
    }

    /// Tells the poller whether the instances list is on screen (only when that changed).
    fn sync_visibility(&self) {
        let shown = matches!(self.screen, Screen::Main) && self.view == View::Servers;
        if let Some(tx) = &self.cfg.instances_visible {
            tx.send_if_modified(|v| std::mem::replace(v, shown) != shown);
        }
    }

    /// Whether the servers table holds data (the first "data frame", for the benchmark).
    pub fn has_data(&self) -> bool {
        self.tables.servers.loaded
    }

    pub fn view(&self) -> View {
        self.view
    }

    /// When the main loop must wake without an event: the spinner while something is pending,
    /// the console while following, and a slow redraw on the instances list so its AGE column
    /// stays true. `None`: sleep until the next event.
    pub fn next_wake(&self) -> Option<Duration> {
        let spin = (!self.pending.is_empty()).then_some(Duration::from_millis(100));
        let ages = (self.view == View::Servers && self.detail.is_none()).then_some(AGE_REDRAW);
        let now = Instant::now();
        let timers = [self.next_console, self.next_refresh.filter(|_| self.view != View::Servers)];
        timers.into_iter().flatten().map(|t| t.saturating_duration_since(now)).chain(spin).chain(ages).min()
    }

    pub fn on_tick(&mut self) {
        if !self.pending.is_empty() {
            self.spinner = (self.spinner + 1) % SPINNER.len();
        }
        if let Some(t) = self.next_refresh
            && Instant::now() >= t
        {
            self.next_refresh = None;
            // Instances are kept current by live tracking; other views are reloaded.
            if self.view != View::Servers && self.detail.is_none() && self.overlay.is_none() {
                self.load(self.view);
            }
        }
        if let Some(t) = self.next_console
            && Instant::now() >= t
        {
            self.next_console = None;
            if let Some(d) = &self.detail
                && d.follow
                && d.tab == Tab::Console
            {
                let id = d.id.clone();
                self.send(Request::Console(id));
            }
        }
    }

    // ---------------------------------------------------------------- responses

    pub fn on_response(&mut self, r: Response) {
        self.reduce(r);
        self.sync_visibility();
    }

    fn reduce(&mut self, r: Response) {
        match r {
            Response::LoggedIn(info) => self.logged_in(info),
            Response::NeedLogin { message } => {
                self.pending.remove(&Pending::Login);
                let profile = self.profile.clone().unwrap_or_default();
                match &mut self.screen {
                    Screen::Main => {
                        let mut form = LoginForm::new(&Profile { password: None, app_cred_secret: None, ..profile });
                        form.reason = Some(format!("{message} — log in again; the screen stays as it is"));
                        self.overlay = Some(Overlay::Login(form));
                    }
                    Screen::Login(form) => {
                        form.busy = false;
                        form.error = Some(message);
                    }
                    Screen::Picker(_) => {
                        let mut form = LoginForm::new(&profile);
                        form.error = Some(message);
                        self.screen = Screen::Login(form);
                    }
                }
            }
            Response::Listed(listing) => self.listed(listing),
            Response::Overview(o) => {
                self.pending.remove(&Pending::Overview);
                self.next_refresh = Some(Instant::now() + STABLE_REFRESH);
                self.overview = Some(o);
                self.push_wizard_data();
            }
            Response::Timeline { id, entries, source } => {
                self.pending.remove(&Pending::Timeline);
                if let Some(d) = &mut self.detail
                    && d.id == id
                {
                    d.timeline = Some((entries, source));
                }
            }
            Response::EnabledSet { kind, name, enabled } => {
                self.pending.retain(|p| !matches!(p, Pending::Action(_)));
                self.send(Request::List(kind));
                self.info = Some(format!("{} {} {name}", if enabled { "enabled" } else { "disabled" }, kind.noun()));
            }
            Response::Created { kind, name } => {
                self.create_form_done();
                self.send(Request::List(kind));
                // Lists that show what was made too: a network's subnet, a group's rules
                // (Neutron gives a new group egress rules), a group's rule count.
                match kind {
                    Kind::Networks => self.send(Request::List(Kind::Subnets)),
                    Kind::SecGroups => self.send(Request::List(Kind::SecRules)),
                    Kind::SecRules => self.send(Request::List(Kind::SecGroups)),
                    Kind::Snapshots => self.send(Request::List(Kind::Volumes)),
                    _ => {}
                }
                let label = if name.is_empty() { String::new() } else { format!(" {name}") };
                self.info = Some(format!("created {}{label}", kind.noun()));
            }
            Response::Actions { id, actions } => {
                self.pending.remove(&Pending::Actions);
                if let Some(d) = &mut self.detail
                    && d.id == id
                {
                    d.actions = Some(actions);
                }
            }
            Response::Console { id, output } => {
                self.pending.remove(&Pending::Console);
                if let Some(d) = &mut self.detail
                    && d.id == id
                {
                    d.console = Some(printable(&output));
                    if d.follow {
                        self.next_console = Some(Instant::now() + CONSOLE_FOLLOW);
                    }
                }
            }
            Response::Accepted { id, op } => {
                self.pending.remove(&Pending::Action(id.clone()));
                self.info = Some(format!("{} accepted", op.verb()));
                self.bulk_answer(&id, None);
                self.pick_answered(&id);
            }
            Response::Rescued { id, admin_pass } => {
                // The password must not hide behind an earlier refusal of the same rescue.
                if matches!(&self.error, Some((_, Some(Request::ServerCall { id: failed, .. }))) if *failed == id) {
                    self.error = None;
                }
                // One of several marked rows: the bulk's summary, not each password.
                let single = !self.bulk.as_ref().is_some_and(|b| b.waiting.contains_key(&id));
                self.reduce(Response::Accepted { id, op: ServerOp::Rescue });
                if single {
                    self.info = Some(format!("rescue accepted; the rescue system's root password: {admin_pass}"));
                }
            }
            Response::Deleted { kind, id, name } => {
                self.pending.remove(&Pending::Action(id.clone()));
                if matches!(&self.error, Some((_, Some(Request::Delete { id: failed, .. }))) if *failed == id) {
                    self.error = None;
                }
                let ctx = cctx!(self);
                self.tables.get_mut(kind).remove(&id, &ctx);
                if self.detail.as_ref().is_some_and(|d| d.id == id) {
                    self.detail = None;
                }
                self.info = Some(format!("deleted {} {}", kind.noun(), if name.is_empty() { &id } else { &name }));
                self.bulk_answer(&id, None);
            }
            Response::Launched(servers) => {
                self.pending.remove(&Pending::Launch);
                if matches!(self.error, Some((_, Some(Request::Launch(_))))) {
                    self.error = None;
                }
                let n = servers.len();
                let ctx = cctx!(self);
                for s in servers {
                    self.tables.servers.upsert(s, &ctx);
                }
                if matches!(self.overlay, Some(Overlay::Wizard(_))) {
                    self.overlay = None;
                }
                self.go_to(View::Servers);
                self.info = Some(format!("launched {n} instance{}", if n == 1 { "" } else { "s" }));
            }
            Response::KeypairImported(name) => {
                self.pending.remove(&Pending::Import);
                self.send(Request::List(Kind::Keypairs));
                if let Some(Overlay::Wizard(w)) = &mut self.overlay {
                    w.busy = false;
                    w.keypairs.push(Keypair { name: name.clone(), ..Keypair::default() });
                    w.select_keypair(&name);
                }
            }
            Response::Projects(projects) => {
                self.pending.remove(&Pending::Projects);
                let sel = projects
                    .iter()
                    .position(|p| self.session.as_ref().is_some_and(|s| s.project_id == p.id))
                    .unwrap_or(0);
                self.overlay = Some(Overlay::Projects(Projects { projects, sel }));
            }
            Response::ProjectNames(names) => {
                self.project_names = names;
                // The PROJECT column's text (filtered and sorted on) changed.
                let ctx = cctx!(self);
                for &k in Kind::ALL {
                    if k.scoped() {
                        let t = self.tables.get_mut(k);
                        let f = t.filter().to_string();
                        t.set_filter(&f, &ctx);
                    }
                }
            }
            Response::ServerUpdate(s) => self.server_update(*s),
            Response::Transition { server_id, entry } => {
                // The open timeline grows as the stream reports each phase.
                if let Some(d) = &mut self.detail
                    && d.id == server_id
                    && let Some((entries, _)) = &mut d.timeline
                    && entries.last().is_none_or(|l| l.at < entry.at)
                {
                    if let (Some(last), Some(at)) = (entries.last_mut(), entry.at)
                        && let Some(prev) = last.at
                    {
                        last.duration_s = Some((at - prev).num_milliseconds() as f64 / 1000.0);
                    }
                    entries.push(entry);
                }
            }
            Response::ConsoleUrl { id, result } => self.console_url(id, result),
            Response::WebConsoleUrl { name, result } => self.web_console_url(&name, result),
            Response::ConsoleEvent(ev) => self.console_event(ev),
            Response::Transfer(p) => self.transfer_moved(p),
            Response::Did { kind, message } => {
                self.create_form_done();
                self.send(Request::List(kind));
                // Attaching changes the instance's volumes too.
                if kind == Kind::Volumes {
                    self.send(Request::List(Kind::Servers));
                }
                if kind == Kind::Ports {
                    self.ports_changed();
                }
                self.info = Some(message);
            }
            Response::GroupsChanged { server, added, removed } => {
                self.create_form_done();
                let mut words = Vec::new();
                if !added.is_empty() {
                    words.push(format!("added {}", added.join(", ")));
                }
                if !removed.is_empty() {
                    words.push(format!("removed {}", removed.join(", ")));
                }
                self.info = Some(format!("security groups of {server}: {}", words.join("; ")));
                self.send(Request::List(Kind::Servers));
            }
            Response::KeypairCreated(c) => self.keypair_created(c),
            Response::Interfaces { id, interfaces } => self.interfaces_loaded(id, interfaces),
            Response::Diagnostics { id, result } => self.diagnostics_loaded(id, result),
            Response::LiveMigration { id, result } => self.live_migration_loaded(id, result),
            Response::LiveMode(m) => self.live = m,
            Response::ServersStale => self.send(Request::List(Kind::Servers)),
            Response::Failed { request, message } => {
                if let Some(p) = pending_of(&request) {
                    self.pending.remove(&p);
                }
                match (&request, &mut self.overlay) {
                    (Request::Create(_), Some(Overlay::Create(form))) => {
                        // In the form, which keeps what was typed.
                        form.busy = false;
                        form.error = Some(message);
                        return;
                    }
                    (Request::CreateKeypair { .. }, Some(Overlay::KeyForm(form))) => {
                        form.busy = false;
                        form.error = Some(message);
                        return;
                    }
                    _ => {}
                }
                if let Request::SerialConsole { id } = &request {
                    self.console_failed(id, &message);
                }
                match (&request, &mut self.overlay) {
                    (Request::Launch(_), Some(Overlay::Wizard(w)))
                    | (Request::ImportKeypair { .. }, Some(Overlay::Wizard(w))) => {
                        // In place, in words; the wizard keeps what was typed.
                        w.busy = false;
                        w.error = Some(message.clone());
                    }
                    _ => {}
                }
                if let Request::Action { id, .. } | Request::ServerCall { id, .. } = &request
                    && let Some(prev) = self.expected.remove(id)
                {
                    self.tables.servers.expecting.remove(id);
                    let ctx = cctx!(self);
                    self.tables.servers.upsert(prev, &ctx);
                }
                if let Request::Delete { kind, id, .. } = &request {
                    // The row comes back as it was.
                    self.tables.get_mut(*kind).deleting().remove(id);
                }
                let in_bulk = match &request {
                    Request::Action { id, .. } | Request::Delete { id, .. } | Request::ServerCall { id, .. } => {
                        self.bulk.as_ref().is_some_and(|b| b.waiting.contains_key(id))
                    }
                    _ => false,
                };
                if in_bulk {
                    // Listed per row when the bulk action ends, not one at a time.
                    if let Request::Action { id, .. } | Request::Delete { id, .. } | Request::ServerCall { id, .. } =
                        &request
                    {
                        let id = id.clone();
                        self.bulk_answer(&id, Some(message));
                    }
                } else if !self.pick_refused(&request, &message) {
                    self.error = Some((message, Some(request)));
                }
            }
        }
    }

    fn logged_in(&mut self, info: SessionInfo) {
        self.pending.remove(&Pending::Login);
        let switched =
            self.session.as_ref().is_some_and(|s| s.project_id != info.project_id || s.auth_url != info.auth_url);
        let first = self.session.is_none();
        self.session = Some(info.clone());
        if matches!(self.overlay, Some(Overlay::Login(_))) {
            self.overlay = None;
        }
        // Remember the cloud and project (never the password).
        self.cfg.state.last_cloud = Some(info.cloud.clone());
        self.cfg.state.projects.insert(info.cloud.clone(), info.project.clone());
        self.cfg.state.last_auth_url = Some(info.auth_url.clone());
        self.cfg.state.last_username = Some(info.user.clone());
        self.save_state();
        if !matches!(self.screen, Screen::Main) {
            self.screen = Screen::Main;
        }
        if switched {
            // Every table, so none shows the other project's rows.
            self.tables = Tables::default();
            self.expected.clear();
            self.overview = None;
            self.detail = None;
            self.info = Some(format!("now in project {}", info.project));
        }
        if first || switched {
            self.error = None;
            // The instances first: they are the first screen with data.
            self.send(Request::List(Kind::Servers));
            self.send(Request::List(Kind::Images));
            self.send(Request::List(Kind::Flavors));
            if !matches!(self.view, View::Servers | View::Images | View::Flavors) {
                self.load(self.view);
            }
        }
    }

    fn listed(&mut self, listing: Listing) {
        self.pending.remove(&Pending::List(listing.kind()));
        self.next_refresh = Some(Instant::now() + STABLE_REFRESH);
        let listing = match listing {
            Listing::Servers(v) => {
                // A row still waiting for its action's real state keeps the expected one.
                let v = v
                    .into_iter()
                    .map(|s| match self.expected.get(&s.id) {
                        Some(prev) if prev.status == s.status && prev.task_state == s.task_state => {
                            self.tables.servers.get(&s.id).cloned().unwrap_or(s)
                        }
                        _ => s,
                    })
                    .collect();
                Listing::Servers(v)
            }
            Listing::Flavors(v) => {
                self.flavor_names = v.iter().map(|f| (f.id.clone(), f.name.clone())).collect();
                Listing::Flavors(v)
            }
            Listing::Images(v) => {
                self.image_names = v.iter().map(|i| (i.id.clone(), i.name.clone())).collect();
                Listing::Images(v)
            }
            other => other,
        };
        let names_changed = matches!(listing, Listing::Flavors(_) | Listing::Images(_));
        let kind_is_servers = matches!(listing, Listing::Servers(_));
        let ctx = cctx!(self);
        self.tables.set(listing, &ctx);
        if names_changed {
            // Names (image, flavor) changed: the instance rows' filter/sort text did too.
            let keep = self.tables.servers.selected().map(|s| s.id.clone());
            self.tables.servers.recompute(&ctx, keep);
        }
        self.push_wizard_data();
        self.refresh_pick();
        if kind_is_servers {
            self.poll_live_migration();
        }
    }

    fn push_wizard_data(&mut self) {
        let (groups, images, snapshots) = (self.group_choices(), self.image_choices(), self.snapshot_choices());
        let volumes = self.volume_choices();
        if let Some(Overlay::Create(form)) = &mut self.overlay {
            form.set_networks(self.tables.networks.items.iter().map(|n| (n.name.clone(), n.id.clone())).collect());
            form.set_groups(groups);
            form.set_sources(images, snapshots, volumes);
        }
        let quotas = self.overview.as_ref().map(|o| o.quotas.clone());
        if let Some(Overlay::Wizard(w)) = &mut self.overlay {
            w.images = self.tables.images.items.clone();
            w.flavors = self.tables.flavors.items.clone();
            w.flavors.sort_by_key(|f| (f.vcpus, f.ram, f.disk));
            w.networks = self.tables.networks.items.clone();
            w.keypairs = self.tables.keypairs.items.clone();
            w.groups = self.tables.secgroups.items.clone();
            w.quotas = quotas;
        }
        self.push_extras_data();
    }

    fn server_update(&mut self, s: Server) {
        let id = s.id.clone();
        self.expected.remove(&id);
        self.tables.servers.expecting.remove(&id);
        // A bulk action's tick goes once the row has settled.
        if s.task_state.is_none() && self.tables.servers.progress.get(&id) == Some(&Progress::Done) {
            self.tables.servers.progress.remove(&id);
        }
        let moved =
            self.tables.servers.get(&id).is_none_or(|old| old.status != s.status || old.task_state != s.task_state);
        let ctx = cctx!(self);
        if s.status == "DELETED" {
            self.tables.servers.remove(&id, &ctx);
        } else {
            self.tables.servers.upsert(s, &ctx);
        }
        // An open timeline follows the instance.
        if moved
            && let Some(d) = &self.detail
            && d.id == id
        {
            match d.tab {
                Tab::Timeline => self.send(Request::Timeline(id)),
                // A new action or event may have been recorded.
                Tab::Actions => self.send(Request::Actions(id)),
                Tab::Interfaces => self.send(Request::Interfaces(id)),
                Tab::Fields | Tab::Console => {}
            }
        }
    }

    // ---------------------------------------------------------------- input

    pub fn on_key(&mut self, key: KeyEvent) {
        self.key(key);
        self.sync_visibility();
    }

    fn key(&mut self, key: KeyEvent) {
        self.info = None;
        match &mut self.screen {
            Screen::Picker(p) => {
                match p.handle_key(key) {
                    Outcome::Submit => match p.chosen() {
                        Some(profile) => {
                            let mut form = LoginForm::new(&profile);
                            form.busy = profile.credentials().is_some();
                            self.screen = Screen::Login(form);
                            self.login(profile);
                        }
                        None => self.screen = Screen::Login(LoginForm::new(&self.form_defaults())),
                    },
                    Outcome::Cancel => self.quit = true,
                    _ => {}
                }
                return;
            }
            Screen::Login(form) => {
                match form.handle_key(key) {
                    Outcome::Submit => {
                        if let Ok(p) = form.profile() {
                            form.busy = true;
                            self.login(p);
                        }
                    }
                    Outcome::Cancel => self.quit = true,
                    _ => {}
                }
                return;
            }
            Screen::Main => {}
        }
        if let Some(overlay) = &mut self.overlay {
            let project_id = self.session.as_ref().map(|s| s.project_id.as_str()).unwrap_or_default();
            let ctx = overlays::Ctx {
                keymap: &self.cfg.keymap,
                clouds: &self.cfg.clouds,
                project_id,
                transfers: &self.transfers,
            };
            let effect = overlay.handle_key(key, &ctx);
            self.overlay_effect(effect);
            return;
        }
        if let Some(pane) = &mut self.console {
            // The pane has every key (they are the guest's) but its own.
            let effect = pane.key(key);
            self.console_effect(effect);
            return;
        }
        let Some(action) = self.cfg.keymap.action(&key) else { return };
        self.on_action(action);
    }

    fn form_defaults(&self) -> Profile {
        Profile {
            auth_url: self.cfg.state.last_auth_url.clone().unwrap_or_default(),
            username: self.cfg.state.last_username.clone().unwrap_or_default(),
            user_domain: "Default".into(),
            project_domain: "Default".into(),
            ..Profile::default()
        }
    }

    /// Carries out what an overlay asked for.
    fn overlay_effect(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Close => self.overlay = None,
            Effect::Quit => self.quit = true,
            Effect::Command(cmd) => {
                self.overlay = None;
                self.run_command(&cmd);
            }
            Effect::Filter(f) => {
                if let Some(k) = self.view.kind() {
                    let ctx = cctx!(self);
                    self.tables.get_mut(k).set_filter(&f, &ctx);
                }
            }
            Effect::FilterCleared => {
                self.overlay = None;
                if let Some(k) = self.view.kind() {
                    let ctx = cctx!(self);
                    self.tables.get_mut(k).set_filter("", &ctx);
                }
            }
            Effect::Confirmed(c) => {
                self.overlay = None;
                self.confirmed(c);
            }
            Effect::Snapshot { targets } => {
                self.overlay = None;
                for (id, name) in targets {
                    self.expect_state(&id, ServerOp::Snapshot);
                    self.send(Request::CreateImage { id, name });
                }
                // The new images show in the images view.
                self.send(Request::List(Kind::Images));
            }
            Effect::ServerDo { targets, todo } => self.server_do(targets, todo),
            Effect::Lock { id, reason } => {
                self.overlay = None;
                match reason {
                    Some(reason) => self.send(Request::Lock { id, reason }),
                    None => self.server_action(&id, ServerOp::Lock),
                }
            }
            Effect::Kept(verb) => {
                self.overlay = None;
                self.info = Some(match verb {
                    Verb::Delete => "not deleted".into(),
                    Verb::Server(op) => format!("nothing to {}", op.verb()),
                });
            }
            Effect::SwitchProject { id, name } => {
                self.overlay = None;
                self.send(Request::SwitchProject { id, name });
            }
            Effect::SwitchCloud(c) => {
                self.overlay = None;
                self.switch_cloud(c);
            }
            Effect::Login(p) => {
                self.profile = Some(p.clone());
                self.send(Request::Login(Box::new(ProfileBox(p))));
            }
            Effect::Create(overlays::Create::Upload(spec)) => {
                self.transfer_ids += 1;
                self.send(Request::Upload { id: self.transfer_ids, spec });
                self.overlay = Some(Overlay::Transfers(overlays::Transfers::newest(self.transfers.len() + 1)));
            }
            Effect::Create(overlays::Create::Download(spec)) => {
                self.transfer_ids += 1;
                self.send(Request::Download { id: self.transfer_ids, spec });
                self.overlay = Some(Overlay::Transfers(overlays::Transfers::newest(self.transfers.len() + 1)));
            }
            Effect::Create(c) => self.send(Request::Create(c)),
            Effect::CancelTransfer(id) => self.send(Request::CancelTransfer(id)),
            Effect::CreateKeypair { name, source } => {
                let cloud = self.session.as_ref().map(|s| s.cloud.clone()).unwrap_or_default();
                self.send(Request::CreateKeypair { cloud, name, source });
            }
            Effect::Ssh(call) => {
                self.overlay = None;
                self.ssh = Some(*call);
            }
            Effect::ImportKeypair { name, public_key } => self.send(Request::ImportKeypair { name, public_key }),
            Effect::Launch => {
                if let Some(Overlay::Wizard(w)) = &mut self.overlay
                    && let Ok(spec) = w.spec()
                {
                    w.busy = true;
                    w.error = None;
                    self.send(Request::Launch(spec));
                }
            }
        }
    }

    fn switch_cloud(&mut self, c: Profile) {
        if c.credentials().is_some() {
            self.profile = Some(c.clone());
            self.send(Request::Login(Box::new(ProfileBox(c))));
        } else {
            let mut form = LoginForm::new(&c);
            form.reason = Some(format!("log in to {}", c.name));
            self.overlay = Some(Overlay::Login(form));
        }
    }

    pub fn run_command(&mut self, cmd: &str) {
        let cmd = cmd.trim();
        if let Some(v) = View::ALL.iter().find(|v| v.command() == cmd) {
            self.go_to(*v);
            return;
        }
        if let Some((_, v)) = overlays::palette::ALIASES.iter().find(|(a, _)| *a == cmd) {
            self.go_to(*v);
            return;
        }
        match cmd.split_once(' ').unwrap_or((cmd, "")) {
            ("launch", _) => self.on_action(Action::Launch),
            ("project", _) => self.on_action(Action::SwitchProject),
            ("refresh", _) => self.on_action(Action::Refresh),
            ("help", _) => self.on_action(Action::Help),
            ("quit" | "q", _) => self.quit = true,
            ("theme", "") => self.on_action(Action::SwitchTheme),
            ("theme", name) => {
                if self.set_theme(name.trim()) {
                    self.remember_theme();
                } else {
                    let names: Vec<_> = self.cfg.themes.iter().map(|t| t.name.clone()).collect();
                    self.error = Some((format!("no theme {name}; there are {}", names.join(", ")), None));
                }
            }
            _ => self.error = Some((format!("unknown command :{cmd} (Tab completes)"), None)),
        }
    }

    fn remember_theme(&mut self) {
        self.cfg.state.theme = Some(self.theme().name.clone());
        self.save_state();
        self.info = Some(format!("theme {}", self.theme().name));
    }

    pub fn go_to(&mut self, v: View) {
        self.switch_view(v);
        self.sync_visibility();
    }

    fn switch_view(&mut self, v: View) {
        if v.admin_only() && !self.admin() {
            self.error = Some((format!("{} is for administrators", v.title()), None));
            return;
        }
        if v != self.view {
            self.history.push(self.view);
        }
        self.view = v;
        self.detail = None;
        self.load(v);
    }

    fn load(&mut self, v: View) {
        match v.kind() {
            Some(k) => self.send(Request::List(k)),
            None => self.send(Request::Overview),
        }
    }

    /// The instance an action applies to: the open detail's, or the selected row's.
    fn target_server(&self) -> Option<(String, String)> {
        if let Some(d) = &self.detail {
            return (d.view == View::Servers).then(|| {
                let name = self.tables.servers.get(&d.id).map(|s| s.name.clone()).unwrap_or_default();
                (d.id.clone(), name)
            });
        }
        if self.view != View::Servers {
            return None;
        }
        self.tables.servers.selected().map(|s| (s.id.clone(), s.name.clone()))
    }

    fn server_action(&mut self, id: &str, op: ServerOp) {
        self.expect_state(id, op);
        self.send(Request::Action { id: id.to_string(), op });
    }

    /// Shows the state the cloud will report at once for `op`; the real one replaces it.
    fn expect_state(&mut self, id: &str, op: ServerOp) {
        if op.has_task()
            && let Some(s) = self.tables.servers.get(id).cloned()
        {
            self.expected.insert(id.to_string(), s.clone());
            let (status, task) = op.expected();
            let mut shown = s;
            shown.status =
                if op == ServerOp::Delete || op == ServerOp::Stop || op == ServerOp::Start || status.is_empty() {
                    shown.status
                } else {
                    status.to_string()
                };
            shown.task_state = Some(task.to_string());
            self.tables.servers.expecting.insert(id.to_string());
            let ctx = cctx!(self);
            self.tables.servers.upsert(shown, &ctx);
        }
    }

    pub fn on_action(&mut self, action: Action) {
        if let Some(d) = &mut self.detail
            && let Some(effect) = d.action(action)
        {
            match effect {
                DetailEffect::Handled => {}
                DetailEffect::Close => self.detail = None,
                DetailEffect::Send(r) => self.send(*r),
                DetailEffect::Unfollow => self.next_console = None,
                DetailEffect::Reload => self.load(self.view),
            }
            return;
        }
        let view = self.view;
        let kind = view.kind();
        match action {
            Action::Quit => self.quit = true,
            Action::Up | Action::Down | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom => {
                if let Some(k) = kind {
                    self.tables.get_mut(k).navigate(action);
                }
            }
            Action::NextTab | Action::PrevTab => {
                let visible: Vec<View> =
                    View::ALL.iter().copied().filter(|v| !v.admin_only() || self.admin()).collect();
                let i = visible.iter().position(|v| *v == view).unwrap_or(0);
                let n = visible.len();
                let next = if action == Action::NextTab { (i + 1) % n } else { (i + n - 1) % n };
                self.go_to(visible[next]);
            }
            // A group's "detail" is its rules: the Rules view, filtered to the group.
            Action::Select if view == View::SecGroups && self.detail.is_none() => {
                if let Some(g) = self.tables.secgroups.selected() {
                    let name = if g.name.is_empty() { g.id.clone() } else { g.name.clone() };
                    self.switch_view(View::SecRules);
                    let ctx = cctx!(self);
                    self.tables.secrules.set_filter(&name, &ctx);
                }
            }
            Action::Select => {
                if let Some((id, _)) = kind.and_then(|k| self.tables.get(k).selected_row()) {
                    self.open_detail(view, id, Tab::Fields);
                }
            }
            Action::Back => {
                // Esc first drops the marks and a bulk action's results, then goes back.
                if let Some(k) = kind
                    && self.clear_marks(k)
                {
                    return;
                }
                if let Some(v) = self.history.pop() {
                    self.view = v;
                } else {
                    self.error = None;
                }
            }
            Action::Palette => self.overlay = Some(Overlay::Palette(Palette::new())),
            Action::Filter if view != View::Overview => {
                let current = kind.map(|k| self.tables.get(k).filter().to_string()).unwrap_or_default();
                self.overlay = Some(Overlay::Filter(Filter::new(&current)));
            }
            Action::Help => self.overlay = Some(Overlay::Help(Help::default())),
            Action::Refresh => self.load(view),
            Action::Retry => {
                if let Some((_, Some(req))) = self.error.take() {
                    if matches!(req, Request::Delete { .. }) {
                        self.delete(req);
                    } else {
                        self.send(req);
                    }
                }
            }
            Action::SortNext | Action::SortReverse => {
                if let Some(k) = kind {
                    let ctx = cctx!(self);
                    let t = self.tables.get_mut(k);
                    if action == Action::SortNext { t.sort_next(&ctx) } else { t.sort_reverse(&ctx) }
                }
            }
            // `c` creates what the view lists where there is a form for it.
            Action::Launch if matches!(view, View::Networks | View::Subnets) => {
                self.overlay = Some(Overlay::Create(CreateForm::network()));
            }
            Action::Launch if matches!(view, View::IdProjects | View::Users | View::Assignments) => {
                use crate::overlays::create::What;
                let what = match view {
                    View::IdProjects => What::Project,
                    View::Users => What::User,
                    _ => What::Grant,
                };
                self.overlay = Some(Overlay::Create(CreateForm::identity(what)));
            }
            Action::Launch if view == View::Keypairs => self.overlay = Some(Overlay::KeyForm(Box::default())),
            Action::Launch if view == View::Images => self.overlay = Some(Overlay::Create(CreateForm::upload())),
            Action::Launch if view == View::SecGroups => self.overlay = Some(Overlay::Create(CreateForm::secgroup())),
            Action::Launch if view == View::SecRules => {
                let groups = self.group_choices();
                // The group the rules are filtered to, or the only one.
                let filter = self.tables.secrules.filter().to_string();
                let default = groups
                    .iter()
                    .find(|(n, id)| !filter.is_empty() && (*n == filter || *id == filter))
                    .or(if groups.len() == 1 { groups.first() } else { None })
                    .map(|(n, _)| n.clone());
                self.overlay = Some(Overlay::Create(CreateForm::secrule(groups, default.as_deref())));
                self.send(Request::List(Kind::SecGroups));
            }
            Action::SecurityGroups => self.ask_server_groups(),
            Action::Launch if view == View::Volumes => {
                let f = CreateForm::volume(self.image_choices(), self.snapshot_choices(), self.volume_choices(), None);
                self.overlay = Some(Overlay::Create(f));
                self.send(Request::List(Kind::Images));
                self.send(Request::List(Kind::Snapshots));
            }
            Action::Launch if view == View::Snapshots => {
                let from = self.tables.snapshots.selected().map(|s| {
                    use crate::table::Resource;
                    s.name().to_string()
                });
                let f = CreateForm::volume(
                    self.image_choices(),
                    self.snapshot_choices(),
                    self.volume_choices(),
                    from.as_deref(),
                );
                self.overlay = Some(Overlay::Create(f));
            }
            Action::Attach if view == View::Volumes => self.volume_form(crate::overlays::create::What::Attach),
            Action::Detach => self.volume_form(crate::overlays::create::What::Detach),
            Action::Extend => self.volume_form(crate::overlays::create::What::Extend),
            Action::Snapshot if view == View::Servers => self.ask_snapshot(),
            Action::Snapshot => self.volume_form(crate::overlays::create::What::VolSnapshot),
            Action::ToImage => self.volume_form(crate::overlays::create::What::ToImage),
            Action::Download => self.ask_download(view),
            Action::Transfers => {
                self.overlay = Some(Overlay::Transfers(overlays::Transfers::newest(self.transfers.len())))
            }
            Action::Launch if view == View::ServerGroups => self.ask_server_group(),
            Action::Launch if view == View::Aggregates => {
                self.overlay = Some(Overlay::Create(CreateForm::aggregate()));
            }
            Action::Attach if view == View::Aggregates => self.ask_aggregate_hosts(),
            Action::Diagnostics if view == View::Aggregates => self.ask_aggregate_metadata(),
            Action::AddPort => self.ask_add_port(),
            Action::RemovePort => self.ask_remove_port(),
            Action::Diagnostics => self.diagnostics(),
            Action::Launch if view == View::Ports => {
                let nets: Vec<(String, String)> =
                    self.tables.networks.items.iter().map(|n| (n.name.clone(), n.id.clone())).collect();
                let only = (nets.len() == 1).then(|| nets[0].0.clone());
                self.overlay = Some(Overlay::Create(CreateForm::port(nets, only.as_deref())));
                self.send(Request::List(Kind::Networks));
            }
            Action::Launch => {
                self.overlay = Some(Overlay::Wizard(Box::default()));
                self.push_wizard_data();
                for k in
                    [Kind::Images, Kind::Flavors, Kind::Networks, Kind::SecGroups, Kind::Keypairs, Kind::ServerGroups]
                {
                    self.send(Request::List(k));
                }
                self.send(Request::Overview);
            }
            Action::AllProjects => self.toggle_all_projects(),
            Action::Attach => self.attach(),
            Action::WebConsole => self.web_console(),
            Action::Ssh => self.ssh_to(),
            Action::Copy => self.copy_selected(),
            Action::ToggleEnabled => match kind.and_then(|k| Some((k, self.tables.get(k).selected_enabled()?))) {
                Some((k, (id, name, on))) => self.send(Request::SetEnabled { kind: k, id, name, enabled: !on }),
                None => self.info = Some(format!("nothing to disable in {}", view.title())),
            },
            Action::SwitchProject => self.send(Request::Projects),
            Action::SwitchTheme => {
                self.cfg.theme = (self.cfg.theme + 1) % self.cfg.themes.len();
                self.remember_theme();
            }
            Action::Mark => {
                if let Some(k) = kind {
                    self.tables.get_mut(k).toggle_pick();
                }
            }
            Action::Delete
            | Action::Start
            | Action::Stop
            | Action::Reboot
            | Action::HardReboot
            | Action::Pause
            | Action::Suspend
            | Action::Lock
            | Action::Shelve
                if self.detail.is_none() && kind.is_some_and(|k| !self.tables.get(k).picked_rows().is_empty()) =>
            {
                self.ask_bulk(action)
            }
            Action::Delete => self.ask_delete(),
            Action::Start
            | Action::Stop
            | Action::Reboot
            | Action::HardReboot
            | Action::Pause
            | Action::Suspend
            | Action::Lock
            | Action::Shelve
            | Action::Console => self.instance_action(action),
            Action::Rebuild
            | Action::Rescue
            | Action::Restore
            | Action::ForceDelete
            | Action::ResetState
            | Action::Resize
            | Action::Migrate
            | Action::Evacuate
            | Action::LiveMigrate => self.lifecycle(action),
            _ => {}
        }
    }

    fn image_choices(&self) -> Vec<(String, String)> {
        self.tables.images.items.iter().map(|i| (i.name.clone(), i.id.clone())).collect()
    }

    fn volume_choices(&self) -> Vec<(String, String)> {
        use crate::table::Resource;
        self.tables.volumes.items.iter().map(|v| (v.name().to_string(), v.id.clone())).collect()
    }

    fn snapshot_choices(&self) -> Vec<(String, String)> {
        use crate::table::Resource;
        self.tables.snapshots.items.iter().map(|s| (s.name().to_string(), s.id.clone())).collect()
    }

    /// A form acting on the selected volume (Volumes view, or a volume's detail).
    fn volume_form(&mut self, what: crate::overlays::create::What) {
        use crate::table::Resource;
        let view = self.detail.as_ref().map_or(self.view, |d| d.view);
        if view != View::Volumes {
            self.info = Some("volumes only (open the Volumes view)".into());
            return;
        }
        let v = match &self.detail {
            Some(d) => self.tables.volumes.items.iter().find(|v| v.id == d.id),
            None => self.tables.volumes.selected(),
        };
        let Some(v) = v else {
            self.info = Some("no volume selected".into());
            return;
        };
        let attached = v.attachments.first().map(|a| {
            let name = v.attached_names.first().filter(|n| !n.is_empty()).cloned().unwrap_or(a.server_id.clone());
            (a.server_id.clone(), name)
        });
        use crate::overlays::create::What;
        match what {
            What::Attach if attached.is_some() => {
                self.info = Some(format!("volume {} is attached already: detach it first", v.name()));
                return;
            }
            What::Detach if attached.is_none() => {
                self.info = Some(format!("volume {} is not attached", v.name()));
                return;
            }
            _ => {}
        }
        let volume = crate::overlays::create::VolumeRef {
            id: v.id.clone(),
            name: v.name().to_string(),
            size_gb: v.size,
            attached,
        };
        let servers: Vec<(String, String)> =
            self.tables.servers.items.iter().map(|s| (s.name.clone(), s.id.clone())).collect();
        self.overlay = Some(Overlay::Create(CreateForm::on_volume(what, volume, servers)));
    }

    /// The cloud answered a create form's request: nothing pending, the form closed.
    fn create_form_done(&mut self) {
        self.pending.remove(&Pending::Create);
        if matches!(self.overlay, Some(Overlay::Create(_))) {
            self.overlay = None;
        }
    }

    /// Security groups to pick from by name or ID (name, ID).
    fn group_choices(&self) -> Vec<(String, String)> {
        self.tables.secgroups.items.iter().map(|g| (g.name.clone(), g.id.clone())).collect()
    }

    /// `F` on an instance: which security groups to add or remove (Nova's add/removeSecurityGroup).
    fn ask_server_groups(&mut self) {
        let Some((id, _)) = self.target_server() else {
            self.info = Some("security groups: select an instance (Instances view)".into());
            return;
        };
        let Some(s) = self.tables.servers.items.iter().find(|s| s.id == id) else { return };
        let now: Vec<String> = s.raw["security_groups"]
            .as_array()
            .map(|a| a.iter().filter_map(|g| g["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let (id, name) = (s.id.clone(), s.name.clone());
        self.overlay = Some(Overlay::Create(CreateForm::server_groups((id, name, now), self.group_choices())));
        self.send(Request::List(Kind::SecGroups));
    }

    /// `D` in the images view (or an image's detail): asks where to save the image's data.
    fn ask_download(&mut self, view: View) {
        let view = self.detail.as_ref().map_or(view, |d| d.view);
        if view != View::Images {
            self.info = Some("download: images only (open the Images view)".into());
            return;
        }
        let t = &self.tables.images;
        let img = match &self.detail {
            Some(d) => t.items.iter().find(|i| i.id == d.id),
            None => t.selected(),
        };
        let Some(img) = img else {
            self.info = Some("no image selected".into());
            return;
        };
        if img.status != "active" {
            self.info = Some(format!("image {} has no data to download (it is {})", img.name, img.status));
            return;
        }
        let suggested = crate::transfer::default_download_path(&img.name, img.disk_format.as_deref());
        self.overlay = Some(Overlay::Create(CreateForm::download(&img.id, &img.name, &suggested)));
    }

    /// An upload or download moved on; when it ends, says how (and reloads images after an
    /// upload, which made or deleted one).
    fn transfer_moved(&mut self, p: crate::transfer::Progress) {
        use crate::transfer::{Phase, Way, bytes};
        let ended = p.phase.finished();
        match self.transfers.iter_mut().find(|t| t.id == p.id) {
            Some(t) => *t = p.clone(),
            None => self.transfers.push(p.clone()),
        }
        if !ended {
            return;
        }
        // Keep the running ones and the last few that ended.
        const KEEP_ENDED: usize = 8;
        let ended_count = self.transfers.iter().filter(|t| t.phase.finished()).count();
        let mut drop = ended_count.saturating_sub(KEEP_ENDED);
        self.transfers.retain(|t| {
            let gone = drop > 0 && t.phase.finished();
            drop -= usize::from(gone);
            !gone
        });
        if p.way == Way::Upload {
            self.send(Request::List(Kind::Images));
        }
        let took = format!("{:.1} s", p.elapsed.as_secs_f64());
        match &p.phase {
            Phase::Done => {
                self.info = Some(match p.way {
                    Way::Upload => {
                        format!("uploaded image {} ({} in {took}, checksums match)", p.name, bytes(p.done as f64))
                    }
                    Way::Download => format!(
                        "downloaded image {} to {} ({} in {took}, checksums match)",
                        p.name,
                        p.file.display(),
                        bytes(p.done as f64)
                    ),
                })
            }
            Phase::Cancelled => {
                self.info = Some(format!("{} {}: {}", verb(p.way), p.name, overlays::transfers::cancelled_words(&p)))
            }
            Phase::Failed(m) => self.error = Some((format!("{} {} failed: {m}", verb(p.way), p.name), None)),
            _ => {}
        }
        fn verb(w: Way) -> &'static str {
            if w == Way::Upload { "upload of" } else { "download of" }
        }
    }

    /// Ctrl-d: asks to delete the open detail's resource or the selected row, in any view that
    /// lists something deletable; elsewhere says so.
    fn ask_delete(&mut self) {
        let view = self.detail.as_ref().map_or(self.view, |d| d.view);
        let Some(kind) = view.kind().filter(|k| k.deletable()) else {
            self.info = Some(format!("nothing to delete in {}", view.title()));
            return;
        };
        let t = self.tables.get(kind);
        let row = match &self.detail {
            Some(d) => t.row(&d.id),
            None => t.selected_row(),
        };
        match row {
            None => self.error = Some((format!("select {} {} first", article(kind.noun()), kind.noun()), None)),
            Some((id, name)) if t.is_deleting(&id) => self.info = Some(format!("{name} is being deleted")),
            Some((id, name)) => self.overlay = Some(Overlay::Confirm(Confirm::one(kind, id, name))),
        }
    }

    /// `A`: an admin's lists of instances, images, networks and ports cover every project (with
    /// a PROJECT column) or only the session's project; the lists are read again.
    fn toggle_all_projects(&mut self) {
        if !self.admin() {
            self.error = Some(("all projects is for administrators".into(), None));
            return;
        }
        self.all_projects = !self.all_projects;
        self.send(Request::AllProjects(self.all_projects));
        if self.all_projects && self.project_names.is_empty() {
            self.send(Request::ProjectNames);
        }
        for &k in Kind::ALL {
            if k.scoped() {
                // Rows of the other scope must not linger while the new list loads.
                let t = self.tables.get_mut(k);
                t.clear_picks();
                if Some(k) == self.view.kind() || k == Kind::Servers {
                    self.send(Request::List(k));
                }
            }
        }
        self.info = Some(if self.all_projects { "all projects".into() } else { "this project only".into() });
    }

    /// Drops a table's marks and finished bulk results; whether there were any.
    fn clear_marks(&mut self, kind: Kind) -> bool {
        let waiting: Vec<String> = self.bulk.iter().flat_map(|b| b.waiting.keys().cloned()).collect();
        let t = self.tables.get_mut(kind);
        let had = !t.picked_rows().is_empty() || t.has_progress();
        t.clear_picks();
        t.retain_progress(&waiting);
        had
    }

    /// Start/stop/reboot/delete with rows marked: one question naming the count.
    fn ask_bulk(&mut self, action: Action) {
        let Some(kind) = self.view.kind() else { return };
        let verb = match action {
            Action::Delete if kind.deletable() => Verb::Delete,
            Action::Delete => {
                self.info = Some(format!("nothing to delete in {}", self.view.title()));
                return;
            }
            _ if kind != Kind::Servers => return,
            Action::Start => Verb::Server(ServerOp::Start),
            Action::Stop => Verb::Server(ServerOp::Stop),
            Action::Reboot => Verb::Server(ServerOp::Reboot),
            Action::HardReboot => Verb::Server(ServerOp::HardReboot),
            Action::Pause | Action::Suspend | Action::Lock | Action::Shelve => {
                // The marked rows all in the "done" state undo it; otherwise they all do it.
                let picked = self.tables.get(kind).picked_rows();
                let all = |f: &dyn Fn(&crate::model::Server) -> bool| {
                    picked.iter().all(|(id, _)| self.tables.servers.get(id).is_some_and(f))
                };
                Verb::Server(toggled(action, &|s| all(&|x| toggle_state(action, x) == Some(s))))
            }
            _ => return,
        };
        let targets = self.tables.get(kind).picked_rows();
        self.overlay = Some(Overlay::Confirm(Confirm { verb, kind, targets }));
    }

    /// Carries out a confirmed question; more than one row becomes a bulk action whose rows
    /// show their progress and whose failures are listed together at the end.
    fn confirmed(&mut self, c: Confirm) {
        let Confirm { verb, kind, targets } = c;
        if targets.len() > 1 {
            let t = self.tables.get_mut(kind);
            t.clear_picks();
            for (id, _) in &targets {
                t.set_progress(id, Some(Progress::Sent));
            }
            self.bulk = Some(Bulk {
                verb,
                kind,
                total: targets.len(),
                waiting: targets.iter().cloned().collect(),
                failed: Vec::new(),
            });
        }
        for (id, name) in targets {
            match (verb, kind) {
                (Verb::Delete, Kind::Servers) => self.server_action(&id, ServerOp::Delete),
                (Verb::Delete, _) => self.delete(Request::Delete { kind, id, name }),
                (Verb::Server(op), _) => self.server_action(&id, op),
            }
        }
    }

    /// The cloud answered one row of the bulk action (`Some(reason)`: it refused).
    fn bulk_answer(&mut self, id: &str, failure: Option<String>) {
        let Some(b) = &mut self.bulk else { return };
        let Some(name) = b.waiting.remove(id) else { return };
        let progress = if failure.is_some() { Progress::Failed } else { Progress::Done };
        if let Some(why) = failure {
            b.failed.push((if name.is_empty() { id.to_string() } else { name }, why));
        }
        let kind = b.kind;
        // A deleted row is gone already; it needs no tick.
        if self.tables.get(kind).row(id).is_some() {
            self.tables.get_mut(kind).set_progress(id, Some(progress));
        }
        if !b.waiting.is_empty() {
            return;
        }
        let Some(b) = self.bulk.take() else { return };
        let (word, noun) = (b.verb.word(), b.kind.noun());
        if b.failed.is_empty() {
            self.info = Some(format!("{word}: all {} {noun}s accepted", b.total));
        } else {
            let title = format!("{word}: {} of {} {noun}s failed", b.failed.len(), b.total);
            self.error = Some((title.clone(), None));
            self.overlay = Some(Overlay::Report(Report { title, failed: b.failed }));
        }
    }

    /// Sends a (non-instance) delete, showing the row struck through until the cloud answers.
    fn delete(&mut self, req: Request) {
        if let Request::Delete { kind, id, .. } = &req {
            self.tables.get_mut(*kind).deleting().insert(id.clone());
        }
        self.send(req);
    }

    /// The snapshot dialog for the marked instances, else the selected one.
    fn ask_snapshot(&mut self) {
        let picked = self.tables.servers.picked_rows();
        let targets = if !picked.is_empty() && self.detail.is_none() {
            picked
        } else {
            match self.target_server() {
                Some(t) => vec![t],
                None => {
                    self.error = Some(("select an instance first".into(), None));
                    return;
                }
            }
        };
        let date = self.clock.unwrap_or_else(Utc::now).format("%Y%m%d-%H%M").to_string();
        self.overlay = Some(Overlay::ServerSnapshot(overlays::ServerSnapshot::new(targets, &date)));
    }

    fn instance_action(&mut self, action: Action) {
        let Some((id, _)) = self.target_server() else {
            self.error = Some(("select an instance first".into(), None));
            return;
        };
        match action {
            Action::Start => self.server_action(&id, ServerOp::Start),
            Action::Stop => self.server_action(&id, ServerOp::Stop),
            Action::Reboot => self.server_action(&id, ServerOp::Reboot),
            Action::HardReboot => self.server_action(&id, ServerOp::HardReboot),
            Action::Pause | Action::Suspend | Action::Lock | Action::Shelve => {
                let server = self.tables.servers.get(&id).cloned();
                let done = |s: ToggleState| server.as_ref().is_some_and(|x| toggle_state(action, x) == Some(s));
                match toggled(action, &done) {
                    ServerOp::Lock => {
                        let name = server.map(|s| s.name).unwrap_or_default();
                        self.overlay = Some(Overlay::LockReason(LockReason::new(id, name)));
                    }
                    op => self.server_action(&id, op),
                }
            }
            Action::Console => self.open_detail(View::Servers, id, Tab::Console),
            _ => {}
        }
    }

    fn open_detail(&mut self, view: View, id: String, tab: Tab) {
        let (d, req) = Detail::open(view, id, tab);
        self.detail = Some(d);
        if let Some(r) = req {
            self.send(r);
        }
    }

    pub fn on_mouse(&mut self, m: MouseEvent) {
        self.mouse(m);
        self.sync_visibility();
    }

    fn mouse(&mut self, m: MouseEvent) {
        // The console pane takes no mouse input (a serial line has none).
        if !matches!(self.screen, Screen::Main) || self.overlay.is_some() || self.console.is_some() {
            return;
        }
        match m.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                let tab =
                    self.tab_areas.borrow().iter().find(|(r, _)| r.contains((m.column, m.row).into())).map(|x| x.1);
                if let Some(v) = tab {
                    self.go_to(v);
                    return;
                }
                if self.detail.is_some() {
                    return;
                }
                let hit = self.view.kind().is_some_and(|k| self.tables.get_mut(k).click(m.column, m.row));
                if hit {
                    // A second click on the same row opens it.
                    let now = Instant::now();
                    if let Some((t, row)) = self.last_click
                        && row == m.row
                        && now.duration_since(t) < Duration::from_millis(400)
                    {
                        self.last_click = None;
                        self.on_action(Action::Select);
                        return;
                    }
                    self.last_click = Some((now, m.row));
                }
            }
            MouseEventKind::ScrollDown => self.on_action(Action::Down),
            MouseEventKind::ScrollUp => self.on_action(Action::Up),
            _ => {}
        }
    }

    // ---------------------------------------------------------------- drawing

    pub fn draw(&self, f: &mut Frame) {
        let area = f.area();
        let theme = self.theme();
        f.render_widget(Block::default().style(theme.base()), area);
        match &self.screen {
            Screen::Picker(p) => {
                p.draw(f, area, theme);
                return;
            }
            Screen::Login(form) => {
                let [title, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
                f.render_widget(
                    Paragraph::new(Span::styled(" meridian — OpenStack in a terminal", theme.title())),
                    title,
                );
                form.draw(f, rest, theme);
                return;
            }
            Screen::Main => {}
        }
        let [tabs, body, hints, status] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1), Constraint::Length(1)])
                .areas(area);
        self.draw_tabs(f, tabs, theme);
        if let Some(pane) = &self.console {
            pane.draw(f, body, theme);
        } else if let Some(d) = &self.detail {
            let mut raw = d.view.kind().and_then(|k| self.tables.get(k).raw_of(&d.id));
            // A volume's fields start from where it is attached, by server name and device.
            if d.view == View::Volumes
                && d.shows_fields()
                && let Some(v) = self.tables.volumes.items.iter().find(|v| v.id == d.id)
            {
                raw = raw.map(|r| crate::views::volumes::with_attached_to(r, v));
            }
            // A server group's members by name.
            if d.view == View::ServerGroups
                && d.shows_fields()
                && let Some(g) = self.tables.server_groups.items.iter().find(|g| g.id == d.id)
            {
                raw = raw.map(|r| crate::views::server_groups::with_member_names(r, g));
            }
            d.draw(f, body, theme, raw);
        } else {
            match self.view.kind() {
                None => overview::draw(self.overview.as_ref(), f, body, theme),
                Some(k) => {
                    let busy = self.pending.contains(&Pending::List(k));
                    self.tables.get(k).draw(f, body, theme, &cctx!(self), busy);
                }
            }
        }
        self.draw_hints(f, hints, theme);
        self.draw_status(f, status, theme);
        if let Some(o) = &self.overlay {
            let project_id = self.session.as_ref().map(|s| s.project_id.as_str()).unwrap_or_default();
            let ctx = overlays::Ctx {
                keymap: &self.cfg.keymap,
                clouds: &self.cfg.clouds,
                project_id,
                transfers: &self.transfers,
            };
            o.draw(f, area, theme, &ctx);
        }
    }

    fn draw_tabs(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let mut areas = self.tab_areas.borrow_mut();
        areas.clear();
        let mut x = area.x;
        let mut spans = Vec::new();
        for &v in View::ALL {
            if v.admin_only() && !self.admin() {
                continue;
            }
            let label = format!(" {} ", v.title());
            let w = label.chars().count() as u16;
            if x + w > area.x + area.width {
                break;
            }
            areas.push((Rect { x, y: area.y, width: w, height: 1 }, v));
            x += w;
            let style = if v == self.view { theme.selected().add_modifier(Modifier::BOLD) } else { theme.accent() };
            spans.push(Span::styled(label, style));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    fn draw_hints(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        if let Some(pane) = &self.console {
            return pane.draw_hints(f, area, theme);
        }
        let km = &self.cfg.keymap;
        let actions: &[(Action, &str)] = if let Some(d) = &self.detail {
            if d.tab == Tab::Console {
                &[(Action::Back, "back"), (Action::NextTab, "tab"), (Action::Follow, "follow"), (Action::Up, "scroll")]
            } else if d.tab == Tab::Interfaces {
                &[
                    (Action::Back, "back"),
                    (Action::NextTab, "tab"),
                    (Action::AddPort, "add port"),
                    (Action::RemovePort, "remove port"),
                    (Action::Diagnostics, "diagnostics"),
                ]
            } else {
                &[
                    (Action::Back, "back"),
                    (Action::NextTab, "tab"),
                    (Action::ToggleRaw, "json/yaml"),
                    (Action::Stop, "stop"),
                ]
            }
        } else if self.view == View::Servers {
            &[
                (Action::Select, "detail"),
                (Action::Launch, "launch"),
                (Action::Start, "start"),
                (Action::Stop, "stop"),
                (Action::Reboot, "reboot"),
                (Action::Delete, "delete"),
                (Action::Console, "console"),
                (Action::Mark, "mark"),
                (Action::Attach, "attach"),
                (Action::Ssh, "ssh"),
                (Action::Help, "help"),
            ]
        } else if self.view == View::Assignments {
            &[(Action::Launch, "grant"), (Action::Delete, "revoke"), (Action::Filter, "filter"), (Action::Help, "help")]
        } else if matches!(self.view, View::Networks | View::Subnets | View::Ports | View::Keypairs) {
            &[
                (Action::Select, "detail"),
                (Action::Launch, "create"),
                (Action::Filter, "filter"),
                (Action::SortNext, "sort"),
                (Action::Delete, "delete"),
                (Action::Help, "help"),
            ]
        } else if matches!(self.view, View::IdProjects | View::Users) {
            &[
                (Action::Select, "detail"),
                (Action::Launch, "create"),
                (Action::ToggleEnabled, "disable/enable"),
                (Action::Filter, "filter"),
                (Action::Delete, "delete"),
                (Action::Help, "help"),
            ]
        } else if self.view == View::Volumes {
            &[
                (Action::Launch, "create"),
                (Action::Attach, "attach"),
                (Action::Detach, "detach"),
                (Action::Extend, "extend"),
                (Action::Snapshot, "snapshot"),
                (Action::ToImage, "to image"),
                (Action::Delete, "delete"),
                (Action::Help, "help"),
            ]
        } else if self.view == View::ServerGroups {
            &[
                (Action::Select, "members"),
                (Action::Launch, "create"),
                (Action::Filter, "filter"),
                (Action::Delete, "delete"),
                (Action::Help, "help"),
            ]
        } else if self.view == View::Aggregates {
            &[
                (Action::Select, "detail"),
                (Action::Launch, "create"),
                (Action::Attach, "hosts/zone"),
                (Action::Diagnostics, "metadata"),
                (Action::Filter, "filter"),
                (Action::Delete, "delete"),
                (Action::Help, "help"),
            ]
        } else if self.view == View::Snapshots {
            &[
                (Action::Select, "detail"),
                (Action::Launch, "volume from it"),
                (Action::Filter, "filter"),
                (Action::Delete, "delete"),
                (Action::Help, "help"),
            ]
        } else if self.view == View::SecGroups {
            &[
                (Action::Select, "rules"),
                (Action::Launch, "create"),
                (Action::Filter, "filter"),
                (Action::SortNext, "sort"),
                (Action::Delete, "delete"),
                (Action::Help, "help"),
            ]
        } else if self.view == View::SecRules {
            &[
                (Action::Launch, "add rule"),
                (Action::Filter, "filter"),
                (Action::Delete, "delete"),
                (Action::Back, "back"),
                (Action::Help, "help"),
            ]
        } else if self.view == View::Images {
            &[
                (Action::Select, "detail"),
                (Action::Launch, "upload"),
                (Action::Download, "download"),
                (Action::Transfers, "transfers"),
                (Action::Filter, "filter"),
                (Action::Delete, "delete"),
                (Action::Help, "help"),
            ]
        } else if self.view.kind().is_some_and(|k| k.deletable()) {
            &[
                (Action::Select, "detail"),
                (Action::Palette, "views"),
                (Action::Filter, "filter"),
                (Action::SortNext, "sort"),
                (Action::Delete, "delete"),
                (Action::Help, "help"),
            ]
        } else {
            &[
                (Action::Select, "detail"),
                (Action::Palette, "views"),
                (Action::Filter, "filter"),
                (Action::SortNext, "sort"),
                (Action::Help, "help"),
            ]
        };
        let mut spans = Vec::new();
        // An instance waiting for an answer says which key gives it, first.
        if let Some(hint) = self.waiting_hint(theme) {
            spans.extend(hint);
        }
        let all = [(Action::AllProjects, if self.all_projects { "this project" } else { "all projects" })];
        let scoped = self.detail.is_none() && self.admin() && self.view.kind().is_some_and(Kind::scoped);
        let extra: &[(Action, &str)] = if scoped { &all } else { &[] };
        for (a, label) in extra.iter().chain(actions) {
            spans.push(Span::styled(format!("<{}>", km.hint(*a)), theme.accent()));
            spans.push(Span::styled(format!("{label} "), theme.muted()));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    fn draw_status(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let mut spans = Vec::new();
        let spin = if self.pending.is_empty() { " " } else { SPINNER[self.spinner] };
        spans.push(Span::styled(format!("{spin} "), theme.accent()));
        if let Some(s) = &self.session {
            spans.push(Span::styled(format!("{}:{}", s.cloud, s.project), theme.title()));
            spans.push(Span::styled(format!(" {}{}", s.user, if s.admin { " (admin)" } else { "" }), theme.muted()));
        }
        if !self.live.is_empty() {
            spans.push(Span::styled(format!(" │ {}", self.live), theme.muted()));
        }
        // A running transfer stays in sight while its overlay is closed.
        let running: Vec<&crate::transfer::Progress> = self.transfers.iter().filter(|t| !t.phase.finished()).collect();
        if let Some(t) = running.first()
            && !matches!(self.overlay, Some(Overlay::Transfers(_)))
        {
            let arrow = if t.way == crate::transfer::Way::Upload { "↑" } else { "↓" };
            let more = if running.len() > 1 { format!(" (+{})", running.len() - 1) } else { String::new() };
            spans.push(Span::styled(
                format!(
                    " │ {arrow} {} {}{more} <{}>",
                    t.name,
                    overlays::transfers::figures(t),
                    self.cfg.keymap.hint(Action::Transfers)
                ),
                theme.accent(),
            ));
        }
        if let Some((msg, retry)) = &self.error {
            spans.push(Span::styled(" │ ✗ ", theme.error()));
            // The retry key first: a long message is cut at the right edge.
            if retry.is_some() {
                spans.push(Span::styled(format!("<{}>retry ", self.cfg.keymap.hint(Action::Retry)), theme.accent()));
            }
            spans.push(Span::styled(msg.clone(), theme.error()));
        } else if let Some(i) = &self.info {
            spans.push(Span::styled(format!(" │ {i}"), theme.accent()));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }
}

/// `a` or `an` before a noun (`an image`, `a key pair`).
fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// The state a toggle key (pause, suspend, lock) undoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ToggleState {
    Paused,
    Suspended,
    Locked,
    Shelved,
}

/// The state of `s` that `action` would undo, if `s` is in it.
fn toggle_state(action: Action, s: &crate::model::Server) -> Option<ToggleState> {
    match action {
        Action::Pause if s.status == "PAUSED" => Some(ToggleState::Paused),
        Action::Suspend if s.status == "SUSPENDED" => Some(ToggleState::Suspended),
        Action::Lock if s.raw["locked"] == true => Some(ToggleState::Locked),
        Action::Shelve if matches!(s.status.as_str(), "SHELVED" | "SHELVED_OFFLOADED") => Some(ToggleState::Shelved),
        _ => None,
    }
}

/// What a toggle key does: undo when `done(its state)` holds, else do.
fn toggled(action: Action, done: &dyn Fn(ToggleState) -> bool) -> ServerOp {
    match action {
        Action::Pause if done(ToggleState::Paused) => ServerOp::Unpause,
        Action::Pause => ServerOp::Pause,
        Action::Suspend if done(ToggleState::Suspended) => ServerOp::Resume,
        Action::Suspend => ServerOp::Suspend,
        Action::Shelve if done(ToggleState::Shelved) => ServerOp::Unshelve,
        Action::Shelve => ServerOp::Shelve,
        _ if done(ToggleState::Locked) => ServerOp::Unlock,
        _ => ServerOp::Lock,
    }
}
