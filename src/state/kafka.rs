//! The Kafka producers of `kafka` routes (async routes, HTTP → Kafka): one librdkafka
//! `FutureProducer` per distinct broker set, `acks` and `timeout`, shared by every route with the
//! same three and kept across reloads (a reload naming a new set makes a new producer; one no
//! route names any more stays idle until lb exits).
//!
//! - `message.timeout.ms` is the route's `timeout`: librdkafka gives a record up when lb stops
//!   waiting for it, so a record lb answered 503 for is not delivered later by a retry.
//! - Not idempotent, also with `acks = "all"`: an idempotent producer cannot write again to a
//!   broker that restarted without its state (seen with tansu, see [`crate::analytics`]); a
//!   batch resent after a lost acknowledgement may be written twice (at least once).
//! - Keys are partitioned as Java clients do (`murmur2_random`), as `[analytics.kafka]` does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use crate::config::kafka_route::{KafkaRoute, MAX_KAFKA_ROUTE_BYTES};
use crate::config::KafkaAcks;
use crate::util::time::process_ms;

/// A route producer.
pub type RouteProducer = FutureProducer<Logging>;

/// librdkafka's queue (`queue.buffering.max.messages`): a record that finds it full is refused
/// at once (503), never waited for.
pub const QUEUE: usize = 100_000;
/// `reconnect.backoff.max.ms`: a returning broker is found within about this.
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";
/// `linger.ms`: how long a record waits for others to share its batch. Every request waits for
/// its acknowledgement, so this adds to each 202's latency; records that arrive while a batch is
/// in flight are batched anyway (librdkafka's default is 5 ms).
const LINGER_MS: &str = "1";
/// At most one librdkafka warning logged per this.
const WARN_EVERY_MS: u64 = 10_000;
/// `message.max.bytes`: above the largest `max_bytes`, for the record's key and headers (the
/// broker's own limit still applies: a record it refuses as too large is a 413).
const MESSAGE_MAX_BYTES: u64 = MAX_KAFKA_ROUTE_BYTES + (1 << 20);

type Key = (String, KafkaAcks, Duration);

/// The producers by (brokers, acks, timeout). Touched when snapshots are built, never per request.
#[derive(Default)]
pub struct Producers {
    map: Mutex<HashMap<Key, Arc<RouteProducer>>>,
}

impl std::fmt::Debug for Producers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.map.lock().map_or(0, |m| m.len());
        write!(f, "Producers({n})")
    }
}

impl Producers {
    /// The producer for `route`: the existing one for its brokers, acks and timeout, or a new one
    /// (librdkafka checks its settings and starts its threads; it connects in the background).
    pub fn get(&self, route: &KafkaRoute) -> Result<Arc<RouteProducer>, KafkaError> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = route.producer_key();
        if let Some(p) = map.get(&key) {
            return Ok(p.clone());
        }
        let p: Arc<RouteProducer> =
            Arc::new(client_config(route).create_with_context(Logging {
                last_warn_ms: AtomicU64::new(0),
            })?);
        tracing::info!(brokers = key.0, acks = ?key.1, timeout = ?key.2, "kafka routes: producer made");
        map.insert(key, p.clone());
        Ok(p)
    }
}

/// librdkafka's settings for a route's producer.
fn client_config(route: &KafkaRoute) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", route.brokers.join(","))
        .set("client.id", "lb-route")
        .set(
            "acks",
            if route.acks == KafkaAcks::All {
                "all"
            } else {
                "1"
            },
        )
        .set("enable.idempotence", "false")
        .set(
            "message.timeout.ms",
            route.timeout.as_millis().max(1).to_string(),
        )
        .set("queue.buffering.max.messages", QUEUE.to_string())
        .set("message.max.bytes", MESSAGE_MAX_BYTES.to_string())
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .set("linger.ms", LINGER_MS)
        .set("partitioner", "murmur2_random")
        .set_log_level(RDKafkaLogLevel::Warning);
    cfg
}

/// Sends librdkafka's warnings to lb's log, at most one per 10 s (a broker that is
/// away would otherwise log every reconnect).
pub struct Logging {
    last_warn_ms: AtomicU64,
}

impl ClientContext for Logging {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        use RDKafkaLogLevel::*;
        if !matches!(level, Emerg | Alert | Critical | Error | Warning) {
            return tracing::debug!("librdkafka {fac}: {msg}");
        }
        let now = process_ms().max(1);
        let last = self.last_warn_ms.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY_MS;
        if due
            && self
                .last_warn_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::warn!("kafka routes: librdkafka {fac}: {msg}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log(
            RDKafkaLogLevel::Warning,
            "error",
            &format!("{error}: {reason}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::kafka_route::KafkaKey;

    fn route(brokers: &str, acks: KafkaAcks, timeout_ms: u64) -> KafkaRoute {
        KafkaRoute {
            topic: "t".into(),
            brokers: vec![brokers.into()],
            key: KafkaKey::None,
            headers: Vec::new(),
            acks,
            timeout: Duration::from_millis(timeout_ms),
            max_bytes: 10,
            methods: vec![http::Method::POST],
        }
    }

    #[test]
    fn one_producer_per_brokers_acks_and_timeout() {
        let p = Producers::default();
        let a = p.get(&route("127.0.0.1:1", KafkaAcks::All, 500)).unwrap();
        let same = p.get(&route("127.0.0.1:1", KafkaAcks::All, 500)).unwrap();
        assert!(Arc::ptr_eq(&a, &same));
        let leader = p
            .get(&route("127.0.0.1:1", KafkaAcks::Leader, 500))
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &leader));
        let c = client_config(&route("127.0.0.1:1", KafkaAcks::All, 500));
        assert_eq!(
            (c.get("acks"), c.get("message.timeout.ms")),
            (Some("all"), Some("500"))
        );
    }
}
