//! What every handler shares: the process-wide [`State`], the [`Resp`] writer that puts one
//! response into the connection's output buffer, and the [`Action`] a handler hands back to the
//! connection loop. Handlers write bytes; only the connection loop touches the socket.

use std::io::Write as _;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::StatusCode;

use crate::head::Request;

/// Process-wide state shared by all connections.
pub struct State {
    pub name: String,
    /// `name` as a JSON string literal (quoted and escaped).
    pub name_json: String,
    pub delay: Duration,
    /// What `/healthz` reports; flipped by `/control/health/*`.
    pub healthy: AtomicBool,
    /// What worker mode consumed from Kafka (`GET /worker`).
    pub consumed: std::sync::Arc<crate::worker::Consumed>,
    /// Precomputed `GET /` response: status line and fixed headers (no blank line).
    root_head: Vec<u8>,
    root_body: Vec<u8>,
}

impl State {
    pub fn new(name: String, delay: Duration) -> Self {
        let name_json = serde_json::Value::from(name.as_str()).to_string();
        let root_body = format!("{{\"backend\":{name_json}}}").into_bytes();
        let len = root_body.len();
        let root_head = format!(
            "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n"
        );
        let healthy = AtomicBool::new(true);
        let root_head = root_head.into_bytes();
        Self {
            name,
            name_json,
            delay,
            healthy,
            consumed: Default::default(),
            root_head,
            root_body,
        }
    }
}

/// What the connection loop does after the router has written its bytes to `out`.
pub enum Action {
    Continue,
    /// Sleep before sending the response that was just written.
    Delay(Duration),
    /// Flush whatever is in `out` and close (faults).
    Close,
    /// Flush the 101 response, then echo raw bytes until EOF.
    Upgrade,
}

/// Writes one response into the connection's output buffer.
pub struct Resp<'a> {
    pub st: &'a State,
    pub out: &'a mut Vec<u8>,
    /// Add `connection: close` (the loop closes after this response).
    pub close: bool,
    /// A HEAD request: the head as for GET, no body.
    pub head_only: bool,
}

impl Resp<'_> {
    /// Writes a full response; `extra` is preformatted `name: value\r\n` lines.
    pub fn send(&mut self, status: u16, ctype: &str, extra: &str, body: &[u8]) {
        let code = StatusCode::from_u16(status).ok();
        let reason = code.and_then(|c| c.canonical_reason()).unwrap_or("Unknown");
        let name = &self.st.name;
        let _ = write!(
            self.out,
            "HTTP/1.1 {status} {reason}\r\nx-backend: {name}\r\n{extra}"
        );
        let bodyless = status < 200 || status == 204 || status == 304;
        if !bodyless {
            let len = body.len();
            let _ = write!(
                self.out,
                "content-type: {ctype}\r\ncontent-length: {len}\r\n"
            );
        }
        self.end_head();
        if !bodyless && !self.head_only {
            self.out.extend_from_slice(body);
        }
    }

    fn end_head(&mut self) {
        if self.close {
            self.out.extend_from_slice(b"connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn json(&mut self, status: u16, body: &str) {
        self.send(status, "application/json", "", body.as_bytes());
    }

    pub fn error(&mut self, status: u16, extra: &str, msg: &str) {
        let body = serde_json::json!({ "backend": self.st.name, "error": msg }).to_string();
        self.send(status, "application/json", extra, body.as_bytes());
    }

    /// `GET /`, from the precomputed bytes: this is the benchmark's hot path.
    pub fn root(&mut self) -> Action {
        self.out.extend_from_slice(&self.st.root_head);
        self.end_head();
        if !self.head_only {
            self.out.extend_from_slice(&self.st.root_body);
        }
        self.delayed()
    }

    /// Continue after the `--delay` latency, if any.
    pub fn delayed(&self) -> Action {
        match self.st.delay {
            Duration::ZERO => Action::Continue,
            d => Action::Delay(d),
        }
    }

    /// Writes a 405 and returns false unless the request method is `want`.
    pub fn require(&mut self, req: &Request, want: &str) -> bool {
        let ok = req.method() == want.as_bytes();
        if !ok {
            self.error(
                405,
                &format!("allow: {want}\r\n"),
                &format!("method must be {want}"),
            );
        }
        ok
    }
}
