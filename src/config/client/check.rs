//! Validation of the client-address settings (`server.real_ip_*`) and of a route's `access`
//! list, each problem with its key path.

use crate::config::validate::{parse_cidr, Checker};
use crate::config::*;

impl Checker {
    pub(in crate::config) fn real_ip(
        &mut self,
        from: Vec<String>,
        header: Option<String>,
        recursive: Option<bool>,
    ) -> RealIp {
        let mut real = RealIp {
            recursive: recursive.unwrap_or(false),
            ..RealIp::default()
        };
        for (i, t) in from.iter().enumerate() {
            match parse_cidr(t) {
                Ok(c) => real.from.push(c),
                Err(m) => self.problem(format!("server.real_ip_from[{i}]"), m),
            }
        }
        match header.as_deref() {
            None => {}
            Some("proxy_protocol") => self.problem(
                "server.real_ip_header",
                "a listener with `proxy_protocol = true` already takes the client address from \
                 the PROXY header (it is the connection's peer); name a request header here",
            ),
            Some(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => real.header = name,
                Err(_) => self.problem(
                    "server.real_ip_header",
                    format!("{h:?} is not a header name"),
                ),
            },
        }
        real
    }

    /// `allow CIDR`, `deny CIDR`, `allow all`, `deny all`, in order.
    pub(in crate::config) fn access(&mut self, path: &str, lines: Vec<String>) -> Vec<AccessRule> {
        let mut rules = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let mut words = line.split_whitespace();
            let allow = match words.next() {
                Some("allow") => true,
                Some("deny") => false,
                _ => {
                    self.problem(
                        format!("{path}[{i}]"),
                        format!(
                            "expected \"allow CIDR\" or \"deny CIDR\" (or `all`), got {line:?}"
                        ),
                    );
                    continue;
                }
            };
            let net = match (words.next(), words.next()) {
                (Some("all"), None) => None,
                (Some(net), None) => match parse_cidr(net) {
                    Ok(c) => Some(c),
                    Err(m) => {
                        self.problem(format!("{path}[{i}]"), m);
                        continue;
                    }
                },
                _ => {
                    self.problem(
                        format!("{path}[{i}]"),
                        format!(
                            "expected one network (a CIDR or `all`) after allow/deny in {line:?}"
                        ),
                    );
                    continue;
                }
            };
            rules.push(AccessRule { allow, net });
        }
        rules
    }
}
