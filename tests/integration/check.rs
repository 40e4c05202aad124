//! `lb --check`: every problem reported with its key path, non-zero exit.

use crate::support::*;

const HEAD: &str = "[server]\nlisten = [\"127.0.0.1:8080\"]\n";

fn problems(body: &str) -> String {
    let (ok, out) = check_config(&format!("{HEAD}{body}"));
    assert!(!ok, "config accepted:\n{body}\n{out}");
    out
}

#[test]
fn valid_config_prints_summary() {
    let (ok, out) = check_config(&format!(
        "{HEAD}[admin]\nlisten = \"127.0.0.1:9090\"\n[upstreams.api]\nstrategy = \"least_connections\"\nbackends = [{{ address = \"127.0.0.1:9001\", weight = 3 }}, {{ address = \"127.0.0.1:9002\" }}, \"localhost:9003\"]\nconnect_timeout = \"250ms\"\n[[routes]]\nhost = \"api.example.com\"\npath_prefix = \"/api\"\nupstream = \"api\"\n"
    ));
    assert!(ok, "{out}");
    for want in [
        "127.0.0.1:8080",
        "least_connections",
        "127.0.0.1:9001",
        "weight 3",
        "localhost:9003",
        "/api",
        "api.example.com",
        "configuration OK",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let out = problems("[upstreams.api]\nbackends = [\"127.0.0.1:1\"\nretries = 2\n");
    assert!(out.contains("line "), "{out}");
    assert!(out.contains("column "), "{out}");
    assert!(out.contains("lb.toml"), "names the file: {out}");
}

#[test]
fn unknown_key() {
    let out = problems("[upstreams.api]\nbackends = [\"127.0.0.1:1\"]\nretires = 2\n");
    assert!(out.contains("upstreams.api.retires: unknown key"), "{out}");
}

#[test]
fn unknown_upstream_in_route() {
    let out = problems(
        "[upstreams.api]\nbackends = [\"127.0.0.1:1\"]\n[[routes]]\nupstream = \"nope\"\n",
    );
    assert!(
        out.contains("routes[0].upstream: unknown upstream \"nope\""),
        "{out}"
    );
}

#[test]
fn weight_zero() {
    let out = problems("[upstreams.api]\nbackends = [\"127.0.0.1:1\", \"127.0.0.1:2\", { address = \"127.0.0.1:3\", weight = 0 }]\n");
    assert!(
        out.contains("upstreams.api.backends[2].weight: must be at least 1"),
        "{out}"
    );
}

#[test]
fn bad_duration() {
    let out =
        problems("[upstreams.api]\nbackends = [\"127.0.0.1:1\"]\nconnect_timeout = \"fast\"\n");
    assert!(
        out.contains("upstreams.api.connect_timeout: invalid duration \"fast\""),
        "{out}"
    );
}

#[test]
fn empty_backends_and_duplicates() {
    let out = problems("[upstreams.api]\nbackends = []\n[upstreams.web]\nbackends = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n[[routes]]\nupstream = \"web\"\n");
    assert!(
        out.contains("upstreams.api.backends: must list at least one backend"),
        "{out}"
    );
    assert!(
        out.contains("upstreams.web.backends[1].address: duplicate backend"),
        "{out}"
    );
}

#[test]
fn no_listener() {
    let (ok, out) =
        check_config("[server]\nlisten = []\n[upstreams.api]\nbackends = [\"127.0.0.1:1\"]\n");
    assert!(!ok);
    assert!(
        out.contains("server.listen: at least one listener is required"),
        "{out}"
    );
}

#[test]
fn every_problem_reported_at_once() {
    let out = problems(
        "[upstreams.api]\nbackends = [{ address = \"127.0.0.1:1\", weight = 0 }]\nread_timeout = \"10 parsecs\"\nbogus = 1\n[[routes]]\nupstream = \"missing\"\n",
    );
    for want in [
        "upstreams.api.backends[0].weight: must be at least 1",
        "upstreams.api.read_timeout: invalid duration",
        "upstreams.api.bogus: unknown key",
        "routes[0].upstream: unknown upstream \"missing\"",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn lb_refuses_to_start_on_invalid_config() {
    let dir = temp_dir("refuse");
    let path = dir.join("lb.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = [\"127.0.0.1:1\"]\n[upstreams.api]\nbackends = []\n",
    )
    .unwrap();
    let out = std::process::Command::new(LB)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstreams.api.backends"));
}

#[test]
fn version_and_help() {
    let v = std::process::Command::new(LB)
        .arg("--version")
        .output()
        .unwrap();
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
    let h = std::process::Command::new(LB)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&h.stdout);
    assert!(
        help.contains("--config") && help.contains("--check"),
        "{help}"
    );
}
