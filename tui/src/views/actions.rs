//! An instance's action history (Nova's `os-instance-actions` and each action's events), the
//! Actions tab of the instance detail. Works on any cloud: it is Nova's own API.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use serde::Deserialize;

use crate::model::parse_time;
use crate::theme::Theme;
use crate::views::events::event_words;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct InstanceAction {
    pub action: String,
    pub request_id: String,
    pub user_id: Option<String>,
    pub start_time: Option<String>,
    pub message: Option<String>,
    /// From `GET …/os-instance-actions/{request_id}` (empty when it could not be read).
    pub events: Vec<ActionEvent>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ActionEvent {
    pub event: String,
    pub start_time: Option<String>,
    pub finish_time: Option<String>,
    pub result: Option<String>,
    pub host: Option<String>,
}

/// `2026-11-22T02:00:00.000000` → `02:00:00` (Nova's times carry no zone; they are UTC).
fn clock(t: &Option<String>) -> String {
    t.as_deref().and_then(parse_time).map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_default()
}

fn date_clock(t: &Option<String>) -> String {
    t.as_deref().and_then(parse_time).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

/// How long an event took, in words.
fn took(e: &ActionEvent) -> String {
    match (e.start_time.as_deref().and_then(parse_time), e.finish_time.as_deref().and_then(parse_time)) {
        (Some(a), Some(b)) => {
            let ms = (b - a).num_milliseconds();
            if ms < 1000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) }
        }
        (Some(_), None) => "running".into(),
        _ => String::new(),
    }
}

/// The lines of the tab (also what scrolling counts).
pub fn lines<'a>(actions: Option<&[InstanceAction]>, theme: &Theme) -> Vec<Line<'a>> {
    let Some(actions) = actions else {
        return vec![Line::from(Span::styled("loading the action history…", theme.muted()))];
    };
    if actions.is_empty() {
        return vec![Line::from(Span::styled("no actions recorded", theme.muted()))];
    }
    let mut out = Vec::new();
    for a in actions {
        let mut head = vec![
            Span::styled(format!("{} ", date_clock(&a.start_time)), theme.muted()),
            Span::styled(format!("{:<14} ", a.action), theme.title()),
            Span::styled(a.request_id.clone(), theme.muted()),
        ];
        if let Some(m) = a.message.as_deref().filter(|m| !m.is_empty()) {
            head.push(Span::styled(format!("  {m}"), theme.error()));
        }
        out.push(Line::from(head));
        for e in &a.events {
            let result = e.result.clone().unwrap_or_default();
            let style = match result.as_str() {
                "Success" => theme.accent(),
                "Error" => theme.error(),
                _ => Style::default(),
            };
            out.push(Line::from(vec![
                Span::raw(format!("    {:<8} ", clock(&e.start_time))),
                Span::raw(format!("{:<28} ", event_words(&e.event))),
                Span::styled(format!("{result:<8} "), style),
                Span::raw(format!("{:>9} ", took(e))),
                Span::styled(e.host.clone().unwrap_or_default(), theme.muted()),
            ]));
        }
    }
    out
}

/// Draws the tab from its first line `scroll`.
pub fn draw(f: &mut Frame, area: Rect, lines: Vec<Line>, scroll: u16) {
    f.render_widget(Paragraph::new(lines).scroll((scroll, 0)), area);
}
