//! `lb import-nginx` as a user runs it: notes on stderr, the TOML `lb --check` accepts, and the
//! one-line failures. The parser agrees with crossplane (NGINX's reference parser, from the test
//! virtualenv) on real-world configs in tests/nginx/corpus/.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::*;

/// `lb import-nginx ARGS` (also used by `kafka_route`).
pub(crate) fn import(args: &[&str]) -> Output {
    Command::new(LB)
        .arg("import-nginx")
        .args(args)
        .output()
        .expect("run lb import-nginx")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nginx/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "the corpus is missing: {}",
        dir.display()
    );
    files
}

/// crossplane's `parsed` list of each file, parsed on its own (includes not followed).
fn crossplane(files: &[PathBuf]) -> Vec<Value> {
    let script = "import crossplane, json, sys\n\
                  out = []\n\
                  for f in sys.argv[1:]:\n\
                  \x20   p = crossplane.parse(f, single=True, comments=False, check_ctx=False, check_args=False)\n\
                  \x20   if p['status'] != 'ok': raise SystemExit(f + ': ' + json.dumps(p['errors']))\n\
                  \x20   out.append(p['config'][0]['parsed'])\n\
                  print(json.dumps(out))\n";
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .expect("run crossplane");
    assert!(
        out.status.success(),
        "crossplane failed (is it in the test venv? run scripts/setup.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// What both parsers are compared on: names, arguments, nesting, lines.
///
/// Where crossplane is not NGINX, NGINX wins: crossplane keeps the backslash of escapes that
/// NGINX removes (`\"`, `\\`, `\n`...), so its arguments are unescaped as NGINX does; and it
/// strips the parentheses of `if (...)`, as NGINX's `if` handler does later, so lb's raw `if`
/// arguments get the same treatment.
fn normalize(list: &Value, from_crossplane: bool) -> Value {
    let items = list.as_array().unwrap().iter().map(|d| {
        let mut args: Vec<String> = d["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        if from_crossplane {
            args = args.iter().map(|a| lb::import::lex::unescape(a)).collect();
        } else if d["directive"] == "if" {
            strip_if_parens(&mut args);
        }
        let mut v = serde_json::json!({
            "directive": d["directive"],
            "line": d["line"],
            "args": args,
        });
        if let Some(b) = d.get("block") {
            v["block"] = normalize(b, from_crossplane);
        }
        v
    });
    Value::Array(items.collect())
}

/// crossplane's `_prepare_if_args`.
fn strip_if_parens(args: &mut Vec<String>) {
    if args.is_empty() || !args[0].starts_with('(') || !args[args.len() - 1].ends_with(')') {
        return;
    }
    args[0] = args[0][1..].trim_start().to_string();
    let last = args.len() - 1;
    args[last] = args[last][..args[last].len() - 1].trim_end().to_string();
    if args[last].is_empty() {
        args.pop();
    }
    if args.first().is_some_and(|a| a.is_empty()) {
        args.remove(0);
    }
}

#[test]
fn parser_agrees_with_crossplane_on_the_corpus() {
    let files = corpus();
    let expected = crossplane(&files);
    let mut directives = 0;
    for (file, theirs) in files.iter().zip(&expected) {
        let out = import(&["--dump-tree", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
        let (ours, theirs) = (normalize(&ours, false), normalize(theirs, true));
        if ours != theirs {
            let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap();
            let (a, b) = (pretty(&ours), pretty(&theirs));
            let line = a
                .lines()
                .zip(b.lines())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "{}: lb's tree differs from crossplane's near JSON line {line}:\nlb:         {}\ncrossplane: {}",
                file.display(),
                a.lines().nth(line).unwrap_or(""),
                b.lines().nth(line).unwrap_or("")
            );
        }
        directives += ours.to_string().matches("\"directive\"").count();
    }
    assert!(directives > 400, "only {directives} directives compared");
}

const SITE: &str = "\
user www-data;
events { worker_connections 512; }
http {
    sendfile on;
    gzip on;
    upstream app {
        server 127.0.0.1:9001 max_fails=2 fail_timeout=20s;
        server 127.0.0.1:9002 max_fails=2 fail_timeout=20s;
    }
    include sites/*.conf;
}
";

const VHOST: &str = "\
server {
    listen 127.0.0.1:18181;
    server_name app.example;
    proxy_set_header Host $host;
    location / {
        proxy_cache cache1;
        proxy_buffering off;
        proxy_pass http://app;
    }
    location /static/ {
        root /srv;
    }
}
";

#[test]
fn unsupported_directives_are_listed_and_the_output_checks() {
    let dir = temp_dir("import-nginx");
    std::fs::create_dir_all(dir.join("sites")).unwrap();
    std::fs::write(dir.join("nginx.conf"), SITE).unwrap();
    std::fs::write(dir.join("sites/app.conf"), VHOST).unwrap();
    let out = import(&[dir.join("nginx.conf").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stderr_lines(&out),
        [
            "nginx.conf:1: user: not supported, ignored (no effect on proxying)",
            "nginx.conf:2: events: context skipped (lb imports the http context only)",
            "nginx.conf:4: sendfile: not supported, ignored (no effect on proxying)",
            "nginx.conf:5: gzip: not supported, ignored",
            "sites/app.conf:6: proxy_cache: not supported, ignored",
            "sites/app.conf:7: proxy_buffering: not supported, ignored",
            "sites/app.conf:11: root: not supported, ignored (no effect on proxying)",
            "sites/app.conf:10: location /static/: no proxy_pass: NGINX serves files here (static files, ACME challenges); lb only proxies, so this location stays behind, skipped",
        ]
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let toml: toml::Table = text.parse().unwrap();
    assert_eq!(
        toml["upstreams"]["app"]["passive"]["ejection_time"].as_str(),
        Some("20s")
    );
    assert!(text.contains("# sites/app.conf:5: server app.example, location /\n[[routes]]"));

    let lb_toml = dir.join("lb.toml");
    let out = import(&[
        dir.join("nginx.conf").to_str().unwrap(),
        "--output",
        lb_toml.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "--output writes nothing to stdout");
    let check = Command::new(LB)
        .arg("--config")
        .arg(&lb_toml)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "lb --check refused the import:\n{}\n{}",
        String::from_utf8_lossy(&check.stderr),
        std::fs::read_to_string(&lb_toml).unwrap()
    );
}

/// Exit 1 and exactly one line on stderr.
fn fails_with(args: &[&str], expected: &str) {
    let out = import(args);
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(expected),
        "{lines:?} should contain {expected:?}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn failures_exit_1_with_one_line() {
    let dir = temp_dir("import-nginx-errors");
    let path = |n: &str| dir.join(n).to_str().unwrap().to_string();
    std::fs::write(
        dir.join("syntax.conf"),
        "http {\n  server {\n    listen 80\n  }\n}\n",
    )
    .unwrap();
    fails_with(&[&path("syntax.conf")], "syntax.conf:4:3: unexpected \"}\"");
    std::fs::write(
        dir.join("quote.conf"),
        "http {\n  add_header X \"open;\n}\n",
    )
    .unwrap();
    fails_with(
        &[&path("quote.conf")],
        "quote.conf:2:16: unterminated quoted string",
    );
    fails_with(&[&path("missing.conf")], "cannot read");
    std::fs::write(dir.join("a.conf"), "http { include b.conf; }\n").unwrap();
    std::fs::write(dir.join("b.conf"), "include a.conf;\n").unwrap();
    fails_with(
        &[&path("a.conf")],
        "b.conf:1:1: include cycle: a.conf -> b.conf -> a.conf",
    );
    std::fs::write(
        dir.join("ok.conf"),
        "upstream u { server 127.0.0.1:9; }\nserver { location / { proxy_pass http://u; } }\n",
    )
    .unwrap();
    fails_with(
        &[&path("ok.conf"), "--output", &path("no/such/dir/lb.toml")],
        "cannot write",
    );
}

#[test]
fn config_flag_still_required_without_the_subcommand() {
    let out = Command::new(LB).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

/// Issue 27 item 7: a location under `auth_basic` (or `auth_request`, ...) is refused with its
/// file:line (exit 1, nothing written); `--allow-insecure` imports it and says it is public.
/// Its `allow`/`deny` lines are lb's `access` rules (item 5), never a refusal.
#[test]
fn security_directives_refuse_the_import_unless_allow_insecure() {
    let dir = temp_dir("import-nginx-insecure");
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        "upstream u { server 127.0.0.1:9; }\nserver {\n  location /admin/ {\n    auth_basic \"staff\";\n    allow 10.0.0.0/8;\n    deny all;\n    proxy_pass http://u;\n  }\n  location / { proxy_pass http://u; }\n}\n",
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let out = import(&[conf]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in ["nginx.conf:4: auth_basic:", "--allow-insecure"] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    assert!(!err.contains("allow:") && !err.contains("deny:"), "{err}");
    let out = import(&[conf, "--allow-insecure"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nginx.conf:4: auth_basic:") && err.contains("PUBLIC"),
        "{err}"
    );
    let toml = String::from_utf8_lossy(&out.stdout);
    assert!(toml.contains("path_prefix = \"/admin/\""), "{toml}");
    assert!(
        toml.contains("access = [\"allow 10.0.0.0/8\", \"deny all\"]"),
        "{toml}"
    );
}

/// Issue 27 item 1: servers on ports 80 and 8080 never merge into one route table: each
/// route names its server's listeners, and the result passes `lb --check`.
#[test]
fn servers_on_two_ports_keep_their_listeners() {
    let dir = temp_dir("import-nginx-ports");
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        "upstream a { server 127.0.0.1:9; }\nupstream b { server 127.0.0.1:10; }\nserver { listen 80; location / { proxy_pass http://a; } }\nserver { listen 8080; location /api/ { proxy_pass http://b; } }\n",
    )
    .unwrap();
    let out = import(&[conf.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("path_prefix = \"/\"\nlisten = [\"0.0.0.0:80\"]\nupstream = \"a\"")
            && text
                .contains("path_prefix = \"/api/\"\nlisten = [\"0.0.0.0:8080\"]\nupstream = \"b\""),
        "{text}"
    );
    let (ok, summary) = check_config(&text);
    assert!(ok, "{summary}");
    assert!(summary.contains("listen=0.0.0.0:8080"), "{summary}");
}
