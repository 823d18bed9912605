//! The application state and its three entry points: keys and mouse in, worker responses in,
//! a frame out. Nothing here touches the network: requests go to the worker's channel.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, List, ListItem, ListState, Paragraph, Row, Table, Wrap};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedSender;
use tui_textarea::TextArea;

use crate::component::{Component, Outcome, centered, dialog, field, text_of};
use crate::config::{Profile, State};
use crate::keymap::{Action, Keymap};
use crate::login::{LoginForm, Picker};
use crate::model::{
    Flavor, Hypervisor, Image, Keypair, Network, Project, Server, Service, Transition, power_state_name,
};
use crate::table::{CellCtx, Resource, ResourceTable};
use crate::theme::Theme;
use crate::wizard::Wizard;
use crate::worker::{Kind, Listing, Overview, ProfileBox, Request, Response, ServerOp, SessionInfo};

// Console pane, ssh, key pairs and copy: the glue lives in app/reach.rs (hooks marked `reach:`).
mod reach;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    Overview,
    Servers,
    Flavors,
    Images,
    Networks,
    Keypairs,
    Hypervisors,
    Services,
}

impl View {
    pub const ALL: [View; 8] = [
        View::Overview,
        View::Servers,
        View::Flavors,
        View::Images,
        View::Networks,
        View::Keypairs,
        View::Hypervisors,
        View::Services,
    ];
    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Servers => "Instances",
            View::Flavors => "Flavors",
            View::Images => "Images",
            View::Networks => "Networks",
            View::Keypairs => "Keypairs",
            View::Hypervisors => "Hypervisors",
            View::Services => "Services",
        }
    }
    /// The palette command (`:servers`).
    pub fn command(self) -> &'static str {
        match self {
            View::Overview => "overview",
            View::Servers => "servers",
            View::Flavors => "flavors",
            View::Images => "images",
            View::Networks => "networks",
            View::Keypairs => "keypairs",
            View::Hypervisors => "hypervisors",
            View::Services => "services",
        }
    }
    pub fn kind(self) -> Option<Kind> {
        Some(match self {
            View::Overview => return None,
            View::Servers => Kind::Servers,
            View::Flavors => Kind::Flavors,
            View::Images => Kind::Images,
            View::Networks => Kind::Networks,
            View::Keypairs => Kind::Keypairs,
            View::Hypervisors => Kind::Hypervisors,
            View::Services => Kind::Services,
        })
    }
    /// The view that lists a kind.
    pub fn of_kind(kind: Kind) -> View {
        match kind {
            Kind::Servers => View::Servers,
            Kind::Flavors => View::Flavors,
            Kind::Images => View::Images,
            Kind::Networks => View::Networks,
            Kind::Keypairs => View::Keypairs,
            Kind::Hypervisors => View::Hypervisors,
            Kind::Services => View::Services,
        }
    }
    pub fn admin_only(self) -> bool {
        matches!(self, View::Hypervisors | View::Services)
    }
}

/// Palette commands besides the views, with aliases.
const COMMANDS: &[&str] = &["launch", "project", "theme", "refresh", "help", "quit"];
const ALIASES: &[(&str, View)] = &[("instances", View::Servers), ("vms", View::Servers), ("subnets", View::Networks)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tab {
    Fields,
    Timeline,
    Console,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Raw {
    Fields,
    Json,
    Yaml,
}

struct Detail {
    view: View,
    id: String,
    tab: Tab,
    raw: Raw,
    scroll: u16,
    follow: bool,
    timeline: Option<(Vec<Transition>, &'static str)>,
    console: Option<String>,
    /// Lines of the last drawn body, to clamp scrolling and follow the end.
    body_lines: u16,
    body_height: u16,
}

enum Overlay {
    Palette { input: TextArea<'static>, sel: usize },
    Filter(TextArea<'static>),
    Help { scroll: u16 },
    Confirm { kind: Kind, id: String, name: String },
    Wizard(Box<Wizard>),
    Projects { projects: Vec<Project>, sel: usize },
    Login(LoginForm),
    // reach: the create-key-pair form, the once-only private key, the ssh login-user prompt.
    KeyForm(Box<crate::keys::KeyForm>),
    KeyCreated(Box<crate::keys::Created>),
    SshUser { input: TextArea<'static>, call: Box<crate::ssh::SshCall> },
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
    Action(String),
    Launch,
    Import,
    Projects,
    // reach: a console URL or websocket on its way.
    Attach,
}

fn pending_of(r: &Request) -> Pending {
    match r {
        Request::Login(_) | Request::SwitchProject { .. } => Pending::Login,
        Request::List(k) => Pending::List(*k),
        Request::Overview => Pending::Overview,
        Request::Timeline(_) => Pending::Timeline,
        Request::Console(_) => Pending::Console,
        Request::Action { id, .. } | Request::Delete { id, .. } => Pending::Action(id.clone()),
        Request::Launch(_) => Pending::Launch,
        Request::ImportKeypair { .. } => Pending::Import,
        Request::Projects => Pending::Projects,
        // reach:
        Request::SerialConsole { .. } | Request::ConsoleConnect { .. } => Pending::Attach,
        Request::CreateKeypair { .. } => Pending::Import,
    }
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
    tx: UnboundedSender<Request>,
    pub screen: Screen,
    pub session: Option<SessionInfo>,
    profile: Option<Profile>,
    view: View,
    history: Vec<View>,
    pub servers: ResourceTable<Server>,
    flavors: ResourceTable<Flavor>,
    images: ResourceTable<Image>,
    networks: ResourceTable<Network>,
    keypairs: ResourceTable<Keypair>,
    hypervisors: ResourceTable<Hypervisor>,
    services: ResourceTable<Service>,
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
    pub quit: bool,
    /// A fixed clock (snapshot tests); `None`: the real one.
    pub clock: Option<DateTime<Utc>>,
    cfg: AppConfig,
    tab_areas: Vec<(Rect, View)>,
    last_click: Option<(Instant, u16)>,
    next_console: Option<Instant>,
    next_refresh: Option<Instant>,
    // reach: the open console pane, attach counter, text to copy, ssh to run (app/reach.rs).
    console: Option<crate::console_pane::ConsolePane>,
    console_sessions: u64,
    clipboard: Option<String>,
    ssh: Option<crate::ssh::SshCall>,
}

/// The cell context from the app's fields (a macro, so the tables stay separately borrowable).
macro_rules! cctx {
    ($app:ident) => {
        CellCtx {
            admin: $app.session.as_ref().is_some_and(|s| s.admin),
            now: $app.clock.unwrap_or_else(Utc::now),
            image_names: &$app.image_names,
            flavor_names: &$app.flavor_names,
        }
    };
}

macro_rules! on_table {
    ($app:ident, $view:expr, |$t:ident, $ctx:ident| $body:expr) => {{
        let admin = $app.admin();
        let now = $app.now();
        let $ctx = &CellCtx { admin, now, image_names: &$app.image_names, flavor_names: &$app.flavor_names };
        match $view {
            View::Servers => {
                let $t = &mut $app.servers;
                Some($body)
            }
            View::Flavors => {
                let $t = &mut $app.flavors;
                Some($body)
            }
            View::Images => {
                let $t = &mut $app.images;
                Some($body)
            }
            View::Networks => {
                let $t = &mut $app.networks;
                Some($body)
            }
            View::Keypairs => {
                let $t = &mut $app.keypairs;
                Some($body)
            }
            View::Hypervisors => {
                let $t = &mut $app.hypervisors;
                Some($body)
            }
            View::Services => {
                let $t = &mut $app.services;
                Some($body)
            }
            View::Overview => None,
        }
    }};
}

impl App {
    pub fn new(tx: UnboundedSender<Request>, screen: Screen, cfg: AppConfig) -> App {
        App {
            tx,
            screen,
            session: None,
            profile: None,
            view: View::Servers,
            history: Vec::new(),
            servers: ResourceTable::default(),
            flavors: ResourceTable::default(),
            images: ResourceTable::default(),
            networks: ResourceTable::default(),
            keypairs: ResourceTable::default(),
            hypervisors: ResourceTable::default(),
            services: ResourceTable::default(),
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
            quit: false,
            clock: None,
            cfg,
            tab_areas: Vec::new(),
            last_click: None,
            next_console: None,
            next_refresh: None,
            console: None,
            console_sessions: 0,
            clipboard: None,
            ssh: None,
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

    fn now(&self) -> DateTime<Utc> {
        self.clock.unwrap_or_else(Utc::now)
    }

    fn send(&mut self, r: Request) {
        self.pending.insert(pending_of(&r));
        let _ = self.tx.send(r);
    }

    /// Whether the servers table holds data (the first "data frame", for the benchmark).
    pub fn has_data(&self) -> bool {
        self.servers.loaded
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
        let Some(r) = self.reach_response(r) else { return }; // reach:
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
            }
            Response::Deleted { kind, id, name } => {
                self.pending.remove(&Pending::Action(id.clone()));
                if matches!(&self.error, Some((_, Some(Request::Delete { id: failed, .. }))) if *failed == id) {
                    self.error = None;
                }
                on_table!(self, View::of_kind(kind), |t, ctx| t.remove(&id, ctx));
                if self.detail.as_ref().is_some_and(|d| d.id == id) {
                    self.detail = None;
                }
                self.info = Some(format!("deleted {} {}", kind.noun(), if name.is_empty() { &id } else { &name }));
            }
            Response::Launched(servers) => {
                self.pending.remove(&Pending::Launch);
                if matches!(self.error, Some((_, Some(Request::Launch(_))))) {
                    self.error = None;
                }
                let n = servers.len();
                for s in servers {
                    self.servers.upsert(s, &cctx!(self));
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
                self.overlay = Some(Overlay::Projects { projects, sel });
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
            Response::LiveMode(m) => self.live = m,
            Response::ServersStale => self.send(Request::List(Kind::Servers)),
            Response::Failed { request, message } => {
                self.pending.remove(&pending_of(&request));
                self.reach_failed(&request, &message); // reach:
                match (&request, &mut self.overlay) {
                    (Request::Launch(_), Some(Overlay::Wizard(w)))
                    | (Request::ImportKeypair { .. }, Some(Overlay::Wizard(w))) => {
                        // In place, in words; the wizard keeps what was typed.
                        w.busy = false;
                        w.error = Some(message.clone());
                    }
                    _ => {}
                }
                if let Request::Action { id, .. } = &request
                    && let Some(prev) = self.expected.remove(id)
                {
                    self.servers.marked.remove(id);
                    self.servers.upsert(prev, &cctx!(self));
                }
                if let Request::Delete { kind, id, .. } = &request {
                    // The row comes back as it was.
                    on_table!(self, View::of_kind(*kind), |t, _ctx| t.deleting.remove(id));
                }
                self.error = Some((message, Some(request)));
            }
            // reach: handled by reach_response above.
            Response::ConsoleUrl { .. } | Response::ConsoleEvent(_) | Response::KeypairCreated(_) => {}
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
        if let Some(p) = &self.cfg.state_path
            && let Err(e) = self.cfg.state.save(p)
        {
            tracing::warn!(error = %e, "cannot save the state file");
        }
        if !matches!(self.screen, Screen::Main) {
            self.screen = Screen::Main;
        }
        if switched {
            self.servers = ResourceTable::default();
            self.keypairs = ResourceTable::default();
            self.images = ResourceTable::default();
            self.networks = ResourceTable::default();
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
        let kind = match &listing {
            Listing::Servers(_) => Kind::Servers,
            Listing::Flavors(_) => Kind::Flavors,
            Listing::Images(_) => Kind::Images,
            Listing::Networks(_) => Kind::Networks,
            Listing::Keypairs(_) => Kind::Keypairs,
            Listing::Hypervisors(_) => Kind::Hypervisors,
            Listing::Services(_) => Kind::Services,
        };
        self.pending.remove(&Pending::List(kind));
        self.next_refresh = Some(Instant::now() + STABLE_REFRESH);
        match listing {
            Listing::Servers(v) => {
                // A row still waiting for its action's real state keeps the expected one.
                let v = v
                    .into_iter()
                    .map(|s| match self.expected.get(&s.id) {
                        Some(prev) if prev.status == s.status && prev.task_state == s.task_state => {
                            self.servers.get(&s.id).cloned().unwrap_or(s)
                        }
                        _ => s,
                    })
                    .collect();
                self.servers.set_items(v, &cctx!(self));
            }
            Listing::Flavors(v) => {
                self.flavor_names = v.iter().map(|f| (f.id.clone(), f.name.clone())).collect();
                self.flavors.set_items(v, &cctx!(self));
                self.refresh_servers_view();
            }
            Listing::Images(v) => {
                self.image_names = v.iter().map(|i| (i.id.clone(), i.name.clone())).collect();
                self.images.set_items(v, &cctx!(self));
                self.refresh_servers_view();
            }
            Listing::Networks(v) => {
                self.networks.set_items(v, &cctx!(self));
            }
            Listing::Keypairs(v) => {
                self.keypairs.set_items(v, &cctx!(self));
            }
            Listing::Hypervisors(v) => {
                self.hypervisors.set_items(v, &cctx!(self));
            }
            Listing::Services(v) => {
                self.services.set_items(v, &cctx!(self));
            }
        }
        self.push_wizard_data();
    }

    /// Names (image, flavor) changed: the instance rows' filter/sort text did too.
    fn refresh_servers_view(&mut self) {
        let keep = self.servers.selected().map(|s| s.id.clone());
        self.servers.recompute(&cctx!(self), keep);
    }

    fn push_wizard_data(&mut self) {
        let quotas = self.overview.as_ref().map(|o| o.quotas.clone());
        if let Some(Overlay::Wizard(w)) = &mut self.overlay {
            w.images = self.images.items.clone();
            w.flavors = self.flavors.items.clone();
            w.flavors.sort_by_key(|f| (f.vcpus, f.ram, f.disk));
            w.networks = self.networks.items.clone();
            w.keypairs = self.keypairs.items.clone();
            w.quotas = quotas;
        }
    }

    fn server_update(&mut self, s: Server) {
        let id = s.id.clone();
        self.expected.remove(&id);
        self.servers.marked.remove(&id);
        let moved = self.servers.get(&id).is_none_or(|old| old.status != s.status || old.task_state != s.task_state);
        if s.status == "DELETED" {
            self.servers.remove(&id, &cctx!(self));
        } else {
            self.servers.upsert(s, &cctx!(self));
        }
        // An open timeline follows the instance.
        if moved
            && let Some(d) = &self.detail
            && d.id == id
            && d.tab == Tab::Timeline
        {
            self.send(Request::Timeline(id));
        }
    }

    // ---------------------------------------------------------------- input

    pub fn on_key(&mut self, key: KeyEvent) {
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
        if self.overlay.is_some() {
            self.overlay_key(key);
            return;
        }
        if self.console.is_some() {
            self.console_key(key); // reach: the console pane has every key
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

    fn overlay_key(&mut self, key: KeyEvent) {
        let Some(overlay) = &mut self.overlay else { return };
        match overlay {
            // reach:
            Overlay::KeyForm(_) => self.key_form_key(key),
            Overlay::KeyCreated(_) => self.overlay = None,
            Overlay::SshUser { .. } => self.ssh_user_key(key),
            Overlay::Login(form) => match form.handle_key(key) {
                Outcome::Submit => {
                    if let Ok(p) = form.profile() {
                        form.busy = true;
                        self.profile = Some(p.clone());
                        self.send(Request::Login(Box::new(ProfileBox(p))));
                    }
                }
                Outcome::Cancel => self.quit = true,
                _ => {}
            },
            Overlay::Wizard(w) => {
                let outcome = w.handle_key(key);
                if let Some((name, public_key)) = w.take_import() {
                    self.send(Request::ImportKeypair { name, public_key });
                    return;
                }
                match outcome {
                    Outcome::Cancel => self.overlay = None,
                    Outcome::Submit => {
                        if let Ok(spec) = w.spec() {
                            w.busy = true;
                            w.error = None;
                            self.send(Request::Launch(spec));
                        }
                    }
                    _ => {}
                }
            }
            Overlay::Help { scroll } => match self.cfg.keymap.action(&key) {
                Some(Action::Down) => *scroll = scroll.saturating_add(1),
                Some(Action::Up) => *scroll = scroll.saturating_sub(1),
                Some(Action::PageDown) => *scroll = scroll.saturating_add(10),
                Some(Action::PageUp) => *scroll = scroll.saturating_sub(10),
                Some(Action::Quit) => self.quit = true,
                _ => self.overlay = None,
            },
            Overlay::Confirm { kind, id, name } => {
                let (kind, id, name) = (*kind, id.clone(), name.clone());
                if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter) {
                    self.overlay = None;
                    if kind == Kind::Servers {
                        self.server_action(&id, ServerOp::Delete);
                    } else {
                        self.delete(Request::Delete { kind, id, name });
                    }
                } else {
                    self.overlay = None;
                    self.info = Some("not deleted".into());
                }
            }
            Overlay::Projects { projects, sel } => {
                let n = projects.len() + self.cfg.clouds.len();
                match key.code {
                    KeyCode::Up | KeyCode::Char('k') => *sel = sel.saturating_sub(1),
                    KeyCode::Down | KeyCode::Char('j') => *sel = (*sel + 1).min(n.saturating_sub(1)),
                    KeyCode::Esc => self.overlay = None,
                    KeyCode::Enter => {
                        let sel = *sel;
                        if let Some(p) = projects.get(sel).cloned() {
                            self.overlay = None;
                            self.send(Request::SwitchProject { id: p.id, name: p.name });
                        } else if let Some(c) = self.cfg.clouds.get(sel - projects.len()).cloned() {
                            self.overlay = None;
                            self.switch_cloud(c);
                        }
                    }
                    _ => {}
                }
            }
            Overlay::Filter(input) => match key.code {
                KeyCode::Esc => {
                    self.overlay = None;
                    let view = self.view;
                    on_table!(self, view, |t, ctx| t.set_filter("", ctx));
                }
                KeyCode::Enter => self.overlay = None,
                _ => {
                    input.input(key);
                    let f = text_of(input);
                    let view = self.view;
                    on_table!(self, view, |t, ctx| t.set_filter(&f, ctx));
                }
            },
            Overlay::Palette { input, sel } => match key.code {
                KeyCode::Esc => self.overlay = None,
                KeyCode::Up => *sel = sel.saturating_sub(1),
                KeyCode::Down => *sel += 1,
                KeyCode::Tab => {
                    let text = text_of(input);
                    let c = completions(&text);
                    if let Some(first) = c.get((*sel).min(c.len().saturating_sub(1))) {
                        *input = field(first, "");
                    }
                    *sel = 0;
                }
                KeyCode::Enter => {
                    let text = text_of(input);
                    let c = completions(&text);
                    let exact = c.contains(&text) || text.starts_with("theme ");
                    let cmd = if exact {
                        text
                    } else {
                        c.get((*sel).min(c.len().saturating_sub(1))).cloned().unwrap_or(text)
                    };
                    self.overlay = None;
                    self.run_command(&cmd);
                }
                _ => {
                    input.input(key);
                    *sel = 0;
                }
            },
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
        if let Some((_, v)) = ALIASES.iter().find(|(a, _)| *a == cmd) {
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
        if let Some(p) = &self.cfg.state_path {
            let _ = self.cfg.state.save(p);
        }
        self.info = Some(format!("theme {}", self.theme().name));
    }

    pub fn go_to(&mut self, v: View) {
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

    fn selected(&mut self) -> Option<(String, String, Value)> {
        let view = self.view;
        on_table!(self, view, |t, _ctx| t.selected().map(|r| (
            crate::table::Resource::id(r).to_string(),
            crate::table::Resource::name(r).to_string(),
            crate::table::Resource::raw(r).clone()
        )))
        .flatten()
    }

    /// The instance an action applies to: the open detail's, or the selected row's.
    fn target_server(&mut self) -> Option<(String, String)> {
        if let Some(d) = &self.detail {
            return (d.view == View::Servers).then(|| {
                let name = self.servers.get(&d.id).map(|s| s.name.clone()).unwrap_or_default();
                (d.id.clone(), name)
            });
        }
        if self.view != View::Servers {
            return None;
        }
        self.servers.selected().map(|s| (s.id.clone(), s.name.clone()))
    }

    fn server_action(&mut self, id: &str, op: ServerOp) {
        // Show the state the cloud will report at once; the real one replaces it.
        if let Some(s) = self.servers.get(id).cloned() {
            self.expected.insert(id.to_string(), s.clone());
            let (status, task) = op.expected();
            let mut shown = s;
            shown.status = if op == ServerOp::Delete || op == ServerOp::Stop || op == ServerOp::Start {
                shown.status
            } else {
                status.to_string()
            };
            shown.task_state = Some(task.to_string());
            self.servers.marked.insert(id.to_string());
            self.servers.upsert(shown, &cctx!(self));
        }
        self.send(Request::Action { id: id.to_string(), op });
    }

    pub fn on_action(&mut self, action: Action) {
        if self.detail.is_some() && self.detail_action(action) {
            return;
        }
        let view = self.view;
        match action {
            Action::Quit => self.quit = true,
            Action::Up | Action::Down | Action::PageUp | Action::PageDown | Action::Top | Action::Bottom => {
                on_table!(self, view, |t, _ctx| t.navigate(action));
            }
            Action::NextTab | Action::PrevTab => {
                let visible: Vec<View> = View::ALL.into_iter().filter(|v| !v.admin_only() || self.admin()).collect();
                let i = visible.iter().position(|v| *v == view).unwrap_or(0);
                let n = visible.len();
                let next = if action == Action::NextTab { (i + 1) % n } else { (i + n - 1) % n };
                self.go_to(visible[next]);
            }
            Action::Select => {
                if let Some((id, _, _)) = self.selected() {
                    self.open_detail(view, id, Tab::Fields);
                }
            }
            Action::Back => {
                if let Some(v) = self.history.pop() {
                    self.view = v;
                } else {
                    self.error = None;
                }
            }
            Action::Palette => self.overlay = Some(Overlay::Palette { input: field("", "command"), sel: 0 }),
            Action::Filter if view != View::Overview => {
                let current = on_table!(self, view, |t, _ctx| t.filter().to_string()).unwrap_or_default();
                self.overlay = Some(Overlay::Filter(field(&current, "filter")));
            }
            Action::Help => self.overlay = Some(Overlay::Help { scroll: 0 }),
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
            Action::SortNext => {
                on_table!(self, view, |t, ctx| t.sort_next(ctx));
            }
            Action::SortReverse => {
                on_table!(self, view, |t, ctx| t.sort_reverse(ctx));
            }
            Action::Launch if view == View::Keypairs => self.open_key_form(), // reach:
            Action::Attach => self.attach(),                                  // reach:
            Action::Ssh => self.ssh_to(),                                     // reach:
            Action::Copy => self.copy_selected(),                             // reach:
            Action::Launch => {
                self.overlay = Some(Overlay::Wizard(Box::default()));
                self.push_wizard_data();
                for k in [Kind::Images, Kind::Flavors, Kind::Networks, Kind::Keypairs] {
                    self.send(Request::List(k));
                }
                self.send(Request::Overview);
            }
            Action::SwitchProject => self.send(Request::Projects),
            Action::SwitchTheme => {
                self.cfg.theme = (self.cfg.theme + 1) % self.cfg.themes.len();
                self.remember_theme();
            }
            Action::Delete => self.ask_delete(),
            Action::Start | Action::Stop | Action::Reboot | Action::HardReboot | Action::Console => {
                self.instance_action(action)
            }
            _ => {}
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
        let detail_id = self.detail.as_ref().map(|d| d.id.clone());
        let target = on_table!(self, view, |t, _ctx| {
            let row = match &detail_id {
                Some(id) => t.get(id),
                None => t.selected(),
            };
            row.map(|r| (r.id().to_string(), r.name().to_string(), t.deleting.contains(r.id())))
        })
        .flatten();
        match target {
            None => self.error = Some((format!("select {} {} first", article(kind.noun()), kind.noun()), None)),
            Some((_, name, true)) => self.info = Some(format!("{name} is being deleted")),
            Some((id, name, false)) => self.overlay = Some(Overlay::Confirm { kind, id, name }),
        }
    }

    /// Sends a (non-instance) delete, showing the row struck through until the cloud answers.
    fn delete(&mut self, req: Request) {
        if let Request::Delete { kind, id, .. } = &req {
            on_table!(self, View::of_kind(*kind), |t, _ctx| t.deleting.insert(id.clone()));
        }
        self.send(req);
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
            Action::Console => self.open_detail(View::Servers, id, Tab::Console),
            _ => {}
        }
    }

    fn open_detail(&mut self, view: View, id: String, tab: Tab) {
        self.detail = Some(Detail {
            view,
            id: id.clone(),
            tab,
            raw: Raw::Fields,
            scroll: 0,
            follow: tab == Tab::Console,
            timeline: None,
            console: None,
            body_lines: 0,
            body_height: 0,
        });
        match tab {
            Tab::Console => self.send(Request::Console(id)),
            Tab::Timeline => self.send(Request::Timeline(id)),
            Tab::Fields => {}
        }
    }

    /// Keys while a detail is open; `false` lets the table-level handler have it.
    fn detail_action(&mut self, action: Action) -> bool {
        let Some(d) = &mut self.detail else { return false };
        let max = d.body_lines.saturating_sub(d.body_height);
        match action {
            Action::Back => self.detail = None,
            Action::Up => {
                d.scroll = d.scroll.saturating_sub(1);
                d.follow = false;
            }
            Action::Down => d.scroll = (d.scroll + 1).min(max),
            Action::PageUp => {
                d.scroll = d.scroll.saturating_sub(d.body_height.max(1));
                d.follow = false;
            }
            Action::PageDown => d.scroll = (d.scroll + d.body_height.max(1)).min(max),
            Action::Top => {
                d.scroll = 0;
                d.follow = false;
            }
            Action::Bottom => d.scroll = max,
            Action::ToggleRaw => {
                d.raw = match d.raw {
                    Raw::Fields => Raw::Json,
                    Raw::Json => Raw::Yaml,
                    Raw::Yaml => Raw::Fields,
                };
                d.scroll = 0;
            }
            Action::NextTab | Action::PrevTab if d.view == View::Servers => {
                let tabs = [Tab::Fields, Tab::Timeline, Tab::Console];
                let i = tabs.iter().position(|t| *t == d.tab).unwrap_or(0);
                d.tab = tabs[if action == Action::NextTab { (i + 1) % 3 } else { (i + 2) % 3 }];
                d.scroll = 0;
                let id = d.id.clone();
                match d.tab {
                    Tab::Timeline => self.send(Request::Timeline(id)),
                    Tab::Console => {
                        d.follow = true;
                        self.send(Request::Console(id));
                    }
                    Tab::Fields => {}
                }
            }
            Action::NextTab | Action::PrevTab | Action::Select => {}
            Action::Follow if d.tab == Tab::Console => {
                d.follow = !d.follow;
                if d.follow {
                    d.scroll = max;
                    let id = d.id.clone();
                    self.send(Request::Console(id));
                } else {
                    self.next_console = None;
                }
            }
            Action::Refresh => {
                let (id, tab) = (d.id.clone(), d.tab);
                match tab {
                    Tab::Timeline => self.send(Request::Timeline(id)),
                    Tab::Console => self.send(Request::Console(id)),
                    Tab::Fields => self.load(self.view),
                }
            }
            Action::Console => {
                d.tab = Tab::Console;
                d.follow = true;
                let id = d.id.clone();
                self.send(Request::Console(id));
            }
            _ => return false,
        }
        true
    }

    pub fn on_mouse(&mut self, m: MouseEvent) {
        // reach: the console pane takes no mouse input.
        if !matches!(self.screen, Screen::Main) || self.overlay.is_some() || self.console.is_some() {
            return;
        }
        match m.kind {
            MouseEventKind::Down(MouseButton::Left) => {
                if let Some((_, v)) = self.tab_areas.iter().find(|(r, _)| r.contains((m.column, m.row).into())) {
                    let v = *v;
                    self.go_to(v);
                    return;
                }
                if self.detail.is_some() {
                    return;
                }
                let view = self.view;
                let hit = on_table!(self, view, |t, _ctx| t.click(m.column, m.row)).unwrap_or(false);
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

    pub fn draw(&mut self, f: &mut Frame) {
        let area = f.area();
        let theme = self.theme().clone();
        f.render_widget(Block::default().style(theme.base()), area);
        match &mut self.screen {
            Screen::Picker(p) => {
                p.draw(f, area, &theme);
                return;
            }
            Screen::Login(form) => {
                let [title, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
                f.render_widget(
                    Paragraph::new(Span::styled(" meridian — OpenStack in a terminal", theme.title())),
                    title,
                );
                form.draw(f, rest, &theme);
                return;
            }
            Screen::Main => {}
        }
        let [tabs, body, hints, status] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1), Constraint::Length(1)])
                .areas(area);
        self.draw_tabs(f, tabs, &theme);
        if self.console.is_some() {
            self.draw_console(f, body, &theme); // reach:
        } else if self.detail.is_some() {
            self.draw_detail(f, body, &theme);
        } else if self.view == View::Overview {
            self.draw_overview(f, body, &theme);
        } else {
            let busy = self.view.kind().is_some_and(|k| self.pending.contains(&Pending::List(k)));
            let view = self.view;
            on_table!(self, view, |t, ctx| t.draw(f, body, &theme, ctx, busy));
        }
        self.draw_hints(f, hints, &theme);
        self.draw_status(f, status, &theme);
        self.draw_overlay(f, area, &theme);
    }

    fn draw_tabs(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        self.tab_areas.clear();
        let mut x = area.x;
        let mut spans = Vec::new();
        for v in View::ALL {
            if v.admin_only() && !self.admin() {
                continue;
            }
            let label = format!(" {} ", v.title());
            let w = label.chars().count() as u16;
            if x + w > area.x + area.width {
                break;
            }
            self.tab_areas.push((Rect { x, y: area.y, width: w, height: 1 }, v));
            x += w;
            let style = if v == self.view { theme.selected().add_modifier(Modifier::BOLD) } else { theme.accent() };
            spans.push(Span::styled(label, style));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    fn draw_hints(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        if self.console.is_some() {
            return self.draw_console_hints(f, area, theme); // reach:
        }
        let km = &self.cfg.keymap;
        let actions: &[(Action, &str)] = if let Some(d) = &self.detail {
            if d.tab == Tab::Console {
                &[(Action::Back, "back"), (Action::NextTab, "tab"), (Action::Follow, "follow"), (Action::Up, "scroll")]
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
        for (a, label) in actions {
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

    fn draw_overview(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let block = Block::default()
            .borders(Borders::ALL)
            .border_style(theme.border())
            .title(Span::styled(" Overview ", theme.title()));
        let inner = block.inner(area);
        f.render_widget(block, area);
        let Some(o) = &self.overview else {
            f.render_widget(Paragraph::new(Span::styled(" loading…", theme.muted())), inner);
            return;
        };
        let mut y = inner.y;
        // A bar of blocks rather than colour alone, so it reads in 16 colours and monochrome.
        let line = |f: &mut Frame, y: u16, label: String, used: i64, limit: i64| {
            if y >= inner.y + inner.height {
                return;
            }
            let ratio = if limit > 0 { (used as f64 / limit as f64).clamp(0.0, 1.0) } else { 0.0 };
            let color = if ratio >= 0.9 {
                theme.error
            } else if ratio >= 0.7 {
                theme.warn
            } else {
                theme.gauge
            };
            let lim = if limit < 0 { "∞".to_string() } else { limit.to_string() };
            let text = format!(" {label:<16} {used:>6}/{lim:<6} ");
            let bar_w = (inner.width as usize).saturating_sub(text.chars().count() + 7);
            let filled = (ratio * bar_w as f64).round() as usize;
            let spans = vec![
                Span::raw(text),
                Span::styled("█".repeat(filled), Style::default().fg(color)),
                Span::styled("░".repeat(bar_w - filled), theme.muted()),
                Span::raw(format!(" {:>3.0}%", ratio * 100.0)),
            ];
            f.render_widget(Paragraph::new(Line::from(spans)), Rect { y, height: 1, ..inner });
        };
        f.render_widget(Paragraph::new(Span::styled(" Quota usage", theme.accent())), Rect { y, height: 1, ..inner });
        y += 1;
        for (label, used, limit) in &o.quotas.items {
            line(f, y, label.clone(), *used, *limit);
            y += 1;
        }
        if !o.hypervisors.is_empty() && y + 2 < inner.y + inner.height {
            y += 1;
            f.render_widget(
                Paragraph::new(Span::styled(" Hypervisors (vCPU · RAM MB · disk GB used/total)", theme.accent())),
                Rect { y, height: 1, ..inner },
            );
            y += 1;
            for h in &o.hypervisors {
                for (what, u, t) in [
                    ("vCPU", h.vcpus_used, h.vcpus),
                    ("RAM", h.memory_mb_used, h.memory_mb),
                    ("disk", h.local_gb_used, h.local_gb),
                ] {
                    let name: String = h.hypervisor_hostname.chars().take(11).collect();
                    line(f, y, format!("{name} {what}"), u.unwrap_or(0) as i64, t.unwrap_or(0) as i64);
                    y += 1;
                }
            }
        }
    }

    fn draw_detail(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        let Some(d) = &self.detail else { return };
        let raw = match d.view {
            View::Servers => self.servers.get(&d.id).map(|s| s.raw.clone()),
            View::Flavors => self.flavors.get(&d.id).map(|s| s.raw.clone()),
            View::Images => self.images.get(&d.id).map(|s| s.raw.clone()),
            View::Networks => self.networks.get(&d.id).map(|s| s.raw.clone()),
            View::Keypairs => self.keypairs.get(&d.id).map(|s| s.raw.clone()),
            View::Hypervisors => self.hypervisors.get(&d.id).map(|s| s.raw.clone()),
            View::Services => self.services.get(&d.id).map(|s| s.raw.clone()),
            View::Overview => None,
        };
        let gone = raw.is_none();
        let raw = raw.unwrap_or(Value::Null);
        let name =
            raw["name"].as_str().or(raw["hypervisor_hostname"].as_str()).or(raw["binary"].as_str()).unwrap_or(&d.id);
        let mut title =
            vec![Span::styled(format!(" {} {} ", d.view.title().trim_end_matches('s'), name), theme.title())];
        let tabs: &[(Tab, &str)] = if d.view == View::Servers {
            &[(Tab::Fields, "Fields"), (Tab::Timeline, "Timeline"), (Tab::Console, "Console")]
        } else {
            &[(Tab::Fields, "Fields")]
        };
        for (t, label) in tabs {
            let st = if *t == d.tab { theme.selected() } else { theme.muted() };
            title.push(Span::styled(format!(" {label} "), st));
        }
        if d.tab == Tab::Fields {
            let mode = match d.raw {
                Raw::Fields => "",
                Raw::Json => " JSON ",
                Raw::Yaml => " YAML ",
            };
            title.push(Span::styled(mode, theme.accent()));
        }
        if d.tab == Tab::Console && d.follow {
            title.push(Span::styled(" following ", theme.accent()));
        }
        let block = Block::default().borders(Borders::ALL).border_style(theme.border()).title(Line::from(title));
        let inner = block.inner(area);
        f.render_widget(block, area);
        let lines: Vec<Line> = match d.tab {
            Tab::Fields if gone => vec![Line::from(Span::styled("this resource is gone", theme.muted()))],
            Tab::Fields => match d.raw {
                Raw::Fields => {
                    let mut out = Vec::new();
                    flatten("", &raw, &mut out);
                    let w = out.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0).min(36);
                    out.into_iter()
                        .map(|(k, v)| Line::from(vec![Span::styled(format!("{k:<w$} "), theme.accent()), Span::raw(v)]))
                        .collect()
                }
                Raw::Json => serde_json::to_string_pretty(&raw)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| Line::raw(l.to_string()))
                    .collect(),
                Raw::Yaml => serde_norway::to_string(&raw)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| Line::raw(l.to_string()))
                    .collect(),
            },
            Tab::Timeline => {
                let entries = d.timeline.as_ref();
                self.draw_timeline(f, inner, theme, entries);
                let d = self.detail.as_mut();
                if let Some(d) = d {
                    d.body_lines = 0;
                    d.body_height = inner.height;
                }
                return;
            }
            Tab::Console => match &d.console {
                None => vec![Line::from(Span::styled("loading the console log…", theme.muted()))],
                Some(c) if c.is_empty() => vec![Line::from(Span::styled("(the console log is empty)", theme.muted()))],
                Some(c) => c.lines().map(|l| Line::raw(l.to_string())).collect(),
            },
        };
        let n = lines.len() as u16;
        let follow = d.follow && d.tab == Tab::Console;
        let Some(d) = self.detail.as_mut() else { return };
        d.body_lines = n;
        d.body_height = inner.height;
        if follow {
            d.scroll = n.saturating_sub(inner.height);
        }
        d.scroll = d.scroll.min(n.saturating_sub(inner.height));
        f.render_widget(Paragraph::new(lines).scroll((d.scroll, 0)), inner);
    }

    fn draw_timeline(&self, f: &mut Frame, area: Rect, theme: &Theme, entries: Option<&(Vec<Transition>, &str)>) {
        let Some((entries, source)) = entries else {
            f.render_widget(Paragraph::new(Span::styled("loading the timeline…", theme.muted())), area);
            return;
        };
        let longest = entries.iter().filter_map(|e| e.duration_s).fold(0.0f64, f64::max);
        let bar_w = 12usize;
        let header = Row::new(["TIME", "VM STATE", "TASK", "POWER", "TOOK", ""]).style(theme.header());
        let rows: Vec<Row> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let took = match e.duration_s {
                    Some(s) if s < 1.0 => format!("{:.0} ms", s * 1000.0),
                    Some(s) if s < 120.0 => format!("{s:.1} s"),
                    Some(s) => format!("{:.1} min", s / 60.0),
                    None if i + 1 == entries.len() => "now".into(),
                    None => String::new(),
                };
                let bar = match e.duration_s {
                    Some(s) if longest > 0.0 => "█".repeat(((s / longest) * bar_w as f64).ceil().max(1.0) as usize),
                    _ => String::new(),
                };
                let vm = e.vm_state.clone().unwrap_or_default();
                Row::new(vec![
                    Cell::from(e.at.map(|t| t.format("%H:%M:%S%.3f").to_string()).unwrap_or_default()),
                    Cell::from(vm.clone()).style(theme.status(&vm)),
                    Cell::from(e.task_state.clone().unwrap_or_else(|| "-".into())),
                    Cell::from(power_state_name(e.power_state)),
                    Cell::from(took),
                    Cell::from(bar).style(Style::default().fg(theme.gauge)),
                ])
            })
            .collect();
        let [t, foot] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
        let table = Table::new(
            rows,
            [
                Constraint::Length(12),
                Constraint::Length(10),
                Constraint::Min(12),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(bar_w as u16),
            ],
        )
        .header(header);
        f.render_widget(table, t);
        let total: f64 = entries.iter().filter_map(|e| e.duration_s).sum();
        f.render_widget(
            Paragraph::new(Span::styled(
                format!(" {} steps, {total:.1} s in all · from {source}", entries.len()),
                theme.muted(),
            )),
            foot,
        );
    }

    fn draw_overlay(&mut self, f: &mut Frame, area: Rect, theme: &Theme) {
        let keymap = self.cfg.keymap.clone();
        let clouds = self.cfg.clouds.clone();
        let Some(o) = &mut self.overlay else { return };
        match o {
            Overlay::KeyForm(_) | Overlay::KeyCreated(_) | Overlay::SshUser { .. } => {
                self.draw_reach_overlay(f, area, theme) // reach:
            }
            Overlay::Login(form) => form.draw(f, area, theme),
            Overlay::Wizard(w) => w.draw(f, area, theme),
            Overlay::Help { scroll } => {
                let r = centered(area, 72, area.height.saturating_sub(2));
                f.render_widget(Clear, r);
                let lines: Vec<Line> = Action::ALL
                    .iter()
                    .map(|(a, _, text)| {
                        Line::from(vec![
                            Span::styled(format!("{:<18}", keymap.keys_for(*a).join(" ")), theme.accent()),
                            Span::raw(*text),
                        ])
                    })
                    .collect();
                let max = (lines.len() as u16).saturating_sub(r.height.saturating_sub(2));
                *scroll = (*scroll).min(max);
                f.render_widget(
                    Paragraph::new(lines).block(dialog("Help — keys (config.toml [keys])", theme)).scroll((*scroll, 0)),
                    r,
                );
            }
            Overlay::Confirm { kind, name, id } => {
                let r = centered(area, 60, 5);
                f.render_widget(Clear, r);
                let label = if name.is_empty() { id.clone() } else { name.clone() };
                let text = vec![
                    Line::from(vec![
                        Span::raw(format!("Delete {} ", kind.noun())),
                        Span::styled(label, theme.title()),
                        Span::raw("?"),
                    ]),
                    Line::from(Span::styled("y / Enter: delete · any other key: keep it", theme.muted())),
                ];
                f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }).block(dialog("Confirm", theme)), r);
            }
            Overlay::Projects { projects, sel } => {
                let h = (projects.len() + clouds.len() + 2) as u16;
                let r = centered(area, 60, h.max(4));
                f.render_widget(Clear, r);
                let current = self.session.as_ref().map(|s| s.project_id.clone()).unwrap_or_default();
                let mut items: Vec<ListItem> = projects
                    .iter()
                    .map(|p| {
                        let mark = if p.id == current { "● " } else { "  " };
                        ListItem::new(Line::from(vec![Span::styled(mark, theme.accent()), Span::raw(p.name.clone())]))
                    })
                    .collect();
                items.extend(
                    clouds.iter().map(|c| ListItem::new(Span::styled(format!("  cloud: {}", c.name), theme.muted()))),
                );
                let mut st = ListState::default().with_selected(Some(*sel));
                f.render_stateful_widget(
                    List::new(items).block(dialog("Switch project or cloud", theme)).highlight_style(theme.selected()),
                    r,
                    &mut st,
                );
            }
            Overlay::Filter(input) => {
                let r = Rect { y: area.y + area.height.saturating_sub(2), height: 1, ..area };
                f.render_widget(Clear, r);
                let [l, v] = Layout::horizontal([Constraint::Length(2), Constraint::Min(1)]).areas(r);
                f.render_widget(Paragraph::new(Span::styled("/", theme.accent())), l);
                input.set_cursor_style(Style::default().add_modifier(Modifier::REVERSED));
                f.render_widget(&*input, v);
            }
            Overlay::Palette { input, sel } => {
                let text = text_of(input);
                let c = completions(&text);
                *sel = (*sel).min(c.len().saturating_sub(1));
                let h = (c.len() as u16 + 3).min(area.height.saturating_sub(2));
                let r = Rect { x: area.x + 1, y: area.y + 1, width: 40.min(area.width.saturating_sub(2)), height: h };
                f.render_widget(Clear, r);
                let block = dialog("command", theme);
                let inner = block.inner(r);
                f.render_widget(block, r);
                let [l, rest] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
                let [colon, v] = Layout::horizontal([Constraint::Length(1), Constraint::Min(1)]).areas(l);
                f.render_widget(Paragraph::new(Span::styled(":", theme.accent())), colon);
                input.set_cursor_style(Style::default().add_modifier(Modifier::REVERSED));
                f.render_widget(&*input, v);
                let items: Vec<ListItem> = c.iter().map(|x| ListItem::new(x.clone())).collect();
                let mut st = ListState::default().with_selected((!c.is_empty()).then_some(*sel));
                f.render_stateful_widget(List::new(items).highlight_style(theme.selected()), rest, &mut st);
            }
        }
    }
}

/// `a` or `an` before a noun (`an image`, `a key pair`).
fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// Palette completions for what has been typed (prefix matches first, then substrings).
pub fn completions(typed: &str) -> Vec<String> {
    let t = typed.trim().to_lowercase();
    let all: Vec<&str> = View::ALL
        .iter()
        .map(|v| v.command())
        .chain(ALIASES.iter().map(|(a, _)| *a))
        .chain(COMMANDS.iter().copied())
        .collect();
    let mut out: Vec<String> = all.iter().filter(|c| c.starts_with(&t)).map(|c| c.to_string()).collect();
    out.extend(all.iter().filter(|c| !c.starts_with(&t) && c.contains(&t)).map(|c| c.to_string()));
    out
}

/// Every field of a JSON object as `path: value` lines (nested objects dotted, arrays indexed).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&p, x, out);
            }
        }
        Value::Array(a) if !a.is_empty() && a.iter().any(|x| x.is_object()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Null => out.push((prefix.to_string(), "-".into())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// A serial console log made safe to draw: terminal escape sequences and carriage returns
/// removed, tabs expanded, other control characters dropped (they would move the terminal's
/// cursor and break the frame around the log).
fn printable(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut col = 0usize;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                out.push('\n');
                col = 0;
            }
            '\t' => {
                let n = 8 - col % 8;
                out.extend(std::iter::repeat_n(' ', n));
                col += n;
            }
            '\u{1b}' => {
                // CSI `ESC [ … final` or a two-character escape.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            c if c.is_control() => {}
            c => {
                out.push(c);
                col += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod console_tests {
    use super::printable;

    #[test]
    fn console_text_is_made_safe_to_draw() {
        assert_eq!(printable("a\tb\r\nx\u{1b}[1;32mgreen\u{1b}[0m\u{7}!"), "a       b\nxgreen!");
        assert_eq!(printable("login:\t"), "login:  ");
    }
}
