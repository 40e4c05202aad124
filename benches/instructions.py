#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by callgrind: lb against NGINX and HAProxy.

One command (from the repository root):  python3 benches/instructions.py

Why: CPU time per request on a shared 2-core machine moves by 20-50% between identical runs (see
load.py's noise notes), so a change worth 5% cannot be seen in it. Instructions executed in user
space are nearly deterministic: the same binary gives the same count per request to within a
few percent, so one run per target is enough to compare code paths. They leave out the kernel
(syscalls, TCP, wake-ups: about half of a proxy's CPU here, and nearly the same for the three
proxies, since they make the same syscalls per request) and cycles per instruction (cache
misses), so they are a lens on the user-space part, next to load.py's CPU time, not a
replacement for it.

What it does:
  1. `cargo build --release --bins` (skip with --skip-build); installs valgrind, wrk, nginx and
     haproxy with apt-get when missing (root only; a proxy that cannot be had is skipped).
  2. Starts three sample-backends on CPU 0 and, for each target, the proxy under
     `valgrind --tool=callgrind` on CPU 1 with one worker (NGINX with `master_process off`,
     configs as in load.py: keep-alive on both sides, access logs off).
  3. Warms up with wrk (-t1 -c20, 2 s), zeroes the counters (`callgrind_control -z`), runs wrk
     for --duration seconds, dumps the counters (`callgrind_control -d`) and divides the
     instructions by the requests wrk completed.

Prints instructions per request per target and the ratios to NGINX and HAProxy, and writes
bench-results/instructions-<timestamp>.json. `--compare-lb LABEL=PATH` adds another lb binary
(e.g. a build of an older commit). `--keep` keeps the callgrind files for callgrind_annotate.
All traffic is on loopback; every process started here is killed on exit. About 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load  # noqa: E402  (shared set-up: backends, configs, process handling)

WARMUP_S = 2
CONNECTIONS = 20
START_TIMEOUT_S = 60.0  # valgrind starts a proxy 20-50x slower


def ensure_valgrind() -> str | None:
    """Installs valgrind when missing; returns why it is unavailable, or None."""
    if shutil.which("callgrind_control"):
        return None
    if os.geteuid() != 0:
        return "valgrind is not installed and not root, so apt-get cannot install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("+ apt-get install -y valgrind", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "valgrind"], env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env)
        subprocess.run(["apt-get", "install", "-y", "valgrind"], env=env)
    return None if shutil.which("callgrind_control") else "apt-get install valgrind failed"


def proxy_argv(kind: str, binary: str | None, d: Path, port: int, backends: list[str]) -> list[str]:
    if kind == "lb":
        cfg = d / "lb.toml"
        cfg.write_text(load.lb_config(port, "rr", backends))
        return [binary or str(load.LB_BIN), "--config", str(cfg)]
    if kind == "nginx":
        cfg = d / "nginx.conf"
        cfg.write_text(load.nginx_config(d, port, "rr", backends))
        # One process: the worker is the process callgrind follows.
        return [load.tool("nginx"), "-p", str(d), "-c", str(cfg), "-g", "daemon off; master_process off;"]
    if kind == "haproxy":
        cfg = d / "haproxy.cfg"
        cfg.write_text(load.haproxy_config(port, "rr", backends))
        return [load.tool("haproxy"), "-f", str(cfg), "-db"]
    raise ValueError(kind)


def wait_serving(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}; log {log}:\n{load.tail(log)}")
        try:
            load.wait_http_ok(port, proc, log)
            return
        except RuntimeError:
            continue
    raise RuntimeError(f"not serving after {START_TIMEOUT_S}s; log {log}:\n{load.tail(log)}")


def wrk(port: int, seconds: int) -> int:
    """Runs wrk and returns the number of completed requests (non-2xx would be counted too,
    so they are checked)."""
    argv = ["taskset", "-c", load.LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s"]
    argv += ["--timeout", "10s", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    if not m:
        raise RuntimeError(f"wrk printed no request count:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"errors during the measured run:\n{out}")
    return int(m.group(1))


def dumped_instructions(d: Path, pid: int) -> int:
    """The `summary:` (or `totals:`) of the dump callgrind_control -d wrote for `pid`."""
    dumps = sorted(d.glob(f"cg.{pid}.*"))
    if not dumps:
        raise RuntimeError(f"no callgrind dump for pid {pid} in {d}")
    for line in dumps[-1].read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {dumps[-1]}")


def measure(procs: load.Processes, label: str, kind: str, binary: str | None, backends: list[str],
            root: Path, seconds: int) -> dict:
    d = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=root))
    (d / "logs").mkdir()
    port = load.free_port()
    log = d / "out.log"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.%p", *proxy_argv(kind, binary, d, port, backends)]
    p = procs.start(argv, log, cpu=load.PROXY_CPU)
    try:
        wait_serving(port, p, log)
        wrk(port, WARMUP_S)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True, timeout=60)
        requests = wrk(port, seconds)
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True, timeout=60)
        instructions = dumped_instructions(d, p.pid)
    finally:
        procs.stop(p, sig=2 if kind == "lb" else 15)
    per = instructions / requests
    print(f"{label:<18} {per:>9,.0f} instructions/request ({requests} requests, files in {d})", flush=True)
    return {"label": label, "instructions": instructions, "requests": requests, "per_request": per, "dir": str(d)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--duration", type=int, default=8, help="seconds of measured load per target")
    ap.add_argument("--only", default="lb,nginx,haproxy", help="comma-separated: lb,nginx,haproxy")
    ap.add_argument("--compare-lb", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--keep", action="store_true", help="keep the callgrind files")
    args = ap.parse_args()

    if not args.skip_build:
        load.build()
    why = ensure_valgrind()
    if why:
        print(f"cannot count instructions: {why}", file=sys.stderr)
        return 1
    missing = load.ensure_tools()
    if "wrk" in missing:
        print(f"cannot run: wrk {missing['wrk']}", file=sys.stderr)
        return 1

    targets = [(k, k, None) for k in args.only.split(",") if k and k not in missing]
    for spec in args.compare_lb:
        label, _, path = spec.partition("=")
        targets.append((label, "lb", path))
    for k in args.only.split(","):
        if k in missing:
            print(f"{k}: skipped ({missing[k]})")

    root = Path(tempfile.mkdtemp(prefix="lb-instructions-"))
    procs = load.Processes()
    results = []
    try:
        backends = load.start_backends(procs, root, want_big=False)
        for label, kind, binary in targets:
            results.append(measure(procs, label, kind, binary, backends.small, root, args.duration))
    finally:
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    by = {r["label"]: r["per_request"] for r in results}
    ratios = {}
    for other in ("nginx", "haproxy"):
        if "lb" in by and other in by:
            ratios[f"lb/{other}"] = by["lb"] / by[other]
    for label, _, path in targets:
        if path and "lb" in by:
            ratios[f"lb/{label}"] = by["lb"] / by[label]
    for k, v in ratios.items():
        print(f"{k:<18} {v:.2f}")
    load.RESULTS_DIR.mkdir(exist_ok=True)
    out = load.RESULTS_DIR / f"instructions-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"versions": load.versions(), "results": results, "ratios": ratios}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
