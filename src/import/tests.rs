//! The import end to end on NGINX text: the TOML it writes (read back with the `toml` crate)
//! and the notes, one mapping rule per test.

use std::path::PathBuf;

use toml::{Table, Value};

use super::import;

struct Out {
    toml: Table,
    text: String,
    notes: Vec<String>,
    dir: PathBuf,
}

/// Imports `nginx.conf` (the first file) with the other files beside it.
fn run(tag: &str, files: &[(&str, &str)]) -> Out {
    let dir = crate::util::testdir::fresh(&format!("import-{tag}"));
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let out = import(&dir.join(files[0].0)).unwrap_or_else(|e| panic!("{tag}: {e}"));
    let toml = out
        .toml
        .parse::<Table>()
        .unwrap_or_else(|e| panic!("{tag}: not TOML: {e}\n{}", out.toml));
    let notes = out.notes.iter().map(|n| n.to_string()).collect();
    Out {
        toml,
        text: out.toml,
        notes,
        dir,
    }
}

fn one(tag: &str, text: &str) -> Out {
    run(tag, &[("nginx.conf", text)])
}

impl Out {
    fn up(&self, name: &str) -> &Value {
        &self.toml["upstreams"][name]
    }

    fn routes(&self) -> Vec<&Value> {
        match self.toml.get("routes") {
            Some(Value::Array(a)) => a.iter().collect(),
            _ => Vec::new(),
        }
    }

    fn route_summary(&self) -> Vec<String> {
        self.routes()
            .iter()
            .map(|r| {
                let t = r.as_table().unwrap();
                let mut keys: Vec<String> = t
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        v => format!("{k}={v}"),
                    })
                    .collect();
                keys.sort();
                keys.join(" ")
            })
            .collect()
    }

    fn has_note(&self, needle: &str) -> bool {
        self.notes.iter().any(|n| n.contains(needle))
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const API: &str = "upstream api { server 10.0.0.1:8080; server 10.0.0.2:8080; }\n";

#[test]
fn upstream_backends_strategy_and_passive() {
    let o = one(
        "upstream",
        "http {\n upstream api {\n  least_conn;\n  server 10.0.0.1 weight=3 max_fails=2 fail_timeout=30s;\n  server backend.internal:9000 resolve max_fails=2 fail_timeout=30s;\n  server 10.0.0.3 backup down max_conns=5 max_fails=2 fail_timeout=30s;\n  keepalive 16;\n }\n upstream two { server 10.0.0.9; server 10.0.0.8; keepalive 8; }\n server { listen 80; location / { proxy_pass http://api; } }\n}\n",
    );
    let up = o.up("api");
    assert_eq!(up["strategy"].as_str(), Some("least_connections"));
    let b = up["backends"].as_array().unwrap();
    assert_eq!(b[0]["address"].as_str(), Some("10.0.0.1:80"));
    assert_eq!(b[0]["weight"].as_integer(), Some(3));
    assert_eq!(b[1]["address"].as_str(), Some("backend.internal:9000"));
    assert_eq!(b[1]["resolve"].as_bool(), Some(true));
    assert_eq!(b[2]["backup"].as_bool(), Some(true));
    assert_eq!(b[2]["down"].as_bool(), Some(true));
    assert_eq!(b[2]["max_conns"].as_integer(), Some(5));
    let p = &up["passive"];
    assert_eq!(p["consecutive_failures"].as_integer(), Some(2));
    assert_eq!(p["ejection_time"].as_str(), Some("30s"));
    assert_eq!(p["max_ejection_time"].as_str(), Some("30s"));
    assert_eq!(p["max_ejected_percent"].as_integer(), Some(100));
    assert_eq!(
        o.toml["server"]["upstream_keepalive_pool_size"].as_integer(),
        Some(24)
    );
    assert!(o.has_note("nginx.conf:7: keepalive: 16 idle connections per NGINX worker"));
    assert!(o
        .text
        .contains("# nginx.conf:2: upstream api\n[upstreams.api]"));
    assert!(o
        .text
        .contains("\"10.0.0.1:80\", weight = 3 },  # nginx.conf:4"));
}

#[test]
fn listeners_are_the_union_and_ssl_ones_are_https() {
    let o = run(
        "listen",
        &[
            (
                "nginx.conf",
                "http {\n upstream api { server 10.0.0.1; }\n ssl_certificate certs/a.pem;\n ssl_certificate_key certs/a.key;\n server { listen 80; listen [::]:80; listen 443 ssl http2; listen [::]:443 ssl; server_name a.example; location / { proxy_pass http://api; } }\n server { listen 80 default_server reuseport; listen [::]:80; listen 443 ssl; listen [::]:443 ssl; server_name b.example; ssl_certificate /etc/b.pem; ssl_certificate_key /etc/b.key; location / { proxy_pass http://api; } }\n server { listen unix:/run/x.sock; location / { proxy_pass http://api; } }\n}\n",
            ),
        ],
    );
    let s = &o.toml["server"];
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(list(&s["listen"]), ["0.0.0.0:80", "[::]:80"]);
    assert_eq!(list(&s["tls"]["listen"]), ["0.0.0.0:443", "[::]:443"]);
    assert_eq!(s["tls"]["http2"].as_bool(), Some(true));
    let certs = s["tls"]["certificates"].as_array().unwrap();
    // The default TLS server's certificate comes first (lb's default certificate): the first
    // server with a TLS listener, as no TLS listener is marked default_server.
    let dir = std::fs::canonicalize(&o.dir).unwrap();
    assert_eq!(
        certs[0]["cert"].as_str().map(PathBuf::from),
        Some(dir.join("certs/a.pem"))
    );
    assert_eq!(certs[1]["cert"].as_str(), Some("/etc/b.pem"));
    // b is the plain default (default_server on 80), a the TLS one: each answers any host
    // on its kind of listener.
    let hostless: Vec<_> = o
        .route_summary()
        .into_iter()
        .filter(|r| !r.contains("host="))
        .collect();
    assert_eq!(hostless.len(), 2, "{}", o.text);
    assert!(o.has_note("listen: parameter reuseport: not supported, ignored"));
    assert!(o.has_note("listen: unix:/run/x.sock: lb listens on IP addresses"));
}

#[test]
fn a_server_without_listen_listens_on_80() {
    let o = one(
        "listen80",
        &format!("{API}server {{ location / {{ proxy_pass http://api; }} }}"),
    );
    assert_eq!(o.toml["server"]["listen"][0].as_str(), Some("0.0.0.0:80"));
}

#[test]
fn server_names_and_the_default_server() {
    let o = one(
        "names",
        &format!(
            "{API}server {{ listen 80; server_name Example.com *.example.com .example.org www.example.* a.*.net ~^(www)\\.x$ _ \"\"; location /a/ {{ proxy_pass http://api; }} }}\n\
             server {{ listen 80 default_server; server_name other.example; location /b/ {{ proxy_pass http://api; }} }}\n"
        ),
    );
    assert_eq!(
        o.route_summary(),
        [
            "host=example.com path_prefix=/a/ upstream=api",
            "host=*.example.com path_prefix=/a/ upstream=api",
            "host=.example.org path_prefix=/a/ upstream=api",
            "host=www.example.* path_prefix=/a/ upstream=api",
            "host=other.example path_prefix=/b/ upstream=api",
            "path_prefix=/b/ upstream=api",
        ]
    );
    assert!(o.has_note("server_name: ~^(www)\\.x$: regex names are not supported, skipped"));
    assert!(o.has_note("server_name: a.*.net: only leading (*.example.com) and trailing (www.example.*) wildcards are supported, skipped"));
}

#[test]
fn without_default_server_the_first_server_is_the_default() {
    let o = one(
        "firstdefault",
        &format!(
            "{API}server {{ server_name a.example; location / {{ proxy_pass http://api; }} }}\n\
             server {{ server_name b.example; location / {{ proxy_pass http://api; }} }}\n"
        ),
    );
    assert_eq!(
        o.route_summary(),
        [
            "host=a.example path_prefix=/ upstream=api",
            "path_prefix=/ upstream=api",
            "host=b.example path_prefix=/ upstream=api",
        ]
    );
}

#[test]
fn location_kinds() {
    let o = one(
        "locations",
        &format!(
            "{API}server {{\n location = /exact {{ proxy_pass http://api; }}\n location /p/ {{ proxy_pass http://api; }}\n \
             location ^~ /static/ {{ proxy_pass http://api; }}\n location ~ \\.php$ {{ proxy_pass http://api; }}\n \
             location ~* \\.(gif|jpg)$ {{ proxy_pass http://api; }}\n location ~ ^/(?!admin) {{ proxy_pass http://api; }}\n \
             location ~ (a)\\1 {{ proxy_pass http://api; }}\n location =/tight {{ proxy_pass http://api; }}\n \
             location @named {{ proxy_pass http://api; }}\n}}\n"
        ),
    );
    assert_eq!(
        o.route_summary(),
        [
            "path_exact=/exact upstream=api",
            "path_prefix=/p/ upstream=api",
            "path_prefix=/static/ skip_regex=true upstream=api",
            "path_regex=\\.php$ upstream=api",
            "path_regex=(?i)\\.(gif|jpg)$ upstream=api",
            "path_exact=/tight upstream=api",
        ]
    );
    assert!(o.has_note("nginx.conf:8: location ~ ^/(?!admin): PCRE negative lookahead"));
    assert!(o.has_note("nginx.conf:9: location ~ (a)\\1: backreference \\1"));
    assert!(
        o.has_note("location @named: named location without proxy_pass")
            || o.route_summary().len() == 6
    );
}

#[test]
fn nested_locations_keep_their_scope() {
    let o = one(
        "nested",
        &format!(
            "{API}upstream img {{ server 10.0.1.1; }}\nserver {{ location /app/ {{ proxy_read_timeout 5s; proxy_pass http://api; \
             location ~ \\.png$ {{ proxy_pass http://img; }} location /app/static/ {{ root /srv; }} }} }}\n"
        ),
    );
    // A nested regex is tried only under its parent's prefix: never a global route.
    assert_eq!(o.route_summary(), ["path_prefix=/app/ upstream=api"]);
    assert!(o.has_note("location ~ \\.png$: nested regex inside location /app/"));
    assert!(o.has_note("location /app/static/: no proxy_pass"));
    assert!(o.has_note("root: not supported, ignored (no effect on proxying)"));
}

#[test]
fn proxy_pass_to_an_address_makes_an_implicit_upstream() {
    let o = one(
        "direct",
        "server { location / { proxy_pass http://127.0.0.1:8080; } location /b/ { proxy_pass http://127.0.0.1:8080/; } location /c/ { proxy_pass http://backend.local; } }",
    );
    let up = o.up("direct_127_0_0_1_8080");
    assert_eq!(up["backends"][0].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(up["host_header"].as_str(), Some("127.0.0.1:8080"));
    assert_eq!(up["passive"]["consecutive_failures"].as_integer(), Some(0));
    let other = o.up("direct_backend_local_80");
    assert_eq!(other["host_header"].as_str(), Some("backend.local"));
    assert_eq!(
        o.route_summary(),
        [
            "path_prefix=/ upstream=direct_127_0_0_1_8080",
            "path_prefix=/b/ replace_prefix=/ upstream=direct_127_0_0_1_8080",
            "path_prefix=/c/ upstream=direct_backend_local_80",
        ]
    );
}

#[test]
fn proxy_pass_uri_parts() {
    let o = one(
        "uri",
        &format!(
            "{API}server {{ location /api/ {{ proxy_pass http://api/v2/; }} location ~ ^/x {{ proxy_pass http://api/y; }} \
             location = /e {{ proxy_pass http://api/f; }} location /v/ {{ proxy_pass http://$host; }} }}"
        ),
    );
    assert_eq!(
        o.route_summary(),
        [
            "path_prefix=/api/ replace_prefix=/v2/ upstream=api",
            "path_regex=^/x upstream=api",
            "path_exact=/e upstream=api",
        ]
    );
    assert!(o.has_note("proxy_pass: URI part /y in a regex location (NGINX refuses it), ignored"));
    assert!(o.has_note("proxy_pass: URI part /f: lb replaces path prefixes only"));
    assert!(o.has_note("proxy_pass: http://$host: variables are not supported, location skipped"));
}

#[test]
fn host_header_follows_proxy_set_header() {
    let o = one(
        "host",
        "upstream a { server 10.0.0.1; }\nupstream b { server 10.0.0.2; }\nupstream c { server 10.0.0.3; }\n\
         server { location /a/ { proxy_pass http://a; }\n location /b/ { proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; proxy_http_version 1.1; proxy_pass http://b; }\n \
         location /c/ { proxy_set_header Host api.internal; proxy_set_header X-Custom 1; proxy_pass http://c; }\n location /b2/ { proxy_pass http://b; } }\n",
    );
    assert_eq!(o.up("a")["host_header"].as_str(), Some("upstream"));
    assert_eq!(o.up("b")["host_header"].as_str(), Some("client_host"));
    assert_eq!(o.up("c")["host_header"].as_str(), Some("api.internal"));
    assert!(o.notes.is_empty(), "{:?}", o.notes);
    // /b2/ sends NGINX's default `$proxy_host` where /b/ set `$host`: a route Host of its own.
    let b2 = o
        .routes()
        .into_iter()
        .find(|r| r["path_prefix"].as_str() == Some("/b2/"));
    assert_eq!(
        b2.unwrap()["set_request_headers"]["Host"].as_str(),
        Some("b"),
        "{}",
        o.text
    );
    // Other headers are the route's own; those lb sends anyway are left out.
    let c = o
        .routes()
        .into_iter()
        .find(|r| r["path_prefix"].as_str() == Some("/c/"));
    assert_eq!(
        c.unwrap()["set_request_headers"]["X-Custom"].as_str(),
        Some("1")
    );
    let b = o
        .routes()
        .into_iter()
        .find(|r| r["path_prefix"].as_str() == Some("/b/"));
    assert!(
        b.unwrap().get("set_request_headers").is_none(),
        "{}",
        o.text
    );
}

#[test]
fn proxy_set_header_lists_are_inherited_only_when_a_level_has_none() {
    let o = one(
        "inherit",
        "http { proxy_set_header Host $host; upstream a { server 10.0.0.1; } upstream b { server 10.0.0.2; }\n\
         server { location /a/ { proxy_pass http://a; } location /b/ { proxy_set_header X-Real-IP $remote_addr; proxy_pass http://b; } } }",
    );
    assert_eq!(o.up("a")["host_header"].as_str(), Some("client_host"));
    assert_eq!(o.up("b")["host_header"].as_str(), Some("upstream"));
}

#[test]
fn timeouts_and_retries_per_upstream() {
    let o = one(
        "timeouts",
        &format!(
            "{API}server {{ proxy_connect_timeout 3; location /a/ {{ proxy_read_timeout 1m; proxy_send_timeout 90s; proxy_next_upstream error timeout http_502; proxy_next_upstream_tries 3; proxy_next_upstream_timeout 10s; proxy_pass http://api; }}\n\
             location /b/ {{ proxy_read_timeout 2m; proxy_pass http://api; }} }}\n\
             upstream off {{ server 10.0.0.5; }}\nserver {{ server_name o.example; location / {{ proxy_next_upstream off; proxy_pass http://off; }} }}\n"
        ),
    );
    let up = o.up("api");
    assert_eq!(up["connect_timeout"].as_str(), Some("3s"));
    assert_eq!(up["read_timeout"].as_str(), Some("1m"));
    assert_eq!(up["write_timeout"].as_str(), Some("90s"));
    assert_eq!(up["retries"].as_integer(), Some(2));
    assert_eq!(o.up("off")["retries"].as_integer(), Some(0));
    assert!(o.has_note("nginx.conf:2: proxy_next_upstream_timeout: not supported, ignored"));
    assert!(o.has_note("proxy_next_upstream: http_502: lb retries failed connections"));
    // A location that differs gets route timeouts: its own, or NGINX's default 60s.
    let b = o
        .routes()
        .into_iter()
        .find(|r| r["path_prefix"].as_str() == Some("/b/"));
    let b = b.unwrap();
    assert_eq!(b["read_timeout"].as_str(), Some("2m"), "{}", o.text);
    assert_eq!(b["write_timeout"].as_str(), Some("60s"), "{}", o.text);
    assert!(b.get("connect_timeout").is_none(), "{}", o.text);
}

#[test]
fn headers_and_body_limits_are_route_keys() {
    let o = one(
        "route-headers",
        &format!(
            "{API}server {{ add_header X-Frame-Options DENY always; proxy_set_header X-Id $request_id;\n\
             location /a/ {{ proxy_pass http://api; }}\n\
             location /b/ {{ add_header Cache-Control no-store; add_header X-Up $host always; proxy_set_header X-Empty \"\"; client_max_body_size 5m; proxy_pass http://api; }} }}\n"
        ),
    );
    let route = |p: &str| {
        let r = o
            .routes()
            .into_iter()
            .find(|r| r["path_prefix"].as_str() == Some(p));
        r.unwrap().clone()
    };
    let a = route("/a/");
    assert_eq!(
        a["add_response_headers"]["X-Frame-Options"].as_str(),
        Some("DENY")
    );
    assert_eq!(a["add_response_headers_always"].as_bool(), Some(true));
    assert_eq!(
        a["set_request_headers"]["X-Id"].as_str(),
        Some("$request_id")
    );
    let b = route("/b/");
    assert!(
        b["add_response_headers"].get("X-Frame-Options").is_none(),
        "replaced: {}",
        o.text
    );
    assert_eq!(
        b["add_response_headers"]["Cache-Control"].as_str(),
        Some("no-store")
    );
    assert_eq!(b["set_request_headers"]["X-Empty"].as_str(), Some(""));
    assert!(
        b["set_request_headers"].get("X-Id").is_none(),
        "replaced: {}",
        o.text
    );
    assert_eq!(b["max_body_bytes"].as_integer(), Some(5 << 20));
    // `always` per line when the lines differ.
    assert_eq!(
        b["add_response_headers"]["X-Up"]["always"].as_bool(),
        Some(true)
    );
    assert!(b.get("add_response_headers_always").is_none(), "{}", o.text);
    // A variable lb cannot render refuses the import, with its line.
    let e = refused(
        "route-headers-var",
        &format!("{API}server {{ location /x/ {{ proxy_set_header X-User $http_x_user; proxy_pass http://api; }} }}\n"),
    );
    assert!(
        e.contains("nginx.conf:2: proxy_set_header: X-User")
            && e.contains("unknown variable $http_x_user"),
        "{e}"
    );
}

#[test]
fn contexts_and_unsupported_directives_are_listed_one_per_line() {
    let o = run(
        "contexts",
        &[
            (
                "nginx.conf",
                "user nginx;\nworker_processes auto;\nevents { worker_connections 1024; }\nstream { server { listen 53; } }\nhttp {\n  include mime.types;\n  sendfile on;\n  proxy_cache_path /c keys_zone=c:1m;\n  include conf.d/*.conf;\n}\n",
            ),
            ("mime.types", "types { text/html html; }\n"),
            (
                "conf.d/site.conf",
                "upstream api { server 10.0.0.1; zone api 64k; }\nserver {\n  location / {\n    proxy_cache c;\n    proxy_pass http://api;\n  }\n}\n",
            ),
        ],
    );
    assert_eq!(
        o.notes,
        [
            "nginx.conf:1: user: not supported, ignored (no effect on proxying)",
            "nginx.conf:2: worker_processes: not supported, ignored (no effect on proxying)",
            "nginx.conf:3: events: context skipped (lb imports the http context only)",
            "nginx.conf:4: stream: context skipped (lb imports the http context only)",
            "mime.types:1: types: not supported, ignored (no effect on proxying)",
            "nginx.conf:7: sendfile: not supported, ignored (no effect on proxying)",
            "nginx.conf:8: proxy_cache_path: not supported, ignored",
            "conf.d/site.conf:4: proxy_cache: not supported, ignored",
        ]
    );
    assert!(o
        .text
        .contains("# conf.d/site.conf:3: default server, location /\n[[routes]]"));
}

#[test]
fn a_snippet_of_the_http_context_imports_on_its_own() {
    let o = one(
        "snippet",
        &format!("{API}server {{ listen 8080; location / {{ proxy_pass http://api; }} }}"),
    );
    assert_eq!(o.toml["server"]["listen"][0].as_str(), Some("0.0.0.0:8080"));
    assert!(o.notes.is_empty(), "{:?}", o.notes);
}

#[test]
fn routes_to_a_skipped_upstream_are_not_emitted() {
    let o = one(
        "skipped",
        &format!("{API}upstream sock {{ server unix:/run/app.sock; }}\nserver {{ location /s/ {{ proxy_pass http://sock; }} location / {{ proxy_pass http://api; }} }}"),
    );
    assert!(o.has_note("upstream: sock: no server lb can use, skipped"));
    assert!(o.has_note("location /s/: upstream sock was skipped, so is this location"));
    assert_eq!(o.route_summary(), ["path_prefix=/ upstream=api"]);
}

#[test]
fn nothing_to_import_is_an_error() {
    let dir = crate::util::testdir::fresh("import-empty");
    std::fs::write(dir.join("nginx.conf"), "http { server { root /srv; } }").unwrap();
    let e = import(&dir.join("nginx.conf")).unwrap_err();
    assert!(matches!(e, super::ImportError::Nothing { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("nothing to import"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An import using only keys `lb --check` accepts today passes [`crate::config::parse`].
#[test]
fn an_import_passes_config_validation() {
    let o = one(
        "valid",
        "events {}\nhttp {\n upstream api { server 127.0.0.1:9001 weight=2; server 127.0.0.1:9002 max_fails=3 fail_timeout=5s; server 127.0.0.1:9003 max_fails=3 fail_timeout=5s; keepalive 32; }\n\
         upstream web { least_conn; server 127.0.0.1:9101; server 127.0.0.1:9102; }\n\
         proxy_set_header Host $host;\n\
         server { listen 127.0.0.1:18080 default_server; server_name api.example; location / { proxy_pass http://api; } location /web/ { proxy_connect_timeout 2s; proxy_read_timeout 30s; proxy_next_upstream_tries 2; proxy_pass http://web; } }\n\
         server { listen 127.0.0.1:18080; server_name www.example; location / { proxy_pass http://web; } }\n}\n",
    );
    let config = crate::config::parse(&o.text).unwrap_or_else(|p| panic!("{p:?}\n{}", o.text));
    assert_eq!(config.upstreams.len(), 2);
    assert_eq!(config.routes.len(), 5);
    let api = config.upstreams.iter().find(|u| u.name == "api").unwrap();
    assert_eq!(api.passive.consecutive_failures, 3);
    assert_eq!(api.passive.max_ejected_percent, 100);
    assert_eq!(config.server.upstream_keepalive_pool_size, 32);
}

/// With the keys main added (strategies, hash_key, host_header, backend flags, NGINX's routing
/// model), an import that uses them all passes [`crate::config::parse`].
#[test]
fn an_import_with_the_nginx_keys_passes_config_validation() {
    let o = one(
        "valid-nginx-keys",
        "http {\n upstream api { hash $request_uri consistent; server 127.0.0.1:9001; server 127.0.0.1:9002 down; }\n\
         upstream web { server 127.0.0.1:9101 max_conns=5; server 127.0.0.1:9102 backup; }\n\
         upstream ip { ip_hash; server 127.0.0.1:9201; server 127.0.0.1:9202; }\n\
         upstream two { random two least_conn; server 127.0.0.1:9301; server 127.0.0.1:9302; }\n\
         server { listen 127.0.0.1:18081 default_server; server_name api.example *.api.example .web.example;\n\
           location = /exact { proxy_pass http://api; }\n\
           location ^~ /static/ { proxy_set_header Host static.internal; proxy_pass http://web; }\n\
           location ~* \\.(png|jpg)$ { proxy_pass http://ip; }\n\
           location /v1/ { proxy_pass http://two/v2/; }\n\
           location / { proxy_pass http://127.0.0.1:9401; } }\n}\n",
    );
    let config = crate::config::parse(&o.text).unwrap_or_else(|p| panic!("{p:?}\n{}", o.text));
    assert_eq!(config.upstreams.len(), 5);
    assert_eq!(config.routes.len(), 5 * 4);
}

#[test]
fn limit_req_zones_and_their_inheritance() {
    let o = one(
        "limit-req",
        "http {\n upstream api { server 10.0.0.1:8080; }\n limit_req_zone $binary_remote_addr zone=per_ip:10m rate=10r/s;\n limit_req_zone $http_x_api_key zone=keys:1m rate=30r/m;\n limit_req_zone $server_name zone=odd:1m rate=1r/s;\n limit_req_zone $uri zone=spare:64k rate=5r/s;\n limit_req zone=per_ip burst=20 nodelay;\n server {\n  listen 80;\n  limit_req_status 429;\n  location / { proxy_pass http://api; }\n  location /keys/ { limit_req zone=keys burst=5 delay=2; limit_req zone=per_ip burst=20 nodelay; proxy_pass http://api; }\n  location /odd/ { limit_req zone=odd; proxy_pass http://api; }\n  location /burst/ { limit_req zone=per_ip burst=3; proxy_pass http://api; }\n  location /odd-name/ { limit_req zone=a/b; proxy_pass http://api; }\n }\n limit_req_zone $remote_addr zone=a/b:1m rate=2;\n}\n",
    );
    let l = &o.toml["rate_limits"];
    let ip = &l["per_ip"];
    assert_eq!(ip["key"].as_str(), Some("client_ip"));
    assert_eq!(ip["rate"].as_str(), Some("10/s"));
    assert_eq!(ip["burst"].as_integer(), Some(20));
    assert_eq!(ip["nodelay"].as_bool(), Some(true));
    assert_eq!(ip["status"].as_integer(), Some(429));
    assert_eq!(ip["max_keys"].as_integer(), Some(10 << 20 >> 6));
    let keys = &l["keys"];
    assert_eq!(keys["key"].as_str(), Some("header:x-api-key"));
    assert_eq!(keys["rate"].as_str(), Some("30/m"));
    assert_eq!(
        (keys["burst"].as_integer(), keys["delay"].as_integer()),
        (Some(5), Some(2))
    );
    // Unused: NGINX's defaults.
    assert_eq!(l["spare"]["status"].as_integer(), Some(503));
    assert!(l.get("odd").is_none());
    assert!(o.has_note("nginx.conf:5: limit_req_zone: key $server_name"));
    assert!(o.has_note("nginx.conf:13: limit_req: zone odd is not a limit_req_zone lb carries"));
    assert!(o.has_note("nginx.conf:14: limit_req: zone per_ip: lb keeps one burst"));
    let limits = |i: usize| o.routes()[i].get("rate_limits").cloned();
    let names = |v: &[&str]| Some(Value::Array(v.iter().map(|s| Value::from(*s)).collect()));
    // `/` inherits http's line; `/keys/` has its own two; `/odd/` only an unknown zone.
    assert_eq!(limits(0), names(&["per_ip"]));
    assert_eq!(limits(1), names(&["keys", "per_ip"]));
    assert_eq!(limits(2), None);
    assert_eq!(limits(3), names(&["per_ip"]));
    // A zone name lb does not take is renamed, and still found by its NGINX name.
    assert_eq!(limits(4), names(&["a_b"]));
    assert_eq!(l["a_b"]["rate"].as_str(), Some("2/s"));
    assert!(o.has_note("limit_req_zone: zone a/b: lb's rate limit is named a_b"));
    crate::config::parse(&o.text).unwrap_or_else(|p| panic!("{p:?}\n{}", o.text));
}

#[test]
fn return_becomes_respond_and_port_80_servers_get_scheme_http() {
    let o = one(
        "return",
        "http {\n upstream api { server 10.0.0.1:8080; }\n server {\n  listen 80;\n  server_name example.com www.example.com;\n  location / { proxy_pass http://api; }\n  return 301 https://$server_name$request_uri;\n }\n server {\n  listen 443 ssl;\n  server_name example.com;\n  ssl_certificate /etc/c.pem;\n  ssl_certificate_key /etc/c.key;\n  location = /healthz { return 200 \"ok\\n\"; }\n  location /old/ { return 302 /new/; proxy_pass http://api; }\n  location / { proxy_pass http://api; }\n  location /gone/ { return 444; }\n }\n}\n",
    );
    let summary = o.route_summary();
    assert_eq!(
        summary,
        [
            "host=example.com location=https://example.com$request_uri path_prefix=/ respond=301 scheme=http",
            "host=www.example.com location=https://example.com$request_uri path_prefix=/ respond=301 scheme=http",
            "location=https://example.com$request_uri path_prefix=/ respond=301 scheme=http",
            "body=ok\n content_type=text/plain host=example.com path_exact=/healthz respond=200 scheme=https",
            "body=ok\n content_type=text/plain path_exact=/healthz respond=200 scheme=https",
            "host=example.com location=/new/ path_prefix=/old/ respond=302 scheme=https",
            "location=/new/ path_prefix=/old/ respond=302 scheme=https",
            "host=example.com path_prefix=/ scheme=https upstream=api",
            "path_prefix=/ scheme=https upstream=api",
        ],
        "{}",
        o.text
    );
    assert!(o.has_note("nginx.conf:6: location /: the server's return answers every request first"));
    assert!(o.has_note("nginx.conf:15: proxy_pass: return answers every request here first"));
    assert!(o.has_note("nginx.conf:17: return: 444 (close without an answer)"));
}

#[test]
fn a_listen_on_an_ssl_address_is_tls_and_nameless_returns_are_noted() {
    let o = one(
        "ssl-address",
        "http {\n upstream api { server 10.0.0.1:8080; }\n server { listen 443 ssl; server_name a.test; ssl_certificate /etc/a.pem; ssl_certificate_key /etc/a.key; location / { proxy_pass http://api; } }\n server { listen 443; server_name b.test; ssl_certificate /etc/b.pem; ssl_certificate_key /etc/b.key; location / { proxy_pass http://api; } }\n server { listen 80; server_name a.test; return 301 https://$host$request_uri; return 404; }\n server { listen 80; server_name _; return 444; }\n}\n",
    );
    let summary = o.route_summary();
    // b's `listen 443` is TLS (a listens there with ssl): its route is for HTTPS, not HTTP.
    assert!(
        summary.contains(&"host=b.test path_prefix=/ scheme=https upstream=api".to_string()),
        "{summary:#?}"
    );
    assert!(summary.iter().any(|r| r.contains("host=a.test")
        && r.contains("respond=301")
        && r.contains("scheme=http")));
    assert!(o.has_note("nginx.conf:5: return: after the server's first return: never reached"));
    assert!(o.has_note("nginx.conf:6: return: 444"));
}

fn refused(tag: &str, text: &str) -> String {
    let dir = crate::util::testdir::fresh(&format!("import-{tag}"));
    std::fs::write(dir.join("nginx.conf"), text).unwrap();
    let e = match import(&dir.join("nginx.conf")) {
        Ok(o) => panic!("{tag}: imported:\n{}", o.toml),
        Err(e @ super::ImportError::Refused(_)) => e.to_string(),
        Err(e) => panic!("{tag}: not a refusal: {e}"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    e
}

fn insecure(tag: &str, text: &str) -> (String, Vec<String>) {
    let dir = crate::util::testdir::fresh(&format!("import-{tag}"));
    std::fs::write(dir.join("nginx.conf"), text).unwrap();
    let o = super::import_with(
        &dir.join("nginx.conf"),
        super::Options {
            allow_insecure: true,
        },
    )
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (o.toml, o.notes.iter().map(|n| n.to_string()).collect())
}

#[test]
fn security_directives_refuse_the_import_unless_allowed() {
    let cases = [
        ("location /admin/ { auth_basic \"x\"; auth_basic_user_file /h; proxy_pass http://api; }", "nginx.conf:4: auth_basic:"),
        ("location /admin/ { auth_request /auth; proxy_pass http://api; }", "nginx.conf:4: auth_request:"),
        ("location /admin/ { limit_except GET { deny all; } proxy_pass http://api; }", "nginx.conf:4: limit_except:"),
        ("location /admin/ { satisfy any; proxy_pass http://api; }", "nginx.conf:4: satisfy:"),
        ("ssl_verify_client on; location /admin/ { proxy_pass http://api; }", "nginx.conf:4: ssl_verify_client:"),
    ];
    for (body, want) in cases {
        let text = format!("{API}server {{\n listen 80;\n {body}\n location /open/ {{ proxy_pass http://api; }}\n}}\n");
        let e = refused("sec", &text);
        assert!(
            e.contains(want) && e.contains("location /admin/") && e.contains("--allow-insecure"),
            "{body}: {e}"
        );
        let (toml, notes) = insecure("sec-ok", &text);
        assert!(toml.contains("path_prefix = \"/admin/\""), "{toml}");
        assert!(notes.iter().any(|n| n.contains("PUBLIC")), "{notes:?}");
    }
    // Inherited from the server, switched off below, and `return` (before NGINX's access
    // phase) are not refused.
    let o = one(
        "sec-off",
        &format!("{API}server {{\n auth_basic \"x\";\n location /pub/ {{ auth_basic off; proxy_pass http://api; }}\n location /r {{ return 301 /pub/; }}\n}}\n"),
    );
    assert_eq!(o.routes().len(), 2, "{}", o.text);
    let e = refused(
        "sec-inherit",
        &format!(
            "{API}server {{\n auth_basic \"x\";\n location / {{ proxy_pass http://api; }}\n}}\n"
        ),
    );
    assert!(e.contains("nginx.conf:3: auth_basic:"), "{e}");
}

/// Issue 27 item 5: `allow`/`deny` become the route's `access` list, in order; a location's own
/// lines replace the server's; `return` (before NGINX's access phase) gets none.
#[test]
fn allow_and_deny_become_access_rules() {
    let o = one(
        "access",
        &format!("{API}server {{\n allow 10.0.0.0/8;\n deny all;\n location /a/ {{ proxy_pass http://api; }}\n location /b/ {{ deny 10.1.0.0/16; allow all; proxy_pass http://api; }}\n location /c/ {{ allow unix:; allow 192.0.2.1; deny all; proxy_pass http://api; }}\n location /r {{ return 204; }}\n}}\n"),
    );
    let t = &o.text;
    assert!(
        t.contains("path_prefix = \"/a/\"\nupstream = \"api\"")
            || t.contains("access = [\"allow 10.0.0.0/8\", \"deny all\"]"),
        "{t}"
    );
    assert!(
        t.contains("access = [\"deny 10.1.0.0/16\", \"allow all\"]"),
        "{t}"
    );
    assert!(
        t.contains("access = [\"allow 192.0.2.1\", \"deny all\"]"),
        "{t}"
    );
    assert_eq!(t.matches("access = ").count(), 3, "none for return: {t}");
    assert!(o.notes.iter().any(|n| n.contains("unix:")), "{:?}", o.notes);
}

/// Issue 27 item 3: the realip module's lines become `server.real_ip_*`; `listen ...
/// proxy_protocol` a listener table.
#[test]
fn realip_and_proxy_protocol_map_to_server_keys() {
    let o = one(
        "realip",
        &format!("{API}set_real_ip_from 10.0.0.0/8;\nset_real_ip_from 192.0.2.1;\nreal_ip_header X-Forwarded-For;\nreal_ip_recursive on;\nserver {{\n listen 80;\n location / {{ proxy_pass http://api; }}\n}}\n"),
    );
    let t = &o.text;
    assert!(
        t.contains("real_ip_from = [\"10.0.0.0/8\", \"192.0.2.1\"]"),
        "{t}"
    );
    assert!(t.contains("real_ip_header = \"X-Forwarded-For\""), "{t}");
    assert!(t.contains("real_ip_recursive = true"), "{t}");
    let o = one(
        "proxy-protocol",
        &format!("{API}server {{\n listen 8080 proxy_protocol;\n set_real_ip_from 10.0.0.1;\n real_ip_header proxy_protocol;\n location / {{ proxy_pass http://api; }}\n}}\n"),
    );
    assert!(
        o.text
            .contains("{ address = \"0.0.0.0:8080\", proxy_protocol = true }"),
        "{}",
        o.text
    );
    assert!(!o.text.contains("real_ip_from"), "{}", o.text);
}

/// NGINX picks the server by address first: with two addresses of one kind, every route
/// names its server's addresses and each address has its own default server.
#[test]
fn servers_on_different_ports_name_their_listeners() {
    let o = one(
        "ports",
        &format!("{API}upstream b {{ server 10.0.1.1:80; }}\nserver {{ listen 80; location / {{ proxy_pass http://api; }} }}\nserver {{ listen 8080; location / {{ proxy_pass http://b; }} }}\n"),
    );
    let listen = |i: usize| o.routes()[i]["listen"].to_string();
    assert_eq!(o.routes().len(), 2, "{}", o.text);
    assert_eq!(listen(0), "[\"0.0.0.0:80\"]");
    assert_eq!(listen(1), "[\"0.0.0.0:8080\"]");
    assert!(o.routes().iter().all(|r| r.get("host").is_none()));
    // The default server of each address (marked, else the first there); names on their own
    // addresses; a name an earlier server has on an address is that server's there.
    let o = one(
        "ports-named",
        &format!("{API}upstream b {{ server 10.0.1.1:80; }}\n\
                  server {{ listen 80 default_server; listen 8080; server_name a.example; location / {{ proxy_pass http://api; }} }}\n\
                  server {{ listen 8080 default_server; server_name a.example b.example; location / {{ proxy_pass http://b; }} }}\n"),
    );
    let r = o.routes();
    let show = |r: &&Value| {
        format!(
            "{} {} {}",
            r.get("host").map_or("-".into(), |h| h.to_string()),
            r["listen"],
            r["upstream"]
        )
    };
    let all: Vec<String> = r.iter().map(show).collect();
    assert_eq!(
        all,
        [
            "\"a.example\" [\"0.0.0.0:80\", \"0.0.0.0:8080\"] \"api\"",
            "- [\"0.0.0.0:80\"] \"api\"",
            "\"b.example\" [\"0.0.0.0:8080\"] \"b\"",
            "- [\"0.0.0.0:8080\"] \"b\"",
        ],
        "{}",
        o.text
    );
    assert!(
        o.has_note("server_name: a.example: an earlier server has this name"),
        "{:?}",
        o.notes
    );
    assert!(
        !o.notes
            .iter()
            .any(|n| n.contains("one default server for all")),
        "{:?}",
        o.notes
    );
    // One address per kind (80 plain, 443 TLS) keeps the per-kind form: no `listen`.
    let o = run(
        "ports-kinds",
        &[("nginx.conf", &format!("{API}server {{ listen 80; return 301 https://$host$request_uri; }}\nserver {{ listen 443 ssl; ssl_certificate a.pem; ssl_certificate_key a.key; location / {{ proxy_pass http://api; }} }}\n"))],
    );
    assert!(
        o.routes().iter().all(|r| r.get("listen").is_none()),
        "{}",
        o.text
    );
}

/// Item 12: a default server with nothing lb can route leaves its address answering 404 (and
/// says why), never with another server's routes.
#[test]
fn a_default_server_without_routes_is_named_as_such() {
    let o = one(
        "static-default",
        &format!("{API}upstream b {{ server 10.0.1.1:80; }}\n\
                  server {{ listen 80; location / {{ proxy_pass http://api; }} }}\n\
                  server {{ listen 8080; location / {{ root /srv; }} }}\n\
                  server {{ listen 8080; server_name b.example; location / {{ proxy_pass http://b; }} }}\n"),
    );
    assert!(o.has_note("nginx.conf:4: listen: 0.0.0.0:8080: the default server of this address (at nginx.conf:4) has no location lb can serve"), "{:?}", o.notes);
    assert!(
        !o.notes.iter().any(|n| n.contains("not the default server")),
        "{:?}",
        o.notes
    );
    let hostless: Vec<String> = o
        .routes()
        .iter()
        .filter(|r| r.get("host").is_none())
        .map(|r| r["listen"].to_string())
        .collect();
    assert_eq!(hostless, ["[\"0.0.0.0:80\"]"], "{}", o.text);
}

#[test]
fn a_server_without_routes_leaves_no_listener_behind() {
    let o = one(
        "dropped",
        &format!("{API}server {{ listen 80; location / {{ proxy_pass http://api; }} }}\nserver {{ listen 8080; location / {{ root /srv; }} }}\n"),
    );
    let listen = o.toml["server"]["listen"].as_array().unwrap();
    assert_eq!(listen.len(), 1, "{}", o.text);
    assert!(o.has_note("nginx.conf:3: listen: 0.0.0.0:8080: no server on this address has a route lb can serve"), "{:?}", o.notes);
}

#[test]
fn legacy_ssl_on_makes_the_listeners_tls() {
    let o = run(
        "ssl-on",
        &[(
            "nginx.conf",
            &format!("{API}server {{ listen 443; ssl on; ssl_certificate a.pem; ssl_certificate_key a.key; location / {{ proxy_pass http://api; }} }}\n"),
        )],
    );
    assert_eq!(
        o.toml["server"]["tls"]["listen"].as_array().unwrap().len(),
        1,
        "{}",
        o.text
    );
    assert_eq!(o.toml["server"]["tls"]["http2"].as_bool(), Some(false));
    assert!(o.has_note("ssl: legacy ssl on"));
}

#[test]
fn server_wide_directives_map_to_server_keys() {
    let o = one(
        "wide",
        "http {\n client_max_body_size 20m;\n keepalive_timeout 30s 25s;\n client_header_timeout 5s;\n client_body_timeout 15;\n \
         large_client_header_buffers 8 16k;\n resolver 127.0.0.11 [::1]:5353 valid=30s;\n resolver_timeout 3s;\n ssl_protocols TLSv1.2 TLSv1.3;\n \
         ssl_certificate a.pem; ssl_certificate_key a.key;\n \
         upstream api { server app.internal:8080; server 10.0.0.2:8080 max_conns=10; server srv.example service=http resolve; }\n \
         server { listen 443 ssl; location / { proxy_ssl_verify on; proxy_ssl_trusted_certificate /ca.pem; proxy_pass https://api; } \
         location /up/ { client_max_body_size 0; proxy_pass https://10.0.0.9; } }\n}\n",
    );
    let s = &o.toml["server"];
    assert_eq!(s["max_body_bytes"].as_integer(), Some(20 << 20));
    assert_eq!(s["keepalive_timeout"].as_str(), Some("30s"));
    assert_eq!(s["header_timeout"].as_str(), Some("5s"));
    assert_eq!(s["body_timeout"].as_str(), Some("15s"));
    assert_eq!(s["max_uri_bytes"].as_integer(), Some(16384));
    assert_eq!(s["max_header_bytes"].as_integer(), Some(131072));
    assert_eq!(s["tls"]["min_version"].as_str(), Some("1.2"));
    assert_eq!(s["tls"]["http2"].as_bool(), Some(false));
    let r = &o.toml["resolver"];
    assert_eq!(r["nameservers"].as_array().unwrap().len(), 2, "{}", o.text);
    assert_eq!(r["timeout"].as_str(), Some("3s"));
    let api = o.up("api");
    assert_eq!(api["tls"]["verify"].as_bool(), Some(true), "{}", o.text);
    assert_eq!(api["tls"]["ca_file"].as_str(), Some("/ca.pem"));
    assert_eq!(api["tls"]["sni"].as_str(), Some("api"));
    let b = api["backends"].as_array().unwrap();
    assert_eq!(
        b[0]["resolve"].as_bool(),
        Some(true),
        "hostnames use every address"
    );
    assert_eq!(b[2]["srv"].as_str(), Some("_http._tcp.srv.example"));
    // NGINX's default: no verification, and the import says so.
    let direct = o.up("direct_10_0_0_9_443");
    assert_eq!(direct["tls"]["verify"].as_bool(), Some(false));
    assert!(o.text.contains("its default is off"));
    let up = o
        .routes()
        .into_iter()
        .find(|r| r["path_prefix"].as_str() == Some("/up/"));
    assert_eq!(
        up.unwrap()["max_body_bytes"].as_integer(),
        Some(0),
        "{}",
        o.text
    );
    assert!(o.has_note("max_conns without zone counts per NGINX worker"));
}

#[test]
fn max_conns_without_zone_is_per_worker() {
    let o = one(
        "workers",
        "worker_processes 4;\nevents {}\nhttp {\n upstream api { server 10.0.0.1:80 max_conns=10; }\n upstream z { zone z 64k; server 10.0.0.2:80 max_conns=10; }\n \
         server { location / { proxy_pass http://api; } location /z/ { proxy_pass http://z; } }\n}\n",
    );
    assert_eq!(
        o.up("api")["backends"][0]["max_conns"].as_integer(),
        Some(40)
    );
    assert_eq!(o.up("z")["backends"][0]["max_conns"].as_integer(), Some(10));
}

#[test]
fn hash_keys_use_the_server_argument_as_written() {
    let o = one(
        "hash",
        "upstream api { hash $request_uri consistent; server 10.0.0.1; server 10.0.0.2:8080; }\nserver { location / { proxy_pass http://api; } }\n",
    );
    let b = o.up("api")["backends"].as_array().unwrap();
    assert_eq!(b[0]["address"].as_str(), Some("10.0.0.1:80"));
    assert_eq!(b[0]["hash_name"].as_str(), Some("10.0.0.1"));
    assert_eq!(
        b[1].as_str(),
        Some("10.0.0.2:8080"),
        "written with its port: hashed as is"
    );
}

#[test]
fn openresty_lua_redirect_only_and_try_files_named_locations() {
    let o = one(
        "lua",
        &format!("{API}server {{\n location / {{ access_by_lua_block {{ if ngx.var.x == \"}}\" then return end -- }} \n local t = {{a = [[ }} ]]}} }}\n proxy_pass http://api; }}\n}}\n"),
    );
    assert_eq!(o.routes().len(), 1, "{}", o.text);
    assert!(
        o.has_note("access_by_lua_block: OpenResty Lua code"),
        "{:?}",
        o.notes
    );
    let o = one(
        "redirect",
        "server { listen 80; return 301 https://$host$request_uri; }\n",
    );
    assert_eq!(o.routes().len(), 1);
    assert_eq!(o.routes()[0]["respond"].as_integer(), Some(301));
    let o = one(
        "try-files",
        &format!("{API}server {{\n location / {{ try_files $uri $uri/ @app; }}\n location @app {{ proxy_pass http://api; }}\n location /.well-known/acme-challenge/ {{ root /srv/acme; }}\n}}\n"),
    );
    assert_eq!(o.route_summary(), ["path_prefix=/ upstream=api"]);
    assert!(o.has_note("nginx.conf:3: try_files: NGINX serves files that exist first"));
    assert!(
        o.has_note("location /.well-known/acme-challenge/: no proxy_pass: NGINX serves files here")
    );
}

#[test]
fn kafka_topic_locations_become_kafka_routes() {
    let o = one(
        "kafka",
        "http {\n kafka;\n kafka_broker_list 127.0.0.1:9092 127.0.0.1:9093;\n upstream api { server 10.0.0.1:8080; }\n server {\n  listen 80;\n  location / { proxy_pass http://api; }\n  location = /ingest/topic0/ { kafka_topic topic0; allow 10.0.0.0/8; deny all; }\n  location /ingest/topic1/ { kafka_topic topic1; proxy_pass http://api; }\n }\n}\n",
    );
    let routes = o.routes();
    assert_eq!(routes.len(), 3, "{}", o.text);
    let kafka = |i: usize| routes[i]["kafka"].as_table().unwrap();
    assert_eq!(kafka(1)["topic"].as_str(), Some("topic0"));
    let brokers: Vec<&str> = kafka(1)["brokers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(brokers, ["127.0.0.1:9092", "127.0.0.1:9093"]);
    // ngx_kafka_module's handler runs after the access phase: allow/deny stay.
    assert_eq!(
        routes[1]["access"].as_array().map(Vec::len),
        Some(2),
        "{}",
        o.text
    );
    assert_eq!(kafka(2)["topic"].as_str(), Some("topic1"));
    assert!(routes[1].get("upstream").is_none() && routes[2].get("upstream").is_none());
    assert!(o.has_note("nginx.conf:8: kafka_topic: mapped to a kafka route"));
    assert!(o.has_note("nginx.conf:9: proxy_pass: kafka_topic handles this location"));
    assert!(
        !o.notes.iter().any(|n| n.contains("not supported")),
        "{:?}",
        o.notes
    );
    crate::config::parse(&o.text).unwrap_or_else(|p| panic!("{p:?}\n{}", o.text));

    // Without brokers there is nothing to produce to: the location stays behind, said so.
    let o = one(
        "kafka-no-brokers",
        "http {\n upstream api { server 10.0.0.1:8080; }\n server {\n  listen 80;\n  location / { proxy_pass http://api; }\n  location /ingest/ { kafka_topic t; }\n }\n}\n",
    );
    assert_eq!(o.routes().len(), 1);
    assert!(o.has_note("nginx.conf:6: kafka_topic: no kafka_broker_list"));
}

/// Issue 29: `mirror URI` becomes the route's `mirror` on the upstream of the location the URI
/// reaches (NGINX's subrequest); that `internal` location answers 404 to clients in both.
#[test]
fn mirror_maps_to_the_upstream_of_its_internal_location() {
    let o = one(
        "mirror",
        &format!("{API}upstream shadow {{ server 10.0.0.9:8080; }}\nserver {{\n listen 80;\n mirror /mirror;\n mirror_request_body off;\n location /api/ {{ proxy_pass http://api; }}\n location /quiet/ {{ mirror off; proxy_pass http://api; }}\n location = /mirror {{ internal; proxy_pass http://shadow$request_uri; }}\n location /stale/ {{ mirror /nowhere; proxy_pass http://api; }}\n}}\n"),
    );
    let routes = o.routes();
    let by_path = |p: &str| {
        *routes
            .iter()
            .find(|r| {
                let at = |k: &str| r.get(k).and_then(|v| v.as_str());
                at("path_prefix") == Some(p) || at("path_exact") == Some(p)
            })
            .unwrap_or_else(|| panic!("no route {p}: {}", o.text))
    };
    assert_eq!(
        by_path("/api/")["mirror"]["upstream"].as_str(),
        Some("shadow")
    );
    assert!(by_path("/quiet/").get("mirror").is_none(), "{}", o.text);
    assert!(by_path("/stale/").get("mirror").is_none(), "{}", o.text);
    assert_eq!(
        by_path("/mirror")["respond"].as_integer(),
        Some(404),
        "{}",
        o.text
    );
    assert!(o.up("shadow")["backends"].is_array(), "{}", o.text);
    let notes = o.notes.join("\n");
    assert!(
        notes.contains("/nowhere: no location of this server proxies it"),
        "{notes}"
    );
    assert!(notes.contains("mirror_request_body"), "{notes}");
    assert!(notes.contains("internal: NGINX answers 404"), "{notes}");
}

#[test]
fn split_clients_become_splits() {
    let o = one(
        "split",
        &format!(
            "{API}upstream canary {{ server 10.0.0.3:8080; }}\n\
             split_clients \"${{remote_addr}}\" $release {{ 10% canary; 0.5% 10.0.0.9:80; * api; }}\n\
             split_clients \"$http_x_user\" $variant {{ 50% canary; 50% api; }}\n\
             split_clients \"$remote_addr\" $label {{ 50% a; * b; }}\n\
             server {{ location / {{ proxy_pass http://$release; }} location /ab/ {{ proxy_pass http://${{variant}}; }} \
             location /other/ {{ proxy_pass http://$host; }} }}"
        ),
    );
    assert_eq!(
        o.route_summary(),
        [
            "path_prefix=/ split=[{ percent = 10, upstream = \"canary\" }, { percent = 0.5, upstream = \"direct_10_0_0_9_80\" }, { upstream = \"api\" }] split_by=client",
            "path_prefix=/ab/ split=[{ percent = 50, upstream = \"canary\" }, { percent = 50, upstream = \"api\" }] split_by=header:x-user",
        ]
    );
    // A target that is an address gets its implicit upstream, Host as NGINX's $proxy_host.
    assert_eq!(
        o.up("direct_10_0_0_9_80")["host_header"].as_str(),
        Some("10.0.0.9:80")
    );
    assert!(o.has_note("split_clients: $label is not a proxy_pass target here"));
    assert!(o.has_note("proxy_pass: http://$host: variables are not supported, location skipped"));
}

#[test]
fn split_clients_lb_cannot_carry_are_refused_where_used() {
    for (block, want) in [
        (
            "\"$binary_remote_addr\" $v { 50% api; * api; }",
            "nginx.conf:2: split_clients: key \"$binary_remote_addr\"",
        ),
        (
            "\"$remote_addr\" $v { 50% api; 40% api; }",
            "the shares add up to 90% without `*`",
        ),
        (
            "\"$remote_addr\" $v { * api; 50% api; }",
            "50% api: after `*`",
        ),
        (
            "\"$remote_addr\" $v { 50% $host; * api; }",
            "lb needs an upstream name or address",
        ),
        (
            "\"$remote_addr\" $v { 60% api; 50% api; }",
            "percent total is greater than 100%",
        ),
    ] {
        let e = refused(
            "split-refused",
            &format!(
                "{API}split_clients {block}\nserver {{ location / {{ proxy_pass http://$v; }} }}"
            ),
        );
        assert!(e.contains(want), "{want:?} not in {e}");
        assert!(
            e.contains("location / at nginx.conf:3 proxies to $v, import refused"),
            "{e}"
        );
    }
}
