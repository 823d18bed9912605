//! The transfers overlay: every image upload and download of this session with a progress bar,
//! its speed and how it ended. A running one can be cancelled here; closing the overlay leaves
//! them running (the status line keeps showing the first).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Gauge, Paragraph};

use super::{Ctx, Effect};
use crate::component::{centered, dialog};
use crate::theme::Theme;
use crate::transfer::{Phase, Progress, Way, bytes};

#[derive(Default)]
pub struct Transfers {
    selected: usize,
}

impl Transfers {
    /// Opens with the newest transfer selected.
    pub fn newest(ctx_len: usize) -> Transfers {
        Transfers { selected: ctx_len.saturating_sub(1) }
    }

    pub fn handle_key(&mut self, key: KeyEvent, ctx: &Ctx) -> Effect {
        let n = ctx.transfers.len();
        match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char('t') => Effect::Close,
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.saturating_sub(1);
                Effect::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(n.saturating_sub(1));
                Effect::None
            }
            KeyCode::Char('c') => self.cancel(ctx),
            // ctrl-d, as delete is elsewhere.
            KeyCode::Char('d') if key.modifiers.contains(KeyModifiers::CONTROL) => self.cancel(ctx),
            _ => Effect::None,
        }
    }

    fn cancel(&self, ctx: &Ctx) -> Effect {
        match ctx.transfers.get(self.selected.min(ctx.transfers.len().saturating_sub(1))) {
            Some(t) if !t.phase.finished() => Effect::CancelTransfer(t.id),
            _ => Effect::None,
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme, ctx: &Ctx) {
        let rows = ctx.transfers.len().max(1) as u16;
        let r = centered(area, 84, rows * 3 + 4);
        f.render_widget(Clear, r);
        let block = dialog("Transfers", theme);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let mut cons = vec![Constraint::Length(1)];
        cons.extend(std::iter::repeat_n(Constraint::Length(3), rows as usize));
        let areas = Layout::vertical(cons).split(inner);
        let help = "c: cancel the selected · ↑↓: select · Esc: close (transfers go on)";
        f.render_widget(Paragraph::new(Span::styled(help, theme.muted())), areas[0]);
        if ctx.transfers.is_empty() {
            f.render_widget(Paragraph::new(Span::styled("no uploads or downloads yet", theme.muted())), areas[1]);
            return;
        }
        let sel = self.selected.min(ctx.transfers.len() - 1);
        for (i, t) in ctx.transfers.iter().enumerate() {
            let [head, bar, _] =
                Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Length(1)])
                    .areas(areas[i + 1]);
            let mark = if i == sel { "▶ " } else { "  " };
            let title = Line::from(vec![
                Span::styled(mark, theme.accent()),
                Span::styled(headline(t), if i == sel { theme.title() } else { theme.base() }),
            ]);
            f.render_widget(Paragraph::new(title), head);
            let (style, label) = match &t.phase {
                Phase::Failed(m) => (theme.error(), format!("failed: {m}")),
                Phase::Cancelled => (theme.muted(), cancelled_words(t).to_string()),
                _ => (theme.accent(), figures(t)),
            };
            let gauge = Gauge::default()
                .gauge_style(style)
                .ratio(t.ratio().unwrap_or(0.0))
                .label(Span::styled(label, theme.base()));
            f.render_widget(gauge, Rect { x: bar.x + 2, width: bar.width.saturating_sub(2), ..bar });
        }
    }
}

/// `↑ cirros → image 3f2a…  (from ~/cirros.qcow2)`
fn headline(t: &Progress) -> String {
    let file = t.file.display();
    match t.way {
        Way::Upload => format!("↑ {}  from {file}", t.name),
        Way::Download => format!("↓ {}  to {file}", t.name),
    }
}

/// `45% · 12.0 MiB of 26.7 MiB · 3.1 MiB/s · verifying`
pub fn figures(t: &Progress) -> String {
    let pct = t.ratio().map(|r| format!("{:.0}% · ", r * 100.0)).unwrap_or_default();
    let of = t.total.map(|n| format!(" of {}", bytes(n as f64))).unwrap_or_default();
    let state = match &t.phase {
        Phase::Starting => " · starting",
        Phase::Moving => "",
        Phase::Verifying => " · verifying",
        Phase::Done => " · done",
        Phase::Failed(_) => " · failed",
        Phase::Cancelled => " · cancelled",
    };
    format!("{pct}{}{of} · {}/s{state}", bytes(t.done as f64), bytes(t.rate()))
}

pub fn cancelled_words(t: &Progress) -> &'static str {
    match t.way {
        Way::Upload => "cancelled: the image was deleted",
        Way::Download => "cancelled: nothing was saved",
    }
}
