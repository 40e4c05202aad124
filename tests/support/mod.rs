//! Shared test harness: real `lb` and `sample-backend` processes on ephemeral loopback ports, and
//! a small blocking HTTP/1.1 client that speaks raw bytes (so tests see exactly what went over the
//! wire). Every wait is a bounded poll. [`raw`] goes lower still: bytes written as given and read
//! back unparsed, for malformed requests, pipelining and raw backends.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const LB: &str = env!("CARGO_BIN_EXE_lb");
pub const SAMPLE: &str = env!("CARGO_BIN_EXE_sample-backend");

/// Polls `f` every 10 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A killed-on-drop child process.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }
}

/// A running `sample-backend`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub proc: Proc,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        Backend::start_with(name, &[])
    }

    pub fn start_with(name: &str, args: &[&str]) -> Backend {
        Backend::start_at(name, "127.0.0.1:0", args)
    }

    pub fn start_at(name: &str, listen: &str, args: &[&str]) -> Backend {
        let mut child = Command::new(SAMPLE)
            .args(["--listen", listen, "--name", name, "--threads", "1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sample-backend");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .expect("listening line");
        Backend {
            name: name.to_string(),
            addr,
            proc: Proc { child },
        }
    }

    pub fn kill(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    pub fn set_health(&self, up: bool) {
        let path = if up {
            "/control/health/up"
        } else {
            "/control/health/down"
        };
        let r = request(self.addr, "POST", path, &[], b"");
        assert_eq!(r.status, 200);
    }
}

/// A running `lb` with its config file in a temporary directory.
pub struct Lb {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub proc: Proc,
    pub log: PathBuf,
    /// The generated `[server]` and `[admin]` sections.
    pub header: String,
}

/// A fresh temporary directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    // The process id and a port alone can repeat across runs, and /tmp outlives them: add the
    // time, and empty whatever is there.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "lb-test-{tag}-{}-{}-{nanos}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Lb {
    /// Starts lb with `body` (upstreams, routes, …) after a generated `[server]`/`[admin]` header.
    /// `server_extra` is added inside `[server]`.
    pub fn start(body: &str) -> Lb {
        Lb::start_with(body, "")
    }

    pub fn start_with(body: &str, server_extra: &str) -> Lb {
        Lb::start_with_env(body, server_extra, &[])
    }

    /// [`Lb::start_with`], with environment variables for the lb process.
    pub fn start_with_env(body: &str, server_extra: &str, env: &[(&str, &str)]) -> Lb {
        Lb::start_listening(free_port(), &[], body, server_extra, env)
    }

    /// Starts lb listening on 127.0.0.1:`port` (its `addr`) and on each of `more` too.
    pub fn start_listening(
        port: u16,
        more: &[SocketAddr],
        body: &str,
        server_extra: &str,
        env: &[(&str, &str)],
    ) -> Lb {
        let admin_port = free_port();
        let more: String = more.iter().map(|a| format!(", \"{a}\"")).collect();
        let dir = temp_dir("lb");
        let config = dir.join("lb.toml");
        // A grace period of 3 s unless `server_extra` sets its own.
        let grace = if server_extra.contains("grace_period") {
            ""
        } else {
            "grace_period = \"3s\"\n"
        };
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"{more}]\nthreads = 2\n{grace}{server_extra}\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{body}\n"
        );
        std::fs::write(&config, &text).unwrap();
        let header = text[..text.find("\n\n[admin]").unwrap()].to_string()
            + &format!("\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"");
        let lb = Lb::spawn_env(dir, port, admin_port, header, env);
        lb.wait_ready();
        lb
    }

    /// Starts lb on the config file already written to `dir/lb.toml`, whose proxy listens on
    /// 127.0.0.1:`port` and admin listener on `admin_port`, without waiting for it.
    pub fn spawn(dir: PathBuf, port: u16, admin_port: u16, header: String) -> Lb {
        Lb::spawn_env(dir, port, admin_port, header, &[])
    }

    fn spawn_env(
        dir: PathBuf,
        port: u16,
        admin_port: u16,
        header: String,
        env: &[(&str, &str)],
    ) -> Lb {
        let config = dir.join("lb.toml");
        let log = dir.join("lb.log");
        let child = Command::new(LB)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(
                std::fs::File::create(dir.join("stdout.log")).unwrap(),
            ))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("spawn lb");
        Lb {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
            dir,
            config,
            proc: Proc { child },
            log,
            header,
        }
    }

    pub fn wait_ready(&self) {
        wait_for("lb to listen", Duration::from_secs(20), || {
            TcpStream::connect(self.addr).ok()?;
            let r = try_request(self.admin, "GET", "/healthz", &[], b"").ok()?;
            (r.status == 200).then_some(())
        });
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, &[], b"")
    }

    pub fn status_json(&self) -> serde_json::Value {
        let r = request(self.admin, "GET", "/status", &[], b"");
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).expect("status JSON")
    }

    pub fn metrics(&self) -> String {
        let r = request(self.admin, "GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200);
        String::from_utf8(r.body).unwrap()
    }

    /// State of one backend as `/status` reports it.
    pub fn backend_state(&self, upstream: &str, address: &str) -> String {
        let s = self.status_json();
        s["upstreams"][upstream]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == address)
            .map(|b| b["state"].as_str().unwrap().to_string())
            .unwrap_or_else(|| "absent".into())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Rewrites the config file body (header kept) and asks for a reload through the admin API.
    pub fn write_config(&self, body: &str) {
        self.write_raw(&format!("{}\n\n{body}\n", self.header));
    }

    /// Replaces the whole config file atomically (write a temporary file, then rename, as editors do).
    pub fn write_raw(&self, text: &str) {
        let tmp = self.dir.join(".lb.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// `POST /reload`; returns (status, JSON answer).
    pub fn reload(&self) -> (u16, serde_json::Value) {
        let r = request(self.admin, "POST", "/reload", &[], b"");
        (r.status, r.json())
    }

    /// Backend addresses of an upstream as `/status` reports them.
    pub fn backend_set(&self, upstream: &str) -> Vec<String> {
        let s = self.status_json();
        let mut v: Vec<String> = s["upstreams"][upstream]["backends"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|b| b["address"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// An HTTP response as received.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn backend(&self) -> String {
        self.header("x-backend").unwrap_or("").to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A keep-alive client connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
    /// At least one response was read on this connection.
    pub used: bool,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(s),
            used: false,
        })
    }

    /// A connection already made (e.g. from a chosen source address).
    pub fn from_stream(s: TcpStream) -> std::io::Result<Conn> {
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(s),
            used: false,
        })
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str("Host: localhost\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream().write_all(&bytes)?;
        let r = self.read_response(method == "HEAD");
        self.used = true;
        r
    }

    /// Reads one response (Content-Length, chunked, or until close).
    pub fn read_response(&mut self, head: bool) -> std::io::Result<Response> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before status line",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad status line {line:?}"),
                )
            })?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if self.reader.read_line(&mut h)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed in headers",
                ));
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head || status == 204 || status == 304 || status / 100 == 1 {
            return Ok(resp);
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap_or(0);
            resp.body = vec![0; len];
            self.reader.read_exact(&mut resp.body)?;
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            resp.body = self.read_chunked()?;
        } else {
            self.reader.read_to_end(&mut resp.body)?;
        }
        Ok(resp)
    }

    fn read_chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            if self.reader.read_line(&mut size)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed in chunked body",
                ));
            }
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
                })?;
            if n == 0 {
                let mut end = String::new();
                self.reader.read_line(&mut end)?;
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + n, 0);
            self.reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf)?;
        }
    }
}

/// A GET of `path` from source address `from` (e.g. 127.0.0.2: any 127/8 address is local)
/// with `headers`, on its own connection.
pub fn get_from(addr: SocketAddr, from: IpAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let mut c = Conn::from_stream(s.into()).unwrap();
    c.send("GET", path, headers, b"").unwrap()
}

/// One request on a fresh connection.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut c = Conn::open(addr)?;
    c.send(method, path, headers, body)
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// Runs `clients` threads each sending `per_client` GETs of `path` on one keep-alive connection
/// (reconnecting when lb closes it). Returns (status → count, backend → count).
pub fn load(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    per_client: usize,
) -> (HashMap<u16, usize>, HashMap<String, usize>) {
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut statuses = HashMap::new();
                let mut backends = HashMap::new();
                let mut conn = None;
                for _ in 0..per_client {
                    let r = (0..3).find_map(|_| {
                        let c = match conn.take() {
                            Some(c) => c,
                            None => Conn::open(addr).ok()?,
                        };
                        let mut c = c;
                        match c.send("GET", &path, &[], b"") {
                            Ok(r) => {
                                if r.header("connection")
                                    .is_none_or(|v| !v.eq_ignore_ascii_case("close"))
                                {
                                    conn = Some(c);
                                }
                                Some(r)
                            }
                            Err(_) => None,
                        }
                    });
                    match r {
                        Some(r) => {
                            *statuses.entry(r.status).or_insert(0) += 1;
                            *backends.entry(r.backend()).or_insert(0) += 1;
                        }
                        None => *statuses.entry(0).or_insert(0) += 1,
                    }
                }
                (statuses, backends)
            })
        })
        .collect();
    let mut statuses = HashMap::new();
    let mut backends = HashMap::new();
    for h in handles {
        let (s, b) = h.join().unwrap();
        for (k, v) in s {
            *statuses.entry(k).or_insert(0) += v;
        }
        for (k, v) in b {
            *backends.entry(k).or_insert(0) += v;
        }
    }
    (statuses, backends)
}

/// `backends = [...]` TOML for the given (backend, weight) pairs.
pub fn backends_toml(list: &[(&Backend, u32)]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|(b, w)| format!("{{ address = \"{}\", weight = {w} }}", b.addr))
        .collect();
    format!("backends = [{}]", items.join(", "))
}

/// Runs `lb --check` on `text`; returns (success, stdout+stderr).
pub fn check_config(text: &str) -> (bool, String) {
    let dir = temp_dir("check");
    let path = dir.join("lb.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(LB)
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// One request seen by [`Traffic`]: when it finished, its status (0 = transport error), backend.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub status: u16,
    pub backend: String,
}

/// Background keep-alive load until stopped (hard cap: 60 s), recording every answer.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    log: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
    /// Keep-alive connections the server closed between requests (retried on a new one).
    pub stale: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Traffic {
    pub fn start(addr: SocketAddr, path: &str, clients: usize) -> Traffic {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stale = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handles = (0..clients)
            .map(|_| {
                let (stop, log, path, stale) =
                    (stop.clone(), log.clone(), path.to_string(), stale.clone());
                std::thread::spawn(move || {
                    let cap = Instant::now() + Duration::from_secs(60);
                    let mut conn: Option<Conn> = None;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < cap {
                        let mut c = match conn.take() {
                            Some(c) => c,
                            None => match Conn::open(addr) {
                                Ok(c) => c,
                                Err(_) => {
                                    log.lock().unwrap().push(Seen {
                                        at: Instant::now(),
                                        status: 0,
                                        backend: String::new(),
                                    });
                                    std::thread::sleep(Duration::from_millis(5));
                                    continue;
                                }
                            },
                        };
                        let reused = c.used;
                        let mut result = c.send("GET", &path, &[], b"");
                        if result.is_err() && reused {
                            // The server closed an idle keep-alive connection between requests:
                            // what every HTTP client retries on a new connection.
                            stale.fetch_add(1, Ordering::Relaxed);
                            result = Conn::open(addr).and_then(|mut fresh| {
                                let r = fresh.send("GET", &path, &[], b"");
                                c = fresh;
                                r
                            });
                        }
                        let (status, backend) = match result {
                            Ok(r) => {
                                let close = r
                                    .header("connection")
                                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                                if !close {
                                    conn = Some(c);
                                }
                                (r.status, r.backend())
                            }
                            Err(_) => (0, String::new()),
                        };
                        log.lock().unwrap().push(Seen {
                            at: Instant::now(),
                            status,
                            backend,
                        });
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            log,
            handles,
            stale,
        }
    }

    /// Everything recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    /// Requests that finished after `t`.
    pub fn since(&self, t: Instant) -> Vec<Seen> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at > t)
            .cloned()
            .collect()
    }

    pub fn stop(mut self) -> Vec<Seen> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        self.seen()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Failed answers (anything but 200) in `seen`, for assertion messages.
pub fn failures(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.status != 200).collect()
}

pub mod kafka;
pub mod raw;
pub mod webdriver;

/// A backend on a raw socket: `handler` runs on its own thread for each accepted connection
/// (for faults no real server produces). `conns` counts accepted connections.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub conns: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

pub fn raw_backend(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = std::sync::Arc::new(handler);
    let counter = conns.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let h = handler.clone();
            std::thread::spawn(move || h(s));
        }
    });
    RawBackend { addr, conns }
}

/// A test certificate authority and leaf certificates signed by it, written as PEM files.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    pub fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lb test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A certificate for `localhost` and `127.0.0.1` with common name `cn`, valid until `days`
    /// from now (negative: expired); written to `cert`/`key`.
    pub fn leaf(&self, cn: &str, days: i64, cert: &Path, key: &Path) {
        self.leaf_for(&["localhost", "127.0.0.1"], cn, days, cert, key);
    }

    /// [`Ca::leaf`] for the subject alternative names `names`.
    pub fn leaf_for(&self, names: &[&str], cn: &str, days: i64, cert: &Path, key: &Path) {
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now + time::Duration::days(days);
        let signed = params.signed_by(&leaf_key, &self.cert, &self.key).unwrap();
        write_file(cert, &signed.pem());
        write_file(key, &leaf_key.serialize_pem());
        // As a private key should be: lb warns about keys other users can read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).unwrap();
    }
}

/// Writes `text` to `path` (mode 0600) through a temporary file and a rename, as editors and
/// certificate tools do, so a watcher never reads a half-written file.
pub fn write_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The Python of the test virtualenv (`target/test-venv`, or `$LB_TEST_VENV`), where
/// scripts/setup.sh installs grpcio and h2; a clear failure when it is missing.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("LB_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv"));
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/setup.sh (or scripts/test.sh), which installs the test's Python packages there",
        py.display()
    );
    py
}

/// A config body with one upstream, `api`, whose only backend is `addr`.
pub fn single(addr: SocketAddr) -> String {
    format!("[upstreams.api]\nbackends = [\"{addr}\"]\n")
}

/// Sum of the values of every metrics line starting with `prefix` (a series or a label prefix).
pub fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The target (path and query) `sample-backend`'s `/echo` received, from its JSON answer.
pub fn echo_path(r: &Response) -> String {
    r.json()["path"].as_str().unwrap_or_default().to_string()
}

/// The headers `sample-backend`'s `/echo` received, from its JSON answer (`r.json()`, or the body
/// of a raw response parsed), in order, as (lower-case name, value) pairs. [`header_values`] picks
/// one name's values.
pub fn echo_headers(echo: &serde_json::Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .expect("echo JSON with headers")
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The values of every `name` line (any case) in `headers`, in order.
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// tests/h2/duplex_echo.py (Python's `h2` library, not lb's code): an h2c backend that echoes
/// request bodies as it reads them and names the request's `:scheme` and `:authority` in its
/// answer (`x-seen-scheme`, `x-seen-authority`). Killed on drop.
pub struct H2EchoBackend {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl H2EchoBackend {
    pub fn start() -> H2EchoBackend {
        let port = free_port();
        let script =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/h2/duplex_echo.py");
        let mut child = Command::new(venv_python())
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tests/h2/duplex_echo.py (scripts/setup.sh installs its h2 library)");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready");
        H2EchoBackend {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            child,
        }
    }
}

impl Drop for H2EchoBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
