//! `routes[i].split` (with `split_by`) and `routes[i].fault`: every problem at its key path
//! (`routes[2].split[1].percent`).

use std::time::Duration;

use toml::Value;

use super::file::{FaultFile, SplitFile};
use crate::config::route::file::RouteFile;
use crate::config::split::*;
use crate::config::upstream::{parse_key, KEY_NAMES};
use crate::config::validate::{join, Checker};
use crate::config::{HashKey, UpstreamConfig};

impl Checker {
    /// `upstream = NAME` must name a configured upstream.
    pub(in crate::config) fn known_upstream(
        &mut self,
        path: &str,
        name: &str,
        upstreams: &[UpstreamConfig],
    ) {
        if !upstreams.iter().any(|up| up.name == *name) {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            self.problem(
                path,
                format!("unknown upstream {name:?} (defined: {})", known.join(", ")),
            );
        }
    }

    /// A route's `split` and `split_by`. Entries in file order; the percentages add up to 100,
    /// or a last entry without `percent` takes the rest (NGINX's `*`).
    pub(in crate::config) fn split(
        &mut self,
        path: &str,
        r: &RouteFile,
        upstreams: &[UpstreamConfig],
    ) -> Option<Split> {
        let spath = join(path, "split");
        let items = r.split.as_deref().unwrap_or_default();
        if items.is_empty() {
            self.problem(&spath, "must name at least one upstream");
            return None;
        }
        let before = self.problems.len();
        let last = items.len() - 1;
        let mut parts = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            let epath = format!("{spath}[{i}]");
            parts.extend(self.split_part(&epath, v, i == last, upstreams));
        }
        let sum: u32 = parts.iter().filter_map(|p| p.share).sum();
        let rest = parts.last().is_some_and(|p| p.share.is_none());
        let total = sum as f64 / 100.0;
        if sum > SHARE_SCALE {
            self.problem(
                &spath,
                format!("the percentages add up to {total}%, over 100%"),
            );
        } else if sum < SHARE_SCALE && !rest && parts.len() == items.len() {
            self.problem(
                &spath,
                format!(
                    "the percentages add up to {total}%: make them 100%, or leave `percent` out \
                     of the last entry so that it takes the rest (NGINX's `*`)"
                ),
            );
        }
        let by = self.split_by(path, r.split_by.as_deref());
        (self.problems.len() == before).then_some(Split { parts, by })
    }

    /// An entry of `split` at `path`: `percent` may be left out of the `last` only.
    fn split_part(
        &mut self,
        path: &str,
        v: &Value,
        last: bool,
        upstreams: &[UpstreamConfig],
    ) -> Option<SplitPart> {
        let e = self.decode::<SplitFile>(path, v.clone())?;
        self.known_upstream(&join(path, "upstream"), &e.upstream, upstreams);
        let ppath = join(path, "percent");
        let share = match &e.percent {
            None if !last => {
                self.problem(
                    ppath,
                    "required, except on the last entry (which then takes the rest, as NGINX's \
                     `*`)",
                );
                None
            }
            None => None,
            Some(p) => match self.percent(&ppath, p) {
                Some(0) => {
                    self.problem(ppath, "must be more than 0 (leave the entry out instead)");
                    None
                }
                share => share,
            },
        };
        Some(SplitPart {
            upstream: e.upstream,
            share,
        })
    }

    fn split_by(&mut self, path: &str, value: Option<&str>) -> SplitBy {
        let key = match value {
            None | Some("client") => return DEFAULT_SPLIT_BY,
            Some("random") => return SplitBy::Random,
            Some(v) => parse_key(v),
        };
        match key {
            Some(k) => SplitBy::Key(k),
            None => {
                self.problem(
                    join(path, "split_by"),
                    format!(
                        "unknown key {:?} (expected \"client\", \"random\", {KEY_NAMES})",
                        value.unwrap_or_default()
                    ),
                );
                SplitBy::Key(HashKey::ClientIp)
            }
        }
    }

    /// A percentage in hundredths: an integer, or a number with two decimals at most, from 0 to
    /// 100.
    fn percent(&mut self, path: &str, v: &Value) -> Option<u32> {
        let hundredths = match v {
            Value::Integer(n) => n.saturating_mul(100) as f64,
            Value::Float(f) => f * 100.0,
            _ => {
                self.problem(path, "must be a number (a percentage: 10, 0.5)");
                return None;
            }
        };
        if !(0.0..=SHARE_SCALE as f64).contains(&hundredths) {
            self.problem(path, "must be from 0 to 100");
            return None;
        }
        if (hundredths - hundredths.round()).abs() > 1e-6 {
            self.problem(path, "at most two decimals (as NGINX's `split_clients`)");
            return None;
        }
        Some(hundredths.round() as u32)
    }

    /// A route's `fault`; a warning while one is configured (faults are for tests and drills).
    pub(in crate::config) fn fault(&mut self, path: &str, value: Option<Value>) -> Option<Fault> {
        let path = join(path, "fault");
        let f = self.decode::<FaultFile>(&path, value?)?;
        let before = self.problems.len();
        let delay = match &f.delay {
            Some(d) => Some(FaultDelay {
                duration: self.duration(&join(&path, "delay"), Some(d), Duration::ZERO, false),
                share: self.fault_share(&join(&path, "delay_percent"), &f.delay_percent),
            }),
            None => {
                if f.delay_percent.is_some() {
                    self.problem(join(&path, "delay_percent"), "only with `delay`");
                }
                None
            }
        };
        let abort = self.fault_abort(&path, &f);
        if delay.is_none() && abort.is_none() {
            self.problem(
                &path,
                "give `delay` or `abort_status`/`abort_grpc_status` (this fault injects nothing)",
            );
        }
        let header = f.header.map(|h| h.to_ascii_lowercase());
        if header
            .as_deref()
            .is_some_and(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err())
        {
            self.problem(join(&path, "header"), "must be a header name");
        }
        if self.problems.len() != before {
            return None;
        }
        let fault = Fault {
            delay,
            abort,
            header,
        };
        self.warning(
            &path,
            format!("fault injection is on: {}", describe(&fault)),
        );
        Some(fault)
    }
}

impl Checker {
    /// `abort_status`, `abort_grpc_status` and `abort_percent` of the fault at `path`.
    fn fault_abort(&mut self, path: &str, f: &FaultFile) -> Option<FaultAbort> {
        let status = f
            .abort_status
            .map(|s| self.int(&join(path, "abort_status"), Some(s), 200, 599, 503) as u16);
        let grpc_status = f
            .abort_grpc_status
            .map(|s| self.int(&join(path, "abort_grpc_status"), Some(s), 0, 16, 14) as u8);
        if status.is_none() && grpc_status.is_none() {
            if f.abort_percent.is_some() {
                self.problem(
                    join(path, "abort_percent"),
                    "only with `abort_status` or `abort_grpc_status`",
                );
            }
            return None;
        }
        Some(FaultAbort {
            status,
            grpc_status,
            share: self.fault_share(&join(path, "abort_percent"), &f.abort_percent),
        })
    }

    /// `delay_percent` or `abort_percent`: every eligible request when absent.
    fn fault_share(&mut self, path: &str, v: &Option<Value>) -> u32 {
        match v {
            None => DEFAULT_FAULT_PERCENT,
            Some(v) => self.percent(path, v).unwrap_or(0),
        }
    }
}

/// What a fault does, for its warning: `delay 200ms to 10% and abort 503 to 5% of requests with
/// header x-fault`.
fn describe(f: &Fault) -> String {
    let pct = |share: u32| format!("{}%", share as f64 / 100.0);
    let mut what = Vec::new();
    if let Some(d) = &f.delay {
        what.push(format!("delay {:?} to {}", d.duration, pct(d.share)));
    }
    if let Some(a) = &f.abort {
        let mut answer = Vec::new();
        if let Some(s) = a.status {
            answer.push(s.to_string());
        }
        if let Some(g) = a.grpc_status {
            answer.push(format!("grpc-status {g}"));
        }
        what.push(format!("abort {} to {}", answer.join("/"), pct(a.share)));
    }
    let whom = match &f.header {
        Some(h) => format!("requests with header {h}"),
        None => "requests".to_string(),
    };
    format!("{} of {whom}", what.join(" and "))
}

#[cfg(test)]
mod tests {
    use crate::config::split::*;
    use crate::config::{parse, HashKey, RouteTarget};

    const HEAD: &str = "[server]\nlisten = [\"127.0.0.1:1\"]\n\
                        [upstreams.v1]\nbackends = [\"127.0.0.1:2\"]\n\
                        [upstreams.v2]\nbackends = [\"127.0.0.1:3\"]\n";

    fn problems(routes: &str) -> Vec<String> {
        match parse(&format!("{HEAD}{routes}")) {
            Ok(_) => panic!("accepted:\n{routes}"),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn has(problems: &[String], want: &str) {
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "no problem containing {want:?} in {problems:#?}"
        );
    }

    #[test]
    fn splits_are_read_with_nginx_shares() {
        let c = parse(&format!(
            "{HEAD}[[routes]]\nsplit = [{{ upstream = \"v2\", percent = 0.5 }}, {{ upstream = \"v1\" }}]\n\
             [[routes]]\npath_prefix = \"/b/\"\nsplit_by = \"header:X-User\"\n\
             split = [{{ upstream = \"v1\", percent = 90 }}, {{ upstream = \"v2\", percent = 10 }}]\n"
        ))
        .unwrap();
        let RouteTarget::Split(s) = &c.routes[0].target else {
            panic!("{:?}", c.routes[0].target);
        };
        assert_eq!(s.by, DEFAULT_SPLIT_BY);
        assert_eq!(s.parts[0].share, Some(50));
        assert_eq!(s.parts[1].share, None);
        let RouteTarget::Split(s) = &c.routes[1].target else {
            panic!("{:?}", c.routes[1].target);
        };
        assert_eq!(s.by, SplitBy::Key(HashKey::Header("x-user".into())));
        assert_eq!(s.parts[1].share, Some(1000));
    }

    #[test]
    fn split_problems_have_their_key_paths() {
        let p = problems(
            "[[routes]]\nsplit = [{ upstream = \"v1\", percent = 60 }, { upstream = \"v2\", percent = 50 }]\n\
             [[routes]]\npath_prefix = \"/a/\"\nsplit = [{ upstream = \"v1\", percent = 60 }, { upstream = \"v3\", percent = 30 }]\n\
             [[routes]]\npath_prefix = \"/b/\"\nsplit = [{ upstream = \"v1\" }, { upstream = \"v2\", percent = 0.125 }]\n\
             [[routes]]\npath_prefix = \"/c/\"\nupstream = \"v1\"\nsplit = [{ upstream = \"v1\" }]\n\
             [[routes]]\npath_prefix = \"/d/\"\nsplit = [{ upstream = \"v1\", percent = \"10%\", weight = 1 }, { upstream = \"v2\" }]\nsplit_by = \"query\"\n\
             [[routes]]\npath_prefix = \"/e/\"\nupstream = \"v1\"\nsplit_by = \"random\"\n\
             [[routes]]\npath_prefix = \"/f/\"\nsplit = []\n",
        );
        has(
            &p,
            "routes[0].split: the percentages add up to 110%, over 100%",
        );
        has(&p, "routes[1].split[1].upstream: unknown upstream \"v3\"");
        has(
            &p,
            "routes[1].split: the percentages add up to 90%: make them 100%",
        );
        has(
            &p,
            "routes[2].split[0].percent: required, except on the last entry",
        );
        has(&p, "routes[2].split[1].percent: at most two decimals");
        has(
            &p,
            "routes[3].upstream: a route has `upstream` or `split`, not both",
        );
        has(&p, "routes[4].split[0].weight: unknown key");
        has(&p, "routes[4].split_by: unknown key \"query\"");
        has(&p, "routes[5].split_by: only with `split`");
        has(&p, "routes[6].split: must name at least one upstream");
    }

    #[test]
    fn faults_are_read_and_warned_about() {
        let c = parse(&format!(
            "{HEAD}[[routes]]\nupstream = \"v1\"\n\
             fault = {{ delay = \"200ms\", delay_percent = 10, abort_status = 503, abort_percent = 5, header = \"X-Fault\" }}\n\
             [[routes]]\npath_prefix = \"/g/\"\nupstream = \"v2\"\nfault = {{ abort_grpc_status = 14 }}\n"
        ))
        .unwrap();
        let f = c.routes[0].fault.as_ref().unwrap();
        assert_eq!(
            f.delay,
            Some(FaultDelay {
                duration: std::time::Duration::from_millis(200),
                share: 1000
            })
        );
        let abort = f.abort.unwrap();
        assert_eq!(
            (abort.status, abort.grpc_status, abort.share),
            (Some(503), None, 500)
        );
        assert_eq!(f.header.as_deref(), Some("x-fault"));
        let g = c.routes[1].fault.as_ref().unwrap().abort.unwrap();
        assert_eq!(
            (g.status, g.grpc_status, g.share),
            (None, Some(14), SHARE_SCALE)
        );
        let warnings: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [
                "routes[0].fault: fault injection is on: delay 200ms to 10% and abort 503 to 5% \
                 of requests with header x-fault",
                "routes[1].fault: fault injection is on: abort grpc-status 14 to 100% of requests",
            ]
        );
        assert!(c.routes.iter().all(|r| r.label().starts_with("path_")));
    }

    #[test]
    fn fault_problems_have_their_key_paths() {
        let p = problems(
            "[[routes]]\nupstream = \"v1\"\nfault = { delay_percent = 10, abort_percent = 5 }\n\
             [[routes]]\npath_prefix = \"/a/\"\nupstream = \"v1\"\nfault = { delay = \"0s\", abort_status = 99, abort_percent = 101 }\n\
             [[routes]]\npath_prefix = \"/b/\"\nupstream = \"v1\"\nfault = { abort_grpc_status = 17, header = \"x y\", status = 1 }\n\
             [[routes]]\npath_prefix = \"/c/\"\nrespond = 204\nfault = { abort_status = 503 }\n",
        );
        has(&p, "routes[0].fault.delay_percent: only with `delay`");
        has(
            &p,
            "routes[0].fault.abort_percent: only with `abort_status` or `abort_grpc_status`",
        );
        has(
            &p,
            "routes[0].fault: give `delay` or `abort_status`/`abort_grpc_status`",
        );
        has(&p, "routes[1].fault.delay: must be greater than zero");
        has(&p, "routes[1].fault.abort_status: must be at least 200");
        has(&p, "routes[1].fault.abort_percent: must be from 0 to 100");
        has(&p, "routes[2].fault.status: unknown key");
        has(&p, "routes[2].fault.abort_grpc_status: must be at most 16");
        has(&p, "routes[2].fault.header: must be a header name");
        has(
            &p,
            "routes[3].fault: only applies to routes with an upstream",
        );
    }
}
