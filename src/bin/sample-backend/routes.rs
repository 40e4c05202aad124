//! Endpoint dispatch: which handler answers which path, and the plain endpoints — `/`,
//! `POST /loadTest`, `/echo`, `/status/{code}`, `/delay/{ms}`, `/bytes/{n}`. Faults, the WebSocket upgrade and
//! the health controls live in their own modules.

use std::borrow::Cow;
use std::time::Duration;

use serde::Serialize;

use crate::head::Request;
use crate::response::{Action, Resp, State};
use crate::{control, faults, ws};

/// Writes the response to `req` into `out` and says what the connection does next.
pub fn route(st: &State, req: &Request, out: &mut Vec<u8>) -> Action {
    let (close, head_only) = (req.meta.close, req.method() == b"HEAD");
    let mut rx = Resp {
        st,
        out,
        close,
        head_only,
    };
    match req.path() {
        "/" => rx.root(),
        "/loadTest" => load_test(&mut rx, req),
        "/healthz" => control::healthz(&mut rx),
        "/worker" => {
            let body = rx.st.consumed.json(&rx.st.name_json);
            rx.json(200, &body);
            Action::Continue
        }
        "/control/health/down" => control::set_health(&mut rx, req, false),
        "/control/health/up" => control::set_health(&mut rx, req, true),
        "/ws" => ws::upgrade(&mut rx, req),
        p if p == "/echo" || p.starts_with("/echo/") => echo(&mut rx, req),
        p => route_param(&mut rx, p),
    }
}

fn route_param(rx: &mut Resp, path: &str) -> Action {
    let sleep = path
        .strip_prefix("/delay/")
        .or_else(|| path.strip_prefix("/fault/sleep/"));
    if let Some(ms) = sleep {
        sleep_ms(rx, ms)
    } else if let Some(code) = path.strip_prefix("/status/") {
        status(rx, code)
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        bytes(rx, n)
    } else if let Some(kind) = path.strip_prefix("/fault/") {
        faults::fault(rx, kind)
    } else {
        rx.error(404, "", "not found");
        Action::Continue
    }
}

fn load_test(rx: &mut Resp, req: &Request) -> Action {
    if !rx.require(req, "POST") {
        return Action::Continue;
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(&req.body) {
        Ok(_) => {
            let (name, n, sum) = (
                &rx.st.name_json,
                req.body.len(),
                lb::util::hash::fnv1a64(&req.body),
            );
            rx.json(
                200,
                &format!(r#"{{"backend":{name},"bytes":{n},"checksum":"{sum:016x}"}}"#),
            );
        }
        Err(e) => rx.error(400, "", &format!("invalid JSON: {e}")),
    }
    rx.delayed()
}

#[derive(Serialize)]
struct EchoReply<'a> {
    backend: &'a str,
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    version: &'static str,
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    body_bytes: usize,
}

fn echo(rx: &mut Resp, req: &Request) -> Action {
    let lossy = String::from_utf8_lossy;
    let reply = EchoReply {
        backend: &rx.st.name,
        method: lossy(req.method()),
        path: lossy(req.target()),
        version: if req.meta.http10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        headers: req.headers().map(|(n, v)| (lossy(n), lossy(v))).collect(),
        body_bytes: req.body.len(),
    };
    let body = serde_json::to_string(&reply).unwrap_or_default();
    rx.json(200, &body);
    Action::Continue
}

fn sleep_ms(rx: &mut Resp, ms: &str) -> Action {
    let Ok(ms) = ms.parse::<u64>() else {
        rx.error(400, "", "expected a number of milliseconds");
        return Action::Continue;
    };
    let name = &rx.st.name_json;
    rx.json(200, &format!(r#"{{"backend":{name},"slept_ms":{ms}}}"#));
    Action::Delay(Duration::from_millis(ms))
}

/// `/bytes/{n}`: `n` bytes of body (at most 256 MiB), for large answers and slow readers.
fn bytes(rx: &mut Resp, n: &str) -> Action {
    match n.parse::<usize>() {
        Ok(n) if n <= MAX_BYTES => {
            let body = vec![b'x'; n];
            rx.send(200, "application/octet-stream", "", &body);
        }
        _ => rx.error(400, "", "expected a number of bytes up to 268435456"),
    }
    Action::Continue
}

/// The largest `/bytes/{n}` answer.
const MAX_BYTES: usize = 256 << 20;

fn status(rx: &mut Resp, code: &str) -> Action {
    match code.parse::<u16>() {
        Ok(code) if (200..=599).contains(&code) => {
            let name = &rx.st.name_json;
            rx.json(code, &format!(r#"{{"backend":{name},"status":{code}}}"#));
        }
        _ => rx.error(400, "", "status code must be in 200..=599"),
    }
    Action::Continue
}
