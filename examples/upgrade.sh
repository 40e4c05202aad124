#!/usr/bin/env bash
# Zero-downtime binary upgrade: start the new lb beside the running one; it asks the old process
# (found through its pid file) for the listening sockets, takes them over, and the old process
# finishes its in-flight requests and exits. No connection is refused.
set -euo pipefail
CONFIG=${1:?usage: upgrade.sh /etc/lb/lb.toml [path/to/new/lb]}
NEW=${2:-/usr/local/bin/lb}
"$NEW" --config "$CONFIG" --check
exec "$NEW" --config "$CONFIG" --upgrade
