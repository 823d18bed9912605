//! The background worker: the one owner of the API client. The UI sends it [`Request`]s and
//! gets [`Response`]s back on a channel; nothing in the UI path waits on the network.
//!
//! Each request runs as its own task on a clone of the client, so a slow list never holds up an
//! action. A 401 comes back to the worker, which logs in again once with the credentials it
//! holds and re-sends the request; if that fails the UI is asked for the password and the
//! request waits. The token is renewed five minutes before it expires.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use meridian_common::{Client, ClientError, Session};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::config::Profile;
use crate::live::{self, LiveHint};
use crate::model::{Hypervisor, Project, Quotas, Server, Token, Transition, parse_list, parse_server};
use crate::table::Scope;

pub use crate::views::{Kind, Listing};

/// What deleting a resource of some kind sends: `DELETE` to this path of this service's
/// endpoint (compute's catalog URL carries its version; image and network get theirs added).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteCall {
    pub service: &'static str,
    /// The API version joined to an unversioned endpoint (`v2`, `v2.0`); `None`: the catalog URL as is.
    pub version: Option<&'static str>,
    pub path: String,
}

impl DeleteCall {
    pub fn method(&self) -> Method {
        Method::DELETE
    }
}

/// The OpenStack call that deletes `id` of `kind` (for key pairs the ID is the name).
pub fn delete_call(kind: Kind, id: &str) -> Option<DeleteCall> {
    kind.delete_call(id)
}

/// Percent-encodes what may not stand in a path segment (key pair names may hold spaces).
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerOp {
    Start,
    Stop,
    Reboot,
    HardReboot,
    Delete,
    Pause,
    Unpause,
    Suspend,
    Resume,
    /// Lock without a reason (a reason goes through [`Request::Lock`]).
    Lock,
    Unlock,
    Shelve,
    Unshelve,
    /// createImage (the name goes through [`Request::CreateImage`]).
    Snapshot,
    // The lifecycle actions of issue 17; the ones with arguments go through
    // [`Request::ServerCall`].
    Rebuild,
    Rescue,
    Unrescue,
    /// Bring a SOFT_DELETED instance back.
    Restore,
    /// Delete a SOFT_DELETED instance for good now (`forceDelete`), not at the reclaim.
    ForceDelete,
    /// os-resetState (admins): the database state only, nothing runs on the host.
    ResetState,
    Resize,
    ConfirmResize,
    RevertResize,
    /// Cold migration (admins).
    Migrate,
    /// Rebuild on another host because this one is down (admins).
    Evacuate,
    /// Live migration (admins): the guest keeps running.
    LiveMigrate,
    /// Abort the live migration in progress (admins).
    LiveMigrationAbort,
    /// Force the live migration in progress to complete (admins).
    LiveMigrationForceComplete,
}

impl ServerOp {
    pub fn verb(self) -> &'static str {
        match self {
            ServerOp::Start => "start",
            ServerOp::Stop => "stop",
            ServerOp::Reboot => "reboot",
            ServerOp::HardReboot => "hard reboot",
            ServerOp::Delete => "delete",
            ServerOp::Pause => "pause",
            ServerOp::Unpause => "unpause",
            ServerOp::Suspend => "suspend",
            ServerOp::Resume => "resume",
            ServerOp::Lock => "lock",
            ServerOp::Unlock => "unlock",
            ServerOp::Shelve => "shelve",
            ServerOp::Unshelve => "unshelve",
            ServerOp::Snapshot => "snapshot",
            ServerOp::Rebuild => "rebuild",
            ServerOp::Rescue => "rescue",
            ServerOp::Unrescue => "unrescue",
            ServerOp::Restore => "restore",
            ServerOp::ForceDelete => "force delete",
            ServerOp::ResetState => "reset state",
            ServerOp::Resize => "resize",
            ServerOp::ConfirmResize => "confirm resize",
            ServerOp::RevertResize => "revert resize",
            ServerOp::Migrate => "migrate",
            ServerOp::Evacuate => "evacuate",
            ServerOp::LiveMigrate => "live-migrate",
            ServerOp::LiveMigrationAbort => "abort the live migration of",
            ServerOp::LiveMigrationForceComplete => "force-complete the live migration of",
        }
    }

    /// Whether Nova runs it on the host (a task state shows meanwhile); lock and unlock are
    /// the API's alone.
    pub fn has_task(self) -> bool {
        // Abort and force-complete act on the migration; the instance stays MIGRATING until
        // its source answers.
        !matches!(
            self,
            ServerOp::Lock
                | ServerOp::Unlock
                | ServerOp::ResetState
                | ServerOp::LiveMigrationAbort
                | ServerOp::LiveMigrationForceComplete
        )
    }

    /// The status and task Nova shows as soon as it accepts the action (what the UI shows before
    /// the real state arrives).
    pub fn expected(self) -> (&'static str, &'static str) {
        match self {
            ServerOp::Start => ("SHUTOFF", "powering-on"),
            ServerOp::Stop => ("ACTIVE", "powering-off"),
            ServerOp::Reboot => ("REBOOT", "rebooting"),
            ServerOp::HardReboot => ("HARD_REBOOT", "rebooting_hard"),
            ServerOp::Delete => ("ACTIVE", "deleting"),
            ServerOp::Pause => ("ACTIVE", "pausing"),
            ServerOp::Unpause => ("PAUSED", "unpausing"),
            ServerOp::Suspend => ("ACTIVE", "suspending"),
            ServerOp::Resume => ("SUSPENDED", "resuming"),
            ServerOp::Lock | ServerOp::Unlock => ("", ""),
            ServerOp::Shelve => ("ACTIVE", "shelving"),
            ServerOp::Unshelve => ("SHELVED_OFFLOADED", "unshelving"),
            ServerOp::Snapshot => ("ACTIVE", "image_snapshot_pending"),
            ServerOp::Rebuild | ServerOp::Evacuate => ("REBUILD", "rebuilding"),
            // Rescue runs from ACTIVE, SHUTOFF or ERROR: the status is left as it is.
            ServerOp::Rescue => ("", "rescuing"),
            ServerOp::Unrescue => ("RESCUE", "unrescuing"),
            ServerOp::Restore => ("SOFT_DELETED", "restoring"),
            ServerOp::ForceDelete => ("SOFT_DELETED", "deleting"),
            ServerOp::ResetState => ("", ""),
            // Nova shows a cold migration as RESIZE too.
            ServerOp::Resize | ServerOp::Migrate => ("RESIZE", "resize_prep"),
            ServerOp::ConfirmResize => ("VERIFY_RESIZE", "resize_confirming"),
            ServerOp::RevertResize => ("REVERT_RESIZE", "resize_reverting"),
            // A live migration runs from ACTIVE or PAUSED: both show MIGRATING meanwhile.
            ServerOp::LiveMigrate => ("MIGRATING", "migrating"),
            ServerOp::LiveMigrationAbort | ServerOp::LiveMigrationForceComplete => ("", ""),
        }
    }
}

/// A server action that carries arguments, with Nova's body for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCall {
    /// Rebuild from `image_id` (ports, addresses and flavor are kept), optionally renamed.
    Rebuild {
        image_id: String,
        name: Option<String>,
    },
    /// Rescue, booting `image_id` (`None`: the server's own image, Nova's default).
    Rescue {
        image_id: Option<String>,
    },
    /// Set the database state to `error` (`true`) or `active`.
    ResetState {
        error: bool,
    },
    Resize {
        flavor_id: String,
    },
    /// Cold-migrate; `host`: a compute host by name (microversion 2.56+), else the scheduler's choice.
    Migrate {
        host: Option<String>,
    },
    /// Evacuate from a failed host; `host`: the target, else the scheduler's choice.
    Evacuate {
        host: Option<String>,
    },
    /// Live-migrate (a block migration: `block_migration` "auto", or true below 2.25);
    /// `host`: a compute host by name (2.30+), else the scheduler's choice.
    LiveMigrate {
        host: Option<String>,
    },
    /// Abort (`true`) or force to complete the instance's live migration in progress: not an
    /// action body but `/servers/{id}/migrations/{migration_id}` (the worker finds the id).
    LiveMigrationControl {
        abort: bool,
    },
}

impl ServerCall {
    pub fn op(&self) -> ServerOp {
        match self {
            ServerCall::Rebuild { .. } => ServerOp::Rebuild,
            ServerCall::Rescue { .. } => ServerOp::Rescue,
            ServerCall::ResetState { .. } => ServerOp::ResetState,
            ServerCall::Resize { .. } => ServerOp::Resize,
            ServerCall::Migrate { .. } => ServerOp::Migrate,
            ServerCall::Evacuate { .. } => ServerOp::Evacuate,
            ServerCall::LiveMigrate { .. } => ServerOp::LiveMigrate,
            ServerCall::LiveMigrationControl { abort: true } => ServerOp::LiveMigrationAbort,
            ServerCall::LiveMigrationControl { abort: false } => ServerOp::LiveMigrationForceComplete,
        }
    }

    /// The action body at compute microversion `version` (`None`: the cloud's minimum, 2.1);
    /// a sentence when this microversion cannot say it.
    pub fn body(&self, version: Option<&str>) -> Result<Value, String> {
        let at_least = |v: (u32, u32)| version.is_some_and(|have| crate::console_pane::version_at_least(have, v));
        Ok(match self {
            ServerCall::Rebuild { image_id, name } => {
                let mut b = json!({"imageRef": image_id});
                if let Some(n) = name {
                    b["name"] = json!(n);
                }
                json!({"rebuild": b})
            }
            ServerCall::Rescue { image_id: None } => json!({"rescue": null}),
            ServerCall::Rescue { image_id: Some(i) } => json!({"rescue": {"rescue_image_ref": i}}),
            ServerCall::ResetState { error } => {
                json!({"os-resetState": {"state": if *error { "error" } else { "active" }}})
            }
            ServerCall::Resize { flavor_id } => json!({"resize": {"flavorRef": flavor_id}}),
            ServerCall::Migrate { host: None } => json!({"migrate": null}),
            ServerCall::Migrate { host: Some(h) } if at_least((2, 56)) => json!({"migrate": {"host": h}}),
            ServerCall::Migrate { host: Some(_) } => {
                return Err("choosing the target host needs compute microversion 2.56; this cloud is older".into());
            }
            ServerCall::Evacuate { host } => {
                let mut b = json!({});
                if let Some(h) = host {
                    b["host"] = json!(h);
                }
                // Required below 2.14, removed from it on.
                if !at_least((2, 14)) {
                    b["onSharedStorage"] = json!(false);
                }
                json!({"evacuate": b})
            }
            ServerCall::LiveMigrate { host: Some(_) } if !at_least((2, 30)) => {
                return Err("choosing the target host needs compute microversion 2.30; this cloud is older".into());
            }
            ServerCall::LiveMigrate { host } if at_least((2, 25)) => {
                json!({"os-migrateLive": {"host": host, "block_migration": "auto"}})
            }
            ServerCall::LiveMigrate { host } => {
                json!({"os-migrateLive": {"host": host, "block_migration": true, "disk_over_commit": false}})
            }
            ServerCall::LiveMigrationControl { .. } => {
                return Err("a live migration's abort or force-complete is no server action".into());
            }
        })
    }
}

/// What the launch wizard submits.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpec {
    pub name: String,
    pub count: u32,
    pub image_id: String,
    pub flavor_id: String,
    pub network_ids: Vec<String>,
    pub key_name: Option<String>,
    pub user_data: Option<String>,
    /// Security group names (empty: the cloud's default).
    pub security_groups: Vec<String>,
    /// Boot from a new volume of this many GB made from the image (deleted with the instance).
    pub boot_volume_gb: Option<u64>,
    /// A Nova server group's ID, sent as the `group` scheduler hint.
    pub server_group: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Log in (or again, after a 401 the worker could not handle alone).
    Login(Box<ProfileBox>),
    SwitchProject {
        id: String,
        name: String,
    },
    List(Kind),
    Overview,
    Timeline(String),
    Console(String),
    Action {
        id: String,
        op: ServerOp,
    },
    /// Lock an instance with a reason (shown from microversion 2.73).
    Lock {
        id: String,
        reason: String,
    },
    /// Snapshot an instance to a new image named `name` (createImage).
    CreateImage {
        id: String,
        name: String,
    },
    /// Delete a flavor, image, network or key pair (instances go through [`Request::Action`]).
    Delete {
        kind: Kind,
        id: String,
        name: String,
    },
    Launch(LaunchSpec),
    ImportKeypair {
        name: String,
        public_key: String,
    },
    Projects,
    // --- console pane, ssh and key pairs (console_pane.rs, keys.rs)
    /// A serial console URL for the instance (remote-consoles API or os-getSerialConsole).
    SerialConsole {
        id: String,
    },
    /// A noVNC (graphical console) URL for the instance.
    WebConsole {
        id: String,
        name: String,
    },
    /// Open the console websocket; its events come back tagged with `session`.
    ConsoleConnect {
        url: String,
        session: u64,
    },
    /// Create a key pair (generated or imported from a file); a generated private key is saved
    /// under the data dir's `keys/<cloud>/`.
    CreateKeypair {
        cloud: String,
        name: String,
        source: crate::keys::KeySource,
    },
    /// An instance's action history with each action's events.
    Actions(String),
    /// Enable or disable a project or user.
    SetEnabled {
        kind: Kind,
        id: String,
        name: String,
        enabled: bool,
    },
    /// Create a network (with its subnet) or a port.
    Create(crate::overlays::Create),
    /// An admin's lists cover every project (`true`) or the session's project.
    AllProjects(bool),
    /// Project ID → name, for the PROJECT column.
    ProjectNames,
    /// Upload a local file into a new image (`id` names the transfer in its progress).
    Upload {
        id: u64,
        spec: crate::transfer::UploadSpec,
    },
    /// Download an image's data to a local file.
    Download {
        id: u64,
        spec: crate::transfer::DownloadSpec,
    },
    /// Stop a running upload or download (what it made is removed).
    CancelTransfer(u64),
    /// Remember the cloud, project and theme in the state file (written here, off the UI path).
    SaveState {
        path: std::path::PathBuf,
        state: crate::config::State,
    },
    /// An instance action with arguments (rebuild, rescue, resize, migrate, …).
    ServerCall {
        id: String,
        call: ServerCall,
    },
    /// An instance's interfaces (`os-interface`).
    Interfaces(String),
    /// An instance's diagnostics (admins), read once when asked for.
    Diagnostics(String),
    /// The instance's live migration in progress (`GET /servers/{id}/migrations`, 2.23+).
    LiveMigration(String),
}

/// A profile with the password in it, compared by name only (requests are compared in tests).
#[derive(Clone, Debug)]
pub struct ProfileBox(pub Profile);

impl PartialEq for ProfileBox {
    fn eq(&self, o: &Self) -> bool {
        self.0.name == o.0.name
    }
}

/// Who is logged in where.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionInfo {
    pub cloud: String,
    pub auth_url: String,
    pub user: String,
    pub project: String,
    pub project_id: String,
    pub admin: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub compute_version: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Overview {
    pub quotas: Quotas,
    /// Admins only: every hypervisor with its capacity and usage.
    pub hypervisors: Vec<Hypervisor>,
    /// This month's usage (`os-simple-tenant-usage`), where the cloud gives it.
    pub usage: crate::views::usage::UsageReport,
}

#[derive(Clone, Debug)]
pub enum Response {
    LoggedIn(SessionInfo),
    /// The login failed, or a 401 could not be fixed with the credentials held: ask the user.
    NeedLogin {
        message: String,
    },
    Listed(Listing),
    Overview(Overview),
    Timeline {
        id: String,
        entries: Vec<Transition>,
        source: &'static str,
    },
    Console {
        id: String,
        output: String,
    },
    /// The cloud accepted an action.
    Accepted {
        id: String,
        op: ServerOp,
    },
    /// The cloud deleted a resource.
    Deleted {
        kind: Kind,
        id: String,
        name: String,
    },
    /// New servers from the wizard, as the cloud lists them right after the create.
    Launched(Vec<Server>),
    KeypairImported(String),
    Projects(Vec<Project>),
    ProjectNames(std::collections::HashMap<String, String>),
    /// A project or user was enabled or disabled.
    EnabledSet {
        kind: Kind,
        name: String,
        enabled: bool,
    },
    /// A create form's resource exists now.
    Created {
        kind: Kind,
        name: String,
    },
    Actions {
        id: String,
        actions: Vec<crate::views::actions::InstanceAction>,
    },
    /// A server changed (live stream or poll).
    ServerUpdate(Box<Server>),
    /// One state transition of a server, from the live stream (our server only).
    Transition {
        server_id: String,
        entry: Transition,
    },
    /// How live tracking works right now, for the status line.
    LiveMode(String),
    /// The live stream could not resume where it left off (`reset`): changes may have been
    /// missed, so the server list must be read again.
    ServersStale,
    Failed {
        request: Request,
        message: String,
    },
    // --- console pane and key pairs (console_pane.rs, keys.rs)
    ConsoleUrl {
        id: String,
        result: Result<String, crate::console_pane::UrlError>,
    },
    /// The noVNC URL for `name`, or why there is none, in words.
    WebConsoleUrl {
        name: String,
        result: Result<String, String>,
    },
    ConsoleEvent(crate::console_pane::ConsoleEvent),
    KeypairCreated(crate::keys::Created),
    /// An upload or download moved on (or ended).
    Transfer(crate::transfer::Progress),
    /// The cloud accepted something done to a resource of `kind` (a volume extended, attached,
    /// …): the form closes, the list is read again, `message` is shown.
    Did {
        kind: Kind,
        message: String,
    },
    /// Security groups were added to / removed from an instance.
    GroupsChanged {
        server: String,
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// The cloud accepted a rescue and said the rescue system's root password (Nova's
    /// `adminPass`; shown once, as the CLI prints it).
    Rescued {
        id: String,
        admin_pass: String,
    },
    Interfaces {
        id: String,
        interfaces: Vec<crate::views::interfaces::Interface>,
    },
    /// An instance's diagnostics, or why there are none (403 for members), in words.
    Diagnostics {
        id: String,
        result: Result<Value, String>,
    },
    /// An instance's live migration in progress (`None`: none), or why it cannot be read.
    LiveMigration {
        id: String,
        result: Result<Option<Value>, String>,
    },
}

/// Starts the worker; returns the request sender. `stream: false` skips the push stream and
/// polls as on any cloud (for proxies that buffer event streams, and to test that path).
pub fn spawn(ui: mpsc::UnboundedSender<Response>, stream: bool) -> mpsc::UnboundedSender<Request> {
    // Without a UI that says what is on screen, polling treats the instances as always shown.
    spawn_watching(ui, stream, watch::channel(true).1)
}

/// As [`spawn`], with the UI telling whether the instances list is on screen (polling mode
/// watches the whole project closely only then).
pub fn spawn_watching(
    ui: mpsc::UnboundedSender<Response>,
    stream: bool,
    instances_visible: watch::Receiver<bool>,
) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(rx, ui, stream, instances_visible));
    tx
}

enum Done {
    Unauthorized(Request),
}

struct Authed {
    client: Client,
    profile: Profile,
    info: SessionInfo,
    /// A project switch scopes by ID; renewals keep it.
    project_id: Option<String>,
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Request>,
    ui: mpsc::UnboundedSender<Response>,
    stream: bool,
    instances_visible: watch::Receiver<bool>,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let (client_tx, client_rx) = watch::channel::<Option<Client>>(None);
    let (hint_tx, hint_rx) = mpsc::unbounded_channel::<LiveHint>();
    tokio::spawn(live::run(client_rx, hint_rx, ui.clone(), stream, instances_visible));
    let mut authed: Option<Authed> = None;
    let mut scope = Scope::default();
    let transfers = crate::transfer::Transfers::default();
    // Requests that met a 401 we could not fix, re-sent after the next login.
    let mut waiting: Vec<Request> = Vec::new();
    loop {
        let renew_in = authed
            .as_ref()
            .and_then(|a| a.info.expires_at)
            .map(|t| (t - Utc::now() - chrono::Duration::minutes(5)).to_std().unwrap_or(Duration::from_secs(5)))
            .unwrap_or(Duration::from_secs(86400));
        tokio::select! {
            req = rx.recv() => {
                let Some(req) = req else { break };
                match req {
                    Request::Login(p) => {
                        match login(&p.0, None).await {
                            Ok(a) => {
                                let _ = ui.send(Response::LoggedIn(a.info.clone()));
                                let _ = client_tx.send(Some(a.client.clone()));
                                for r in waiting.drain(..) {
                                    start(&a.client, r, &transfers, scope, &ui, &done_tx, &hint_tx);
                                }
                                authed = Some(a);
                            }
                            Err(e) => { let _ = ui.send(Response::NeedLogin { message: login_words(&e) }); }
                        }
                    }
                    Request::SwitchProject { id, name } => {
                        let Some(a) = &authed else { continue };
                        let mut profile = a.profile.clone();
                        profile.project_name = name;
                        match login(&profile, Some(id.clone())).await {
                            Ok(a) => {
                                let _ = ui.send(Response::LoggedIn(a.info.clone()));
                                let _ = client_tx.send(Some(a.client.clone()));
                                authed = Some(a);
                            }
                            Err(e) => {
                                let _ = ui.send(Response::Failed {
                                    request: Request::SwitchProject { id, name: profile.project_name },
                                    message: login_words(&e),
                                });
                            }
                        }
                    }
                    Request::AllProjects(on) => {
                        scope.all_projects = on;
                        let _ = hint_tx.send(LiveHint::AllProjects(on));
                    }
                    Request::SaveState { path, state } => {
                        // Off the async executor: a slow disk must not hold up requests.
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = state.save(&path) {
                                tracing::warn!(error = %e, path = %path.display(), "cannot save the state file");
                            }
                        });
                    }
                    Request::CancelTransfer(id) => {
                        transfers.cancel(id);
                    }
                    // The websocket needs no token (the URL carries one): no login, no client.
                    Request::ConsoleConnect { url, session } => crate::console_pane::spawn_session(url, session, ui.clone()),
                    other => match &authed {
                        Some(a) => start(&a.client, other, &transfers, scope, &ui, &done_tx, &hint_tx),
                        None => waiting.push(other),
                    },
                }
            }
            Some(Done::Unauthorized(req)) = done_rx.recv() => {
                let Some(a) = &authed else { waiting.push(req); continue };
                // Another task may already have renewed the token: only log in again if the
                // failed request could not have used a newer one.
                match login(&a.profile, a.project_id.clone()).await {
                    Ok(fresh) => {
                        let _ = client_tx.send(Some(fresh.client.clone()));
                        dispatch(&fresh.client, req, scope, &ui, &done_tx, &hint_tx);
                        authed = Some(fresh);
                    }
                    Err(e) => {
                        waiting.push(req);
                        let _ = ui.send(Response::NeedLogin { message: format!("session expired: {}", login_words(&e)) });
                    }
                }
            }
            _ = tokio::time::sleep(renew_in), if authed.is_some() => {
                let Some(a) = &authed else { continue };
                match login(&a.profile, a.project_id.clone()).await {
                    Ok(fresh) => {
                        tracing::info!("token renewed");
                        let _ = client_tx.send(Some(fresh.client.clone()));
                        let _ = ui.send(Response::LoggedIn(fresh.info.clone()));
                        authed = Some(fresh);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "token renewal failed");
                        // Try again in a minute, unless the token has expired by then.
                        if let Some(a) = &mut authed {
                            a.info.expires_at = Some(Utc::now() + chrono::Duration::minutes(6));
                        }
                    }
                }
            }
        }
    }
}

fn login_words(e: &ClientError) -> String {
    match e {
        ClientError::Api { status, .. } if *status == StatusCode::UNAUTHORIZED => {
            "the cloud did not accept these credentials".into()
        }
        other => other.to_string(),
    }
}

async fn login(profile: &Profile, project_id: Option<String>) -> Result<Authed, ClientError> {
    let creds = profile.credentials().ok_or_else(|| ClientError::Decode("the login is incomplete".into()))?;
    let mut client = match &project_id {
        Some(id) => Client::login_to_project(&creds, id).await?,
        None => Client::login(&creds).await?,
    };
    client.compute_version = negotiate_compute(&client).await;
    let token: Token = serde_json::from_value(client.session.body.clone()).unwrap_or_default();
    let info = SessionInfo {
        cloud: profile.name.clone(),
        auth_url: profile.auth_url.clone(),
        user: token.user.as_ref().map(|u| u.name.clone()).unwrap_or_else(|| profile.username.clone()),
        project: token.project.as_ref().map(|p| p.name.clone()).unwrap_or_else(|| profile.project_name.clone()),
        project_id: token.project.as_ref().map(|p| p.id.clone()).unwrap_or_default(),
        admin: token.is_admin(),
        expires_at: token.expires_at,
        compute_version: client.compute_version.clone(),
    };
    tracing::info!(cloud = %info.cloud, project = %info.project, version = ?info.compute_version, "logged in");
    Ok(Authed { client, profile: profile.clone(), info, project_id })
}

/// The highest compute microversion both sides know (this client's models cover up to 2.79).
async fn negotiate_compute(client: &Client) -> Option<String> {
    let doc = client.get("compute", "").await.ok()?;
    let max = doc["version"]["version"].as_str()?;
    Some(pick_version(max, "2.79"))
}

fn pick_version(server_max: &str, ours: &str) -> String {
    let parse = |s: &str| -> (u32, u32) {
        let (a, b) = s.split_once('.').unwrap_or((s, "0"));
        (a.parse().unwrap_or(2), b.parse().unwrap_or(1))
    };
    if parse(server_max) < parse(ours) { server_max.to_string() } else { ours.to_string() }
}

/// Transfers run on their own (long, with progress, cancellable); every other request goes
/// through [`dispatch`].
fn start(
    client: &Client,
    req: Request,
    transfers: &crate::transfer::Transfers,
    scope: Scope,
    ui: &mpsc::UnboundedSender<Response>,
    done: &mpsc::UnboundedSender<Done>,
    hints: &mpsc::UnboundedSender<LiveHint>,
) {
    match req {
        Request::Upload { id, spec } => transfers.upload(client.clone(), id, spec, ui.clone()),
        Request::Download { id, spec } => transfers.download(client.clone(), id, spec, ui.clone()),
        other => dispatch(client, other, scope, ui, done, hints),
    }
}

fn dispatch(
    client: &Client,
    req: Request,
    scope: Scope,
    ui: &mpsc::UnboundedSender<Response>,
    done: &mpsc::UnboundedSender<Done>,
    hints: &mpsc::UnboundedSender<LiveHint>,
) {
    let client = client.clone();
    let (ui, done, hints) = (ui.clone(), done.clone(), hints.clone());
    tokio::spawn(async move {
        match handle(&client, &req, scope).await {
            Ok(resp) => {
                match &resp {
                    Response::Listed(Listing::Servers(s)) | Response::Launched(s) => {
                        let _ = hints.send(LiveHint::Seen(s.clone()));
                    }
                    Response::Accepted { id, .. } | Response::Rescued { id, .. } => {
                        let _ = hints.send(LiveHint::Kick(id.clone()));
                    }
                    _ => {}
                }
                let _ = ui.send(resp);
            }
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
                let _ = done.send(Done::Unauthorized(req));
            }
            Err(e) => {
                tracing::warn!(request = ?req, error = %e, "request failed");
                let _ = ui.send(Response::Failed { message: words(&req, &e), request: req });
            }
        }
    });
}

/// An error as a sentence: what failed and the cloud's own message.
fn words(req: &Request, e: &ClientError) -> String {
    let what = match req {
        Request::List(k) => format!("loading {}", format!("{k:?}").to_lowercase()),
        Request::Overview => "loading the overview".into(),
        Request::Timeline(_) => "loading the timeline".into(),
        Request::Console(_) => "loading the console log".into(),
        Request::Action { op, .. } => format!("{} failed", op.verb()),
        Request::Lock { .. } => "lock failed".into(),
        Request::CreateImage { name, .. } => format!("snapshot {name} failed"),
        Request::ServerCall { call, .. } => format!("{} failed", call.op().verb()),
        Request::Delete { kind, id, name } => {
            format!("deleting {} {} failed", kind.noun(), if name.is_empty() { id } else { name })
        }
        Request::Launch(_) => "launch failed".into(),
        Request::ImportKeypair { .. } => "importing the key pair failed".into(),
        Request::Projects => "listing projects".into(),
        Request::SerialConsole { .. } | Request::ConsoleConnect { .. } => "opening the console".into(),
        Request::WebConsole { .. } => "asking for a graphical console".into(),
        Request::CreateKeypair { name, .. } => format!("creating key pair {name} failed"),
        Request::SwitchProject { .. } => "switching project".into(),
        Request::Login(_) => "login".into(),
        Request::SaveState { .. } => "saving the state file".into(),
        Request::Upload { .. } | Request::Download { .. } | Request::CancelTransfer(_) => "image transfer".into(),
        Request::AllProjects(_) => "switching to all projects".into(),
        Request::ProjectNames => "listing project names".into(),
        Request::Actions(_) => "loading the action history".into(),
        Request::SetEnabled { kind, name, enabled, .. } => {
            format!("{} {} {name}", if *enabled { "enabling" } else { "disabling" }, kind.noun())
        }
        Request::Create(crate::overlays::Create::Network(n)) => format!("creating network {}", n.name),
        Request::Create(crate::overlays::Create::Port(_)) => "creating the port".into(),
        Request::Create(crate::overlays::Create::Project { name, .. }) => format!("creating project {name}"),
        Request::Create(crate::overlays::Create::User { name, .. }) => format!("creating user {name}"),
        Request::Create(crate::overlays::Create::Grant { .. }) => "granting the role".into(),
        Request::Create(crate::overlays::Create::Upload(_) | crate::overlays::Create::Download(_)) => {
            "image transfer".into()
        }
        Request::Create(crate::overlays::Create::SecGroup { name, .. }) => format!("creating security group {name}"),
        Request::Create(crate::overlays::Create::SecRule(_)) => "adding the rule".into(),
        Request::Create(crate::overlays::Create::Volume(v)) => format!("creating volume {}", v.name),
        Request::Create(crate::overlays::Create::Extend { volume, .. }) => format!("extending volume {}", volume.name),
        Request::Create(crate::overlays::Create::Attach { volume, server_name, .. }) => {
            format!("attaching volume {} to {server_name}", volume.name)
        }
        Request::Create(crate::overlays::Create::Detach { volume }) => format!("detaching volume {}", volume.name),
        Request::Create(crate::overlays::Create::VolSnapshot { volume, .. }) => {
            format!("snapshotting volume {}", volume.name)
        }
        Request::Create(crate::overlays::Create::ToImage { volume, .. }) => {
            format!("uploading volume {} to an image", volume.name)
        }
        Request::Create(crate::overlays::Create::ServerGroups { server_name, .. }) => {
            format!("changing the security groups of {server_name}")
        }
        Request::Create(crate::overlays::Create::ServerGroup { name, .. }) => format!("creating server group {name}"),
        Request::Create(crate::overlays::Create::Aggregate { name, .. }) => format!("creating aggregate {name}"),
        Request::Create(crate::overlays::Create::AggregateHosts { name, .. }) => format!("changing aggregate {name}"),
        Request::Create(crate::overlays::Create::AggregateMeta { name, .. }) => {
            format!("changing the metadata of aggregate {name}")
        }
        Request::Create(crate::overlays::Create::AddPort { server_name, .. }) => {
            format!("attaching a port to {server_name}")
        }
        Request::Create(crate::overlays::Create::RemovePort { server_name, port_id, .. }) => {
            format!("detaching port {port_id} from {server_name}")
        }
        Request::Interfaces(_) => "loading the interfaces".into(),
        Request::Diagnostics(_) => "reading the diagnostics".into(),
        Request::LiveMigration(_) => "reading the live migration".into(),
    };
    let detail = match e {
        // A server-side failure's cause is only in the service's log, under the request id.
        ClientError::Api { status, message, request_id: Some(id) } if status.is_server_error() => {
            format!("{message} ({}, request {id})", status.as_u16())
        }
        ClientError::Api { status, message, .. } if matches!(req, Request::Delete { .. }) => {
            let why = match *status {
                StatusCode::FORBIDDEN => " — not allowed for this user",
                StatusCode::CONFLICT => " — still in use",
                StatusCode::NOT_FOUND => " — already gone?",
                _ => "",
            };
            format!("{message} ({}{why})", status.as_u16())
        }
        ClientError::Api { status, message, .. } => format!("{message} ({})", status.as_u16()),
        // Key pair checks made here (a file to read, a key file already there) are sentences.
        ClientError::Decode(m) if matches!(req, Request::CreateKeypair { .. }) => m.clone(),
        // So are what a microversion cannot say (a migration's target host below 2.56).
        ClientError::Decode(m) if matches!(req, Request::ServerCall { .. }) => m.clone(),
        other => other.to_string(),
    };
    format!("{what}: {detail}")
}

/// The root of a service the catalog may give with or without its version (`/image` or
/// `/image/v2`), joined with the version this client speaks.
pub fn versioned(session: &Session, service: &str, version: &str) -> Result<String, ClientError> {
    let ep = session.endpoint(service)?;
    let root = match ep.rsplit_once('/') {
        Some((root, last)) if last.starts_with('v') && last[1..].chars().all(|c| c.is_ascii_digit() || c == '.') => {
            root.to_string()
        }
        _ => ep.clone(),
    };
    Ok(format!("{root}/{version}"))
}

/// GETs a collection and follows its `next` links to the end (Nova/Neutron `<key>_links`, Glance
/// `next` relative to the service root).
pub(crate) async fn get_all(
    client: &Client,
    service: &str,
    base: &str,
    path: &str,
    key: &str,
) -> Result<Vec<Value>, ClientError> {
    let mut url = format!("{base}{path}");
    let mut out = Vec::new();
    // A cloud that keeps sending the same link must not loop forever.
    for _ in 0..1000 {
        let page = client.send_url(Method::GET, service, &url, None).await?;
        let items = page[key].as_array().cloned().unwrap_or_default();
        let empty = items.is_empty();
        out.extend(items);
        let next = page[format!("{key}_links")]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["rel"] == "next"))
            .and_then(|x| x["href"].as_str())
            .map(str::to_string)
            .or_else(|| page["next"].as_str().map(str::to_string));
        match next {
            Some(n) if !empty => {
                url = if n.starts_with("http") {
                    n
                } else {
                    // Glance: relative to the unversioned root.
                    let root = base.trim_end_matches(|c: char| c != '/').trim_end_matches('/');
                    format!("{root}{n}")
                };
            }
            _ => break,
        }
    }
    Ok(out)
}

async fn handle(client: &Client, req: &Request, scope: Scope) -> Result<Response, ClientError> {
    match req {
        Request::List(kind) => crate::views::list(client, *kind, scope).await.map(Response::Listed),
        Request::Create(c) => create(client, c).await,
        Request::SetEnabled { kind, id, name, enabled } => {
            let (call, body) = kind
                .enable_call(id, *enabled)
                .ok_or_else(|| ClientError::Decode(format!("a {} cannot be disabled", kind.noun())))?;
            let base = match call.version {
                Some(v) => versioned(&client.session, call.service, v)?,
                None => client.session.endpoint(call.service)?,
            };
            client.send_url(Method::PATCH, call.service, &format!("{base}{}", call.path), Some(&body)).await?;
            Ok(Response::EnabledSet { kind: *kind, name: name.clone(), enabled: *enabled })
        }
        Request::Actions(id) => {
            let v = client.get("compute", &format!("/servers/{id}/os-instance-actions")).await?;
            let mut actions: Vec<crate::views::actions::InstanceAction> =
                parse_list(&v["instanceActions"], |_: &mut crate::views::actions::InstanceAction, _| {});
            // Each action's events need a request of their own (Nova lists them only there);
            // only the newest actions' (Nova lists newest first), so a long-lived instance does
            // not cost hundreds of requests at once.
            let details = futures_util::future::join_all(actions.iter().take(ACTION_EVENTS).map(|a| {
                let path = format!("/servers/{id}/os-instance-actions/{}", a.request_id);
                async move { client.get("compute", &path).await }
            }))
            .await;
            for (a, d) in actions.iter_mut().zip(details) {
                if let Ok(d) = d {
                    a.events =
                        parse_list(&d["instanceAction"]["events"], |_: &mut crate::views::actions::ActionEvent, _| {});
                }
            }
            Ok(Response::Actions { id: id.clone(), actions })
        }
        Request::ProjectNames => {
            // Only who may list projects gets names; the others keep seeing IDs.
            let names = match client.get("identity", "/v3/projects").await {
                Ok(v) => v["projects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| Some((p["id"].as_str()?.to_string(), p["name"].as_str()?.to_string())))
                    .collect(),
                Err(e) => {
                    tracing::info!(error = %e, "project names unavailable; showing IDs");
                    std::collections::HashMap::new()
                }
            };
            Ok(Response::ProjectNames(names))
        }
        Request::Overview => {
            let limits = client.get("compute", "/limits").await?;
            let mut quotas = Quotas::from_limits(&limits);
            if let Some(pid) = client.session.project_id() {
                let net = versioned(&client.session, "network", "v2.0")?;
                // quota_details is an extension: without it the network gauges are left out.
                if let Ok(q) =
                    client.send_url(Method::GET, "network", &format!("{net}/quotas/{pid}/details"), None).await
                {
                    for (key, label) in [("network", "Networks"), ("port", "Ports"), ("subnet", "Subnets")] {
                        let r = &q["quota"][key];
                        if let (Some(used), Some(limit)) = (r["used"].as_i64(), r["limit"].as_i64()) {
                            quotas.items.push((label.into(), used, limit));
                        }
                    }
                }
            }
            let admin = client.session.roles().iter().any(|r| r == "admin");
            let hypervisors = if admin {
                let v = client.get("compute", "/os-hypervisors/detail").await?;
                parse_list(&v["hypervisors"], |h: &mut Hypervisor, raw| h.raw = raw)
            } else {
                Vec::new()
            };
            let usage = match client.session.project_id() {
                Some(pid) => crate::views::usage::report(client, pid, admin, Utc::now()).await,
                None => Default::default(),
            };
            Ok(Response::Overview(Overview { quotas, hypervisors, usage }))
        }
        Request::Timeline(id) => match client.get("compute", &format!("/servers/{id}/os-meridian-timeline")).await {
            Ok(v) => {
                let entries = v["timeline"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| serde_json::from_value(e.clone()).ok())
                    .collect();
                Ok(Response::Timeline { id: id.clone(), entries, source: "state transitions" })
            }
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                let entries = timeline_from_actions(client, id).await?;
                Ok(Response::Timeline { id: id.clone(), entries, source: "instance actions" })
            }
            Err(e) => Err(e),
        },
        Request::Console(id) => {
            let v = client
                .post("compute", &format!("/servers/{id}/action"), &json!({"os-getConsoleOutput": {"length": 2000}}))
                .await?;
            Ok(Response::Console { id: id.clone(), output: v["output"].as_str().unwrap_or_default().to_string() })
        }
        Request::Action { id, op } => {
            let path = format!("/servers/{id}/action");
            match op {
                ServerOp::Start => client.post("compute", &path, &json!({"os-start": null})).await?,
                ServerOp::Stop => client.post("compute", &path, &json!({"os-stop": null})).await?,
                ServerOp::Reboot => client.post("compute", &path, &json!({"reboot": {"type": "SOFT"}})).await?,
                ServerOp::HardReboot => client.post("compute", &path, &json!({"reboot": {"type": "HARD"}})).await?,
                ServerOp::Delete => client.delete("compute", &format!("/servers/{id}")).await?,
                ServerOp::Pause => client.post("compute", &path, &json!({"pause": null})).await?,
                ServerOp::Unpause => client.post("compute", &path, &json!({"unpause": null})).await?,
                ServerOp::Suspend => client.post("compute", &path, &json!({"suspend": null})).await?,
                ServerOp::Resume => client.post("compute", &path, &json!({"resume": null})).await?,
                ServerOp::Lock => client.post("compute", &path, &json!({"lock": null})).await?,
                ServerOp::Unlock => client.post("compute", &path, &json!({"unlock": null})).await?,
                ServerOp::Shelve => client.post("compute", &path, &json!({"shelve": null})).await?,
                ServerOp::Unshelve => client.post("compute", &path, &json!({"unshelve": null})).await?,
                ServerOp::Unrescue => client.post("compute", &path, &json!({"unrescue": null})).await?,
                ServerOp::Restore => client.post("compute", &path, &json!({"restore": null})).await?,
                ServerOp::ForceDelete => client.post("compute", &path, &json!({"forceDelete": null})).await?,
                ServerOp::ConfirmResize => client.post("compute", &path, &json!({"confirmResize": null})).await?,
                ServerOp::RevertResize => client.post("compute", &path, &json!({"revertResize": null})).await?,
                ServerOp::Snapshot => {
                    return Err(ClientError::Decode("a snapshot needs a name (Request::CreateImage)".into()));
                }
                ServerOp::Rebuild
                | ServerOp::Rescue
                | ServerOp::ResetState
                | ServerOp::Resize
                | ServerOp::Migrate
                | ServerOp::Evacuate
                | ServerOp::LiveMigrate
                | ServerOp::LiveMigrationAbort
                | ServerOp::LiveMigrationForceComplete => {
                    return Err(ClientError::Decode(format!(
                        "{} needs its arguments (Request::ServerCall)",
                        op.verb()
                    )));
                }
            };
            Ok(Response::Accepted { id: id.clone(), op: *op })
        }
        Request::Lock { id, reason } => {
            let body = json!({"lock": {"locked_reason": reason}});
            client.post("compute", &format!("/servers/{id}/action"), &body).await?;
            Ok(Response::Accepted { id: id.clone(), op: ServerOp::Lock })
        }
        Request::ServerCall { id, call: ServerCall::LiveMigrationControl { abort } } => {
            live_migration_control(client, id, *abort).await?;
            let op = if *abort { ServerOp::LiveMigrationAbort } else { ServerOp::LiveMigrationForceComplete };
            Ok(Response::Accepted { id: id.clone(), op })
        }
        Request::LiveMigration(id) => {
            let v = client.get("compute", &format!("/servers/{id}/migrations")).await;
            let result = match v {
                Ok(v) => Ok(v["migrations"].as_array().and_then(|l| l.first()).cloned()),
                Err(e) => Err(words(req, &e)),
            };
            Ok(Response::LiveMigration { id: id.clone(), result })
        }
        Request::ServerCall { id, call } => {
            let body = call.body(client.compute_version.as_deref()).map_err(ClientError::Decode)?;
            let answer = client.post("compute", &format!("/servers/{id}/action"), &body).await?;
            match (call, answer["adminPass"].as_str()) {
                (ServerCall::Rescue { .. }, Some(p)) => Ok(Response::Rescued { id: id.clone(), admin_pass: p.into() }),
                _ => Ok(Response::Accepted { id: id.clone(), op: call.op() }),
            }
        }
        Request::CreateImage { id, name } => {
            let body = json!({"createImage": {"name": name}});
            client.post("compute", &format!("/servers/{id}/action"), &body).await?;
            Ok(Response::Accepted { id: id.clone(), op: ServerOp::Snapshot })
        }
        Request::Delete { kind, id, name } => {
            let call = delete_call(*kind, id)
                .ok_or_else(|| ClientError::Decode(format!("{} cannot be deleted here", kind.noun())))?;
            let base = match call.version {
                Some(v) => versioned(&client.session, call.service, v)?,
                None if call.service == crate::views::volumes::SERVICE => {
                    crate::views::volumes::endpoint(&client.session)?
                }
                None => client.session.endpoint(call.service)?,
            };
            client.send_url(call.method(), call.service, &format!("{base}{}", call.path), None).await?;
            Ok(Response::Deleted { kind: *kind, id: id.clone(), name: name.clone() })
        }
        Request::Launch(spec) => {
            let mut server = json!({
                "name": spec.name,
                "imageRef": spec.image_id,
                "flavorRef": spec.flavor_id,
                "min_count": spec.count,
                "max_count": spec.count,
                "networks": spec.network_ids.iter().map(|n| json!({"uuid": n})).collect::<Vec<_>>(),
            });
            if spec.network_ids.is_empty() {
                server["networks"] = json!("auto");
            }
            if let Some(k) = &spec.key_name {
                server["key_name"] = json!(k);
            }
            if let Some(gb) = spec.boot_volume_gb {
                // What `openstack server create --boot-from-volume` sends.
                server["imageRef"] = json!("");
                server["block_device_mapping_v2"] = json!([{
                    "boot_index": 0, "uuid": spec.image_id, "source_type": "image",
                    "destination_type": "volume", "volume_size": gb, "delete_on_termination": true,
                }]);
            }
            if !spec.security_groups.is_empty() {
                server["security_groups"] =
                    spec.security_groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>().into();
            }
            if let Some(u) = &spec.user_data {
                server["user_data"] = json!(base64::engine::general_purpose::STANDARD.encode(u));
            }
            let mut body = json!({ "server": server });
            if let Some(g) = &spec.server_group {
                // Nova reads the hints beside `server`, not inside it.
                body["os:scheduler_hints"] = json!({ "group": g });
            }
            let created = client.post("compute", "/servers", &body).await?;
            let first_id = created["server"]["id"].as_str().unwrap_or_default().to_string();
            // The create answer holds only an ID: fetch the new servers so they show at once.
            let q: String = form_urlencoded::byte_serialize(spec.name.as_bytes()).collect();
            let listed = client.get("compute", &format!("/servers/detail?name={q}")).await?;
            let mut servers: Vec<Server> = parse_list(&listed["servers"], |s: &mut Server, raw| s.raw = raw)
                .into_iter()
                .filter(|s| s.id == first_id || s.name == spec.name || s.name.starts_with(&format!("{}-", spec.name)))
                .filter(|s| s.id == first_id || s.in_transition())
                .collect();
            if servers.is_empty() && !first_id.is_empty() {
                let v = client.get("compute", &format!("/servers/{first_id}")).await?;
                servers.extend(parse_server(&v["server"]));
            }
            Ok(Response::Launched(servers))
        }
        Request::ImportKeypair { name, public_key } => {
            client
                .post("compute", "/os-keypairs", &json!({"keypair": {"name": name, "public_key": public_key}}))
                .await?;
            Ok(Response::KeypairImported(name.clone()))
        }
        Request::Projects => {
            let auth_url = versioned(&client.session, "identity", "v3")?;
            let v = client.send_url(Method::GET, "identity", &format!("{auth_url}/auth/projects"), None).await?;
            let mut projects: Vec<Project> = parse_list(&v["projects"], |_: &mut Project, _| {});
            projects.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Response::Projects(projects))
        }
        Request::SerialConsole { id } => match crate::console_pane::remote_console_url(client, id).await {
            Ok(url) => Ok(Response::ConsoleUrl { id: id.clone(), result: Ok(url) }),
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => Err(e),
            Err(e) => Ok(Response::ConsoleUrl { id: id.clone(), result: Err(crate::console_pane::url_error(&e)) }),
        },
        Request::WebConsole { id, name } => match crate::console_pane::novnc_url(client, id).await {
            Ok(url) => Ok(Response::WebConsoleUrl { name: name.clone(), result: Ok(url) }),
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => Err(e),
            Err(e) => Ok(Response::WebConsoleUrl {
                name: name.clone(),
                result: Err(crate::console_pane::novnc_error(name, &e)),
            }),
        },
        Request::CreateKeypair { cloud, name, source } => {
            let dir = crate::ssh::default_keys_dir();
            crate::keys::create(client, &dir, cloud, name, source).await.map(Response::KeypairCreated)
        }
        Request::Interfaces(id) => {
            let interfaces = crate::views::interfaces::list(client, id).await?;
            Ok(Response::Interfaces { id: id.clone(), interfaces })
        }
        Request::Diagnostics(id) => match crate::views::interfaces::diagnostics(client, id).await {
            Ok(v) => Ok(Response::Diagnostics { id: id.clone(), result: Ok(v) }),
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => Err(e),
            Err(e) => Ok(Response::Diagnostics { id: id.clone(), result: Err(words(req, &e)) }),
        },
        Request::Login(_)
        | Request::SwitchProject { .. }
        | Request::SaveState { .. }
        | Request::AllProjects(_)
        | Request::Upload { .. }
        | Request::Download { .. }
        | Request::CancelTransfer(_)
        | Request::ConsoleConnect { .. } => Err(ClientError::Decode("handled by the worker".into())),
    }
}

/// How many of an instance's newest actions get their events read for the Actions tab.
const ACTION_EVENTS: usize = 20;

/// Creates what a form describes. A network whose subnet is refused is deleted again, as
/// Horizon's network workflow does, so a retry does not leave a half-made network behind.
async fn create(client: &Client, c: &crate::overlays::Create) -> Result<Response, ClientError> {
    use crate::overlays::Create;
    if let Create::Project { .. } | Create::User { .. } | Create::Grant { .. } = c {
        return create_identity(client, c).await;
    }
    if let Create::Volume(_)
    | Create::Extend { .. }
    | Create::Attach { .. }
    | Create::Detach { .. }
    | Create::VolSnapshot { .. }
    | Create::ToImage { .. } = c
    {
        return crate::views::volumes::act(client, c).await;
    }
    match c {
        Create::ServerGroup { .. } => return crate::views::server_groups::act(client, c).await,
        Create::Aggregate { .. } | Create::AggregateHosts { .. } | Create::AggregateMeta { .. } => {
            return crate::views::aggregates::act(client, c).await;
        }
        Create::AddPort { .. } | Create::RemovePort { .. } => return crate::views::interfaces::act(client, c).await,
        _ => {}
    }
    let base = versioned(&client.session, "network", "v2.0")?;
    match c {
        Create::Network(spec) => {
            let body = json!({"network": {"name": spec.name, "admin_state_up": true}});
            let net = client.send_url(Method::POST, "network", &format!("{base}/networks"), Some(&body)).await?;
            let net_id = net["network"]["id"].as_str().unwrap_or_default().to_string();
            if let Some(s) = &spec.subnet {
                let mut subnet = json!({
                    "network_id": net_id,
                    "name": format!("{}-subnet", spec.name),
                    "cidr": s.cidr,
                    "ip_version": s.ip_version,
                    "enable_dhcp": s.dhcp,
                    "dns_nameservers": s.dns,
                });
                if let Some(g) = &s.gateway {
                    subnet["gateway_ip"] = json!(g);
                }
                let made = client
                    .send_url(Method::POST, "network", &format!("{base}/subnets"), Some(&json!({"subnet": subnet})))
                    .await;
                if let Err(e) = made {
                    let undo =
                        client.send_url(Method::DELETE, "network", &format!("{base}/networks/{net_id}"), None).await;
                    if let Err(u) = undo {
                        tracing::warn!(error = %u, network = %net_id, "cannot delete the network whose subnet failed");
                    }
                    return Err(e);
                }
            }
            Ok(Response::Created { kind: Kind::Networks, name: spec.name.clone() })
        }
        Create::Port(spec) => {
            let mut port = json!({"network_id": spec.network_id, "name": spec.name});
            if let Some(ip) = &spec.fixed_ip {
                port["fixed_ips"] = json!([{"ip_address": ip}]);
            }
            client.send_url(Method::POST, "network", &format!("{base}/ports"), Some(&json!({"port": port}))).await?;
            Ok(Response::Created { kind: Kind::Ports, name: spec.name.clone() })
        }
        Create::Upload(_) | Create::Download(_) => Err(ClientError::Decode("transfers are not creates".into())),
        Create::Volume(_)
        | Create::Extend { .. }
        | Create::Attach { .. }
        | Create::Detach { .. }
        | Create::VolSnapshot { .. }
        | Create::ToImage { .. } => Err(ClientError::Decode("volume forms are handled by views::volumes".into())),
        Create::SecGroup { name, description } => {
            let body = json!({"security_group": {"name": name, "description": description}});
            client.send_url(Method::POST, "network", &format!("{base}/security-groups"), Some(&body)).await?;
            Ok(Response::Created { kind: Kind::SecGroups, name: name.clone() })
        }
        Create::SecRule(r) => {
            let mut rule = json!({
                "security_group_id": r.group_id,
                "direction": r.direction,
                "ethertype": r.ethertype,
            });
            let fields = [
                ("protocol", r.protocol.as_ref().map(|p| json!(p))),
                ("port_range_min", r.port_range_min.map(|p| json!(p))),
                ("port_range_max", r.port_range_max.map(|p| json!(p))),
                ("remote_ip_prefix", r.remote_ip_prefix.as_ref().map(|p| json!(p))),
                ("remote_group_id", r.remote_group_id.as_ref().map(|p| json!(p))),
                ("description", (!r.description.is_empty()).then(|| json!(r.description))),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    rule[k] = v;
                }
            }
            let body = json!({ "security_group_rule": rule });
            client.send_url(Method::POST, "network", &format!("{base}/security-group-rules"), Some(&body)).await?;
            Ok(Response::Created { kind: Kind::SecRules, name: String::new() })
        }
        Create::ServerGroups { server_id, server_name, add, remove } => {
            // Nova's actions take a group's name (an ID works on Neutron-backed clouds too).
            let path = format!("/servers/{}/action", path_segment(server_id));
            for g in add {
                client.post("compute", &path, &json!({"addSecurityGroup": {"name": g}})).await?;
            }
            for g in remove {
                client.post("compute", &path, &json!({"removeSecurityGroup": {"name": g}})).await?;
            }
            Ok(Response::GroupsChanged { server: server_name.clone(), added: add.clone(), removed: remove.clone() })
        }
        Create::Project { .. } | Create::User { .. } | Create::Grant { .. } => {
            Err(ClientError::Decode("an identity form reached the network path".into()))
        }
        Create::ServerGroup { .. }
        | Create::Aggregate { .. }
        | Create::AggregateHosts { .. }
        | Create::AggregateMeta { .. }
        | Create::AddPort { .. }
        | Create::RemovePort { .. } => Err(ClientError::Decode("a compute form reached the network path".into())),
    }
}

/// The ID of a Keystone user, project or role given by name or ID (a name is looked up first).
async fn identity_id(client: &Client, base: &str, collection: &str, wanted: &str) -> Result<String, ClientError> {
    let q: String = form_urlencoded::byte_serialize(wanted.as_bytes()).collect();
    let v = client.send_url(Method::GET, "identity", &format!("{base}/{collection}?name={q}"), None).await?;
    if let Some(id) = v[collection][0]["id"].as_str() {
        return Ok(id.to_string());
    }
    let seg = path_segment(wanted);
    match client.send_url(Method::GET, "identity", &format!("{base}/{collection}/{seg}"), None).await {
        Ok(_) => Ok(wanted.to_string()),
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
            Err(ClientError::Decode(format!("no {} {wanted}", collection.trim_end_matches('s'))))
        }
        Err(e) => Err(e),
    }
}

/// Projects, users (with their first role) and grants from the identity forms.
async fn create_identity(client: &Client, c: &crate::overlays::Create) -> Result<Response, ClientError> {
    use crate::overlays::Create;
    let base = versioned(&client.session, "identity", "v3")?;
    let post = |path: &str, body: Value| {
        let url = format!("{base}{path}");
        async move { client.send_url(Method::POST, "identity", &url, Some(&body)).await }
    };
    let grant = |project: String, user: String, role: String| {
        let url = format!("{base}/projects/{project}/users/{user}/roles/{role}");
        async move { client.send_url(Method::PUT, "identity", &url, None).await }
    };
    match c {
        Create::Project { name, description } => {
            let body = json!({"project": {"name": name, "description": description, "domain_id": "default"}});
            post("/projects", body).await?;
            Ok(Response::Created { kind: Kind::IdProjects, name: name.clone() })
        }
        Create::User { name, password, project, role } => {
            let target = match project {
                Some(p) => Some((
                    identity_id(client, &base, "projects", p).await?,
                    identity_id(client, &base, "roles", role).await?,
                )),
                None => None,
            };
            let mut user = json!({"name": name, "password": password, "domain_id": "default"});
            if let Some((pid, _)) = &target {
                user["default_project_id"] = json!(pid);
            }
            let made = post("/users", json!({"user": user})).await?;
            if let (Some((pid, rid)), Some(uid)) = (target, made["user"]["id"].as_str()) {
                grant(pid, uid.to_string(), rid).await?;
            }
            Ok(Response::Created { kind: Kind::Users, name: name.clone() })
        }
        Create::Grant { user, project, role } => {
            let uid = identity_id(client, &base, "users", user).await?;
            let pid = identity_id(client, &base, "projects", project).await?;
            let rid = identity_id(client, &base, "roles", role).await?;
            grant(pid, uid, rid).await?;
            Ok(Response::Created { kind: Kind::Assignments, name: format!("{role} for {user} on {project}") })
        }
        _ => Err(ClientError::Decode("not an identity form".into())),
    }
}

/// Every cloud's fallback timeline: instance actions and their events, in time order, each
/// phase lasting until the next one starts.
/// Aborts (`DELETE`) or forces to complete (the `force_complete` action) the instance's live
/// migration in progress, found first (`GET /servers/{id}/migrations`).
async fn live_migration_control(client: &Client, id: &str, abort: bool) -> Result<(), ClientError> {
    let list = client.get("compute", &format!("/servers/{id}/migrations")).await?;
    let mid = list["migrations"]
        .as_array()
        .and_then(|l| l.first())
        .and_then(|m| m["id"].as_i64())
        .ok_or_else(|| ClientError::Decode("no live migration of this instance is in progress".into()))?;
    let path = format!("/servers/{id}/migrations/{mid}");
    if abort {
        client.delete("compute", &path).await?;
    } else {
        client.post("compute", &format!("{path}/action"), &json!({"force_complete": null})).await?;
    }
    Ok(())
}

async fn timeline_from_actions(client: &Client, id: &str) -> Result<Vec<Transition>, ClientError> {
    let v = client.get("compute", &format!("/servers/{id}/os-instance-actions")).await?;
    let mut entries: Vec<Transition> = Vec::new();
    for action in v["instanceActions"].as_array().into_iter().flatten() {
        let name = action["action"].as_str().unwrap_or("?").to_string();
        let req_id = action["request_id"].as_str().unwrap_or_default();
        entries.push(Transition {
            vm_state: Some(name.clone()),
            task_state: None,
            power_state: None,
            at: action["start_time"].as_str().and_then(crate::model::parse_time),
            duration_s: None,
        });
        if let Ok(detail) = client.get("compute", &format!("/servers/{id}/os-instance-actions/{req_id}")).await {
            for ev in detail["instanceAction"]["events"].as_array().into_iter().flatten() {
                entries.push(Transition {
                    vm_state: Some(name.clone()),
                    task_state: ev["event"].as_str().map(str::to_string),
                    power_state: None,
                    at: ev["start_time"].as_str().and_then(crate::model::parse_time),
                    duration_s: None,
                });
            }
        }
    }
    entries.sort_by_key(|e| e.at);
    let times: Vec<_> = entries.iter().map(|e| e.at).collect();
    for (i, e) in entries.iter_mut().enumerate() {
        if let (Some(a), Some(Some(b))) = (e.at, times.get(i + 1)) {
            e.duration_s = Some((*b - a).num_milliseconds() as f64 / 1000.0);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microversion_is_the_lower_of_both() {
        assert_eq!(pick_version("2.96", "2.79"), "2.79");
        assert_eq!(pick_version("2.60", "2.79"), "2.60");
        assert_eq!(pick_version("2.100", "2.79"), "2.79");
    }

    #[test]
    fn lifecycle_bodies_are_novas_at_each_microversion() {
        let at = |c: ServerCall, v: Option<&str>| c.body(v);
        let rebuild = ServerCall::Rebuild { image_id: "img".into(), name: Some("web2".into()) };
        assert_eq!(at(rebuild, Some("2.79")), Ok(json!({"rebuild": {"imageRef": "img", "name": "web2"}})));
        let rebuild = ServerCall::Rebuild { image_id: "img".into(), name: None };
        assert_eq!(at(rebuild, Some("2.79")), Ok(json!({"rebuild": {"imageRef": "img"}})));
        assert_eq!(at(ServerCall::Rescue { image_id: None }, None), Ok(json!({"rescue": null})));
        assert_eq!(
            at(ServerCall::Rescue { image_id: Some("r".into()) }, None),
            Ok(json!({"rescue": {"rescue_image_ref": "r"}}))
        );
        assert_eq!(at(ServerCall::ResetState { error: true }, None), Ok(json!({"os-resetState": {"state": "error"}})));
        assert_eq!(at(ServerCall::Resize { flavor_id: "2".into() }, None), Ok(json!({"resize": {"flavorRef": "2"}})));
        assert_eq!(at(ServerCall::Migrate { host: None }, Some("2.79")), Ok(json!({"migrate": null})));
        let to_c2 = || ServerCall::Migrate { host: Some("c2".into()) };
        assert_eq!(at(to_c2(), Some("2.56")), Ok(json!({"migrate": {"host": "c2"}})));
        assert!(at(to_c2(), Some("2.55")).expect_err("too old").contains("2.56"));
        assert_eq!(at(ServerCall::Evacuate { host: None }, Some("2.79")), Ok(json!({"evacuate": {}})));
        // Live migration: always a block migration ("auto" from 2.25), a host from 2.30.
        let live = |h: Option<&str>| ServerCall::LiveMigrate { host: h.map(String::from) };
        assert_eq!(
            at(live(Some("c2")), Some("2.79")),
            Ok(json!({"os-migrateLive": {"host": "c2", "block_migration": "auto"}}))
        );
        assert_eq!(
            at(live(None), None),
            Ok(json!({"os-migrateLive": {"host": null, "block_migration": true, "disk_over_commit": false}}))
        );
        assert!(at(live(Some("c2")), Some("2.29")).is_err_and(|e| e.contains("2.30")));
        assert_eq!(
            at(ServerCall::Evacuate { host: Some("c2".into()) }, Some("2.13")),
            Ok(json!({"evacuate": {"host": "c2", "onSharedStorage": false}}))
        );
    }

    #[test]
    fn delete_sends_the_right_method_and_path_for_each_kind() {
        let call = |k| delete_call(k, "abc-1").map(|c| (c.method(), c.service, c.version, c.path));
        assert_eq!(call(Kind::Servers), Some((Method::DELETE, "compute", None, "/servers/abc-1".into())));
        assert_eq!(call(Kind::Flavors), Some((Method::DELETE, "compute", None, "/flavors/abc-1".into())));
        assert_eq!(call(Kind::Images), Some((Method::DELETE, "image", Some("v2"), "/images/abc-1".into())));
        assert_eq!(call(Kind::Networks), Some((Method::DELETE, "network", Some("v2.0"), "/networks/abc-1".into())));
        assert_eq!(call(Kind::Keypairs), Some((Method::DELETE, "compute", None, "/os-keypairs/abc-1".into())));
        assert_eq!(call(Kind::Hypervisors), None);
        assert_eq!(call(Kind::Services), None);
        // Key pairs are addressed by name, which may hold anything.
        assert_eq!(
            delete_call(Kind::Keypairs, "my key/1").map(|c| c.path),
            Some("/os-keypairs/my%20key%2F1".to_string())
        );
    }

    #[test]
    fn delete_failures_read_as_sentences() {
        let req = Request::Delete { kind: Kind::Networks, id: "n1".into(), name: "private".into() };
        let e = ClientError::Api {
            status: StatusCode::CONFLICT,
            message: "There are one or more ports still in use on the network.".into(),
            request_id: Some("req-1".into()),
        };
        assert_eq!(
            words(&req, &e),
            "deleting network private failed: There are one or more ports still in use on the network. (409 — still in use)"
        );
        let req = Request::Delete { kind: Kind::Flavors, id: "1".into(), name: String::new() };
        let e = ClientError::Api {
            status: StatusCode::FORBIDDEN,
            message: "Policy doesn't allow it.".into(),
            request_id: None,
        };
        assert_eq!(
            words(&req, &e),
            "deleting flavor 1 failed: Policy doesn't allow it. (403 — not allowed for this user)"
        );
        // A server fault names the request id its cause is logged under.
        let e = ClientError::Api {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "An unexpected error occurred; see the server log.".into(),
            request_id: Some("req-7".into()),
        };
        assert_eq!(
            words(&req, &e),
            "deleting flavor 1 failed: An unexpected error occurred; see the server log. (500, request req-7)"
        );
    }
}
