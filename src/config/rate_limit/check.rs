//! Validation of `[rate_limits.NAME]` and of the `rate_limits` lists of upstreams and routes
//! that name them, each problem reported with its key path.

use std::collections::BTreeMap;

use toml::Value;

use super::file::*;
use crate::config::upstream::{parse_key, KEY_NAMES};
use crate::config::validate::{join, Checker};
use crate::config::*;

/// The fastest `rate` accepted, per second.
const MAX_RATE: u64 = 10_000_000;

impl Checker {
    pub(in crate::config) fn rate_limits(&mut self, value: Option<Value>) -> Vec<RateLimitConfig> {
        let table = match value {
            None => return Vec::new(),
            Some(Value::Table(t)) => t,
            Some(_) => {
                self.problem(
                    "rate_limits",
                    "must be a table of rate limits ([rate_limits.NAME])",
                );
                return Vec::new();
            }
        };
        let sorted: BTreeMap<String, Value> = table.into_iter().collect();
        let mut out = Vec::new();
        for (name, v) in sorted {
            let path = format!("rate_limits.{name}");
            // Named even when invalid: references to it are not reported a second time.
            self.rate_limit_names.push(name.clone());
            let plain = |b: u8| b.is_ascii_alphanumeric() || b"_-.".contains(&b);
            if name.is_empty() || !name.bytes().all(plain) {
                self.problem(
                    &path,
                    "a rate limit's name is letters, digits, '_', '-' and '.' (it labels metrics)",
                );
            }
            if let Some(file) = self.decode::<RateLimitFile>(&path, v) {
                if let Some(limit) = self.rate_limit(&path, name, file) {
                    out.push(limit);
                }
            }
        }
        out
    }

    fn rate_limit(
        &mut self,
        path: &str,
        name: String,
        f: RateLimitFile,
    ) -> Option<RateLimitConfig> {
        let before = self.problems.len();
        let key = self.limit_key(path, f.key.as_deref());
        let rate = self.rate(path, f.rate.as_deref());
        let burst = self.int(&join(path, "burst"), f.burst, 0, 1_000_000, 0) as u64;
        let delay = match (f.delay, f.nodelay) {
            (Some(_), Some(true)) => {
                self.problem(
                    join(path, "nodelay"),
                    "`nodelay` and `delay` exclude each other (`nodelay` passes the whole burst \
                     at once, `delay` only that many)",
                );
                0
            }
            (_, Some(true)) => burst,
            (d, _) => self.int(&join(path, "delay"), d, 0, 1_000_000, 0) as u64,
        };
        let status = self.int(
            &join(path, "status"),
            f.status,
            400,
            599,
            DEFAULT_RATE_LIMIT_STATUS as i64,
        ) as u16;
        let max_keys = self.int(
            &join(path, "max_keys"),
            f.max_keys,
            1,
            100_000_000,
            DEFAULT_RATE_LIMIT_KEYS as i64,
        ) as usize;
        if self.problems.len() > before {
            return None;
        }
        Some(RateLimitConfig {
            name,
            key: key?,
            rate: rate?,
            burst,
            delay: delay.min(burst),
            status,
            max_keys,
            dry_run: f.dry_run.unwrap_or(false),
        })
    }

    /// `rate_limits.X.key`: what requests are counted by (the client's address by default).
    fn limit_key(&mut self, path: &str, value: Option<&str>) -> Option<HashKey> {
        let Some(k) = value else {
            return Some(HashKey::ClientIp);
        };
        let key = parse_key(k);
        if key.is_none() {
            self.problem(
                join(path, "key"),
                format!("unknown key {k:?} (expected {KEY_NAMES})"),
            );
        }
        key
    }

    /// `rate_limits.X.rate` (required): requests per second, in thousandths.
    fn rate(&mut self, path: &str, value: Option<&str>) -> Option<u64> {
        let Some(r) = value else {
            self.problem(
                join(path, "rate"),
                "required: requests per second or minute, e.g. \"10/s\" or \"30/m\"",
            );
            return None;
        };
        let rate = parse_rate(r);
        if rate.is_none() {
            self.problem(
                join(path, "rate"),
                format!(
                    "expected requests per second or minute as a whole number from 1 \
                     to {MAX_RATE}, e.g. \"10/s\", \"30/m\" (NGINX's \"10r/s\" too), got {r:?}"
                ),
            );
        }
        rate
    }

    /// An upstream's or a route's `rate_limits`: names defined under `[rate_limits]`, each once.
    pub(in crate::config) fn rate_limit_names(
        &mut self,
        path: &str,
        names: Option<Vec<String>>,
    ) -> Option<Vec<String>> {
        let names = names?;
        for (i, n) in names.iter().enumerate() {
            if !self.rate_limit_names.contains(n) {
                let defined = if self.rate_limit_names.is_empty() {
                    "none is defined under [rate_limits]".to_string()
                } else {
                    format!("defined: {}", self.rate_limit_names.join(", "))
                };
                self.problem(
                    format!("{path}[{i}]"),
                    format!("unknown rate limit {n:?} ({defined})"),
                );
            } else if names[..i].contains(n) {
                self.problem(format!("{path}[{i}]"), format!("{n:?} is listed twice"));
            }
        }
        Some(names)
    }
}

/// `"10/s"`, `"30/m"` (or NGINX's `"10r/s"`) → requests per second in thousandths, NGINX's unit
/// (`"1/m"` is 16: NGINX rounds down too).
fn parse_rate(s: &str) -> Option<u64> {
    let (n, unit) = s.trim().split_once('/')?;
    let n: u64 = n.strip_suffix('r').unwrap_or(n).parse().ok()?;
    if !(1..=MAX_RATE).contains(&n) {
        return None;
    }
    match unit {
        "s" => Some(n * 1000),
        "m" => Some((n * 1000 / 60).max(1)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    use crate::config::validate::problems_of as problems;

    const BASE: &str = "[server]\nlisten = [\"127.0.0.1:1\"]\n";

    #[test]
    fn rates_limits_and_references() {
        let text = format!(
            "{BASE}[rate_limits.per_ip]\nrate = \"10r/s\"\nburst = 5\nnodelay = true\n\
             [rate_limits.slow]\nkey = \"header:X-Api-Key\"\nrate = \"1/m\"\nstatus = 503\n\
             [upstreams.api]\nbackends = [\"127.0.0.1:2\"]\nrate_limits = [\"per_ip\"]\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\n\
             [[routes]]\npath_prefix = \"/login\"\nupstream = \"api\"\nrate_limits = [\"slow\", \"per_ip\"]\n"
        );
        let c = parse(&text).unwrap();
        let [ip, slow] = &c.rate_limits[..] else {
            panic!("{:?}", c.rate_limits)
        };
        assert_eq!(
            (ip.rate, ip.burst, ip.delay, ip.status),
            (10_000, 5, 5, 429)
        );
        assert_eq!(ip.key, crate::config::HashKey::ClientIp);
        assert_eq!(
            (slow.rate, slow.burst, slow.delay, slow.status),
            (16, 0, 0, 503)
        );
        assert_eq!(slow.key, crate::config::HashKey::Header("x-api-key".into()));
        assert_eq!(c.upstreams[0].rate_limits, ["per_ip"]);
        assert_eq!(c.routes[0].rate_limits, None);
        assert_eq!(
            c.routes[1].rate_limits.as_deref(),
            Some(&["slow".to_string(), "per_ip".to_string()][..])
        );
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let text = format!(
            "{BASE}[rate_limits.a]\nrate = \"10/h\"\nkey = \"ip\"\nburst = -1\nstatus = 200\nmax_keys = 0\nextra = 1\n\
             [rate_limits.b]\nburst = 3\ndelay = 1\nnodelay = true\n\
             [upstreams.api]\nbackends = [\"127.0.0.1:2\"]\nrate_limits = [\"a\", \"nope\", \"a\"]\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"api\"\nrate_limits = [\"missing\"]\n"
        );
        let p = problems(&text);
        for want in [
            "rate_limits.a.rate: expected requests per second or minute",
            "rate_limits.a.key: unknown key \"ip\"",
            "rate_limits.a.burst:",
            "rate_limits.a.status:",
            "rate_limits.a.max_keys:",
            "rate_limits.a.extra: unknown key",
            "rate_limits.b.rate: required",
            "rate_limits.b.nodelay: `nodelay` and `delay` exclude each other",
            "upstreams.api.rate_limits[1]: unknown rate limit \"nope\" (defined: a, b)",
            "upstreams.api.rate_limits[2]: \"a\" is listed twice",
            "routes[0].rate_limits[0]: unknown rate limit \"missing\"",
        ] {
            assert!(
                p.iter().any(|l| l.starts_with(want)),
                "{want:?} not in {p:#?}"
            );
        }
        assert_eq!(p.len(), 11, "{p:#?}");
    }
}
