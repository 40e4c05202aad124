//! The process around the proxy: the access log flushed on SIGTERM before exit, settings only a
//! restart applies (a reload names every one and keeps the running values), and the pid file
//! behind `--upgrade` (never signalling a process that is not this lb). Graceful stop and the
//! zero-downtime upgrade under load are in `reload.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[test]
fn sigterm_flushes_the_access_log_before_exit() {
    let a = Backend::start("a");
    let dir = temp_dir("flush");
    let path = dir.join("access.log");
    let mut lb = Lb::start_with(
        &format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr),
        &format!("access_log = \"{}\"", path.display()),
    );
    let mut conn = Conn::open(lb.addr).unwrap();
    for _ in 0..50 {
        assert_eq!(conn.send("GET", "/", &[], b"").unwrap().status, 200);
    }
    // Requests still running at SIGTERM: lb exits the moment they finish.
    let addr = lb.addr;
    let slow: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || request(addr, "GET", "/delay/300", &[], b"")))
        .collect();
    wait_for("slow requests in flight", Duration::from_secs(5), || {
        (lb.status_json()["upstreams"]["api"]["backends"][0]["in_flight"] == 4).then_some(())
    });
    lb.proc.signal("-TERM");
    for h in slow {
        assert_eq!(h.join().unwrap().status, 200);
    }
    wait_for("lb exit", Duration::from_secs(10), || {
        lb.proc.child.try_wait().unwrap()
    });
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        text.lines().count(),
        54,
        "lines in the access log after exit"
    );
}

#[test]
fn reload_reports_every_restart_only_setting_and_keeps_running_values() {
    let a = Backend::start("a");
    let dir = temp_dir("restart-only");
    let (old_log, new_log) = (dir.join("old.log"), dir.join("new.log"));
    let lb = Lb::start_with(
        &format!("[upstreams.api]\nbackends = [\"{}\"]\n", a.addr),
        &format!("access_log = \"{}\"", old_log.display()),
    );
    let text = std::fs::read_to_string(&lb.config).unwrap();
    let changed = text
        .replace("grace_period = \"3s\"", "grace_period = \"9s\"")
        .replace(
            &format!("access_log = \"{}\"", old_log.display()),
            &format!(
                "access_log = \"{}\"\nlog = \"debug\"\nwork_stealing = true\nupstream_keepalive_pool_size = 7",
                new_log.display()
            ),
        );
    assert_ne!(text, changed);
    lb.write_raw(&changed);
    let (code, result) = lb.reload();
    assert_eq!(code, 200, "{result}");
    let mut needs: Vec<String> = result["needs_restart"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    needs.sort();
    assert_eq!(
        needs,
        [
            "server.access_log",
            "server.grace_period",
            "server.log",
            "server.upstream_keepalive_pool_size",
            "server.work_stealing"
        ],
        "{result}"
    );
    assert_eq!(lb.get("/").status, 200);
    wait_for("line in the old access log", Duration::from_secs(5), || {
        std::fs::read_to_string(&old_log)
            .ok()
            .filter(|t| !t.is_empty())
    });
    assert!(!new_log.exists(), "the new access log was opened live");
}

/// Where lb keeps its pid file for `config` (named after the config file's absolute path).
fn pid_file(config: &Path) -> PathBuf {
    let abs = std::fs::canonicalize(config).unwrap();
    let tag = lb::reload::hash_text(&abs.display().to_string());
    std::env::temp_dir().join(format!("lb-{tag:016x}.pid"))
}

fn spawn_lb(config: &Path, args: &[&str], log: &Path) -> Proc {
    let child = Command::new(LB)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("spawn lb");
    Proc { child }
}

fn alive(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

#[test]
fn upgrade_never_signals_a_process_that_is_not_this_lb() {
    let a = Backend::start("a");
    let dir = temp_dir("stale-pid");
    // A config file and a stale pid file naming an unrelated process.
    let config = dir.join("lb.toml");
    let (port, admin) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\ngrace_period = \"2s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[upstreams.api]\nbackends = [\"{}\"]\n",
            a.addr
        ),
    )
    .unwrap();
    let pid_path = pid_file(&config);
    let mut sleeper = Proc {
        child: Command::new("sleep").arg("30").spawn().unwrap(),
    };
    std::fs::write(&pid_path, sleeper.child.id().to_string()).unwrap();
    let log = dir.join("upgrade.log");
    let mut new = spawn_lb(&config, &["--upgrade"], &log);
    let admin_addr = format!("127.0.0.1:{admin}").parse().unwrap();
    wait_for("lb started normally", Duration::from_secs(20), || {
        let r = try_request(admin_addr, "GET", "/healthz", &[], b"").ok()?;
        (r.status == 200).then_some(())
    });
    let proxy_addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(request(proxy_addr, "GET", "/", &[], b"").backend(), "a");
    assert!(
        alive(&mut sleeper.child),
        "the unrelated process was signalled"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("not an lb serving"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&pid_path).unwrap().trim(),
        new.child.id().to_string()
    );
    // Upgrading the lb serving `config` itself still works, and the pid file names the new process.
    let log2 = dir.join("upgrade2.log");
    let newer = spawn_lb(&config, &["--upgrade"], &log2);
    wait_for(
        "the old lb exits after the hand-over",
        Duration::from_secs(20),
        || new.child.try_wait().unwrap(),
    );
    assert_eq!(request(proxy_addr, "GET", "/", &[], b"").backend(), "a");
    assert_eq!(
        std::fs::read_to_string(&pid_path)
            .unwrap_or_default()
            .trim(),
        newer.child.id().to_string(),
        "the old process removed its successor's pid file"
    );
    newer.signal("-TERM");
    let mut newer = newer;
    wait_for("lb exit", Duration::from_secs(10), || {
        newer.child.try_wait().unwrap()
    });
    assert!(!pid_path.exists(), "pid file left behind after SIGTERM");
}

#[test]
fn upgrade_with_a_stale_pid_file_refuses_busy_listeners() {
    let dir = temp_dir("busy");
    let config = dir.join("lb.toml");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    std::fs::write(
        &config,
        format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\n[upstreams.api]\nbackends = [\"127.0.0.1:9\"]\n"),
    )
    .unwrap();
    let mut sleeper = Proc {
        child: Command::new("sleep").arg("30").spawn().unwrap(),
    };
    std::fs::write(pid_file(&config), sleeper.child.id().to_string()).unwrap();
    let log = dir.join("lb.log");
    let mut lb = spawn_lb(&config, &["--upgrade"], &log);
    let status = wait_for("lb to give up", Duration::from_secs(10), || {
        lb.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(1));
    assert!(
        alive(&mut sleeper.child),
        "the unrelated process was signalled"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("not an lb serving"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
}
