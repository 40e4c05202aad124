//! A route's header rules applied ([`crate::snapshot::RouteSettings`]): `set_request_headers`
//! on the head lb sends the backend (NGINX's `proxy_set_header`), `add_response_headers` on the
//! backend's answer (NGINX's `add_header`). Values were parsed into templates when the config
//! was loaded; here they are only rendered, from the request's [`Vars`]. A value without
//! variables is a prebuilt `HeaderValue`, cloned (a reference count), not rendered.

use std::io::Write as _;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use pingora_core::protocols::http::ServerSession;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

use super::headers::{format_ip, set_host};
use crate::config::headers::{HeaderRule, Piece, ResponseHeaders, Template, Var};

/// What the variables of one request render to, taken once per request (every attempt, and the
/// answer, see the same `$request_id`). Owned and cheap: the host is a reference-counted value.
pub(super) struct Vars {
    /// `$request_id`: 32 lower-case hex digits.
    request_id: [u8; 32],
    https: bool,
    client: Option<IpAddr>,
    port: Option<u16>,
    /// The client's `Host` (`$http_host`; `$host` is its name).
    http_host: Option<HeaderValue>,
}

impl Vars {
    pub(super) fn of(session: &ServerSession, client: Option<IpAddr>) -> Vars {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut request_id = [0u8; 32];
        let random = fastrand::u128(..);
        for (i, b) in request_id.iter_mut().enumerate() {
            *b = HEX[(random >> (4 * i) & 0xf) as usize];
        }
        Vars {
            request_id,
            https: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
            client,
            port: session
                .server_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.port()),
            http_host: session.req_header().headers.get(header::HOST).cloned(),
        }
    }

    /// Appends `var`'s value to `out`; `xff` is the `X-Forwarded-For` lb sends.
    fn render(&self, var: Var, xff: Option<&HeaderValue>, out: &mut Vec<u8>) {
        let host = self.http_host.as_ref().and_then(|h| h.to_str().ok());
        match var {
            Var::Host => {
                let name = host.map_or("", crate::snapshot::host_name);
                out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
            }
            Var::HttpHost => out.extend_from_slice(host.unwrap_or("").as_bytes()),
            Var::ServerPort => {
                if let Some(p) = self.port {
                    let _ = write!(out, "{p}");
                }
            }
            Var::RequestId => out.extend_from_slice(&self.request_id),
            Var::Scheme => {
                out.extend_from_slice(if self.https { b"https" } else { b"http" });
            }
            Var::RemoteAddr => {
                if let Some(ip) = self.client {
                    out.extend_from_slice(format_ip(ip, &mut [0u8; 64]).as_bytes());
                }
            }
            Var::ProxyAddXForwardedFor => match xff {
                Some(v) => out.extend_from_slice(v.as_bytes()),
                None => self.render(Var::RemoteAddr, None, out),
            },
        }
    }

    /// A template's value for this request.
    fn value(&self, t: &Template, xff: Option<&HeaderValue>) -> Result<HeaderValue> {
        if let Some(v) = &t.fixed {
            return Ok(v.clone());
        }
        let mut out = Vec::with_capacity(64);
        for piece in &t.pieces {
            match piece {
                Piece::Literal(s) => out.extend_from_slice(s.as_bytes()),
                Piece::Var(v) => self.render(*v, xff, &mut out),
            }
        }
        // The client's own bytes (its Host) may not make a value.
        HeaderValue::from_maybe_shared(Bytes::from(out))
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "header rule", e))
    }
}

/// Applies `set_request_headers` to the backend's head, after lb's own forwarding headers and
/// `host_header`: a configured header replaces lb's value (`Host`, `X-Forwarded-For`, ...), an
/// empty one removes the header. `$proxy_add_x_forwarded_for` is lb's `X-Forwarded-For` as it
/// was before any rule ran.
pub(super) fn set_request(
    req: &mut RequestHeader,
    rules: &[HeaderRule],
    vars: &Vars,
) -> Result<()> {
    let xff = req.headers.get(X_FORWARDED_FOR).cloned();
    for rule in rules {
        if rule.value.is_empty() {
            req.remove_header(&rule.name);
            continue;
        }
        let value = vars.value(&rule.value, xff.as_ref())?;
        if rule.name == header::HOST {
            // Through `set_host`, so that an HTTP/2 backend gets it as `:authority` too.
            let host = value.to_str().map_err(|e| {
                Error::because(ErrorType::InvalidHTTPHeader, "Host from a header rule", e)
            })?;
            set_host(req, host)?;
        } else {
            req.insert_header(rule.name.clone(), value)?;
        }
    }
    Ok(())
}

/// Adds `add_response_headers` to a backend's answer: each header on the statuses NGINX's
/// `add_header` adds to, or on any with `always`. Added, not replaced: a backend's own header
/// of the same name stays, as in NGINX.
pub(super) fn add_response(resp: &mut ResponseHeader, rules: &ResponseHeaders, vars: &Vars) {
    let status = resp.status.as_u16();
    for h in rules.headers.iter().filter(|h| h.applies_to(status)) {
        if let Ok(value) = vars.value(&h.rule.value, None) {
            let _ = resp.append_header(h.rule.name.clone(), value);
        }
    }
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::headers::AddedHeader;

    fn vars() -> Vars {
        Vars {
            request_id: *b"0123456789abcdef0123456789abcdef",
            https: false,
            client: Some("192.0.2.7".parse().unwrap()),
            port: Some(8080),
            http_host: Some(HeaderValue::from_static("Api.Example:8080")),
        }
    }

    fn rule(name: &'static str, value: &str) -> HeaderRule {
        HeaderRule {
            name: http::HeaderName::from_static(name),
            value: Template::parse(value).unwrap(),
        }
    }

    #[test]
    fn request_rules_render_replace_and_remove() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("host", "Api.Example:8080").unwrap();
        r.insert_header("x-forwarded-for", "10.0.0.1, 192.0.2.7")
            .unwrap();
        r.insert_header("x-secret", "1").unwrap();
        let rules = [
            rule("x-forwarded-for", "$remote_addr"),
            rule("x-chain", "$proxy_add_x_forwarded_for"),
            rule("x-secret", ""),
            rule("x-where", "$scheme://$host:$server_port ($http_host)"),
            rule("x-request-id", "$request_id"),
            rule("host", "backend.internal"),
        ];
        set_request(&mut r, &rules, &vars()).unwrap();
        let get = |n: &str| r.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("x-forwarded-for").as_deref(), Some("192.0.2.7"));
        assert_eq!(get("x-chain").as_deref(), Some("10.0.0.1, 192.0.2.7"));
        assert_eq!(get("x-secret"), None);
        assert_eq!(
            get("x-where").as_deref(),
            Some("http://api.example:8080 (Api.Example:8080)")
        );
        assert_eq!(
            get("x-request-id").as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(get("host").as_deref(), Some("backend.internal"));
    }

    #[test]
    fn response_rules_follow_add_header_statuses() {
        let added = |name, always| AddedHeader {
            rule: rule(name, "DENY"),
            always,
        };
        let rules = ResponseHeaders {
            headers: vec![added("x-frame-options", false), added("x-always", true)],
        };
        let mut ok = ResponseHeader::build(200, None).unwrap();
        ok.append_header("x-frame-options", "SAMEORIGIN").unwrap();
        add_response(&mut ok, &rules, &vars());
        assert_eq!(ok.headers.get_all("x-frame-options").iter().count(), 2);
        let mut missing = ResponseHeader::build(404, None).unwrap();
        add_response(&mut missing, &rules, &vars());
        assert!(missing.headers.get("x-frame-options").is_none());
        assert_eq!(missing.headers.get("x-always").unwrap(), "DENY");
    }
}
