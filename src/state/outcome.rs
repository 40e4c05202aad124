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

/// Fails to compile when `FailureKind` gains a variant, as a reminder to list it in `ALL`.
#[allow(dead_code)]
fn all_failure_kinds_listed(k: FailureKind) {
    use FailureKind::*;
    match k {
        ConnectRefused | ConnectTimeout | ConnectError | ReadTimeout | WriteTimeout | Reset
        | InvalidResponse | Status5xx | Other => {}
    }
}
