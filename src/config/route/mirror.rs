//! Validation of a route's `mirror` table (NGINX's `mirror`): the upstream the copies go to,
//! the share copied, the body size and in-flight bounds, each problem reported with its key
//! path.

use super::file::MirrorFile;
use crate::config::validate::{join, Checker};
use crate::config::*;

/// Default `max_body_bytes` of a mirror: bodies up to 1 MiB are copied.
const DEFAULT_MIRROR_BODY: i64 = 1 << 20;
/// Default `max_in_flight` of a mirror upstream.
const DEFAULT_MIRROR_IN_FLIGHT: i64 = 64;

impl Checker {
    /// `routes[i].mirror`, or `None` (after reporting why) when it is unusable.
    pub(in crate::config) fn route_mirror(
        &mut self,
        path: &str,
        m: Option<MirrorFile>,
        upstreams: &[UpstreamConfig],
    ) -> Option<MirrorConfig> {
        let m = m?;
        let path = join(path, "mirror");
        let up = match m.upstream {
            None => {
                self.problem(
                    join(&path, "upstream"),
                    "missing: the upstream copies go to",
                );
                None
            }
            Some(name) => match upstreams.iter().find(|u| u.name == name) {
                None => {
                    let msg = format!("no upstream named {name:?}");
                    self.problem(join(&path, "upstream"), msg);
                    None
                }
                Some(u) if u.protocol == Protocol::Http2 => {
                    let msg = "mirrors go to HTTP/1 upstreams (this one has protocol = \"http2\")";
                    self.problem(join(&path, "upstream"), msg);
                    None
                }
                Some(_) => Some(name),
            },
        };
        let percent = match m.percent {
            None => 100.0,
            Some(p) if p > 0.0 && p <= 100.0 => p,
            Some(p) => {
                let msg = format!("must be more than 0 and at most 100, not {p}");
                self.problem(join(&path, "percent"), msg);
                100.0
            }
        };
        let body = join(&path, "max_body_bytes");
        let max_body_bytes = self.int(&body, m.max_body_bytes, 0, i64::MAX, DEFAULT_MIRROR_BODY);
        let in_flight = join(&path, "max_in_flight");
        let max_in_flight = self.int(
            &in_flight,
            m.max_in_flight,
            1,
            1 << 20,
            DEFAULT_MIRROR_IN_FLIGHT,
        );
        Some(MirrorConfig {
            upstream: up?,
            percent,
            max_body_bytes: max_body_bytes as u64,
            max_in_flight: max_in_flight as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const UPS: &str = "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[upstreams.a]\nbackends = [\"127.0.0.1:1\"]\n\n[upstreams.shadow]\nbackends = [\"127.0.0.1:2\"]\n\n[upstreams.h2]\nbackends = [\"127.0.0.1:3\"]\nprotocol = \"http2\"\n";

    fn problems(routes: &str) -> Vec<String> {
        crate::config::validate::problems_of(&format!("{UPS}\n{routes}"))
    }

    #[test]
    fn a_mirror_is_read_with_its_defaults() {
        let text =
            format!("{UPS}\n[[routes]]\nupstream = \"a\"\nmirror = {{ upstream = \"shadow\" }}\n");
        let c = parse(&text).unwrap();
        let m = c.routes[0].mirror.as_ref().unwrap();
        assert_eq!(m.upstream, "shadow");
        assert_eq!(m.percent, 100.0);
        assert_eq!(m.max_body_bytes, 1 << 20);
        assert_eq!(m.max_in_flight, 64);
    }

    #[test]
    fn every_mirror_problem_is_named_by_key_path() {
        let p = problems(
            "[[routes]]\nupstream = \"a\"\nmirror = { upstream = \"nope\", percent = 0, max_body_bytes = -1, max_in_flight = 0 }\n\n[[routes]]\npath_prefix = \"/b\"\nupstream = \"a\"\nmirror = { upstream = \"h2\", percent = 100.5 }\n\n[[routes]]\npath_prefix = \"/c\"\nupstream = \"a\"\nmirror = { percent = 50 }\n\n[[routes]]\npath_prefix = \"/d\"\nrespond = 204\nmirror = { upstream = \"shadow\" }\n\n[[routes]]\npath_prefix = \"/e\"\nupstream = \"a\"\nmirror = { upstream = \"shadow\", typo = 1 }\n",
        );
        let want = [
            "routes[0].mirror.upstream: no upstream named \"nope\"",
            "routes[0].mirror.percent: must be more than 0",
            "routes[0].mirror.max_body_bytes: must be at least 0",
            "routes[0].mirror.max_in_flight: must be at least 1",
            "routes[1].mirror.upstream: mirrors go to HTTP/1 upstreams",
            "routes[1].mirror.percent: must be more than 0 and at most 100, not 100.5",
            "routes[2].mirror.upstream: missing",
            "routes[3].mirror: only applies to routes with an upstream",
            "routes[4]",
        ];
        for w in want {
            assert!(p.iter().any(|x| x.starts_with(w)), "{w} not in {p:#?}");
        }
        assert!(p.iter().any(|x| x.contains("typo")), "{p:#?}");
    }
}
