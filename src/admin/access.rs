//! Who may use the admin listener: the client allow-list (`admin.allow`), no cross-site writes,
//! and the bearer token (`admin.token_file`) on every path but `admin.public` and the dashboard
//! page. Pure functions of the request and the settings, so each rule is unit-tested on its own.
//!
//! Cross-site writes: a web page in a browser on an allowed host can send a form `POST` to the
//! admin listener without any CORS preflight. Browsers mark such requests with
//! `Sec-Fetch-Site: cross-site` and an `Origin` naming the page's site; either refuses the write,
//! token or not. `curl` sends neither and is not affected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use crate::config::AdminSettings;

/// Pages served without the token: the dashboard is static (no data in it) and a browser cannot
/// add a header to a navigation; the data it polls (`/status`) needs the token.
pub const DASHBOARD_PATHS: &[&str] = &["/", "/dashboard"];

/// One admin request, as far as access is concerned.
#[derive(Debug, Default, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The client's address (`None`: not an IP connection).
    pub client: Option<IpAddr>,
    /// The address the client connected to.
    pub local: Option<SocketAddr>,
    pub authorization: Option<&'a [u8]>,
    pub origin: Option<&'a [u8]>,
    pub sec_fetch_site: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Client outside `admin.allow` (403).
    Forbidden,
    /// A write from another site (403); the reason names the header.
    CrossSite(String),
    /// Without a token, a `Host` that is neither an IP literal, `localhost` nor in `admin.hosts`
    /// (421): a page whose name was rebound to the admin address (DNS rebinding).
    Host(String),
    /// No bearer token (401).
    NoToken,
    /// A bearer token that is not the configured one (401).
    WrongToken,
}

impl Refusal {
    /// The `result` label of `lb_admin_requests_total`.
    pub fn result(&self) -> &'static str {
        match self {
            Refusal::Forbidden => "forbidden",
            Refusal::CrossSite(_) => "cross_site",
            Refusal::Host(_) => "bad_host",
            Refusal::NoToken | Refusal::WrongToken => "unauthorized",
        }
    }
}

/// The `result` label of a request that was let through.
pub const ALLOWED: &str = "allowed";
/// Every `result` label, for series that exist from the first scrape.
pub const RESULTS: &[&str] = &[
    ALLOWED,
    "unauthorized",
    "forbidden",
    "cross_site",
    "bad_host",
];

/// Applies the rules in order: allow-list, cross-site writes, token.
pub fn check(settings: &AdminSettings, req: &Request<'_>) -> Result<(), Refusal> {
    if let Some(nets) = &settings.allow {
        let allowed = req
            .client
            .is_some_and(|ip| nets.iter().any(|n| n.contains(ip)));
        if !allowed {
            return Err(Refusal::Forbidden);
        }
    }
    if !matches!(req.method, "GET" | "HEAD" | "OPTIONS") {
        cross_site(settings, req)?;
    }
    let Some(token) = &settings.token else {
        // No token: a browser page must not reach the listener under a name of its own.
        return match req.host {
            Some(h) if !host_allowed(h, &settings.hosts) => {
                Err(Refusal::Host(String::from_utf8_lossy(h).into_owned()))
            }
            _ => Ok(()),
        };
    };
    if DASHBOARD_PATHS.contains(&req.path) || settings.public.iter().any(|p| p == req.path) {
        return Ok(());
    }
    match req.authorization.and_then(bearer) {
        None => Err(Refusal::NoToken),
        Some(given) if token_eq(given, token.secret()) => Ok(()),
        Some(_) => Err(Refusal::WrongToken),
    }
}

fn cross_site(settings: &AdminSettings, req: &Request<'_>) -> Result<(), Refusal> {
    if req
        .sec_fetch_site
        .is_some_and(|v| v.eq_ignore_ascii_case(b"cross-site"))
    {
        return Err(Refusal::CrossSite("Sec-Fetch-Site: cross-site".into()));
    }
    let Some(origin) = req.origin else {
        return Ok(());
    };
    let mut own: Vec<String> = Vec::new();
    if let Some(local) = req.local {
        let ip = canonical(local.ip());
        own.push(SocketAddr::new(ip, local.port()).to_string());
        if ip.is_loopback() {
            own.push(format!("localhost:{}", local.port()));
        }
    }
    // A name in Host is only trusted together with a token: without one, a DNS-rebinding page
    // would name itself in both headers. With one, such a page still has no token to send.
    if settings.token.is_some() {
        if let Some(host) = req.host.and_then(|h| std::str::from_utf8(h).ok()) {
            own.push(host.to_string());
        }
    }
    let tls = settings.tls.is_some();
    let text = String::from_utf8_lossy(origin);
    if origin_allowed(&text, tls, &own) {
        Ok(())
    } else {
        Err(Refusal::CrossSite(format!("Origin: {text}")))
    }
}

/// Whether a `Host` may reach the admin listener without a token: an IP literal (which DNS
/// cannot rebind), `localhost`, or a name in `admin.hosts`; any port. A page on
/// `attacker.example` whose name now resolves to the admin address sends `Host:
/// attacker.example`, and is refused.
pub fn host_allowed(host: &[u8], names: &[String]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|a| a.parse::<IpAddr>().is_ok())
        }
        None => host.split(':').next().unwrap_or(""),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || names.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Whether `origin` (`scheme://host[:port]`) is the admin listener itself: the scheme it speaks
/// and one of its own authorities (`host:port`; default ports filled in on both sides).
pub fn origin_allowed(origin: &str, tls: bool, own: &[String]) -> bool {
    let scheme = if tls { "https" } else { "http" };
    let default_port = if tls { 443 } else { 80 };
    let Some(authority) = origin
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
    else {
        return false;
    };
    let Some(origin) = normalize_authority(authority, default_port) else {
        return false;
    };
    own.iter()
        .filter_map(|a| normalize_authority(a, default_port))
        .any(|a| a == origin)
}

/// `host[:port]` in lower case with the port made explicit; `None` when it is not an authority.
fn normalize_authority(text: &str, default_port: u16) -> Option<String> {
    if text.is_empty() || text.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let text = text.to_ascii_lowercase();
    let (host, port) = match text.rsplit_once(':') {
        // An IPv6 literal without a port ends with ']'.
        Some((h, p)) if !p.ends_with(']') => (h.to_string(), p.parse::<u16>().ok()?),
        _ => (text.clone(), default_port),
    };
    // IPv4-mapped IPv6 literals are their IPv4 address, as the listener sees them.
    let host = match host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
    {
        Some(ip) => match canonical(ip) {
            IpAddr::V4(v4) => v4.to_string(),
            v6 => format!("[{v6}]"),
        },
        None => host,
    };
    Some(format!("{host}:{port}"))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// Compares in time independent of where the tokens differ and of their lengths: both are
/// hashed to fixed-size digests first, which are compared in constant time.
pub fn token_eq(given: &[u8], expected: &[u8]) -> bool {
    use ring::digest::{digest, SHA256};
    let (a, b) = (digest(&SHA256, given), digest(&SHA256, expected));
    a.as_ref().ct_eq(b.as_ref()).into()
}

/// How often one client's refusals are logged.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Clients remembered by [`RefusalLog`]; beyond this the oldest entries are forgotten.
const LOG_CLIENTS: usize = 4096;

/// Logs refusals at most once per client per [`LOG_EVERY`], counting what it left out, so a
/// scanner or a misconfigured scraper cannot flood the log.
#[derive(Default)]
pub struct RefusalLog {
    clients: Mutex<HashMap<Option<IpAddr>, Seen>>,
}

struct Seen {
    logged: Instant,
    suppressed: u64,
}

impl RefusalLog {
    /// `Some(n)` when this refusal is to be logged now, `n` being how many of this client's
    /// refusals were not logged since the last one; `None` to stay quiet.
    pub fn should_log(&self, client: Option<IpAddr>, now: Instant) -> Option<u64> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= LOG_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, s| now.duration_since(s.logged) < LOG_EVERY);
            if clients.len() >= LOG_CLIENTS {
                clients.clear();
            }
        }
        match clients.get_mut(&client) {
            Some(seen) if now.duration_since(seen.logged) < LOG_EVERY => {
                seen.suppressed += 1;
                None
            }
            Some(seen) => {
                let n = seen.suppressed;
                *seen = Seen {
                    logged: now,
                    suppressed: 0,
                };
                Some(n)
            }
            None => {
                clients.insert(
                    client,
                    Seen {
                        logged: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminToken, Cidr};

    fn settings(token: Option<&str>, allow: Option<&[&str]>) -> AdminSettings {
        AdminSettings {
            listen: "127.0.0.1:9090".parse().unwrap(),
            token: token.map(|t| AdminToken::new("/t".into(), t.into())),
            public: vec!["/healthz".into()],
            allow: allow.map(|nets| {
                nets.iter()
                    .map(|n| {
                        let (a, p) = n.split_once('/').unwrap();
                        Cidr {
                            addr: a.parse().unwrap(),
                            prefix: p.parse().unwrap(),
                        }
                    })
                    .collect()
            }),
            hosts: vec!["lb.internal".into()],
            tls: None,
        }
    }

    #[test]
    fn without_a_token_only_unrebindable_hosts_pass() {
        let s = settings(None, None);
        for ok in [
            "127.0.0.1:9090",
            "127.0.0.1",
            "[::1]:9090",
            "localhost:9090",
            "LocalHost",
            "lb.internal:9090",
            "lb.internal.",
            "10.1.2.3:80",
        ] {
            let r = Request {
                host: Some(ok.as_bytes()),
                ..req("GET", "/status")
            };
            assert_eq!(check(&s, &r), Ok(()), "{ok}");
        }
        for bad in [
            "attacker.example:9090",
            "attacker.example",
            "lb.internal.evil",
            "[zz]",
        ] {
            let r = Request {
                host: Some(bad.as_bytes()),
                ..req("GET", "/status")
            };
            assert_eq!(check(&s, &r), Err(Refusal::Host(bad.into())), "{bad}");
        }
        // With a token, the token is what counts.
        let with = settings(Some("secret-token-0123456789"), None);
        let r = Request {
            host: Some(b"attacker.example:9090"),
            authorization: Some(b"Bearer secret-token-0123456789"),
            ..req("GET", "/status")
        };
        assert_eq!(check(&with, &r), Ok(()));
    }

    fn req<'a>(method: &'a str, path: &'a str) -> Request<'a> {
        Request {
            method,
            path,
            client: Some("127.0.0.1".parse().unwrap()),
            local: Some("127.0.0.1:9090".parse().unwrap()),
            host: Some(b"127.0.0.1:9090"),
            ..Request::default()
        }
    }

    #[test]
    fn token_comparison() {
        assert!(token_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!token_eq(b"s3cret-tokeN", b"s3cret-token"));
        assert!(!token_eq(b"s3cret-token-and-more", b"s3cret-token"));
        assert!(!token_eq(b"", b"s3cret-token"));
        assert!(!token_eq(b"s3cret", b"s3cret-token"));
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"abc"), None);
    }

    #[test]
    fn token_rules() {
        let s = settings(Some("good-token"), None);
        let mut r = req("GET", "/status");
        assert_eq!(check(&s, &r), Err(Refusal::NoToken));
        r.authorization = Some(b"Bearer bad-token");
        assert_eq!(check(&s, &r), Err(Refusal::WrongToken));
        r.authorization = Some(b"Bearer good-token");
        assert_eq!(check(&s, &r), Ok(()));
        // Public paths and the (static) dashboard page need none.
        for path in ["/healthz", "/", "/dashboard"] {
            assert_eq!(check(&s, &req("GET", path)), Ok(()), "{path}");
        }
        // Without a token configured, everything is open (to allowed clients).
        assert_eq!(check(&settings(None, None), &req("GET", "/status")), Ok(()));
    }

    #[test]
    fn allow_list_comes_first() {
        let s = settings(Some("t"), Some(&["127.0.0.1/32"]));
        let mut r = req("GET", "/healthz");
        r.client = Some("127.0.0.2".parse().unwrap());
        assert_eq!(check(&s, &r), Err(Refusal::Forbidden), "even public paths");
        r.client = None;
        assert_eq!(check(&s, &r), Err(Refusal::Forbidden));
        r.client = Some("::ffff:127.0.0.1".parse().unwrap());
        assert_eq!(check(&s, &r), Ok(()));
    }

    #[test]
    fn cross_site_writes_are_refused_token_or_not() {
        for s in [settings(None, None), settings(Some("t"), None)] {
            let mut r = req("POST", "/reload");
            r.authorization = Some(b"Bearer t");
            assert_eq!(check(&s, &r), Ok(()), "curl: no Origin, no Sec-Fetch-Site");
            r.sec_fetch_site = Some(b"cross-site");
            assert!(matches!(check(&s, &r), Err(Refusal::CrossSite(_))));
            r.sec_fetch_site = Some(b"same-origin");
            r.origin = Some(b"http://127.0.0.1:9090");
            assert_eq!(check(&s, &r), Ok(()), "the dashboard itself");
            r.origin = Some(b"http://localhost:9090");
            assert_eq!(check(&s, &r), Ok(()));
            for evil in [
                "http://evil.example",
                "http://127.0.0.1:8080",
                "https://127.0.0.1:9090",
                "null",
            ] {
                r.origin = Some(evil.as_bytes());
                assert_eq!(
                    check(&s, &r),
                    Err(Refusal::CrossSite(format!("Origin: {evil}"))),
                    "{evil}"
                );
            }
            // Reads are not writes.
            let mut get = req("GET", "/status");
            get.authorization = Some(b"Bearer t");
            get.origin = Some(b"http://evil.example");
            assert_eq!(check(&s, &get), Ok(()));
        }
    }

    #[test]
    fn a_host_name_origin_needs_a_token() {
        let mut r = req("POST", "/reload");
        r.host = Some(b"lb-admin.internal:9090");
        r.origin = Some(b"http://lb-admin.internal:9090");
        assert!(matches!(
            check(&settings(None, None), &r),
            Err(Refusal::CrossSite(_))
        ));
        r.authorization = Some(b"Bearer t");
        assert_eq!(check(&settings(Some("t"), None), &r), Ok(()));
    }

    #[test]
    fn origins() {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(origin_allowed(
            "http://127.0.0.1:9090",
            false,
            &own(&["127.0.0.1:9090"])
        ));
        assert!(origin_allowed(
            "http://LOCALHOST:9090",
            false,
            &own(&["localhost:9090"])
        ));
        assert!(origin_allowed(
            "http://a.example",
            false,
            &own(&["a.example:80"])
        ));
        assert!(origin_allowed(
            "https://a.example",
            true,
            &own(&["a.example"])
        ));
        assert!(!origin_allowed(
            "http://a.example",
            true,
            &own(&["a.example"])
        ));
        assert!(origin_allowed(
            "http://[::1]:9090",
            false,
            &own(&["[::1]:9090"])
        ));
        assert!(origin_allowed(
            "http://[::ffff:127.0.0.1]:9090",
            false,
            &own(&["127.0.0.1:9090"])
        ));
        assert!(!origin_allowed(
            "http://a.example:9090/x",
            false,
            &own(&["a.example:9090"])
        ));
        assert!(!origin_allowed(
            "http://user@a.example:9090",
            false,
            &own(&["a.example:9090"])
        ));
        assert!(!origin_allowed(
            "http://a.example:99999",
            false,
            &own(&["a.example:99999"])
        ));
    }

    #[test]
    fn refusals_are_logged_once_per_client_per_minute() {
        let log = RefusalLog::default();
        let (a, b) = (
            Some("10.0.0.1".parse().unwrap()),
            Some("10.0.0.2".parse().unwrap()),
        );
        let t0 = Instant::now();
        assert_eq!(log.should_log(a, t0), Some(0));
        assert_eq!(log.should_log(a, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.should_log(a, t0 + Duration::from_secs(59)), None);
        assert_eq!(log.should_log(b, t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(log.should_log(a, t0 + LOG_EVERY), Some(2));
        assert_eq!(
            log.should_log(a, t0 + LOG_EVERY + Duration::from_secs(1)),
            None
        );
    }
}
