//! `GET /report?from=&to=`: one self-contained HTML page (inline CSS and SVG, no script, no CDN)
//! for a time window — throughput, error rate and p99 latency over time per backend, a summary
//! table with percentiles from the merged histograms, and the events — for a tester to attach to
//! a ticket.

use std::fmt::Write;
use std::path::Path;

use super::query::{format_time, summary, Window};
use super::store::{Copy, Histogram, History, Sample, SeriesCopy};
use crate::runtime::{Event, Events};

const COLORS: &[&str] = &[
    "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563",
];
const W: f64 = 900.0;
const H: f64 = 180.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Dash patterns, combined with [`COLORS`] so that no two of the first 24 lines look alike and a
/// line drawn over another still shows the one beneath.
const DASHES: &[&str] = &["", "6 3", "2 2"];
/// The legend's CSS border style for each of [`DASHES`].
const CSS_DASHES: &[&str] = &["solid", "dashed", "dotted"];

/// The style of line `i`: (colour, dash pattern).
fn style(i: usize) -> (&'static str, &'static str) {
    (COLORS[i % COLORS.len()], DASHES[i % DASHES.len()])
}

/// Round tick values over [0, max]: steps of 1, 2 or 5 × 10ⁿ, about four of them; returns the
/// step and the top of the axis (a multiple of the step).
pub fn nice_ticks(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 || !max.is_finite() {
        return (0.2, 1.0);
    }
    let raw = max / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    (step, (max / step).ceil().max(1.0) * step)
}

/// The time-axis label step for a span of seconds: at most about 8 labels, on round times.
pub fn time_step(span: u64) -> u64 {
    const STEPS: &[u64] = &[
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 8)
        .unwrap_or(86400)
}

/// `HH:MM` (or `HH:MM:SS` below a minute's step), UTC.
fn clock(t: u64, step: u64) -> String {
    let d = t % 86_400;
    if step < 60 {
        format!("{:02}:{:02}:{:02}", d / 3600, d % 3600 / 60, d % 60)
    } else {
        format!("{:02}:{:02}", d / 3600, d % 3600 / 60)
    }
}

/// A chart's scales: time to x over [t0, t0 + span], value to y over [0, top].
struct Scale {
    t0: u64,
    span: f64,
    top: f64,
}

impl Scale {
    fn x(&self, t: u64) -> f64 {
        50.0 + (t.saturating_sub(self.t0)) as f64 / self.span * (W - 60.0)
    }

    fn y(&self, v: f64) -> f64 {
        10.0 + (1.0 - v / self.top) * (H - 40.0)
    }
}

/// One chart: a line per series of (t, value) points, over [t0, t1]. Events are numbered
/// markers (`events`: (number, time, text)), the number on the chart and in the event list.
fn chart(
    title: &str,
    unit: &str,
    lines: &[(String, Vec<(u64, f64)>)],
    events: &[(usize, u64, String)],
    t0: u64,
    t1: u64,
) -> String {
    let max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.0f64, f64::max);
    let (step, top) = nice_ticks(max);
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    let scale = Scale { t0, span, top };
    let mut svg = format!(
        "<figure><figcaption>{} ({})</figcaption><svg class=\"chart\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(unit),
        esc(title)
    );
    value_grid(&mut svg, &scale, step);
    time_grid(&mut svg, &scale, t1);
    // Events: a dashed line each, numbered at the top, the message as its tooltip.
    for (num, t, msg) in events.iter().filter(|(_, t, _)| *t >= t0 && *t <= t1) {
        let _ = write!(
            svg,
            "<g class=\"event\"><title>{num}: {}</title><line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"10\" \
             y2=\"{}\" stroke=\"#9ca3af\" stroke-dasharray=\"4 3\"/><text x=\"{x:.1}\" y=\"9\" \
             class=\"marker\" text-anchor=\"middle\">{num}</text></g>",
            esc(msg),
            H - 30.0,
            x = scale.x(*t)
        );
    }
    for (i, (name, points)) in lines.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let (color, dash) = style(i);
        let d: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", scale.x(*t), scale.y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{color}\" \
             stroke-dasharray=\"{dash}\" stroke-width=\"1.5\" points=\"{}\"/>",
            esc(name),
            d.join(" ")
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (i, (name, _)) in lines.iter().enumerate() {
        let (color, css) = (style(i).0, CSS_DASHES[i % CSS_DASHES.len()]);
        let _ = write!(
            svg,
            "<span><i style=\"border-top:2px {css} {color}\"></i>{}</span>",
            esc(name)
        );
    }
    svg.push_str("</div></figure>");
    svg
}

/// The value axis: a grid line and a label every `step`, up to the top.
fn value_grid(svg: &mut String, scale: &Scale, step: f64) {
    let n = (scale.top / step).round() as usize;
    for i in 0..=n {
        let v = step * i as f64;
        let _ = write!(
            svg,
            "<line x1=\"50\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"45\" y=\"{:.1}\" class=\"tick ytick\" text-anchor=\"end\">{}</text>",
            W - 10.0,
            scale.y(v) + 4.0,
            fmt_tick(v, step),
            y = scale.y(v)
        );
    }
}

/// The time axis up to `t1`: grid lines and labels on round times, and its unit (UTC).
fn time_grid(svg: &mut String, scale: &Scale, t1: u64) {
    let t0 = scale.t0;
    let ts = time_step(t1.saturating_sub(t0));
    let mut t = t0.div_ceil(ts) * ts;
    while t <= t1 {
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{}\" y2=\"{}\" class=\"grid\"/>\
             <text x=\"{x:.1}\" y=\"{}\" class=\"tick xtick\" text-anchor=\"middle\">{}</text>",
            H - 30.0,
            H - 26.0,
            H - 14.0,
            clock(t, ts),
            x = scale.x(t)
        );
        t += ts;
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">UTC</text>",
        W - 10.0,
        H - 2.0
    );
}

/// A tick value with as many decimals as its step needs (0.25 → 2, 500 → 0).
fn fmt_tick(v: f64, step: f64) -> String {
    // Steps are 1, 2 or 5 × 10ⁿ: below 1, n decimals.
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

fn points(s: &SeriesCopy, f: impl Fn(&Sample) -> Option<f64>) -> Vec<(u64, f64)> {
    s.samples
        .iter()
        .filter_map(|x| f(x).map(|v| (x.t, v)))
        .collect()
}

/// The report page: the window is copied under the history lock, and the page rendered from the
/// copy without it (a large report takes a while; the sampler must not wait for it).
pub fn report(history: &History, events: &Events, config_path: &Path, w: Window) -> String {
    let copy = history.copy(w.from, w.to);
    render(&copy, &events.list(), &config_path.display().to_string(), w)
}

/// Renders the page from a copy of the history (no lock, no shared state).
pub fn render(copy: &Copy, all_events: &[Event], config_path: &str, w: Window) -> String {
    let (t0, t1) = (w.from.max(copy.first_t), w.to.min(copy.last_t));
    let series = &copy.series;
    let label = |s: &SeriesCopy| {
        if s.backend.is_empty() {
            format!("{} (all)", s.upstream)
        } else {
            format!("{}/{}", s.upstream, s.backend)
        }
    };
    let rps = |x: &Sample| Some(x.requests() as f64 / x.seconds.max(1) as f64);
    let err = |x: &Sample| {
        let n = x.requests();
        (n > 0).then(|| (x.classes[3] + x.classes[4]) as f64 / n as f64 * 100.0)
    };
    let p99 = |x: &Sample| {
        let mut h = Histogram::default();
        h.add(x);
        h.quantile_ms(0.99)
    };
    let lines = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(String, Vec<(u64, f64)>)> {
        series.iter().map(|s| (label(s), points(s, f))).collect()
    };
    // The window's events, numbered: the number marks the chart and leads the event list.
    let in_window: Vec<&Event> = all_events
        .iter()
        .filter(|e| (w.from..=w.to).contains(&(e.time_ms / 1000)))
        .collect();
    let events: Vec<(usize, u64, String)> = in_window
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                i + 1,
                e.time_ms / 1000,
                format!("{}: {}", e.kind, e.message),
            )
        })
        .collect();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>lb load-test report</h1><p class=\"meta\">{} → {} · config {}</p>",
        format_time(t0),
        format_time(t1),
        esc(config_path)
    );
    if series.is_empty() {
        body.push_str("<p>No samples in this window.</p>");
    }
    body.push_str(&chart(
        "Throughput",
        "requests/s",
        &lines(&rps),
        &events,
        t0,
        t1,
    ));
    let unit = "% of answers 4xx/5xx";
    body.push_str(&chart("Error rate", unit, &lines(&err), &events, t0, t1));
    body.push_str(&chart("p99 latency", "ms", &lines(&p99), &events, t0, t1));
    summary_table(&mut body, series);
    event_list(&mut body, &in_window);
    page(&body, t0)
}

/// The summary table: a row per series.
fn summary_table(body: &mut String, series: &[SeriesCopy]) {
    body.push_str(
        "<h2>Summary</h2><table id=\"summary\"><thead><tr><th>upstream</th><th>backend</th>\
         <th>requests</th><th title=\"requests over the seconds that had traffic (idle seconds \
         left out)\">req/s (active)</th><th>active s</th><th>4xx</th><th>5xx</th><th>error rate</th><th>p50 ms</th>\
         <th>p90 ms</th><th>p99 ms</th></tr></thead><tbody>",
    );
    for s in series {
        let v = summary(s.samples.iter().copied());
        let ms = |k: &str| v[k].as_f64().map_or("–".to_string(), |x| format!("{x:.2}"));
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"rps\">{:.1}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{:.2}%</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.upstream),
            if s.backend.is_empty() { "(all)".to_string() } else { esc(&s.backend) },
            v["requests"],
            v["rps_active"].as_f64().unwrap_or(0.0),
            v["active_s"],
            v["errors_4xx"],
            v["errors_5xx"],
            v["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
            ms("p50_ms"),
            ms("p90_ms"),
            ms("p99_ms")
        );
    }
    body.push_str("</tbody></table>");
}

/// The window's events, numbered as on the charts.
fn event_list(body: &mut String, in_window: &[&Event]) {
    body.push_str("<h2>Events</h2><ul id=\"events\">");
    let mut any = false;
    for (i, e) in in_window.iter().enumerate() {
        let t = e.time_ms / 1000;
        any = true;
        let _ = write!(
            body,
            "<li value=\"{}\"><span class=\"num\">{}</span> <time>{}</time> <b>{}</b> {}</li>",
            i + 1,
            i + 1,
            format_time(t),
            esc(e.kind),
            esc(&e.message)
        );
    }
    if !any {
        body.push_str("<li>none</li>");
    }
    body.push_str("</ul>");
}

/// The page around `body`, titled with its start `t0`.
fn page(body: &str, t0: u64) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lb report {}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:24px;color:#111}}h1{{margin:0 0 4px}}\
         .meta{{color:#555;margin:0 0 16px}}figure{{margin:0 0 18px}}figcaption{{font-weight:600;\
         margin-bottom:4px}}.chart{{background:#fafafa;border:1px solid #ddd}}.grid{{stroke:#e5e5e5}}\
         .tick{{font-size:10px;fill:#666}}.marker{{font-size:9px;fill:#374151;font-weight:600}}.num{{display:inline-block;min-width:1.4em;\
         font-weight:600;color:#374151}}.legend span{{margin-right:14px;font-size:12px}}.legend i\
         {{display:inline-block;width:20px;height:0;margin-right:4px;vertical-align:middle}}table{{border-collapse:\
         collapse}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:right}}td:nth-child(-n+2),\
         th:nth-child(-n+2){{text-align:left}}li{{margin:2px 0}}</style></head><body>{body}</body></html>",
        format_time(t0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::store::{History, Layout, TickBackend, TickUpstream};
    use crate::runtime::Event;
    use crate::state::stats::Totals;
    use std::time::Instant;

    /// `backends` backends over `seconds` seconds, each answering one more request a second.
    fn filled(backends: usize, seconds: u64) -> History {
        let h = History::default();
        let layout = Layout {
            keep_s: seconds,
            backend_s: 1,
        };
        let addrs: Vec<std::sync::Arc<str>> = (0..backends)
            .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250).into())
            .collect();
        for t in 0..seconds {
            let mut totals = Totals::default();
            totals.classes[1] = t * (t + 1) / 2;
            totals.buckets[4] = totals.classes[1];
            let up = TickUpstream {
                name: "api".into(),
                own: Totals::default(),
                backends: addrs
                    .iter()
                    .map(|a| TickBackend {
                        address: a.clone(),
                        name: None,
                        totals,
                        in_flight: 0,
                        state: 0,
                    })
                    .collect(),
            };
            h.tick(1_000_000 + t, layout, &[up]);
        }
        h
    }

    #[test]
    fn ticks_markers_time_labels_styles_and_active_rate() {
        // Issue 28, item 9. 15 minutes, a backend with traffic in 60 of them (1..=60 req/s).
        let near =
            |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9;
        assert!(
            near(nice_ticks(0.408), (0.2, 0.6)),
            "{:?}",
            nice_ticks(0.408)
        );
        assert!(near(nice_ticks(558.0), (200.0, 600.0)));
        assert!(near(nice_ticks(0.0), (0.2, 1.0)));
        assert_eq!(time_step(900), 120);
        let h = History::default();
        let layout = Layout {
            keep_s: 3600,
            backend_s: 1,
        };
        let t0 = 1_795_874_400; // 14:00:00 UTC
        for t in 0..900u64 {
            let busy = t.clamp(100, 160) - 100;
            let mut totals = Totals::default();
            totals.classes[1] = busy * (busy + 1) / 2;
            totals.buckets[4] = totals.classes[1];
            let b = |a: &str| TickBackend {
                address: a.into(),
                name: None,
                totals,
                in_flight: 0,
                state: 0,
            };
            let up = TickUpstream {
                name: "api".into(),
                own: Totals::default(),
                backends: vec![b("a:1"), b("b:1")],
            };
            h.tick(t0 + t, layout, &[up]);
        }
        let ev = |dt: u64, m: &str| Event {
            time_ms: (t0 + dt) * 1000,
            kind: "backend",
            message: m.into(),
        };
        let events = [ev(100, "api/a: up -> down"), ev(300, "api/a: down -> up")];
        let all = Window {
            from: 0,
            to: u64::MAX,
        };
        let page = render(&h.copy(0, u64::MAX), &events, "lb.toml", all);
        // Round y ticks (no 0.408-style values): every tick label is a multiple of its step.
        let yticks: Vec<&str> = page
            .split("class=\"tick ytick\" text-anchor=\"end\">")
            .skip(1)
            .map(|s| &s[..s.find('<').unwrap()])
            .collect();
        // Throughput tops at 120 req/s (two backends at 60): 0, 50, 100, 150; the error
        // rate (none) 0, 0.2, … 1.0.
        for v in ["0", "50", "100", "150", "0.2", "0.6"] {
            assert!(yticks.contains(&v), "{v} not in {yticks:?}");
        }
        // Time labels every 2 minutes: 14:00, 14:02, …, 14:14.
        for label in ["14:00", "14:02", "14:08", "14:14"] {
            assert!(page.contains(&format!(">{label}</text>")), "{label}");
        }
        // Numbered markers with a hover title, the same numbers in the event list.
        assert!(page.contains("<title>1: backend: api/a: up -&gt; down</title>"));
        assert!(page.contains("class=\"marker\" text-anchor=\"middle\">2</text>"));
        assert!(page.contains("<li value=\"2\"><span class=\"num\">2</span>"));
        // Lines differ in dash pattern as well as colour.
        assert!(page.contains("stroke-dasharray=\"\" stroke-width"));
        assert!(page.contains("stroke-dasharray=\"6 3\" stroke-width"));
        // req/s over the 60 seconds with traffic: 1,830 requests / 60 s = 30.5 (not / 900 s).
        assert!(page.contains("req/s (active)"));
        assert!(
            page.contains("<td>1830</td><td class=\"rps\">30.5</td><td>60</td>"),
            "{}",
            &page[page.find("<table").unwrap()..]
        );
    }

    #[test]
    fn a_large_report_renders_without_the_history_lock() {
        // Issue 28, item 3: 150 backends over 20 minutes (debug build; the figures scale
        // linearly to an hour). The page renders from a copy while the test holds the lock
        // the sampler's tick takes: rendering under it would deadlock here.
        let h = filled(150, 1200);
        let all = Window {
            from: 0,
            to: u64::MAX,
        };
        let t = Instant::now();
        let copy = h.copy(all.from, all.to);
        let copied = t.elapsed();
        let held = h.store.lock().unwrap();
        let t = Instant::now();
        let page = render(&copy, &[], "lb.toml", all);
        let rendered = t.elapsed();
        drop(held);
        assert!(page.contains("Throughput") && page.contains("10.0.0.149:80"));
        assert_eq!(copy.series.len(), 151);
        eprintln!(
            "150 backends x 1200 s: lock held {copied:?} to copy, page ({} bytes) rendered in \
             {rendered:?} without it",
            page.len()
        );
    }
}
