//! The DNS side of discovery: the hickory resolver (servers from `[resolver]`, else resolv.conf;
//! resolv.conf's search list and ndots either way, as getaddrinfo; no cache, so every resolution
//! asks the server) and one lookup of an entry, classified the way
//! [`super`] acts on it.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig as Servers};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::config::{Discovery, ResolverConfig};
use crate::state::discovery::Found;

/// One address family's answer.
#[derive(Debug)]
pub enum Family {
    Set(Vec<Found>),
    /// NODATA for this family while the other has addresses: none of this family.
    Clear,
    /// This family failed: keep what it had.
    Keep,
}

/// An SRV target whose resolution failed (or one family of it): its last addresses stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// The target's name (as [`Found::host`] has it).
    pub host: String,
    pub v4: bool,
    pub v6: bool,
    /// Why, for `/status` and the log.
    pub error: String,
}

/// One resolution of an entry.
#[derive(Debug)]
pub enum Answer {
    Found {
        v4: Family,
        v6: Family,
        ttl: Duration,
        /// SRV targets that failed while others resolved: their last addresses are kept
        /// (per target, per family), the others' are taken from this answer.
        stale: Vec<Stale>,
    },
    /// NXDOMAIN, or NODATA for both families (or no SRV record).
    Gone {
        nxdomain: bool,
        negative_ttl: Option<Duration>,
    },
    /// Timeout, refused, unreachable server...: keep the last good set.
    Failed(String),
}

/// The `result` label of `lb_dns_resolutions_total` and the `/status` text.
pub enum ResultLabel {
    Ok,
    /// Resolved, but some SRV targets failed (their last addresses kept).
    Partial(String),
    NxDomain,
    NoData,
    Error(String),
}

impl ResultLabel {
    pub fn metric(&self) -> &'static str {
        match self {
            ResultLabel::Ok | ResultLabel::Partial(_) => "ok",
            ResultLabel::NxDomain => "nxdomain",
            ResultLabel::NoData => "nodata",
            ResultLabel::Error(_) => "error",
        }
    }

    pub fn text(&self) -> String {
        match self {
            ResultLabel::Error(e) => format!("error: {e}"),
            ResultLabel::Partial(e) => format!("ok; stale targets: {e}"),
            other => other.metric().to_string(),
        }
    }
}

impl Answer {
    pub fn result_label(&self) -> ResultLabel {
        match self {
            Answer::Found { stale, .. } if !stale.is_empty() => ResultLabel::Partial(
                stale
                    .iter()
                    .map(|s| format!("{}: {}", s.host, s.error))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Answer::Found { .. } => ResultLabel::Ok,
            Answer::Gone { nxdomain: true, .. } => ResultLabel::NxDomain,
            Answer::Gone { .. } => ResultLabel::NoData,
            Answer::Failed(e) => ResultLabel::Error(e.clone()),
        }
    }
}

type Cached = (Option<ResolverConfig>, Arc<TokioResolver>);
static RESOLVER: Mutex<Option<Cached>> = Mutex::new(None);

/// The resolver for `config` (made again when `[resolver]` changes).
pub fn resolver(config: Option<&ResolverConfig>) -> Result<Arc<TokioResolver>, String> {
    let mut slot = RESOLVER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((c, r)) = slot.as_ref() {
        if c.as_ref() == config {
            return Ok(r.clone());
        }
    }
    let search = Search::read(&resolv_conf_path());
    let mut builder = match config {
        // Servers, search domains and ndots from /etc/resolv.conf (hickory reads it).
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
        Some(c) => {
            // `[resolver]` names the servers; search domains still come from resolv.conf, as
            // getaddrinfo would use them.
            let mut servers = Servers::new();
            for d in &search.search {
                if let Ok(n) = hickory_resolver::Name::from_utf8(d) {
                    servers.add_search(n);
                }
            }
            for ns in &c.nameservers {
                servers.add_name_server(NameServerConfig::new(*ns, Protocol::Udp));
                servers.add_name_server(NameServerConfig::new(*ns, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(servers, TokioConnectionProvider::default())
        }
    };
    let opts = builder.options_mut();
    if config.is_some() {
        opts.ndots = search.ndots;
    }
    // lb decides when to ask again (TTL, resolve_interval): every lookup goes to the server.
    opts.cache_size = 0;
    opts.attempts = 1;
    if let Some(c) = config {
        opts.timeout = c.timeout;
    }
    let r = Arc::new(builder.build());
    *slot = Some((config.cloned(), r.clone()));
    Ok(r)
}

/// One resolution of `d`; `weight` is the entry's own (names; SRV records bring theirs).
pub async fn lookup(r: &TokioResolver, d: &Discovery, weight: u32) -> Answer {
    match d {
        Discovery::Name { host, port } => name(r, host, *port, weight, false).await,
        Discovery::Srv { name: srv } => {
            let records = match r.srv_lookup(fqdn(srv)).await {
                Ok(l) => l,
                Err(e) => return failure(&e),
            };
            let ttl = records
                .as_lookup()
                .valid_until()
                .saturating_duration_since(Instant::now());
            let lowest = records.iter().map(|s| s.priority()).min().unwrap_or(0);
            // Every target at once, each on its own: one that fails (or times out) neither
            // holds the others up nor fails the set.
            let targets = records.iter().map(|s| {
                let target = s.target().to_utf8();
                // SRV weight w is lb weight 10·w (0 → 1: the smallest share, never none).
                let w = if s.weight() == 0 {
                    1
                } else {
                    (s.weight() as u32 * 10).min(crate::config::MAX_WEIGHT as u32)
                };
                let (port, backup) = (s.port(), s.priority() != lowest);
                async move {
                    let answer = name(r, &target, port, w, backup).await;
                    (target, answer)
                }
            });
            let answers = join_all(targets).await;
            srv_answer(answers, ttl)
        }
    }
}

/// Runs the futures concurrently on this task; their outputs in order.
async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, done) in set.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *done = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("ready")).collect()
}

/// The SRV set from its targets' answers: each target's addresses, per family; a target (or one
/// family of it) that failed is listed stale, to keep its last addresses. Only when every
/// target failed does the whole resolution fail (the last set stays as it is).
pub fn srv_answer(answers: Vec<(String, Answer)>, mut ttl: Duration) -> Answer {
    let (mut v4, mut v6, mut stale) = (Vec::new(), Vec::new(), Vec::new());
    let (mut failed, total) = (Vec::new(), answers.len());
    for (target, answer) in answers {
        let host = target.trim_end_matches('.').to_string();
        match answer {
            Answer::Found {
                v4: a,
                v6: b,
                ttl: t,
                ..
            } => {
                ttl = ttl.min(t);
                let keep = (matches!(a, Family::Keep), matches!(b, Family::Keep));
                for (fam, out) in [(a, &mut v4), (b, &mut v6)] {
                    if let Family::Set(found) = fam {
                        out.extend(found);
                    }
                }
                if keep.0 || keep.1 {
                    stale.push(Stale {
                        host,
                        v4: keep.0,
                        v6: keep.1,
                        error: "one address family failed".into(),
                    });
                }
            }
            Answer::Failed(e) => {
                failed.push(format!("{host}: {e}"));
                stale.push(Stale {
                    host,
                    v4: true,
                    v6: true,
                    error: e,
                });
            }
            Answer::Gone { .. } => {}
        }
    }
    if total > 0 && failed.len() == total {
        return Answer::Failed(failed.join("; "));
    }
    if v4.is_empty() && v6.is_empty() && stale.is_empty() {
        return Answer::Gone {
            nxdomain: false,
            negative_ttl: None,
        };
    }
    Answer::Found {
        v4: Family::Set(v4),
        v6: Family::Set(v6),
        ttl,
        stale,
    }
}

/// A and AAAA for `host`, at once.
async fn name(r: &TokioResolver, host: &str, port: u16, weight: u32, backup: bool) -> Answer {
    let name = query_name(host);
    let (a, aaaa) = tokio::join!(r.ipv4_lookup(name.clone()), r.ipv6_lookup(name));
    let found = |ips: Vec<IpAddr>| -> Vec<Found> {
        ips.into_iter()
            .map(|ip| Found {
                addr: SocketAddr::new(ip, port),
                host: host.trim_end_matches('.').to_string(),
                weight,
                backup,
            })
            .collect()
    };
    let now = Instant::now();
    let a = a.map(|l| {
        let ttl = l.valid_until().saturating_duration_since(now);
        (found(l.iter().map(|ip| IpAddr::V4(ip.0)).collect()), ttl)
    });
    let aaaa = aaaa.map(|l| {
        let ttl = l.valid_until().saturating_duration_since(now);
        (found(l.iter().map(|ip| IpAddr::V6(ip.0)).collect()), ttl)
    });
    match (a, aaaa) {
        (Ok((v4, t4)), Ok((v6, t6))) => Answer::Found {
            v4: Family::Set(v4),
            v6: Family::Set(v6),
            ttl: t4.min(t6),
            stale: Vec::new(),
        },
        (Ok((set, ttl)), Err(e)) | (Err(e), Ok((set, ttl))) => {
            let v4_ok = set.first().is_none_or(|f| f.addr.is_ipv4());
            if e.is_nx_domain() {
                return gone(&e);
            }
            // NODATA for one family clears only that family; a failure keeps it.
            let other = if e.is_no_records_found() {
                Family::Clear
            } else {
                Family::Keep
            };
            let (v4, v6) = if v4_ok {
                (Family::Set(set), other)
            } else {
                (other, Family::Set(set))
            };
            Answer::Found {
                v4,
                v6,
                ttl,
                stale: Vec::new(),
            }
        }
        (Err(e4), Err(e6)) => {
            if e4.is_nx_domain() {
                gone(&e4)
            } else if e6.is_nx_domain() {
                gone(&e6)
            } else if e4.is_no_records_found() && e6.is_no_records_found() {
                let (g4, g6) = (negative_ttl(&e4), negative_ttl(&e6));
                Answer::Gone {
                    nxdomain: false,
                    negative_ttl: match (g4, g6) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    },
                }
            } else if !e4.is_no_records_found() {
                failure(&e4)
            } else {
                failure(&e6)
            }
        }
    }
}

/// The resolv.conf lb reads `search`/`domain` and `ndots` from with `[resolver]` set:
/// `/etc/resolv.conf`, or `LB_RESOLV_CONF` (for tests).
fn resolv_conf_path() -> std::path::PathBuf {
    std::env::var_os("LB_RESOLV_CONF")
        .map(Into::into)
        .unwrap_or_else(|| "/etc/resolv.conf".into())
}

/// resolv.conf's search list and `options ndots:` (glibc's rules: the last `search` or
/// `domain` line wins; ndots defaults to 1, at most 15).
#[derive(Debug, PartialEq, Eq)]
pub struct Search {
    pub search: Vec<String>,
    pub ndots: usize,
}

impl Search {
    pub fn read(path: &std::path::Path) -> Search {
        Search::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    pub fn parse(text: &str) -> Search {
        let mut out = Search {
            search: Vec::new(),
            ndots: 1,
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("search") => out.search = words.map(str::to_string).collect(),
                Some("domain") => out.search = words.take(1).map(str::to_string).collect(),
                Some("options") => {
                    for w in words {
                        if let Some(n) = w.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                            out.ndots = usize::min(n, 15);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// A configured name as hickory should look it up: a name ending in `.` is absolute; any other
/// goes through the search list as getaddrinfo does (one with at least `ndots` dots is tried as
/// is first, a shorter one after the search domains).
fn query_name(host: &str) -> String {
    host.to_string()
}

/// SRV names and targets are absolute: no search domains are tried.
fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    }
}

fn gone(e: &ResolveError) -> Answer {
    Answer::Gone {
        nxdomain: e.is_nx_domain(),
        negative_ttl: negative_ttl(e),
    }
}

fn failure(e: &ResolveError) -> Answer {
    if e.is_nx_domain() || e.is_no_records_found() {
        return gone(e);
    }
    Answer::Failed(e.to_string())
}

/// RFC 2308's negative TTL (hickory: min of the SOA's TTL and MINIMUM), when an SOA came back.
fn negative_ttl(e: &ResolveError) -> Option<Duration> {
    match e.proto()?.kind() {
        ProtoErrorKind::NoRecordsFound { negative_ttl, .. } => {
            negative_ttl.map(|s| Duration::from_secs(s as u64))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(host: &str, ip: &str) -> Answer {
        Answer::Found {
            v4: Family::Set(vec![Found {
                addr: SocketAddr::new(ip.parse().unwrap(), 80),
                host: host.into(),
                weight: 10,
                backup: false,
            }]),
            v6: Family::Set(Vec::new()),
            ttl: Duration::from_secs(5),
            stale: Vec::new(),
        }
    }

    #[test]
    fn resolv_conf_search_and_ndots() {
        let s = Search::parse(
            "# k8s\nnameserver 10.96.0.10\nsearch ns.svc.cluster.local svc.cluster.local\n\
             options ndots:5 timeout:2\n",
        );
        assert_eq!(
            s,
            Search {
                search: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
                ndots: 5
            }
        );
        assert_eq!(
            Search::parse("domain example.org\n").search,
            ["example.org"]
        );
        assert_eq!(Search::parse("").ndots, 1);
    }

    #[test]
    fn a_failed_srv_target_is_stale_alone() {
        // Issue 28, item 6: one failing target used to fail the whole SRV answer.
        let ttl = Duration::from_secs(30);
        let answers = vec![
            ("a.example.".to_string(), found("a.example", "10.0.0.1")),
            ("t.example.".to_string(), Answer::Failed("timed out".into())),
        ];
        match srv_answer(answers, ttl) {
            Answer::Found {
                v4: Family::Set(v4),
                stale,
                ttl,
                ..
            } => {
                assert_eq!(v4.len(), 1);
                assert_eq!(ttl, Duration::from_secs(5));
                assert_eq!(
                    stale,
                    vec![Stale {
                        host: "t.example".into(),
                        v4: true,
                        v6: true,
                        error: "timed out".into()
                    }]
                );
            }
            other => panic!("{other:?}"),
        }
        let all_failed = vec![
            ("a.example.".to_string(), Answer::Failed("x".into())),
            ("t.example.".to_string(), Answer::Failed("y".into())),
        ];
        assert!(matches!(srv_answer(all_failed, ttl), Answer::Failed(_)));
        // A target with only its AAAA failing keeps its IPv6 addresses only.
        let half = Answer::Found {
            v4: Family::Set(Vec::new()),
            v6: Family::Keep,
            ttl,
            stale: Vec::new(),
        };
        match srv_answer(vec![("b.example.".into(), half)], ttl) {
            Answer::Found { stale, .. } => assert_eq!((stale[0].v4, stale[0].v6), (false, true)),
            other => panic!("{other:?}"),
        }
    }
}
