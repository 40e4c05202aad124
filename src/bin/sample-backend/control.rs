//! Health endpoints: `/healthz` for lb's active checks, and `POST /control/health/{down,up}` which
//! tests use to flip it.

use std::sync::atomic::Ordering;

use crate::head::Request;
use crate::response::{Action, Resp};

/// `/healthz`: 200 `ok`, or 503 `unhealthy` after `/control/health/down`.
pub fn healthz(rx: &mut Resp) -> Action {
    match rx.st.healthy.load(Ordering::Relaxed) {
        true => rx.send(200, "text/plain", "", b"ok"),
        false => rx.send(503, "text/plain", "", b"unhealthy"),
    }
    Action::Continue
}

/// `POST /control/health/{down,up}`.
pub fn set_health(rx: &mut Resp, req: &Request, healthy: bool) -> Action {
    if rx.require(req, "POST") {
        rx.st.healthy.store(healthy, Ordering::Relaxed);
        let name = &rx.st.name_json;
        rx.json(200, &format!(r#"{{"backend":{name},"healthy":{healthy}}}"#));
    }
    Action::Continue
}
