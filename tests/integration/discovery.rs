//! DNS discovery against a real DNS server the test owns (Debian's dnsmasq on a loopback port):
//! names that gain and lose addresses under load, a name that appears after start, the server
//! killed, NXDOMAIN, and SRV weights and priorities. Backends are sample-backends on 127.0.0.x.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const NAME: &str = "api.lbtest.test";

/// A dnsmasq answering for `lbtest.test` from a hosts file the test rewrites (SIGHUP re-reads it).
struct Dns {
    port: u16,
    hosts: PathBuf,
    proc: Proc,
}

fn dnsmasq() -> PathBuf {
    let found = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    found.expect("dnsmasq is needed (scripts/test.sh installs it: apt-get install -y dnsmasq-base)")
}

impl Dns {
    fn start(hosts: &str, extra: &[String]) -> Dns {
        let dir = temp_dir("dns");
        let hosts_file = dir.join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap();
        let port = free_port();
        let child = Command::new(dnsmasq())
            .args([
                "--keep-in-foreground",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                &format!("--addn-hosts={}", hosts_file.display()),
                "--local-ttl=1",
                "--user=root",
                &format!("--pid-file={}", dir.join("pid").display()),
                // Authoritative for the test domain: unknown names are NXDOMAIN.
                "--local=/lbtest.test/",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        let dns = Dns {
            port,
            hosts: hosts_file,
            proc: Proc { child },
        };
        wait_for("dnsmasq to answer", Duration::from_secs(10), || {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .ok()
                .filter(|_| dns.answers())
        });
        dns
    }

    /// Whether the server answers a query for `NAME` (any answer).
    fn answers(&self) -> bool {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in NAME.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        s.send_to(&q, ("127.0.0.1", self.port)).is_ok() && s.recv(&mut [0; 512]).is_ok()
    }

    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        self.proc.signal("-HUP");
    }

    fn kill(mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }
}

fn hosts(ips: &[&str]) -> String {
    ips.iter().map(|ip| format!("{ip} {NAME}\n")).collect()
}

/// A sample-backend on `ip:port`.
fn backend_on(ip: &str, port: u16) -> Backend {
    Backend::start_at(ip, &format!("{ip}:{port}"), &[])
}

fn config(dns: &Dns, entries: &str, extra: &str) -> String {
    format!(
        "[resolver]\nnameservers = [\"127.0.0.1:{}\"]\ntimeout = \"500ms\"\n\n[upstreams.api]\nbackends = [{entries}]\nresolve_interval = \"1s\"\nretries = 2\n{extra}\n",
        dns.port
    )
}

/// Waits until only the backends in `want` answer (checked over a window of fresh requests).
fn wait_for_set(traffic: &Traffic, want: &[&str], what: &str) {
    wait_for(what, Duration::from_secs(20), || {
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        let seen = traffic.since(t);
        let mut names: Vec<String> = seen
            .iter()
            .filter(|s| s.status == 200)
            .map(|s| s.backend.clone())
            .collect();
        names.sort();
        names.dedup();
        (names.len() == want.len() && want.iter().all(|w| names.iter().any(|n| n == w)))
            .then_some(())
    });
}

fn follows_dns_under_load(health_check: bool) {
    let port = free_port();
    let (b2, b3, b4) = (
        backend_on("127.0.0.2", port),
        backend_on("127.0.0.3", port),
        backend_on("127.0.0.4", port),
    );
    let dns = Dns::start(&hosts(&["127.0.0.2"]), &[]);
    let checks = if health_check {
        "[upstreams.api.health_check]\ninterval = \"300ms\"\nhealthy_threshold = 1\n"
    } else {
        ""
    };
    let lb = Lb::start(&config(
        &dns,
        &format!("{{ address = \"{NAME}:{port}\", resolve = true }}"),
        checks,
    ));
    let traffic = Traffic::start(lb.addr, "/", 4);
    wait_for_set(&traffic, &[&b2.name], "127.0.0.2 serving");
    dns.set_hosts(&hosts(&["127.0.0.2", "127.0.0.3"]));
    wait_for_set(&traffic, &[&b2.name, &b3.name], "127.0.0.3 added");
    // Every address replaced at once.
    dns.set_hosts(&hosts(&["127.0.0.4"]));
    wait_for_set(&traffic, &[&b4.name], "every address replaced");
    let seen = traffic.stop();
    assert!(seen.len() > 200, "only {} requests", seen.len());
    assert!(
        failures(&seen).is_empty(),
        "failed requests (checks: {health_check}): {:?}",
        &failures(&seen)[..failures(&seen).len().min(5)]
    );
    let status = lb.status_json();
    let d = &status["upstreams"]["api"]["discovery"][0];
    assert_eq!(d["name"], format!("{NAME}:{port}"));
    assert_eq!(d["result"], "ok");
    assert_eq!(
        d["addresses"],
        serde_json::json!([format!("127.0.0.4:{port}")])
    );
    let backend = &status["upstreams"]["api"]["backends"][0];
    assert_eq!(backend["address"], format!("127.0.0.4:{port}"));
    assert_eq!(backend["name"], format!("{NAME}:{port}"));
    let metrics = lb.metrics();
    assert!(
        metrics.contains(&format!(
            "lb_dns_resolutions_total{{name=\"{NAME}:{port}\",result=\"ok\",upstream=\"api\"}}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "lb_backend_up{{backend=\"127.0.0.4:{port}\",name=\"{NAME}:{port}\",upstream=\"api\"}} 1"
    )));
}

#[test]
fn addresses_come_and_go_under_load_without_a_failed_request() {
    follows_dns_under_load(false);
}

#[test]
fn make_before_break_with_active_health_checks() {
    follows_dns_under_load(true);
}

#[test]
fn a_name_that_does_not_resolve_at_start_appears_later_and_goes_on_nxdomain() {
    let port = free_port();
    let b2 = backend_on("127.0.0.2", port);
    let dns = Dns::start("", &[]);
    let lb = Lb::start(&config(
        &dns,
        &format!("{{ address = \"{NAME}:{port}\", resolve = true }}"),
        "",
    ));
    let r = lb.get("/");
    assert_eq!(r.status, 503, "no address yet: {}", r.text());
    assert_eq!(
        lb.status_json()["upstreams"]["api"]["discovery"][0]["result"],
        "nxdomain"
    );
    dns.set_hosts(&hosts(&["127.0.0.2"]));
    wait_for("the name to resolve", Duration::from_secs(10), || {
        (lb.get("/").backend() == b2.name).then_some(())
    });
    // NXDOMAIN: without an SOA the negative TTL is resolve_interval (1s), then the address goes.
    dns.set_hosts("");
    let gone = Instant::now();
    wait_for(
        "NXDOMAIN to remove the address",
        Duration::from_secs(10),
        || (lb.get("/").status == 503).then_some(()),
    );
    assert!(
        gone.elapsed() >= Duration::from_millis(900),
        "removed before the negative TTL: {:?}",
        gone.elapsed()
    );
}

#[test]
fn a_dead_dns_server_keeps_the_last_good_set() {
    let port = free_port();
    let (b2, b3) = (backend_on("127.0.0.2", port), backend_on("127.0.0.3", port));
    let dns = Dns::start(&hosts(&["127.0.0.2", "127.0.0.3"]), &[]);
    let lb = Lb::start(&config(
        &dns,
        &format!("{{ address = \"{NAME}:{port}\", resolve = true }}"),
        "",
    ));
    let traffic = Traffic::start(lb.addr, "/", 2);
    wait_for_set(&traffic, &[&b2.name, &b3.name], "both addresses serving");
    dns.kill();
    wait_for("a failed resolution", Duration::from_secs(10), || {
        let s = lb.status_json();
        let result = s["upstreams"]["api"]["discovery"][0]["result"]
            .as_str()?
            .to_string();
        result.starts_with("error").then_some(())
    });
    // Several resolve intervals later, both addresses still serve.
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let seen = traffic.since(t);
    traffic.stop();
    assert!(failures(&seen).is_empty(), "{:?}", failures(&seen));
    for b in [&b2, &b3] {
        assert!(seen.iter().any(|s| s.backend == b.name), "{} left", b.name);
    }
    assert!(lb.metrics().contains(&format!(
        "lb_dns_resolutions_total{{name=\"{NAME}:{port}\",result=\"error\""
    )));
}

#[test]
fn srv_weights_and_priorities() {
    let port_a = free_port();
    let port_b = free_port();
    let (a, b, c) = (
        backend_on("127.0.0.2", port_a),
        backend_on("127.0.0.3", port_b),
        backend_on("127.0.0.4", port_a),
    );
    let srv = "_http._tcp.lbtest.test";
    let dns = Dns::start(
        "127.0.0.2 a.lbtest.test\n127.0.0.3 b.lbtest.test\n127.0.0.4 c.lbtest.test\n",
        &[
            // priority 0: a weight 1, b weight 3; priority 10: c (a backup).
            format!("--srv-host={srv},a.lbtest.test,{port_a},0,1"),
            format!("--srv-host={srv},b.lbtest.test,{port_b},0,3"),
            format!("--srv-host={srv},c.lbtest.test,{port_a},10,1"),
        ],
    );
    let lb = Lb::start(&config(&dns, &format!("{{ srv = \"{srv}\" }}"), ""));
    let mut counts = std::collections::HashMap::new();
    for _ in 0..400 {
        let r = lb.get("/");
        assert_eq!(r.status, 200);
        *counts.entry(r.backend()).or_insert(0) += 1;
    }
    assert_eq!(counts.get(&a.name), Some(&100), "{counts:?}");
    assert_eq!(counts.get(&b.name), Some(&300), "{counts:?}");
    assert_eq!(
        counts.get(&c.name),
        None,
        "the backup took traffic: {counts:?}"
    );
    let status = lb.status_json();
    let backends = status["upstreams"]["api"]["backends"]
        .as_array()
        .unwrap()
        .clone();
    let backup = backends
        .iter()
        .find(|x| x["address"] == format!("127.0.0.4:{port_a}"))
        .unwrap();
    assert_eq!(backup["backup"], true);
    drop((a, b));
    // The primaries gone (connections refused: passive ejection), the backup serves.
    wait_for("the backup to serve", Duration::from_secs(10), || {
        (lb.get("/").backend() == c.name).then_some(())
    });
}

#[test]
fn check_reports_discovery_problems() {
    let (ok, out) = check_config(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[resolver]\nnameservers = [\"dns.example\", \"127.0.0.1:53\"]\ntimeout = \"0s\"\n[upstreams.api]\nresolve_interval = \"500ms\"\nbackends = [{ srv = \"http.tcp.example\" }, { srv = \"_http._tcp.example\", weight = 2 }, { address = \"127.0.0.1:80\", resolve = true }, { address = \"name.example:80\", resolve = true }]\n",
    );
    assert!(!ok, "{out}");
    for want in [
        "resolver.nameservers[0]: \"dns.example\" is not an IP address",
        "resolver.timeout: must be greater than zero",
        "upstreams.api.resolve_interval: must be at least 1s",
        "upstreams.api.backends[0].srv: \"http.tcp.example\" is not an SRV name",
        "upstreams.api.backends[1].weight: not with srv",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // An IP literal with resolve = true is a warning; an unresolvable name is no error.
    let (ok, out) = check_config(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.api]\nbackends = [{ address = \"127.0.0.1:80\", resolve = true }, { address = \"no-such-name.invalid:80\", resolve = true }]\n",
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "upstreams.api.backends[0].resolve: warning: \"127.0.0.1:80\" is an IP address"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "upstreams.api.backends[1]: warning: \"no-such-name.invalid:80\" does not resolve now"
        ),
        "{out}"
    );
}

#[test]
fn one_failing_srv_target_does_not_freeze_the_others() {
    // Issue 28, item 6: targets resolve independently. `t.broken.test` fails (its queries go to
    // a server that is not there); `a` serves from the start, `b` joins when its name appears.
    let port = free_port();
    let (a, b) = (backend_on("127.0.0.2", port), backend_on("127.0.0.3", port));
    let srv = "_http._tcp.lbtest.test";
    let dead = free_port();
    let dns = Dns::start(
        "127.0.0.2 a.lbtest.test\n",
        &[
            format!("--srv-host={srv},a.lbtest.test,{port},0,1"),
            format!("--srv-host={srv},b.lbtest.test,{port},0,1"),
            format!("--srv-host={srv},t.broken.test,{port},0,1"),
            format!("--server=/broken.test/127.0.0.1#{dead}"),
        ],
    );
    let lb = Lb::start(&config(&dns, &format!("{{ srv = \"{srv}\" }}"), ""));
    for _ in 0..5 {
        let r = lb.get("/");
        assert_eq!(r.status, 200, "a serves although t.broken.test fails");
        assert_eq!(r.backend(), a.name);
    }
    dns.set_hosts("127.0.0.2 a.lbtest.test\n127.0.0.3 b.lbtest.test\n");
    wait_for("b to join the set", Duration::from_secs(15), || {
        (lb.get("/").backend() == b.name).then_some(())
    });
    let status = lb.status_json();
    let text = status.to_string();
    assert!(
        text.contains("t.broken.test"),
        "the failing target is named: {text}"
    );
}

#[test]
fn resolve_names_honour_the_resolv_conf_search_list() {
    // Issue 28, item 7: `api:PORT` with `resolve = true` is looked up as getaddrinfo would:
    // fewer dots than ndots, so through the search list (here lbtest.test) first.
    let port = free_port();
    let a = backend_on("127.0.0.2", port);
    let dns = Dns::start(&hosts(&["127.0.0.2"]), &[]);
    let dir = temp_dir("resolv");
    let conf = dir.join("resolv.conf");
    std::fs::write(
        &conf,
        "nameserver 127.0.0.1\nsearch nowhere.test lbtest.test\noptions ndots:2\n",
    )
    .unwrap();
    let lb = Lb::start_with_env(
        &config(
            &dns,
            &format!("{{ address = \"api:{port}\", resolve = true }}"),
            "",
        ),
        "",
        &[("LB_RESOLV_CONF", conf.to_str().unwrap())],
    );
    let r = lb.get("/");
    assert_eq!(r.status, 200, "{}", lb.log_text());
    assert_eq!(r.backend(), a.name);
}
