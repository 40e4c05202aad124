//! `GET /status`: the running config (path, hash, load time, last reload), every upstream's
//! backends with state, weights, load and latency, draining backends, the rate limits with their
//! counts, the `kafka` routes' outcomes and acknowledgement latency, and the event timeline.

use serde_json::{json, Value};

use crate::config::Named;
use crate::runtime::Shared;
use crate::snapshot::{Backend, Upstream};
use crate::state::discovery::Found;

/// The `/status` document.
pub fn status(shared: &Shared) -> Value {
    let snap = shared.snapshot.load_full();
    let loaded = *shared.file.loaded.lock().unwrap_or_else(|e| e.into_inner());
    let (hash, loaded_at) = (loaded.hash, loaded.loaded_at_ms);
    let last = shared
        .file
        .last_reload
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut upstreams = serde_json::Map::new();
    for up in &snap.upstreams {
        let mut backends: Vec<Value> = up.backends.iter().map(backend).collect();
        backends.extend(draining(shared, up.name()));
        upstreams.insert(
            up.name().to_string(),
            json!({
                "strategy": up.config.strategy.as_str(),
                "backends": backends,
                "discovery": discovery(shared, up),
            }),
        );
    }
    json!({
        "config": {
            "path": shared.file.path.display().to_string(),
            "hash": format!("{hash:016x}"),
            "loaded_at_ms": loaded_at,
            "last_reload": last,
        },
        "uptime_s": shared.started.elapsed().as_secs_f64(),
        "downstream_connections": crate::observe::metrics::established_connections(
            &snap.config.server.listen.iter().map(|a| a.port()).collect::<Vec<_>>()
        ),
        "upstreams": upstreams,
        "rate_limits": rate_limits(&snap),
        "kafka_routes": kafka_routes(&snap, &shared.metrics),
        "events": shared.events.list(),
    })
}

/// A backend of the live snapshot: state, weights, load, latency, last check error.
fn backend(b: &Backend) -> Value {
    let lat = b.state.latency();
    let check = b.state.check.lock().unwrap_or_else(|e| e.into_inner());
    json!({
        "address": b.address,
        "weight": b.weight,
        "effective_weight": if b.state.usable() { b.effective_weight() } else { 0.0 },
        "state": if b.down { "down (config)" } else { b.state.status() },
        "backup": b.backup,
        "name": b.name.as_deref(),
        "max_conns": b.max_conns,
        "in_flight": b.state.in_flight(),
        "requests": b.state.attempts(),
        "errors": b.state.errors(),
        "latency_p50_ms": lat.0,
        "latency_p99_ms": lat.1,
        "last_check_error": check.last_error,
    })
}

/// The backends of `upstream` a reload removed that still have requests in flight.
fn draining(shared: &Shared, upstream: &str) -> Vec<Value> {
    let draining = shared
        .live
        .draining
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    draining
        .iter()
        .filter(|(k, s)| k.upstream == upstream && s.in_flight() > 0)
        .map(|(key, state)| {
            json!({
                "address": key.address,
                "weight": 0,
                "effective_weight": 0,
                "state": "draining",
                "in_flight": state.in_flight(),
                "requests": state.attempts(),
                "errors": state.errors(),
                "latency_p50_ms": state.latency().0,
                "latency_p99_ms": state.latency().1,
            })
        })
        .collect()
}

/// `up`'s DNS-discovered entries: their addresses, last resolution time and result.
fn discovery(shared: &Shared, up: &Upstream) -> Vec<Value> {
    let list = |v: &[Found]| -> Vec<String> { v.iter().map(|f| f.addr.to_string()).collect() };
    up.config
        .backends
        .iter()
        .filter(|b| b.discovery.is_some())
        .map(|b| {
            let r = shared
                .live
                .registry
                .discovered
                .get(up.name(), &b.address)
                .unwrap_or_default();
            json!({
                "name": b.address,
                "resolved_at_ms": r.resolved_at_ms,
                "result": r.result,
                "addresses": list(&r.current),
                "retiring": list(&r.retiring),
            })
        })
        .collect()
}

/// `"rate_limits": {"NAME": {key, rate_per_s, burst, delay, status, dry_run, keys, passed,
/// delayed, rejected, delayed_dry_run, rejected_dry_run}}`.
fn rate_limits(snap: &crate::snapshot::Snapshot) -> Value {
    let mut out = serde_json::Map::new();
    for l in &snap.limits {
        let c = &l.config;
        let mut v = json!({
            "key": c.key.describe(),
            "rate_per_s": c.rate as f64 / 1000.0,
            "burst": c.burst,
            "delay": c.delay,
            "status": c.status,
            "dry_run": c.dry_run,
            "keys": l.table.len(),
        });
        let results = crate::state::limit::RESULTS.iter().zip(l.table.counts());
        for (result, n) in results {
            v[*result] = n.into();
        }
        out.insert(c.name.clone(), v);
    }
    Value::Object(out)
}

/// `"kafka_routes": {"TOPIC": {accepted, unavailable, too_large, refused, acks,
/// ack_seconds_sum}}`: the counts of `lb_kafka_route_requests_total` and the count and sum of
/// `lb_kafka_route_ack_seconds` for each topic a `kafka` route produces to.
fn kafka_routes(
    snap: &crate::snapshot::Snapshot,
    metrics: &crate::observe::metrics::Metrics,
) -> Value {
    let mut out = serde_json::Map::new();
    for r in &snap.config.routes {
        let crate::config::RouteTarget::Kafka(k) = &r.target else {
            continue;
        };
        let topic = k.topic.as_str();
        let mut v = json!({});
        for result in crate::observe::metrics::KAFKA_ROUTE_RESULTS {
            let n = metrics
                .kafka_route_requests
                .with_label_values(&[topic, result]);
            v[result] = n.get().into();
        }
        let ack = metrics.kafka_route_ack.with_label_values(&[topic]);
        v["acks"] = ack.get_sample_count().into();
        v["ack_seconds_sum"] = ack.get_sample_sum().into();
        out.insert(topic.to_string(), v);
    }
    Value::Object(out)
}
