//! `limit_req_zone` and `limit_req` → `[rate_limits.NAME]` and each route's `rate_limits`.
//!
//! NGINX splits a limit in two: the zone (`limit_req_zone KEY zone=NAME:SIZE rate=R`, http
//! context) holds the key, rate and size; each `limit_req zone=NAME burst=N nodelay|delay=N`
//! line (http, server or location, inherited as `proxy_set_header` is: an inner level with any
//! `limit_req` of its own drops the outer ones) adds the burst and delay, and
//! `limit_req_status`/`limit_req_dry_run` the answer. lb keeps all of it per limit: the first
//! route using a zone sets its burst, delay, status and dry run; a later one that differs gets a
//! note (lb keeps one set per limit; NGINX's lines share the zone's counters all the same).

use super::notes::{At, Notes};
use super::tree::{Directive, Loc};

/// One `limit_req_zone` lb can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// lb's name (NGINX's, with characters lb does not take in names made `_`).
    pub name: String,
    /// NGINX's name, which `limit_req zone=` lines give.
    pub nginx_name: String,
    /// lb's key: `client_ip`, `uri`, `path`, `header:NAME` or `cookie:NAME`.
    pub key: String,
    /// As lb writes it: `10/s`, `30/m`.
    pub rate: String,
    pub max_keys: u64,
    pub loc: Loc,
}

/// One `limit_req` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitReq {
    pub zone: String,
    pub burst: u64,
    /// `nodelay`: `None`; else the excess passed at once (`delay=N`, 0 by default).
    pub delay: Option<u64>,
}

/// What a location's requests pass: its `limit_req` lines and how a refusal is answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitUse {
    pub reqs: Vec<At<LimitReq>>,
    /// `limit_req_status` (NGINX's default 503 when `None`).
    pub status: Option<u16>,
    pub dry_run: bool,
}

/// NGINX's default `limit_req_status`.
pub const NGINX_STATUS: u16 = 503;

/// The limits in effect at one level, with NGINX's inheritance.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub now: LimitUse,
    /// The `limit_req` lines are inherited (the next one starts a new list).
    inherited: bool,
}

impl Limits {
    /// The directives [`Limits::take`] handles.
    pub fn owns(name: &str) -> bool {
        matches!(
            name,
            "limit_req" | "limit_req_status" | "limit_req_dry_run" | "limit_req_log_level"
        )
    }

    pub fn child(&self) -> Limits {
        Limits {
            now: self.now.clone(),
            inherited: true,
        }
    }

    /// Applies `d` if it is one of [`Limits::owns`]; `false` otherwise.
    pub fn take(&mut self, d: &Directive, notes: &mut Notes) -> bool {
        if !Self::owns(&d.name) {
            return false;
        }
        let arg = d.args.first().map(String::as_str).unwrap_or_default();
        match d.name.as_str() {
            "limit_req" => {
                if self.inherited {
                    self.inherited = false;
                    self.now.reqs.clear();
                }
                match limit_req(&d.args) {
                    Ok(value) => self.now.reqs.push(At {
                        value,
                        loc: d.loc.clone(),
                    }),
                    Err(m) => notes.add(&d.loc, "limit_req", format!("{m}, ignored")),
                }
            }
            "limit_req_status" => match arg.parse::<u16>() {
                Ok(s) if (400..=599).contains(&s) => self.now.status = Some(s),
                _ => notes.add(&d.loc, &d.name, format!("{arg:?} is not 400-599, ignored")),
            },
            "limit_req_dry_run" => self.now.dry_run = arg == "on",
            // Logging only.
            _ => {}
        }
        true
    }
}

/// `limit_req zone=NAME [burst=N] [nodelay | delay=N]`.
fn limit_req(args: &[String]) -> Result<LimitReq, String> {
    let mut r = LimitReq {
        zone: String::new(),
        burst: 0,
        delay: Some(0),
    };
    for a in args {
        let number = |v: &str| v.parse::<u64>().map_err(|_| format!("{a:?}: not a number"));
        match a.split_once('=') {
            Some(("zone", z)) => r.zone = z.to_string(),
            Some(("burst", n)) => r.burst = number(n)?,
            Some(("delay", n)) => r.delay = Some(number(n)?),
            None if a == "nodelay" => r.delay = None,
            _ => return Err(format!("unknown parameter {a:?}")),
        }
    }
    if r.zone.is_empty() {
        return Err("no zone=".to_string());
    }
    Ok(r)
}

/// `limit_req_zone KEY zone=NAME:SIZE rate=R [sync]`: `None` (with a note) when lb cannot
/// carry it.
pub fn zone(d: &Directive, notes: &mut Notes) -> Option<Zone> {
    let skip = |notes: &mut Notes, why: String| {
        notes.add(&d.loc, "limit_req_zone", format!("{why}; skipped"));
        None
    };
    let Some(var) = d.args.first() else {
        return skip(notes, "no key".to_string());
    };
    let key = match var.as_str() {
        "$binary_remote_addr" | "$remote_addr" => "client_ip".to_string(),
        "$request_uri" => "uri".to_string(),
        "$uri" => "path".to_string(),
        v => match (v.strip_prefix("$http_"), v.strip_prefix("$cookie_")) {
            (Some(h), _) if !h.is_empty() => format!("header:{}", h.replace('_', "-")),
            (_, Some(c)) if !c.is_empty() => format!("cookie:{c}"),
            _ => {
                return skip(
                    notes,
                    format!(
                        "key {v}: lb limits by $binary_remote_addr, $remote_addr, \
                         $request_uri, $uri, $http_NAME or $cookie_NAME"
                    ),
                )
            }
        },
    };
    let (mut name, mut size, mut rate) = (None, None, None);
    for a in &d.args[1..] {
        match a.split_once('=') {
            Some(("zone", z)) => {
                let (n, s) = z.split_once(':').unwrap_or((z, ""));
                name = Some(n.to_string());
                size = bytes(s);
            }
            Some(("rate", r)) => rate = lb_rate(r),
            _ if a == "sync" => {}
            _ => return skip(notes, format!("unknown parameter {a:?}")),
        }
    }
    let (Some(mut name), Some(rate)) = (name, rate) else {
        return skip(
            notes,
            "needs zone=NAME:SIZE and rate=Nr/s or Nr/m".to_string(),
        );
    };
    let nginx_name = name.clone();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if !name.chars().all(plain) {
        let lb: String = name
            .chars()
            .map(|c| if plain(c) { c } else { '_' })
            .collect();
        let msg = format!("zone {name}: lb's rate limit is named {lb} (it labels metrics)");
        notes.add(&d.loc, "limit_req_zone", msg);
        name = lb;
    }
    // NGINX: "one megabyte zone can keep about 16 thousand 64-byte states" (lb takes at most
    // 100 million keys).
    let max_keys = size.map_or(16_000, |b| (b / 64).clamp(1, 100_000_000));
    Some(Zone {
        name,
        nginx_name,
        key,
        rate,
        max_keys,
        loc: d.loc.clone(),
    })
}

/// `10m`, `512k`, `1048576` → bytes.
fn bytes(s: &str) -> Option<u64> {
    let (n, scale) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    n.parse::<u64>().ok().map(|n| n * scale)
}

/// NGINX's `10r/s` (`10r/m`, or `10`: per second) → lb's `10/s`; lb takes at most 10,000,000.
fn lb_rate(r: &str) -> Option<String> {
    let (n, unit) = r.split_once("r/").unwrap_or((r, "s"));
    let n: u64 = n.parse().ok().filter(|n| (1..=10_000_000).contains(n))?;
    matches!(unit, "s" | "m").then(|| format!("{n}/{unit}"))
}

/// One `[rate_limits.NAME]` as the import writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub zone: Zone,
    pub burst: u64,
    /// `None`: `nodelay`.
    pub delay: Option<u64>,
    pub status: u16,
    pub dry_run: bool,
    /// The first `limit_req` that set these.
    pub set_by: Option<Loc>,
}

impl RateLimit {
    pub fn new(zone: Zone) -> RateLimit {
        RateLimit {
            zone,
            burst: 0,
            delay: Some(0),
            status: NGINX_STATUS,
            dry_run: false,
            set_by: None,
        }
    }

    /// Takes a location's use of this zone: the first sets burst, delay, status and dry run.
    pub fn use_at(&mut self, r: &At<LimitReq>, u: &LimitUse, notes: &mut Notes) {
        let status = u.status.unwrap_or(NGINX_STATUS);
        let Some(first) = &self.set_by else {
            self.burst = r.value.burst;
            self.delay = r.value.delay;
            self.status = status;
            self.dry_run = u.dry_run;
            self.set_by = Some(r.loc.clone());
            return;
        };
        let same = (self.burst, self.delay, self.status, self.dry_run)
            == (r.value.burst, r.value.delay, status, u.dry_run);
        if !same {
            let msg = format!(
                "zone {}: lb keeps one burst, delay, status and dry run per limit; those of {first} are used",
                self.zone.name
            );
            notes.add(&r.loc, "limit_req", msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let r = limit_req(&args("zone=one burst=5 nodelay")).unwrap();
        assert_eq!((r.zone.as_str(), r.burst, r.delay), ("one", 5, None));
        let r = limit_req(&args("zone=two burst=9 delay=3")).unwrap();
        assert_eq!((r.burst, r.delay), (9, Some(3)));
        assert!(limit_req(&args("burst=5")).is_err());
        assert!(limit_req(&args("zone=a fast")).is_err());
        assert_eq!(lb_rate("10r/s").as_deref(), Some("10/s"));
        assert_eq!(lb_rate("30r/m").as_deref(), Some("30/m"));
        assert_eq!(lb_rate("1r/h"), None);
        assert_eq!(lb_rate("7").as_deref(), Some("7/s"));
        assert_eq!(bytes("10m"), Some(10 << 20));
        assert_eq!(bytes("64k"), Some(64 << 10));
    }
}
