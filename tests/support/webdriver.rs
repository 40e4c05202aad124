//! A minimal W3C WebDriver client for driving headless Chromium through `chromedriver`, over the
//! harness's raw HTTP/1.1 client (no extra crates). Only what the dashboard test needs: open a
//! session, navigate, run a script, take a screenshot, close.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{free_port, try_request, wait_for, Proc};

/// Where the browser and its driver live (Debian's `chromium` and `chromium-driver` packages by
/// default; `LB_CHROMIUM` / `LB_CHROMEDRIVER` override).
#[derive(Debug, Clone)]
pub struct BrowserPaths {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

impl BrowserPaths {
    pub fn find() -> Result<BrowserPaths, String> {
        let pick = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        let paths = BrowserPaths {
            chromium: pick("LB_CHROMIUM", "/usr/bin/chromium"),
            chromedriver: pick("LB_CHROMEDRIVER", "/usr/bin/chromedriver"),
        };
        let missing: Vec<String> = [&paths.chromium, &paths.chromedriver]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(paths)
        } else {
            Err(format!("not installed: {}", missing.join(", ")))
        }
    }

    /// The browser, or `None` after a loud skip message; panics instead of skipping when
    /// `LB_REQUIRE_BROWSER=1` (as `scripts/test.sh` sets, after installing the browser).
    pub fn require_or_skip(test: &str) -> Option<BrowserPaths> {
        match BrowserPaths::find() {
            Ok(p) => Some(p),
            Err(why) => {
                let required = std::env::var("LB_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
                assert!(
                    !required,
                    "{test}: LB_REQUIRE_BROWSER=1 but headless Chromium is unavailable ({why}); \
                     install it with `apt-get install -y chromium chromium-driver` \
                     (scripts/test.sh does this) or set LB_CHROMIUM / LB_CHROMEDRIVER"
                );
                eprintln!(
                    "\n*** SKIPPED {test}: headless Chromium is unavailable ({why}).\n\
                     *** Install it with `apt-get install -y chromium chromium-driver`, or run \
                     scripts/test.sh (which does, and sets LB_REQUIRE_BROWSER=1).\n"
                );
                None
            }
        }
    }
}

/// A chromedriver process with one open browser session; the session (and so the browser) is
/// closed, its profile removed and the driver killed on drop.
pub struct Browser {
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
    _driver: Proc,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile under `dir`, its window
    /// `width`×`height`.
    pub fn start(paths: &BrowserPaths, dir: &Path, width: u32, height: u32) -> Browser {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.join("chromedriver.log");
        let child = Command::new(&paths.chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", paths.chromedriver.display()));
        let driver = Proc { child };
        wait_for("chromedriver to be ready", Duration::from_secs(20), || {
            let r = try_request(addr, "GET", "/status", &[], b"").ok()?;
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            (v["value"]["ready"] == true).then_some(())
        });
        let profile = dir.join("profile");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--disable-extensions".into(),
            "--hide-scrollbars".into(),
            "--force-device-scale-factor=1".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": paths.chromium.display().to_string(),
                        "args": args,
                    },
                }
            }
        });
        let mut browser = Browser {
            addr,
            session: String::new(),
            profile: profile.clone(),
            _driver: driver,
        };
        let v = browser
            .call("POST", "/session", Some(&caps))
            .unwrap_or_else(|e| {
                panic!(
                    "new WebDriver session: {e}\nchromedriver log ({}):\n{}",
                    log.display(),
                    tail(&log)
                )
            });
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        browser.set_viewport(width, height);
        browser
    }

    /// Resizes the window so the page's viewport is `width`×`height` (headless Chromium counts
    /// window decorations in `--window-size`).
    pub fn set_viewport(&self, width: u32, height: u32) {
        let inner = || {
            let v = self.eval("return [window.innerWidth, window.innerHeight]");
            (v[0].as_i64().unwrap_or(0), v[1].as_i64().unwrap_or(0))
        };
        for _ in 0..3 {
            let (w, h) = inner();
            if (w, h) == (width as i64, height as i64) {
                return;
            }
            let rect = self.session_call("GET", "/window/rect", None);
            let (ow, oh) = (
                rect["width"].as_i64().unwrap_or(0),
                rect["height"].as_i64().unwrap_or(0),
            );
            let (nw, nh) = (ow + width as i64 - w, oh + height as i64 - h);
            self.session_call(
                "POST",
                "/window/rect",
                Some(&json!({ "width": nw, "height": nh })),
            );
        }
        let (w, h) = inner();
        eprintln!("webdriver: viewport is {w}x{h}, wanted {width}x{height}");
    }

    /// One WebDriver command; `Ok(value)` or `Err("error: message")`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("Content-Type", "application/json; charset=utf-8")]
        };
        let r = try_request(self.addr, method, path, headers, body.as_bytes())
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let v: Value = serde_json::from_slice(&r.body)
            .map_err(|e| format!("{method} {path}: status {} non-JSON: {e}", r.status))?;
        if r.status != 200 {
            return Err(format!(
                "{method} {path}: {} {}: {}",
                r.status,
                v["value"]["error"].as_str().unwrap_or("?"),
                v["value"]["message"].as_str().unwrap_or("")
            ));
        }
        Ok(v["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        self.call(method, &full, body)
            .unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body: use `return`) in the page; returns its JSON result.
    pub fn eval(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// `textContent` (trimmed) of the first element matching `css`, `None` if there is none.
    pub fn text(&self, css: &str) -> Option<String> {
        let script = format!(
            "var e = document.querySelector({}); return e ? e.textContent.trim() : null;",
            Value::from(css)
        );
        self.eval(&script).as_str().map(str::to_string)
    }

    /// A PNG screenshot of the viewport, also written to `path`.
    pub fn screenshot(&self, path: &Path) -> Vec<u8> {
        let v = self.session_call("GET", "/screenshot", None);
        let png = base64_decode(v.as_str().expect("screenshot is a base64 string"))
            .expect("screenshot base64");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "screenshot is not a PNG"
        );
        std::fs::write(path, &png).unwrap();
        png
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        // The browser has quit with its session; its profile (a few MB) is not worth keeping.
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Standard base64 (with or without padding; whitespace ignored).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' | b' ' => continue,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
