//! The overview: quota gauges, this month's usage (`views::usage`) and, for admins, hypervisor
//! capacity.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use crate::theme::Theme;
use crate::worker::Overview;

pub fn draw(overview: Option<&Overview>, f: &mut Frame, area: Rect, theme: &Theme) {
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(theme.border())
        .title(Span::styled(" Overview ", theme.title()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(o) = overview else {
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
    y = draw_usage(f, inner, y, &o.usage, theme);
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

/// The usage lines (absent when the cloud gives none); returns the next free row.
fn draw_usage(f: &mut Frame, inner: Rect, mut y: u16, u: &crate::views::usage::UsageReport, theme: &Theme) -> u16 {
    use crate::views::usage::figure;
    let Some(project) = &u.project else { return y };
    let bottom = inner.y + inner.height;
    if y + 2 >= bottom {
        return y;
    }
    y += 1;
    let mut put = |f: &mut Frame, text: String, style: Style| {
        if y < bottom {
            f.render_widget(Paragraph::new(Span::styled(text, style)), Rect { y, height: 1, ..inner });
            y += 1;
        }
    };
    match project {
        Ok(p) => {
            put(
                f,
                format!(" Usage {} – {} (UTC)", p.start.format("%Y-%m-%d"), p.end.format("%Y-%m-%d %H:%M")),
                theme.accent(),
            );
            put(
                f,
                format!(
                    " {:<16} {} servers · {} vCPU·h · {} RAM GB·h · {} disk GB·h",
                    "this project",
                    p.count,
                    figure(p.vcpu_hours),
                    figure(p.ram_gb_hours),
                    figure(p.disk_gb_hours)
                ),
                Style::default(),
            );
            if let Some(a) = &u.all_projects {
                put(
                    f,
                    format!(
                        " {:<16} {} projects · {} vCPU·h · {} RAM GB·h · {} disk GB·h",
                        "all projects",
                        a.count,
                        figure(a.vcpu_hours),
                        figure(a.ram_gb_hours),
                        figure(a.disk_gb_hours)
                    ),
                    Style::default(),
                );
            }
        }
        Err(e) => put(f, format!(" Usage unavailable: {e}"), theme.muted()),
    }
    y
}
