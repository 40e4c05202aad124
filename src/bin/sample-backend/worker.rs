//! Worker mode (`--kafka-brokers LIST --kafka-topic T`): besides serving HTTP, the backend
//! consumes the topic an lb `kafka` route produces to and does the work of `POST /loadTest` on
//! each record (the body must be JSON; FNV-1a 64 of it; `--delay` per record), so that a demo
//! runs HTTP → lb → Kafka → workers end to end. `GET /worker` reports what it consumed.
//!
//! It reads every partition from the start with librdkafka's `assign` (no consumer group: tansu,
//! the test broker, does not complete a group join), on a thread of its own.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// What the worker consumed (all zero without worker mode).
#[derive(Default)]
pub struct Consumed {
    pub topic: std::sync::OnceLock<String>,
    /// Records whose body is JSON (the `/loadTest` work done).
    pub records: AtomicU64,
    /// Records whose body is not JSON (`/loadTest` would answer 400).
    pub invalid: AtomicU64,
    /// Bytes of the records' bodies, both kinds.
    pub bytes: AtomicU64,
    /// XOR of the FNV-1a 64 of every JSON body: the same whatever the order.
    pub checksum: AtomicU64,
}

impl Consumed {
    /// The `GET /worker` answer.
    pub fn json(&self, name_json: &str) -> String {
        let topic = serde_json::Value::from(self.topic.get().map_or("", String::as_str));
        format!(
            r#"{{"backend":{name_json},"topic":{topic},"records":{},"invalid":{},"bytes":{},"checksum":"{:016x}"}}"#,
            self.records.load(Relaxed),
            self.invalid.load(Relaxed),
            self.bytes.load(Relaxed),
            self.checksum.load(Relaxed),
        )
    }

    fn work(&self, body: &[u8], delay: Duration) {
        self.bytes.fetch_add(body.len() as u64, Relaxed);
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            self.invalid.fetch_add(1, Relaxed);
            return;
        }
        self.checksum
            .fetch_xor(lb::util::hash::fnv1a64(body), Relaxed);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        self.records.fetch_add(1, Relaxed);
    }
}

/// Starts the worker thread.
pub fn spawn(brokers: String, topic: String, delay: Duration, consumed: Arc<Consumed>) {
    let _ = consumed.topic.set(topic.clone());
    let run = move || {
        if let Err(e) = run(&brokers, &topic, delay, &consumed) {
            eprintln!("sample-backend: kafka worker: {e}");
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("kafka-worker".into())
        .spawn(run)
    {
        eprintln!("sample-backend: kafka worker: {e}");
    }
}

fn run(
    brokers: &str,
    topic: &str,
    delay: Duration,
    consumed: &Consumed,
) -> Result<(), rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "sample-backend")
        .set("enable.auto.commit", "false")
        .create()?;
    // The topic may not exist yet: wait until it has partitions.
    let partitions = loop {
        let n = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(2))
            .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
            .unwrap_or(0);
        if n > 0 {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut list = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        list.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&list)?;
    // stderr: a test harness may have stopped reading stdout after the listening line.
    eprintln!("sample-backend: kafka worker reading {topic} ({partitions} partitions)");
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => consumed.work(m.payload().unwrap_or_default(), delay),
            Some(Err(e)) => eprintln!("sample-backend: kafka worker: {e}"),
            None => {}
        }
    }
}
