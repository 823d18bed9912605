//! Themes: TOML files of named colours. The three built-ins come from the repository's
//! `themes/` folder (compiled in); users add their own as `*.toml` in the config dir's `themes/`.

use std::path::Path;
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    fg: String,
    bg: String,
    muted: String,
    accent: String,
    title: String,
    header_fg: String,
    header_bg: String,
    selected_fg: String,
    selected_bg: String,
    border: String,
    ok: String,
    warn: String,
    error: String,
    transition: String,
    gauge: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Theme {
    pub name: String,
    pub fg: Color,
    pub bg: Color,
    pub muted: Color,
    pub accent: Color,
    pub title: Color,
    pub header_fg: Color,
    pub header_bg: Color,
    pub selected_fg: Color,
    pub selected_bg: Color,
    pub border: Color,
    pub ok: Color,
    pub warn: Color,
    pub error: Color,
    pub transition: Color,
    pub gauge: Color,
}

pub const BUILTIN: &[(&str, &str)] = &[
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("high-contrast", include_str!("../../themes/high-contrast.toml")),
];

fn color(field: &str, s: &str) -> anyhow::Result<Color> {
    Color::from_str(s)
        .map_err(|_| anyhow::anyhow!("{field}: {s:?} is not a colour (a name like \"red\" or \"#rrggbb\")"))
}

impl Theme {
    pub fn parse(text: &str) -> anyhow::Result<Theme> {
        let f: ThemeFile = toml::from_str(text)?;
        Ok(Theme {
            fg: color("fg", &f.fg)?,
            bg: color("bg", &f.bg)?,
            muted: color("muted", &f.muted)?,
            accent: color("accent", &f.accent)?,
            title: color("title", &f.title)?,
            header_fg: color("header_fg", &f.header_fg)?,
            header_bg: color("header_bg", &f.header_bg)?,
            selected_fg: color("selected_fg", &f.selected_fg)?,
            selected_bg: color("selected_bg", &f.selected_bg)?,
            border: color("border", &f.border)?,
            ok: color("ok", &f.ok)?,
            warn: color("warn", &f.warn)?,
            error: color("error", &f.error)?,
            transition: color("transition", &f.transition)?,
            gauge: color("gauge", &f.gauge)?,
            name: f.name,
        })
    }

    pub fn dark() -> Theme {
        // The built-in files are checked by a test, so this cannot fail in a release.
        Theme::parse(BUILTIN[0].1).unwrap_or_else(|_| Theme::fallback())
    }

    fn fallback() -> Theme {
        Theme {
            name: "fallback".into(),
            fg: Color::Reset,
            bg: Color::Reset,
            muted: Color::DarkGray,
            accent: Color::Cyan,
            title: Color::Cyan,
            header_fg: Color::Black,
            header_bg: Color::Cyan,
            selected_fg: Color::Black,
            selected_bg: Color::Yellow,
            border: Color::Gray,
            ok: Color::Green,
            warn: Color::Yellow,
            error: Color::Red,
            transition: Color::Magenta,
            gauge: Color::Cyan,
        }
    }

    pub fn base(&self) -> Style {
        Style::default().fg(self.fg).bg(self.bg)
    }
    pub fn header(&self) -> Style {
        Style::default().fg(self.header_fg).bg(self.header_bg).add_modifier(Modifier::BOLD)
    }
    pub fn selected(&self) -> Style {
        Style::default().fg(self.selected_fg).bg(self.selected_bg)
    }
    pub fn border(&self) -> Style {
        Style::default().fg(self.border)
    }
    pub fn muted(&self) -> Style {
        Style::default().fg(self.muted)
    }
    pub fn accent(&self) -> Style {
        Style::default().fg(self.accent)
    }
    pub fn title(&self) -> Style {
        Style::default().fg(self.title).add_modifier(Modifier::BOLD)
    }
    pub fn error(&self) -> Style {
        Style::default().fg(self.error).add_modifier(Modifier::BOLD)
    }

    /// The colour of an instance or service status.
    pub fn status(&self, status: &str) -> Style {
        // Waiting for the user (confirm/revert a resize, unrescue, restore): stands out.
        if matches!(status, "VERIFY_RESIZE" | "RESCUE" | "SOFT_DELETED") {
            return Style::default().fg(self.warn).add_modifier(Modifier::BOLD | Modifier::REVERSED);
        }
        let c = match status {
            "ACTIVE" | "available" | "active" | "enabled" | "up" | "UP" => self.ok,
            "ERROR" | "error" | "down" | "DOWN" | "killed" | "deleted" => self.error,
            "SHUTOFF" | "disabled" | "PAUSED" | "SUSPENDED" | "SHELVED" | "SHELVED_OFFLOADED" => self.warn,
            "" => self.fg,
            _ => self.transition,
        };
        Style::default().fg(c)
    }
}

/// The built-in themes plus the user's (a user theme with a built-in's name replaces it).
pub fn load_all(user_dir: &Path) -> (Vec<Theme>, Vec<String>) {
    let mut themes: Vec<Theme> = BUILTIN.iter().filter_map(|(_, t)| Theme::parse(t).ok()).collect();
    let mut problems = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(user_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for path in files {
        match std::fs::read_to_string(&path).map_err(anyhow::Error::from).and_then(|t| Theme::parse(&t)) {
            Ok(t) => {
                themes.retain(|x| x.name != t.name);
                themes.push(t);
            }
            Err(e) => problems.push(format!("theme {}: {e}", path.display())),
        }
    }
    (themes, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_use_only_the_16_ansi_colours() {
        for (name, text) in BUILTIN {
            let t = Theme::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&t.name, name);
            for c in [t.fg, t.bg, t.muted, t.accent, t.header_bg, t.selected_bg, t.ok, t.error, t.transition] {
                assert!(!matches!(c, Color::Rgb(..) | Color::Indexed(_)), "{name}: {c:?} needs more than 16 colours");
            }
        }
    }

    #[test]
    fn user_themes_add_or_replace_and_bad_ones_are_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let mine = BUILTIN[0].1.replace("name = \"dark\"", "name = \"mine\"").replace("\"cyan\"", "\"#112233\"");
        std::fs::write(dir.path().join("mine.toml"), &mine).expect("write");
        std::fs::write(dir.path().join("broken.toml"), "name = \"x\"\nfg = \"no-such-colour\"").expect("write");
        let (themes, problems) = load_all(dir.path());
        let names: Vec<_> = themes.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["dark", "light", "high-contrast", "mine"]);
        assert_eq!(themes[3].accent, Color::Rgb(0x11, 0x22, 0x33));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("broken.toml"), "{problems:?}");
    }
}
