//! The runtime form of `routes[i].kafka` (async routes, HTTP → Kafka): where a route's request
//! bodies are produced, with which key and record headers, and how long lb waits for the broker's
//! acknowledgement before it answers.
//!
//! The file structs (serde, as written) are in `file`, the checks that turn them into these
//! types in `check`, on the shared machinery of `config::validate`.

use std::time::Duration;

mod check;
pub(in crate::config) mod file;

use super::KafkaAcks;

/// Default `timeout`: how long lb waits for the broker's acknowledgement (then 503).
pub const DEFAULT_KAFKA_ROUTE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `max_bytes`: a larger body is refused with 413 (Kafka's own default
/// `message.max.bytes` is about 1 MiB).
pub const DEFAULT_KAFKA_ROUTE_MAX_BYTES: u64 = 1 << 20;
/// Largest `max_bytes` accepted (librdkafka's `message.max.bytes` of route producers).
pub const MAX_KAFKA_ROUTE_BYTES: u64 = 64 << 20;
/// Default `acks`: a 202 promises a durable record.
pub const DEFAULT_KAFKA_ROUTE_ACKS: KafkaAcks = KafkaAcks::All;

/// `routes[i].kafka`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRoute {
    pub topic: String,
    /// The bootstrap brokers (the route's own, else `[analytics.kafka].brokers`).
    pub brokers: Vec<String>,
    pub key: KafkaKey,
    /// Request headers copied as record headers (lower-case), besides `content-type`.
    pub headers: Vec<http::HeaderName>,
    /// `leader` or `all` (`none` would answer 202 for records that can be lost).
    pub acks: KafkaAcks,
    /// The longest wait for the acknowledgement (librdkafka's `message.timeout.ms` too).
    pub timeout: Duration,
    pub max_bytes: u64,
    /// The methods the route takes (others: 405 with `Allow`); default `POST`.
    pub methods: Vec<http::Method>,
}

impl KafkaRoute {
    /// What makes two routes share a producer: the broker set, `acks` and `timeout`.
    pub fn producer_key(&self) -> (String, KafkaAcks, Duration) {
        (self.brokers.join(","), self.acks, self.timeout)
    }
}

/// `routes[i].kafka.key`: where a record's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaKey {
    /// `"none"`: keyless records (spread over the partitions).
    None,
    /// `"header:NAME"`: the request header's value (keyless when absent).
    Header(http::HeaderName),
    /// `"path:N"`: the path's N-th segment, from 1 (`/orders/42` → `path:2` = `42`; keyless when
    /// the path has fewer).
    PathSegment(usize),
}

impl KafkaKey {
    /// The key of a request with `path` and `headers`.
    pub fn of<'a>(&self, path: &'a str, headers: &'a http::HeaderMap) -> Option<&'a [u8]> {
        match self {
            KafkaKey::None => None,
            KafkaKey::Header(h) => headers.get(h).map(|v| v.as_bytes()),
            KafkaKey::PathSegment(n) => path
                .split('/')
                .filter(|s| !s.is_empty())
                .nth(n - 1)
                .map(str::as_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_a_header_or_a_path_segment() {
        let mut h = http::HeaderMap::new();
        h.insert("x-key", "k1".parse().unwrap());
        let header = KafkaKey::Header(http::HeaderName::from_static("x-key"));
        assert_eq!(header.of("/a", &h), Some(&b"k1"[..]));
        let other = KafkaKey::Header(http::HeaderName::from_static("x-other"));
        assert_eq!(other.of("/a", &h), None);
        assert_eq!(
            KafkaKey::PathSegment(2).of("/orders/42/x", &h),
            Some(&b"42"[..])
        );
        assert_eq!(KafkaKey::PathSegment(3).of("/orders/42", &h), None);
        assert_eq!(
            KafkaKey::PathSegment(1).of("//orders", &h),
            Some(&b"orders"[..])
        );
        assert_eq!(KafkaKey::None.of("/orders", &h), None);
    }
}
