//! `?`: every action with its keys, read from the keymap (so overrides show).

use std::cell::Cell;

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::{Ctx, Effect};
use crate::component::{centered, dialog};
use crate::keymap::Action;
use crate::theme::Theme;

#[derive(Default)]
pub struct Help {
    scroll: u16,
    /// The furthest the last frame could scroll (drawing remembers it; keys clamp to it).
    max: Cell<u16>,
}

impl Help {
    pub fn handle_key(&mut self, key: KeyEvent, ctx: &Ctx) -> Effect {
        let max = self.max.get();
        match ctx.keymap.action(&key) {
            Some(Action::Down) => self.scroll = self.scroll.saturating_add(1).min(max),
            Some(Action::Up) => self.scroll = self.scroll.saturating_sub(1),
            Some(Action::PageDown) => self.scroll = self.scroll.saturating_add(10).min(max),
            Some(Action::PageUp) => self.scroll = self.scroll.saturating_sub(10),
            Some(Action::Quit) => return Effect::Quit,
            _ => return Effect::Close,
        }
        Effect::None
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme, ctx: &Ctx) {
        let r = centered(area, 72, area.height.saturating_sub(2));
        f.render_widget(Clear, r);
        let lines: Vec<Line> = Action::ALL
            .iter()
            .map(|(a, _, text)| {
                Line::from(vec![
                    Span::styled(format!("{:<18}", ctx.keymap.keys_for(*a).join(" ")), theme.accent()),
                    Span::raw(*text),
                ])
            })
            .collect();
        let max = (lines.len() as u16).saturating_sub(r.height.saturating_sub(2));
        self.max.set(max);
        f.render_widget(
            Paragraph::new(lines)
                .block(dialog("Help — keys (config.toml [keys])", theme))
                .scroll((self.scroll.min(max), 0)),
            r,
        );
    }
}
