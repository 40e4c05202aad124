//! The Kafka producer task (`[analytics.kafka]`): drains the record queue of
//! [`crate::observe::stream::Stream`] into librdkafka (the `rdkafka` crate), which batches,
//! compresses, retries and reconnects by itself.
//!
//! - "Sent" is the delivery report librdkafka gives once the broker acknowledged a record as
//!   `acks` asks (`none`: once written to the socket); every other outcome is "dropped": the
//!   queue was full, or librdkafka gave up on the record after [`MESSAGE_TIMEOUT`] (broker away).
//!   Both are counted in `lb_analytics_records_total{result}`.
//! - With `acks = "all"` the producer is idempotent (Kafka allows idempotence with `all` only):
//!   a batch resent after a lost acknowledgement is not written twice. With `leader` or `none` a
//!   resend after a broken connection can duplicate the records of that one batch.
//! - Keys are partitioned as Java clients (and kafka-python) do: librdkafka's `murmur2_random`
//!   partitioner, murmur2 of the key modulo the partition count, not librdkafka's CRC32 default.
//! - Records wait in lb's queue (up to `queue`) while librdkafka's own queue (also `queue`) is
//!   full; a push to a full lb queue drops the record. The request path never waits.
//! - An unreachable broker is logged (a warning at start, then at most one line per
//!   [`WARN_EVERY`]); librdkafka reconnects by itself with backoff.
//! - A fatal producer error, or records of the idempotent producer timing out, make a new
//!   producer (at most once per [`MESSAGE_TIMEOUT`]); the old one's records are counted as
//!   dropped. Tried against a broker that restarted with nothing of its state (tansu, memory
//!   only): librdkafka's idempotent producer reconnected but never got a record through again,
//!   as the broker no longer knew its producer id; a new producer gets a new one.
//! - When lb exits, [`Stream::flush`] moves what is still queued into librdkafka and waits up to
//!   [`crate::observe::stream::FLUSH_TIMEOUT`] plus `linger` for the broker to take it, or
//!   [`FLUSH_STALL`] plus `linger` once no record is sent or dropped (the broker is away: the
//!   exit is not held up for nothing). librdkafka still lets each record wait out `linger`:
//!   rdkafka's `flush` asks it to send at once only for an instant.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};

use crate::config::{KafkaAcks, KafkaConfig, Named};
use crate::observe::stream::{Record, Stream};
use crate::util::time::process_ms;

/// How often the queue is drained (a push never wakes the task).
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// librdkafka's `message.timeout.ms`: a record not acknowledged within this is dropped.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// librdkafka's `reconnect.backoff.max.ms`: a returning broker is found within about this (its
/// default, 10 s, loses more records after a broker restart).
const RECONNECT_BACKOFF_MAX_MS: &str = "1000";
/// librdkafka's `partitioner`: Java-compatible murmur2 (see [`client_config`]).
pub const PARTITIONER: &str = "murmur2_random";
/// At most this many librdkafka events (one batch's delivery reports each) are served per tick:
/// 6,400 a second, far more batches than a broker acknowledges.
const EVENTS_PER_TICK: usize = 64;
/// The flush at exit waits in steps of this.
const FLUSH_STEP: Duration = Duration::from_millis(100);
/// The flush at exit gives up when no record was sent or dropped for this long (after `linger`).
const FLUSH_STALL: Duration = Duration::from_secs(1);
/// The start-up reachability check's budget.
const START_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// At most one warning per this while the broker stays unreachable.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Polled by the producer task on its own tick (no thread of its own: librdkafka's delivery
/// reports and logs are served between drains, which spares a thread waking per batch).
type Producer = Arc<BaseProducer<Counting>>;

/// What the producer task and the flush at exit share: lb's queue, the producer, and the
/// record librdkafka had no room for yet.
struct Sending {
    rx: Receiver<Record>,
    producer: Producer,
    pending: Option<Record>,
    topic: String,
    /// `linger`: a record may wait this long before librdkafka sends it.
    linger: Duration,
}

/// How a drain ended.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// lb's queue is empty.
    Empty,
    /// librdkafka's queue is full: the record waits in `pending`.
    Full,
    /// The queue's sending side is gone.
    Closed,
}

fn lock(s: &Mutex<Sending>) -> MutexGuard<'_, Sending> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the producer until the queue's sending side is gone (never, in a running lb).
pub async fn run(stream: Arc<Stream>) {
    let Some(rx) = stream.take_receiver() else {
        return;
    };
    let c = &stream.config;
    tracing::info!(brokers = ?c.brokers, topic = c.topic, compression = c.compression.as_str(), acks = ?c.acks, linger = ?c.linger, "analytics: streaming records to Kafka");
    let producer = match make(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(
                "analytics: cannot make a Kafka producer, no records will be sent: {e}"
            );
            return;
        }
    };
    let sending = Arc::new(Mutex::new(Sending {
        rx,
        producer: producer.clone(),
        pending: None,
        topic: c.topic.clone(),
        linger: c.linger,
    }));
    // Before the reachability check, which can take seconds: an exit meanwhile still flushes.
    let flushing = sending.clone();
    stream.set_flush(Box::new(move |timeout| flush(&flushing, timeout)));
    check_reachable(&stream, producer).await;
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut replaced = None;
    loop {
        tick.tick().await;
        // Held by the flush at exit, which sends what is left: nothing to do (and no runtime
        // thread blocked on it).
        let mut s = match sending.try_lock() {
            Ok(s) => s,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => continue,
        };
        let due = replaced.is_none_or(|t: Instant| t.elapsed() >= MESSAGE_TIMEOUT);
        if due && s.producer.context().replace.load(Relaxed) {
            replaced = Some(Instant::now());
            tracing::warn!(
                "analytics: replacing the Kafka producer (failed, or its records time out)"
            );
            match make(&stream) {
                Ok(new) => {
                    let old = std::mem::replace(&mut s.producer, new);
                    // Dropping purges its queue (each purged record is reported, and counted,
                    // as dropped).
                    tokio::task::spawn_blocking(move || drop(old));
                }
                // The old producer goes on (its records still counted as they end), and the
                // replacement is tried again after MESSAGE_TIMEOUT.
                Err(e) => tracing::error!(
                    "analytics: cannot make a Kafka producer, keeping the old one: {e}"
                ),
            }
        }
        let drained = drain(&mut s);
        serve(&s.producer);
        if drained == Drained::Closed {
            return;
        }
    }
}

/// Serves the delivery reports and errors librdkafka has ready, without waiting. One `poll`
/// serves one event (a batch's reports), so it is called until the count of records librdkafka
/// holds stops changing — a report served lowers it — up to [`EVENTS_PER_TICK`] times.
fn serve(producer: &Producer) {
    for _ in 0..EVENTS_PER_TICK {
        let before = producer.in_flight_count();
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == before {
            return;
        }
    }
}

/// Moves what lb still queues into librdkafka and waits, up to `timeout` (plus `linger`, which
/// records may still have to wait out) in all, for the broker to take it. Gives up sooner once
/// no record was sent or dropped for [`FLUSH_STALL`] after `linger` (the broker is away: waiting
/// longer would only delay the exit). Records pushed while it runs (the last requests of a
/// graceful stop, the final history sample) are drained too: it returns only once lb's queue
/// and librdkafka's are both empty, or the budget is spent. Returns how many records were left
/// unsent; those still in lb's queue are also counted as dropped.
fn flush(sending: &Mutex<Sending>, timeout: Duration) -> u64 {
    let mut s = lock(sending);
    let started = Instant::now();
    let deadline = started + timeout + s.linger;
    let stall = FLUSH_STALL + s.linger;
    let done = |s: &Sending| {
        let counted = s.producer.context();
        counted.sent.get() + counted.dropped.get()
    };
    let (mut last, mut since) = (done(&s), started);
    loop {
        let drained = drain(&mut s);
        // Serves the delivery reports while it waits.
        let _ = s.producer.flush(FLUSH_STEP);
        let left = s.producer.in_flight_count().max(0) as u64 + u64::from(s.pending.is_some());
        if left == 0 && drained != Drained::Full {
            // Anything pushed since the drain goes round again; empty: all sent.
            match s.rx.try_recv() {
                Ok(r) => s.pending = Some(r),
                Err(_) => return 0,
            }
            if Instant::now() < deadline {
                continue;
            }
        }
        if done(&s) > last {
            (last, since) = (done(&s), Instant::now());
        }
        if since.elapsed() >= stall || Instant::now() >= deadline {
            let in_librdkafka = s.producer.in_flight_count().max(0) as u64;
            let queued = s.rx.try_iter().count() as u64 + u64::from(s.pending.take().is_some());
            s.producer.context().dropped.inc_by(queued);
            return in_librdkafka + queued;
        }
    }
}

/// Checks, without waiting long, that the brokers answer: an unreachable broker at start is a
/// warning, records queue (and then drop) until it comes.
async fn check_reachable(stream: &Arc<Stream>, producer: Producer) {
    let topic = stream.config.topic.clone();
    let checked = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&topic), START_CHECK_TIMEOUT)
            .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
    })
    .await;
    match checked {
        Ok(Ok(partitions)) => {
            tracing::info!(
                topic = stream.config.topic,
                partitions,
                "analytics: Kafka reachable"
            )
        }
        Ok(Err(e)) => {
            tracing::warn!(brokers = ?stream.config.brokers, "analytics: Kafka not reachable yet ({e}); records are queued and dropped when the queue is full, sending starts when it answers")
        }
        Err(_) => {}
    }
}

/// Moves queued records into librdkafka until lb's queue is empty or librdkafka's is full.
fn drain(s: &mut Sending) -> Drained {
    loop {
        let r = match s.pending.take() {
            Some(r) => r,
            None => match s.rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) => return Drained::Empty,
                Err(TryRecvError::Disconnected) => return Drained::Closed,
            },
        };
        let sent = s
            .producer
            .send(BaseRecord::to(&s.topic).key(r.key()).payload(r.value()))
            .map_err(|(e, _)| e);
        match sent {
            Ok(()) => {}
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                s.pending = Some(r);
                return Drained::Full;
            }
            Err(e) => {
                s.producer.context().dropped.inc();
                s.producer
                    .context()
                    .warn(&format!("record not queued: {e}"));
            }
        }
    }
}

/// librdkafka's settings for `c`.
fn client_config(c: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", c.brokers.join(","))
        .set("client.id", "lb")
        .set("compression.type", c.compression.as_str())
        .set("linger.ms", c.linger.as_millis().to_string())
        .set(
            "message.timeout.ms",
            MESSAGE_TIMEOUT.as_millis().to_string(),
        )
        .set("queue.buffering.max.messages", c.queue.max(1).to_string())
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        // Java clients' partitioner (murmur2 of the key; keyless records spread at random), not
        // librdkafka's default CRC32: a key lands in the partition a Java or kafka-python
        // producer would choose for it.
        .set("partitioner", PARTITIONER)
        .set_log_level(RDKafkaLogLevel::Warning);
    match c.acks {
        KafkaAcks::None => cfg.set("acks", "0"),
        KafkaAcks::Leader => cfg.set("acks", "1"),
        KafkaAcks::All => cfg.set("acks", "all").set("enable.idempotence", "true"),
    };
    cfg
}

fn make(stream: &Arc<Stream>) -> Result<Producer, KafkaError> {
    let context = Counting {
        sent: stream.sent.clone(),
        dropped: stream.dropped.clone(),
        replace: AtomicBool::new(false),
        idempotent: stream.config.acks == KafkaAcks::All,
        last_warn_ms: AtomicU64::new(0),
    };
    client_config(&stream.config)
        .create_with_context(context)
        .map(Arc::new)
}

/// Counts delivery reports and keeps librdkafka's logging to lb's (rate-limited) log.
struct Counting {
    sent: IntCounter,
    dropped: IntCounter,
    /// Set by a fatal error, or a timed-out record of the idempotent producer: the producer
    /// must be replaced.
    replace: AtomicBool,
    idempotent: bool,
    last_warn_ms: AtomicU64,
}

impl Counting {
    /// Logs `msg` as a warning unless one was logged within [`WARN_EVERY`].
    fn warn(&self, msg: &str) {
        let now = process_ms().max(1);
        let last = self.last_warn_ms.load(Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY.as_millis() as u64;
        if due
            && self
                .last_warn_ms
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::warn!("analytics: {msg}");
        }
    }
}

impl ClientContext for Counting {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => self.warn(&format!("librdkafka {fac}: {msg}")),
            _ => tracing::debug!("librdkafka {fac}: {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.replace.store(true, Relaxed);
            tracing::error!("analytics: Kafka producer: {error}: {reason}");
        } else {
            self.warn(&format!("Kafka: {error}: {reason}"));
        }
    }
}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.sent.inc(),
            Err((e, _)) => {
                self.dropped.inc();
                let timed_out = e.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
                if self.idempotent && timed_out {
                    self.replace.store(true, Relaxed);
                }
                self.warn(&format!("record dropped: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KafkaCompression;

    fn config(acks: KafkaAcks) -> KafkaConfig {
        KafkaConfig {
            brokers: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
            topic: "t".into(),
            request_records: true,
            summary_records: false,
            event_records: false,
            compression: KafkaCompression::Zstd,
            acks,
            queue: 50,
            linger: Duration::from_millis(7),
        }
    }

    #[test]
    fn settings_follow_the_config() {
        let c = client_config(&config(KafkaAcks::Leader));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:1,127.0.0.1:2"));
        assert_eq!(c.get("compression.type"), Some("zstd"));
        assert_eq!(c.get("acks"), Some("1"));
        assert_eq!(c.get("enable.idempotence"), None);
        assert_eq!(c.get("queue.buffering.max.messages"), Some("50"));
        // Issue 28, item 5: Java-compatible key partitioning.
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
        let all = client_config(&config(KafkaAcks::All));
        assert_eq!(
            (all.get("acks"), all.get("enable.idempotence")),
            (Some("all"), Some("true"))
        );
        assert_eq!(
            client_config(&config(KafkaAcks::None)).get("acks"),
            Some("0")
        );
    }

    #[test]
    fn every_compression_and_acks_makes_a_producer() {
        // librdkafka checks its settings when the producer is made (no broker needed).
        for comp in [
            KafkaCompression::None,
            KafkaCompression::Gzip,
            KafkaCompression::Snappy,
            KafkaCompression::Lz4,
            KafkaCompression::Zstd,
        ] {
            for acks in [KafkaAcks::None, KafkaAcks::Leader, KafkaAcks::All] {
                let c = KafkaConfig {
                    compression: comp,
                    ..config(acks)
                };
                let v = prometheus::IntCounterVec::new(prometheus::Opts::new("x", "x"), &["r"]);
                let v = v.unwrap();
                let s = Arc::new(Stream::new(
                    c,
                    v.with_label_values(&["s"]),
                    v.with_label_values(&["d"]),
                ));
                assert!(make(&s).is_ok(), "{comp:?} {acks:?}");
            }
        }
    }
}
