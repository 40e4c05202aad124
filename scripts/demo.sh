#!/usr/bin/env bash
# One command: build lb and sample-backend (release), start three sample backends on
# 127.0.0.1:9001-9003 and lb on 127.0.0.1:8080 with config/demo.toml. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo build --release --bins
BIN=target/release
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for i in 1 2 3; do
  "$BIN/sample-backend" --listen "127.0.0.1:900$i" --name "backend-$i" &
  pids+=($!)
done
for port in 9001 9002 9003; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
done
"$BIN/lb" --config config/demo.toml --check
"$BIN/lb" --config config/demo.toml &
pids+=($!)

for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
  sleep 0.1
done
cat <<MSG

lb is running on http://127.0.0.1:8080/ in front of three sample backends.
  Load test:  wrk -t2 -c50 -d10s http://127.0.0.1:8080/        (apt-get install -y wrk)
  POST test:  curl -s -XPOST -d '{"hello":"world"}' http://127.0.0.1:8080/loadTest
  Dashboard:  http://127.0.0.1:9090/      Metrics: http://127.0.0.1:9090/metrics
  Status:     curl -s http://127.0.0.1:9090/status
  Edit config/demo.toml while it runs: lb reloads it. Ctrl-C stops everything.
MSG
wait
