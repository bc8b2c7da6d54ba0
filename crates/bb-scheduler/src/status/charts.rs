//! The charts page: the last hour of the queue as SVG drawn on the server
//! (no script, nothing fetched from elsewhere).

use super::layout::{Refresh, page};
use crate::queue::{HistorySample, QueueHistory};
use maud::{Markup, html};
use std::collections::BTreeMap;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 72.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 8.0;
const HOUR: f64 = 3600.0;
const COLORS: [&str; 8] =
    ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

/// One line of a chart: (seconds before now, value) points.
struct Series {
    name: String,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// A round number at or above `max`, for the top of the y axis.
fn ceiling(max: f64) -> f64 {
    if max <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|v| *v >= max).unwrap_or(10.0 * magnitude)
}

fn x(seconds_ago: f64) -> f64 {
    LEFT + (WIDTH - LEFT) * (1.0 - seconds_ago.clamp(0.0, HOUR) / HOUR)
}

fn y(value: f64, top: f64) -> f64 {
    TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - value / top)
}

/// The frame: axes, ticks every 15 minutes, the y scale.
fn frame(top: f64, unit: &str) -> Markup {
    html! {
        line x1=(LEFT) y1=(y(0.0, top)) x2=(WIDTH) y2=(y(0.0, top)) stroke="#999" {}
        line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(y(0.0, top)) stroke="#999" {}
        @for minutes in [60, 45, 30, 15, 0] {
            text x=(x(f64::from(minutes) * 60.0)) y=(HEIGHT - 6.0) font-size="11"
                text-anchor=(if minutes == 0 { "end" } else { "middle" }) {
                @if minutes == 0 { "now" } @else { "-" (minutes) "m" }
            }
        }
        @for value in [0.0, top / 2.0, top] {
            text x=(LEFT - 4.0) y=(y(value, top) + 4.0) font-size="11" text-anchor="end" {
                (format_value(value)) @if value == top { " " (unit) }
            }
        }
    }
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 { format!("{value:.0}") } else { format!("{value:.1}") }
}

/// Lines over the hour; the y axis tops at `top`, or at a round number
/// above the highest point.
fn line_chart(title: &str, unit: &str, top: Option<f64>, series: &[Series]) -> Markup {
    let max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let top = top.unwrap_or_else(|| ceiling(max));
    html! {
        h2 { (title) }
        svg width=(WIDTH) height=(HEIGHT) viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(title) {
            (frame(top, unit))
            @for (i, s) in series.iter().enumerate() {
                @let points: Vec<String> = s.points.iter().map(|(ago, v)| format!("{:.1},{:.1}", x(*ago), y(*v, top))).collect();
                polyline fill="none" stroke=(COLORS[i % COLORS.len()]) stroke-width="1.5"
                    stroke-dasharray=[s.dashed.then_some("4 3")] points=(points.join(" ")) {}
            }
        }
        (legend(series.iter().map(|s| s.name.as_str())))
    }
}

fn legend<'a>(names: impl Iterator<Item = &'a str>) -> Markup {
    html! {
        p.legend {
            @for (i, name) in names.enumerate() {
                span style=(format!("color:{}", COLORS[i % COLORS.len()])) { "■ " } (name) " "
            }
        }
    }
}

/// Completions per minute, stacked by outcome.
fn completions(history: &QueueHistory, now: u64) -> Markup {
    let mut minutes: BTreeMap<u64, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut outcomes: Vec<&str> = Vec::new();
    for sample in &history.samples {
        let ago = now.saturating_sub(sample.at_unix_seconds);
        for (outcome, n) in &sample.completed {
            *minutes.entry(ago / 60).or_default().entry(outcome.as_str()).or_default() += n;
            if !outcomes.contains(&outcome.as_str()) {
                outcomes.push(outcome);
            }
        }
    }
    outcomes.sort_unstable();
    let max = minutes.values().map(|m| m.values().sum::<u64>()).max().unwrap_or(0);
    let top = ceiling(max as f64);
    let width = (WIDTH - LEFT) / 60.0 - 1.0;
    // (x, y, height, color, label) of each stacked piece.
    let mut bars = Vec::new();
    for (minute, counts) in &minutes {
        let left = x((*minute as f64 + 1.0) * 60.0);
        let mut stacked = 0;
        for (i, outcome) in outcomes.iter().enumerate() {
            let Some(n) = counts.get(outcome) else { continue };
            let (bottom, upper) = (y(stacked as f64, top), y((stacked + n) as f64, top));
            bars.push((left, upper, bottom - upper, COLORS[i % COLORS.len()], format!("{outcome}: {n}")));
            stacked += n;
        }
    }
    html! {
        h2 { "Actions completed per minute, by outcome" }
        svg width=(WIDTH) height=(HEIGHT) viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label="completions" {
            (frame(top, "per min"))
            @for (left, upper, height, color, label) in &bars {
                rect x=(format!("{left:.1}")) y=(format!("{upper:.1}")) width=(format!("{width:.1}"))
                    height=(format!("{height:.1}")) fill=(color) { title { (label) } }
            }
        }
        (legend(outcomes.iter().copied()))
    }
}

fn queue_series(samples: &[HistorySample], now: u64) -> Vec<Series> {
    let names: std::collections::BTreeSet<&String> = samples.iter().flat_map(|s| s.queues.keys()).collect();
    let mut series = Vec::new();
    for name in names {
        for (kind, executing) in [("queued", false), ("executing", true)] {
            let points = samples
                .iter()
                .map(|s| {
                    let (queued, running) = s.queues.get(name).copied().unwrap_or((0, 0));
                    let value = if executing { running } else { queued };
                    (now.saturating_sub(s.at_unix_seconds) as f64, value as f64)
                })
                .collect();
            let label = if name.is_empty() { kind.to_string() } else { format!("{name}: {kind}") };
            series.push(Series { name: label, dashed: executing, points });
        }
    }
    series
}

fn utilisation(samples: &[HistorySample], now: u64) -> Vec<Series> {
    let points = samples
        .iter()
        .map(|s| {
            let share = if s.workers == 0 { 0.0 } else { 100.0 * s.busy_workers as f64 / s.workers as f64 };
            (now.saturating_sub(s.at_unix_seconds) as f64, share)
        })
        .collect();
    vec![Series { name: "workers busy, %".into(), dashed: false, points }]
}

pub fn charts(history: &QueueHistory, now: u64) -> String {
    let body = html! {
        p { "The last hour, sampled every " (history.sample_seconds) " s; samples so far: " (history.samples.len()) "." }
        (line_chart("Operations queued and executing, per queue", "ops", None, &queue_series(&history.samples, now)))
        (completions(history, now))
        (line_chart("Worker utilisation", "%", Some(100.0), &utilisation(&history.samples, now)))
    };
    page("bb-scheduler: the last hour", Refresh::Every10s, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_draw_what_was_sampled() {
        let sample = |at, queued, done| HistorySample {
            at_unix_seconds: at,
            queues: [("main {OSFamily=linux}".to_string(), (queued, 1))].into(),
            completed: [("success".to_string(), done), ("nonzero_exit".to_string(), 1)].into(),
            workers: 4,
            busy_workers: 1,
        };
        let history =
            QueueHistory { sample_seconds: 10, samples: vec![sample(1000, 3, 5), sample(1010, 7, 2)] };
        let page = charts(&history, 1010);
        assert!(
            page.contains("main {OSFamily=linux}: queued")
                && page.contains("main {OSFamily=linux}: executing")
        );
        assert!(page.contains("<polyline") && page.contains("<rect"), "{page}");
        assert!(page.contains("success: 7") && page.contains("nonzero_exit: 2"), "one minute's bar: {page}");
        assert!(
            page.contains("workers busy, %") && page.contains(">10 ops<") && page.contains(">100 %<"),
            "queued tops at 10, utilisation at 100: {page}"
        );
        assert_eq!((ceiling(0.0), ceiling(7.0), ceiling(130.0)), (1.0, 10.0, 200.0));
    }
}
