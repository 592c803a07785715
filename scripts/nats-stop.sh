#!/usr/bin/env bash
# Stops the nats-server that scripts/nats-start.sh DIR started: exactly the PID recorded in
# DIR, and only when that process is still the nats-server serving DIR's store. SIGTERM first
# (JetStream flushes its store), SIGKILL after NATS_STOP_TIMEOUT seconds (default 10).
# Leaves DIR and its store in place. Nothing running is no error.
#
# Usage: scripts/nats-stop.sh DIR
set -euo pipefail
# shellcheck source=lib/stop-recorded.sh
source "$(dirname "$0")/lib/stop-recorded.sh"

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  echo "nats-stop: no folder $1: nothing to stop" >&2
  exit 0
fi
dir=$(cd "$1" && pwd -P)
stop_recorded nats-server "$dir/nats-server.pid" "-sd $dir/jetstream " "${NATS_STOP_TIMEOUT:-10}"
