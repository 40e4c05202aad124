//! The record stream (`[analytics.kafka]`): JSON records of requests, per-second summaries and
//! events, handed to the Kafka producer task (`crate::analytics::kafka`, above this layer)
//! through one bounded queue.
//!
//! A push never blocks and never waits for the network: it builds the record (one JSON string
//! and its key) and `try_send`s it; a full queue drops the record and counts it in
//! `lb_analytics_records_total{result="dropped"}`. The producer drains the queue on a timer, so
//! a push never has to wake it (no system call on the request path). Kinds not listed in
//! `records` cost one branch.
//!
//! Every record carries `metric_type` (`request` | `summary` | `event`), `ts` (RFC 3339 with
//! milliseconds) and `ts_ms` (Unix milliseconds). Its Kafka key is `upstream/backend`, so a
//! backend's records stay in one partition; records without a backend are keyed by their
//! upstream, or `lb` for process events and answers given before routing.

use std::fmt::Write as _;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;

use super::access_log::{json_str, push_rfc3339, request_fields, Entry};
use crate::config::KafkaConfig;

/// The key of records that belong to no upstream.
pub const PROCESS_KEY: &str = "lb";
/// How long lb, exiting, waits for the broker to take the records still queued.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends what is queued and waits up to the given time; returns the records left unsent.
pub type Flush = Box<dyn Fn(Duration) -> u64 + Send + Sync>;

/// One Kafka message: key and JSON value, in one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    text: String,
    key_len: usize,
}

impl Record {
    /// `upstream/backend`, `upstream` or `lb`.
    pub fn key(&self) -> &str {
        &self.text[..self.key_len]
    }

    /// The JSON object.
    pub fn value(&self) -> &str {
        &self.text[self.key_len..]
    }

    /// Starts a record keyed by `upstream` and `backend` (either may be empty); its value comes
    /// next: `{"metric_type":"…","ts":"…","ts_ms":…` (the object is left open).
    fn start(
        upstream: &str,
        backend: &str,
        metric_type: &str,
        ts_ms: u64,
        capacity: usize,
    ) -> Record {
        let mut text = String::with_capacity(upstream.len() + backend.len() + capacity);
        match (upstream, backend) {
            ("", _) => text.push_str(PROCESS_KEY),
            (u, "") => text.push_str(u),
            (u, b) => {
                text.push_str(u);
                text.push('/');
                text.push_str(b);
            }
        }
        let key_len = text.len();
        text.push_str("{\"metric_type\":\"");
        text.push_str(metric_type);
        text.push_str("\",\"ts\":\"");
        push_rfc3339(&mut text, UNIX_EPOCH + Duration::from_millis(ts_ms));
        let _ = write!(text, "\",\"ts_ms\":{ts_ms}");
        Record { text, key_len }
    }
}

/// One backend's second, as the per-second history samples it (`metric_type = "summary"`).
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRecord {
    /// The start of the second, Unix milliseconds.
    pub ts_ms: u64,
    pub upstream: String,
    pub backend: String,
    pub requests: u64,
    pub errors_4xx: u64,
    pub errors_5xx: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub in_flight: u64,
    /// The backend's state at the end of the second (`up`, `down`, …).
    pub state: String,
}

/// The request path's end of the stream (in `Shared::stream` when `[analytics.kafka]` is set).
pub struct Stream {
    pub config: KafkaConfig,
    tx: SyncSender<Record>,
    /// Taken once by the producer task.
    rx: Mutex<Option<Receiver<Record>>>,
    /// `lb_analytics_records_total{result="sent"}`: acknowledged as `acks` says.
    pub sent: IntCounter,
    /// `lb_analytics_records_total{result="dropped"}`: queue full, or the broker never took it.
    pub dropped: IntCounter,
    /// Set by the producer task once it runs.
    flush: OnceLock<Flush>,
}

impl Stream {
    /// A stream whose queue holds `config.queue` records; `sent` and `dropped` are the two
    /// series of `lb_analytics_records_total`.
    pub fn new(config: KafkaConfig, sent: IntCounter, dropped: IntCounter) -> Stream {
        let (tx, rx) = sync_channel(config.queue.max(1));
        Stream {
            config,
            tx,
            rx: Mutex::new(Some(rx)),
            sent,
            dropped,
            flush: OnceLock::new(),
        }
    }

    /// The producer task's way to send everything queued (see [`flush`](Self::flush)).
    pub fn set_flush(&self, f: Flush) {
        let _ = self.flush.set(f);
    }

    /// Sends what is still queued, waiting up to `timeout` for the broker to take it (lb calls
    /// this as it exits). Returns how many records were left unsent; `None` when no producer
    /// runs.
    pub fn flush(&self, timeout: Duration) -> Option<u64> {
        self.flush.get().map(|f| f(timeout))
    }

    /// The queue's receiving end, for the one producer task (`None` once taken).
    pub fn take_receiver(&self) -> Option<Receiver<Record>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// One finished request (when `request` records are on).
    pub fn request(&self, e: &Entry) {
        if self.config.request_records {
            self.push(request_record(e, SystemTime::now()));
        }
    }

    /// A state change, reload or ejection (when `event` records are on). `upstream` and
    /// `backend` are set when the event is about one.
    pub fn event(&self, kind: &str, message: &str, upstream: Option<&str>, backend: Option<&str>) {
        if self.config.event_records {
            let now = SystemTime::now();
            self.push(event_record(kind, message, upstream, backend, now));
        }
    }

    /// One backend's second of history (when `summary` records are on).
    pub fn summary(&self, s: &SummaryRecord) {
        if self.config.summary_records {
            self.push(summary_record(s));
        }
    }

    fn push(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            // Disconnected: the producer task is gone (shutting down); the record is lost too.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// `,"name":"value"`
fn field_str(s: &mut String, name: &str, v: &str) {
    s.push_str(",\"");
    s.push_str(name);
    s.push_str("\":");
    json_str(s, v);
}

/// A `request` record: method, path, status, upstream, backend, attempts, duration_ms,
/// bytes_in, bytes_out, protocol (and grpc_status for gRPC calls).
pub fn request_record(e: &Entry, now: SystemTime) -> Record {
    let mut r = Record::start(e.upstream, e.backend, "request", unix_ms(now), 320);
    request_fields(&mut r.text, e);
    r.text.push('}');
    r
}

/// An `event` record: kind, message, and upstream/backend when the event is about one.
pub fn event_record(
    kind: &str,
    message: &str,
    upstream: Option<&str>,
    backend: Option<&str>,
    now: SystemTime,
) -> Record {
    let (u, b) = (upstream.unwrap_or(""), backend.unwrap_or(""));
    let mut r = Record::start(u, b, "event", unix_ms(now), 160 + message.len());
    let s = &mut r.text;
    field_str(s, "kind", kind);
    field_str(s, "message", message);
    if let Some(u) = upstream {
        field_str(s, "upstream", u);
    }
    if let Some(b) = backend {
        field_str(s, "backend", b);
    }
    s.push('}');
    r
}

/// A `summary` record: the fields of [`SummaryRecord`]; percentiles are `null` for a second
/// without samples.
pub fn summary_record(r: &SummaryRecord) -> Record {
    let mut rec = Record::start(&r.upstream, &r.backend, "summary", r.ts_ms, 320);
    let s = &mut rec.text;
    field_str(s, "upstream", &r.upstream);
    field_str(s, "backend", &r.backend);
    let _ = write!(
        s,
        ",\"requests\":{},\"errors_4xx\":{},\"errors_5xx\":{}",
        r.requests, r.errors_4xx, r.errors_5xx
    );
    for (name, v) in [
        ("p50_ms", r.p50_ms),
        ("p90_ms", r.p90_ms),
        ("p99_ms", r.p99_ms),
    ] {
        match v.filter(|v| v.is_finite()) {
            Some(v) => write!(s, ",\"{name}\":{v:.3}"),
            None => write!(s, ",\"{name}\":null"),
        }
        .unwrap_or_default();
    }
    let _ = write!(s, ",\"in_flight\":{}", r.in_flight);
    field_str(s, "state", &r.state);
    s.push('}');
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KafkaAcks, KafkaCompression};
    use serde_json::Value;

    fn config(queue: usize, request: bool, summary: bool, event: bool) -> KafkaConfig {
        KafkaConfig {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: "load_metrics".into(),
            request_records: request,
            summary_records: summary,
            event_records: event,
            compression: KafkaCompression::Lz4,
            acks: KafkaAcks::Leader,
            queue,
            linger: Duration::from_millis(5),
        }
    }

    fn stream(c: KafkaConfig) -> Stream {
        let v = prometheus::IntCounterVec::new(prometheus::Opts::new("x", "x"), &["result"]);
        let v = v.unwrap();
        Stream::new(
            c,
            v.with_label_values(&["sent"]),
            v.with_label_values(&["dropped"]),
        )
    }

    fn entry() -> Entry<'static> {
        Entry {
            client: None,
            method: "GET",
            path: "/a?\"b\"",
            status: 200,
            upstream: "api",
            backend: "127.0.0.1:9001",
            attempts: 2,
            duration: Duration::from_micros(1250),
            bytes_in: 3,
            bytes_out: 22,
            protocol: "http1",
            grpc_status: None,
        }
    }

    fn json(r: &Record) -> Value {
        serde_json::from_str(r.value()).unwrap()
    }

    #[test]
    fn request_record_fields_and_key() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_820_905_123);
        let r = request_record(&entry(), t);
        assert_eq!(r.key(), "api/127.0.0.1:9001");
        let v = json(&r);
        assert_eq!(v["metric_type"], "request");
        assert_eq!(v["ts"], "2026-11-27T23:08:25.123Z");
        assert_eq!(v["ts_ms"], 1_795_820_905_123u64);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a?\"b\"");
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream"], "api");
        assert_eq!(v["backend"], "127.0.0.1:9001");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["duration_ms"], 1.25);
        assert_eq!(
            (v["bytes_in"].as_u64(), v["bytes_out"].as_u64()),
            (Some(3), Some(22))
        );
        assert_eq!(v["protocol"], "http1");
        assert!(v.get("grpc_status").is_none());
        let own = Entry {
            upstream: "",
            backend: "",
            status: 404,
            ..entry()
        };
        assert_eq!(request_record(&own, t).key(), "lb");
    }

    #[test]
    fn event_record_fields_and_keys() {
        let t = UNIX_EPOCH;
        let r = event_record("backend", "api/b: up → down", Some("api"), Some("b"), t);
        assert_eq!(r.key(), "api/b");
        let v = json(&r);
        assert_eq!(
            (&v["metric_type"], &v["kind"], &v["message"]),
            (
                &"event".into(),
                &"backend".into(),
                &"api/b: up → down".into()
            )
        );
        assert_eq!(
            (&v["upstream"], &v["backend"]),
            (&"api".into(), &"b".into())
        );
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        let up = event_record("upstream", "api: no usable backend", Some("api"), None, t);
        assert_eq!(up.key(), "api");
        assert!(json(&up).get("backend").is_none());
        let reload = event_record("reload", "config reloaded", None, None, t);
        assert_eq!(reload.key(), "lb");
        assert!(json(&reload).get("upstream").is_none());
    }

    #[test]
    fn summary_record_fields() {
        let s = SummaryRecord {
            ts_ms: 1_000,
            upstream: "api".into(),
            backend: "127.0.0.1:9001".into(),
            requests: 120,
            errors_4xx: 2,
            errors_5xx: 1,
            p50_ms: Some(1.5),
            p90_ms: Some(4.0),
            p99_ms: None,
            in_flight: 3,
            state: "up".into(),
        };
        let r = summary_record(&s);
        assert_eq!(r.key(), "api/127.0.0.1:9001");
        let v = json(&r);
        assert_eq!(v["metric_type"], "summary");
        assert_eq!(
            (v["ts"].as_str(), v["ts_ms"].as_u64()),
            (Some("1970-01-01T00:00:01.000Z"), Some(1000))
        );
        assert_eq!(
            (
                v["requests"].as_u64(),
                v["errors_4xx"].as_u64(),
                v["errors_5xx"].as_u64()
            ),
            (Some(120), Some(2), Some(1))
        );
        assert_eq!(
            (v["p50_ms"].as_f64(), v["p90_ms"].as_f64()),
            (Some(1.5), Some(4.0))
        );
        assert!(v["p99_ms"].is_null());
        assert_eq!(
            (v["in_flight"].as_u64(), v["state"].as_str()),
            (Some(3), Some("up"))
        );
    }

    /// `StructField("name", Type())` pairs of the example Spark job's `SCHEMA`, read as text
    /// (pyspark does not run in the tests).
    fn spark_schema() -> std::collections::BTreeMap<String, String> {
        let py = include_str!("../../examples/analytics/spark_job.py");
        py.split("StructField(\"")
            .skip(1)
            .map(|rest| {
                let (name, rest) = rest.split_once('"').unwrap();
                let ty = rest.trim_start_matches([',', ' ']);
                let ty = &ty[..ty.find("Type()").unwrap()];
                (name.to_string(), ty.to_string())
            })
            .collect()
    }

    #[test]
    fn the_spark_example_schema_covers_every_record_field() {
        // Issue 28, item 4: grpc_status was missing. Every field of every record kind lb
        // makes (a gRPC request's included) is in the schema with a matching type.
        let schema = spark_schema();
        let t = UNIX_EPOCH + Duration::from_millis(1_795_820_905_123);
        let grpc = Entry {
            grpc_status: Some(14),
            protocol: "http2",
            ..entry()
        };
        let summary = SummaryRecord {
            ts_ms: 1_000,
            upstream: "api".into(),
            backend: "b".into(),
            requests: 3,
            errors_4xx: 0,
            errors_5xx: 1,
            p50_ms: Some(1.5),
            p90_ms: Some(2.0),
            p99_ms: Some(2.5),
            in_flight: 0,
            state: "up".into(),
        };
        let records = [
            request_record(&grpc, t),
            summary_record(&summary),
            event_record("backend", "m", Some("api"), Some("b"), t),
        ];
        for r in &records {
            let v = json(r);
            for (name, value) in v.as_object().unwrap() {
                let ty = schema
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} missing from spark_job.py's SCHEMA"));
                let want = match value {
                    Value::String(_) => "String",
                    Value::Number(n) if n.is_f64() => "Double",
                    Value::Number(_) => "Long",
                    Value::Null => continue,
                    other => panic!("{name}: {other}"),
                };
                assert_eq!(ty, want, "{name} in {}", r.value());
            }
        }
        assert!(schema.contains_key("grpc_status"));
    }

    #[test]
    fn summary_push_reaches_the_queue() {
        let st = stream(config(8, false, true, false));
        let rx = st.take_receiver().unwrap();
        assert!(st.take_receiver().is_none());
        let s = SummaryRecord {
            ts_ms: 5,
            upstream: "api".into(),
            backend: "b".into(),
            requests: 1,
            errors_4xx: 0,
            errors_5xx: 0,
            p50_ms: Some(1.0),
            p90_ms: Some(1.0),
            p99_ms: Some(1.0),
            in_flight: 0,
            state: "up".into(),
        };
        st.summary(&s);
        let got = rx.try_recv().unwrap();
        assert_eq!(got, summary_record(&s));
        assert_eq!(st.dropped.get(), 0);
    }

    #[test]
    fn disabled_kinds_push_nothing() {
        let st = stream(config(8, false, false, true));
        let rx = st.take_receiver().unwrap();
        st.request(&entry());
        assert!(rx.try_recv().is_err());
        st.event("reload", "x", None, None);
        assert_eq!(json(&rx.try_recv().unwrap())["kind"], "reload");
        assert_eq!(st.dropped.get(), 0);
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let st = stream(config(3, true, false, false));
        let rx = st.take_receiver().unwrap();
        for _ in 0..10 {
            st.request(&entry());
        }
        assert_eq!(st.dropped.get(), 7);
        assert_eq!(rx.try_iter().count(), 3);
        // Room again once drained.
        st.request(&entry());
        assert_eq!((st.dropped.get(), rx.try_iter().count()), (7, 1));
        drop(rx);
        st.request(&entry());
        assert_eq!(st.dropped.get(), 8);
    }
}
