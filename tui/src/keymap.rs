//! The actions a key can trigger and the keymap (defaults, overridable in `config.toml`'s
//! `[keys]` table). Help is built from this table, so it always tells the truth.

use std::collections::{BTreeMap, HashMap};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::config::KeySpec;

/// What the user asked for, independent of which key they pressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Quit,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    NextTab,
    PrevTab,
    Select,
    Back,
    Palette,
    Filter,
    Help,
    Refresh,
    Retry,
    SortNext,
    SortReverse,
    ToggleRaw,
    Follow,
    Delete,
    Start,
    Stop,
    Reboot,
    HardReboot,
    /// Pause, or unpause a paused instance.
    Pause,
    /// Suspend, or resume a suspended instance.
    Suspend,
    /// Lock (asking a reason), or unlock a locked instance.
    Lock,
    /// Shelve, or unshelve a shelved (or offloaded) instance.
    Shelve,
    Console,
    Launch,
    Mark,
    ToggleEnabled,
    AllProjects,
    SwitchProject,
    SwitchTheme,
    // The console pane, ssh and copy (app/reach.rs).
    Attach,
    WebConsole,
    Ssh,
    Copy,
    // Image transfers (transfer.rs).
    Download,
    Transfers,
    /// Add or remove an instance's security groups.
    SecurityGroups,
    // Volumes (views/volumes.rs); `a` attaches there.
    Detach,
    Extend,
    Snapshot,
    ToImage,
    // The instance lifecycle of issue 17 (overlays/server_pick.rs).
    Rebuild,
    /// Rescue (asking the rescue image), or unrescue a rescued instance.
    Rescue,
    /// Restore a SOFT_DELETED instance.
    Restore,
    /// Delete a SOFT_DELETED instance for good at once (Nova's `forceDelete`), after a question.
    ForceDelete,
    ResetState,
    /// Resize (asking the flavor); on VERIFY_RESIZE: confirm or revert.
    Resize,
    Migrate,
    Evacuate,
    LiveMigrate,
    // Instance interfaces and diagnostics (views/interfaces.rs).
    AddPort,
    RemovePort,
    Diagnostics,
}

impl Action {
    /// Every action with its config name and help text, in help order.
    pub const ALL: &'static [(Action, &'static str, &'static str)] = &[
        (Action::Palette, "palette", "command palette: jump to a view (:servers, :images, …)"),
        (Action::Filter, "filter", "filter the table"),
        (Action::Help, "help", "this help"),
        (Action::Select, "select", "open the detail of the selected row"),
        (Action::Back, "back", "back / close"),
        (Action::Up, "up", "move up"),
        (Action::Down, "down", "move down"),
        (Action::PageUp, "page_up", "page up"),
        (Action::PageDown, "page_down", "page down"),
        (Action::Top, "top", "first row"),
        (Action::Bottom, "bottom", "last row"),
        (Action::NextTab, "next_tab", "next view / detail tab"),
        (Action::PrevTab, "prev_tab", "previous view / detail tab"),
        (Action::SortNext, "sort", "sort by the next column"),
        (Action::SortReverse, "sort_reverse", "reverse the sort"),
        (Action::Refresh, "refresh", "reload the view"),
        (Action::Retry, "retry", "retry the failed request"),
        (Action::Launch, "launch", "launch instances; in other views: create one"),
        (Action::Start, "start", "start the instance"),
        (Action::Stop, "stop", "stop the instance"),
        (Action::Reboot, "reboot", "soft reboot"),
        (Action::HardReboot, "hard_reboot", "hard reboot"),
        (Action::Pause, "pause", "pause (unpause when paused)"),
        (Action::Suspend, "suspend", "suspend (resume when suspended)"),
        (Action::Lock, "lock", "lock, asking why (unlock when locked)"),
        (Action::Shelve, "shelve", "shelve (unshelve when shelved)"),
        (Action::Delete, "delete", "delete (asks first)"),
        (Action::Mark, "mark", "mark the row for a bulk start/stop/reboot/delete"),
        (Action::Console, "console", "console log"),
        (Action::Attach, "attach", "interactive serial console (ctrl-] detaches)"),
        (Action::WebConsole, "web_console", "graphical console: a noVNC URL, shown and copied"),
        (Action::Ssh, "ssh", "ssh to the instance"),
        (Action::Copy, "copy", "copy id / top field of a detail / console URL"),
        (Action::Download, "download", "images: download the image's data to a file"),
        (Action::Transfers, "transfers", "image uploads and downloads: progress, cancel"),
        (Action::SecurityGroups, "security_groups", "instance: add or remove security groups"),
        (Action::Detach, "detach", "volume: detach from its instance (a: attach)"),
        (Action::Extend, "extend", "volume: extend"),
        (Action::Snapshot, "snapshot", "volume: snapshot; instance: snapshot to a new image"),
        (Action::ToImage, "to_image", "volume: upload to a new image"),
        (Action::Rebuild, "rebuild", "rebuild from an image (ports are kept)"),
        (Action::Rescue, "rescue", "rescue (unrescue when rescued)"),
        (Action::Restore, "restore", "restore a SOFT_DELETED instance"),
        (Action::ForceDelete, "force_delete", "force-delete a SOFT_DELETED instance (asks)"),
        (Action::Resize, "resize", "resize; in VERIFY_RESIZE: confirm or revert"),
        (Action::ResetState, "reset_state", "admins: reset the state (active / error)"),
        (Action::Migrate, "migrate", "admins: cold-migrate to a host"),
        (Action::Evacuate, "evacuate", "admins: evacuate from a down host"),
        (Action::LiveMigrate, "live_migrate", "admins: live-migrate; MIGRATING: complete or abort"),
        (Action::AddPort, "add_port", "instance: attach a port (new on a network, or a free one)"),
        (Action::RemovePort, "remove_port", "instance: detach one of its ports"),
        (Action::Diagnostics, "diagnostics", "interfaces, diagnostics; aggregate: metadata"),
        (Action::Follow, "follow", "console: follow the end"),
        (Action::ToggleRaw, "raw", "detail: fields / JSON / YAML"),
        (Action::ToggleEnabled, "toggle_enabled", "admins: disable or enable the project or user"),
        (Action::AllProjects, "all_projects", "admins: every project's instances, images, networks, ports"),
        (Action::SwitchProject, "project", "switch project or cloud"),
        (Action::SwitchTheme, "theme", "next theme"),
        (Action::Quit, "quit", "quit"),
    ];

    pub fn name(self) -> &'static str {
        Action::ALL.iter().find(|(a, ..)| *a == self).map(|(_, n, _)| *n).unwrap_or("?")
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.iter().find(|(_, n, _)| *n == name).map(|(a, ..)| *a)
    }
}

/// A key with its modifiers, normalised (a shifted letter is just the capital letter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl Key {
    pub fn from_event(e: &KeyEvent) -> Key {
        let mut mods = e.modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
        let code = match e.code {
            KeyCode::Char(c) => {
                mods.remove(KeyModifiers::SHIFT);
                // Terminals send ctrl-D as ctrl + 'd' or 'D'; bind the lower case.
                if mods.contains(KeyModifiers::CONTROL) {
                    KeyCode::Char(c.to_ascii_lowercase())
                } else {
                    KeyCode::Char(c)
                }
            }
            KeyCode::BackTab => {
                mods.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            other => other,
        };
        Key { code, mods }
    }

    /// Parses `ctrl-d`, `alt-x`, `enter`, `esc`, `pgdown`, `f5`, `?`, `R`, `space`, `shift-tab`.
    pub fn parse(s: &str) -> Option<Key> {
        let mut mods = KeyModifiers::NONE;
        let mut rest = s;
        loop {
            let lower = rest.to_ascii_lowercase();
            if rest.len() > 1 && lower.starts_with("ctrl-") {
                mods |= KeyModifiers::CONTROL;
                rest = &rest[5..];
            } else if rest.len() > 1 && lower.starts_with("alt-") {
                mods |= KeyModifiers::ALT;
                rest = &rest[4..];
            } else if rest.len() > 1 && lower.starts_with("shift-") {
                mods |= KeyModifiers::SHIFT;
                rest = &rest[6..];
            } else {
                break;
            }
        }
        let code = match rest.to_ascii_lowercase().as_str() {
            "enter" | "return" => KeyCode::Enter,
            "esc" | "escape" => KeyCode::Esc,
            "tab" if mods.contains(KeyModifiers::SHIFT) => KeyCode::BackTab,
            "tab" => KeyCode::Tab,
            "backtab" => KeyCode::BackTab,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pgup" | "pageup" => KeyCode::PageUp,
            "pgdown" | "pagedown" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "delete" | "del" => KeyCode::Delete,
            "backspace" => KeyCode::Backspace,
            "space" => KeyCode::Char(' '),
            f if f.len() > 1 && f.starts_with('f') => KeyCode::F(f[1..].parse().ok()?),
            _ => {
                let mut chars = rest.chars();
                let c = chars.next()?;
                if chars.next().is_some() {
                    return None;
                }
                KeyCode::Char(c)
            }
        };
        Some(Key::from_event(&KeyEvent::new(code, mods)))
    }

    pub fn label(&self) -> String {
        let mut s = String::new();
        if self.mods.contains(KeyModifiers::CONTROL) {
            s.push_str("ctrl-");
        }
        if self.mods.contains(KeyModifiers::ALT) {
            s.push_str("alt-");
        }
        if self.mods.contains(KeyModifiers::SHIFT) {
            s.push_str("shift-");
        }
        match self.code {
            KeyCode::Char(' ') => s.push_str("space"),
            KeyCode::Char(c) => s.push(c),
            KeyCode::Enter => s.push_str("enter"),
            KeyCode::Esc => s.push_str("esc"),
            KeyCode::Tab => s.push_str("tab"),
            KeyCode::BackTab => s.push_str("shift-tab"),
            KeyCode::Up => s.push('↑'),
            KeyCode::Down => s.push('↓'),
            KeyCode::Left => s.push('←'),
            KeyCode::Right => s.push('→'),
            KeyCode::PageUp => s.push_str("pgup"),
            KeyCode::PageDown => s.push_str("pgdown"),
            KeyCode::Home => s.push_str("home"),
            KeyCode::End => s.push_str("end"),
            KeyCode::Delete => s.push_str("delete"),
            KeyCode::F(n) => s.push_str(&format!("f{n}")),
            other => s.push_str(&format!("{other:?}")),
        }
        s
    }
}

#[derive(Clone, Debug)]
pub struct Keymap {
    map: HashMap<Key, Action>,
}

const DEFAULTS: &[(&str, Action)] = &[
    ("q", Action::Quit),
    ("ctrl-c", Action::Quit),
    ("up", Action::Up),
    ("k", Action::Up),
    ("down", Action::Down),
    ("j", Action::Down),
    ("pgup", Action::PageUp),
    ("ctrl-b", Action::PageUp),
    ("pgdown", Action::PageDown),
    ("ctrl-f", Action::PageDown),
    ("home", Action::Top),
    ("g", Action::Top),
    ("end", Action::Bottom),
    ("G", Action::Bottom),
    ("tab", Action::NextTab),
    ("right", Action::NextTab),
    ("shift-tab", Action::PrevTab),
    ("left", Action::PrevTab),
    ("enter", Action::Select),
    ("esc", Action::Back),
    (":", Action::Palette),
    ("/", Action::Filter),
    ("?", Action::Help),
    ("ctrl-r", Action::Refresh),
    ("R", Action::Retry),
    ("o", Action::SortNext),
    ("O", Action::SortReverse),
    ("v", Action::ToggleRaw),
    ("y", Action::Copy),
    ("a", Action::Attach),
    ("w", Action::WebConsole),
    ("x", Action::Ssh),
    ("f", Action::Follow),
    ("ctrl-d", Action::Delete),
    ("space", Action::Mark),
    ("s", Action::Start),
    ("S", Action::Stop),
    ("r", Action::Reboot),
    ("H", Action::HardReboot),
    ("P", Action::Pause),
    ("Z", Action::Suspend),
    ("L", Action::Lock),
    ("z", Action::Shelve),
    ("B", Action::Rebuild),
    ("K", Action::Rescue),
    ("ctrl-u", Action::Restore),
    ("ctrl-k", Action::ForceDelete),
    ("V", Action::Resize),
    ("!", Action::ResetState),
    ("M", Action::Migrate),
    ("X", Action::Evacuate),
    ("J", Action::LiveMigrate),
    ("l", Action::Console),
    ("c", Action::Launch),
    ("A", Action::AllProjects),
    ("e", Action::ToggleEnabled),
    ("p", Action::SwitchProject),
    ("T", Action::SwitchTheme),
    ("D", Action::Download),
    ("t", Action::Transfers),
    ("F", Action::SecurityGroups),
    ("u", Action::Detach),
    ("E", Action::Extend),
    ("n", Action::Snapshot),
    ("U", Action::ToImage),
    ("i", Action::AddPort),
    ("I", Action::RemovePort),
    ("m", Action::Diagnostics),
];

impl Default for Keymap {
    fn default() -> Self {
        let map = DEFAULTS.iter().filter_map(|(k, a)| Some((Key::parse(k)?, *a))).collect();
        Keymap { map }
    }
}

impl Keymap {
    /// The defaults with the user's `[keys]` applied: naming an action replaces all its default
    /// keys, and a key taken from another action moves to this one.
    pub fn with_overrides(overrides: &BTreeMap<String, KeySpec>) -> anyhow::Result<Keymap> {
        let mut km = Keymap::default();
        for (name, spec) in overrides {
            let action = Action::from_name(name).ok_or_else(|| anyhow::anyhow!("[keys]: no action named {name}"))?;
            km.map.retain(|_, a| *a != action);
            for k in spec.keys() {
                let key = Key::parse(k).ok_or_else(|| anyhow::anyhow!("[keys] {name}: cannot read key {k:?}"))?;
                km.map.insert(key, action);
            }
        }
        Ok(km)
    }

    pub fn action(&self, e: &KeyEvent) -> Option<Action> {
        self.map.get(&Key::from_event(e)).copied()
    }

    /// The keys bound to an action, in a stable order, for help and hints.
    pub fn keys_for(&self, action: Action) -> Vec<String> {
        let mut v: Vec<String> = self.map.iter().filter(|(_, a)| **a == action).map(|(k, _)| k.label()).collect();
        v.sort_by_key(|k| (k.chars().count() > 1, k.clone()));
        v
    }

    /// The first key label, for one-line hints.
    pub fn hint(&self, action: Action) -> String {
        self.keys_for(action).into_iter().next().unwrap_or_else(|| "-".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn defaults_follow_k9s() {
        let km = Keymap::default();
        assert_eq!(km.action(&ev(KeyCode::Char(':'), KeyModifiers::NONE)), Some(Action::Palette));
        assert_eq!(km.action(&ev(KeyCode::Char('/'), KeyModifiers::NONE)), Some(Action::Filter));
        assert_eq!(km.action(&ev(KeyCode::Char('?'), KeyModifiers::SHIFT)), Some(Action::Help));
        assert_eq!(km.action(&ev(KeyCode::Char('d'), KeyModifiers::CONTROL)), Some(Action::Delete));
        // Some terminals report ctrl-D with the capital letter.
        assert_eq!(km.action(&ev(KeyCode::Char('D'), KeyModifiers::CONTROL)), Some(Action::Delete));
        assert_eq!(km.action(&ev(KeyCode::Esc, KeyModifiers::NONE)), Some(Action::Back));
        assert_eq!(km.action(&ev(KeyCode::Enter, KeyModifiers::NONE)), Some(Action::Select));
        assert_eq!(km.action(&ev(KeyCode::Char('S'), KeyModifiers::SHIFT)), Some(Action::Stop));
        assert_eq!(km.action(&ev(KeyCode::BackTab, KeyModifiers::SHIFT)), Some(Action::PrevTab));
        assert_eq!(km.action(&ev(KeyCode::Char('d'), KeyModifiers::NONE)), None);
    }

    #[test]
    fn overrides_replace_an_actions_keys_and_steal_taken_ones() {
        let mut o = BTreeMap::new();
        o.insert("delete".to_string(), KeySpec::Many(vec!["x".into(), "alt-d".into()]));
        o.insert("help".to_string(), KeySpec::One("f1".into()));
        let km = Keymap::with_overrides(&o).expect("keymap");
        assert_eq!(km.action(&ev(KeyCode::Char('d'), KeyModifiers::CONTROL)), None);
        assert_eq!(km.action(&ev(KeyCode::Char('x'), KeyModifiers::NONE)), Some(Action::Delete));
        assert_eq!(km.action(&ev(KeyCode::Char('d'), KeyModifiers::ALT)), Some(Action::Delete));
        assert_eq!(km.action(&ev(KeyCode::F(1), KeyModifiers::NONE)), Some(Action::Help));
        assert_eq!(km.action(&ev(KeyCode::Char('?'), KeyModifiers::NONE)), None);
        assert_eq!(km.keys_for(Action::Delete), ["x", "alt-d"]);
    }

    #[test]
    fn bad_overrides_are_errors_in_words() {
        let mut o = BTreeMap::new();
        o.insert("explode".to_string(), KeySpec::One("x".into()));
        assert!(Keymap::with_overrides(&o).expect_err("unknown").to_string().contains("no action named explode"));
        let mut o = BTreeMap::new();
        o.insert("quit".to_string(), KeySpec::One("ctrl-".into()));
        assert!(Keymap::with_overrides(&o).is_err());
    }

    #[test]
    fn every_action_has_a_unique_name_and_a_default_key() {
        let km = Keymap::default();
        for (a, name, _) in Action::ALL {
            assert_eq!(Action::from_name(name), Some(*a));
            assert!(!km.keys_for(*a).is_empty(), "{name} has no key");
        }
    }

    #[test]
    fn key_labels_round_trip() {
        for k in ["ctrl-d", "enter", "G", "f5", "alt-x", "space", "pgdown"] {
            assert_eq!(Key::parse(k).expect(k).label(), k);
        }
    }
}
