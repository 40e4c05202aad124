//! Async routes (`routes[i].kafka`, HTTP → Kafka) against a real broker (tansu) read back with
//! kafka-python: curl's binary POSTs become records byte for byte with their key and chosen
//! headers, and the 202's partition and offset are the record's; 405, 413 (by length and while
//! reading a chunked body); a broker that dies under load gives 503s with `Retry-After` within the
//! route's timeout, never a 202 for a record that is not there; after it returns, the records
//! on it are exactly the 202s answered since.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::kafka::{unhex, Broker};
use crate::support::*;

const TOPIC: &str = "load_test_topic";

/// `lb_kafka_route_requests_total{topic, result}`.
fn route_total(lb: &Lb, topic: &str, result: &str) -> Option<u64> {
    let prefix = format!("lb_kafka_route_requests_total{{result=\"{result}\",topic=\"{topic}\"}} ");
    lb.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().parse().unwrap()))
}

/// curl's answer: (final status, heads and body as curl prints them with `-i`).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The final status line (after any `100 Continue`).
    let status = text
        .lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A body with every byte value (NUL, CR, LF, 0xFF…), distinct per `i`.
fn binary_body(i: usize) -> Vec<u8> {
    let mut b: Vec<u8> = (0..=255u8).collect();
    b.extend_from_slice(format!("\r\n\0record {i}\n").as_bytes());
    b.extend((0..i * 37).map(|n| (n * 7 + i) as u8));
    b
}

fn header_of(record: &serde_json::Value, name: &str) -> Vec<Vec<u8>> {
    record["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| unhex(&h[1]).unwrap())
        .collect()
}

#[test]
fn posted_bodies_become_records_byte_for_byte_with_key_and_headers() {
    let broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let backend = Backend::start("a");
    let bootstrap = broker.bootstrap();
    let lb = Lb::start_with(
        &format!(
            "[upstreams.api]\n{}\n\n\
             [[routes]]\npath_prefix = \"/ingest/\"\nkafka = {{ topic = \"{TOPIC}\", brokers = [\"{bootstrap}\"], key = \"header:x-key\", headers = [\"x-tenant\", \"x-request-id\"] }}\n\n\
             [[routes]]\npath_prefix = \"/orders/\"\nkafka = {{ topic = \"{TOPIC}\", brokers = [\"{bootstrap}\"], key = \"path:2\", max_bytes = 1000, methods = [\"POST\", \"PUT\"], acks = \"leader\" }}\n\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n",
            backends_toml(&[(&backend, 1)])
        ),
        "access_log = \"stdout\"\nh2c = true\nbody_timeout = \"1s\"",
    );
    let dir = temp_dir("kafka-route");
    const N: usize = 20;
    let mut sent: HashMap<Vec<u8>, (usize, serde_json::Value)> = HashMap::new();
    for i in 0..N {
        let file = dir.join(format!("body-{i}"));
        std::fs::write(&file, binary_body(i)).unwrap();
        let (key, tenant) = (format!("k{i}"), format!("t{}", i % 3));
        let (status, text) = curl(&[
            "--data-binary",
            &format!("@{}", file.display()),
            "-H",
            "content-type: application/x-protobuf",
            "-H",
            &format!("x-key: {key}"),
            "-H",
            &format!("x-tenant: {tenant}"),
            "-H",
            "x-not-copied: no",
            &format!("http://{}/ingest/events", lb.addr),
        ]);
        assert_eq!(status, 202, "{text}");
        let json = text.rsplit("\r\n\r\n").next().unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["topic"], TOPIC, "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{text}"
        );
        sent.insert(binary_body(i), (i, v));
    }
    // A path segment as the key, on a route taking PUT too, over HTTP/2 (h2c).
    let (status, text) = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "PUT",
        "--data-binary",
        "order 42",
        &format!("http://{}/orders/42/lines", lb.addr),
    ]);
    assert_eq!(status, 202, "{text}");
    assert!(text.starts_with("HTTP/2 202"), "{text}");

    let records = broker.consume_raw(TOPIC, N + 1, 15);
    assert_eq!(records.len(), N + 1, "records on the topic");
    let mut seen = HashSet::new();
    for r in &records {
        let value = unhex(&r["value"]).unwrap();
        if value == b"order 42" {
            assert_eq!(unhex(&r["key"]).unwrap(), b"42");
            // No content-type was sent (curl's form type aside: --data-binary sends one).
            continue;
        }
        let (i, answer) = sent.get(&value).expect("a record lb was sent");
        assert!(seen.insert(*i), "record {i} twice");
        assert_eq!(unhex(&r["key"]).unwrap(), format!("k{i}").as_bytes());
        assert_eq!(
            header_of(r, "content-type"),
            [b"application/x-protobuf".to_vec()]
        );
        assert_eq!(
            header_of(r, "x-tenant"),
            [format!("t{}", i % 3).into_bytes()]
        );
        assert!(header_of(r, "x-not-copied").is_empty(), "{r}");
        assert!(header_of(r, "user-agent").is_empty(), "{r}");
        // The 202 named the record's place.
        assert_eq!(
            (&answer["partition"], &answer["offset"]),
            (&r["partition"], &r["offset"]),
            "{r}"
        );
    }
    assert_eq!(seen.len(), N);

    // Methods: 405 with Allow. Size: 413 by Content-Length, and while reading a chunked body.
    let (status, text) = curl(&[&format!("http://{}/orders/1", lb.addr)]);
    assert_eq!(status, 405, "{text}");
    assert!(
        text.contains("Allow: POST, PUT") || text.contains("allow: POST, PUT"),
        "{text}"
    );
    let big = dir.join("big");
    std::fs::write(&big, vec![b'x'; 1001]).unwrap();
    let big_arg = format!("@{}", big.display());
    let url = format!("http://{}/orders/1", lb.addr);
    let (status, text) = curl(&["--data-binary", &big_arg, &url]);
    assert_eq!(status, 413, "{text}");
    let (status, text) = curl(&[
        "--data-binary",
        &big_arg,
        "-H",
        "transfer-encoding: chunked",
        &url,
    ]);
    assert_eq!(status, 413, "{text}");
    // Exactly max_bytes is taken; a client that waits for 100 Continue is told to send it.
    std::fs::write(&big, vec![b'x'; 1000]).unwrap();
    let expect = ["-H", "expect: 100-continue", "--expect100-timeout", "5"];
    let started = Instant::now();
    let (status, text) = curl(&[&expect[..], &["--data-binary", &big_arg, &url]].concat());
    assert_eq!(status, 202, "{text}");
    assert!(text.starts_with("HTTP/1.1 100 Continue"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // A body that stalls past server.body_timeout: 408, as for proxied requests.
    let mut raw = std::net::TcpStream::connect(lb.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = "POST /orders/9 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
    std::io::Write::write_all(&mut raw, head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut raw, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Proxied routes are untouched.
    assert_eq!(lb.get("/echo/x").status, 200);

    assert_eq!(route_total(&lb, TOPIC, "accepted"), Some(N as u64 + 2));
    assert_eq!(route_total(&lb, TOPIC, "too_large"), Some(2));
    assert_eq!(route_total(&lb, TOPIC, "refused"), Some(2));
    assert_eq!(route_total(&lb, TOPIC, "unavailable"), Some(0));
    let acks = format!(
        "lb_kafka_route_ack_seconds_count{{topic=\"{TOPIC}\"}} {}",
        N + 2
    );
    assert!(lb.metrics().lines().any(|l| l == acks), "{acks}");
    // And in lb_requests_total, as lb's own answers of an upstream named `kafka:TOPIC`.
    let counted: u64 = lb
        .metrics()
        .lines()
        .filter(|l| {
            l.starts_with("lb_requests_total{backend=\"\",code=\"202\"")
                && l.contains(&format!("upstream=\"kafka:{TOPIC}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, N as u64 + 2, "{}", lb.metrics());
    // The dashboard's numbers.
    let status = lb.status_json();
    let k = &status["kafka_routes"][TOPIC];
    assert_eq!(
        (&k["accepted"], &k["too_large"], &k["refused"], &k["acks"]),
        (
            &(N as u64 + 2).into(),
            &2.into(),
            &2.into(),
            &(N as u64 + 2).into()
        ),
        "{k}"
    );
    assert!(k["ack_seconds_sum"].as_f64().unwrap() > 0.0, "{k}");
    let log = wait_for("access log lines", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(lb.dir.join("stdout.log")).unwrap_or_default();
        (text.matches("kafka:load_test_topic").count() >= N + 6).then_some(text)
    });
    let line = log.lines().find(|l| l.contains("/ingest/events")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["upstream"].as_str()),
        (Some(202), Some("kafka:load_test_topic")),
        "{line}"
    );
}

/// One POST's outcome in the load of [`a_broker_away_is_a_503_never_a_202_and_the_records_are_the_202s`].
struct Sent {
    body: Vec<u8>,
    status: u16,
    retry_after: Option<String>,
    answered: Instant,
    took: Duration,
}

/// `clients` threads POSTing distinct bodies over keep-alive connections until `stop`.
fn post_load(
    lb: &Lb,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Sent>>> {
    (0..clients)
        .map(|c| {
            let (addr, stop) = (lb.addr, stop.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let mut conn: Option<Conn> = None;
                let deadline = Instant::now() + Duration::from_secs(60);
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    let body = format!("client {c} request {i}").into_bytes();
                    let started = Instant::now();
                    let mut c = match conn.take().map_or_else(|| Conn::open(addr), Ok) {
                        Ok(c) => c,
                        Err(_) => continue,
                    };
                    let Ok(r) = c.send(
                        "POST",
                        "/ingest/x",
                        &[("content-type", "text/plain")],
                        &body,
                    ) else {
                        continue;
                    };
                    if r.header("connection") != Some("close") {
                        conn = Some(c);
                    }
                    out.push(Sent {
                        body,
                        status: r.status,
                        retry_after: r.header("retry-after").map(str::to_string),
                        answered: Instant::now(),
                        took: started.elapsed(),
                    });
                }
                out
            })
        })
        .collect()
}

#[test]
fn a_broker_away_is_a_503_never_a_202_and_the_records_are_the_202s() {
    let mut broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    // lb needs an upstream, even when its only route produces to Kafka.
    let lb = Lb::start(&format!(
        "[upstreams.unused]\nbackends = [\"127.0.0.1:1\"]\n\n\
         [[routes]]\npath_prefix = \"/ingest/\"\nkafka = {{ topic = \"{TOPIC}\", brokers = [\"{}\"], timeout = \"1s\" }}\n",
        broker.bootstrap()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let load = post_load(&lb, 4, stop.clone());
    let accepted = |lb: &Lb| route_total(lb, TOPIC, "accepted").unwrap_or(0);
    wait_for("202s before the kill", Duration::from_secs(10), || {
        (accepted(&lb) >= 50).then_some(())
    });
    broker.kill();
    let killed = Instant::now();
    let unavailable = |lb: &Lb| route_total(lb, TOPIC, "unavailable").unwrap_or(0);
    wait_for(
        "503s while the broker is away",
        Duration::from_secs(10),
        || (unavailable(&lb) >= 8).then_some(()),
    );
    let restarted = Instant::now();
    broker.restart();
    broker.create_topic(TOPIC);
    let after = accepted(&lb);
    wait_for(
        "202s after the broker returned",
        Duration::from_secs(20),
        || (accepted(&lb) >= after + 50).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<Sent> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();

    let statuses: HashSet<u16> = sent.iter().map(|s| s.status).collect();
    assert!(
        statuses.is_subset(&HashSet::from([202, 503])),
        "{statuses:?}"
    );
    for s in sent.iter().filter(|s| s.status == 503) {
        assert_eq!(s.retry_after.as_deref(), Some("1"));
        // The route's timeout (1 s) and the second lb gives librdkafka's verdict, no more.
        assert!(
            s.took < Duration::from_millis(3000),
            "a 503 after {:?}",
            s.took
        );
    }
    // While the broker was away (from a timeout after the kill to the restart) nothing was 202.
    let away =
        |s: &&Sent| s.answered > killed + Duration::from_millis(1600) && s.answered < restarted;
    let during: Vec<&Sent> = sent.iter().filter(away).collect();
    assert!(!during.is_empty());
    assert!(
        during.iter().all(|s| s.status == 503),
        "a 202 while the broker was away"
    );

    // The new broker holds exactly the records of the 202s answered since it started.
    let since: HashSet<&[u8]> = sent
        .iter()
        .filter(|s| s.status == 202 && s.answered > restarted)
        .map(|s| s.body.as_slice())
        .collect();
    let records = broker.consume_raw(TOPIC, since.len(), 15);
    let values: Vec<Vec<u8>> = records
        .iter()
        .map(|r| unhex(&r["value"]).unwrap())
        .collect();
    let on_topic: HashSet<&[u8]> = values.iter().map(Vec::as_slice).collect();
    assert_eq!(values.len(), on_topic.len(), "a record written twice");
    assert_eq!(
        on_topic, since,
        "records on the returned broker vs 202s since"
    );
    let count = |st: u16| sent.iter().filter(|s| s.status == st).count();
    eprintln!(
        "kafka_route: {} POSTs: {} 202, {} 503 ({} while away); {} records on the returned broker",
        sent.len(),
        count(202),
        count(503),
        during.len(),
        on_topic.len()
    );
}

#[test]
fn a_reload_changes_topic_and_key_and_can_add_a_broker_set() {
    let broker = Broker::start(free_port());
    broker.create_topic("first");
    broker.create_topic("second");
    let other = Broker::start(free_port());
    other.create_topic("third");
    let up = "[upstreams.unused]\nbackends = [\"127.0.0.1:1\"]\n";
    let route = |path: &str, topic: &str, bootstrap: &str, key: &str| {
        format!(
            "[[routes]]\npath_prefix = \"{path}\"\nkafka = {{ topic = \"{topic}\", brokers = [\"{bootstrap}\"], key = \"{key}\", acks = \"leader\" }}\n"
        )
    };
    let lb = Lb::start(&format!(
        "{up}\n{}",
        route("/in/", "first", &broker.bootstrap(), "none")
    ));
    let post = |path: &str, body: &[u8]| request(lb.addr, "POST", path, &[("x-key", "K")], body);
    assert_eq!(post("/in/a", b"one").status, 202);

    lb.write_config(&format!(
        "{up}\n{}\n{}",
        route("/in/", "second", &broker.bootstrap(), "header:x-key"),
        route("/other/", "third", &other.bootstrap(), "path:2")
    ));
    let (status, answer) = lb.reload();
    assert_eq!(status, 200, "{answer}");
    let r = post("/in/a", b"two");
    assert_eq!(
        (r.status, r.json()["topic"].as_str()),
        (202, Some("second"))
    );
    assert_eq!(post("/other/p7/x", b"three").status, 202);

    let first = broker.consume_raw("first", 1, 10);
    let second = broker.consume_raw("second", 1, 10);
    let third = other.consume_raw("third", 1, 10);
    let one = |records: &[serde_json::Value]| {
        assert_eq!(records.len(), 1, "{records:?}");
        let r = &records[0];
        (unhex(&r["value"]).unwrap(), unhex(&r["key"]))
    };
    assert_eq!(one(&first), (b"one".to_vec(), None));
    assert_eq!(one(&second), (b"two".to_vec(), Some(b"K".to_vec())));
    assert_eq!(one(&third), (b"three".to_vec(), Some(b"p7".to_vec())));
    assert_eq!(route_total(&lb, "second", "accepted"), Some(1));
}

#[test]
fn workers_consume_what_lb_accepted_end_to_end() {
    let broker = Broker::start(free_port());
    broker.create_topic(TOPIC);
    let bootstrap = broker.bootstrap();
    let worker = Backend::start_with(
        "w",
        &["--kafka-brokers", &bootstrap, "--kafka-topic", TOPIC],
    );
    let lb = Lb::start(&format!(
        "[upstreams.api]\n{}\n\n\
         [[routes]]\npath_prefix = \"/ingest/\"\nkafka = {{ topic = \"{TOPIC}\", brokers = [\"{bootstrap}\"] }}\n\n\
         [[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n",
        backends_toml(&[(&worker, 1)])
    ));
    const N: u64 = 40;
    let (mut bytes, mut checksum) = (0u64, 0u64);
    let mut post = |body: &[u8]| {
        let ct = [("content-type", "application/json")];
        let r = request(lb.addr, "POST", "/ingest/jobs", &ct, body);
        assert_eq!(r.status, 202, "{}", r.text());
        bytes += body.len() as u64;
    };
    for i in 0..N {
        let body = format!("{{\"job\":{i},\"payload\":\"{}\"}}", "x".repeat(i as usize));
        post(body.as_bytes());
        checksum ^= lb::util::hash::fnv1a64(body.as_bytes());
    }
    // Work `/loadTest` would refuse (not JSON) is counted apart.
    post(b"not json");
    // HTTP -> lb -> Kafka -> worker, and its report read back through lb.
    let report = wait_for(
        "the worker to consume it all",
        Duration::from_secs(15),
        || {
            let r = lb.get("/worker").json();
            (r["records"] == N && r["invalid"] == 1).then_some(r)
        },
    );
    assert_eq!(report["topic"], TOPIC);
    assert_eq!(report["bytes"], bytes);
    assert_eq!(report["checksum"], format!("{checksum:016x}"));
}

/// Debian's NGINX has no ngx_kafka_module, so no differential case: the import of its
/// `kafka_topic` location is checked by running what `lb import-nginx` wrote.
#[test]
fn an_imported_ngx_kafka_module_location_produces_to_its_topic() {
    let broker = Broker::start(free_port());
    broker.create_topic("topic0");
    let backend = Backend::start("a");
    let (port, admin) = (free_port(), free_port());
    let dir = temp_dir("kafka-import");
    let nginx = format!(
        "http {{\n kafka;\n kafka_broker_list {};\n server {{\n  listen 127.0.0.1:{port};\n  location / {{ proxy_pass http://{}; }}\n  location = /ingest/topic0/ {{ kafka_topic topic0; }}\n }}\n}}\n",
        broker.bootstrap(),
        backend.addr
    );
    std::fs::write(dir.join("nginx.conf"), nginx).unwrap();
    let out = crate::import_nginx::import(&[dir.join("nginx.conf").to_str().unwrap()]);
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{notes}");
    assert!(
        notes.contains("kafka_topic: mapped to a kafka route"),
        "{notes}"
    );
    let toml = String::from_utf8(out.stdout).unwrap();
    let text = format!("{toml}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    std::fs::write(dir.join("lb.toml"), text).unwrap();
    let lb = Lb::spawn(dir, port, admin, String::new());
    lb.wait_ready();
    let r = request(lb.addr, "POST", "/ingest/topic0/", &[], b"from nginx");
    assert_eq!(
        (r.status, r.json()["topic"].as_str()),
        (202, Some("topic0"))
    );
    assert_eq!(lb.get("/echo/x").status, 200);
    let records = broker.consume_raw("topic0", 1, 10);
    assert_eq!(records.len(), 1);
    assert_eq!(unhex(&records[0]["value"]).unwrap(), b"from nginx");
}
