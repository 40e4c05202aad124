//! The serde struct of a route's `kafka` table, as written in the file; [`super::check`] turns it
//! into [`super::KafkaRoute`].

use serde::Deserialize;

/// `routes[i].kafka`: the route produces its requests' bodies to a Kafka topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaRouteFile {
    pub topic: Option<String>,
    pub brokers: Option<Vec<String>>,
    pub key: Option<String>,
    pub headers: Option<Vec<String>>,
    pub acks: Option<String>,
    pub timeout: Option<String>,
    pub max_bytes: Option<i64>,
    pub methods: Option<Vec<String>>,
}
