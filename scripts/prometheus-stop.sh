#!/usr/bin/env bash
# Stops the Prometheus that scripts/prometheus-start.sh DIR started: exactly the PID recorded
# in DIR, and only when that process is still the prometheus serving DIR's TSDB. SIGTERM first,
# SIGKILL after PROMETHEUS_STOP_TIMEOUT seconds (default 10). Leaves DIR in place. Nothing
# running is no error.
#
# Usage: scripts/prometheus-stop.sh DIR
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  echo "prometheus-stop: no folder $1: nothing to stop" >&2
  exit 0
fi
dir=$(cd "$1" && pwd -P)
pidfile="$dir/prometheus.pid"
timeout_s=${PROMETHEUS_STOP_TIMEOUT:-10}

say() { printf 'prometheus-stop: %s\n' "$*" >&2; }

running() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "--storage.tsdb.path=$dir/data "
}

if [ ! -f "$pidfile" ]; then
  say "no PID file in $dir: nothing to stop"
  exit 0
fi
pid=$(tr -dc '0-9' <"$pidfile")
if [ -z "$pid" ] || ! running "$pid"; then
  say "prometheus for $dir is not running"
  rm -f "$pidfile"
  exit 0
fi
kill -TERM "$pid"
deadline=$(($(date +%s) + timeout_s))
while running "$pid"; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    say "PID $pid still running after ${timeout_s}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    break
  fi
  sleep 0.05
done
rm -f "$pidfile"
say "stopped prometheus PID $pid ($dir)"
