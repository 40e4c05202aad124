#!/usr/bin/env bash
# One command: install what is missing, then run the whole test suite (formatting, lints, unit and
# integration tests against real lb and sample-backend processes on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo build --bins --locked
cargo test --locked -- --test-threads "${LB_TEST_THREADS:-4}"
