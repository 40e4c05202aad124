//! Validation of `[analytics]` (history) and `[analytics.kafka]` (the stream), each problem
//! reported with its key path.

use toml::Value;

use super::file::*;
use crate::config::validate::{join, Checker};
use crate::config::*;

impl Checker {
    /// A Kafka broker list (`[analytics.kafka]`, `routes[i].kafka`): at least one `host:port`.
    pub(in crate::config) fn brokers(&mut self, path: &str, brokers: &[String]) {
        if brokers.is_empty() {
            self.problem(path, "must list at least one broker (\"host:port\")");
        }
        for (i, b) in brokers.iter().enumerate() {
            let ok = b.rsplit_once(':').is_some_and(|(h, p)| {
                !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                self.problem(
                    format!("{path}[{i}]"),
                    format!("{b:?} is not host:port (e.g. \"127.0.0.1:9092\")"),
                );
            }
        }
    }

    /// A topic name Kafka accepts.
    pub(in crate::config) fn topic(&mut self, path: &str, topic: &str) {
        let legal = !topic.is_empty()
            && topic.len() <= 249
            && topic != "."
            && topic != ".."
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !legal {
            self.problem(
                path,
                format!(
                    "{topic:?} is not a topic name Kafka accepts (1 to 249 of [a-zA-Z0-9._-], \
                     not \".\" or \"..\")"
                ),
            );
        }
    }

    pub(in crate::config) fn analytics(&mut self, a: AnalyticsFile) -> AnalyticsConfig {
        let d = AnalyticsConfig::default();
        let history = self.duration("analytics.history", a.history.as_deref(), d.history, true);
        let history_max_memory = match &a.history_max_memory {
            None => d.history_max_memory,
            Some(v) => match parse_size(v) {
                Some(n) if n >= 1 << 20 => n,
                Some(_) => {
                    self.problem("analytics.history_max_memory", "must be at least 1MiB");
                    d.history_max_memory
                }
                None => {
                    self.problem(
                        "analytics.history_max_memory",
                        format!("expected a size like \"64MiB\" or a number of bytes, got {v}"),
                    );
                    d.history_max_memory
                }
            },
        };
        let kafka = a.kafka.and_then(|k| self.kafka(k));
        AnalyticsConfig {
            history,
            history_max_memory,
            kafka,
        }
    }

    fn kafka(&mut self, k: KafkaFile) -> Option<KafkaConfig> {
        let path = "analytics.kafka";
        let before = self.problems.len();
        self.brokers(&join(path, "brokers"), &k.brokers);
        let topic = k.topic.unwrap_or_else(|| DEFAULT_KAFKA_TOPIC.to_string());
        self.topic(&join(path, "topic"), &topic);
        let records = k
            .records
            .unwrap_or_else(|| vec!["summary".to_string(), "event".to_string()]);
        let (mut request, mut summary, mut event) = (false, false, false);
        if records.is_empty() {
            self.problem(join(path, "records"), "must list at least one record kind");
        }
        for (i, r) in records.iter().enumerate() {
            match r.as_str() {
                "request" => request = true,
                "summary" => summary = true,
                "event" => event = true,
                other => self.problem(
                    format!("{path}.records[{i}]"),
                    format!(
                        "unknown record kind {other:?} (expected \"request\", \"summary\" or \"event\")"
                    ),
                ),
            }
        }
        let compression = k.compression.as_deref();
        let compression = self.choice(
            join(path, "compression"),
            compression,
            KafkaCompression::Lz4,
            |other| {
                let names = KafkaCompression::names();
                format!("unknown compression {other:?} (expected {names})")
            },
        );
        let acks = self.choice(
            join(path, "acks"),
            k.acks.as_deref(),
            KafkaAcks::Leader,
            |n| format!("unknown acks {n:?} (expected {})", KafkaAcks::names()),
        );
        let queue = self.int(
            &join(path, "queue"),
            k.queue,
            1,
            100_000_000,
            DEFAULT_KAFKA_QUEUE as i64,
        ) as usize;
        let linger_path = join(path, "linger");
        let linger = self.duration(
            &linger_path,
            k.linger.as_deref(),
            DEFAULT_KAFKA_LINGER,
            true,
        );
        if linger > MAX_KAFKA_LINGER {
            self.problem(
                linger_path,
                format!(
                    "at most {}s (records must be sent before they time out)",
                    MAX_KAFKA_LINGER.as_secs()
                ),
            );
        }
        (self.problems.len() == before).then_some(KafkaConfig {
            brokers: k.brokers,
            topic,
            request_records: request,
            summary_records: summary,
            event_records: event,
            compression,
            acks,
            queue,
            linger,
        })
    }
}

/// `"64MiB"`, `"512KiB"`, `"1GiB"`, `"1000000"` or an integer: bytes.
fn parse_size(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(n) => u64::try_from(*n).ok(),
        Value::String(s) => {
            let s = s.trim();
            let (num, mult) = [
                ("GiB", 1u64 << 30),
                ("MiB", 1 << 20),
                ("KiB", 1 << 10),
                ("B", 1),
            ]
            .iter()
            .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n.trim(), *m)))
            .unwrap_or((s, 1));
            num.parse::<u64>().ok()?.checked_mul(mult)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn problems(body: &str) -> Vec<String> {
        let text = format!("[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.a]\nbackends = [\"127.0.0.1:2\"]\n{body}");
        match parse(&text) {
            Ok(_) => panic!("accepted:\n{body}"),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn analytics_defaults_and_values() {
        let c = parse("[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.a]\nbackends = [\"127.0.0.1:2\"]\n[analytics]\nhistory = \"10m\"\nhistory_max_memory = \"8MiB\"\n[analytics.kafka]\nbrokers = [\"127.0.0.1:9092\"]\nrecords = [\"request\", \"event\"]\ncompression = \"zstd\"\nacks = \"all\"\nqueue = 10\nlinger = \"20ms\"\n").unwrap();
        let a = &c.analytics;
        assert_eq!(a.history, Duration::from_secs(600));
        assert_eq!(a.history_max_memory, 8 << 20);
        let k = a.kafka.as_ref().unwrap();
        assert_eq!(k.topic, "load_metrics");
        assert!(k.request_records && !k.summary_records && k.event_records);
        assert_eq!(
            (k.compression, k.acks, k.queue),
            (KafkaCompression::Zstd, KafkaAcks::All, 10)
        );
        assert_eq!(k.linger, Duration::from_millis(20));
        let d = parse(
            "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.a]\nbackends = [\"127.0.0.1:2\"]\n",
        )
        .unwrap();
        assert_eq!(d.analytics, AnalyticsConfig::default());
    }

    #[test]
    fn every_bad_value_named() {
        let p = problems("[analytics]\nhistory = \"-5s\"\nhistory_max_memory = \"lots\"\n[analytics.kafka]\nbrokers = [\"localhost\", \"kafka:x\"]\ntopic = \"bad topic!\"\nrecords = [\"request\", \"metrics\"]\ncompression = \"brotli\"\nacks = \"some\"\nqueue = 0\nlinger = \"6s\"\n");
        for want in [
            "analytics.history:",
            "analytics.history_max_memory: expected a size",
            "analytics.kafka.brokers[0]: \"localhost\" is not host:port",
            "analytics.kafka.brokers[1]: \"kafka:x\" is not host:port",
            "analytics.kafka.topic: \"bad topic!\" is not a topic name",
            "analytics.kafka.records[1]: unknown record kind \"metrics\"",
            "analytics.kafka.compression: unknown compression \"brotli\"",
            "analytics.kafka.acks: unknown acks \"some\"",
            "analytics.kafka.queue: must be at least 1",
            "analytics.kafka.linger: at most 5s",
        ] {
            assert!(
                p.iter().any(|x| x.contains(want)),
                "missing {want:?} in {p:#?}"
            );
        }
        let p = problems("[analytics.kafka]\nbrokers = []\nrecords = []\nlinger = \"soon\"\n");
        assert!(
            p.iter().any(|x| x.starts_with("analytics.kafka.linger:")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|x| x.contains("analytics.kafka.brokers: must list")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|x| x.contains("analytics.kafka.records: must list")),
            "{p:#?}"
        );
    }
}
