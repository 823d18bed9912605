//! The launch wizard: name and count → image (searchable) → flavor (misfits marked and
//! explained) → networks → security groups → key pair (pick or import) → user data → review →
//! submit.

use std::collections::BTreeSet;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph, Wrap};
use tui_textarea::TextArea;

use crate::component::{Component, Outcome, centered, dialog, field, focused, text_of};
use crate::model::{Flavor, Image, Keypair, Network, Quotas};
use crate::theme::Theme;
use crate::worker::LaunchSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Details,
    Image,
    Flavor,
    Networks,
    Security,
    Keypair,
    UserData,
    Review,
}

const STEPS: [(Step, &str); 8] = [
    (Step::Details, "Name"),
    (Step::Image, "Image"),
    (Step::Flavor, "Flavor"),
    (Step::Networks, "Networks"),
    (Step::Security, "Security"),
    (Step::Keypair, "Key pair"),
    (Step::UserData, "User data"),
    (Step::Review, "Review"),
];

pub struct Wizard {
    pub step: Step,
    name: TextArea<'static>,
    count: TextArea<'static>,
    /// GB of a new volume to boot from (empty: the flavor's local disk).
    volume: TextArea<'static>,
    details_focus: usize,
    search: TextArea<'static>,
    image_sel: usize,
    flavor_sel: usize,
    net_sel: usize,
    nets: BTreeSet<String>,
    group_sel: usize,
    /// Security group names chosen (none: the cloud's `default`).
    groups_on: BTreeSet<String>,
    /// 0 = none, 1..=n a key pair, n+1 = import from a file.
    key_sel: usize,
    key_path: TextArea<'static>,
    key_name: TextArea<'static>,
    key_focus: usize,
    user_data: TextArea<'static>,
    /// A problem with the current step, or the cloud's answer to the submit, in words.
    pub error: Option<String>,
    pub busy: bool,
    import: Option<(String, String)>,
    pub images: Vec<Image>,
    pub flavors: Vec<Flavor>,
    pub networks: Vec<Network>,
    pub keypairs: Vec<Keypair>,
    pub groups: Vec<crate::views::secgroups::SecGroup>,
    /// Nova server groups to place the instances in (the Security step's ←→ choice).
    pub server_groups: Vec<crate::views::server_groups::ServerGroup>,
    /// 0 = none, i = `server_groups[i - 1]`.
    srv_group_sel: usize,
    pub quotas: Option<Quotas>,
}

impl Default for Wizard {
    fn default() -> Self {
        Wizard::new()
    }
}

/// Why a flavor cannot take this image or these many instances (empty: it fits).
pub fn flavor_problems(f: &Flavor, image: Option<&Image>, quotas: Option<&Quotas>, count: u32) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(img) = image {
        if img.min_ram > f.ram {
            p.push(format!("RAM {} MB < image minimum {} MB", f.ram, img.min_ram));
        }
        if f.disk > 0 && img.min_disk > f.disk {
            p.push(format!("disk {} GB < image minimum {} GB", f.disk, img.min_disk));
        }
    }
    if let Some(q) = quotas {
        let n = count as i64;
        if let Some(left) = q.remaining("vCPUs")
            && f.vcpus as i64 * n > left
        {
            p.push(format!("needs {} vCPUs, quota leaves {left}", f.vcpus as i64 * n));
        }
        if let Some(left) = q.remaining("RAM (MB)")
            && f.ram as i64 * n > left
        {
            p.push(format!("needs {} MB RAM, quota leaves {left}", f.ram as i64 * n));
        }
    }
    p
}

impl Wizard {
    pub fn new() -> Wizard {
        let mut user_data = TextArea::default();
        user_data.set_placeholder_text("#cloud-config (optional; Ctrl-n: next step)");
        Wizard {
            step: Step::Details,
            name: field("", "instance name"),
            count: field("1", "1"),
            volume: field("", "GB: boot from a new volume (empty: local disk)"),
            details_focus: 0,
            search: field("", "type to search images"),
            image_sel: 0,
            flavor_sel: 0,
            net_sel: 0,
            nets: BTreeSet::new(),
            group_sel: 0,
            groups_on: BTreeSet::new(),
            key_sel: 0,
            key_path: field("", "~/.ssh/id_ed25519.pub"),
            key_name: field("", "key pair name"),
            key_focus: 0,
            user_data,
            error: None,
            busy: false,
            import: None,
            images: Vec::new(),
            flavors: Vec::new(),
            networks: Vec::new(),
            keypairs: Vec::new(),
            groups: Vec::new(),
            server_groups: Vec::new(),
            srv_group_sel: 0,
            quotas: None,
        }
    }

    /// A key import the user asked for (name, public key text), taken once.
    pub fn take_import(&mut self) -> Option<(String, String)> {
        self.import.take()
    }

    /// After an import succeeded: select the new key pair.
    pub fn select_keypair(&mut self, name: &str) {
        if let Some(i) = self.keypairs.iter().position(|k| k.name == name) {
            self.key_sel = i + 1;
        }
    }

    /// The boot volume's size: `None` when left empty.
    fn volume_value(&self) -> Result<Option<u64>, String> {
        let t = text_of(&self.volume);
        if t.is_empty() {
            return Ok(None);
        }
        match t.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!("boot volume {t}: whole GB, 1 or more (empty: local disk)")),
        }
    }

    fn count_value(&self) -> Result<u32, String> {
        let t = text_of(&self.count);
        match t.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err(format!("count must be a whole number from 1 to 100, not {t:?}")),
        }
    }

    fn visible_images(&self) -> Vec<&Image> {
        let q = text_of(&self.search).to_lowercase();
        self.images
            .iter()
            .filter(|i| i.status.is_empty() || i.status == "active")
            .filter(|i| q.is_empty() || i.name.to_lowercase().contains(&q) || i.id.starts_with(&q))
            .collect()
    }

    pub fn image(&self) -> Option<&Image> {
        self.visible_images().get(self.image_sel).copied()
    }

    fn flavor(&self) -> Option<&Flavor> {
        self.flavors.get(self.flavor_sel)
    }

    fn server_group(&self) -> Option<&crate::views::server_groups::ServerGroup> {
        self.srv_group_sel.checked_sub(1).and_then(|i| self.server_groups.get(i))
    }

    /// `anti-affinity web` or `(none)`.
    fn server_group_words(&self) -> String {
        self.server_group().map_or_else(|| "(none)".into(), |g| format!("{} ({})", g.name, g.policy()))
    }

    fn keypair(&self) -> Option<&Keypair> {
        self.key_sel.checked_sub(1).and_then(|i| self.keypairs.get(i))
    }

    /// Checks the current step; the message says what to fix.
    fn validate(&self, step: Step) -> Result<(), String> {
        match step {
            Step::Details => {
                let name = text_of(&self.name);
                if name.is_empty() {
                    return Err("the instance needs a name".into());
                }
                if name.len() > 255 {
                    return Err("the name is longer than 255 characters".into());
                }
                let n = self.count_value()?;
                self.volume_value()?;
                if let Some(left) = self.quotas.as_ref().and_then(|q| q.remaining("Instances"))
                    && n as i64 > left
                {
                    return Err(format!("the instance quota leaves room for {left}, not {n}"));
                }
                Ok(())
            }
            Step::Image => self.image().map(|_| ()).ok_or_else(|| "choose an image".into()),
            Step::Flavor => {
                let f = self.flavor().ok_or("choose a flavor")?;
                let problems = flavor_problems(f, self.image(), self.quotas.as_ref(), self.count_value()?);
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} does not fit: {}", f.name, problems.join("; ")))
                }
            }
            Step::Networks => {
                if self.nets.is_empty() && self.networks.len() > 1 {
                    Err("choose at least one network (space toggles)".into())
                } else {
                    Ok(())
                }
            }
            Step::Keypair if self.key_sel == self.keypairs.len() + 1 => {
                Err("import the key first (Enter in the form), or choose one".into())
            }
            _ => Ok(()),
        }
    }

    /// The request to send, when every step is valid.
    pub fn spec(&self) -> Result<LaunchSpec, String> {
        for (s, _) in STEPS {
            self.validate(s)?;
        }
        let mut network_ids: Vec<String> = self.nets.iter().cloned().collect();
        if network_ids.is_empty() && self.networks.len() == 1 {
            network_ids.push(self.networks[0].id.clone());
        }
        let ud = self.user_data.lines().join("\n");
        Ok(LaunchSpec {
            name: text_of(&self.name),
            count: self.count_value()?,
            image_id: self.image().map(|i| i.id.clone()).unwrap_or_default(),
            flavor_id: self.flavor().map(|f| f.id.clone()).unwrap_or_default(),
            network_ids,
            key_name: self.keypair().map(|k| k.name.clone()),
            security_groups: self.groups_on.iter().cloned().collect(),
            boot_volume_gb: self.volume_value()?,
            server_group: self.server_group().map(|g| g.id.clone()),
            user_data: if ud.trim().is_empty() { None } else { Some(ud) },
        })
    }

    fn go(&mut self, forward: bool) -> Outcome {
        let i = STEPS.iter().position(|(s, _)| *s == self.step).unwrap_or(0);
        if forward {
            if let Err(e) = self.validate(self.step) {
                self.error = Some(e);
                return Outcome::Consumed;
            }
            if self.step == Step::Review {
                return match self.spec() {
                    Ok(_) => Outcome::Submit,
                    Err(e) => {
                        self.error = Some(e);
                        Outcome::Consumed
                    }
                };
            }
            self.step = STEPS[i + 1].0;
            if self.step == Step::Flavor {
                // Start on the first flavor that fits.
                let count = self.count_value().unwrap_or(1);
                if let Some(fit) = self
                    .flavors
                    .iter()
                    .position(|f| flavor_problems(f, self.image(), self.quotas.as_ref(), count).is_empty())
                    && self
                        .flavor()
                        .is_none_or(|f| !flavor_problems(f, self.image(), self.quotas.as_ref(), count).is_empty())
                {
                    self.flavor_sel = fit;
                }
            }
        } else if i == 0 {
            return Outcome::Cancel;
        } else {
            self.step = STEPS[i - 1].0;
        }
        self.error = None;
        Outcome::Consumed
    }

    fn move_sel(sel: &mut usize, len: usize, code: KeyCode) -> bool {
        match code {
            KeyCode::Up => *sel = sel.saturating_sub(1),
            KeyCode::Down => *sel = (*sel + 1).min(len.saturating_sub(1)),
            KeyCode::PageUp => *sel = sel.saturating_sub(10),
            KeyCode::PageDown => *sel = (*sel + 10).min(len.saturating_sub(1)),
            _ => return false,
        }
        true
    }
}

impl Component for Wizard {
    fn handle_key(&mut self, key: KeyEvent) -> Outcome {
        if self.busy {
            return Outcome::Consumed;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        // Esc always goes back a step; Tab/Shift-Tab move between steps where Tab means nothing else.
        match key.code {
            KeyCode::Esc => return self.go(false),
            KeyCode::Char('n') if ctrl => return self.go(true),
            KeyCode::Char('p') if ctrl => return self.go(false),
            KeyCode::BackTab if self.step != Step::Details => return self.go(false),
            _ => {}
        }
        match self.step {
            Step::Details => match key.code {
                KeyCode::Tab | KeyCode::Down => self.details_focus = (self.details_focus + 1) % 3,
                KeyCode::Up | KeyCode::BackTab => self.details_focus = (self.details_focus + 2) % 3,
                KeyCode::Enter if self.details_focus == 0 && text_of(&self.name).is_empty() => {
                    self.error = Some("the instance needs a name".into());
                }
                KeyCode::Enter => return self.go(true),
                _ => {
                    let f = match self.details_focus {
                        0 => &mut self.name,
                        1 => &mut self.count,
                        _ => &mut self.volume,
                    };
                    f.input(key);
                    self.error = None;
                }
            },
            Step::Image => match key.code {
                KeyCode::Enter | KeyCode::Tab => return self.go(true),
                c if {
                    let n = self.visible_images().len();
                    Self::move_sel(&mut self.image_sel, n, c)
                } => {}
                _ => {
                    self.search.input(key);
                    self.image_sel = 0;
                    self.error = None;
                }
            },
            Step::Flavor => match key.code {
                KeyCode::Enter | KeyCode::Tab => return self.go(true),
                c => {
                    Self::move_sel(&mut self.flavor_sel, self.flavors.len(), c);
                    self.error = None;
                }
            },
            Step::Networks => match key.code {
                KeyCode::Enter | KeyCode::Tab => return self.go(true),
                KeyCode::Char(' ') => {
                    if let Some(n) = self.networks.get(self.net_sel) {
                        if !self.nets.remove(&n.id) {
                            self.nets.insert(n.id.clone());
                        }
                        self.error = None;
                    }
                }
                c => {
                    Self::move_sel(&mut self.net_sel, self.networks.len(), c);
                }
            },
            Step::Security => match key.code {
                KeyCode::Enter | KeyCode::Tab => return self.go(true),
                KeyCode::Left | KeyCode::Right if !self.server_groups.is_empty() => {
                    let n = self.server_groups.len() + 1;
                    let step = if key.code == KeyCode::Right { 1 } else { n - 1 };
                    self.srv_group_sel = (self.srv_group_sel + step) % n;
                }
                KeyCode::Char(' ') => {
                    if let Some(g) = self.groups.get(self.group_sel)
                        && !self.groups_on.remove(&g.name)
                    {
                        self.groups_on.insert(g.name.clone());
                    }
                }
                c => {
                    Self::move_sel(&mut self.group_sel, self.groups.len(), c);
                }
            },
            Step::Keypair => {
                let importing = self.key_sel == self.keypairs.len() + 1;
                match key.code {
                    KeyCode::Up | KeyCode::Down | KeyCode::PageUp | KeyCode::PageDown
                        if !importing || key.code == KeyCode::Up && self.key_focus == 0 =>
                    {
                        Self::move_sel(&mut self.key_sel, self.keypairs.len() + 2, key.code);
                        self.error = None;
                    }
                    KeyCode::Tab | KeyCode::Down | KeyCode::Up if importing => self.key_focus ^= 1,
                    KeyCode::Enter if importing => {
                        let path = text_of(&self.key_path);
                        let name = text_of(&self.key_name);
                        let expanded = match path.strip_prefix("~/") {
                            Some(rest) => std::env::var("HOME").map(|h| format!("{h}/{rest}")).unwrap_or(path.clone()),
                            None => path.clone(),
                        };
                        match std::fs::read_to_string(&expanded) {
                            _ if name.is_empty() => self.error = Some("give the key pair a name".into()),
                            Ok(k) if k.starts_with("ssh-") || k.starts_with("ecdsa-") => {
                                self.import = Some((name, k.trim().to_string()));
                                self.busy = true;
                            }
                            Ok(_) => self.error = Some(format!("{path} is not an OpenSSH public key")),
                            Err(e) => self.error = Some(format!("cannot read {path}: {e}")),
                        }
                    }
                    KeyCode::Enter | KeyCode::Tab => return self.go(true),
                    _ if importing => {
                        let f = if self.key_focus == 0 { &mut self.key_path } else { &mut self.key_name };
                        f.input(key);
                        self.error = None;
                    }
                    _ => {}
                }
            }
            Step::UserData => match key.code {
                KeyCode::Tab => return self.go(true),
                _ => {
                    self.user_data.input(key);
                }
            },
            Step::Review => {
                if key.code == KeyCode::Enter {
                    return self.go(true);
                }
            }
        }
        Outcome::Consumed
    }

    fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let r = centered(area, 100, 30);
        f.render_widget(ratatui::widgets::Clear, r);
        let block = dialog("Launch instances", theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let [steps, body, msg, help] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(2), Constraint::Length(1)])
                .areas(inner);
        let mut spans = Vec::new();
        for (i, (s, label)) in STEPS.iter().enumerate() {
            if i > 0 {
                spans.push(Span::styled("›", theme.muted()));
            }
            let style = if *s == self.step {
                theme.selected().add_modifier(Modifier::BOLD)
            } else if *s < self.step {
                theme.accent()
            } else {
                theme.muted()
            };
            spans.push(Span::styled(label.to_string(), style));
        }
        f.render_widget(Paragraph::new(Line::from(spans)), steps);
        let count = self.count_value().unwrap_or(1);
        match self.step {
            Step::Details => {
                let [a, b, vol, c] = Layout::vertical([
                    Constraint::Length(2),
                    Constraint::Length(2),
                    Constraint::Length(2),
                    Constraint::Min(0),
                ])
                .areas(body);
                for (i, (label, area)) in [("Name", a), ("Count", b), ("Volume", vol)].into_iter().enumerate() {
                    let [l, v] = Layout::horizontal([Constraint::Length(8), Constraint::Min(1)]).areas(area);
                    let st = if i == self.details_focus { theme.accent() } else { theme.muted() };
                    f.render_widget(Paragraph::new(Span::styled(format!("{label:>6}: "), st)), l);
                    let t = match i {
                        0 => &self.name,
                        1 => &self.count,
                        _ => &self.volume,
                    };
                    f.render_widget(&focused(t, i == self.details_focus, theme), Rect { height: 1, ..v });
                }
                if let Some(q) = &self.quotas {
                    let lines: Vec<Line> = q
                        .items
                        .iter()
                        .take(3)
                        .map(|(l, u, m)| {
                            let m = if *m < 0 { "∞".to_string() } else { m.to_string() };
                            Line::from(Span::styled(format!("{l}: {u} of {m} used"), theme.muted()))
                        })
                        .collect();
                    f.render_widget(Paragraph::new(lines), c);
                }
            }
            Step::Image => {
                let [s, l] = Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(body);
                let [lab, v] = Layout::horizontal([Constraint::Length(8), Constraint::Min(1)]).areas(s);
                f.render_widget(Paragraph::new(Span::styled("Search: ", theme.accent())), lab);
                f.render_widget(&focused(&self.search, true, theme), Rect { height: 1, ..v });
                let items: Vec<ListItem> = self
                    .visible_images()
                    .iter()
                    .map(|i| {
                        let mins = match (i.min_ram, i.min_disk) {
                            (0, 0) => String::new(),
                            (r, d) => format!(" min {r} MB RAM, {d} GB disk"),
                        };
                        ListItem::new(Line::from(vec![
                            Span::raw(format!("{:<28} ", i.name)),
                            Span::styled(
                                format!("{} {}", i.disk_format.clone().unwrap_or_default(), i.visibility),
                                theme.muted(),
                            ),
                            Span::styled(mins, theme.muted()),
                        ]))
                    })
                    .collect();
                let empty = items.is_empty();
                let mut st = ListState::default().with_selected((!empty).then_some(self.image_sel));
                f.render_stateful_widget(
                    List::new(items).highlight_style(theme.selected()).highlight_symbol("› "),
                    l,
                    &mut st,
                );
                if empty {
                    f.render_widget(Paragraph::new(Span::styled("no image matches", theme.muted())), l);
                }
            }
            Step::Flavor => {
                let image = self.image().cloned();
                let items: Vec<ListItem> = self
                    .flavors
                    .iter()
                    .map(|fl| {
                        let problems = flavor_problems(fl, image.as_ref(), self.quotas.as_ref(), count);
                        let (mark, st) = if problems.is_empty() {
                            ("  ", Style::default())
                        } else {
                            ("✗ ", theme.muted().add_modifier(Modifier::CROSSED_OUT))
                        };
                        let mut spans = vec![
                            Span::styled(mark, theme.error()),
                            Span::styled(
                                format!("{:<14} {:>2} vCPU {:>6} MB {:>4} GB", fl.name, fl.vcpus, fl.ram, fl.disk),
                                st,
                            ),
                        ];
                        if !problems.is_empty() {
                            spans.push(Span::styled(format!("  {}", problems.join("; ")), theme.error()));
                        }
                        ListItem::new(Line::from(spans))
                    })
                    .collect();
                let mut st = ListState::default().with_selected(Some(self.flavor_sel));
                f.render_stateful_widget(List::new(items).highlight_style(theme.selected()), body, &mut st);
            }
            Step::Networks => {
                let items: Vec<ListItem> = self
                    .networks
                    .iter()
                    .map(|n| {
                        let on = self.nets.contains(&n.id) || (self.networks.len() == 1 && self.nets.is_empty());
                        ListItem::new(Line::from(vec![
                            Span::styled(if on { "[x] " } else { "[ ] " }, theme.accent()),
                            Span::raw(format!("{:<24} ", n.name)),
                            Span::styled(n.subnet_cidrs.join(", "), theme.muted()),
                        ]))
                    })
                    .collect();
                let mut st = ListState::default().with_selected(Some(self.net_sel));
                f.render_stateful_widget(List::new(items).highlight_style(theme.selected()), body, &mut st);
            }
            Step::Security => {
                // The server group choice sits under the security groups, when the cloud has any.
                let (body, sg) = if self.server_groups.is_empty() {
                    (body, None)
                } else {
                    let [b, sg] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(body);
                    (b, Some(sg))
                };
                if let Some(sg) = sg {
                    let line = Line::from(vec![
                        Span::styled("Server group ←→: ", theme.accent()),
                        Span::raw(self.server_group_words()),
                    ]);
                    f.render_widget(Paragraph::new(line), sg);
                }
                let items: Vec<ListItem> = self
                    .groups
                    .iter()
                    .map(|g| {
                        // Nothing chosen: Nova gives the instance the project's `default`.
                        let on = self.groups_on.contains(&g.name) || (self.groups_on.is_empty() && g.name == "default");
                        ListItem::new(Line::from(vec![
                            Span::styled(if on { "[x] " } else { "[ ] " }, theme.accent()),
                            Span::raw(format!("{:<24} ", g.name)),
                            Span::styled(
                                format!(
                                    "{} rules  {}",
                                    g.security_group_rules.len(),
                                    g.description.clone().unwrap_or_default()
                                ),
                                theme.muted(),
                            ),
                        ]))
                    })
                    .collect();
                if items.is_empty() {
                    let none = "no security groups listed: the cloud's default applies";
                    f.render_widget(Paragraph::new(Span::styled(none, theme.muted())), body);
                } else {
                    let mut st = ListState::default().with_selected(Some(self.group_sel));
                    f.render_stateful_widget(List::new(items).highlight_style(theme.selected()), body, &mut st);
                }
            }
            Step::Keypair => {
                let importing = self.key_sel == self.keypairs.len() + 1;
                let [l, form] =
                    Layout::vertical([Constraint::Min(2), Constraint::Length(if importing { 4 } else { 0 })])
                        .areas(body);
                let mut items = vec![ListItem::new(Span::styled("(no key pair)", theme.muted()))];
                items.extend(self.keypairs.iter().map(|k| {
                    ListItem::new(Line::from(vec![
                        Span::raw(format!("{:<24} ", k.name)),
                        Span::styled(k.fingerprint.clone(), theme.muted()),
                    ]))
                }));
                items.push(ListItem::new(Span::styled("import a public key file…", theme.accent())));
                let mut st = ListState::default().with_selected(Some(self.key_sel));
                f.render_stateful_widget(List::new(items).highlight_style(theme.selected()), l, &mut st);
                if importing {
                    let rows = Layout::vertical([Constraint::Length(2), Constraint::Length(2)]).split(form);
                    for (i, label) in ["File", "Name"].iter().enumerate() {
                        let [lab, v] = Layout::horizontal([Constraint::Length(8), Constraint::Min(1)]).areas(rows[i]);
                        let stl = if i == self.key_focus { theme.accent() } else { theme.muted() };
                        f.render_widget(Paragraph::new(Span::styled(format!("{label:>6}: "), stl)), lab);
                        let t = if i == 0 { &self.key_path } else { &self.key_name };
                        f.render_widget(&focused(t, i == self.key_focus, theme), Rect { height: 1, ..v });
                    }
                }
            }
            Step::UserData => {
                let mut user_data = focused(&self.user_data, true, theme);
                user_data.set_block(
                    ratatui::widgets::Block::default()
                        .borders(ratatui::widgets::Borders::ALL)
                        .border_style(theme.border())
                        .title(" user data "),
                );
                f.render_widget(&user_data, body);
            }
            Step::Review => {
                let spec = self.spec();
                let mut lines = Vec::new();
                let kv = |k: &str, v: String| {
                    Line::from(vec![Span::styled(format!("{k:>10}: "), theme.muted()), Span::raw(v)])
                };
                lines.push(kv("Name", text_of(&self.name)));
                lines.push(kv("Count", count.to_string()));
                lines.push(kv("Image", self.image().map(|i| i.name.clone()).unwrap_or_default()));
                lines.push(kv(
                    "Flavor",
                    self.flavor()
                        .map(|f| format!("{} ({} vCPU, {} MB, {} GB)", f.name, f.vcpus, f.ram, f.disk))
                        .unwrap_or_default(),
                ));
                let nets: Vec<String> = match &spec {
                    Ok(s) => s
                        .network_ids
                        .iter()
                        .map(|id| {
                            self.networks.iter().find(|n| &n.id == id).map(|n| n.name.clone()).unwrap_or(id.clone())
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                lines.push(kv("Networks", if nets.is_empty() { "(automatic)".into() } else { nets.join(", ") }));
                let disk = match self.volume_value() {
                    Ok(Some(gb)) => format!("a new {gb} GB volume from the image (deleted with the instance)"),
                    _ => "the flavor's local disk".into(),
                };
                lines.push(kv("Boots on", disk));
                let groups: Vec<String> = self.groups_on.iter().cloned().collect();
                lines.push(kv("Security", if groups.is_empty() { "default".into() } else { groups.join(", ") }));
                if self.server_group().is_some() {
                    lines.push(kv("Srv group", self.server_group_words()));
                }
                lines.push(kv("Key pair", self.keypair().map(|k| k.name.clone()).unwrap_or_else(|| "(none)".into())));
                let ud = self.user_data.lines().iter().filter(|l| !l.is_empty()).count();
                lines.push(kv("User data", if ud == 0 { "(none)".into() } else { format!("{ud} lines") }));
                lines.push(Line::default());
                lines.push(Line::from(Span::styled(
                    if self.busy { "launching…" } else { "Enter: launch" },
                    theme.accent(),
                )));
                f.render_widget(Paragraph::new(lines), body);
            }
        }
        if let Some(e) = &self.error {
            f.render_widget(Paragraph::new(Span::styled(e.clone(), theme.error())).wrap(Wrap { trim: true }), msg);
        } else if self.step == Step::Flavor
            && let Some(fl) = self.flavor()
        {
            // The whole explanation for the highlighted flavor (a row shows only what fits).
            let problems = flavor_problems(fl, self.image(), self.quotas.as_ref(), count);
            if !problems.is_empty() {
                let text = format!("{} does not fit: {}", fl.name, problems.join("; "));
                f.render_widget(Paragraph::new(Span::styled(text, theme.muted())).wrap(Wrap { trim: true }), msg);
            }
        }
        let hint = match self.step {
            Step::Details => "Tab: field · Enter: next · Esc: cancel",
            Step::Image => "type to search · ↑↓ choose · Enter: next · Esc: back",
            Step::Flavor => "↑↓ choose (✗ does not fit) · Enter: next · Esc: back",
            Step::Networks => "↑↓ move · space: toggle · Enter: next · Esc: back",
            Step::Security => "↑↓ move · space: toggle (none: default) · Enter: next · Esc: back",
            Step::Keypair => "↑↓ choose · Enter: next (or import) · Esc: back",
            Step::UserData => "type freely · Tab or Ctrl-n: next · Esc: back",
            Step::Review => "Enter: launch · Esc: back",
        };
        f.render_widget(Paragraph::new(Span::styled(hint, theme.muted())), help);
    }
}
