#!/usr/bin/env bash
# Installs what a fresh machine lacks for building lb: cmake (pingora's zlib-ng needs it).
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

ensure_cmake
