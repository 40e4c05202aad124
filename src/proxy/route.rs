//! Routing one request, in two steps: [`decide`] is pure (the snapshot, the request's head and
//! its client in, a [`Decision`] out: no I/O, nothing written), and [`Proxy::route`] carries the
//! decision out: lb's own answers (400 bad path, 404 no route, NGINX's slash redirect, `respond`
//! and `kafka` routes, 403 `access`, `limit_req`'s refusal or delay, a `fault`, 503 nothing
//! usable) or a request ready to forward, its copy (`mirror`) started.

use std::borrow::Cow;
use std::sync::Arc;

use pingora_core::protocols::http::ServerSession;

use super::context::Ctx;
use super::headers::request_host;
use super::keys::{self, Limited};
use super::{grpc, kafka, mirror, respond, Proxy};
use crate::config::respond::Respond;
use crate::config::split::SHARE_SCALE;
use crate::config::{access_allows, ClientClose, NormalizePath, Protocol};
use crate::edge::{answer, path};
use crate::snapshot::{KafkaTarget, Mirror, Route, RouteFault, RouteSettings, Routed, Snapshot};
use crate::snapshot::{Target, Upstream};

/// What routing decided for a request, before anything is written.
pub(super) enum Decision<'s> {
    /// lb answers the request itself.
    Answer(Answer<'s>),
    /// Forwarded to a backend, once [`Proxy::admit`] lets it through.
    Proxy(Proxied),
}

/// lb's own answer to a request it does not forward.
pub(super) enum Answer<'s> {
    /// lb answers with this status and reason: 400 (a path lb refuses), 404 (no route).
    Refuse(u16, &'static str),
    /// A prefix location's name without its slash: NGINX's 301 to this location.
    AddSlash(String),
    /// The route's `access` rules refuse the client: 403 (with the `kafka` route's target, which
    /// the log names).
    Forbidden(Option<Arc<KafkaTarget>>),
    /// A `respond` route's answer (NGINX's `return`), rendered.
    Respond {
        answer: &'s Respond,
        text: String,
        location: Option<String>,
    },
    /// A `kafka` route: the body goes to the topic; `path` only when its key reads the path.
    Kafka(Arc<KafkaTarget>, String),
}

/// A request routed to an upstream, with everything its route adds.
pub(super) struct Proxied {
    upstream: usize,
    settings: Option<Arc<RouteSettings>>,
    /// The rate limits' verdict (already counted).
    limited: Limited,
    /// The route's `access` rules refuse the client (answered after the rate limits, as
    /// NGINX's phases are ordered).
    denied: bool,
    fault: Option<Arc<RouteFault>>,
    mirror: Option<Arc<Mirror>>,
    /// The normalized path when the upstream's `consistent_hash` hashes it and it differs.
    key_path: Option<String>,
    /// The path to forward instead of the client's (`replace_prefix`, `normalize_path =
    /// "forward"`).
    forward_path: Option<String>,
}

/// Routes the request as NGINX does ([`Snapshot::route_on`]) on the listener it came to
/// (`tls`, `local`) and counts the rate limits of a proxied one. Pure but for those counts.
pub(super) fn decide<'s>(
    snapshot: &'s Snapshot,
    session: &ServerSession,
    tls: bool,
    local: Option<std::net::SocketAddr>,
    client: Option<std::net::IpAddr>,
) -> Decision<'s> {
    let server = &snapshot.config.server;
    let req = session.req_header();
    let raw_path = req.uri.path();
    let path = match server.normalize_path {
        NormalizePath::Off => Ok(Cow::Borrowed(raw_path)),
        _ => path::normalize(raw_path, server.merge_slashes),
    };
    let path = match path {
        Ok(p) => p,
        Err(e) => return Decision::Answer(Answer::Refuse(400, e.reason())),
    };
    let route = match snapshot.route_on(tls, local, request_host(req), &path) {
        None => return Decision::Answer(Answer::Refuse(404, "no route matches this request")),
        Some(Routed::AddSlash) => {
            let mut location = String::with_capacity(path.len() + 1);
            location.push_str(&path);
            location.push('/');
            if let Some(q) = req.uri.query() {
                location.push('?');
                location.push_str(q);
            }
            return Decision::Answer(Answer::AddSlash(location));
        }
        Some(Routed::To(route)) => route,
    };
    let denied = !allowed(route, client);
    if let Some(answer) = own_answer(route, denied, session, tls, &path, client) {
        return Decision::Answer(answer);
    }
    let hash = |by: &_| keys::split_hash(session, by, &path, client);
    let Some((upstream, settings)) = route.proxied(hash) else {
        return Decision::Answer(Answer::Refuse(404, "no route matches this request"));
    };
    // Rate limits before access rules, as NGINX's phases (preaccess, then access): a refused
    // client still counts against the limits.
    let limited = keys::check(session, snapshot, (route, upstream), &path, client);
    let by_path =
        snapshot.upstreams[upstream].config.hash_key == Some(crate::config::HashKey::Path);
    let key_path = match (by_path, &path) {
        (true, Cow::Owned(p)) => Some(p.clone()),
        _ => None,
    };
    let forward_path = match (&route.replace, path) {
        // As `proxy_pass http://up/new/`: the normalized path, prefix replaced.
        (Some((len, with)), path) => {
            let mut p = String::with_capacity(with.len() + path.len() - len);
            p.push_str(with);
            p.push_str(&path[*len..]);
            Some(p)
        }
        (None, Cow::Owned(p)) if server.normalize_path == NormalizePath::Forward => Some(p),
        (None, _) => None,
    };
    Decision::Proxy(Proxied {
        upstream,
        settings: settings.cloned(),
        limited,
        denied,
        fault: route.fault.clone(),
        mirror: route.mirror.clone(),
        key_path,
        forward_path,
    })
}

/// lb's answer on a route it answers itself (`respond`, `kafka`); `None` for a proxied route.
fn own_answer<'s>(
    route: &'s Route,
    denied: bool,
    session: &ServerSession,
    tls: bool,
    path: &str,
    client: Option<std::net::IpAddr>,
) -> Option<Answer<'s>> {
    Some(match &route.target {
        Target::Upstream(_) | Target::Split(_) => return None,
        Target::Kafka(k) if denied => Answer::Forbidden(Some(k.clone())),
        Target::Respond(_) if denied => Answer::Forbidden(None),
        Target::Respond(answer) => {
            let (text, location) = respond::render(session, tls, answer, path, client);
            Answer::Respond {
                answer,
                text,
                location,
            }
        }
        Target::Kafka(k) => {
            // Only a `path:N` key reads the path (the body is read meanwhile).
            let path = match k.route.key {
                crate::config::kafka_route::KafkaKey::PathSegment(_) => path.to_string(),
                _ => String::new(),
            };
            Answer::Kafka(k.clone(), path)
        }
    })
}

impl Proxy {
    /// Loads the snapshot (the request's only shared read), routes the request ([`decide`]) and
    /// answers it when lb does; returns true when the request is to be forwarded.
    pub(super) async fn route(&self, session: &mut ServerSession, ctx: &mut Ctx) -> bool {
        let snapshot = self.shared.snapshot.load_full();
        let server = &snapshot.config.server;
        // A half-close after a complete request reads as EOF, like a full close. "finish"
        // delivers the answer (RFC 9112 §9.6; a full close shows when the write fails); "abort"
        // cancels the backend request at once. A reset or an EOF inside the request ends the
        // request either way.
        session.set_abort_on_close(server.client_close == ClientClose::Abort);
        ctx.client = crate::edge::client_ip(session, &server.real_ip);
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        // The listener the connection came to, when routes name listeners: read once per
        // connection (its socket digest keeps it for later requests and HTTP/2 streams).
        let local = match snapshot.routes_by_listener() {
            false => None,
            true => session.server_addr().and_then(|a| a.as_inet()).copied(),
        };
        let proxied = match decide(&snapshot, session, tls, local, ctx.client) {
            Decision::Proxy(p) => p,
            Decision::Answer(a) => {
                ctx.snapshot = Some(snapshot.clone());
                self.answer(session, ctx, a).await;
                return false;
            }
        };
        ctx.snapshot = Some(snapshot);
        self.admit(session, ctx, proxied).await
    }

    /// lb's answer to a request it does not forward.
    async fn answer(&self, session: &mut ServerSession, ctx: &mut Ctx, a: Answer<'_>) {
        match a {
            Answer::Refuse(code, reason) => self.refuse(session, ctx, code, reason).await,
            Answer::AddSlash(location) => {
                let _ = answer::redirect(session, &location).await;
            }
            Answer::Forbidden(kafka) => {
                ctx.kafka = kafka;
                self.refuse(session, ctx, 403, FORBIDDEN).await
            }
            Answer::Respond { .. } if ctx.grpc => {
                let msg = "this path is answered by lb itself, not a gRPC service";
                self.refuse_as(session, ctx, 501, grpc::UNIMPLEMENTED, msg)
                    .await
            }
            Answer::Respond {
                answer: a,
                text,
                location,
            } => {
                let ct = a.content_type.as_deref();
                let written = answer::respond(session, a.status, text, location.as_deref(), ct);
                if written.await.is_err() && session.response_written().is_none() {
                    let why = "the route's answer could not be written";
                    let _ = answer::write(session, 500, why, true).await;
                }
            }
            Answer::Kafka(k, path) => {
                kafka::serve(session, &k, &path, &self.shared.metrics).await;
                ctx.kafka = Some(k);
            }
        }
    }

    /// The checks a routed request passes before any backend hears of it, in NGINX's order:
    /// the body limit, the rate limits, `access`, then the route's `fault`, a usable backend and
    /// a gRPC call's HTTP/2; answers and returns false when one stops it. Then starts the
    /// route's `mirror` copy.
    async fn admit(&self, session: &mut ServerSession, ctx: &mut Ctx, p: Proxied) -> bool {
        ctx.upstream = p.upstream;
        ctx.routed = true;
        ctx.settings = p.settings;
        ctx.key_path = p.key_path;
        ctx.forward_path = p.forward_path;
        // As NGINX's `client_max_body_size`, checked once the location is known, before
        // `limit_req`.
        let server_limit = ctx
            .snapshot
            .as_ref()
            .map_or(0, |s| s.config.server.limits.max_body_bytes);
        let limit = ctx.settings.as_ref().and_then(|s| s.max_body_bytes);
        let limit = limit.unwrap_or(server_limit);
        if !crate::edge::route_body_limit(session, &mut ctx.hardening, limit).await {
            ctx.own_answer = true;
            return false;
        }
        if !self.pass_limits(session, ctx, p.limited).await {
            return false;
        }
        if p.denied {
            ctx.own_answer = true;
            self.refuse(session, ctx, 403, FORBIDDEN).await;
            return false;
        }
        if let Some(f) = p.fault {
            if !self.inject_fault(session, ctx, &f).await {
                return false;
            }
        }
        if !self.has_usable_backend(ctx) {
            let name = ctx.upstream().map_or("", |u| u.name());
            let msg = format!("upstream {name:?} has no usable backend");
            self.refuse(session, ctx, 503, &msg).await;
            return false;
        }
        let up = ctx.upstream().map(|u| (u.name(), u.config.protocol));
        if let (true, Some((name, Protocol::Http1))) = (ctx.grpc, up) {
            // HTTP/1 would drop the call's trailers, and with them its status.
            let msg = format!(
                "upstream {name:?} speaks HTTP/1.1 to its backends; gRPC needs protocol = \"http2\""
            );
            ctx.own_answer = true;
            self.refuse(session, ctx, 503, &msg).await;
            return false;
        }
        if let (Some(m), Some(snapshot)) = (p.mirror, ctx.snapshot.as_ref()) {
            let r = mirror::Request {
                shared: &self.shared,
                connector: &self.connector,
                snapshot,
                mirror: &m,
                client: ctx.client,
                trusted: super::upstream_head::peer_is_trusted(session, &snapshot.config.server),
                forward_path: ctx.forward_path.as_deref(),
                content_length: ctx.hardening.content_length(),
            };
            ctx.mirror = mirror::start(r, session);
        }
        true
    }

    /// Carries out the rate limits' verdict: NGINX's `limit_req` delay (the request waits its
    /// turn at the limit's rate) or refusal. False when the request ends here.
    async fn pass_limits(&self, session: &mut ServerSession, ctx: &mut Ctx, l: Limited) -> bool {
        match l {
            Limited::Pass => true,
            Limited::Delay(d) => {
                let waited = delay_unless_gone(session, d).await;
                // Never proxied, as NGINX: logged as a 499.
                ctx.client_gone = !waited;
                waited
            }
            Limited::Reject(i) => {
                let snapshot = ctx.snapshot.clone().expect("routed");
                let limit = &snapshot.limits[i];
                ctx.own_answer = true;
                let (code, status) = (limit.config.status, grpc::RESOURCE_EXHAUSTED);
                self.refuse_as(session, ctx, code, status, &limit.refusal)
                    .await;
                false
            }
        }
    }

    /// A route's `fault` (Envoy's fault filter): a request eligible for it (it carries the
    /// fault's header, when one is named) is delayed, then aborted, each with its share. Returns
    /// false when the request ends here: aborted (answered), or its client gone during the delay.
    async fn inject_fault(
        &self,
        session: &mut ServerSession,
        ctx: &mut Ctx,
        f: &RouteFault,
    ) -> bool {
        let fault = &f.config;
        let headers = &session.req_header().headers;
        if fault
            .header
            .as_ref()
            .is_some_and(|h| !headers.contains_key(h.as_str()))
        {
            return true;
        }
        let roll = |share: u32| fastrand::u32(..SHARE_SCALE) < share;
        if let Some(delay) = fault.delay.filter(|d| roll(d.share)) {
            f.counts.delayed();
            if !delay_unless_gone(session, delay.duration).await {
                ctx.client_gone = true;
                return false;
            }
        }
        let Some(abort) = fault.abort.filter(|a| roll(a.share)) else {
            return true;
        };
        f.counts.aborted();
        ctx.own_answer = true;
        // A gRPC status for gRPC calls, and for every request when no HTTP status is given (as
        // Envoy's `grpc_status` abort).
        let grpc_status = abort
            .grpc_status
            .filter(|_| ctx.grpc || abort.status.is_none());
        match (grpc_status, abort.status) {
            (Some(g), _) => {
                ctx.grpc_status = Some(g);
                let _ = grpc::answer(session, g, FAULT_ABORT).await;
            }
            (_, Some(status)) => self.refuse(session, ctx, status, FAULT_ABORT).await,
            (None, None) => return true,
        }
        false
    }

    /// Whether the routed upstream has a usable backend (else the live snapshot's, see
    /// [`Proxy::on_live_snapshot`]).
    fn has_usable_backend(&self, ctx: &mut Ctx) -> bool {
        let usable = |up: &Upstream| up.has_available();
        ctx.upstream().is_some_and(usable)
            || self
                .on_live_snapshot(ctx, |up| usable(up).then_some(()))
                .is_some()
    }
}

/// Waits out a rate limit's delay; false when the client went away meanwhile (a reset, or a
/// close while `server.client_close = "abort"`), so that its request is never sent. A request
/// whose body is still to come is not watched (reading would consume the body).
async fn delay_unless_gone(session: &mut ServerSession, delay: std::time::Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    if session.is_body_done() {
        tokio::select! {
            _ = &mut sleep => return true,
            read = session.read_body_or_idle(true) => {
                if read.is_err() {
                    return false;
                }
            }
        }
    }
    sleep.await;
    true
}

/// lb's answer to a request a route's `fault` aborts.
const FAULT_ABORT: &str = "fault injected: this route's fault aborted the request";

/// lb's answer to a client a route's `access` rules refuse.
const FORBIDDEN: &str = "forbidden: this client's address may not use this route";

/// Whether the route's `access` rules let `client` in.
fn allowed(route: &Route, client: Option<std::net::IpAddr>) -> bool {
    route
        .access
        .as_deref()
        .is_none_or(|rules| access_allows(rules, client))
}
