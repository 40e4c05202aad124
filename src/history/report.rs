//! `GET /report?from=&to=`: one self-contained HTML page (inline CSS and SVG, no script, no CDN)
//! for a time window — throughput, error rate and p99 latency over time per backend, a summary
//! table with percentiles from the merged histograms, and the events — for a tester to attach to
//! a ticket.

use std::fmt::Write;

use super::query::{format_time, summary, Window};
use crate::runtime::{Event, Shared};
use crate::state::history::{Copy, Histogram, Sample, SeriesCopy};

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

/// One chart: a line per series of (t, value) points, over [t0, t1].
fn chart(
    title: &str,
    unit: &str,
    lines: &[(String, Vec<(u64, f64)>)],
    events: &[(u64, String)],
    t0: u64,
    t1: u64,
) -> String {
    let max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.0f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let span = (t1.saturating_sub(t0)).max(1) as f64;
    let x = |t: u64| 50.0 + (t.saturating_sub(t0)) as f64 / span * (W - 60.0);
    let y = |v: f64| 10.0 + (1.0 - v / top) * (H - 40.0);
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg class=\"chart\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"50\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"45\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>",
            W - 10.0,
            y(v) + 4.0,
            fmt_num(v),
            y = y(v)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"50\" y=\"{}\" class=\"tick\">{}</text><text x=\"{}\" y=\"{}\" class=\"tick\" \
         text-anchor=\"end\">{} ({unit})</text>",
        H - 8.0,
        format_time(t0),
        W - 10.0,
        H - 8.0,
        format_time(t1)
    );
    // Events on the time axis: a dashed line each, the message as its tooltip.
    for (t, msg) in events.iter().filter(|(t, _)| *t >= t0 && *t <= t1) {
        let _ = write!(
            svg,
            "<line class=\"event\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"10\" y2=\"{}\" \
             stroke=\"#9ca3af\" stroke-dasharray=\"4 3\"><title>{}</title></line>",
            H - 30.0,
            esc(msg),
            x = x(*t)
        );
    }
    for (i, (name, points)) in lines.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let color = COLORS[i % COLORS.len()];
        let d: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline class=\"series\" data-series=\"{}\" fill=\"none\" stroke=\"{color}\" \
             stroke-width=\"1.5\" points=\"{}\"/>",
            esc(name),
            d.join(" ")
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (i, (name, _)) in lines.iter().enumerate() {
        let _ = write!(
            svg,
            "<span><i style=\"background:{}\"></i>{}</span>",
            COLORS[i % COLORS.len()],
            esc(name)
        );
    }
    svg.push_str("</div></figure>");
    svg
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn points(s: &SeriesCopy, f: impl Fn(&Sample) -> Option<f64>) -> Vec<(u64, f64)> {
    s.samples
        .iter()
        .filter_map(|x| f(x).map(|v| (x.t, v)))
        .collect()
}

/// The report page: the window is copied under the history lock, and the page rendered from the
/// copy without it (a large report takes a while; the sampler must not wait for it).
pub fn report(shared: &Shared, w: Window) -> String {
    let copy = shared.history.copy(w.from, w.to);
    let events = shared.events();
    render(&copy, &events, &shared.config_path.display().to_string(), w)
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
    let events: Vec<(u64, String)> = all_events
        .iter()
        .map(|e| (e.time_ms / 1000, format!("{}: {}", e.kind, e.message)))
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
    body.push_str(
        "<h2>Summary</h2><table id=\"summary\"><thead><tr><th>upstream</th><th>backend</th>\
         <th>requests</th><th>req/s</th><th>4xx</th><th>5xx</th><th>error rate</th><th>p50 ms</th>\
         <th>p90 ms</th><th>p99 ms</th></tr></thead><tbody>",
    );
    for s in series {
        let v = summary(s.samples.iter().copied());
        let ms = |k: &str| v[k].as_f64().map_or("–".to_string(), |x| format!("{x:.2}"));
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{:.2}%</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.upstream),
            if s.backend.is_empty() { "(all)".to_string() } else { esc(&s.backend) },
            v["requests"],
            v["rps"].as_f64().unwrap_or(0.0),
            v["errors_4xx"],
            v["errors_5xx"],
            v["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
            ms("p50_ms"),
            ms("p90_ms"),
            ms("p99_ms")
        );
    }
    body.push_str("</tbody></table>");
    body.push_str("<h2>Events</h2><ul id=\"events\">");
    let mut any = false;
    for e in all_events {
        let t = e.time_ms / 1000;
        if t < w.from || t > w.to {
            continue;
        }
        any = true;
        let _ = write!(
            body,
            "<li><time>{}</time> <b>{}</b> {}</li>",
            format_time(t),
            esc(e.kind),
            esc(&e.message)
        );
    }
    if !any {
        body.push_str("<li>none</li>");
    }
    body.push_str("</ul>");
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lb report {}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:24px;color:#111}}h1{{margin:0 0 4px}}\
         .meta{{color:#555;margin:0 0 16px}}figure{{margin:0 0 18px}}figcaption{{font-weight:600;\
         margin-bottom:4px}}.chart{{background:#fafafa;border:1px solid #ddd}}.grid{{stroke:#e5e5e5}}\
         .tick{{font-size:10px;fill:#666}}.legend span{{margin-right:14px;font-size:12px}}.legend i\
         {{display:inline-block;width:10px;height:10px;margin-right:4px}}table{{border-collapse:\
         collapse}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:right}}td:nth-child(-n+2),\
         th:nth-child(-n+2){{text-align:left}}li{{margin:2px 0}}</style></head><body>{body}</body></html>",
        format_time(t0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::history::{History, Layout, TickBackend, TickUpstream};
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
