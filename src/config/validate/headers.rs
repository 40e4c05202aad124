//! Validation of the header rules (`set_request_headers`, `add_response_headers`,
//! `add_response_headers_always`) of upstreams and routes, and of a route's own timeouts and
//! body limit, each problem reported with its key path.

use super::*;
use crate::config::headers::{rule_name, AddedHeader, HeaderRule, ResponseHeaders, Template};

impl Checker {
    /// A `set_request_headers` table: names and values (templates).
    pub(in crate::config) fn header_rules(
        &mut self,
        path: &str,
        table: Option<BTreeMap<String, String>>,
    ) -> Option<Vec<HeaderRule>> {
        let rules = table?
            .into_iter()
            .filter_map(|(name, value)| self.header_rule(path, &name, &value))
            .collect();
        Some(rules)
    }

    /// One header and its value, or `None` after reporting why not at `path."name"`.
    fn header_rule(&mut self, path: &str, name: &str, value: &str) -> Option<HeaderRule> {
        let at = format!("{path}.{name:?}");
        let name = rule_name(name).map_err(|m| self.problem(&at, m));
        let value = Template::parse(value).map_err(|m| self.problem(&at, m));
        Some(HeaderRule {
            name: name.ok()?,
            value: value.ok()?,
        })
    }

    /// `add_response_headers`, each entry `always` when it says so or, by default,
    /// `add_response_headers_always` (which needs the table).
    pub(in crate::config) fn response_headers(
        &mut self,
        path: &str,
        table: Option<BTreeMap<String, AddHeaderFile>>,
        always: Option<bool>,
    ) -> Option<ResponseHeaders> {
        if always.is_some() && table.is_none() {
            self.problem(
                join(path, "add_response_headers_always"),
                "only applies with add_response_headers (at the same level)",
            );
        }
        let key = join(path, "add_response_headers");
        let mut headers = Vec::new();
        for (name, entry) in table? {
            let (value, own) = match entry {
                AddHeaderFile::Value(v) => (v, None),
                AddHeaderFile::Table(t) => (t.value, t.always),
            };
            if value.is_empty() {
                let msg = "an added header needs a value (NGINX ignores an empty add_header)";
                self.problem(format!("{key}.{name:?}"), msg);
                continue;
            }
            if let Some(rule) = self.header_rule(&key, &name, &value) {
                let always = own.or(always).unwrap_or(false);
                headers.push(AddedHeader { rule, always });
            }
        }
        Some(ResponseHeaders { headers })
    }

    /// The keys of a `respond` route that only mean something for proxied requests.
    pub(in crate::config) fn proxied_only(&mut self, path: &str, r: &RouteFile) {
        let set = [
            ("set_request_headers", r.set_request_headers.is_some()),
            ("add_response_headers", r.add_response_headers.is_some()),
            ("connect_timeout", r.connect_timeout.is_some()),
            ("read_timeout", r.read_timeout.is_some()),
            ("write_timeout", r.write_timeout.is_some()),
            ("mirror", r.mirror.is_some()),
            ("fault", r.fault.is_some()),
        ];
        for (key, _) in set.iter().filter(|(_, is_set)| *is_set) {
            self.problem(join(path, key), "only applies to routes with an upstream");
        }
    }

    /// A route's `connect_timeout`, `read_timeout` and `write_timeout`.
    pub(in crate::config) fn route_timeouts(&mut self, path: &str, r: &RouteFile) -> RouteTimeouts {
        let mut one = |key: &str, v: &Option<String>| {
            let v = v.as_deref()?;
            Some(self.duration(&join(path, key), Some(v), Duration::ZERO, false))
                .filter(|d| !d.is_zero())
        };
        RouteTimeouts {
            connect: one("connect_timeout", &r.connect_timeout),
            read: one("read_timeout", &r.read_timeout),
            write: one("write_timeout", &r.write_timeout),
        }
    }

    /// A route's `max_body_bytes`: `0` is no limit (NGINX's `client_max_body_size 0`).
    pub(in crate::config) fn route_body_limit(
        &mut self,
        path: &str,
        v: Option<i64>,
    ) -> Option<u64> {
        let n = self.int(&join(path, "max_body_bytes"), Some(v?), 0, i64::MAX, 0);
        Some(if n == 0 { u64::MAX } else { n as u64 })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::headers::{Piece, Var};
    use crate::config::parse;

    const UP: &str =
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\n[upstreams.a]\nbackends = [\"127.0.0.1:1\"]\n";

    use crate::config::validate::problems_of as problems;

    #[test]
    fn header_rules_parse_into_templates() {
        let text = format!(
            "{UP}set_request_headers = {{ \"X-Up\" = \"1\" }}\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"a\"\n\
             set_request_headers = {{ \"X-Host\" = \"$host:$server_port\", \"X-Gone\" = \"\" }}\n\
             add_response_headers = {{ \"X-Frame-Options\" = \"DENY\", \"X-B\" = {{ value = \"b\", always = false }} }}\n\
             add_response_headers_always = true\n\
             read_timeout = \"1h\"\nmax_body_bytes = 0\n"
        );
        let c = parse(&text).unwrap();
        let r = &c.routes[0];
        let set = r.set_request_headers.as_ref().unwrap();
        assert_eq!(set.len(), 2);
        let host = set.iter().find(|h| h.name == "x-host").unwrap();
        assert_eq!(host.value.pieces[0], Piece::Var(Var::Host));
        assert!(set.iter().any(|h| h.name == "x-gone" && h.value.is_empty()));
        let add = r.add_response_headers.as_ref().unwrap();
        let added = |n: &str| add.headers.iter().find(|h| h.rule.name == n).unwrap();
        let xfo = added("x-frame-options");
        assert!(xfo.always && xfo.rule.value.fixed.is_some());
        assert!(!added("x-b").always, "an entry's own `always` wins");
        assert_eq!(r.timeouts.read, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(r.max_body_bytes, Some(u64::MAX));
        assert_eq!(c.server.limits.max_body_bytes_any_route, u64::MAX);
        assert_eq!(c.upstreams[0].set_request_headers.len(), 1);
    }

    #[test]
    fn bad_header_rules_are_named_by_key_path() {
        let text = format!(
            "{UP}add_response_headers_always = true\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"a\"\n\
             set_request_headers = {{ \"X-A\" = \"$http_x_b\", \"Connection\" = \"\" }}\n\
             add_response_headers = {{ \"X-E\" = \"\" }}\n\
             read_timeout = \"soon\"\nmax_body_bytes = -1\n"
        );
        let got = problems(&text);
        for want in [
            "upstreams.a.add_response_headers_always: only applies with add_response_headers",
            "routes[0].set_request_headers.\"X-A\": unknown variable $http_x_b",
            "routes[0].set_request_headers.\"Connection\": lb manages",
            "routes[0].add_response_headers.\"X-E\": an added header needs a value",
            "routes[0].read_timeout:",
            "routes[0].max_body_bytes: must be at least 0",
        ] {
            assert!(
                got.iter().any(|p| p.starts_with(want)),
                "{want} in {got:#?}"
            );
        }
    }
}
