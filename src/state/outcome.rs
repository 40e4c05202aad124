//! How a backend attempt ended, as the request path reports it to health and metrics: its
//! [`FailureKind`] (the metric label) and its [`Reason`], the one short, human reason lb gives
//! wherever it explains a failure (its 502/504 answers, `grpc-message`, health events on the
//! dashboard, in the report and on Kafka, `last_check_error`).

use std::fmt;
use std::time::Duration;

use pingora_core::upstreams::peer::PeerOptions;
use pingora_error::{Error, ErrorType};

/// Why an upstream attempt failed (also the `kind` label of `lb_upstream_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    ConnectRefused,
    ConnectTimeout,
    ConnectError,
    ReadTimeout,
    WriteTimeout,
    Reset,
    InvalidResponse,
    Status5xx,
    Other,
}

impl FailureKind {
    /// Every kind, in label order (metrics create each series up front).
    pub const ALL: [FailureKind; 9] = {
        use FailureKind::*;
        [
            ConnectRefused,
            ConnectTimeout,
            ConnectError,
            ReadTimeout,
            WriteTimeout,
            Reset,
            InvalidResponse,
            Status5xx,
            Other,
        ]
    };

    pub fn of(e: &Error) -> FailureKind {
        use ErrorType::*;
        match e.etype() {
            ConnectRefused => FailureKind::ConnectRefused,
            ConnectTimedout => FailureKind::ConnectTimeout,
            ConnectError | ConnectNoRoute | BindError | SocketError => FailureKind::ConnectError,
            ReadTimedout => FailureKind::ReadTimeout,
            WriteTimedout => FailureKind::WriteTimeout,
            ConnectionClosed | ReadError | WriteError => FailureKind::Reset,
            InvalidHTTPHeader | H1Error | H2Error | InvalidH2 => FailureKind::InvalidResponse,
            _ => FailureKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::ConnectError => "connect_error",
            FailureKind::ReadTimeout => "read_timeout",
            FailureKind::WriteTimeout => "write_timeout",
            FailureKind::Reset => "reset",
            FailureKind::InvalidResponse => "invalid_response",
            FailureKind::Status5xx => "status_5xx",
            FailureKind::Other => "other",
        }
    }
}

/// Why an attempt or a check failed, in a few words: `connection refused`, `connection timed out
/// after 1s`, `read timed out after 30s`, `connection reset`, `TLS handshake failed`, `invalid
/// response`, `status 503`. Never pingora's error chain (types, contexts and causes, with its
/// double spaces). `Copy` and made only when something failed; formatted only when shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A fixed phrase.
    Text(&'static str),
    /// A phrase and the timeout that ran out: `read timed out after 30s`.
    After(&'static str, Duration),
    /// The backend answered with this status (passive health's `eject_on_5xx`).
    Status(u16),
}

impl Reason {
    /// The reason of a failed attempt or check on a peer with `options` (its timeouts are the
    /// ones that can have run out).
    pub fn of(e: &Error, options: &PeerOptions) -> Reason {
        use ErrorType::*;
        let after = |phrase, t: Option<Duration>| match t {
            Some(t) => Reason::After(phrase, t),
            None => Reason::Text(phrase),
        };
        Reason::Text(match e.etype() {
            ConnectRefused => "connection refused",
            ConnectTimedout => return after("connection timed out", options.connection_timeout),
            ConnectNoRoute => "no route to the backend",
            TLSHandshakeTimedout => "TLS handshake timed out",
            TLSHandshakeFailure | TLSWantX509Lookup => "TLS handshake failed",
            InvalidCert => "invalid certificate",
            HandshakeError => "handshake failed",
            ConnectError | BindError | SocketError | ConnectProxyFailure => "connection failed",
            ReadTimedout => return after("read timed out", options.read_timeout),
            WriteTimedout => return after("write timed out", options.write_timeout),
            ConnectionClosed => "connection closed",
            ReadError | WriteError => match io_kind(e) {
                Some(std::io::ErrorKind::ConnectionReset) => "connection reset",
                Some(std::io::ErrorKind::BrokenPipe) => "connection closed",
                _ if *e.etype() == ReadError => "read failed",
                _ => "write failed",
            },
            InvalidHTTPHeader | H1Error => "invalid response",
            H2Error | InvalidH2 | H2Downgrade => "HTTP/2 error",
            HTTPStatus(code) => return Reason::Status(*code),
            other => other.as_str(),
        })
    }

    /// The reason of a failed system call (active TCP checks).
    pub fn of_io(e: &std::io::Error) -> Option<Reason> {
        use std::io::ErrorKind::*;
        Some(Reason::Text(match e.kind() {
            ConnectionRefused => "connection refused",
            ConnectionReset => "connection reset",
            TimedOut => "connection timed out",
            HostUnreachable | NetworkUnreachable => "no route to the backend",
            _ => return None,
        }))
    }
}

/// The kind of the system error at the root of `e`, if there is one.
fn io_kind(e: &Error) -> Option<std::io::ErrorKind> {
    let root = e.root_cause();
    root.downcast_ref::<std::io::Error>().map(|io| io.kind())
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Text(s) => f.write_str(s),
            Reason::After(s, t) => write!(f, "{s} after {t:?}"),
            Reason::Status(code) => write!(f, "status {code}"),
        }
    }
}

/// Fails to compile when `FailureKind` gains a variant, as a reminder to list it in `ALL`.
#[allow(dead_code)]
fn all_failure_kinds_listed(k: FailureKind) {
    use FailureKind::*;
    match k {
        ConnectRefused | ConnectTimeout | ConnectError | ReadTimeout | WriteTimeout | Reset
        | InvalidResponse | Status5xx | Other => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_short() {
        let mut o = PeerOptions::new();
        o.connection_timeout = Some(Duration::from_secs(1));
        o.read_timeout = Some(Duration::from_millis(300));
        let reason = |e: &Error| Reason::of(e, &o).to_string();
        let refused = Error::because(
            ErrorType::ConnectRefused,
            "Fail to connect to addr: 127.0.0.1:1, scheme: HTTP",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(reason(&refused), "connection refused");
        let timed_out = Error::new(ErrorType::ConnectTimedout);
        assert_eq!(reason(&timed_out), "connection timed out after 1s");
        let read = Error::explain(ErrorType::ReadTimedout, "while reading response headers");
        assert_eq!(reason(&read), "read timed out after 300ms");
        // A reset under a pingora error under another: the system error at the root decides.
        let reset = Error::because(
            ErrorType::ReadError,
            "while reading response headers",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        );
        let wrapped = Error::because(ErrorType::ReadError, "outer", reset);
        assert_eq!(reason(&wrapped), "connection reset");
        assert_eq!(reason(&Error::new(ErrorType::ReadError)), "read failed");
        assert_eq!(
            reason(&Error::new(ErrorType::InvalidHTTPHeader)),
            "invalid response"
        );
        assert_eq!(
            reason(&Error::new(ErrorType::TLSHandshakeFailure)),
            "TLS handshake failed"
        );
        assert_eq!(Reason::Status(503).to_string(), "status 503");
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Reason::of_io(&io), Some(Reason::Text("connection refused")));
    }
}
