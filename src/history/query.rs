//! `GET /history?from=&to=` (JSON) and `GET /history.csv`: the samples of a time window (RFC 3339
//! times or unix seconds; default: everything kept), per upstream and backend, with window
//! summaries whose percentiles come from the merged histograms, and the events of the window.

use std::fmt::Write;

use serde_json::{json, Value};

use super::store::{Histogram, History, Sample};
use crate::runtime::Events;

/// A time window in unix seconds, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: u64,
    pub to: u64,
}

/// Reads `from` and `to` from a query string; a bad value is an error saying why.
pub fn window(query: Option<&str>) -> Result<Window, String> {
    let mut w = Window {
        from: 0,
        to: u64::MAX,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let t = match k {
            "from" | "to" => parse_time(&v).map_err(|e| format!("{k}: {e}"))?,
            _ => return Err(format!("unknown parameter {k:?} (expected from, to)")),
        };
        if k == "from" {
            w.from = t;
        } else {
            w.to = t;
        }
    }
    if w.from > w.to {
        return Err("from is after to".into());
    }
    Ok(w)
}

fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 3 <= b.len() => match u8::from_str_radix(&v[i + 1..i + 3], 16) {
                Ok(x) => {
                    out.push(x);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unix seconds, or an RFC 3339 time (`2026-11-28T14:09:42Z`, `…T14:09:42.5+01:00`).
pub fn parse_time(v: &str) -> Result<u64, String> {
    if let Ok(n) = v.parse::<u64>() {
        return Ok(n);
    }
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() && f >= 0.0 {
            return Ok(f as u64);
        }
    }
    rfc3339(v).ok_or_else(|| {
        format!("{v:?} is neither unix seconds nor an RFC 3339 time (e.g. 2026-11-28T14:09:42Z)")
    })
}

fn rfc3339(v: &str) -> Option<u64> {
    let b = v.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| v.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &v[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest[1..].split_once(':')?;
            let (oh, om) = (oh.parse::<i64>().ok()?, om.parse::<i64>().ok()?);
            if oh > 23 || om > 59 || rest.len() != 6 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = crate::util::time::days_from_civil(y, mo, d);
    let t = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    u64::try_from(t).ok()
}

/// RFC 3339 (UTC, seconds) for a unix time.
pub fn format_time(t: u64) -> String {
    let secs = t % 86_400;
    let (y, m, d) = crate::util::time::civil_date((t / 86_400) as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Health state names of [`Sample::state`].
pub fn state_name(s: u8) -> &'static str {
    match s {
        0 => "up",
        1 => "down",
        2 => "ejected",
        3 => "checking",
        _ => "",
    }
}

/// The window's totals of one series: requests, errors, percentiles from the merged histogram.
pub fn summary(samples: impl Iterator<Item = Sample>) -> Value {
    let mut h = Histogram::default();
    let (mut n, mut e4, mut e5, mut secs, mut active) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for s in samples {
        h.add(&s);
        n += s.requests();
        if s.requests() > 0 {
            active += s.seconds as u64;
        }
        e4 += s.classes[3] as u64;
        e5 += s.classes[4] as u64;
        secs += s.seconds as u64;
    }
    json!({
        "requests": n,
        "errors_4xx": e4,
        "errors_5xx": e5,
        "error_rate": if n > 0 { (e4 + e5) as f64 / n as f64 } else { 0.0 },
        "rps": if secs > 0 { n as f64 / secs as f64 } else { 0.0 },
        // Over the seconds with traffic only: a test's rate, idle seconds around it left out.
        "active_s": active,
        "rps_active": if active > 0 { n as f64 / active as f64 } else { 0.0 },
        "p50_ms": h.quantile_ms(0.50),
        "p90_ms": h.quantile_ms(0.90),
        "p99_ms": h.quantile_ms(0.99),
    })
}

fn sample_json(s: &Sample) -> Value {
    let mut h = Histogram::default();
    h.add(s);
    json!({
        "t": s.t,
        "seconds": s.seconds,
        "requests": s.requests(),
        "errors_4xx": s.classes[3],
        "errors_5xx": s.classes[4],
        "p50_ms": h.quantile_ms(0.50),
        "p90_ms": h.quantile_ms(0.90),
        "p99_ms": h.quantile_ms(0.99),
        "in_flight": s.in_flight,
        "state": state_name(s.state),
    })
}

/// The `/history` document.
pub fn history_json(history: &History, events: &Events, w: Window) -> Value {
    // Copied under the history lock, rendered without it.
    let copy = history.copy(w.from, w.to);
    let mut upstreams = serde_json::Map::new();
    for s in &copy.series {
        let entry = upstreams
            .entry(s.upstream.to_string())
            .or_insert_with(|| json!({ "samples": [], "summary": {}, "backends": {} }));
        let samples: Vec<Value> = s.samples.iter().map(sample_json).collect();
        let summary = summary(s.samples.iter().copied());
        if s.backend.is_empty() {
            entry["samples"] = Value::Array(samples);
            entry["summary"] = summary;
        } else {
            entry["backends"][s.backend.as_ref()] = json!({
                "name": s.name.as_deref(),
                "samples": samples,
                "summary": summary,
            });
        }
    }
    let layout = copy.layout;
    let (first, last) = (copy.first_t, copy.last_t);
    let events: Vec<Value> = events
        .list()
        .into_iter()
        .filter(|e| e.time_ms / 1000 >= w.from && e.time_ms / 1000 <= w.to)
        .map(|e| json!({ "time_ms": e.time_ms, "kind": e.kind, "message": e.message }))
        .collect();
    json!({
        "from": w.from.max(first),
        "to": w.to.min(last),
        "kept_s": layout.map(|l| l.keep_s),
        "backend_resolution_s": layout.map(|l| l.backend_s),
        "upstreams": upstreams,
        "events": events,
    })
}

/// The `/history.csv` document: one line per sample.
pub fn history_csv(history: &History, w: Window) -> String {
    let copy = history.copy(w.from, w.to);
    let mut out = String::from(
        "time,unix_s,seconds,upstream,backend,name,requests,errors_4xx,errors_5xx,p50_ms,p90_ms,p99_ms,in_flight,state\n",
    );
    let ms = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.3}"));
    for s in &copy.series {
        for x in &s.samples {
            let mut h = Histogram::default();
            h.add(x);
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                format_time(x.t),
                x.t,
                x.seconds,
                csv_field(&s.upstream),
                csv_field(&s.backend),
                csv_field(s.name.as_deref().unwrap_or("")),
                x.requests(),
                x.classes[3],
                x.classes[4],
                ms(h.quantile_ms(0.5)),
                ms(h.quantile_ms(0.9)),
                ms(h.quantile_ms(0.99)),
                x.in_flight,
                state_name(x.state)
            );
        }
    }
    out
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_both_ways() {
        assert_eq!(parse_time("1764338982"), Ok(1_764_338_982));
        assert_eq!(parse_time("2026-11-28T14:09:42Z"), Ok(1_795_874_982));
        assert_eq!(
            parse_time("2026-11-28T15:09:42.250+01:00"),
            Ok(1_795_874_982)
        );
        assert_eq!(format_time(1_795_874_982), "2026-11-28T14:09:42Z");
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-28T14:09:42",
            "-5",
            "",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn windows_and_their_errors() {
        assert_eq!(
            window(Some("from=10&to=2026-11-28T14%3A09%3A42Z")),
            Ok(Window {
                from: 10,
                to: 1_795_874_982
            })
        );
        assert_eq!(
            window(None),
            Ok(Window {
                from: 0,
                to: u64::MAX
            })
        );
        assert!(window(Some("from=20&to=10")).unwrap_err().contains("after"));
        assert!(window(Some("since=1"))
            .unwrap_err()
            .contains("unknown parameter"));
        assert!(window(Some("from=soon")).unwrap_err().starts_with("from: "));
    }
}
