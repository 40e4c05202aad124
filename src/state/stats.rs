//! Lock-free request counters behind `lb_requests_total` (by status code and the client's
//! protocol), `lb_grpc_requests_total` (by `grpc-status`) and `lb_request_duration_seconds`.
//!
//! The request path does a few relaxed atomic adds on the backend's own [`RequestStats`] (which
//! lives in the per-backend state and so survives reloads) instead of a label lookup in a
//! prometheus `*Vec` (string hashing plus a lock) per request. The admin listener renders these in
//! Prometheus text format at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Status codes with a dedicated counter; others go to a small locked list.
const COMMON: [u16; 20] = [
    200, 201, 202, 204, 301, 302, 304, 307, 400, 401, 403, 404, 405, 408, 413, 429, 500, 502, 503,
    504,
];

/// The protocol the client spoke (`protocol` in metrics and the access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientProtocol {
    Http1 = 0,
    Http2 = 1,
}

impl ClientProtocol {
    pub fn label(self) -> &'static str {
        match self {
            ClientProtocol::Http1 => "http1",
            ClientProtocol::Http2 => "http2",
        }
    }
}

/// gRPC status codes 0 (OK) to 16 (UNAUTHENTICATED); others are counted as 2 (UNKNOWN).
const GRPC_STATUSES: usize = 17;

/// Counters and a latency histogram for one (upstream, backend) pair.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// By client protocol, then status code.
    codes: [[AtomicU64; COMMON.len()]; 2],
    other: Mutex<Vec<(ClientProtocol, u16, u64)>>,
    grpc: [AtomicU64; GRPC_STATUSES],
    buckets: [AtomicU64; DURATION_BUCKETS_LEN],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// Number of latency buckets (one more, over the last bound, in [`Totals`]).
pub const DURATION_BUCKETS_LEN: usize = 17;

/// Latency buckets from 100 µs to 30 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
const _: () = assert!(DURATION_BUCKETS.len() == DURATION_BUCKETS_LEN);

impl RequestStats {
    /// Counts one answered request.
    #[inline]
    pub fn record(&self, code: u16, elapsed: Duration, protocol: ClientProtocol) {
        match COMMON.iter().position(|c| *c == code) {
            Some(i) => {
                self.codes[protocol as usize][i].fetch_add(1, Relaxed);
            }
            None => {
                let mut other = self.other.lock().unwrap_or_else(|e| e.into_inner());
                match other
                    .iter_mut()
                    .find(|(p, c, _)| *p == protocol && *c == code)
                {
                    Some((_, _, n)) => *n += 1,
                    None => other.push((protocol, code, 1)),
                }
            }
        }
        let secs = elapsed.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(elapsed.as_nanos() as u64, Relaxed);
    }

    /// Counts the `grpc-status` a gRPC call ended with.
    pub fn record_grpc(&self, status: u8) {
        let i = usize::from(status);
        self.grpc[if i < GRPC_STATUSES { i } else { 2 }].fetch_add(1, Relaxed);
    }

    /// (grpc-status, count) for every status seen.
    pub fn grpc_statuses(&self) -> Vec<(u8, u64)> {
        (0..GRPC_STATUSES as u8)
            .zip(self.grpc.iter().map(|n| n.load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// (protocol, code, count) for every code seen.
    pub fn codes(&self) -> Vec<(ClientProtocol, u16, u64)> {
        let protocols = [ClientProtocol::Http1, ClientProtocol::Http2];
        let mut v: Vec<(ClientProtocol, u16, u64)> = protocols
            .iter()
            .zip(self.codes.iter())
            .flat_map(|(p, codes)| {
                COMMON
                    .iter()
                    .zip(codes.iter())
                    .map(move |(c, n)| (*p, *c, n.load(Relaxed)))
            })
            .filter(|(_, _, n)| *n > 0)
            .collect();
        v.extend(
            self.other
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .copied(),
        );
        v.sort_unstable();
        v
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The running totals the history samples are differences of: answers by status class
    /// (`[1xx, 2xx, 3xx, 4xx, 5xx]`) and the latency buckets (the last one: over 30 s).
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for (_, code, n) in self.codes() {
            if let Some(slot) = t.classes.get_mut((code / 100) as usize - 1) {
                *slot += n;
            }
        }
        for (i, b) in self.buckets.iter().enumerate() {
            t.buckets[i] = b.load(Relaxed);
        }
        let counted: u64 = t.buckets[..DURATION_BUCKETS_LEN].iter().sum();
        t.buckets[DURATION_BUCKETS_LEN] = self.count().saturating_sub(counted);
        t
    }
}

/// Cumulative counts of one [`RequestStats`] (see [`RequestStats::totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub classes: [u64; 5],
    pub buckets: [u64; DURATION_BUCKETS_LEN + 1],
}

/// Escapes a Prometheus label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `lb_requests_total` and `lb_request_duration_seconds` for every (upstream, backend).
pub fn render(out: &mut String, series: &[(&str, &str, &RequestStats)]) {
    let _ = writeln!(
        out,
        "# HELP lb_requests_total Requests answered, by upstream, backend, status code and the \
         client's protocol"
    );
    let _ = writeln!(out, "# TYPE lb_requests_total counter");
    for (up, be, s) in series {
        let (up, be) = (esc(up), esc(be));
        for (protocol, code, n) in s.codes() {
            let protocol = protocol.label();
            let _ = writeln!(
                out,
                "lb_requests_total{{backend=\"{be}\",code=\"{code}\",protocol=\"{protocol}\",upstream=\"{up}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP lb_grpc_requests_total gRPC calls answered, by upstream, backend and grpc-status"
    );
    let _ = writeln!(out, "# TYPE lb_grpc_requests_total counter");
    for (up, be, s) in series {
        let (up, be) = (esc(up), esc(be));
        for (status, n) in s.grpc_statuses() {
            let _ = writeln!(
                out,
                "lb_grpc_requests_total{{backend=\"{be}\",grpc_status=\"{status}\",upstream=\"{up}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP lb_request_duration_seconds Request duration through lb"
    );
    let _ = writeln!(out, "# TYPE lb_request_duration_seconds histogram");
    // Empty histograms too: their labels are known, so the series exist from the first scrape.
    for (up, be, s) in series {
        let (up, be) = (esc(up), esc(be));
        let mut cumulative = 0;
        for (b, n) in DURATION_BUCKETS.iter().zip(s.buckets.iter()) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "lb_request_duration_seconds_bucket{{backend=\"{be}\",upstream=\"{up}\",le=\"{b}\"}} {cumulative}");
        }
        let count = s.count();
        let _ = writeln!(out, "lb_request_duration_seconds_bucket{{backend=\"{be}\",upstream=\"{up}\",le=\"+Inf\"}} {count}");
        let sum = s.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "lb_request_duration_seconds_sum{{backend=\"{be}\",upstream=\"{up}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "lb_request_duration_seconds_count{{backend=\"{be}\",upstream=\"{up}\"}} {count}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_codes_and_buckets() {
        use ClientProtocol::*;
        let s = RequestStats::default();
        s.record(200, Duration::from_micros(50), Http1);
        s.record(200, Duration::from_millis(3), Http1);
        s.record(200, Duration::from_millis(3), Http2);
        s.record(418, Duration::from_secs(60), Http2);
        s.record_grpc(0);
        s.record_grpc(14);
        s.record_grpc(14);
        s.record_grpc(99);
        assert_eq!(
            s.codes(),
            vec![(Http1, 200, 2), (Http2, 200, 1), (Http2, 418, 1)]
        );
        assert_eq!(s.grpc_statuses(), vec![(0, 1), (2, 1), (14, 2)]);
        let mut out = String::new();
        render(&mut out, &[("api", "127.0.0.1:1", &s)]);
        for line in [
            "lb_requests_total{backend=\"127.0.0.1:1\",code=\"200\",protocol=\"http1\",upstream=\"api\"} 2",
            "lb_requests_total{backend=\"127.0.0.1:1\",code=\"418\",protocol=\"http2\",upstream=\"api\"} 1",
            "lb_grpc_requests_total{backend=\"127.0.0.1:1\",grpc_status=\"14\",upstream=\"api\"} 2",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
        assert!(out.contains("le=\"0.0001\"} 1"));
        assert!(out.contains("le=\"0.005\"} 3"));
        assert!(out.contains("le=\"30\"} 3"));
        assert!(out.contains("le=\"+Inf\"} 4"));
    }
}
