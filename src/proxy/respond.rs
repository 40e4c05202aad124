//! The answer of a `respond` route (NGINX's `return`): its status, its body or `Location` with
//! the request's variables filled in.

use pingora_core::protocols::http::ServerSession;

use crate::config::respond::{Respond, Var};

/// (body, location) of `a` for this request; `tls`: it came over HTTPS; `path`: the
/// normalized path.
pub fn render(
    session: &ServerSession,
    tls: bool,
    a: &Respond,
    path: &str,
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
            if let Some(ip) = super::limit::client_ip(session) {
                out.push_str(&ip.to_string());
            }
        }
    };
    let body = a.body.as_ref().map(|t| t.render(fill)).unwrap_or_default();
    let location = a.location.as_ref().map(|t| t.render(fill));
    (body, location)
}
