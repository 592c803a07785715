#!/usr/bin/env bash
# Stops the nats-server that scripts/nats-start.sh DIR started: exactly the PID recorded in
# DIR, and only when that process is still the nats-server serving DIR's store. SIGTERM first
# (JetStream flushes its store), SIGKILL after NATS_STOP_TIMEOUT seconds (default 10).
# Leaves DIR and its store in place. Nothing running is no error.
#
# Usage: scripts/nats-stop.sh DIR
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  echo "nats-stop: no folder $1: nothing to stop" >&2
  exit 0
fi
dir=$(cd "$1" && pwd -P)
pidfile="$dir/nats-server.pid"
timeout_s=${NATS_STOP_TIMEOUT:-10}

say() { printf 'nats-stop: %s\n' "$*" >&2; }

running() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "-sd $dir/jetstream "
}

if [ ! -f "$pidfile" ]; then
  say "no PID file in $dir: nothing to stop"
  exit 0
fi
pid=$(tr -dc '0-9' <"$pidfile")
if [ -z "$pid" ] || ! running "$pid"; then
  say "nats-server for $dir is not running"
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
  sleep 0.02
done
rm -f "$pidfile"
say "stopped nats-server PID $pid ($dir)"
