//! Validation of the header rules (`set_request_headers`, `add_response_headers`,
//! `add_response_headers_always`) of upstreams and routes, each problem reported with its key
//! path.

use std::collections::BTreeMap;

use super::file::*;
use super::{rule_name, AddedHeader, HeaderRule, ResponseHeaders, Template};
use crate::config::validate::{join, Checker};

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
