//! What to do after a failed attempt — a pure decision, so the retry rules can be read and tested
//! in one place:
//!
//! - A connection that failed on a **reused pooled connection** the backend had already closed
//!   (pingora's verdict, before any response byte) is not the backend's fault: the request is
//!   **resent** without spending an attempt or blaming the backend — at most once per attempt, so
//!   a backend that drops every request cannot make lb replay one request through its whole pool.
//!   No request is sent more than `2 × (retries + 1)` times.
//! - A **connect failure** (refused, timed out) blames the backend and is retried on another
//!   backend while `attempts <= retries`: nothing reached the backend.
//! - A failure **after connecting** blames the backend; the request goes to another backend only
//!   when it is replayable (idempotent method, body still buffered, no response sent yet) and the
//!   failure was not a timeout (a read timeout answers 504: retrying would multiply the wait).
//! - A failure on the **client side** (the client went away or misbehaved) blames no backend and
//!   is never retried.
//!
//! Every failed attempt but a client-side one is **counted** on its backend, once, under its
//! kind (`lb_upstream_errors_total`), the stale connection's too: a request that ends well after
//! `n` retries and resends counted `n` failed attempts, so `lb_retries_total` (attempts after the
//! first, [`super::context::Ctx`]) equals the errors counted when no request failed.

use crate::state::outcome::FailureKind;

/// Where the attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Connecting to the backend.
    Connect,
    /// Sending the request or reading the response.
    Exchange,
}

/// What lb knows about one failed attempt.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    pub stage: Stage,
    pub kind: FailureKind,
    /// The client's side failed (it went away or sent something invalid), not the backend's.
    pub client_side: bool,
    /// pingora judged it a stale pooled connection that a resend may fix.
    pub stale_connection: bool,
    /// Idempotent, body still buffered, nothing answered yet.
    pub replayable: bool,
    /// This attempt already used its resend.
    pub resent_this_attempt: bool,
    /// Attempts made so far (this one included), and the upstream's `retries`.
    pub attempts: u32,
    pub retries: u32,
}

/// The next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send the same attempt again on a fresh connection.
    Resend,
    /// Try another backend.
    Retry,
    /// Give up and answer the client with the error.
    Stop,
}

/// The decision, whether the failure is counted on the backend (`lb_upstream_errors_total`, its
/// `errors`) and whether it counts against the backend's passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub next: Next,
    pub counted: bool,
    pub blame_backend: bool,
}

/// Applies the rules in the module docs.
pub fn decide(f: &Failure) -> Verdict {
    if f.client_side {
        return Verdict {
            next: Next::Stop,
            counted: false,
            blame_backend: false,
        };
    }
    if f.stale_connection && f.replayable && !f.resent_this_attempt {
        return Verdict {
            next: Next::Resend,
            counted: true,
            blame_backend: false,
        };
    }
    let budget = f.attempts <= f.retries;
    let retry = match f.stage {
        Stage::Connect => budget,
        Stage::Exchange => {
            let timeout = matches!(f.kind, FailureKind::ReadTimeout | FailureKind::WriteTimeout);
            budget && f.replayable && !timeout
        }
    };
    Verdict {
        next: if retry { Next::Retry } else { Next::Stop },
        counted: true,
        blame_backend: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(kind: FailureKind) -> Failure {
        Failure {
            stage: Stage::Exchange,
            kind,
            client_side: false,
            stale_connection: false,
            replayable: true,
            resent_this_attempt: false,
            attempts: 1,
            retries: 1,
        }
    }

    fn next(f: Failure) -> Next {
        decide(&f).next
    }

    #[test]
    fn a_stale_pooled_connection_is_resent_once_per_attempt() {
        let f = Failure {
            stale_connection: true,
            ..exchange(FailureKind::Reset)
        };
        assert_eq!(
            decide(&f),
            Verdict {
                next: Next::Resend,
                counted: true,
                blame_backend: false
            }
        );
        // The resend failed the same way: now it is the backend's failure, retried elsewhere.
        let again = Failure {
            resent_this_attempt: true,
            ..f
        };
        assert_eq!(
            decide(&again),
            Verdict {
                next: Next::Retry,
                counted: true,
                blame_backend: true
            }
        );
        // Never resend what may not be replayed.
        let post = Failure {
            replayable: false,
            ..f
        };
        assert_eq!(next(post), Next::Stop);
    }

    #[test]
    fn connect_failures_retry_within_the_budget() {
        let f = Failure {
            stage: Stage::Connect,
            replayable: false, // nothing was sent: any method may go elsewhere
            ..exchange(FailureKind::ConnectRefused)
        };
        assert_eq!(next(f), Next::Retry);
        assert_eq!(next(Failure { attempts: 2, ..f }), Next::Stop);
        assert_eq!(next(Failure { retries: 0, ..f }), Next::Stop);
        assert!(decide(&f).blame_backend);
    }

    #[test]
    fn exchange_failures_retry_only_replayable_requests_and_never_timeouts() {
        assert_eq!(next(exchange(FailureKind::Reset)), Next::Retry);
        assert_eq!(next(exchange(FailureKind::InvalidResponse)), Next::Retry);
        assert_eq!(next(exchange(FailureKind::ReadTimeout)), Next::Stop);
        assert_eq!(next(exchange(FailureKind::WriteTimeout)), Next::Stop);
        let post = Failure {
            replayable: false,
            ..exchange(FailureKind::Reset)
        };
        assert_eq!(next(post), Next::Stop);
        assert!(decide(&post).blame_backend);
    }

    #[test]
    fn client_side_failures_blame_nobody_and_stop() {
        let f = Failure {
            client_side: true,
            stale_connection: true,
            ..exchange(FailureKind::Reset)
        };
        assert_eq!(
            decide(&f),
            Verdict {
                next: Next::Stop,
                counted: false,
                blame_backend: false
            }
        );
    }

    #[test]
    fn sends_are_bounded() {
        // Worst case: every attempt resends once, then fails over: 2 × (retries + 1) sends.
        for retries in 0..4 {
            let (mut sends, mut attempts, mut resent) = (1, 1, false);
            loop {
                let f = Failure {
                    stale_connection: true,
                    resent_this_attempt: resent,
                    attempts,
                    retries,
                    ..exchange(FailureKind::Reset)
                };
                match next(f) {
                    Next::Resend => resent = true,
                    Next::Retry => (attempts, resent) = (attempts + 1, false),
                    Next::Stop => break,
                }
                sends += 1;
            }
            assert_eq!(sends, 2 * (retries + 1));
        }
    }
}
