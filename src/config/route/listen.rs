//! `routes[i].listen`: the listeners a route serves (NGINX picks the `server` block by the
//! address a connection came to before its `server_name`), and when two routes clash.

use std::net::SocketAddr;

use toml::Value;

use crate::config::validate::{join, Checker};
use crate::config::Scheme;

/// What makes two routes the same route: host, path, and where they apply.
pub(in crate::config) struct RouteKey {
    pub host: Option<String>,
    pub path: String,
    pub scheme: Option<Scheme>,
    pub listen: Option<Vec<SocketAddr>>,
}

impl RouteKey {
    /// Same host and path on some scheme and listener both apply to.
    pub fn clashes(&self, other: &RouteKey) -> bool {
        let scheme = match (self.scheme, other.scheme) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        let listen = match (&self.listen, &other.listen) {
            (Some(a), Some(b)) => a.iter().any(|x| b.contains(x)),
            _ => true,
        };
        self.host == other.host && self.path == other.path && scheme && listen
    }
}

impl Checker {
    /// `routes[i].listen`: one address or a list, each one of `server.listen` or
    /// `server.tls.listen` (as written there: `0.0.0.0:80` is not `127.0.0.1:80`).
    pub(in crate::config) fn route_listen(
        &mut self,
        route: &str,
        value: Option<Value>,
        scheme: Option<Scheme>,
    ) -> Option<Vec<SocketAddr>> {
        let path = join(route, "listen");
        let items = match value? {
            Value::String(s) => vec![(path.clone(), Value::String(s))],
            Value::Array(a) if a.is_empty() => {
                let msg = "must name at least one listener (leave it out for every listener)";
                self.problem(path, msg);
                return None;
            }
            Value::Array(a) => a
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect(),
            _ => {
                self.problem(path, "must be an address or a list of addresses");
                return None;
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (at, v) in items {
            let Some(text) = v.as_str() else {
                self.problem(at, "must be an address string (\"127.0.0.1:8080\")");
                continue;
            };
            let Some(addr) = self.socket_addr(&at, text) else {
                continue;
            };
            let Some(tls) = self.proxy_listener(addr) else {
                let msg = format!("{addr} is not one of server.listen or server.tls.listen");
                self.problem(at, msg);
                continue;
            };
            let other = match (scheme, tls) {
                (Some(Scheme::Http), true) => Some("an HTTPS"),
                (Some(Scheme::Https), false) => Some("a plain"),
                _ => None,
            };
            if let Some(kind) = other {
                let msg =
                    format!("{addr} is {kind} listener: the route's scheme never matches there");
                self.problem(at, msg);
            }
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        Some(out)
    }

    /// Whether `addr` is a proxy listener: `Some(true)` an HTTPS one, `Some(false)` a plain one.
    fn proxy_listener(&self, addr: SocketAddr) -> Option<bool> {
        let (path, _) = self.listeners.iter().find(|(_, a)| *a == addr)?;
        if path.starts_with("server.tls.listen") {
            Some(true)
        } else {
            path.starts_with("server.listen").then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const HEAD: &str = "[server]\nlisten = [\"127.0.0.1:1\", \"0.0.0.0:2\"]\n\
                        [admin]\nlisten = \"127.0.0.1:3\"\n\
                        [upstreams.a]\nbackends = [\"127.0.0.1:9\"]\n";

    fn problems(routes: &str) -> Vec<String> {
        match parse(&format!("{HEAD}{routes}")) {
            Ok(_) => panic!("accepted:\n{routes}"),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_route_names_proxy_listeners() {
        let c = parse(&format!(
            "{HEAD}[[routes]]\nlisten = \"127.0.0.1:1\"\nupstream = \"a\"\n\
             [[routes]]\nlisten = [\"0.0.0.0:2\", \"127.0.0.1:1\"]\npath_prefix = \"/x/\"\nupstream = \"a\"\n\
             [[routes]]\nupstream = \"a\"\npath_prefix = \"/y/\"\n"
        ))
        .unwrap();
        let listen: Vec<_> = c.routes.iter().map(|r| r.listen.clone()).collect();
        let (one, two) = ("127.0.0.1:1".parse().unwrap(), "0.0.0.0:2".parse().unwrap());
        assert_eq!(listen, [Some(vec![one]), Some(vec![two, one]), None]);
        assert!(c.summary().contains("listen=0.0.0.0:2,127.0.0.1:1"));
    }

    #[test]
    fn unknown_listeners_and_bad_values_are_problems() {
        let p = problems(
            "[[routes]]\nlisten = \"127.0.0.1:2\"\nupstream = \"a\"\n\
             [[routes]]\nlisten = [\"127.0.0.1:1\", \"127.0.0.1:3\", \"nowhere\", 5]\nupstream = \"a\"\npath_prefix = \"/b/\"\n\
             [[routes]]\nlisten = []\nupstream = \"a\"\npath_prefix = \"/c/\"\n\
             [[routes]]\nlisten = 80\nupstream = \"a\"\npath_prefix = \"/d/\"\n\
             [[routes]]\nlisten = \"127.0.0.1:1\"\nscheme = \"https\"\nupstream = \"a\"\npath_prefix = \"/e/\"\n",
        );
        let want = [
            "routes[0].listen: 127.0.0.1:2 is not one of server.listen or server.tls.listen",
            // The admin listener is no proxy listener.
            "routes[1].listen[1]: 127.0.0.1:3 is not one of server.listen",
            "routes[1].listen[2]: invalid address \"nowhere\"",
            "routes[1].listen[3]: must be an address string",
            "routes[2].listen: must name at least one listener",
            "routes[3].listen: must be an address or a list of addresses",
            "routes[4].listen: 127.0.0.1:1 is a plain listener: the route's scheme never matches",
        ];
        for w in want {
            assert!(p.iter().any(|p| p.contains(w)), "{w:?} not in {p:#?}");
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
    }

    #[test]
    fn routes_on_different_listeners_do_not_clash() {
        let p = problems(
            "[[routes]]\nlisten = \"127.0.0.1:1\"\nupstream = \"a\"\n\
             [[routes]]\nlisten = \"0.0.0.0:2\"\nupstream = \"a\"\n\
             [[routes]]\nlisten = [\"0.0.0.0:2\"]\nhost = \"x.example\"\nupstream = \"a\"\n\
             [[routes]]\nhost = \"x.example\"\nupstream = \"a\"\n",
        );
        assert_eq!(
            p,
            ["routes[3]: duplicate route: same host and path_prefix=/ as an earlier route"],
        );
    }
}
