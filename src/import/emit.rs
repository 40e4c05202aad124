//! [`Import`] → lb's TOML, written by hand so every table and backend carries a comment naming
//! the NGINX line it came from. Keys that equal lb's defaults (`strategy = "round_robin"`,
//! `host_header = "client"`) are left out.

use std::fmt::Write;

use super::model::*;

/// The TOML text of `import`.
pub fn toml(import: &Import) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Imported from {} by `lb import-nginx`: read the notes it printed, then `lb --check`.",
        import.source
    );
    server(&mut s, import);
    if let Some(r) = &import.resolver {
        let _ = writeln!(s, "\n# {}: resolver\n[resolver]", r.loc);
        let _ = writeln!(s, "nameservers = [{}]", strings(&r.nameservers));
        if let Some(t) = &r.timeout {
            let _ = writeln!(s, "timeout = {}", string(t));
        }
    }
    for u in &import.upstreams {
        upstream(&mut s, u);
    }
    for l in &import.rate_limits {
        rate_limit(&mut s, l);
    }
    for r in &import.routes {
        route(&mut s, r);
    }
    s
}

fn rate_limit(s: &mut String, l: &super::limit::RateLimit) {
    let z = &l.zone;
    let _ = writeln!(
        s,
        "\n# {}: limit_req_zone{}\n[rate_limits.{}]",
        z.loc,
        match &l.set_by {
            Some(at) => format!(", with the limit_req at {at}"),
            None => " (no location uses it)".to_string(),
        },
        key(&z.name)
    );
    let _ = writeln!(s, "key = {}", string(&z.key));
    let _ = writeln!(s, "rate = {}", string(&z.rate));
    if l.burst > 0 {
        let _ = writeln!(s, "burst = {}", l.burst);
    }
    match l.delay {
        None => {
            let _ = writeln!(s, "nodelay = true");
        }
        Some(0) => {}
        Some(d) => {
            let _ = writeln!(s, "delay = {d}");
        }
    }
    let _ = writeln!(s, "status = {}", l.status);
    let _ = writeln!(s, "max_keys = {}", z.max_keys);
    if l.dry_run {
        let _ = writeln!(s, "dry_run = true");
    }
}

fn server(s: &mut String, import: &Import) {
    let _ = writeln!(s, "\n[server]");
    if !import.listen.is_empty() || import.tls_listen.is_empty() {
        listen(s, &import.listen, &import.proxy_protocol);
    }
    if let Some(k) = &import.keepalive {
        let _ = writeln!(
            s,
            "upstream_keepalive_pool_size = {}  # {}: keepalive (summed over upstreams)",
            k.value, k.loc
        );
    }
    for (k, v, why) in &import.server_keys {
        let _ = writeln!(s, "{k} = {v}  # {why}");
    }
    if import.tls_listen.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n[server.tls]");
    listen(s, &import.tls_listen, &import.proxy_protocol);
    let _ = writeln!(s, "certificates = [");
    for c in &import.certificates {
        let _ = writeln!(
            s,
            "  {{ cert = {}, key = {} }},  # {}",
            string(&c.cert),
            string(&c.key),
            c.loc
        );
    }
    let _ = writeln!(s, "]");
    match &import.http2 {
        Some(loc) => {
            let _ = writeln!(s, "http2 = true  # {loc}");
        }
        None => {
            let _ = writeln!(s, "http2 = false  # no http2 on NGINX's TLS servers");
        }
    }
    if let Some(v) = &import.tls_min_version {
        let _ = writeln!(
            s,
            "min_version = {}  # {}: ssl_protocols",
            string(&v.value),
            v.loc
        );
    }
}

fn listen(s: &mut String, list: &[At<String>], proxied: &[String]) {
    let _ = writeln!(s, "listen = [");
    for l in list {
        let addr = string(&l.value);
        if proxied.contains(&l.value) {
            let table = format!("{{ address = {addr}, proxy_protocol = true }}");
            let _ = writeln!(s, "  {table},  # {}: listen ... proxy_protocol", l.loc);
        } else {
            let _ = writeln!(s, "  {addr},  # {}: listen", l.loc);
        }
    }
    let _ = writeln!(s, "]");
}

fn upstream(s: &mut String, u: &Upstream) {
    let key = format!("upstreams.{}", key(&u.name));
    let _ = writeln!(s, "\n# {}: {}\n[{key}]", u.loc, u.label);
    if let Some(strategy) = u.strategy {
        let _ = writeln!(s, "strategy = {}", string(strategy));
    }
    if let Some(k) = &u.hash_key {
        let _ = writeln!(s, "hash_key = {}", string(k));
    }
    let settings = u.settings.clone().unwrap_or_default();
    if let Some(h) = settings
        .host_header
        .clone()
        .filter(|h| h.value != HostHeader::Client)
    {
        let _ = writeln!(
            s,
            "host_header = {}  # {}",
            string(h.value.as_toml()),
            h.loc
        );
    }
    let _ = writeln!(s, "backends = [");
    for b in &u.backends {
        let _ = writeln!(s, "  {},  # {}", backend(b), b.loc);
    }
    let _ = writeln!(s, "]");
    for (k, v) in [
        ("connect_timeout", &settings.connect_timeout),
        ("read_timeout", &settings.read_timeout),
        ("write_timeout", &settings.write_timeout),
    ] {
        if let Some(v) = v {
            let _ = writeln!(s, "{k} = {}  # {}", string(&v.value), v.loc);
        }
    }
    if let Some(r) = &settings.retries {
        let _ = writeln!(s, "retries = {}  # {}", r.value, r.loc);
    }
    let p = &u.passive;
    let _ = writeln!(s, "# {}\n[{key}.passive]", p.why);
    let _ = writeln!(s, "consecutive_failures = {}", p.consecutive_failures);
    if let Some(t) = &p.fail_timeout {
        let t = string(t);
        let _ = writeln!(
            s,
            "ejection_time = {t}\nmax_ejection_time = {t}\nmax_ejected_percent = 100"
        );
    }
    if let Some(t) = &p.slow_start {
        let _ = writeln!(s, "slow_start = {}", string(t));
    }
    if u.tls {
        tls(s, &key, u, &settings);
    }
}

/// `[upstreams.X.tls]` from `proxy_ssl_*`: verification stays on when NGINX had it on.
fn tls(s: &mut String, key: &str, u: &Upstream, settings: &UseSettings) {
    let on = |v: &Option<At<String>>| v.as_ref().is_some_and(|v| v.value == "on");
    let verify = on(&settings.ssl_verify);
    let _ = writeln!(s, "[{key}.tls]");
    if !verify {
        let _ = writeln!(
            s,
            "# proxy_pass https://: NGINX verifies no backend certificate unless proxy_ssl_verify on (its default is off)\nverify = false"
        );
        return;
    }
    let v = settings
        .ssl_verify
        .as_ref()
        .map(|v| v.loc.to_string())
        .unwrap_or_default();
    let _ = writeln!(s, "verify = true  # {v}: proxy_ssl_verify on");
    if let Some(ca) = &settings.ssl_ca {
        let _ = writeln!(
            s,
            "ca_file = {}  # {}: proxy_ssl_trusted_certificate",
            string(&ca.value),
            ca.loc
        );
    }
    // NGINX checks the name in proxy_ssl_name (default $proxy_host: the upstream's name or the
    // proxy_pass host); lb's sni is the name sent and checked.
    match &settings.ssl_name {
        Some(n) if !n.value.contains('$') => {
            let _ = writeln!(s, "sni = {}  # {}: proxy_ssl_name", string(&n.value), n.loc);
        }
        _ if u.label.starts_with("upstream ") => {
            let _ = writeln!(
                s,
                "sni = {}  # NGINX checks the certificate against $proxy_host, the upstream's name",
                string(&u.name)
            );
        }
        _ => {}
    }
}

/// A backend as a plain string, or an inline table when it has settings.
fn backend(b: &Backend) -> String {
    let mut fields = Vec::new();
    if let Some(w) = b.weight {
        fields.push(format!("weight = {w}"));
    }
    if let Some(m) = b.max_conns {
        fields.push(format!("max_conns = {m}"));
    }
    if let Some(h) = &b.hash_name {
        fields.push(format!("hash_name = {}", string(h)));
    }
    for (flag, name) in [
        (b.backup, "backup"),
        (b.down, "down"),
        (b.resolve, "resolve"),
    ] {
        if flag {
            fields.push(format!("{name} = true"));
        }
    }
    let (k, v) = match &b.srv {
        Some(srv) => ("srv", srv),
        None => ("address", &b.address),
    };
    if fields.is_empty() && b.srv.is_none() {
        return string(&b.address);
    }
    if fields.is_empty() {
        return format!("{{ {k} = {} }}", string(v));
    }
    format!("{{ {k} = {}, {} }}", string(v), fields.join(", "))
}

/// TOML strings, comma-separated (the inside of an array).
fn strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| string(i)).collect();
    quoted.join(", ")
}

fn route(s: &mut String, r: &Route) {
    let _ = writeln!(s, "\n# {}: {}\n[[routes]]", r.loc, r.label);
    if let Some(h) = &r.host {
        let _ = writeln!(s, "host = {}", string(h));
    }
    let (k, v) = match &r.path {
        PathMatch::Exact(p) => ("path_exact", p),
        PathMatch::Prefix(p) => ("path_prefix", p),
        PathMatch::Regex(p) => ("path_regex", p),
    };
    let _ = writeln!(s, "{k} = {}", string(v));
    if r.skip_regex {
        let _ = writeln!(s, "skip_regex = true");
    }
    if let Some(p) = &r.replace_prefix {
        let _ = writeln!(s, "replace_prefix = {}", string(p));
    }
    if let Some(scheme) = r.scheme {
        let _ = writeln!(s, "scheme = {}", string(scheme));
    }
    if !r.listen.is_empty() {
        let _ = writeln!(s, "listen = [{}]", strings(&r.listen));
    }
    if !r.rate_limits.is_empty() {
        let _ = writeln!(s, "rate_limits = [{}]", strings(&r.rate_limits));
    }
    if !r.access.is_empty() {
        let _ = writeln!(s, "access = [{}]  # allow/deny", strings(&r.access));
    }
    if let Some(m) = &r.mirror {
        let _ = writeln!(s, "mirror = {{ upstream = {} }}  # mirror", string(m));
    }
    route_target(s, r);
    route_settings(s, &r.settings);
}

/// What a route does: `kafka`, `split`, `upstream` or `respond` and their keys.
fn route_target(s: &mut String, r: &Route) {
    match (&r.respond, &r.split, &r.kafka) {
        (None, _, Some(k)) => {
            let _ = writeln!(
                s,
                "kafka = {{ topic = {}, brokers = [{}] }}  # {}, brokers {}",
                string(&k.topic.value),
                strings(&k.brokers.value),
                k.topic.loc,
                k.brokers.loc
            );
        }
        (None, Some(split), None) => {
            let parts: Vec<String> = split
                .parts
                .iter()
                .map(|(percent, up)| match percent {
                    Some(p) => format!("{{ upstream = {}, percent = {p} }}", string(up)),
                    None => format!("{{ upstream = {} }}", string(up)),
                })
                .collect();
            let _ = writeln!(
                s,
                "split = [{}]  # {}: split_clients",
                parts.join(", "),
                split.loc
            );
            let _ = writeln!(s, "split_by = {}", string(&split.by));
        }
        (None, None, None) => {
            let _ = writeln!(s, "upstream = {}", string(&r.upstream));
        }
        (Some(a), ..) => {
            let _ = writeln!(s, "respond = {}", a.status);
            if let Some(b) = &a.body {
                let _ = writeln!(s, "body = {}", string(b));
            }
            if let Some(l) = &a.location {
                let _ = writeln!(s, "location = {}", string(l));
            }
            if let Some(t) = &a.content_type {
                let _ = writeln!(s, "content_type = {}", string(t));
            }
        }
    }
}

/// A route's header rules, timeouts and body limit, each line with its NGINX source.
fn route_settings(s: &mut String, r: &RouteSettings) {
    for (key, t) in &r.timeouts {
        let _ = writeln!(s, "{key} = {}  # {}", string(&t.value), t.loc);
    }
    if let Some(b) = &r.max_body_bytes {
        let note = if b.value == 0 { ", 0: no limit" } else { "" };
        let _ = writeln!(s, "max_body_bytes = {}  # {}{note}", b.value, b.loc);
    }
    // `always` on every line: said once for the table; else on each line that has it.
    let all_always = r.add_headers.iter().all(|h| h.value.2);
    if all_always && !r.add_headers.is_empty() {
        let _ = writeln!(s, "add_response_headers_always = true");
    }
    // Tables last: every key after them would be theirs.
    if !r.set_headers.is_empty() {
        let _ = writeln!(s, "[routes.set_request_headers]");
        for h in &r.set_headers {
            let (name, value) = &h.value;
            let _ = writeln!(s, "{} = {}  # {}", string(name), string(value), h.loc);
        }
    }
    if !r.add_headers.is_empty() {
        let _ = writeln!(s, "[routes.add_response_headers]");
        for h in &r.add_headers {
            let (name, value, always) = &h.value;
            let value = match *always && !all_always {
                true => format!("{{ value = {}, always = true }}", string(value)),
                false => string(value),
            };
            let _ = writeln!(s, "{} = {value}  # {}", string(name), h.loc);
        }
    }
}

/// A TOML basic string.
pub fn string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A table key: bare when TOML allows it, quoted otherwise.
pub fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        k.to_string()
    } else {
        string(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_keys_are_valid_toml() {
        assert_eq!(string("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(key("api-v2_x"), "api-v2_x");
        assert_eq!(key("api.example.com"), "\"api.example.com\"");
        let doc = format!("[upstreams.{}]\nx = {}\n", key("a.b c"), string("\u{1}é\\"));
        let t: toml::Table = doc.parse().unwrap();
        assert_eq!(t["upstreams"]["a.b c"]["x"].as_str(), Some("\u{1}é\\"));
    }
}
