//! Routing and snapshot building against parsed configs.

use super::*;

fn snap(text: &str) -> Snapshot {
    let c = crate::config::parse(text).unwrap();
    Snapshot::build(Arc::new(c), &Registry::default())
}

#[test]
fn each_kind_of_listener_has_its_routes() {
    let s = snap(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n\
         [[routes]]\nscheme = \"http\"\nrespond = 301\nlocation = \"https://$host$request_uri\"\n\
         [[routes]]\npath_prefix = \"/api/\"\nrespond = 200\n\
         [[routes]]\npath_prefix = \"/k/\"\nkafka = { topic = \"t\", brokers = [\"127.0.0.1:9\"] }\n",
    );
    let target = |tls: bool, path: &str| match s.route_on(tls, None, None, path) {
        Some(Routed::To(Route {
            target: Target::Kafka(k),
            ..
        })) => k.label.to_string(),
        Some(Routed::To(Route {
            target: Target::Respond(a),
            ..
        })) => format!("respond {}", a.status),
        Some(Routed::To(Route {
            target: Target::Upstream(i),
            ..
        })) => format!("upstream {i}"),
        Some(Routed::To(Route {
            target: Target::Split(_),
            ..
        })) => "split".into(),
        Some(Routed::AddSlash) => "add slash".into(),
        None => "none".into(),
    };
    assert_eq!(target(false, "/x"), "respond 301");
    assert_eq!(target(false, "/api/x"), "respond 200");
    assert_eq!(target(true, "/k/x"), "kafka:t");
    // A respond prefix is no proxied location: no slash redirect for it.
    assert_eq!(target(false, "/api"), "respond 301");
    // On HTTPS only /api/ has a route, so nothing else matches (there are routes for it).
    assert_eq!(target(true, "/api/x"), "respond 200");
    assert_eq!(target(true, "/x"), "none");
    // With no route for HTTPS at all, its requests go to the one upstream.
    let s = snap(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.api]\nbackends = [\"127.0.0.1:2\"]\n\
         [[routes]]\nscheme = \"http\"\nrespond = 301\nlocation = \"https://$host$request_uri\"\n",
    );
    assert_eq!(s.route_index(None, "/x"), None);
    let tls = s.route_on(true, None, None, "/x");
    assert!(matches!(
        tls,
        Some(Routed::To(Route {
            target: Target::Upstream(0),
            ..
        }))
    ));
}

/// Each listener a route names has its own groups: its routes and the routes without
/// `listen`; the others keep the shared router, without the routes that name listeners.
#[test]
fn routes_by_listener() {
    let s = snap(
        "[server]\nlisten = [\"127.0.0.1:1\", \"0.0.0.0:2\", \"127.0.0.1:3\"]\n\
         [upstreams.a]\nbackends = [\"127.0.0.1:9\"]\n\
         [[routes]]\nlisten = \"127.0.0.1:1\"\nrespond = 201\n\
         [[routes]]\nlisten = [\"0.0.0.0:2\"]\nrespond = 202\n\
         [[routes]]\nlisten = [\"0.0.0.0:2\"]\nhost = \"x.example\"\nrespond = 203\n\
         [[routes]]\nhost = \"x.example\"\npath_prefix = \"/all/\"\nrespond = 204\n",
    );
    let status = |local: &str, host: Option<&str>, path: &str| match s.route_on(
        false,
        Some(local.parse().unwrap()),
        host,
        path,
    ) {
        Some(Routed::To(Route {
            target: Target::Respond(a),
            ..
        })) => a.status,
        _ => 404,
    };
    assert!(s.routes_by_listener());
    assert_eq!(status("127.0.0.1:1", None, "/"), 201);
    assert_eq!(status("127.0.0.1:1", Some("x.example"), "/"), 404);
    assert_eq!(status("127.0.0.1:1", Some("x.example"), "/all/"), 204);
    // 0.0.0.0:2 took the connection on whichever address it came to.
    assert_eq!(status("10.1.2.3:2", Some("y.example"), "/"), 202);
    assert_eq!(status("127.0.0.1:2", Some("x.example"), "/"), 203);
    assert_eq!(status("127.0.0.1:2", Some("x.example"), "/all/"), 204);
    // A listener no route names: the routes without `listen` only (no one-upstream
    // fallback once routes name listeners).
    assert_eq!(status("127.0.0.1:3", None, "/"), 404);
    assert_eq!(status("127.0.0.1:3", Some("x.example"), "/all/"), 204);
    assert!(!snap(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.a]\nbackends = [\"127.0.0.1:9\"]\n"
    )
    .routes_by_listener());
}

#[test]
fn routes_longest_prefix_and_host() {
    let s = snap(
        r#"
        [server]
        listen = ["127.0.0.1:1"]
        [upstreams.a]
        backends = ["127.0.0.1:2"]
        [upstreams.b]
        backends = ["127.0.0.1:3"]
        [upstreams.c]
        backends = ["127.0.0.1:4"]
        [[routes]]
        path_prefix = "/"
        upstream = "a"
        [[routes]]
        path_prefix = "/api"
        upstream = "b"
        [[routes]]
        host = "x.example"
        path_prefix = "/api"
        upstream = "c"
        "#,
    );
    let name = |h, p| {
        s.route_index(h, p)
            .map(|i| s.upstreams[i].name().to_string())
    };
    assert_eq!(name(None, "/"), Some("a".into()));
    assert_eq!(name(None, "/api/v1"), Some("b".into()));
    assert_eq!(name(Some("x.example:8080"), "/api/v1"), Some("c".into()));
    // The host picked x.example's group, which has no route for /other (NGINX: 404).
    assert_eq!(name(Some("X.EXAMPLE"), "/other"), None);
    assert_eq!(name(Some("y.example"), "/other"), Some("a".into()));
}

/// NGINX's order: host group (exact, longest wildcard, default), then exact path, longest
/// prefix with `^~`, first regex in file order, longest prefix.
#[test]
fn nginx_routing_model() {
    let mut text = String::from("[server]\nlisten = [\"127.0.0.1:1\"]\n");
    for (i, u) in [
        "exact", "pre", "skip", "re1", "re2", "star", "dot", "deep", "def", "exh",
    ]
    .iter()
    .enumerate()
    {
        text += &format!("[upstreams.{u}]\nbackends = [\"127.0.0.1:{}\"]\n", i + 10);
    }
    text += r#"
        [[routes]]
        path_exact = "/login"
        upstream = "exact"
        [[routes]]
        path_prefix = "/static/"
        upstream = "pre"
        [[routes]]
        path_prefix = "/static/img/"
        skip_regex = true
        upstream = "skip"
        [[routes]]
        path_regex = "\\.(png|jpg)$"
        upstream = "re1"
        [[routes]]
        path_regex = "(?i)\\.PNG$"
        upstream = "re2"
        [[routes]]
        path_prefix = "/"
        upstream = "def"
        [[routes]]
        host = "*.example.com"
        upstream = "star"
        [[routes]]
        host = ".example.com"
        upstream = "dot"
        [[routes]]
        host = "*.deep.example.com"
        upstream = "deep"
        [[routes]]
        host = "www.example.com"
        path_exact = "/"
        upstream = "exh"
    "#;
    let s = snap(&text);
    let name = |h: Option<&str>, p: &str| {
        s.route_index(h, p)
            .map_or("404".to_string(), |i| s.upstreams[i].name().to_string())
    };
    assert_eq!(name(None, "/login"), "exact");
    assert_eq!(name(None, "/login/x"), "def");
    assert_eq!(name(None, "/static/a.css"), "pre");
    assert_eq!(
        name(None, "/static/a.png"),
        "re1",
        "a regex beats a plain prefix"
    );
    assert_eq!(name(None, "/static/A.PNG"), "re2");
    assert_eq!(
        name(None, "/static/img/a.png"),
        "skip",
        "^~ stops before regexes"
    );
    assert_eq!(name(None, "/x.jpg"), "re1");
    assert_eq!(
        name(Some("www.example.com"), "/"),
        "exh",
        "exact host first"
    );
    assert_eq!(
        name(Some("www.example.com"), "/x"),
        "404",
        "the group has no /x"
    );
    assert_eq!(
        name(Some("a.example.com"), "/x"),
        "star",
        "*. before . at equal length"
    );
    assert_eq!(
        name(Some("example.com"), "/x"),
        "dot",
        ".example.com covers the name"
    );
    assert_eq!(
        name(Some("a.deep.example.com."), "/"),
        "deep",
        "longest wildcard"
    );
    assert_eq!(name(Some("A.Deep.Example.COM:443"), "/"), "deep");
    assert_eq!(
        name(Some("example.org"), "/x"),
        "def",
        "unknown hosts: default group"
    );
    assert_eq!(name(None, "/x"), "def");
}

#[test]
fn trailing_wildcards_come_after_leading_ones() {
    let mut text = String::from("[server]\nlisten = [\"127.0.0.1:1\"]\n");
    let hosts = [
        ("def", None),
        ("trail", Some("www.example.*")),
        ("longer", Some("www.example.co.*")),
        ("lead", Some("*.example.com")),
        ("exact", Some("www.example.org")),
    ];
    for (i, (name, _)) in hosts.iter().enumerate() {
        text += &format!("[upstreams.{name}]\nbackends = [\"127.0.0.1:{}\"]\n", i + 2);
    }
    for (name, host) in hosts {
        text += "[[routes]]\npath_prefix = \"/\"\n";
        text += &format!("upstream = \"{name}\"\n");
        if let Some(h) = host {
            text += &format!("host = \"{h}\"\n");
        }
    }
    let s = snap(&text);
    let name = |h: &str| {
        s.route_index(Some(h), "/")
            .map_or("404".to_string(), |i| s.upstreams[i].name().to_string())
    };
    assert_eq!(name("www.example.net"), "trail");
    assert_eq!(name("WWW.Example.IO:8080"), "trail");
    assert_eq!(
        name("www.example.co.uk"),
        "longer",
        "the longest trailing wildcard"
    );
    assert_eq!(name("www.example.com"), "lead", "leading wildcards first");
    assert_eq!(name("www.example.org"), "exact");
    assert_eq!(name("www.example"), "def", "something must follow the dot");
    assert_eq!(name("www.example."), "def");
    assert_eq!(name("ftp.example.net"), "def");
}

#[test]
fn replace_prefix_is_reported_with_the_route() {
    let s = snap(
        r#"
        [server]
        listen = ["127.0.0.1:1"]
        [upstreams.a]
        backends = ["127.0.0.1:2"]
        [[routes]]
        path_prefix = "/api/"
        replace_prefix = "/v2/"
        upstream = "a"
        "#,
    );
    let Some(Routed::To(r)) = s.route(None, "/api/users") else {
        panic!("no route")
    };
    assert_eq!(
        r.replace.as_ref().map(|(n, w)| (*n, &**w)),
        Some((5, "/v2/"))
    );
    assert!(matches!(s.route(None, "/api"), Some(Routed::AddSlash)));
}

#[test]
fn round_robin_continues_across_rebuilds() {
    let text = r#"
        [server]
        listen = ["127.0.0.1:1"]
        [upstreams.a]
        backends = ["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]
        "#;
    let config = Arc::new(crate::config::parse(text).unwrap());
    let registry = Registry::default();
    let picks: Vec<usize> = (0..6)
        .map(|_| {
            // Every health change and slow-start step rebuilds the snapshot.
            let s = Snapshot::build(config.clone(), &registry);
            let up = &s.upstreams[0];
            up.balancer.pick(&up.backends, |_| false).unwrap()
        })
        .collect();
    assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn splits_cut_the_hash_range_as_split_clients() {
    let s = snap(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.a]\nbackends = [\"127.0.0.1:2\"]\n\
         [upstreams.b]\nbackends = [\"127.0.0.1:3\"]\n\
         [[routes]]\nsplit = [{ upstream = \"b\", percent = 10 }, { upstream = \"a\", percent = 0.5 }, { upstream = \"b\" }]\n\
         [[routes]]\npath_prefix = \"/all/\"\nsplit = [{ upstream = \"b\", percent = 40 }, { upstream = \"a\", percent = 60 }]\n",
    );
    let split = |path: &str| match s.route(None, path) {
        Some(Routed::To(Route {
            target: Target::Split(split),
            ..
        })) => split,
        other => panic!("{other:?}"),
    };
    let pick = |path: &str, hash: u32| split(path).pick(hash).upstream;
    // 10% of 0xffffffff is 429496729 (rounded down, as NGINX), then 0.5% more.
    assert_eq!([pick("/", 0), pick("/", 429_496_728)], [1, 1]);
    assert_eq!([pick("/", 429_496_729), pick("/", 450_971_564)], [0, 0]);
    assert_eq!([pick("/", 450_971_565), pick("/", u32::MAX)], [1, 1]);
    assert_eq!(pick("/all/", 1_717_986_917), 1);
    // Exactly 100%: NGINX leaves 0xffffffff unmatched; lb gives it the last part.
    assert_eq!(
        [pick("/all/", 1_717_986_918), pick("/all/", u32::MAX)],
        [0, 0]
    );
}

#[test]
fn no_match_is_none() {
    let s = snap(
        r#"
        [server]
        listen = ["127.0.0.1:1"]
        [upstreams.a]
        backends = ["127.0.0.1:2"]
        [[routes]]
        path_prefix = "/api"
        upstream = "a"
        "#,
    );
    assert!(s.route_index(None, "/web").is_none());
    assert!(s.route_index(None, "/api").is_some());
}
