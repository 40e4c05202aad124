//! Differential tests: real NGINX is the oracle. Each case is an NGINX `http {}` body and the
//! equivalent `lb.toml` body; both proxies run in front of the same `sample-backend` processes,
//! get the same requests, and must agree on which backend answered each one, the target it
//! received and its `Host` header (for the random strategies: on the set of backends used), and
//! on the answers lb gives itself (`limit_req` refusals, `return` bodies and redirects).
//!
//! lb runs twice per case: on a hand-written config ([`Case::lb`]) and on `lb import-nginx` of
//! NGINX's config ([`start_imported`]), so the importer and the runtime are checked together;
//! both must give NGINX's answers (the corpora compared with [`Pair::agree`]).
//!
//! NGINX runs as one process (`master_process off`, one worker's worth of state), so its
//! round-robin and least_conn sequences for sequential requests are deterministic. Skipped with a
//! message when NGINX is missing, unless `LB_REQUIRE_BROWSER=1` (`scripts/test.sh`, after
//! `scripts/setup.sh` installed it), which makes a missing NGINX a failure.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The NGINX binary (`LB_NGINX` overrides), or `None` after a loud skip message.
fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    let bin = std::env::var_os("LB_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    if bin.is_file() {
        return Some(bin);
    }
    let required = std::env::var("LB_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{test}: LB_REQUIRE_BROWSER=1 but NGINX is not installed at {} (the oracle of the \
         nginx_diff tests); install it with `apt-get install -y nginx` (scripts/setup.sh \
         does this) or set LB_NGINX",
        bin.display()
    );
    eprintln!(
        "\n*** SKIPPED {test}: NGINX is not installed at {} (set LB_NGINX, or run scripts/test.sh, \
         which installs it and sets LB_REQUIRE_BROWSER=1).\n",
        bin.display()
    );
    None
}

/// A running NGINX (one process, no daemon) with its config and temp files in a temp dir;
/// SIGTERM on drop.
struct Nginx {
    addr: SocketAddr,
    /// `%LISTEN2%`: a second port for configs with servers on two.
    addr2: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts NGINX with `http_body` inside `http {}`; `%LISTEN%` and `%LISTEN2%` become its
    /// loopback addresses.
    fn start(bin: &PathBuf, http_body: &str) -> Nginx {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let addr2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let dir = temp_dir("nginx");
        std::fs::create_dir_all(dir.join("html")).unwrap();
        let d = dir.display();
        let body = http_body
            .replace("%LISTEN2%", &addr2.to_string())
            .replace("%LISTEN%", &addr.to_string());
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/client_body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             root {d}/html;\nproxy_http_version 1.1;\n{body}\n}}\n"
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.log")).unwrap(),
            ))
            .spawn()
            .expect("spawn nginx");
        let mut n = Nginx {
            addr,
            addr2,
            dir,
            child,
        };
        wait_for("NGINX to listen", Duration::from_secs(10), || {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!(
                    "NGINX exited ({status}) at start:\n{}{}",
                    std::fs::read_to_string(n.dir.join("stderr.log")).unwrap_or_default(),
                    std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default()
                );
            }
            TcpStream::connect(n.addr).ok().map(|_| ())
        });
        n.child.try_wait().unwrap();
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One configuration in both languages. `%A%`, `%B%`, … stand for the backends' addresses (as
/// `127.0.0.1:PORT`, written the same in both, which `hash … consistent` depends on).
struct Case {
    /// The body of NGINX's `http {}`; servers listen on `%LISTEN%`.
    nginx: String,
    /// lb.toml without `[server]`/`[admin]`, written by hand (the import runs as well).
    lb: String,
}

impl Case {
    fn new(nginx: &str, lb: &str, backends: &[&Backend]) -> Case {
        let fill = |t: &str| {
            backends
                .iter()
                .enumerate()
                .fold(t.to_string(), |t, (i, b)| {
                    t.replace(
                        &format!("%{}%", (b'A' + i as u8) as char),
                        &b.addr.to_string(),
                    )
                })
        };
        Case {
            nginx: fill(nginx),
            lb: fill(lb),
        }
    }
}

/// NGINX and lb running one [`Case`]: lb twice, on the hand-written config and on what
/// `lb import-nginx` made of NGINX's.
struct Pair {
    nginx: Nginx,
    lb: Lb,
    imported: Lb,
}

/// `lb import-nginx` of the running NGINX's config, started on lb's own test listeners (the
/// imported `[server]` keys other than its listeners are kept): NGINX's `%LISTEN%` becomes
/// the returned lb's `addr`, its `%LISTEN2%` (when imported) the returned second address,
/// also where routes name them (`listen`).
fn start_imported(nginx: &Nginx) -> (Lb, SocketAddr) {
    let out = Command::new(LB)
        .arg("import-nginx")
        .arg(nginx.dir.join("nginx.conf"))
        .output()
        .expect("run lb import-nginx");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let addr2: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let quoted = |a: SocketAddr| format!("\"{a}\"");
    let text = text
        .replace(&quoted(nginx.addr), &format!("\"127.0.0.1:{port}\""))
        .replace(&quoted(nginx.addr2), &quoted(addr2));
    let mut table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut extra = String::new();
    let mut more = Vec::new();
    if let Some(toml::Value::Table(mut server)) = table.remove("server") {
        let listen = server.remove("listen").map(|l| l.to_string());
        if listen.is_some_and(|l| l.contains(&quoted(addr2))) {
            more.push(addr2);
        }
        server.remove("tls");
        for (k, v) in server {
            extra.push_str(&format!("{k} = {v}\n"));
        }
    }
    let body = toml::to_string(&table).unwrap();
    (Lb::start_listening(port, &more, &body, &extra, &[]), addr2)
}

impl Pair {
    fn start(bin: &PathBuf, case: &Case) -> Pair {
        let nginx = Nginx::start(bin, &case.nginx);
        let (imported, _) = start_imported(&nginx);
        Pair {
            nginx,
            lb: Lb::start(&case.lb),
            imported,
        }
    }

    /// Sends `reqs` to NGINX, then to both lbs, and asserts they agree on every answer.
    fn agree(&self, what: &str, reqs: &[Req]) -> Vec<Seen> {
        let n = run(self.nginx.addr, reqs);
        let l = run(self.lb.addr, reqs);
        assert_same(what, reqs, &n, &l);
        let i = run(self.imported.addr, reqs);
        assert_same(&format!("{what} (imported)"), reqs, &n, &i);
        n
    }
}

impl Pair {
    /// [`Pair::agree`] for a strategy that counts requests in flight: each lb request waits
    /// until the previous one is released in lb. lb releases it just after the client has the
    /// last byte, on the request's own task, so a client quick enough can otherwise be routed
    /// while it still counts; NGINX, one process, has released it before it reads the next
    /// request.
    fn agree_settled(&self, what: &str, reqs: &[Req]) -> Vec<Seen> {
        let settled = |lb: &Lb| -> Vec<Seen> {
            reqs.iter()
                .map(|r| {
                    let seen = send(lb.addr, r);
                    wait_for("lb to release the request", Duration::from_secs(5), || {
                        let status = lb.status_json();
                        let busy = status["upstreams"]
                            .as_object()
                            .into_iter()
                            .flat_map(|u| u.values())
                            .flat_map(|u| u["backends"].as_array().cloned().unwrap_or_default())
                            .any(|b| b["in_flight"] != 0);
                        (!busy).then_some(())
                    });
                    seen
                })
                .collect()
        };
        let n = run(self.nginx.addr, reqs);
        assert_same(what, reqs, &n, &settled(&self.lb));
        assert_same(
            &format!("{what} (imported)"),
            reqs,
            &n,
            &settled(&self.imported),
        );
        n
    }
}

/// A request of a corpus: target, `Host` (default `localhost`), source address, the length of
/// a POST body (0: a GET), more headers to send, and the request headers the backend saw and
/// the response headers to compare besides the usual.
#[derive(Debug, Clone)]
struct Req {
    target: String,
    host: Option<String>,
    from: Option<IpAddr>,
    body: usize,
    headers: Vec<(String, String)>,
    request_headers: Vec<String>,
    response_headers: Vec<String>,
}

fn get(target: impl Into<String>) -> Req {
    Req {
        target: target.into(),
        host: None,
        from: None,
        body: 0,
        headers: Vec::new(),
        request_headers: Vec::new(),
        response_headers: Vec::new(),
    }
}

/// A corpus line's request: `HOST PATH` then `from=IP`, `header=NAME:VALUE`, `show=NAME`.
fn corpus_req(rest: &str) -> Req {
    let mut words = rest.split(' ');
    let (host, target) = (
        words.next().unwrap(),
        words.next().expect("#! GET HOST PATH"),
    );
    let mut req = get_host(target, host);
    for w in words {
        match w.split_once('=') {
            Some(("from", ip)) => req.from = Some(ip.parse().expect("from=IP")),
            Some(("header", h)) => {
                let (k, v) = h.split_once(':').expect("header=NAME:VALUE");
                req.headers.push((k.to_string(), v.to_string()));
            }
            Some(("show", name)) => req.request_headers.push(name.to_string()),
            _ => panic!("unknown request word {w:?}"),
        }
    }
    req
}

fn get_host(target: impl Into<String>, host: &str) -> Req {
    Req {
        host: Some(host.to_string()),
        ..get(target)
    }
}

/// What a proxy's answer says: status, the backend, (from sample-backend's `/echo` JSON) the
/// target and `Host` the backend received, and a redirect's `Location`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    backend: String,
    path: String,
    host: String,
    /// The `Location` of a redirect.
    location: String,
    /// The compared headers ([`Req::request_headers`] as `> name: value`, the response's as
    /// `< name: value`; several values joined with `|`).
    headers: Vec<String>,
}

fn send(addr: SocketAddr, req: &Req) -> Seen {
    let conn = match req.from {
        None => Conn::open(addr),
        Some(src) => {
            use socket2::{Domain, Socket, Type};
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
            s.bind(&SocketAddr::new(src, 0).into())
                .unwrap_or_else(|e| panic!("bind {src}: {e}"));
            s.connect_timeout(&addr.into(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect from {src} to {addr}: {e}"));
            Conn::from_stream(s.into())
        }
    };
    let mut headers: Vec<(&str, &str)> = req.host.iter().map(|h| ("Host", h.as_str())).collect();
    headers.extend(req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (method, body) = match req.body {
        0 => ("GET", Vec::new()),
        n => ("POST", vec![b'x'; n]),
    };
    let r = conn
        .and_then(|mut c| c.send(method, &req.target, &headers, &body))
        .unwrap_or_else(|e| panic!("{method} {} to {addr}: {e}", req.target));
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let seen_by_backend = echo_headers_or_none(&json);
    let compared = |dir: &str, name: &String, all: &[(String, String)]| {
        let values = header_values(all, name).join("|");
        format!("{dir} {}: {values}", name.to_ascii_lowercase())
    };
    let mut compared_headers: Vec<String> = req
        .request_headers
        .iter()
        .map(|n| compared(">", n, &seen_by_backend))
        .collect();
    compared_headers.extend(
        req.response_headers
            .iter()
            .map(|n| compared("<", n, &r.headers)),
    );
    let host = json["headers"].as_array().and_then(|h| {
        h.iter()
            .find(|p| {
                p[0].as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("host"))
            })
            .and_then(|p| p[1].as_str())
    });
    Seen {
        status: r.status,
        backend: r.backend(),
        path: json["path"].as_str().unwrap_or("").to_string(),
        host: host.unwrap_or_default().to_string(),
        location: self_relative(r.header("location").unwrap_or(""), addr.port()),
        headers: compared_headers,
    }
}

/// The request headers in a sample-backend `/echo` answer (none when it is not one).
fn echo_headers_or_none(json: &serde_json::Value) -> Vec<(String, String)> {
    if json["headers"].is_array() {
        echo_headers(json)
    } else {
        Vec::new()
    }
}

/// A `Location` pointing back at the proxy itself as a path: NGINX writes its automatic
/// redirects absolute (`http://localhost:PORT/echo/`, `absolute_redirect on`), lb relative
/// (`/echo/`); both send the client to the same place, and the ports differ between the two.
fn self_relative(location: &str, port: u16) -> String {
    let Some(rest) = location.strip_prefix("http://") else {
        return location.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once(':') {
        Some((_, p)) if p == port.to_string() => path.to_string(),
        _ => location.to_string(),
    }
}

/// Sends the requests one after the other, each on a new connection.
fn run(addr: SocketAddr, reqs: &[Req]) -> Vec<Seen> {
    reqs.iter().map(|r| send(addr, r)).collect()
}

/// Fails listing every request on which NGINX and lb disagree.
fn assert_same(what: &str, reqs: &[Req], nginx: &[Seen], lb: &[Seen]) {
    let diffs: Vec<String> = reqs
        .iter()
        .zip(nginx.iter().zip(lb))
        .enumerate()
        .filter(|(_, (_, (n, l)))| n != l)
        .map(|(i, (r, (n, l)))| {
            format!(
                "  #{i} GET {} (Host {:?}, from {:?}):\n    nginx {n:?}\n    lb    {l:?}",
                r.target, r.host, r.from
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: lb disagrees with NGINX on {} of {} requests:\n{}",
        diffs.len(),
        reqs.len(),
        diffs.join("\n")
    );
}

fn backends(names: &[&str]) -> Vec<Backend> {
    names.iter().map(|n| Backend::start(n)).collect()
}

fn distinct(seen: &[Seen]) -> BTreeSet<String> {
    seen.iter().map(|s| s.backend.clone()).collect()
}

#[test]
fn nginx_diff_weighted_round_robin() {
    let Some(bin) = nginx_or_skip("nginx_diff_weighted_round_robin") else {
        return;
    };
    let b = backends(&["a", "b", "c"]);
    let case = Case::new(
        "upstream up { server %A% weight=3; server %B%; server %C% weight=2; }
         server { listen %LISTEN%; location /echo/ { proxy_pass http://up; } }",
        r#"[upstreams.up]
           host_header = "upstream"
           backends = [{ address = "%A%", weight = 3 }, "%B%", { address = "%C%", weight = 2 }]
           [[routes]]
           path_prefix = "/echo/"
           upstream = "up""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    let mut reqs: Vec<Req> = (0..30).map(|i| get(format!("/echo/rr/{i}"))).collect();
    reqs.push(get("/other"));
    let seen = p.agree("weights 3,1,2", &reqs);
    let a = seen.iter().filter(|s| s.backend == "a").count();
    assert_eq!((a, distinct(&seen).len()), (15, 4), "{seen:?}"); // a, b, c and the 404
}

#[test]
fn nginx_diff_least_conn_sequential() {
    let Some(bin) = nginx_or_skip("nginx_diff_least_conn_sequential") else {
        return;
    };
    let b = backends(&["a", "b", "c"]);
    let case = Case::new(
        "upstream up { least_conn; server %A%; server %B% weight=2; server %C%; }
         server { listen %LISTEN%; location /echo/ { proxy_pass http://up; } }",
        r#"[upstreams.up]
           strategy = "least_connections"
           host_header = "upstream"
           backends = ["%A%", { address = "%B%", weight = 2 }, "%C%"]
           [[routes]]
           path_prefix = "/echo/"
           upstream = "up""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    let reqs: Vec<Req> = (0..24).map(|i| get(format!("/echo/lc/{i}"))).collect();
    let seen = p.agree_settled("least_conn, sequential", &reqs);
    assert_eq!(distinct(&seen).len(), 3);
}

fn hash_case(b: &[&Backend]) -> Case {
    let servers: String = (0..b.len())
        .map(|i| format!("server %{}%; ", (b'A' + i as u8) as char))
        .collect();
    let list: Vec<String> = (0..b.len())
        .map(|i| format!("\"%{}%\"", (b'A' + i as u8) as char))
        .collect();
    Case::new(
        &format!(
            "upstream up {{ hash $request_uri consistent; {servers}}}
             server {{ listen %LISTEN%; location /echo/ {{ proxy_pass http://up; }} }}"
        ),
        &format!(
            "[upstreams.up]
             strategy = \"consistent_hash\"
             hash_key = \"uri\"
             host_header = \"upstream\"
             backends = [{}]
             [[routes]]
             path_prefix = \"/echo/\"
             upstream = \"up\"",
            list.join(", ")
        ),
        b,
    )
}

#[test]
fn nginx_diff_consistent_hash_by_request_uri() {
    let Some(bin) = nginx_or_skip("nginx_diff_consistent_hash_by_request_uri") else {
        return;
    };
    let b = backends(&["a", "b", "c", "d", "e"]);
    let reqs: Vec<Req> = (0..200)
        .map(|i| match i % 4 {
            0 => get(format!("/echo/item/{i}")),
            1 => get(format!("/echo/item/{i}?page={}", i % 7)),
            2 => get(format!("/echo/user/{}/cart", i * 7919)),
            _ => get(format!("/echo/%7Eitem/{i}")),
        })
        .collect();
    let all: Vec<&Backend> = b.iter().collect();
    let before = {
        let p = Pair::start(&bin, &hash_case(&all));
        let seen = p.agree("hash $request_uri consistent over 5", &reqs);
        assert_eq!(distinct(&seen).len(), 5, "every backend has keys");
        seen
    };
    // Without c: both must move exactly c's keys, to the same backends.
    let fewer: Vec<&Backend> = b.iter().filter(|x| x.name != "c").collect();
    let p = Pair::start(&bin, &hash_case(&fewer));
    let after = p.agree("hash $request_uri consistent over 4", &reqs);
    for (x, y) in before.iter().zip(&after) {
        assert!(x.backend == "c" || x.backend == y.backend, "{x:?} → {y:?}");
    }
}

#[test]
fn nginx_diff_ip_hash_by_client_address() {
    let Some(bin) = nginx_or_skip("nginx_diff_ip_hash_by_client_address") else {
        return;
    };
    let b = backends(&["a", "b", "c", "d", "e"]);
    let case = Case::new(
        "upstream up { ip_hash; server %A% weight=2; server %B%; server %C%; server %D%; server %E% down; }
         server { listen %LISTEN%; location /echo/ { proxy_pass http://up; } }",
        r#"[upstreams.up]
           strategy = "ip_hash"
           host_header = "upstream"
           backends = [{ address = "%A%", weight = 2 }, "%B%", "%C%", "%D%", { address = "%E%", down = true }]
           [[routes]]
           path_prefix = "/echo/"
           upstream = "up""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    // 127.0.X.1 and 127.0.X.77 share their first three octets, so their backend.
    let reqs: Vec<Req> = (1..=40u8)
        .flat_map(|x| {
            [1u8, 77].map(|last| Req {
                from: Some(IpAddr::from([127, 0, x, last])),
                ..get(format!("/echo/ip/{x}/{last}"))
            })
        })
        .collect();
    let seen = p.agree("ip_hash over 127.0.X.1 clients", &reqs);
    let used = distinct(&seen);
    assert!(used.len() >= 4 && !used.contains("e"), "{used:?}");
    for pair in seen.chunks(2) {
        assert_eq!(pair[0].backend, pair[1].backend, "same /24, same backend");
    }
}

#[test]
fn nginx_diff_backup_and_down() {
    let Some(bin) = nginx_or_skip("nginx_diff_backup_and_down") else {
        return;
    };
    let mut b = backends(&["a", "b", "c", "d"]);
    let case = Case::new(
        "upstream up { server %A%; server %B%; server %C% backup; server %D% down; }
         server { listen %LISTEN%; location /echo/ { proxy_pass http://up; } }",
        r#"[upstreams.up]
           host_header = "upstream"
           backends = ["%A%", "%B%", { address = "%C%", backup = true }, { address = "%D%", down = true }]
           [[routes]]
           path_prefix = "/echo/"
           upstream = "up""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    let reqs: Vec<Req> = (0..12).map(|i| get(format!("/echo/bk/{i}"))).collect();
    let seen = p.agree("primaries up", &reqs);
    assert_eq!(distinct(&seen), ["a", "b"].map(String::from).into());
    // Both primaries gone: the backup answers everything (after the failed attempts).
    b[0].kill();
    b[1].kill();
    let seen = p.agree("primaries killed", &reqs);
    assert!(seen.iter().all(|s| s.backend == "c" && s.status == 200));
}

#[test]
fn nginx_diff_random_strategies_use_the_same_backends() {
    let Some(bin) = nginx_or_skip("nginx_diff_random_strategies_use_the_same_backends") else {
        return;
    };
    let b = backends(&["a", "b", "c", "d"]);
    let case = Case::new(
        "upstream r { random; server %A%; server %B%; server %C%; server %D% down; }
         upstream t { random two least_conn; server %A%; server %B%; server %C%; server %D% down; }
         server { listen %LISTEN%;
           location /echo/random/ { proxy_pass http://r; }
           location /echo/two/ { proxy_pass http://t; } }",
        r#"[upstreams.r]
           strategy = "random"
           host_header = "upstream"
           backends = ["%A%", "%B%", "%C%", { address = "%D%", down = true }]
           [upstreams.t]
           strategy = "two_choices"
           host_header = "upstream"
           backends = ["%A%", "%B%", "%C%", { address = "%D%", down = true }]
           [[routes]]
           path_prefix = "/echo/random/"
           upstream = "r"
           [[routes]]
           path_prefix = "/echo/two/"
           upstream = "t""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    for prefix in ["/echo/random/", "/echo/two/"] {
        // 60 draws over 3 backends miss one with probability 3·(2/3)^60 ≈ 10^-10.
        let reqs: Vec<Req> = (0..60).map(|i| get(format!("{prefix}{i}"))).collect();
        let (n, l) = (run(p.nginx.addr, &reqs), run(p.lb.addr, &reqs));
        assert_eq!(distinct(&n), distinct(&l), "{prefix}");
        assert_eq!(distinct(&l), ["a", "b", "c"].map(String::from).into());
        // What a backend received does not depend on which one it was.
        let what = |s: &[Seen]| -> Vec<(u16, String, String)> {
            s.iter()
                .map(|s| (s.status, s.path.clone(), s.host.clone()))
                .collect()
        };
        assert_eq!(what(&n), what(&l), "{prefix}");
    }
}

#[test]
fn nginx_diff_location_matching_order() {
    let Some(bin) = nginx_or_skip("nginx_diff_location_matching_order") else {
        return;
    };
    let b = backends(&["exact", "pre", "skip", "re1", "re2", "echo"]);
    let case = Case::new(
        r"upstream u_exact { server %A%; } upstream u_pre { server %B%; }
          upstream u_skip { server %C%; } upstream u_re1 { server %D%; }
          upstream u_re2 { server %E%; } upstream u_echo { server %F%; }
          server { listen %LISTEN%;
            location /echo/ { proxy_pass http://u_echo; }
            location = /echo/exact { proxy_pass http://u_exact; }
            location /echo/static/ { proxy_pass http://u_pre; }
            location ^~ /echo/static/img/ { proxy_pass http://u_skip; }
            location ~ \.png$ { proxy_pass http://u_re1; }
            location ~* \.(png|jpe?g)$ { proxy_pass http://u_re2; }
            location /echo/static/img/deep/ { proxy_pass http://u_pre; }
          }",
        r#"[upstreams.u_exact]
           host_header = "upstream"
           backends = ["%A%"]
           [upstreams.u_pre]
           host_header = "upstream"
           backends = ["%B%"]
           [upstreams.u_skip]
           host_header = "upstream"
           backends = ["%C%"]
           [upstreams.u_re1]
           host_header = "upstream"
           backends = ["%D%"]
           [upstreams.u_re2]
           host_header = "upstream"
           backends = ["%E%"]
           [upstreams.u_echo]
           host_header = "upstream"
           backends = ["%F%"]
           [[routes]]
           path_prefix = "/echo/"
           upstream = "u_echo"
           [[routes]]
           path_exact = "/echo/exact"
           upstream = "u_exact"
           [[routes]]
           path_prefix = "/echo/static/"
           upstream = "u_pre"
           [[routes]]
           path_prefix = "/echo/static/img/"
           skip_regex = true
           upstream = "u_skip"
           [[routes]]
           path_regex = '\.png$'
           upstream = "u_re1"
           [[routes]]
           path_regex = '(?i)\.(png|jpe?g)$'
           upstream = "u_re2"
           [[routes]]
           path_prefix = "/echo/static/img/deep/"
           upstream = "u_pre""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    let reqs: Vec<Req> = [
        "/echo/exact",
        "/echo/exact/",
        "/echo/exact?x=1",
        "/echo/exactly",
        "/echo/static/a.css",
        "/echo/static/a.png",
        "/echo/static/a.png?v=2",
        "/echo/static/A.PNG",
        "/echo/static/a.jpeg",
        "/echo/a.png",
        "/echo/static/img/a.png",
        "/echo/static/img/deep/a.png",
        "/echo/static/img/deep/a.css",
        "/echo/STATIC/a.css",
        "/echo/static/%61.png",
        "/echo/static/../exact",
        "/echo//static/a.css",
        "/echo/",
        "/other",
        "/other.png",
    ]
    .into_iter()
    .map(get)
    .collect();
    let seen = p.agree("location order", &reqs);
    assert!(distinct(&seen).len() >= 6, "{seen:?}");
    // NGINX's `auto_redirect`: a proxied prefix location's name without its trailing slash gets
    // a 301 to it, before any regex (and an `=` location of that name would win).
    let redirects: Vec<Req> = ["/echo", "/echo/static/img", "/echo/static/img?x=1"]
        .into_iter()
        .map(get)
        .collect();
    for seen in p.agree("auto_redirect", &redirects) {
        assert_eq!(seen.status, 301, "{seen:?}");
    }
}

#[test]
fn nginx_diff_server_name_routing() {
    let Some(bin) = nginx_or_skip("nginx_diff_server_name_routing") else {
        return;
    };
    let b = backends(&["first", "def", "exact", "star", "dot", "deep", "trail"]);
    let case = Case::new(
        "upstream u_first { server %A%; } upstream u_def { server %B%; }
         upstream u_exact { server %C%; } upstream u_star { server %D%; }
         upstream u_dot { server %E%; } upstream u_deep { server %F%; }
         server { listen %LISTEN%; server_name first.test; location /echo/ { proxy_pass http://u_first; } }
         server { listen %LISTEN% default_server; server_name _; location /echo/ { proxy_pass http://u_def; } }
         server { listen %LISTEN%; server_name www.example.com; location /echo/www/ { proxy_pass http://u_exact; } }
         server { listen %LISTEN%; server_name *.example.com; location /echo/ { proxy_pass http://u_star; } }
         server { listen %LISTEN%; server_name .example.org; location /echo/ { proxy_pass http://u_dot; } }
         server { listen %LISTEN%; server_name *.deep.example.com; location /echo/ { proxy_pass http://u_deep; } }
         upstream u_trail { server %G%; }
         server { listen %LISTEN%; server_name www.example.* api.example.com.*; location /echo/ { proxy_pass http://u_trail; } }",
        r#"[upstreams.u_first]
           host_header = "upstream"
           backends = ["%A%"]
           [upstreams.u_def]
           host_header = "upstream"
           backends = ["%B%"]
           [upstreams.u_exact]
           host_header = "upstream"
           backends = ["%C%"]
           [upstreams.u_star]
           host_header = "upstream"
           backends = ["%D%"]
           [upstreams.u_dot]
           host_header = "upstream"
           backends = ["%E%"]
           [upstreams.u_deep]
           host_header = "upstream"
           backends = ["%F%"]
           [[routes]]
           host = "first.test"
           path_prefix = "/echo/"
           upstream = "u_first"
           [[routes]]
           path_prefix = "/echo/"
           upstream = "u_def"
           [[routes]]
           host = "www.example.com"
           path_prefix = "/echo/www/"
           upstream = "u_exact"
           [[routes]]
           host = "*.example.com"
           path_prefix = "/echo/"
           upstream = "u_star"
           [[routes]]
           host = ".example.org"
           path_prefix = "/echo/"
           upstream = "u_dot"
           [[routes]]
           host = "*.deep.example.com"
           path_prefix = "/echo/"
           upstream = "u_deep"
           [upstreams.u_trail]
           host_header = "upstream"
           backends = ["%G%"]
           [[routes]]
           host = "www.example.*"
           path_prefix = "/echo/"
           upstream = "u_trail"
           [[routes]]
           host = "api.example.com.*"
           path_prefix = "/echo/"
           upstream = "u_trail""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    let hosts = [
        "first.test",
        "www.example.com",
        "WWW.Example.COM",
        "www.example.com:8080",
        "www.example.com.",
        "a.example.com",
        "a.b.example.com",
        "example.com",
        "example.org",
        "x.example.org",
        "a.deep.example.com",
        "deep.example.com",
        "unknown.net",
        "127.0.0.1",
        "www.example.net",
        "WWW.Example.IO:8080",
        "www.example.co.uk",
        "www.example",
        "api.example.com.evil.net",
        "api.example.com",
    ];
    let reqs: Vec<Req> = hosts
        .iter()
        .flat_map(|h| [get_host("/echo/www/x", h), get_host("/echo/y", h)])
        .collect();
    let seen = p.agree("server_name", &reqs);
    assert!(distinct(&seen).len() >= 8, "{seen:?}"); // seven backends and a 404
}

#[test]
fn nginx_diff_proxy_pass_with_uri_replaces_the_prefix() {
    let Some(bin) = nginx_or_skip("nginx_diff_proxy_pass_with_uri_replaces_the_prefix") else {
        return;
    };
    let b = backends(&["v2", "plain"]);
    let case = Case::new(
        "upstream up { server %A%; } upstream plain { server %B%; }
         server { listen %LISTEN%;
           location /api/ { proxy_pass http://up/echo/v2/; }
           location /echo/ { proxy_pass http://plain; } }",
        r#"[upstreams.up]
           host_header = "upstream"
           backends = ["%A%"]
           [upstreams.plain]
           host_header = "upstream"
           backends = ["%B%"]
           [[routes]]
           path_prefix = "/api/"
           replace_prefix = "/echo/v2/"
           upstream = "up"
           [[routes]]
           path_prefix = "/echo/"
           upstream = "plain""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    let reqs: Vec<Req> = [
        "/api/users",
        "/api/users?id=7&q=a%20b",
        "/api/",
        "/api/a/../b",
        "/api//x",
        "/api/a%20b",
        "/api/%7Euser",
        "/api/a%3Fb",
        "/echo/kept/%7E/as/sent?x",
    ]
    .into_iter()
    .map(get)
    .collect();
    p.agree("proxy_pass with a URI", &reqs);
    // Known difference: NGINX decodes `%2F` before replacing the prefix and sends a `/`; lb's
    // RFC 3986 normalization keeps the encoded slash (it is not an unreserved character).
    let (n, l) = (
        send(p.nginx.addr, &get("/api/a%2Fb")),
        send(p.lb.addr, &get("/api/a%2Fb")),
    );
    assert_eq!((&*n.path, &*l.path), ("/echo/v2/a/b", "/echo/v2/a%2Fb"));
}

#[test]
fn nginx_diff_host_header_sent_to_backends() {
    let Some(bin) = nginx_or_skip("nginx_diff_host_header_sent_to_backends") else {
        return;
    };
    let b = backends(&["dflt", "host", "http_host", "literal"]);
    let case = Case::new(
        "upstream backend_up { server %A%; } upstream u_host { server %B%; }
         upstream u_http_host { server %C%; } upstream u_literal { server %D%; }
         server { listen %LISTEN%;
           location /echo/default/ { proxy_pass http://backend_up; }
           location /echo/host/ { proxy_set_header Host $host; proxy_pass http://u_host; }
           location /echo/http_host/ { proxy_set_header Host $http_host; proxy_pass http://u_http_host; }
           location /echo/literal/ { proxy_set_header Host api.internal:8080; proxy_pass http://u_literal; } }",
        r#"[upstreams.backend_up]
           host_header = "upstream"
           backends = ["%A%"]
           [upstreams.u_host]
           host_header = "client_host"
           backends = ["%B%"]
           [upstreams.u_http_host]
           backends = ["%C%"]
           [upstreams.u_literal]
           host_header = "api.internal:8080"
           backends = ["%D%"]
           [[routes]]
           path_prefix = "/echo/default/"
           upstream = "backend_up"
           [[routes]]
           path_prefix = "/echo/host/"
           upstream = "u_host"
           [[routes]]
           path_prefix = "/echo/http_host/"
           upstream = "u_http_host"
           [[routes]]
           path_prefix = "/echo/literal/"
           upstream = "u_literal""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    let mut reqs = Vec::new();
    for host in [
        "example.com",
        "api.example.com",
        "Example.COM:8080",
        "x.example.com.",
    ] {
        for loc in ["default", "host", "http_host", "literal"] {
            reqs.push(get_host(format!("/echo/{loc}/x"), host));
        }
    }
    let seen = p.agree("Host header", &reqs);
    assert_eq!(seen[0].host, "backend_up", "NGINX's default is $proxy_host");
    // `$host` (lb's "client_host") is the host lower-cased, without port or trailing dot;
    // `$http_host` (lb's "client") is the header as sent.
    assert_eq!(
        (&*seen[9].host, &*seen[10].host),
        ("example.com", "Example.COM:8080")
    );
    assert_eq!(seen[13].host, "x.example.com");
}

#[test]
fn nginx_diff_limit_req_burst_keys_and_inheritance() {
    let Some(bin) = nginx_or_skip("nginx_diff_limit_req_burst_keys_and_inheritance") else {
        return;
    };
    let b = backends(&["a"]);
    // 1 request a minute: within the test, only the burst decides (no leak to speak of).
    let case = Case::new(
        "upstream up { server %A%; }
         limit_req_zone $binary_remote_addr zone=per_ip:1m rate=1r/m;
         limit_req_zone $request_uri zone=per_uri:1m rate=1r/m;
         server {
           listen %LISTEN%;
           limit_req zone=per_ip burst=3 nodelay;
           limit_req_status 429;
           location /echo/ { proxy_pass http://up; }
           location /echo/uri/ { limit_req zone=per_uri; proxy_pass http://up; }
         }",
        r#"[upstreams.up]
           host_header = "upstream"
           backends = ["%A%"]
           [rate_limits.per_ip]
           rate = "1/m"
           burst = 3
           nodelay = true
           [rate_limits.per_uri]
           key = "uri"
           rate = "1/m"
           [[routes]]
           path_prefix = "/echo/"
           rate_limits = ["per_ip"]
           upstream = "up"
           [[routes]]
           path_prefix = "/echo/uri/"
           rate_limits = ["per_uri"]
           upstream = "up""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    let from = |last: u8, target: &str| Req {
        from: Some(IpAddr::from([127, 0, 9, last])),
        ..get(target)
    };
    let mut reqs = Vec::new();
    // Client .1: its burst of 3 beyond the first, then refusals; client .2 has its own.
    reqs.extend((0..6).map(|i| from(1, &format!("/echo/a/{i}"))));
    reqs.extend((0..5).map(|i| from(2, &format!("/echo/b/{i}"))));
    // `/echo/uri/` has its own limit_req (NGINX drops the server's there): per URI, no burst,
    // and client .1's spent burst does not matter.
    reqs.extend([
        from(1, "/echo/uri/1"),
        from(1, "/echo/uri/1"),
        from(2, "/echo/uri/1"),
        from(1, "/echo/uri/2"),
        from(1, "/echo/uri/1?q"),
    ]);
    let seen = p.agree("limit_req", &reqs);
    let codes: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(
        codes,
        [200, 200, 200, 200, 429, 429, 200, 200, 200, 200, 429, 200, 429, 429, 200, 200]
    );
}

#[test]
fn nginx_diff_return_answers_and_redirects() {
    let Some(bin) = nginx_or_skip("nginx_diff_return_answers_and_redirects") else {
        return;
    };
    let b = backends(&["a"]);
    let case = Case::new(
        r#"upstream up { server %A%; }
         server {
           listen %LISTEN%;
           location = /healthz { default_type application/json; return 200 "ok\n"; }
           location /old/ { return 301 http://$host/new$request_uri; }
           location /teapot/ { return 418; }
           location /empty/ { return 204; }
           location /q/ { return 302 http://$host$uri$is_args$args; }
           location /echo/ { proxy_pass http://up; }
         }"#,
        r#"[upstreams.up]
           host_header = "upstream"
           backends = ["%A%"]
           [[routes]]
           path_exact = "/healthz"
           respond = 200
           body = "ok\n"
           content_type = "application/json"
           [[routes]]
           path_prefix = "/old/"
           respond = 301
           location = "http://$host/new$request_uri"
           [[routes]]
           path_prefix = "/teapot/"
           respond = 418
           [[routes]]
           path_prefix = "/empty/"
           respond = 204
           [[routes]]
           path_prefix = "/q/"
           respond = 302
           location = "http://$host$uri$is_args$args"
           [[routes]]
           path_prefix = "/echo/"
           upstream = "up""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let p = Pair::start(&bin, &case);
    let reqs = [
        get("/healthz"),
        get_host("/old/x?y=1", "Example.COM:8080"),
        get("/teapot/1"),
        get("/echo/a"),
        get("/OLD/x"),
        get("/empty/"),
    ];
    let seen = p.agree("return", &reqs);
    let codes: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(codes, [200, 301, 418, 200, 404, 204]);
    // The same Location, body and framing from all three.
    let answer = |addr: SocketAddr, target: &str, host: &str| {
        let r = Conn::open(addr)
            .and_then(|mut c| c.send("GET", target, &[("Host", host)], b""))
            .unwrap();
        let header = |n: &str| r.header(n).map(str::to_string);
        (
            header("location"),
            r.text(),
            header("content-length"),
            header("content-type"),
        )
    };
    let cases = [
        ("/old/x?y=1", "Example.COM:8080"),
        // $request_uri keeps an empty query's `?`; for $is_args and $args it is no query.
        ("/old/x?", "a.test"),
        ("/q/x?", "a.test"),
        ("/q/x?k=v", "a.test"),
        // Absolute form: $request_uri is the path and query.
        ("http://b.test/old/a?b=1", "b.test"),
        ("/healthz", "localhost"),
        // No body, and no Content-Length or Content-Type either.
        ("/empty/", "localhost"),
    ];
    let nginx: Vec<_> = cases
        .iter()
        .map(|(t, h)| answer(p.nginx.addr, t, h))
        .collect();
    assert_eq!(
        nginx[0].0.as_deref(),
        Some("http://example.com/new/old/x?y=1")
    );
    assert_eq!(nginx[1].0.as_deref(), Some("http://a.test/new/old/x?"));
    assert_eq!(nginx[2].0.as_deref(), Some("http://a.test/q/x"));
    assert_eq!(nginx[3].0.as_deref(), Some("http://a.test/q/x?k=v"));
    assert_eq!(nginx[4].0.as_deref(), Some("http://b.test/new/old/a?b=1"));
    assert_eq!(
        (nginx[5].1.as_str(), nginx[5].3.as_deref()),
        ("ok\n", Some("application/json"))
    );
    assert_eq!((nginx[6].2.as_deref(), nginx[6].3.as_deref()), (None, None));
    for addr in [p.lb.addr, p.imported.addr] {
        for (i, (t, h)) in cases.iter().enumerate() {
            let lb = answer(addr, t, h);
            assert_eq!(lb.0, nginx[i].0, "Location of {t}");
            if i >= 5 {
                let n = &nginx[i];
                assert_eq!((&lb.1, &lb.2, &lb.3), (&n.1, &n.2, &n.3), "answer to {t}");
            }
        }
    }
}

/// Issue 27 item 10: `server 127.0.27.N;` (no port) is hashed as written by NGINX; the import
/// gives each backend `hash_name`, so the same keys reach the same backends.
#[test]
fn nginx_diff_consistent_hash_servers_without_port() {
    let Some(bin) = nginx_or_skip("nginx_diff_consistent_hash_servers_without_port") else {
        return;
    };
    let names = ["a", "b", "c", "d"];
    let b: Vec<Backend> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Backend::start_at(n, &format!("127.0.27.{}:80", i + 1), &[]))
        .collect();
    let case = Case::new(
        "upstream up { hash $request_uri consistent; server 127.0.27.1; server 127.0.27.2; \
         server 127.0.27.3; server 127.0.27.4; }
         server { listen %LISTEN%; location /echo/ { proxy_pass http://up; } }",
        r#"[upstreams.up]
           strategy = "consistent_hash"
           hash_key = "uri"
           host_header = "upstream"
           backends = [
             { address = "127.0.27.1:80", hash_name = "127.0.27.1" },
             { address = "127.0.27.2:80", hash_name = "127.0.27.2" },
             { address = "127.0.27.3:80", hash_name = "127.0.27.3" },
             { address = "127.0.27.4:80", hash_name = "127.0.27.4" },
           ]
           [[routes]]
           path_prefix = "/echo/"
           upstream = "up""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let reqs: Vec<Req> = (0..120).map(|i| get(format!("/echo/k/{i}"))).collect();
    let p = Pair::start(&bin, &case);
    let seen = p.agree("hash $request_uri consistent, servers without port", &reqs);
    assert_eq!(distinct(&seen).len(), 4, "every backend has keys");
}

/// Issue 27 items 9 and 14: a nested prefix location stays under its parent, and
/// `try_files $uri @app` sends what is not a file to the named location's proxy.
#[test]
fn nginx_diff_nested_prefix_and_try_files_named_location() {
    let Some(bin) = nginx_or_skip("nginx_diff_nested_prefix_and_try_files_named_location") else {
        return;
    };
    let b = backends(&["app", "admin", "named"]);
    let case = Case::new(
        "upstream u_app { server %A%; } upstream u_admin { server %B%; }
         upstream u_named { server %C%; }
         server { listen %LISTEN%;
           location /echo/app/ { proxy_pass http://u_app;
             location /echo/app/admin/ { proxy_pass http://u_admin; } }
           location /echo/ { try_files $uri @named; }
           location @named { proxy_pass http://u_named; }
         }",
        r#"[upstreams.u_app]
           host_header = "upstream"
           backends = ["%A%"]
           [upstreams.u_admin]
           host_header = "upstream"
           backends = ["%B%"]
           [upstreams.u_named]
           host_header = "upstream"
           backends = ["%C%"]
           [[routes]]
           path_prefix = "/echo/app/"
           upstream = "u_app"
           [[routes]]
           path_prefix = "/echo/app/admin/"
           upstream = "u_admin"
           [[routes]]
           path_prefix = "/echo/"
           upstream = "u_named""#,
        &b.iter().collect::<Vec<_>>(),
    );
    let reqs: Vec<Req> = [
        "/echo/app/x",
        "/echo/app/admin/y",
        "/echo/app/adminx",
        "/echo/other",
        "/echo/a/b?q=1",
    ]
    .into_iter()
    .map(get)
    .collect();
    let p = Pair::start(&bin, &case);
    p.agree("nested prefix and try_files @named", &reqs);
}

/// The differential corpus (tests/nginx/diff/, see its README): every file either runs on real
/// NGINX and on lb's import of it with the same answers to its `#! GET HOST PATH` requests, or
/// (`#! refused TEXT`) makes the import exit 1 with TEXT.
#[test]
fn nginx_diff_corpus() {
    let Some(bin) = nginx_or_skip("nginx_diff_corpus") else {
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/nginx/diff");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "corpus missing: {}", dir.display());
    let b = backends(&["a", "b", "c", "d"]);
    let all: Vec<&Backend> = b.iter().collect();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let body = Case::new(&text, "", &all).nginx;
        // (to %LISTEN2%, the request)
        let mut reqs: Vec<(bool, Req)> = Vec::new();
        let mut refused = None;
        let (mut request_headers, mut response_headers) = (Vec::new(), Vec::new());
        let names = |rest: &str| rest.split_whitespace().map(str::to_string).collect();
        for line in text.lines().filter_map(|l| l.strip_prefix("#! ")) {
            match line.split_once(' ') {
                Some(("refused", want)) => refused = Some(want.to_string()),
                Some((get @ ("GET" | "GET2"), rest)) => {
                    reqs.push((get == "GET2", corpus_req(rest)))
                }
                Some(("POST", rest)) => {
                    // HOST PATH BYTES [words]: the words as after a GET's PATH.
                    let mut words: Vec<&str> = rest.split(' ').collect();
                    assert!(words.len() >= 3, "{name}: #! POST HOST PATH BYTES");
                    let body = words.remove(2).parse().expect("#! POST HOST PATH BYTES");
                    let req = corpus_req(&words.join(" "));
                    reqs.push((false, Req { body, ..req }));
                }
                Some(("request-headers", rest)) => request_headers = names(rest),
                Some(("response-headers", rest)) => response_headers = names(rest),
                _ => panic!("{name}: unknown line #! {line}"),
            }
        }
        for (_, r) in &mut reqs {
            r.request_headers.extend(request_headers.iter().cloned());
            r.response_headers.extend(response_headers.iter().cloned());
        }
        if let Some(want) = refused {
            let tmp = temp_dir("nginx-diff-refused");
            let conf = tmp.join(&name);
            let filled = body
                .replace("%LISTEN%", &format!("127.0.0.1:{}", free_port()))
                .replace("%LISTEN2%", &format!("127.0.0.1:{}", free_port()));
            std::fs::write(&conf, filled).unwrap();
            let out = Command::new(LB)
                .arg("import-nginx")
                .arg(&conf)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{name}: not refused:\n{err}");
            assert!(err.contains(&want), "{name}: {want:?} not in:\n{err}");
            continue;
        }
        assert!(!reqs.is_empty(), "{name}: no requests");
        let nginx = Nginx::start(&bin, &body);
        let (lb, lb2) = start_imported(&nginx);
        let on = |(one, two): (SocketAddr, SocketAddr)| -> Vec<Seen> {
            let to = |second: bool| if second { two } else { one };
            reqs.iter().map(|(s, r)| send(to(*s), r)).collect()
        };
        let n = on((nginx.addr, nginx.addr2));
        let l = on((lb.addr, lb2));
        let only: Vec<Req> = reqs.iter().map(|(_, r)| r.clone()).collect();
        assert_same(&name, &only, &n, &l);
    }
}
