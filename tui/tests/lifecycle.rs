//! The instance lifecycle keys (issue 17): rebuild, rescue/unrescue, restore, resize with its
//! confirm/revert prompt, reset state, migrate, evacuate and live migration. The app with injected channels,
//! fed keys and fake worker responses, drawn into `TestBackend` and snapshotted as in
//! `snapshots.rs`; each test also checks the exact requests the keys send.

use chrono::{TimeZone, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use meridian_tui::app::{App, AppConfig, Screen};
use meridian_tui::model::{Flavor, Hypervisor, Image, Server};
use meridian_tui::worker::{Kind, Listing, Request, Response, ServerCall, ServerOp, SessionInfo};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

fn id(n: u32) -> String {
    format!("{n:08x}-1111-4222-8333-444455556666")
}

fn server(n: u32, name: &str, status: &str, task: Option<&str>) -> Server {
    let raw = json!({
        "id": id(n), "name": name, "status": status,
        "OS-EXT-STS:task_state": task, "OS-EXT-STS:vm_state": status.to_lowercase(), "OS-EXT-STS:power_state": 1,
        "addresses": {"net": [{"addr": format!("10.0.0.{n}"), "version": 4, "OS-EXT-IPS:type": "fixed"}]},
        "flavor": {"original_name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
        "image": {"id": id(900)}, "OS-EXT-SRV-ATTR:host": "compute-1",
        "created": "2026-11-22T02:00:00Z", "updated": "2026-11-22T02:30:00Z", "key_name": null,
    });
    meridian_tui::model::parse_server(&raw).expect("server")
}

/// web-1 resized to m1.medium, waiting for confirm or revert.
fn resized() -> Server {
    let mut raw = server(1, "web-1", "VERIFY_RESIZE", None).raw;
    raw["flavor"] = json!({"original_name": "m1.medium", "vcpus": 2, "ram": 4096, "disk": 40});
    meridian_tui::model::parse_server(&raw).expect("server")
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture")
}

fn flavors() -> Vec<Flavor> {
    [("1", "m1.tiny", 1, 512, 1), ("2", "m1.small", 1, 2048, 20), ("3", "m1.medium", 2, 4096, 40)]
        .into_iter()
        .map(|(id, name, vcpus, ram, disk)| {
            parse(json!({"id": id, "name": name, "vcpus": vcpus, "ram": ram, "disk": disk}))
        })
        .collect()
}

fn images() -> Vec<Image> {
    [(900, "cirros", "qcow2"), (901, "debian-13", "raw"), (902, "rescue-kit", "raw")]
        .into_iter()
        .map(|(n, name, fmt)| {
            parse(json!({"id": id(n), "name": name, "status": "active", "visibility": "public", "disk_format": fmt}))
        })
        .collect()
}

fn hypervisors() -> Vec<Hypervisor> {
    [(1, "up"), (2, "up"), (3, "down")]
        .into_iter()
        .map(|(n, state)| {
            let raw = json!({"id": id(700 + n), "hypervisor_hostname": format!("compute-{n}.example"), "state": state,
                "status": "enabled", "service": {"host": format!("compute-{n}"), "id": n}});
            let mut h: Hypervisor = parse(raw.clone());
            h.raw = raw;
            h
        })
        .collect()
}

struct Harness {
    app: App,
    rx: UnboundedReceiver<Request>,
    term: Terminal<TestBackend>,
}

impl Harness {
    fn new(admin: bool, servers: Vec<Server>) -> Harness {
        let (tx, rx) = unbounded_channel();
        let mut app = App::new(tx, Screen::Main, AppConfig::default());
        app.clock = Utc.with_ymd_and_hms(2026, 11, 22, 3, 0, 0).single();
        app.on_response(Response::LoggedIn(SessionInfo {
            cloud: "devstack".into(),
            user: if admin { "admin".into() } else { "alice".into() },
            project: "demo".into(),
            project_id: "p1".into(),
            admin,
            compute_version: Some("2.79".into()),
            ..SessionInfo::default()
        }));
        app.on_response(Response::Listed(Listing::Images(images())));
        app.on_response(Response::Listed(Listing::Flavors(flavors())));
        app.on_response(Response::Listed(Listing::Hypervisors(hypervisors())));
        app.on_response(Response::Listed(Listing::Servers(servers)));
        app.on_response(Response::LiveMode("live".into()));
        let mut h = Harness { app, rx, term: Terminal::new(TestBackend::new(120, 20)).expect("terminal") };
        h.drain();
        h
    }

    fn drain(&mut self) -> Vec<Request> {
        let mut v = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            v.push(r);
        }
        v
    }

    /// What was sent, without the list reloads a dialog asks for.
    fn sent(&mut self) -> Vec<Request> {
        self.drain().into_iter().filter(|r| !matches!(r, Request::List(_))).collect()
    }

    fn key(&mut self, code: KeyCode) {
        self.app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    fn chars(&mut self, s: &str) {
        for c in s.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    fn screen(&mut self) -> String {
        self.term.draw(|f| self.app.draw(f)).expect("draw");
        let buf = self.term.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            let line: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol().to_string()).collect();
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    fn update(&mut self, s: Server) {
        self.app.on_response(Response::ServerUpdate(Box::new(s)));
    }
}

macro_rules! snap {
    ($name:expr, $text:expr) => {
        insta::with_settings!({filters => vec![
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[uuid]"),
            (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{0,4}…?", "[uuid…]"),
        ]}, {
            insta::assert_snapshot!($name, $text);
        });
    };
}

fn call(n: u32, call: ServerCall) -> Request {
    Request::ServerCall { id: id(n), call }
}

fn op(n: u32, op: ServerOp) -> Request {
    Request::Action { id: id(n), op }
}

/// `B`: the images with the current one selected, an optional name; Enter sends Nova's rebuild,
/// the row shows REBUILD at once, and the dialog waits for the answer.
#[test]
fn rebuild_picks_an_image_and_a_new_name() {
    let mut h = Harness::new(false, vec![server(1, "web-1", "ACTIVE", None)]);
    h.chars("B");
    assert_eq!(h.drain(), vec![Request::List(Kind::Images)], "the images are read again for the dialog");
    h.key(KeyCode::Down);
    h.key(KeyCode::Tab);
    h.chars("web-1b");
    let s = h.screen();
    assert!(s.contains("rebuild web-1") && s.contains("(its image now)") && s.contains("web-1b"), "{s}");
    snap!("rebuild_dialog", s);
    h.key(KeyCode::Enter);
    let want = ServerCall::Rebuild { image_id: id(901), name: Some("web-1b".into()) };
    assert_eq!(h.sent(), vec![call(1, want)]);
    let s = h.screen();
    assert!(s.contains("sending…"), "{s}");
    h.chars("x");
    assert!(h.sent().is_empty(), "keys wait for the answer");
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Rebuild });
    let s = h.screen();
    assert!(s.contains("rebuild accepted") && !s.contains("rebuild web-1"), "closed on the answer: {s}");
    assert!(s.lines().any(|l| l.contains("web-1") && l.contains("REBUILD") && l.contains("rebuilding")), "{s}");
}

/// `K`: asks (the dialog is the question), its own image first; a refusal comes back into the
/// dialog in the cloud's words (another choice can be sent); the rescue password is shown; on a
/// rescued instance `K` unrescues at once.
#[test]
fn rescue_asks_and_unrescue_does_not() {
    let mut h = Harness::new(false, vec![server(1, "web-1", "ACTIVE", None)]);
    h.chars("K");
    let s = h.screen();
    assert!(s.contains("rescue web-1") && s.contains("its own image") && s.contains("rescue-kit"), "{s}");
    snap!("rescue_dialog", s);
    assert!(h.sent().is_empty(), "nothing is sent before Enter");
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::Rescue { image_id: None })]);
    h.app.on_response(Response::Failed {
        request: call(1, ServerCall::Rescue { image_id: None }),
        message: "rescue failed: Instance web-1 is locked (409)".into(),
    });
    let s = h.screen();
    assert!(s.contains("rescue failed: Instance web-1 is locked (409)") && s.contains("rescue web-1"), "{s}");
    // Another image, chosen in the same dialog.
    h.key(KeyCode::End);
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::Rescue { image_id: Some(id(902)) })]);
    h.app.on_response(Response::Rescued { id: id(1), admin_pass: "Xy7pQ2".into() });
    let s = h.screen();
    assert!(s.contains("rescue accepted; the rescue system's root password: Xy7pQ2"), "{s}");

    h.update(server(1, "web-1", "RESCUE", None));
    let s = h.screen();
    assert!(s.contains("<K>unrescue"), "the hint line says what to do: {s}");
    h.chars("K");
    assert_eq!(h.sent(), vec![op(1, ServerOp::Unrescue)]);
}

/// `ctrl-u` restores a soft-deleted instance, and says what it is for on any other.
#[test]
fn restore_acts_on_soft_deleted_rows_only() {
    let mut h = Harness::new(false, vec![server(1, "web-1", "SOFT_DELETED", None), server(2, "db", "ACTIVE", None)]);
    let s = h.screen();
    assert!(s.contains("<ctrl-u>restore"), "{s}");
    h.app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    assert_eq!(h.sent(), vec![op(1, ServerOp::Restore)]);
    h.key(KeyCode::Down);
    h.app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    assert!(h.sent().is_empty());
    assert!(h.screen().contains("restore brings back SOFT_DELETED instances only"));
}

/// `ctrl-k` force-deletes a soft-deleted instance (Nova's `forceDelete`, not DELETE) after a
/// question naming it; marked rows are all named; any other status is refused without a question.
#[test]
fn force_delete_asks_naming_the_instances_and_sends_force_delete() {
    let ctrl_k = KeyEvent::new(KeyCode::Char('k'), KeyModifiers::CONTROL);
    let mut h = Harness::new(
        false,
        vec![
            server(1, "web-1", "SOFT_DELETED", None),
            server(2, "web-2", "SOFT_DELETED", None),
            server(3, "db", "ACTIVE", None),
        ],
    );
    let s = h.screen();
    assert!(s.contains("<ctrl-u>restore, before the cloud reclaims it <ctrl-k>force delete"), "{s}");
    h.app.on_key(ctrl_k);
    let s = h.screen();
    assert!(s.contains("Force delete instance web-1?") && s.contains("no restore after this"), "{s}");
    snap!("force_delete_one", s);
    assert!(h.sent().is_empty(), "nothing is sent before the answer");
    // Any other key keeps it.
    h.chars("n");
    assert!(h.sent().is_empty());
    h.app.on_key(ctrl_k);
    h.chars("y");
    assert_eq!(h.sent(), vec![op(1, ServerOp::ForceDelete)]);
    let s = h.screen();
    assert!(s.lines().any(|l| l.contains("web-1") && l.contains("deleting")), "shown at once: {s}");
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::ForceDelete });

    // Marked rows: one question naming each of them.
    h.update(server(1, "web-1", "SOFT_DELETED", None));
    h.chars("  ");
    h.app.on_key(ctrl_k);
    let s = h.screen();
    assert!(s.contains("Force delete 2 instances?") && s.contains("web-1, web-2"), "{s}");
    snap!("force_delete_marked", s);
    h.key(KeyCode::Enter);
    let mut sent = h.sent();
    sent.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(sent, vec![op(1, ServerOp::ForceDelete), op(2, ServerOp::ForceDelete)]);

    // Not soft-deleted: said, nothing asked or sent.
    h.key(KeyCode::Esc);
    h.key(KeyCode::End);
    h.app.on_key(ctrl_k);
    let s = h.screen();
    assert!(s.contains("force delete is for SOFT_DELETED instances (ctrl-d deletes the others)"), "{s}");
    assert!(!s.contains("Force delete"), "{s}");
    assert!(h.sent().is_empty());
}

/// Marked rescued instances: one question naming the count, then one unrescue each.
#[test]
fn marked_rescued_rows_unrescue_after_one_question() {
    let mut h = Harness::new(false, vec![server(1, "web-1", "RESCUE", None), server(2, "web-2", "RESCUE", None)]);
    h.chars("  K");
    assert!(h.sent().is_empty(), "nothing is sent before the answer");
    let s = h.screen();
    assert!(s.contains("Unrescue 2 instances?"), "{s}");
    h.chars("y");
    let mut sent = h.sent();
    sent.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(sent, vec![op(1, ServerOp::Unrescue), op(2, ServerOp::Unrescue)]);
}

/// `V`: the flavors with the current one marked and refused, a smaller disk marked but
/// allowed (the cloud's 400 says why); VERIFY_RESIZE stands out and the same key asks confirm
/// or revert.
#[test]
fn resize_then_confirm_or_revert() {
    let mut h = Harness::new(false, vec![server(1, "web-1", "ACTIVE", None)]);
    h.chars("V");
    let s = h.screen();
    assert!(s.contains("(current)") && s.contains("(smaller disk)"), "{s}");
    snap!("resize_dialog", s);
    h.key(KeyCode::Up);
    h.key(KeyCode::Enter);
    assert!(h.sent().is_empty(), "the current flavor is not sent");
    assert!(h.screen().contains("web-1 has flavor m1.small already"));
    h.key(KeyCode::Up);
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::Resize { flavor_id: "1".into() })]);
    // The cloud's whole sentence, in the dialog (the status line would cut it).
    let words = "resize failed: Flavor's disk is smaller than the current disk. Flavor disk is 1073741824 bytes, \
                 current disk is 21474836480 bytes. (400)";
    h.app.on_response(Response::Failed {
        request: call(1, ServerCall::Resize { flavor_id: "1".into() }),
        message: words.into(),
    });
    let s = h.screen();
    assert!(s.contains("current disk is 21474836480 bytes. (400)") && s.contains("resize web-1"), "{s}");
    assert!(s.lines().any(|l| l.contains("web-1") && l.contains("ACTIVE")), "the row as it was: {s}");
    snap!("resize_refused", s);

    h.key(KeyCode::Esc);
    h.chars("V");
    h.key(KeyCode::Enter); // m1.medium: the first bigger one is selected
    assert_eq!(h.sent(), vec![call(1, ServerCall::Resize { flavor_id: "3".into() })]);
    assert!(h.screen().lines().any(|l| l.contains("RESIZE") && l.contains("resize_prep")));
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Resize });
    h.update(resized());
    let s = h.screen();
    assert!(s.contains("VERIFY_RESIZE <V>confirm or revert the resize"), "{s}");
    h.chars("V");
    let s = h.screen();
    assert!(s.contains("finish the resize of web-1") && s.contains("keep m1.medium"), "{s}");
    snap!("verify_resize_prompt", s);
    h.chars("c");
    assert_eq!(h.sent(), vec![op(1, ServerOp::ConfirmResize)]);
    let s = h.screen();
    assert!(s.lines().any(|l| l.contains("VERIFY_RE") && l.contains("resize_conf")), "{s}");
    assert!(!h.screen().contains("<V>confirm or revert"), "no question while the answer is carried out");
    // Another resize waits; from the detail the hint line says what to do, and `V` `r` reverts.
    h.update(resized());
    h.key(KeyCode::Enter);
    let s = h.screen();
    assert!(s.contains("VERIFY_RESIZE <V>confirm or revert the resize"), "{s}");
    snap!("verify_resize_detail", s);
    h.chars("V");
    h.chars("r");
    assert_eq!(h.sent(), vec![op(1, ServerOp::RevertResize)]);
}

/// Marked rows: one dialog, one request per instance, progress per row.
#[test]
fn marked_rows_are_resized_together() {
    let mut h = Harness::new(false, vec![server(1, "web-1", "ACTIVE", None), server(2, "web-2", "ACTIVE", None)]);
    h.chars("  ");
    h.chars("V");
    let s = h.screen();
    assert!(s.contains("resize 2 instances") && !s.contains("(current)"), "{s}");
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    let mut sent = h.sent();
    sent.sort_by_key(|r| format!("{r:?}"));
    let medium = || ServerCall::Resize { flavor_id: "2".into() };
    assert_eq!(sent, vec![call(1, medium()), call(2, medium())]);
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Resize });
    h.app.on_response(Response::Accepted { id: id(2), op: ServerOp::Resize });
    assert!(h.screen().contains("resize: all 2 instances accepted"));
}

/// Admins: `M` with a host list (the compute service's host names), `X` evacuate, `!` reset
/// state; members are told these are not theirs.
#[test]
fn admins_migrate_evacuate_and_reset_state() {
    let mut m = Harness::new(false, vec![server(1, "web-1", "ACTIVE", None)]);
    m.chars("M");
    assert!(m.overlay_closed_with("migrate is for administrators"));

    let mut h = Harness::new(true, vec![server(1, "web-1", "ACTIVE", None)]);
    h.chars("M");
    assert_eq!(h.drain(), vec![Request::List(Kind::Hypervisors)]);
    let s = h.screen();
    assert!(s.contains("any host") && s.contains("compute-2") && s.contains("(its host now)"), "{s}");
    snap!("migrate_dialog", s);
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::Migrate { host: None })]);
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Migrate });
    h.chars("M");
    h.key(KeyCode::Down);
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::Migrate { host: Some("compute-2".into()) })]);
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::Migrate });

    h.chars("X");
    let s = h.screen();
    assert!(s.contains("evacuate web-1") && s.contains("down"), "{s}");
    snap!("evacuate_dialog", s);
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    assert!(h.sent().is_empty(), "not to where it is");
    assert!(h.screen().contains("compute-1 is where it is now: pick another host"));
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::Evacuate { host: Some("compute-2".into()) })]);
    h.app.on_response(Response::Failed {
        request: call(1, ServerCall::Evacuate { host: Some("compute-2".into()) }),
        message: "evacuate failed: Compute service of compute-1 is still in use. (400)".into(),
    });
    let s = h.screen();
    assert!(s.contains("Compute service of compute-1 is still in use. (400)") && s.contains("evacuate web-1"), "{s}");
    h.key(KeyCode::Esc);

    h.chars("!");
    let s = h.screen();
    assert!(s.contains("reset the state of web-1") && s.contains("active") && s.contains("error"), "{s}");
    snap!("reset_state_dialog", s);
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::ResetState { error: true })]);
}

/// Admins: `J` live-migrates to a chosen host (MIGRATING at once); on a MIGRATING instance it
/// asks force complete or abort; the detail shows the migration's progress while it runs.
#[test]
fn admins_live_migrate_watch_the_progress_and_abort_or_force_complete() {
    let mut m = Harness::new(false, vec![server(1, "web-1", "ACTIVE", None)]);
    m.chars("J");
    assert!(m.overlay_closed_with("live migrate is for administrators"));

    let mut h = Harness::new(true, vec![server(1, "web-1", "ACTIVE", None), server(2, "web-2", "PAUSED", None)]);
    h.chars("J");
    assert_eq!(h.drain(), vec![Request::List(Kind::Hypervisors)]);
    let s = h.screen();
    assert!(s.contains("live-migrate web-1") && s.contains("keeps running") && s.contains("(its host now)"), "{s}");
    snap!("live_migrate_dialog", s);
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    assert!(h.sent().is_empty(), "not to where it is");
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::LiveMigrate { host: Some("compute-2".into()) })]);
    // The row shows MIGRATING before the cloud answers.
    let s = h.screen();
    assert!(s.contains("MIGRATING") && s.contains("migrating"), "{s}");
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::LiveMigrate });

    // Marked rows: one request each, any host.
    h.update(server(1, "web-1", "ACTIVE", None));
    h.key(KeyCode::Char(' '));
    h.key(KeyCode::Down);
    h.key(KeyCode::Char(' '));
    h.chars("J");
    h.key(KeyCode::Enter);
    let mut sent = h.sent();
    sent.sort_by_key(|r| format!("{r:?}"));
    let any = || ServerCall::LiveMigrate { host: None };
    assert_eq!(sent, vec![call(1, any()), call(2, any())]);
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::LiveMigrate });
    h.app.on_response(Response::Accepted { id: id(2), op: ServerOp::LiveMigrate });

    // The detail of a MIGRATING instance reads its migration with each reload and shows it.
    h.update(server(1, "web-1", "MIGRATING", Some("migrating")));
    h.key(KeyCode::Up);
    h.key(KeyCode::Enter);
    h.drain();
    h.app.on_response(Response::Listed(Listing::Servers(vec![
        server(1, "web-1", "MIGRATING", Some("migrating")),
        server(2, "web-2", "PAUSED", None),
    ])));
    assert_eq!(h.sent(), vec![Request::LiveMigration(id(1))]);
    let m = json!({"id": 7, "status": "running", "source_compute": "compute-1", "dest_compute": "compute-2",
        "memory_total_bytes": 2147483648u64, "memory_processed_bytes": 1073741824u64,
        "disk_total_bytes": 21474836480u64, "disk_processed_bytes": 5368709120u64});
    h.app.on_response(Response::LiveMigration { id: id(1), result: Ok(Some(m)) });
    let s = h.screen();
    assert!(s.contains("live migration running") && s.contains("compute-1 → compute-2"), "{s}");
    assert!(s.contains("memory 50% (1024 of 2048 MiB) · disk 25% (5120 of 20480 MiB)"), "{s}");
    snap!("live_migration_detail", s);

    // `J` on it: force complete or abort.
    h.chars("J");
    let s = h.screen();
    assert!(s.contains("force complete") && s.contains("abort"), "{s}");
    snap!("live_control_dialog", s);
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::LiveMigrationControl { abort: false })]);
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::LiveMigrationForceComplete });
    h.chars("J");
    h.key(KeyCode::Down);
    h.key(KeyCode::Enter);
    assert_eq!(h.sent(), vec![call(1, ServerCall::LiveMigrationControl { abort: true })]);
    h.app.on_response(Response::Accepted { id: id(1), op: ServerOp::LiveMigrationAbort });
    assert!(h.screen().contains("live migration running"), "nothing changes until the source has stopped");

    // Over: the next reload drops the progress.
    h.app.on_response(Response::Listed(Listing::Servers(vec![
        server(1, "web-1", "ACTIVE", None),
        server(2, "web-2", "PAUSED", None),
    ])));
    assert!(h.sent().is_empty());
    assert!(!h.screen().contains("live migration running"));
}

/// Every new key is in the help, named by its action.
#[test]
fn the_help_names_every_lifecycle_key() {
    let mut h = Harness::new(true, vec![server(1, "web-1", "ACTIVE", None)]);
    h.term = Terminal::new(TestBackend::new(120, 80)).expect("terminal");
    h.chars("?");
    let s = h.screen();
    for words in [
        "rebuild from an image (ports are kept)",
        "rescue (unrescue when rescued)",
        "restore a SOFT_DELETED instance",
        "ctrl-k",
        "force-delete a SOFT_DELETED instance (asks)",
        "resize; in VERIFY_RESIZE: confirm or revert",
        "admins: reset the state (active / error)",
        "admins: cold-migrate to a host",
        "admins: evacuate from a down host",
        "admins: live-migrate; MIGRATING: complete or abort",
    ] {
        assert!(s.contains(words), "{words}: {s}");
    }
}

impl Harness {
    /// No dialog opened and the status line says `words`.
    fn overlay_closed_with(&mut self, words: &str) -> bool {
        let s = self.screen();
        self.sent().is_empty() && !s.contains("any host") && s.contains(words)
    }
}
