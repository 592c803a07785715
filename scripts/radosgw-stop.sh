#!/usr/bin/env bash
# Stops the test cluster that scripts/radosgw-start.sh DIR started: only the PIDs recorded in
# DIR/pids, and only while they still run with DIR's ceph.conf. TERM first, KILL after ~10 s.
# Leaves DIR (config and logs) in place; remove it when done.
#
# Usage: scripts/radosgw-stop.sh DIR
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/radosgw-common.sh
. "$here/lib/radosgw-common.sh"

if [ ! -d "$1" ]; then
  rgw_log "nothing to stop: $1 does not exist"
  exit 0
fi
dir=$(cd "$1" && pwd -P)
rgw_stop_all "$dir"
rm -f "$dir/env"
rgw_log "stopped (state under $dir)"
