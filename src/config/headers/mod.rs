//! Header rewriting settings of routes and upstreams: `set_request_headers` (NGINX's
//! `proxy_set_header`) and `add_response_headers` (NGINX's `add_header`), their values parsed
//! once, at load time, into a [`Template`] of literal pieces and [`Var`]s that the request path
//! renders without parsing anything.
//!
//! The file form of an `add_response_headers` entry is in `file`, the checks that turn the tables
//! into these types in `check`, on the shared machinery of `config::validate`.

use http::header::{HeaderName, HeaderValue};

mod check;
pub(in crate::config) mod file;

use super::respond::{tokens, Token};

/// A variable a header value may name (`$host` or `${host}`), NGINX's meaning each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `$host`: the client's host name, lower case, without port or trailing dot.
    Host,
    /// `$http_host`: the client's `Host` as sent.
    HttpHost,
    /// `$server_port`: the port of the listener the request came in on.
    ServerPort,
    /// `$request_id`: 32 hex digits, random, one per request (the same in request and
    /// response headers).
    RequestId,
    /// `$scheme`: `http` or `https`.
    Scheme,
    /// `$remote_addr`: the client's address (the one `X-Real-IP` gets).
    RemoteAddr,
    /// `$proxy_add_x_forwarded_for`: the `X-Forwarded-For` lb sends (the chain of a trusted
    /// proxy extended with the client's address, else the client's address alone).
    ProxyAddXForwardedFor,
}

impl Var {
    /// Every variable with its name, as written after `$`.
    pub const ALL: [(Var, &'static str); 7] = [
        (Var::Host, "host"),
        (Var::HttpHost, "http_host"),
        (Var::ServerPort, "server_port"),
        (Var::RequestId, "request_id"),
        (Var::Scheme, "scheme"),
        (Var::RemoteAddr, "remote_addr"),
        (Var::ProxyAddXForwardedFor, "proxy_add_x_forwarded_for"),
    ];

    pub fn parse(name: &str) -> Option<Var> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
    }

    /// The names, `$`-prefixed, for messages.
    pub fn names() -> String {
        let names: Vec<String> = Self::ALL.iter().map(|(_, n)| format!("${n}")).collect();
        names.join(", ")
    }
}

/// One piece of a header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(Box<str>),
    Var(Var),
}

/// A header value: literal pieces and variables. An empty one removes the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub pieces: Box<[Piece]>,
    /// The whole value when it has no variable, built once.
    pub fixed: Option<HeaderValue>,
}

impl Template {
    /// Parses a value: `$name` and `${name}` are variables (see [`Var`]), everything else is
    /// literal; `$` before anything that is not a name is literal too, as in NGINX.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        for token in tokens(text)? {
            pieces.push(match token {
                Token::Text(t) => {
                    if HeaderValue::from_str(&t).is_err() {
                        return Err(format!("{text:?} is not a valid header value"));
                    }
                    Piece::Literal(t.into())
                }
                Token::Name(name) => match Var::parse(name) {
                    Some(v) => Piece::Var(v),
                    None => {
                        return Err(format!(
                            "unknown variable ${name} (lb renders {})",
                            Var::names()
                        ))
                    }
                },
            });
        }
        let fixed = match pieces.as_slice() {
            [Piece::Literal(t)] => HeaderValue::from_str(t).ok(),
            _ => None,
        };
        Ok(Template {
            pieces: pieces.into(),
            fixed,
        })
    }

    /// An empty value: the header is removed (NGINX's `proxy_set_header X "";`).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
}

/// One header and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    pub name: HeaderName,
    pub value: Template,
}

/// One `add_response_headers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedHeader {
    pub rule: HeaderRule,
    /// Added to every answer, not only to 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308
    /// (NGINX's `add_header ... always`).
    pub always: bool,
}

impl AddedHeader {
    /// Whether this header goes on an answer with `status`.
    pub fn applies_to(&self, status: u16) -> bool {
        self.always
            || matches!(
                status,
                200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
            )
    }
}

/// `add_response_headers` (and `add_response_headers_always`) of a route or upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseHeaders {
    pub headers: Vec<AddedHeader>,
}

/// Header names lb manages itself (framing and hop-by-hop fields), refused in both lists.
pub const MANAGED: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Parses a header name for a rule; `Err` says why it cannot be one.
pub fn rule_name(name: &str) -> Result<HeaderName, String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if MANAGED.contains(&parsed.as_str()) {
        return Err(format!(
            "lb manages {name:?} itself (framing and hop-by-hop fields; WebSocket upgrades pass \
             through without configuration)"
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_literals_and_variables() {
        let t = Template::parse("a $host-${scheme}b$ - c$").unwrap();
        let want = [
            Piece::Literal("a ".into()),
            Piece::Var(Var::Host),
            Piece::Literal("-".into()),
            Piece::Var(Var::Scheme),
            Piece::Literal("b$ - c$".into()),
        ];
        assert_eq!(&*t.pieces, want.as_slice());
        assert!(t.fixed.is_none());
        let lit = Template::parse("max-age=31536000").unwrap();
        assert_eq!(lit.fixed.unwrap(), "max-age=31536000");
        assert!(Template::parse("").unwrap().is_empty());
        let e = Template::parse("$http_x_custom").unwrap_err();
        assert!(e.contains("unknown variable $http_x_custom"), "{e}");
        assert!(Template::parse("${host").is_err());
        assert!(Template::parse("a\nb").is_err());
    }

    #[test]
    fn managed_names_are_refused() {
        assert!(rule_name("Connection").is_err());
        assert!(rule_name("bad name").is_err());
        assert_eq!(rule_name("X-Real-IP").unwrap(), "x-real-ip");
    }

    #[test]
    fn add_header_statuses() {
        let mut h = AddedHeader {
            rule: HeaderRule {
                name: HeaderName::from_static("x-a"),
                value: Template::parse("1").unwrap(),
            },
            always: false,
        };
        assert!(h.applies_to(200) && h.applies_to(304) && !h.applies_to(404));
        h.always = true;
        assert!(h.applies_to(502));
    }
}
