//! The edge: lb answers malformed, oversized and slow requests itself and never forwards them.
//!
//! pingora-core's HTTP/1 server parses the request head before the request path sees it, and it
//! is loose (heads up to 1 MiB, `Transfer-Encoding` + `Content-Length` accepted with the length
//! dropped, no total deadline for the head, idle keep-alive connections never timed out, no
//! connection cap). So the defences sit in two layers:
//!
//! 1. **Connection layer.** [`GuardedApp`] is the listening service's app: it wraps every accepted
//!    stream in a [`Guarded`](conn::Guarded) IO before pingora reads a byte, and runs the
//!    connection's keep-alive loop, handing each request to a [`RequestApp`] (the proxy). It
//!    enforces what the request path cannot see:
//!    - `server.max_connections`: connections over the cap get a `503` and are closed; established
//!      connections are not touched. TLS handshakes run here too ([`TlsListeners`]), so a
//!      connection is counted from accept and its handshake is bounded by `header_timeout`
//!      (pingora's listening service would run it first, uncounted, for up to 60 s); one over
//!      the cap on an HTTPS listener is closed without an answer.
//!    - `server.header_timeout`: a total deadline for the request head, counted from accept for
//!      the first request of a connection and from its first byte for later ones → `408` and close.
//!    - `server.keepalive_timeout`: an idle keep-alive connection is closed quietly.
//!    - `server.max_header_bytes` / `server.max_headers` / `server.max_uri_bytes`: the head is
//!      scanned as it arrives; once over a limit lb answers `431` (`414` for the request target)
//!      before pingora buffers any more of it.
//!
//!    Whenever lb closes a connection that may still carry unread request bytes, the close
//!    *lingers* (reads and discards for a bounded time, as NGINX's `lingering_close`) so that the
//!    answer is not destroyed by the TCP reset the kernel sends for unread data.
//! 2. **Request layer.** [`early_request_filter`] (called by the request path first) checks
//!    the raw head pingora parsed with [`check_head`] — framing (`Content-Length`,
//!    `Transfer-Encoding`), header syntax, `Host`, limits — and answers `400`/`413`/`414`/`431`/`501`
//!    with `Connection: close`. It also sets the per-request body idle timeout
//!    (`server.body_timeout`) and lets a client half-close after its request and still get the
//!    response. [`request_body`] counts chunked bodies against `server.max_body_bytes` (`413`).
//!
//! Some malformed heads never reach the request layer: pingora's parser answers them itself with
//! its own bare `400` (control characters, obs-fold, a space before the colon, differing
//! `Content-Length`s, `Transfer-Encoding` on HTTP/1.0 or not ending in `chunked`) or `405`
//! (CONNECT). The connection layer sees that answer go out before the request path ran, counts it in
//! `lb_requests_total` like lb's own refusals, and lingers on close. Refusals of the connection
//! layer (408/414/431/503) never reach the request path's logging, so they are counted here too
//! but have no access-log line.
//!
//! HTTP/2 connections (ALPN `h2` on HTTPS listeners, the h2c preface on plain ones with
//! `server.h2c`) skip the HTTP/1 connection layer: the HTTP/2 layer frames requests itself and
//! bounds them with settings taken from the same limits (header list size =
//! `server.max_header_bytes`, 128 concurrent streams, the h2 crate's caps on streams reset before
//! they are accepted and on CONTINUATION frames; idle connections close after
//! `server.keepalive_timeout`). [`early_request_filter`] applies the checks that still mean
//! something there ([`head::check_h2_head`]: target length, field count, `Content-Length`).
//!
//! The two layers talk through a small [`ConnCtl`] shared by the connection and the request
//! context: the request layer tells the connection when the head was accepted (the header
//! deadline stops) and when the request is over (the next head's clock starts).
//!
//! Files: [`head`] (the pure request-head checks and the incremental head scan), [`conn`] (the
//! guarded client stream, its counted slot, lingering close and the connection/request signal
//! channel [`ConnCtl`]), [`accept`] (the listening app: connection cap, shedding, TLS handshakes,
//! the HTTP/2 accept loop and h2c detection), [`request`] (the request-layer checks), [`answer`]
//! (lb's own answers, for both layers and for the proxy), [`proxy_protocol`] (the PROXY v1/v2
//! header of `proxy_protocol = true` listeners, read by `accept` before anything else; its
//! source becomes the connection's peer). [`client_ip`] is the request's client: the peer, or
//! the address a `server.real_ip_from` peer's header names. `accept` and `request` use `conn`;
//! nothing in `conn` uses them.

pub mod accept;
pub mod answer;
pub mod conn;
pub mod head;
pub mod request;

pub use accept::{GuardedApp, RequestApp, Served, TlsListeners};
pub use conn::requests_arriving;
pub use conn::ConnCtl;
pub use head::{check_head, HeadInfo, Reject};
pub use request::{client_ip, peer_ip};
pub use request::{early_request_filter, request_body, route_body_limit, RequestState};
pub mod path;
pub mod proxy_protocol;
