#!/bin/sh
# Thin wrapper: run the end-to-end load benchmark from anywhere. See benches/load.py --help.
#   benches/load.sh [--quick] [--rounds N] [--duration S] [--variants keepalive,close,...]
set -eu
cd "$(dirname "$0")/.."
exec python3 benches/load.py "$@"
