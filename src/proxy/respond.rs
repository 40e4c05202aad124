//! The answer of a `respond` route (NGINX's `return`): its status, its body or `Location` with
//! the request's variables filled in.

use pingora_core::protocols::http::ServerSession;

use crate::config::respond::{Respond, Var};

/// (body, location) of `a` for this request; `tls`: it came over HTTPS; `path`: the
/// normalized path; `client`: its client address (`$remote_addr`).
pub fn render(
    session: &ServerSession,
    tls: bool,
    a: &Respond,
    path: &str,
    client: Option<std::net::IpAddr>,
) -> (String, Option<String>) {
    let req = session.req_header();
    // `/x?` has no arguments, as in NGINX.
    let query = req.uri.query().filter(|q| !q.is_empty());
    let fill = |v: Var, out: &mut String| match v {
        Var::Scheme => out.push_str(if tls { "https" } else { "http" }),
        Var::Host => {
            let host = super::headers::request_host(req).map(crate::snapshot::host_name);
            match host.filter(|h| !h.is_empty()) {
                Some(h) => out.extend(h.chars().map(|c| c.to_ascii_lowercase())),
                // No Host (HTTP/1.0): the address the client reached (NGINX would name its
                // server_name; lb's routes have none to name).
                None => {
                    match session
                        .server_addr()
                        .and_then(|a| a.as_inet())
                        .map(|a| a.ip())
                    {
                        Some(std::net::IpAddr::V6(ip)) => out.push_str(&format!("[{ip}]")),
                        Some(ip) => out.push_str(&ip.to_string()),
                        None => {}
                    }
                }
            }
        }
        Var::RequestUri => {
            let raw = req.raw_path();
            if raw.starts_with(b"/") {
                out.push_str(&String::from_utf8_lossy(raw));
            } else {
                // Absolute form (`GET http://host/p?q`): NGINX's $request_uri is `/p?q`.
                out.push_str(req.uri.path_and_query().map_or("/", |p| p.as_str()));
            }
        }
        Var::Uri => out.push_str(path),
        Var::Args => out.push_str(query.unwrap_or("")),
        Var::IsArgs => {
            if query.is_some() {
                out.push('?')
            }
        }
        Var::RemoteAddr => {
            if let Some(ip) = client {
                out.push_str(&ip.to_string());
            }
        }
    };
    let body = a.body.as_ref().map(|t| t.render(fill)).unwrap_or_default();
    let location = a
        .location
        .as_ref()
        .map(|t| t.render(fill))
        .map(no_network_path);
    (body, location)
}

/// A relative `Location` that starts with `//` is a network-path reference: browsers follow
/// `//evil.example/x` to another host. A `$request_uri` or `$uri` filled from a request such as
/// `GET //evil.example/..` must not make lb an open redirect, so the leading slashes of a
/// relative location collapse into one (absolute locations, `scheme://...`, are untouched).
fn no_network_path(mut location: String) -> String {
    let slashes = location
        .bytes()
        .take_while(|&b| b == b'/' || b == b'\\')
        .count();
    if slashes > 1 || location.starts_with('\\') {
        location.replace_range(..slashes, "/");
    }
    location
}

#[cfg(test)]
mod tests {
    use super::no_network_path;

    #[test]
    fn relative_locations_never_name_another_host() {
        for (rendered, sent) in [
            ("//evil.example/../old/x/", "/evil.example/../old/x/"),
            ("///evil.example/", "/evil.example/"),
            ("/\\evil.example/", "/evil.example/"),
            ("\\evil.example/", "/evil.example/"),
            ("/ok/path", "/ok/path"),
            ("https://example.com//x", "https://example.com//x"),
            ("relative/x", "relative/x"),
        ] {
            assert_eq!(no_network_path(rendered.to_string()), sent, "{rendered}");
        }
    }
}
