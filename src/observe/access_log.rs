//! The optional access log (`server.access_log = "stdout" | "PATH" | "off"`): one JSON line per
//! request with time, client, method, path, status, upstream, backend, attempts, duration and
//! bytes in/out. Lines go through a bounded channel to a writer thread, so a slow disk never
//! blocks a request (when the channel is full the line is dropped and counted). When off, the
//! request path only checks an `Option`. Before the process exits, [`AccessLogger::flush`] writes
//! out every line already logged.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::AccessLog;

/// Lines buffered between requests and the writer thread.
const QUEUE: usize = 65_536;
/// How often the writer thread drains the queue and flushes.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Upper bound for [`AccessLogger::flush`] (a stuck disk must not hold up an exit for long).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the writer thread receives.
enum Msg {
    Line(String),
    /// Write everything queued before this, flush, then answer.
    Flush(SyncSender<()>),
}

/// A handle to the writer thread.
pub struct AccessLogger {
    tx: SyncSender<Msg>,
    writer: std::thread::Thread,
    pub dropped: AtomicU64,
}

/// One request, as logged.
pub struct Entry<'a> {
    pub client: Option<std::net::SocketAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub upstream: &'a str,
    pub backend: &'a str,
    pub attempts: u32,
    pub duration: Duration,
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// The client's protocol: `http1` or `http2`.
    pub protocol: &'static str,
    /// The `grpc-status` of a gRPC call.
    pub grpc_status: Option<u8>,
}

impl AccessLogger {
    /// Starts the writer for `target`; `None` when the log is off or cannot be opened.
    pub fn start(target: &AccessLog) -> Option<AccessLogger> {
        let mut out: Box<dyn Write + Send> = match target {
            AccessLog::Off => return None,
            AccessLog::Stdout => Box::new(std::io::stdout()),
            AccessLog::File(path) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(f) => Box::new(f),
                Err(e) => {
                    tracing::error!(path = %path.display(), "cannot open the access log: {e}");
                    return None;
                }
            },
        };
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let handle = std::thread::Builder::new()
            .name("lb-access-log".into())
            .spawn(move || {
                // Poll instead of blocking in recv(): a sender then never has to wake this
                // thread (a futex call and a context switch per request).
                let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
                loop {
                    // `flush` unparks the thread early.
                    std::thread::park_timeout(FLUSH_EVERY);
                    loop {
                        match rx.try_recv() {
                            Ok(Msg::Line(line)) => {
                                let _ = buf.write_all(line.as_bytes());
                            }
                            Ok(Msg::Flush(done)) => {
                                let _ = buf.flush();
                                let _ = done.try_send(());
                            }
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                let _ = buf.flush();
                                return;
                            }
                        }
                    }
                    let _ = buf.flush();
                }
            })
            .ok()?;
        Some(AccessLogger {
            tx,
            writer: handle.thread().clone(),
            dropped: AtomicU64::new(0),
        })
    }

    pub fn log(&self, e: &Entry) {
        let line = format_entry(e, SystemTime::now());
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Writes out every line logged so far, waiting at most `timeout`; false if that ran out.
    /// The writer otherwise flushes only every `FLUSH_EVERY`, so an exit without this loses
    /// the last lines.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let (done_tx, done_rx) = sync_channel(1);
        let mut msg = Msg::Flush(done_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) if std::time::Instant::now() < deadline => {
                    msg = m;
                    self.writer.unpark();
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
        self.writer.unpark();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        done_rx.recv_timeout(left).is_ok()
    }
}

/// The request's fields as JSON members, each preceded by a comma (`,"method":…` up to
/// `grpc_status`): shared by the access log line and the Kafka `request` record.
pub fn request_fields(s: &mut String, e: &Entry) {
    use std::fmt::Write as _;
    s.push_str(",\"method\":");
    json_str(s, e.method);
    s.push_str(",\"path\":");
    json_str(s, e.path);
    let _ = write!(s, ",\"status\":{},\"upstream\":", e.status);
    json_str(s, e.upstream);
    s.push_str(",\"backend\":");
    json_str(s, e.backend);
    // Milliseconds with three decimals, from whole microseconds (no float formatting).
    let micros = (e.duration.as_nanos() + 500) / 1000;
    let _ = write!(
        s,
        ",\"attempts\":{},\"duration_ms\":{}.{:03},\"bytes_in\":{},\"bytes_out\":{},\"protocol\":\"{}\"",
        e.attempts,
        micros / 1000,
        micros % 1000,
        e.bytes_in,
        e.bytes_out,
        e.protocol
    );
    if let Some(g) = e.grpc_status {
        let _ = write!(s, ",\"grpc_status\":{g}");
    }
}

/// The JSON line for one request (ends with `\n`), written directly into one `String`.
pub fn format_entry(e: &Entry, now: SystemTime) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(256);
    s.push_str("{\"time\":\"");
    push_rfc3339(&mut s, now);
    s.push_str("\",\"client\":\"");
    if let Some(c) = e.client {
        let _ = write!(s, "{c}");
    }
    s.push('"');
    request_fields(&mut s, e);
    s.push_str("}\n");
    s
}

/// Appends `v` as a JSON string literal.
pub(crate) fn json_str(out: &mut String, v: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-11-27T23:08:25.123Z` without a date library.
pub fn rfc3339(t: SystemTime) -> String {
    let mut s = String::with_capacity(24);
    push_rfc3339(&mut s, t);
    s
}

/// Appends [`rfc3339`]`(t)` to `s` (digit by digit: this runs once per logged request).
pub fn push_rfc3339(s: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::util::time::civil_date(days);
    let digits = |s: &mut String, v: u64, width: u32| {
        for i in (0..width).rev() {
            s.push(char::from(b'0' + (v / 10u64.pow(i) % 10) as u8));
        }
    };
    digits(s, year.clamp(0, 9999) as u64, 4);
    s.push('-');
    digits(s, month as u64, 2);
    s.push('-');
    digits(s, day as u64, 2);
    s.push('T');
    digits(s, (rem / 3600) as u64, 2);
    s.push(':');
    digits(s, (rem / 60 % 60) as u64, 2);
    s.push(':');
    digits(s, (rem % 60) as u64, 2);
    s.push('.');
    digits(s, d.subsec_millis() as u64, 3);
    s.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_writes_every_logged_line() {
        let dir = crate::util::testdir::fresh("flush");
        let path = dir.join("access.log");
        let log = AccessLogger::start(&AccessLog::File(path.clone())).unwrap();
        let e = Entry {
            client: None,
            method: "GET",
            path: "/",
            status: 200,
            upstream: "api",
            backend: "",
            attempts: 1,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            protocol: "http1",
            grpc_status: None,
        };
        for _ in 0..100 {
            log.log(&e);
        }
        assert!(log.flush(FLUSH_TIMEOUT));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 100);
    }

    #[test]
    fn formats_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_820_905_123);
        assert_eq!(rfc3339(t), "2026-11-27T23:08:25.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_007); // a leap day
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.007Z");
    }

    #[test]
    fn formats_entry() {
        let e = Entry {
            client: Some("127.0.0.1:5000".parse().unwrap()),
            method: "GET",
            path: "/x?y=1",
            status: 200,
            upstream: "api",
            backend: "127.0.0.1:9001",
            attempts: 1,
            duration: Duration::from_micros(1500),
            bytes_in: 0,
            bytes_out: 22,
            protocol: "http1",
            grpc_status: None,
        };
        let line = format_entry(&e, UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let odd = Entry {
            path: "/\"q\\\u{1}",
            ..e
        };
        let v2: serde_json::Value = serde_json::from_str(&format_entry(&odd, UNIX_EPOCH)).unwrap();
        assert_eq!(v2["path"], "/\"q\\\u{1}");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["path"], "/x?y=1");
        assert_eq!(v["protocol"], "http1");
        assert!(v.get("grpc_status").is_none());
        assert!(line.ends_with('\n'));
        let grpc = Entry {
            protocol: "http2",
            grpc_status: Some(14),
            ..e
        };
        let v3: serde_json::Value = serde_json::from_str(&format_entry(&grpc, UNIX_EPOCH)).unwrap();
        assert_eq!(
            (v3["protocol"].as_str(), v3["grpc_status"].as_u64()),
            (Some("http2"), Some(14))
        );
        // duration_ms: three decimals from whole (rounded) microseconds.
        for (nanos, text) in [
            (1_005_000, "\"duration_ms\":1.005,"),
            (999, "\"duration_ms\":0.001,"),
            (499, "\"duration_ms\":0.000,"),
            (12_345_678_900, "\"duration_ms\":12345.679,"),
        ] {
            let d = Entry {
                duration: Duration::from_nanos(nanos),
                ..e
            };
            let line = format_entry(&d, UNIX_EPOCH);
            assert!(line.contains(text), "{nanos}: {line}");
        }
    }
}
