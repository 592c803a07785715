#!/usr/bin/env bash
# Stops the Prometheus that scripts/prometheus-start.sh DIR started: exactly the PID recorded
# in DIR, and only when that process is still the prometheus serving DIR's TSDB. SIGTERM first,
# SIGKILL after PROMETHEUS_STOP_TIMEOUT seconds (default 10). Leaves DIR in place. Nothing
# running is no error.
#
# Usage: scripts/prometheus-stop.sh DIR
set -euo pipefail
# shellcheck source=lib/stop-recorded.sh
source "$(dirname "$0")/lib/stop-recorded.sh"

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  echo "prometheus-stop: no folder $1: nothing to stop" >&2
  exit 0
fi
dir=$(cd "$1" && pwd -P)
stop_recorded prometheus "$dir/prometheus.pid" "--storage.tsdb.path=$dir/data " "${PROMETHEUS_STOP_TIMEOUT:-10}"
