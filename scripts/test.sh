#!/usr/bin/env bash
# One command: install what is missing, then run the whole test suite (formatting, lints, unit and
# integration tests against real lb and sample-backend processes on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
export LB_SETUP_BROWSER=1     # setup.sh also installs chromium + chromium-driver
source scripts/setup.sh
export LB_REQUIRE_BROWSER=1   # so the dashboard browser test fails rather than skips

cargo fmt --check
python3 scripts/check-layers.py   # no module imports one of its own layer or above (src/lib.rs)
scripts/vendor-pingora.sh --check # vendor/ is pingora's crates.io sources + vendor/patches
cargo clippy --all-targets --locked -- -D warnings
cargo build --bins --locked
cargo test --locked -- --test-threads "${LB_TEST_THREADS:-2}"
