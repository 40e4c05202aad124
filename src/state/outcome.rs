//! How a backend attempt ended, as the request path reports it to health and metrics.

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
