//! The app's side of the instance lifecycle actions that take a choice or a state (issue 17):
//! `B` rebuild, `K` rescue/unrescue, `ctrl-u` restore, `V` resize and, in VERIFY_RESIZE,
//! confirm/revert, and for admins `!` reset state, `M` migrate, `X` evacuate, `J` live-migrate
//! (on a MIGRATING instance: force complete or abort). Each acts on the
//! marked rows, else on the selected instance (or the one in the detail); the choices come from
//! the images, flavors and hypervisors tables (read again when the dialog opens, and the dialog
//! follows them). The dialogs are `overlays::server_pick`; the requests `worker::ServerCall`.

use ratatui::text::Span;

use super::{App, Bulk};
use crate::keymap::Action;
use crate::model::Server;
use crate::overlays::{Choice, Confirm, Overlay, Pick, ServerDo, ServerPick, Verb};
use crate::table::{AnyTable, Progress};
use crate::theme::Theme;
use crate::views::View;
use crate::worker::{Kind, Request, ServerOp};

impl App {
    /// The marked instances (in the list), else the selected one or the detail's.
    fn lifecycle_targets(&mut self) -> Option<Vec<(String, String)>> {
        let picked = self.tables.servers.picked_rows();
        if self.detail.is_none() && self.view == View::Servers && !picked.is_empty() {
            return Some(picked);
        }
        match self.target_server() {
            Some(t) => Some(vec![t]),
            None => {
                self.error = Some(("select an instance first".into(), None));
                None
            }
        }
    }

    /// One of the lifecycle keys was pressed.
    pub(super) fn lifecycle(&mut self, action: Action) {
        if matches!(action, Action::ResetState | Action::Migrate | Action::Evacuate | Action::LiveMigrate)
            && !self.admin()
        {
            let what = crate::keymap::Action::ALL.iter().find(|(a, ..)| *a == action).map_or("", |(_, n, _)| *n);
            self.error = Some((format!("{} is for administrators", what.replace('_', " ")), None));
            return;
        }
        let Some(targets) = self.lifecycle_targets() else { return };
        let all = |status: &str| {
            targets.iter().all(|(id, _)| self.tables.servers.get(id).is_some_and(|s| s.status == status))
        };
        let pick = match action {
            Action::Rescue if all("RESCUE") => return self.undo(targets, ServerOp::Unrescue),
            Action::Restore if all("SOFT_DELETED") => return self.undo(targets, ServerOp::Restore),
            Action::Restore => {
                self.info = Some("restore brings back SOFT_DELETED instances only".into());
                return;
            }
            // No way back: always asked, naming every instance.
            Action::ForceDelete if all("SOFT_DELETED") => {
                let verb = Verb::Server(ServerOp::ForceDelete);
                self.overlay = Some(Overlay::Confirm(Confirm { verb, kind: Kind::Servers, targets }));
                return;
            }
            Action::ForceDelete => {
                let key = self.cfg.keymap.hint(Action::Delete);
                self.info = Some(format!("force delete is for SOFT_DELETED instances ({key} deletes the others)"));
                return;
            }
            Action::Resize if all("VERIFY_RESIZE") => {
                let flavor = match targets.as_slice() {
                    [(id, _)] => self.tables.servers.get(id).map(|s| self.flavor_label(s)).unwrap_or_default(),
                    _ => String::new(),
                };
                ServerPick::verify_resize(targets, &flavor)
            }
            Action::ResetState => ServerPick::reset_state(targets),
            Action::LiveMigrate if all("MIGRATING") => ServerPick::live_control(targets),
            Action::LiveMigrate => {
                let mut pick = self.new_pick(Pick::LiveMigrate, targets, Kind::Hypervisors);
                if !self.compute_at_least((2, 30)) {
                    pick.notice =
                        Some("this cloud is older than microversion 2.30: the scheduler picks the host".into());
                }
                pick
            }
            Action::Rebuild => self.new_pick(Pick::Rebuild, targets, Kind::Images),
            Action::Rescue => self.new_pick(Pick::Rescue, targets, Kind::Images),
            Action::Resize => self.new_pick(Pick::Resize, targets, Kind::Flavors),
            Action::Migrate => self.new_pick(Pick::Migrate, targets, Kind::Hypervisors),
            Action::Evacuate => self.new_pick(Pick::Evacuate, targets, Kind::Hypervisors),
            _ => return,
        };
        self.overlay = Some(Overlay::ServerPick(Box::new(pick)));
    }

    /// Unrescue or restore: at once for one instance, after one question naming the count for
    /// marked rows (as the other bulk actions).
    fn undo(&mut self, targets: Vec<(String, String)>, op: ServerOp) {
        if targets.len() > 1 {
            self.overlay = Some(Overlay::Confirm(Confirm { verb: Verb::Server(op), kind: Kind::Servers, targets }));
        } else {
            self.server_do(targets, ServerDo::Op(op));
        }
    }

    /// A dialog whose list comes from `kind`'s table, which is read again for it.
    fn new_pick(&mut self, what: Pick, targets: Vec<(String, String)>, kind: Kind) -> ServerPick {
        let (choices, default) = self.pick_choices(what, &targets);
        let mut pick = ServerPick::new(what, targets, choices, default);
        if what == Pick::Migrate && !self.compute_at_least((2, 56)) {
            pick.notice = Some("this cloud is older than microversion 2.56: the scheduler picks the host".into());
        }
        self.send(Request::List(kind));
        pick
    }

    fn compute_at_least(&self, v: (u32, u32)) -> bool {
        self.session
            .as_ref()
            .and_then(|s| s.compute_version.as_deref())
            .is_some_and(|have| crate::console_pane::version_at_least(have, v))
    }

    /// The flavor name an instance shows (embedded from 2.47, else looked up by ID).
    fn flavor_label(&self, s: &Server) -> String {
        s.flavor
            .original_name
            .clone()
            .or_else(|| {
                let id = s.flavor.id.as_deref()?;
                self.tables.flavors.items.iter().find(|f| f.id == id).map(|f| f.name.clone())
            })
            .unwrap_or_default()
    }

    /// The list of a dialog and the choice highlighted first.
    fn pick_choices(&self, what: Pick, targets: &[(String, String)]) -> (Vec<Choice>, usize) {
        // What the only target is now (a list for several marks nothing as current).
        let only: Option<&Server> = match targets {
            [(id, _)] => self.tables.servers.get(id),
            _ => None,
        };
        match what {
            Pick::Rebuild | Pick::Rescue => {
                let mut out = Vec::new();
                if what == Pick::Rescue {
                    out.push(Choice::new("its own image", "Nova's default", None));
                }
                let current = only.and_then(|s| s.image.0.clone());
                let mut images: Vec<_> = self.tables.images.items.iter().filter(|i| i.status == "active").collect();
                images.sort_by(|a, b| a.name.cmp(&b.name));
                for i in images {
                    let mut detail = i.disk_format.clone().unwrap_or_default();
                    if current.as_deref() == Some(i.id.as_str()) {
                        detail.push_str(" (its image now)");
                    }
                    out.push(Choice::new(if i.name.is_empty() { &i.id } else { &i.name }, detail, Some(i.id.clone())));
                }
                let default = match what {
                    Pick::Rebuild => out.iter().position(|c| c.value == current).unwrap_or(0),
                    _ => 0,
                };
                (out, default)
            }
            Pick::Resize => {
                let mut flavors: Vec<_> = self.tables.flavors.items.iter().collect();
                flavors.sort_by_key(|f| (f.vcpus, f.ram, f.disk, f.name.clone()));
                let now = only.and_then(|s| {
                    let name = self.flavor_label(s);
                    flavors.iter().find(|f| Some(&f.id) == s.flavor.id.as_ref() || f.name == name).map(|f| (*f).clone())
                });
                let mut default = None;
                let out = flavors
                    .iter()
                    .enumerate()
                    .map(|(n, f)| {
                        let mut detail = format!("{} vCPU · {} MB · {} GB", f.vcpus, f.ram, f.disk);
                        let mut c = Choice::new(&f.name, String::new(), Some(f.id.clone()));
                        if let Some(now) = &now {
                            if now.id == f.id {
                                detail.push_str(" (current)");
                                let who = targets.first().map(|(_, n)| n.as_str()).unwrap_or_default();
                                c.refused = Some(format!("{who} has flavor {} already: pick another", f.name));
                            } else if f.disk < now.disk {
                                // Shown: the cloud's own 400 says why it cannot be used.
                                detail.push_str(" (smaller disk)");
                            } else if default.is_none() {
                                default = Some(n);
                            }
                        }
                        c.detail = detail;
                        c
                    })
                    .collect();
                (out, default.unwrap_or(0))
            }
            Pick::Migrate | Pick::Evacuate | Pick::LiveMigrate => {
                let mut out = vec![Choice::new("any host", "the scheduler picks", None)];
                let can_choose = match what {
                    Pick::Evacuate => true,
                    Pick::LiveMigrate => self.compute_at_least((2, 30)),
                    _ => self.compute_at_least((2, 56)),
                };
                if can_choose {
                    let here = only.and_then(|s| s.host.clone());
                    let mut hosts: Vec<_> = self.tables.hypervisors.items.iter().collect();
                    hosts.sort_by(|a, b| a.hypervisor_hostname.cmp(&b.hypervisor_hostname));
                    for h in hosts {
                        // The compute service's host is what Nova takes (2.53+ embeds it).
                        let host = h.raw["service"]["host"].as_str().unwrap_or(&h.hypervisor_hostname).to_string();
                        let mut detail = format!("{} · {}", h.state, h.status);
                        let mut c = Choice::new(host.clone(), String::new(), Some(host.clone()));
                        if here.as_deref() == Some(host.as_str()) {
                            detail.push_str(" (its host now)");
                            // Nova refuses it too ("can't be the same one"); said here first.
                            c.refused = Some(format!("{host} is where it is now: pick another host"));
                        }
                        c.detail = detail;
                        out.push(c);
                    }
                }
                (out, 0)
            }
            Pick::ResetState | Pick::VerifyResize | Pick::LiveControl => (Vec::new(), 0),
        }
    }

    /// A list a dialog shows was read again.
    pub(super) fn refresh_pick(&mut self) {
        let Some(Overlay::ServerPick(p)) = &self.overlay else { return };
        if matches!(p.what, Pick::ResetState | Pick::VerifyResize | Pick::LiveControl) {
            return;
        }
        let (what, targets) = (p.what, p.targets().to_vec());
        let (choices, default) = self.pick_choices(what, &targets);
        if let Some(Overlay::ServerPick(p)) = &mut self.overlay {
            p.set_choices(choices, default);
        }
    }

    /// Sends the chosen action for each target; several become a bulk action (each row shows
    /// its progress, failures are listed together at the end).
    pub(super) fn server_do(&mut self, targets: Vec<(String, String)>, todo: ServerDo) {
        let op = match &todo {
            ServerDo::Call(c) => c.op(),
            ServerDo::Op(op) => *op,
        };
        if targets.len() > 1 {
            let t = &mut self.tables.servers;
            t.clear_picks();
            for (id, _) in &targets {
                t.set_progress(id, Some(Progress::Sent));
            }
            self.bulk = Some(Bulk {
                verb: Verb::Server(op),
                kind: Kind::Servers,
                total: targets.len(),
                waiting: targets.iter().cloned().collect(),
                failed: Vec::new(),
            });
        }
        // One instance with a choice: the dialog stays, busy, until the cloud answers.
        let wait = targets.len() == 1 && matches!(todo, ServerDo::Call(_));
        match &mut self.overlay {
            Some(Overlay::ServerPick(p)) if wait => {
                p.busy = true;
                p.notice = None;
            }
            _ => self.overlay = None,
        }
        for (id, _) in targets {
            self.expect_state(&id, op);
            match &todo {
                ServerDo::Call(call) => self.send(Request::ServerCall { id, call: call.clone() }),
                ServerDo::Op(op) => self.send(Request::Action { id, op: *op }),
            }
        }
    }

    /// The cloud accepted an action on `id`: a dialog waiting for that answer closes.
    pub(super) fn pick_answered(&mut self, id: &str) {
        if matches!(&self.overlay, Some(Overlay::ServerPick(p)) if p.waits_for(id)) {
            self.overlay = None;
        }
    }

    /// The cloud refused `request`: when its dialog waits for the answer, the refusal is shown
    /// there in full (the choice can be changed and sent again); whether it was.
    pub(super) fn pick_refused(&mut self, request: &Request, message: &str) -> bool {
        let Request::ServerCall { id, .. } = request else { return false };
        match &mut self.overlay {
            Some(Overlay::ServerPick(p)) if p.waits_for(id) => {
                p.busy = false;
                p.notice = Some(message.to_string());
                true
            }
            _ => false,
        }
    }

    /// The instance in the detail is (or was) live-migrating: its migration in progress is read
    /// again with each reload of the list, and dropped once it is over.
    pub(super) fn poll_live_migration(&mut self) {
        let Some(id) = self.detail.as_ref().filter(|d| d.view == View::Servers).map(|d| d.id.clone()) else {
            return;
        };
        let migrating = self.tables.servers.get(&id).is_some_and(|s| s.status == "MIGRATING");
        if migrating && self.admin() {
            self.send(Request::LiveMigration(id));
        } else if let Some(d) = &mut self.detail {
            d.live_migration = None;
        }
    }

    /// The answer of [`Request::LiveMigration`].
    pub(super) fn live_migration_loaded(&mut self, id: String, result: Result<Option<serde_json::Value>, String>) {
        if let Some(d) = &mut self.detail
            && d.id == id
        {
            d.live_migration = Some(result);
        }
    }

    /// The hint for an instance waiting for the user (VERIFY_RESIZE, RESCUE, SOFT_DELETED), and
    /// the full status of one a narrow STATUS column shows short (SHELVED_OFFLOADED).
    pub(super) fn waiting_hint(&self, theme: &Theme) -> Option<Vec<Span<'static>>> {
        let (id, _) = self.target_server()?;
        let s = self.tables.servers.get(&id)?;
        let km = &self.cfg.keymap;
        let waits = match s.status.as_str() {
            // While the answer is being carried out there is nothing to ask.
            _ if s.task_state.is_some() => None,
            "VERIFY_RESIZE" => Some((km.hint(Action::Resize), "confirm or revert the resize")),
            "RESCUE" => Some((km.hint(Action::Rescue), "unrescue (back to its own disk)")),
            "SOFT_DELETED" => Some((km.hint(Action::Restore), "restore, before the cloud reclaims it")),
            _ => None,
        };
        if waits.is_none() && crate::model::short_status(&s.status) == s.status {
            return None;
        }
        let mut spans = vec![Span::styled(format!("{} ", s.status), theme.status(&s.status))];
        if let Some((key, words)) = waits {
            spans.push(Span::styled(format!("<{key}>"), theme.accent()));
            spans.push(Span::styled(format!("{words} "), theme.muted()));
            if s.status == "SOFT_DELETED" {
                spans.push(Span::styled(format!("<{}>", km.hint(Action::ForceDelete)), theme.accent()));
                spans.push(Span::styled("force delete ", theme.muted()));
            }
        }
        Some(spans)
    }
}
