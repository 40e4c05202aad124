//! Admin listener security against a real lb: the bearer token on every endpoint, public paths,
//! the client allow-list (a second loopback address as the source), cross-site writes, token
//! rotation by reload, `--check` problems and warnings, HTTPS with curl including a certificate
//! swapped by a reload, and the dashboard with a token in headless Chromium.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::webdriver::{Browser, BrowserPaths};
use crate::support::*;

const TOKEN: &str = "9bT4x-correct-horse-battery-staple-7Qm";
const OTHER_TOKEN: &str = "rotated-token-2f8c1e5a9d7b3f6e0a4c";

/// Writes `token` into a fresh file readable by its owner only.
fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("admin.token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn rewrite(path: &Path, text: &str) {
    write_file(path, text);
}

/// lb with one backend; `admin` goes into `[admin]` (after `listen`).
fn start(admin: &str) -> (Lb, Backend) {
    let b = Backend::start("a");
    let lb = Lb::start(&format!(
        "{admin}\n[upstreams.api]\nbackends = [\"{}\"]\n",
        b.addr
    ));
    (lb, b)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn call(lb: &Lb, method: &str, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    request(lb.admin, method, path, &headers, b"")
}

/// The value of one `lb_admin_requests_total` series (read with `token`).
fn admin_count(lb: &Lb, token: Option<&str>, path: &str, result: &str) -> Option<u64> {
    let text = call(lb, "GET", "/metrics", token).text();
    let series = format!("lb_admin_requests_total{{path=\"{path}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
}

/// curl against the admin listener: (status, body, stderr). `args` come before the URL.
fn curl(url: &str, args: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        code.trim().parse().unwrap_or(0),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// DNS rebinding: a page on attacker.example whose name now resolves to the admin address sends
/// `Host: attacker.example:PORT`. Without a token only IP literals, `localhost` and `admin.hosts`
/// are served; with one, the token decides.
#[test]
fn without_a_token_a_host_name_not_configured_is_refused() {
    let (lb, _b) = start("hosts = [\"lb.internal\"]");
    let url = format!("http://{}/status", lb.admin);
    let port = lb.admin.port();
    for (host, want) in [
        (format!("attacker.example:{port}"), 421),
        ("attacker.example".to_string(), 421),
        (format!("127.0.0.1:{port}"), 200),
        (format!("localhost:{port}"), 200),
        (format!("lb.internal:{port}"), 200),
        (format!("[::1]:{port}"), 200),
    ] {
        let (code, body, err) = curl(&url, &["-H", &format!("Host: {host}")]);
        assert_eq!(code, want, "{host}: {body} {err}");
        if want == 421 {
            assert!(body.contains("admin.hosts"), "{body}");
        }
    }
    assert_eq!(admin_count(&lb, None, "/status", "bad_host"), Some(2));

    let dir = temp_dir("admin-host-token");
    let file = token_file(&dir, TOKEN);
    let (lb, _b) = start(&format!("token_file = \"{}\"", file.display()));
    let url = format!("http://{}/status", lb.admin);
    let auth = format!("Authorization: {}", bearer(TOKEN));
    let (code, body, _) = curl(&url, &["-H", "Host: attacker.example", "-H", &auth]);
    assert_eq!(code, 200, "{body}");
}

fn refusals_logged(lb: &Lb) -> usize {
    lb.log_text().matches("admin request refused").count()
}

#[test]
fn every_endpoint_with_no_wrong_and_right_token() {
    let dir = temp_dir("admin-token");
    let file = token_file(&dir, TOKEN);
    let (lb, _b) = start(&format!("token_file = \"{}\"", file.display()));

    // Every known path's series exists from the first scrape, at 0 (but for the readiness
    // probes on /healthz and this scrape).
    let first = call(&lb, "GET", "/metrics", Some(TOKEN)).text();
    for path in [
        "/",
        "/dashboard",
        "/healthz",
        "/metrics",
        "/status",
        "/reload",
        "other",
    ] {
        for result in [
            "allowed",
            "unauthorized",
            "forbidden",
            "cross_site",
            "bad_host",
        ] {
            let series = format!("lb_admin_requests_total{{path=\"{path}\",result=\"{result}\"}} ");
            let value = first
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .unwrap_or_else(|| panic!("no series {series} in:\n{first}"));
            if !matches!((path, result), ("/metrics" | "/healthz", "allowed")) {
                assert_eq!(value.trim(), "0", "{series}");
            }
        }
    }

    for (method, path, ok) in [
        ("GET", "/status", 200),
        ("GET", "/metrics", 200),
        ("POST", "/reload", 200),
        ("GET", "/nope", 404),
    ] {
        let none = call(&lb, method, path, None);
        assert_eq!(none.status, 401, "{method} {path} without a token");
        assert_eq!(
            none.header("www-authenticate"),
            Some("Bearer realm=\"lb admin\""),
            "{method} {path}"
        );
        let wrong = call(&lb, method, path, Some("not-the-token"));
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
        assert!(
            wrong
                .header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer ") && v.contains("invalid_token")),
            "{:?}",
            wrong.headers
        );
        let right = call(&lb, method, path, Some(TOKEN));
        assert_eq!(right.status, ok, "{method} {path} with the token");
    }
    // A token differing only in its last character, or a prefix of it, is wrong too.
    let almost = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
    assert_eq!(call(&lb, "GET", "/status", Some(&almost)).status, 401);
    assert_eq!(call(&lb, "GET", "/status", Some(&TOKEN[..8])).status, 401);
    let basic = request(
        lb.admin,
        "GET",
        "/status",
        &[("Authorization", &format!("Basic {TOKEN}"))],
        b"",
    );
    assert_eq!(
        basic.status, 401,
        "only the Bearer scheme carries the token"
    );

    // Public by default: /healthz; the dashboard page (static, its data needs the token).
    assert_eq!(call(&lb, "GET", "/healthz", None).status, 200);
    assert_eq!(call(&lb, "GET", "/healthz", Some("wrong")).status, 200);
    let page = call(&lb, "GET", "/", None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=\"auth-form\""));

    // Counted by path and result: /status got no token, a wrong one, `almost`, a prefix and Basic.
    assert_eq!(
        admin_count(&lb, Some(TOKEN), "/status", "unauthorized"),
        Some(5)
    );
    assert_eq!(admin_count(&lb, Some(TOKEN), "/status", "allowed"), Some(1));
    assert_eq!(
        admin_count(&lb, Some(TOKEN), "/reload", "unauthorized"),
        Some(2)
    );
    assert_eq!(admin_count(&lb, Some(TOKEN), "/reload", "allowed"), Some(1));
    assert_eq!(
        admin_count(&lb, Some(TOKEN), "other", "unauthorized"),
        Some(2)
    );

    // Logged once for this client (all within a minute), and never with a token in it.
    wait_for("the refusal in the log", Duration::from_secs(5), || {
        (refusals_logged(&lb) > 0).then_some(())
    });
    let log = lb.log_text();
    assert_eq!(refusals_logged(&lb), 1, "{log}");
    assert!(log.contains("no bearer token"), "{log}");
    for secret in [TOKEN, "not-the-token", &almost] {
        assert!(!log.contains(secret), "the log shows a token: {log}");
    }
}

#[test]
fn public_paths_are_served_without_the_token() {
    let dir = temp_dir("admin-public");
    let file = token_file(&dir, TOKEN);
    let (lb, _b) = start(&format!(
        "token_file = \"{}\"\npublic = [\"/healthz\", \"/metrics\"]",
        file.display()
    ));
    let metrics = call(&lb, "GET", "/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("lb_admin_requests_total"));
    assert_eq!(call(&lb, "GET", "/healthz", None).status, 200);
    assert_eq!(call(&lb, "GET", "/status", None).status, 401);
    assert_eq!(call(&lb, "POST", "/reload", None).status, 401);
}

#[test]
fn client_outside_allow_is_refused() {
    let dir = temp_dir("admin-allow");
    let file = token_file(&dir, TOKEN);
    let (lb, _b) = start(&format!(
        "token_file = \"{}\"\nallow = [\"127.0.0.1/32\"]",
        file.display()
    ));
    let auth = format!("Authorization: {}", bearer(TOKEN));
    for path in ["/healthz", "/status", "/"] {
        let url = format!("http://{}{path}", lb.admin);
        let (code, body, err) = curl(&url, &["--interface", "127.0.0.2", "-H", &auth]);
        assert_eq!(code, 403, "{path} from 127.0.0.2: {body} {err}");
        assert!(body.contains("admin.allow"), "{body}");
        let (code, _, err) = curl(&url, &["--interface", "127.0.0.1", "-H", &auth]);
        assert_eq!(code, 200, "{path} from 127.0.0.1: {err}");
    }
    let url = format!("http://{}/reload", lb.admin);
    let (code, _, _) = curl(
        &url,
        &["--interface", "127.0.0.2", "-X", "POST", "-H", &auth],
    );
    assert_eq!(code, 403);
    assert_eq!(
        admin_count(&lb, Some(TOKEN), "/status", "forbidden"),
        Some(1)
    );
    assert_eq!(
        admin_count(&lb, Some(TOKEN), "/healthz", "forbidden"),
        Some(1)
    );
    assert_eq!(
        admin_count(&lb, Some(TOKEN), "/reload", "forbidden"),
        Some(1)
    );
    wait_for("the refusal in the log", Duration::from_secs(5), || {
        lb.log_text()
            .contains("client not in admin.allow")
            .then_some(())
    });
    let log = lb.log_text();
    assert_eq!(refusals_logged(&lb), 1, "once per client per minute: {log}");
    assert!(log.contains("127.0.0.2"), "{log}");
    assert!(!log.contains(TOKEN));
}

fn reloads(lb: &Lb, token: Option<&str>) -> u64 {
    let text = call(lb, "GET", "/metrics", token).text();
    text.lines()
        .find_map(|l| l.strip_prefix("lb_config_reloads_total{result=\"success\"} "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap()
}

#[test]
fn cross_site_reload_is_refused_and_curl_is_not() {
    let dir = temp_dir("admin-csrf");
    let file = token_file(&dir, TOKEN);
    // Without a token (the default) and with one: the same rules.
    for admin in [
        String::new(),
        format!("token_file = \"{}\"", file.display()),
    ] {
        let (lb, _b) = start(&admin);
        let token = (!admin.is_empty()).then_some(TOKEN);
        let url = format!("http://{}/reload", lb.admin);
        let mut auth = vec![];
        if let Some(t) = token {
            auth = vec!["-H".to_string(), format!("Authorization: {}", bearer(t))];
        }
        let post = |extra: &[&str]| {
            let mut args: Vec<&str> = vec!["-X", "POST"];
            args.extend(auth.iter().map(String::as_str));
            args.extend(extra);
            curl(&url, &args)
        };
        let (code, body, err) = post(&[]);
        assert_eq!(code, 200, "plain curl POST /reload: {body} {err}");
        assert!(body.contains("\"ok\": true"), "{body}");
        let own = format!("Origin: http://{}", lb.admin);
        let (code, _, _) = post(&["-H", &own]);
        assert_eq!(code, 200, "a POST from the admin's own page");
        let before = reloads(&lb, token);
        for refused in [
            vec!["-H", "Sec-Fetch-Site: cross-site"],
            vec!["-H", "Origin: http://evil.example"],
            vec!["-H", "Origin: null"],
            vec!["-H", "Origin: http://127.0.0.1:1"],
            // A simple form post, as a malicious page would send it.
            vec![
                "-H",
                "Origin: http://evil.example",
                "-H",
                "Content-Type: application/x-www-form-urlencoded",
                "--data",
                "x=1",
            ],
        ] {
            let (code, body, _) = post(&refused);
            assert_eq!(code, 403, "{refused:?}: {body}");
            assert!(body.contains("cross-site"), "{body}");
        }
        assert_eq!(reloads(&lb, token), before, "a refused POST reloaded");
        assert_eq!(
            admin_count(&lb, token, "/reload", "cross_site"),
            Some(5),
            "{admin}"
        );
        // Reads from another origin are not writes.
        let status = format!("http://{}/status", lb.admin);
        let mut args = vec!["-H", "Origin: http://evil.example"];
        args.extend(auth.iter().map(String::as_str));
        assert_eq!(curl(&status, &args).0, 200);
    }
}

#[test]
fn token_rotation_by_reload() {
    let dir = temp_dir("admin-rotate");
    let file = token_file(&dir, TOKEN);
    let (lb, _b) = start(&format!("token_file = \"{}\"", file.display()));
    assert_eq!(call(&lb, "GET", "/status", Some(TOKEN)).status, 200);
    let rotated = |new: &str, old: &str| {
        wait_for("the rotated token", Duration::from_secs(10), || {
            (call(&lb, "GET", "/status", Some(new)).status == 200).then_some(())
        });
        assert_eq!(call(&lb, "GET", "/status", Some(old)).status, 401);
    };

    // The file watcher follows the token file (like the config file and certificates).
    rewrite(&file, &format!("{OTHER_TOKEN}\n"));
    rotated(OTHER_TOKEN, TOKEN);
    // POST /reload and SIGHUP read it again too.
    rewrite(&file, &format!("{TOKEN}\n"));
    let r = call(&lb, "POST", "/reload", Some(OTHER_TOKEN));
    assert!(matches!(r.status, 200 | 401), "{}", r.text());
    rotated(TOKEN, OTHER_TOKEN);
    rewrite(&file, &format!("{OTHER_TOKEN}\n"));
    lb.proc.signal("-HUP");
    rotated(OTHER_TOKEN, TOKEN);

    // An emptied file is a failed reload that keeps the running token.
    rewrite(&file, "\n");
    let r = call(&lb, "POST", "/reload", Some(OTHER_TOKEN));
    assert_eq!(r.status, 422, "{}", r.text());
    let problems = r.json()["problems"].to_string();
    assert!(problems.contains("admin.token_file"), "{problems}");
    assert!(problems.contains("is empty"), "{problems}");
    assert_eq!(call(&lb, "GET", "/status", Some(OTHER_TOKEN)).status, 200);
}

#[test]
fn check_reports_admin_problems_with_key_paths() {
    let dir = temp_dir("admin-check");
    let empty = dir.join("empty.token");
    std::fs::write(&empty, "  \n").unwrap();
    let missing = dir.join("missing.token");
    let head = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[upstreams.api]\nbackends = [\"127.0.0.1:9001\"]\n";
    let cases = [
        (
            format!("token_file = \"{}\"", empty.display()),
            "admin.token_file: ",
            "is empty",
        ),
        (
            format!("token_file = \"{}\"", missing.display()),
            "admin.token_file: cannot read",
            "No such file",
        ),
        (
            "allow = [\"127.0.0.1/32\", \"10.0.0.0/33\"]".to_string(),
            "admin.allow[1]: invalid prefix length",
            "10.0.0.0/33",
        ),
        (
            "allow = [\"intranet\"]".to_string(),
            "admin.allow[0]: invalid CIDR",
            "intranet",
        ),
        (
            "public = [\"/healthz\", \"metrics\"]".to_string(),
            "admin.public[1]: ",
            "must be an absolute path",
        ),
    ];
    for (admin, key, what) in cases {
        let (ok, out) = check_config(&format!(
            "{head}[admin]\nlisten = \"127.0.0.1:9090\"\n{admin}\n"
        ));
        assert!(!ok, "accepted: {admin}\n{out}");
        let line = out
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"));
        assert!(line.contains("lb.toml: "), "names the file: {line}");
        assert!(line.contains(what), "{line}");
    }

    // Non-loopback without a token: a warning, and the exit status stays 0.
    let (ok, out) = check_config(&format!("{head}[admin]\nlisten = \"0.0.0.0:9090\"\n"));
    assert!(ok, "{out}");
    let warning = out
        .lines()
        .find(|l| l.contains("admin.listen: warning: "))
        .unwrap_or_else(|| panic!("no warning in:\n{out}"));
    assert!(
        warning.contains("lb.toml: admin.listen: warning: 0.0.0.0:9090 is not a loopback address"),
        "{warning}"
    );
    assert!(out.contains("configuration OK"), "{out}");
    // Public paths that are no endpoint, or that open reloads to anyone: warnings.
    let (ok, out) = check_config(&format!(
        "{head}[admin]\nlisten = \"127.0.0.1:9090\"\npublic = [\"/statuz\", \"/reload\"]\n"
    ));
    assert!(ok, "{out}");
    assert!(
        out.contains("lb.toml: admin.public[0]: warning: \"/statuz\" is not an admin endpoint"),
        "{out}"
    );
    assert!(
        out.contains("lb.toml: admin.public[1]: warning: \"/reload\" is public"),
        "{out}"
    );
    // With a token it is fine.
    let file = token_file(&dir, TOKEN);
    let (ok, out) = check_config(&format!(
        "{head}[admin]\nlisten = \"0.0.0.0:9090\"\ntoken_file = \"{}\"\n",
        file.display()
    ));
    assert!(ok, "{out}");
    assert!(!out.contains("warning"), "{out}");
    assert!(out.contains("token from"), "the summary says so: {out}");
}

/// lb with its admin listener on `admin_ip` (any port) and `admin` in `[admin]`; returns once
/// `ready` says so.
fn start_custom(admin_ip: &str, admin: &str, backend: &Backend, ready: impl Fn(&Lb) -> bool) -> Lb {
    let (port, admin_port) = (free_port(), free_port());
    let dir = temp_dir("lb-admin");
    let header = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nthreads = 2\ngrace_period = \"3s\"\n\n[admin]\nlisten = \"{admin_ip}:{admin_port}\""
    );
    std::fs::write(
        dir.join("lb.toml"),
        format!(
            "{header}\n{admin}\n\n[upstreams.api]\nbackends = [\"{}\"]\n",
            backend.addr
        ),
    )
    .unwrap();
    let lb = Lb::spawn(dir, port, admin_port, header);
    wait_for("lb's admin listener", Duration::from_secs(20), || {
        ready(&lb).then_some(())
    });
    lb
}

/// lb whose admin listener speaks HTTPS; ready once `/healthz` answers over TLS.
fn start_tls(admin: &str, backend: &Backend, ca: &Path) -> Lb {
    let ca = ca.display().to_string();
    start_custom("127.0.0.1", admin, backend, |lb| {
        let url = format!("https://127.0.0.1:{}/healthz", lb.admin.port());
        curl(&url, &["--cacert", &ca]).0 == 200
    })
}

#[test]
fn non_loopback_admin_without_a_token_warns_at_start() {
    let backend = Backend::start("a");
    let lb = start_custom("0.0.0.0", "", &backend, |lb| {
        try_request(lb.admin, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
    });
    let log = lb.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("admin.listen: warning: "))
        .unwrap_or_else(|| panic!("no start-up warning in:\n{log}"));
    assert!(
        line.contains("is not a loopback address and admin.token_file is not set"),
        "{line}"
    );
}

/// The subject common name curl saw in the admin listener's certificate.
fn served_cn(lb: &Lb, ca: &str) -> String {
    let url = format!("https://localhost:{}/healthz", lb.admin.port());
    let (code, _, err) = curl(&url, &["-v", "--cacert", ca]);
    assert_eq!(code, 200, "{err}");
    err.lines()
        .find_map(|l| l.split_once("subject: ").map(|(_, s)| s.to_string()))
        .unwrap_or_else(|| panic!("no subject in curl -v output:\n{err}"))
}

#[test]
fn admin_over_tls_with_curl_and_a_certificate_swapped_by_reload() {
    let dir = temp_dir("admin-tls");
    let ca = Ca::new();
    let (ca_pem, cert, key) = (
        dir.join("ca.pem"),
        dir.join("admin.pem"),
        dir.join("admin.key"),
    );
    ca.write(&ca_pem);
    ca.leaf("lb admin one", 90, &cert, &key);
    let file = token_file(&dir, TOKEN);
    let backend = Backend::start("a");
    let admin = format!(
        "token_file = \"{}\"\n[admin.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        file.display(),
        cert.display(),
        key.display()
    );
    let lb = start_tls(&admin, &backend, &ca_pem);
    let cacert = ca_pem.display().to_string();
    let auth = format!("Authorization: {}", bearer(TOKEN));
    let https = |path: &str| format!("https://127.0.0.1:{}{path}", lb.admin.port());

    // Verified against the test CA, by IP address and by name.
    let (code, body, err) = curl(&https("/status"), &["--cacert", &cacert, "-H", &auth]);
    assert_eq!(code, 200, "{body} {err}");
    assert!(body.contains("\"upstreams\""), "{body}");
    assert_eq!(curl(&https("/status"), &["--cacert", &cacert]).0, 401);
    assert!(served_cn(&lb, &cacert).contains("lb admin one"));
    // Plain HTTP on the HTTPS port gets no answer.
    assert_ne!(curl(&format!("http://{}/healthz", lb.admin), &[]).0, 200);

    // A renewed certificate (same files) is served after a reload, without a restart.
    ca.leaf("lb admin two", 60, &cert, &key);
    let (code, body, _) = curl(
        &https("/reload"),
        &["--cacert", &cacert, "-X", "POST", "-H", &auth],
    );
    assert_eq!(code, 200, "{body}");
    assert!(served_cn(&lb, &cacert).contains("lb admin two"));

    // An expired replacement is refused: the reload fails with the reason, the old one stays.
    ca.leaf("lb admin expired", -1, &cert, &key);
    let (code, body, _) = curl(
        &https("/reload"),
        &["--cacert", &cacert, "-X", "POST", "-H", &auth],
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("admin.tls.cert: the certificate expired on"),
        "{body}"
    );
    assert!(served_cn(&lb, &cacert).contains("lb admin two"));

    // Cross-site rules with the https origin.
    let own = format!("Origin: https://127.0.0.1:{}", lb.admin.port());
    ca.leaf("lb admin three", 60, &cert, &key);
    let (code, body, _) = curl(
        &https("/reload"),
        &["--cacert", &cacert, "-X", "POST", "-H", &auth, "-H", &own],
    );
    assert_eq!(code, 200, "{body}");
    let plain_origin = format!("Origin: http://127.0.0.1:{}", lb.admin.port());
    let (code, _, _) = curl(
        &https("/reload"),
        &[
            "--cacert",
            &cacert,
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            &plain_origin,
        ],
    );
    assert_eq!(code, 403, "an http:// origin is another site");
}

#[test]
fn check_validates_the_admin_certificate() {
    let dir = temp_dir("admin-tls-check");
    let ca = Ca::new();
    let head = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[upstreams.api]\nbackends = [\"127.0.0.1:9001\"]\n[admin]\nlisten = \"127.0.0.1:9090\"\n";
    let tls = |cert: &Path, key: &Path| {
        format!(
            "{head}[admin.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let (c1, k1, c2, k2) = (
        dir.join("c1.pem"),
        dir.join("k1.pem"),
        dir.join("c2.pem"),
        dir.join("k2.pem"),
    );
    ca.leaf("expired", -3, &c1, &k1);
    let (ok, out) = check_config(&tls(&c1, &k1));
    assert!(!ok, "{out}");
    assert!(
        out.contains("lb.toml: admin.tls.cert: the certificate expired on"),
        "{out}"
    );

    ca.leaf("soon", 5, &c1, &k1);
    let (ok, out) = check_config(&tls(&c1, &k1));
    assert!(ok, "expiring soon is only a warning: {out}");
    assert!(
        out.contains("lb.toml: admin.tls.cert: warning: the certificate expires on"),
        "{out}"
    );
    assert!(out.contains("admin: https://127.0.0.1:9090"), "{out}");

    // A key other users can read is a warning naming the fix.
    std::fs::set_permissions(&k1, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (ok, out) = check_config(&tls(&c1, &k1));
    assert!(ok, "a readable key is only a warning: {out}");
    assert!(
        out.contains("admin.tls.key: warning:")
            && out.contains("is readable by other users (mode 640); chmod go-r it"),
        "{out}"
    );
    std::fs::set_permissions(&k1, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, out) = check_config(&tls(&c1, &k1));
    assert!(!out.contains("readable by other users"), "{out}");

    ca.leaf("other", 60, &c2, &k2);
    let (ok, out) = check_config(&tls(&c1, &k2));
    assert!(!ok, "{out}");
    assert!(
        out.contains("lb.toml: admin.tls.key: the private key does not match"),
        "{out}"
    );
    let (ok, out) = check_config(&tls(&dir.join("nope.pem"), &k2));
    assert!(!ok);
    assert!(
        out.contains("lb.toml: admin.tls.cert: cannot read"),
        "{out}"
    );
}

fn text(browser: &Browser, css: &str) -> String {
    browser.text(css).unwrap_or_default()
}

fn submit_token(browser: &Browser, token: &str) {
    browser.eval(&format!(
        "document.getElementById('token').value = {}; document.getElementById('auth-form').requestSubmit(); return true;",
        serde_json::Value::from(token)
    ));
}

fn body_attr(browser: &Browser, name: &str) -> String {
    browser
        .eval(&format!(
            "return document.body.getAttribute('{name}') || ''"
        ))
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn auth_shown(browser: &Browser) -> bool {
    browser.eval("return !document.getElementById('auth').hidden") == true
}

#[test]
fn dashboard_with_a_token_in_headless_chromium() {
    let Some(paths) = BrowserPaths::require_or_skip("dashboard_with_a_token_in_headless_chromium")
    else {
        return;
    };
    let dir = temp_dir("admin-dashboard");
    let file = token_file(&dir, TOKEN);
    let (lb, backend) = start(&format!("token_file = \"{}\"", file.display()));
    for _ in 0..5 {
        assert_eq!(lb.get("/").status, 200);
    }
    let browser = Browser::start(&paths, &lb.dir.join("chromium"), 1280, 800);
    browser.goto(&format!("http://{}/", lb.admin));

    // No token yet: the page asks for one and shows no numbers.
    wait_for(
        "the page to ask for a token",
        Duration::from_secs(10),
        || (body_attr(&browser, "data-auth") == "needed" && auth_shown(&browser)).then_some(()),
    );
    assert!(text(&browser, "#auth-msg").contains("needs a token"));
    assert_eq!(text(&browser, "#total-rps"), "–");

    // A wrong token: the page says so, and still shows no numbers.
    submit_token(&browser, "not-the-token");
    wait_for(
        "the page to reject the token",
        Duration::from_secs(10),
        || (body_attr(&browser, "data-auth") == "rejected").then_some(()),
    );
    assert!(auth_shown(&browser));
    let msg = text(&browser, "#auth-msg");
    assert!(msg.contains("token was rejected"), "{msg}");
    assert_eq!(text(&browser, "#total-rps"), "–");
    assert_eq!(
        browser.eval("return document.querySelectorAll('tr[data-backend]').length"),
        0
    );
    browser.screenshot(&lb.dir.join("dashboard-token-rejected.png"));

    // The right token: numbers appear, and it is kept for the tab only.
    submit_token(&browser, TOKEN);
    let row = format!("tr[data-backend=\"{}\"] .state", backend.addr);
    wait_for("numbers with the token", Duration::from_secs(15), || {
        let total: u64 = text(&browser, "#total-requests").parse().ok()?;
        let rps = text(&browser, "#total-rps");
        (text(&browser, &row) == "up" && total >= 5 && rps.parse::<f64>().is_ok()).then_some(())
    });
    assert!(!auth_shown(&browser));
    assert_eq!(body_attr(&browser, "data-auth"), "ok");
    assert_eq!(
        browser.eval("return sessionStorage.getItem('lb-admin-token')"),
        TOKEN
    );
    assert_eq!(browser.eval("return localStorage.length"), 0);

    // Opened again in the same tab: no question asked.
    browser.goto(&format!("http://{}/", lb.admin));
    wait_for(
        "numbers after navigating again",
        Duration::from_secs(15),
        || (text(&browser, &row) == "up" && body_attr(&browser, "data-auth") == "ok").then_some(()),
    );
    assert!(!auth_shown(&browser));

    // The dashboard's reload button: a same-origin POST with the token.
    browser.eval("document.getElementById('reload').click(); return true;");
    wait_for("the dashboard's reload", Duration::from_secs(10), || {
        (text(&browser, "#reload-result") == "reloaded").then_some(())
    });
    let status = call(&lb, "GET", "/status", Some(TOKEN)).json();
    assert_eq!(status["config"]["last_reload"]["trigger"], "admin");
    assert_eq!(status["config"]["last_reload"]["ok"], true);

    // The token rotated under the page: it says so instead of showing stale numbers.
    rewrite(&file, &format!("{OTHER_TOKEN}\n"));
    // The file watcher may apply the new token first; then the old one is already refused.
    let reload = call(&lb, "POST", "/reload", Some(TOKEN)).status;
    assert!(reload == 200 || reload == 401, "reload: {reload}");
    wait_for("the new token", Duration::from_secs(10), || {
        (call(&lb, "GET", "/status", Some(OTHER_TOKEN)).status == 200).then_some(())
    });
    wait_for(
        "the page to notice the rotation",
        Duration::from_secs(10),
        || (body_attr(&browser, "data-auth") == "rejected").then_some(()),
    );
    assert!(text(&browser, "#auth-msg").contains("rotated"));
    assert_eq!(text(&browser, "#total-rps"), "–");
    assert_eq!(text(&browser, "#total-requests"), "0");
    assert_eq!(
        browser.eval("return document.querySelectorAll('tr[data-backend]').length"),
        0
    );
    submit_token(&browser, OTHER_TOKEN);
    wait_for(
        "numbers with the new token",
        Duration::from_secs(15),
        || (text(&browser, &row) == "up").then_some(()),
    );
    browser.screenshot(&lb.dir.join("dashboard-token.png"));
}
