//! The NGINX-migration keys: strategies, `hash_key`, `host_header`, the backend entry and the
//! routing keys, each bad value reported with its key path.

use super::*;

const HEAD: &str = "[server]\nlisten = [\"127.0.0.1:1\"]\n";

fn problems(body: &str) -> Vec<String> {
    match parse(&format!("{HEAD}{body}")) {
        Ok(_) => panic!("accepted:\n{body}"),
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

fn has(problems: &[String], want: &str) {
    assert!(
        problems.iter().any(|p| p.contains(want)),
        "no problem containing {want:?} in {problems:#?}"
    );
}

fn ok(body: &str) -> Config {
    parse(&format!("{HEAD}{body}")).unwrap_or_else(|p| panic!("{p:#?}\n{body}"))
}

#[test]
fn strategies_and_hash_keys() {
    for s in [
        "round_robin",
        "least_connections",
        "random",
        "two_choices",
        "ip_hash",
    ] {
        let c = ok(&format!(
            "[upstreams.a]\nstrategy = \"{s}\"\nbackends = [\"127.0.0.1:2\"]\n"
        ));
        assert_eq!(c.upstreams[0].strategy.as_str(), s);
    }
    for (key, want) in [
        ("client_ip", HashKey::ClientIp),
        ("uri", HashKey::Uri),
        ("path", HashKey::Path),
        ("header:X-User", HashKey::Header("x-user".into())),
        ("cookie:session", HashKey::Cookie("session".into())),
    ] {
        let c = ok(&format!(
            "[upstreams.a]\nstrategy = \"consistent_hash\"\nhash_key = \"{key}\"\nbackends = [\"127.0.0.1:2\"]\n"
        ));
        assert_eq!(c.upstreams[0].hash_key, Some(want));
    }
    let p = problems(
        "[upstreams.a]\nstrategy = \"fastest\"\nbackends = [\"127.0.0.1:2\"]\n\
         [upstreams.b]\nhash_key = \"uri\"\nbackends = [\"127.0.0.1:3\"]\n\
         [upstreams.c]\nstrategy = \"consistent_hash\"\nbackends = [\"127.0.0.1:4\"]\n\
         [upstreams.d]\nstrategy = \"consistent_hash\"\nhash_key = \"header:\"\nbackends = [\"127.0.0.1:5\"]\n\
         [upstreams.e]\nstrategy = \"consistent_hash\"\nhash_key = \"query\"\nbackends = [\"127.0.0.1:6\"]\n\
         [[routes]]\nupstream = \"a\"\n",
    );
    has(&p, "upstreams.a.strategy: unknown strategy \"fastest\"");
    has(
        &p,
        "(expected \"round_robin\", \"least_connections\", \"random\", \"two_choices\", \
         \"ip_hash\" or \"consistent_hash\")",
    );
    has(
        &p,
        "upstreams.b.hash_key: only used with strategy \"consistent_hash\"",
    );
    has(
        &p,
        "upstreams.c.hash_key: required with strategy \"consistent_hash\"",
    );
    has(&p, "upstreams.d.hash_key: unknown hash key \"header:\"");
    has(&p, "upstreams.e.hash_key: unknown hash key \"query\"");
}

#[test]
fn the_backend_entry() {
    let c = ok("[upstreams.a]\nbackends = [\"127.0.0.1:2\", { address = \"127.0.0.1:3\", weight = 2, backup = true, max_conns = 5 }, { address = \"127.0.0.1:4\", down = true }]\n");
    let b = &c.upstreams[0].backends;
    assert!(!b[0].backup && !b[0].down && b[0].max_conns == 0);
    assert!(b[1].backup && b[1].max_conns == 5 && b[1].weight.get() == 2);
    assert!(b[2].down);
    let p = problems(
        "[upstreams.a]\nbackends = [{ address = \"127.0.0.1:2\", srv = \"_http._tcp.x\" }, { weight = 2 }, { address = \"127.0.0.1:3\", max_conns = -1 }, { address = \"127.0.0.1:4\", color = \"red\" }, { address = \"127.0.0.1:5\", backup = true, down = true }, \"127.0.0.1:6\"]\n\
         [upstreams.b]\nbackends = [{ address = \"127.0.0.1:7\", backup = true }, { address = \"127.0.0.1:8\", down = true }]\n\
         [upstreams.c]\nstrategy = \"ip_hash\"\nbackends = [\"127.0.0.1:9\", { address = \"127.0.0.1:10\", backup = true }]\n\
         [upstreams.d]\nstrategy = \"random\"\nbackends = [\"127.0.0.1:11\", { address = \"127.0.0.1:12\", backup = true }]\n\
         [[routes]]\nupstream = \"a\"\n",
    );
    has(&p, "upstreams.a.backends[0]: has both address and srv");
    has(&p, "upstreams.a.backends[1]: needs address");
    has(&p, "upstreams.a.backends[2].max_conns: must be at least 0");
    has(&p, "upstreams.a.backends[3].color: unknown key");
    has(
        &p,
        "upstreams.a.backends[4].down: a backend is a backup or down, not both",
    );
    has(
        &p,
        "upstreams.b.backends: every backend is a backup or down",
    );
    has(&p, "upstreams.c.backends[1].backup: backups need strategy");
    has(&p, "upstreams.d.backends[1].backup: backups need strategy");
}

#[test]
fn host_header() {
    let c = ok("[upstreams.a]\nhost_header = \"upstream\"\nbackends = [\"127.0.0.1:2\"]\n[upstreams.b]\nhost_header = \"api.internal:8080\"\nbackends = [\"127.0.0.1:3\"]\n[upstreams.c]\nhost_header = \"client_host\"\nbackends = [\"127.0.0.1:4\"]\n[[routes]]\nupstream = \"a\"\n");
    assert_eq!(c.upstreams[0].host_header, HostHeader::Upstream);
    assert_eq!(c.upstreams[2].host_header, HostHeader::ClientHost);
    assert_eq!(
        c.upstreams[1].host_header,
        HostHeader::Literal("api.internal:8080".into())
    );
    let p =
        problems("[upstreams.a]\nhost_header = \"bad\\nvalue\"\nbackends = [\"127.0.0.1:2\"]\n");
    has(&p, "upstreams.a.host_header: must be");
}

#[test]
fn routing_keys() {
    let c = ok(r#"
[upstreams.a]
backends = ["127.0.0.1:2"]
[[routes]]
host = "*.Example.com"
path_exact = "/x"
upstream = "a"
[[routes]]
host = ".example.org"
path_prefix = "/api/"
skip_regex = true
replace_prefix = "/v2/"
upstream = "a"
[[routes]]
path_regex = '(?i)\.php$'
upstream = "a"
[[routes]]
host = "WWW.example.*"
upstream = "a"
"#);
    assert_eq!(c.routes[0].host.as_deref(), Some("*.example.com"));
    assert_eq!(c.routes[3].host.as_deref(), Some("www.example.*"));
    assert!(matches!(&c.routes[0].path, PathMatch::Exact(p) if p == "/x"));
    assert!(c.routes[1].skip_regex);
    assert_eq!(c.routes[1].replace_prefix.as_deref(), Some("/v2/"));
    assert!(matches!(&c.routes[2].path, PathMatch::Regex(r) if r.is_match("/A.PHP")));
    let p = problems(
        r#"
[upstreams.a]
backends = ["127.0.0.1:2"]
[[routes]]
path_exact = "/x"
path_prefix = "/y"
upstream = "a"
[[routes]]
path_regex = "(unclosed"
upstream = "a"
[[routes]]
path_regex = "^/a"
replace_prefix = "/b/"
upstream = "a"
[[routes]]
path_exact = "/a"
skip_regex = true
upstream = "a"
[[routes]]
host = "a.*.com"
upstream = "a"
[[routes]]
host = "example.com:8080"
upstream = "a"
[[routes]]
path_prefix = "/p"
replace_prefix = "v2"
upstream = "a"
[[routes]]
path_exact = "x"
upstream = "a"
[[routes]]
path_regex = '(?=look)ahead'
upstream = "a"
[[routes]]
host = "*.example.*"
upstream = "a"
"#,
    );
    has(
        &p,
        "routes[0].path_prefix: give one of path_exact, path_prefix and path_regex",
    );
    has(
        &p,
        "routes[1].path_regex: invalid regular expression \"(unclosed\"",
    );
    has(
        &p,
        "routes[2].replace_prefix: only applies to path_prefix routes",
    );
    has(
        &p,
        "routes[3].skip_regex: only applies to path_prefix routes",
    );
    has(
        &p,
        "routes[4].host: \"a.*.com\": a wildcard is only allowed as a leading",
    );
    has(
        &p,
        "routes[5].host: \"example.com:8080\" is not a host name",
    );
    has(&p, "routes[6].replace_prefix: must start with '/'");
    has(&p, "routes[7].path_exact: must start with '/'");
    has(&p, "routes[8].path_regex: invalid regular expression");
    has(
        &p,
        "routes[9].host: \"*.example.*\": a wildcard is only allowed as a leading",
    );
}

#[test]
fn respond_routes_and_schemes() {
    let c = ok("[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n\
         [[routes]]\nscheme = \"http\"\nrespond = 301\nlocation = \"https://$host$request_uri\"\n\
         [[routes]]\nscheme = \"https\"\nupstream = \"api\"\n\
         [[routes]]\npath_exact = \"/healthz\"\nrespond = 200\nbody = \"ok\\n\"\n");
    let [redirect, proxied, health] = &c.routes[..] else {
        panic!("{:?}", c.routes)
    };
    assert_eq!(redirect.scheme, Some(Scheme::Http));
    let RouteTarget::Respond(r) = &redirect.target else {
        panic!("{redirect:?}")
    };
    assert_eq!(r.status, 301);
    assert_eq!(
        r.location.as_ref().unwrap().to_string(),
        "https://${host}${request_uri}"
    );
    assert_eq!(proxied.target, RouteTarget::Upstream("api".into()));
    let RouteTarget::Respond(h) = &health.target else {
        panic!("{health:?}")
    };
    assert_eq!(
        (h.status, h.body.as_ref().unwrap().to_string()),
        (200, "ok\n".into())
    );

    let p = problems(
        "[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n[rate_limits.r]\nrate = \"1/s\"\n\
         [[routes]]\npath_prefix = \"/a/\"\nrespond = 301\nbody = \"x\"\n\
         [[routes]]\npath_prefix = \"/b/\"\nrespond = 200\nlocation = \"/x\"\nreplace_prefix = \"/y/\"\n\
         [[routes]]\npath_prefix = \"/c/\"\nrespond = 700\n\
         [[routes]]\npath_prefix = \"/d/\"\nupstream = \"api\"\nrespond = 200\n\
         [[routes]]\npath_prefix = \"/e/\"\n\
         [[routes]]\npath_prefix = \"/f/\"\nrespond = 200\nbody = \"$hostname\"\nrate_limits = [\"r\"]\n\
         [[routes]]\npath_prefix = \"/g/\"\nupstream = \"api\"\nbody = \"x\"\nscheme = \"ftp\"\n\
         [[routes]]\npath_prefix = \"/h/\"\nscheme = \"http\"\nupstream = \"api\"\n\
         [[routes]]\npath_prefix = \"/h/\"\nscheme = \"https\"\nupstream = \"api\"\n\
         [[routes]]\npath_prefix = \"/h/\"\nupstream = \"api\"\n",
    );
    has(&p, "routes[0].location: required with respond = 301");
    has(&p, "routes[0].body: not with a redirect");
    has(&p, "routes[1].location: only with a redirect status");
    has(
        &p,
        "routes[1].replace_prefix: only applies to routes with an upstream",
    );
    has(&p, "routes[2].respond: must be a status from 200 to 599");
    has(
        &p,
        "routes[3].respond: a route has `upstream` (proxy) or `respond`",
    );
    has(&p, "routes[4].upstream: required (or `respond = STATUS`");
    has(&p, "routes[5].body: unknown variable $hostname");
    has(
        &p,
        "routes[5].rate_limits: only applies to routes with an upstream",
    );
    has(&p, "routes[6].body: only with `respond`");
    has(&p, "routes[6].scheme: expected \"http\" or \"https\"");
    // /h/ for http and for https do not clash; the one for both does.
    has(&p, "routes[9]: duplicate route");
    assert!(!p.iter().any(|l| l.contains("routes[8]")), "{p:#?}");
    assert_eq!(p.len(), 12, "{p:#?}");
}

#[test]
fn respond_headers_and_empty_answers() {
    let p = problems(
        "[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n\
         [[routes]]\npath_prefix = \"/a/\"\nrespond = 302\nlocation = \"/x\\r\\nSet-Cookie: a=b\"\n\
         [[routes]]\npath_prefix = \"/b/\"\nrespond = 204\nbody = \"x\"\n\
         [[routes]]\npath_prefix = \"/c/\"\nupstream = \"api\"\ncontent_type = \"text/html\"\n\
         [[routes]]\npath_prefix = \"/d/\"\nrespond = 301\nlocation = \"/\"\ncontent_type = \"text/html\"\n\
         [[routes]]\npath_prefix = \"/e/\"\nrespond = 200\ncontent_type = \"\"\n",
    );
    has(
        &p,
        "routes[0].location: must not contain control characters",
    );
    has(&p, "routes[1].body: a 204 answer has no body");
    has(&p, "routes[2].content_type: only with `respond`");
    has(&p, "routes[3].content_type: only for an answer with a body");
    has(&p, "routes[4].content_type: must be a header value");
    assert_eq!(p.len(), 5, "{p:#?}");
}
