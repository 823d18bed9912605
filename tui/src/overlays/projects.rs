//! The project and cloud switcher: the user's projects, then the other clouds of clouds.yaml.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, List, ListItem, ListState};

use super::{Ctx, Effect};
use crate::component::{centered, dialog};
use crate::model::Project;
use crate::theme::Theme;

pub struct Projects {
    pub projects: Vec<Project>,
    pub sel: usize,
}

impl Projects {
    pub fn handle_key(&mut self, key: KeyEvent, ctx: &Ctx) -> Effect {
        let n = self.projects.len() + ctx.clouds.len();
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => self.sel = self.sel.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.sel = (self.sel + 1).min(n.saturating_sub(1)),
            KeyCode::Esc => return Effect::Close,
            KeyCode::Enter => {
                if let Some(p) = self.projects.get(self.sel) {
                    return Effect::SwitchProject { id: p.id.clone(), name: p.name.clone() };
                }
                if let Some(c) = ctx.clouds.get(self.sel - self.projects.len()) {
                    return Effect::SwitchCloud(c.clone());
                }
            }
            _ => {}
        }
        Effect::None
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme, ctx: &Ctx) {
        let h = (self.projects.len() + ctx.clouds.len() + 2) as u16;
        let r = centered(area, 60, h.max(4));
        f.render_widget(Clear, r);
        let mut items: Vec<ListItem> = self
            .projects
            .iter()
            .map(|p| {
                let mark = if p.id == ctx.project_id { "● " } else { "  " };
                ListItem::new(Line::from(vec![Span::styled(mark, theme.accent()), Span::raw(p.name.clone())]))
            })
            .collect();
        items.extend(
            ctx.clouds.iter().map(|c| ListItem::new(Span::styled(format!("  cloud: {}", c.name), theme.muted()))),
        );
        let mut st = ListState::default().with_selected(Some(self.sel));
        f.render_stateful_widget(
            List::new(items).block(dialog("Switch project or cloud", theme)).highlight_style(theme.selected()),
            r,
            &mut st,
        );
    }
}
