//! `GET /status`: the running config (path, hash, load time, last reload), every upstream's
//! backends with state, weights, load and latency, draining backends, and the event timeline.

use serde_json::{json, Value};

use crate::runtime::Shared;

/// The `/status` document.
pub fn status(shared: &Shared) -> Value {
    let snap = shared.snapshot.load_full();
    let loaded = *shared.loaded.lock().unwrap_or_else(|e| e.into_inner());
    let (hash, loaded_at) = (loaded.hash, loaded.loaded_at_ms);
    let last = shared
        .last_reload
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut upstreams = serde_json::Map::new();
    for up in &snap.upstreams {
        let mut backends: Vec<Value> = up
            .backends
            .iter()
            .map(|b| {
                let lat = b.state.latency();
                let check = b.state.check.lock().unwrap_or_else(|e| e.into_inner());
                json!({
                    "address": b.address,
                    "weight": b.weight,
                    "effective_weight": if b.state.usable() { b.effective_weight() } else { 0.0 },
                    "state": if b.down { "down (config)" } else { b.state.status() },
                    "backup": b.backup,
                    "max_conns": b.max_conns,
                    "in_flight": b.state.in_flight(),
                    "requests": b.state.attempts(),
                    "errors": b.state.errors(),
                    "latency_p50_ms": lat.0,
                    "latency_p99_ms": lat.1,
                    "last_check_error": check.last_error,
                })
            })
            .collect();
        let draining = shared.draining.lock().unwrap_or_else(|e| e.into_inner());
        for (key, state) in draining
            .iter()
            .filter(|(k, s)| k.upstream == up.name() && s.in_flight() > 0)
        {
            backends.push(json!({
                "address": key.address,
                "weight": 0,
                "effective_weight": 0,
                "state": "draining",
                "in_flight": state.in_flight(),
                "requests": state.attempts(),
                "errors": state.errors(),
                "latency_p50_ms": state.latency().0,
                "latency_p99_ms": state.latency().1,
            }));
        }
        drop(draining);
        upstreams.insert(
            up.name().to_string(),
            json!({ "strategy": up.config.strategy.as_str(), "backends": backends }),
        );
    }
    json!({
        "config": {
            "path": shared.config_path.display().to_string(),
            "hash": format!("{hash:016x}"),
            "loaded_at_ms": loaded_at,
            "last_reload": last,
        },
        "uptime_s": shared.started.elapsed().as_secs_f64(),
        "downstream_connections": crate::observe::metrics::established_connections(
            &snap.config.server.listen.iter().map(|a| a.port()).collect::<Vec<_>>()
        ),
        "upstreams": upstreams,
        "events": shared.events(),
    })
}
