//! `lb --check`: every problem reported with its key path, non-zero exit. The config loader behind
//! it never panics: mutated and arbitrary texts are refused with at least one problem (proptest).

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

// ---- config loader robustness ---------------------------------------------------------------

mod config_fuzz {
    use proptest::prelude::*;

    const BASE: &str = r#"[server]
listen = ["127.0.0.1:8080"]
threads = 2
grace_period = "10s"
access_log = "off"
trusted_proxies = ["10.0.0.0/8", "::1"]
max_header_bytes = 16384
max_headers = 100
max_uri_bytes = 8192
max_body_bytes = 10485760
header_timeout = "10s"
body_timeout = "30s"
keepalive_timeout = "60s"
max_connections = 10000

[admin]
listen = "127.0.0.1:9090"

[upstreams.api]
strategy = "least_connections"
backends = [{ address = "127.0.0.1:9001", weight = 3 }, { address = "127.0.0.1:9002" }, "127.0.0.1:9003"]
connect_timeout = "1s"
read_timeout = "30s"
retries = 2

[upstreams.api.health_check]
type = "http"
path = "/healthz"
expected_status = "200-399"
interval = "2s"
timeout = "1s"

[upstreams.api.passive]
consecutive_failures = 5
ejection_time = "10s"

[upstreams.web]
backends = ["127.0.0.1:9004"]

[[routes]]
host = "api.example.com"
path_prefix = "/api"
upstream = "api"

[[routes]]
path_prefix = "/"
upstream = "web"
"#;

    /// Snippets spliced into the text: TOML punctuation, odd values, keys and tables.
    const SNIPPETS: &[&str] = &[
        "=",
        "[",
        "]",
        "{",
        "}",
        "\"",
        "'",
        ",",
        "\n",
        "#",
        ".",
        "-1",
        "0",
        "1e999",
        "99999999999999999999",
        "\"0s\"",
        "\"1x\"",
        "\"\"",
        "true",
        "[[routes]]\n",
        "[upstreams.api]\n",
        "[upstreams.\"\"]\n",
        "weight = 0",
        "retries = -5",
        "upstream = \"nope\"",
        "strategy = \"fastest\"",
        "listen = []",
        "backends = []",
        "address = \"127.0.0.1:0\"",
        "address = \"no-port\"",
        "\"[::1]:80\"",
        "\"127.0.0.1:99999\"",
        "expected_status = \"500-100\"",
        "path_prefix = \"no-slash\"",
        "\u{feff}",
        "\u{0}",
        "é",
    ];

    /// Byte ranges of the `"127.0.0.1:900N"` backend literals in `text`. They are kept intact so
    /// that no mutation makes the loader ask DNS anything.
    fn literals(text: &str) -> Vec<std::ops::Range<usize>> {
        text.match_indices("\"127.0.0.1:900")
            .map(|(i, _)| i..i + 16)
            .collect()
    }

    fn mutate(mut text: String, (op, pos, len, snip): (usize, usize, usize, usize)) -> String {
        let lits = literals(&text);
        let mut pos = pos.min(text.len());
        while !text.is_char_boundary(pos) || lits.iter().any(|r| pos > r.start && pos < r.end) {
            pos -= 1;
        }
        match op {
            0 => text.insert_str(pos, SNIPPETS[snip]),
            1 => {
                let mut end = (pos + len).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                if !lits.iter().any(|r| pos < r.end && end > r.start) {
                    text.replace_range(pos..end, "");
                }
            }
            2 => {
                // Duplicate a line at the end.
                let line = text
                    .lines()
                    .nth(pos % text.lines().count().max(1))
                    .unwrap_or("")
                    .to_string();
                text.push('\n');
                text.push_str(&line);
            }
            _ => {
                // Replace the value of one `key = value` line with a snippet.
                let n = text.lines().count().max(1);
                let lines: Vec<String> = text
                    .lines()
                    .enumerate()
                    .map(|(j, l)| match l.split_once(" = ") {
                        Some((k, _)) if j == pos % n && !l.contains("127.0.0.1:900") => {
                            format!("{k} = {}", SNIPPETS[snip])
                        }
                        _ => l.to_string(),
                    })
                    .collect();
                text = lines.join("\n");
            }
        }
        text
    }

    fn mutated() -> impl Strategy<Value = String> {
        // Value swaps (op 3) keep the TOML valid more often than splices and deletions.
        let op = prop::sample::select(vec![0usize, 1, 2, 3, 3, 3]);
        prop::collection::vec((op, 0..BASE.len(), 0usize..40, 0..SNIPPETS.len()), 1..4)
            .prop_map(|ops| ops.into_iter().fold(BASE.to_string(), mutate))
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        match lb::config::parse(text) {
            Ok(_) => Ok(()),
            Err(problems) => {
                prop_assert!(!problems.is_empty(), "rejected without a problem: {text:?}");
                Ok(())
            }
        }
    }

    #[test]
    fn base_config_is_valid() {
        lb::config::parse(BASE).expect("the fuzz base parses");
    }

    /// The mutations are not all TOML syntax errors: many reach validation, some still pass.
    #[test]
    fn mutations_reach_validation() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let (mut ok, mut syntax, mut invalid) = (0, 0, 0);
        for _ in 0..300 {
            let text = mutated().new_tree(&mut runner).unwrap().current();
            match lb::config::parse(&text) {
                Ok(_) => ok += 1,
                Err(p) if p.iter().any(|p| p.message.contains("TOML")) => syntax += 1,
                Err(_) => invalid += 1,
            }
        }
        eprintln!("mutated configs: {ok} valid, {syntax} syntax errors, {invalid} invalid");
        assert!(
            ok >= 10 && invalid >= 30,
            "{ok} valid, {syntax} syntax, {invalid} invalid"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parse_never_panics_on_mutated_config(text in mutated()) {
            check(&text)?;
        }

        #[test]
        fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            check(&text)?;
        }
    }
}
