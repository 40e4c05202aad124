//! The serde structs of `[analytics]` and `[analytics.kafka]`, as written in the file;
//! [`super::check`] turns them into [`super::AnalyticsConfig`].

use serde::Deserialize;

/// `[analytics]`: the per-second history and the Kafka stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsFile {
    pub history: Option<String>,
    pub history_max_memory: Option<toml::Value>,
    pub kafka: Option<KafkaFile>,
}

/// `[analytics.kafka]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaFile {
    #[serde(default)]
    pub brokers: Vec<String>,
    pub topic: Option<String>,
    pub records: Option<Vec<String>>,
    pub compression: Option<String>,
    pub acks: Option<String>,
    pub queue: Option<i64>,
    pub linger: Option<String>,
}
