#!/usr/bin/env bash
# Starts a nats-server with JetStream for tests and local runs: listens on 127.0.0.1 only,
# keeps its JetStream store, log and PID under DIR. scripts/nats-stop.sh DIR stops exactly
# the server this started.
#
# Usage: scripts/nats-start.sh DIR PORT MONPORT
#
# Installs Debian's nats-server when it is missing (needs root). On success prints, and writes
# to DIR/env, the line a test runner exports:
#   TRANSFERLAB_NATS_URL=nats://127.0.0.1:PORT
# When DIR's server already runs on PORT it only prints that line again. Exits non-zero with
# the tail of the server's log when JetStream is not healthy within NATS_START_TIMEOUT seconds
# (default 20).
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 DIR PORT MONPORT" >&2
  exit 2
fi
for n in "$2" "$3"; do
  case "$n" in '' | *[!0-9]*)
    echo "nats-start: PORT and MONPORT must be numbers, got '$n'" >&2
    exit 2
    ;;
  esac
done
mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
port=$2
monport=$3
timeout_s=${NATS_START_TIMEOUT:-20}
pidfile="$dir/nats-server.pid"
log="$dir/nats-server.log"

say() { printf 'nats-start: %s\n' "$*" >&2; }

# alive PID: true while the process exists and is not a zombie.
alive() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# running PID: alive and the nats-server started for this folder (its command line names DIR's
# store), so a reused PID is never taken for ours.
running() {
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "-sd $dir/jetstream "
}

# healthy: the monitoring endpoint reports JetStream up. Plain bash (/dev/tcp), no curl needed.
healthy() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$monport" || exit 1
    printf 'GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    line=''
    IFS= read -r -t 2 line <&3 || true
    [[ "$line" == HTTP/1.?\ 200* ]]
  ) 2>/dev/null
}

print_env() {
  echo "TRANSFERLAB_NATS_URL=nats://127.0.0.1:$port" >"$dir/env.tmp"
  mv "$dir/env.tmp" "$dir/env"
  cat "$dir/env"
}

if [ -f "$pidfile" ]; then
  pid=$(tr -dc '0-9' <"$pidfile")
  if [ -n "$pid" ] && running "$pid" && [ "$(cat "$dir/port" 2>/dev/null)" = "$port" ] && healthy; then
    say "already running under $dir (PID $pid)"
    print_env
    exit 0
  fi
  if [ -n "$pid" ] && running "$pid"; then
    say "a server for $dir runs with other ports (PID $pid): stop it first with scripts/nats-stop.sh $dir"
    exit 1
  fi
  rm -f "$pidfile"
fi

if ! command -v nats-server >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    say "nats-server is not installed and this is not root: run 'apt-get install -y nats-server' first"
    exit 1
  fi
  say "installing nats-server (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run may hold the dpkg lock for a while: wait and retry rather than fail.
  for attempt in $(seq 1 30); do
    if apt-get install -y -q nats-server >&2 || { apt-get update -q >&2 && apt-get install -y -q nats-server >&2; }; then
      break
    fi
    [ "$attempt" = 30 ] && { say "could not install nats-server"; exit 1; }
    say "apt busy or failing, retrying in 5 s ($attempt/30)"
    sleep 5
  done
fi

mkdir -p "$dir/jetstream"
echo "$port" >"$dir/port"
nats-server -a 127.0.0.1 -p "$port" -m "$monport" -js -sd "$dir/jetstream" -n "transferlab-$port" \
  </dev/null >"$log" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"

deadline=$(($(date +%s) + timeout_s))
until healthy; do
  # alive, not running: until the background shell has exec'd, its command line is this script's.
  if ! alive "$pid"; then
    say "nats-server (PID $pid) exited; the end of $log:"
    tail -n 20 "$log" >&2 || true
    rm -f "$pidfile"
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    say "JetStream not healthy on 127.0.0.1:$monport after ${timeout_s}s; the end of $log:"
    tail -n 20 "$log" >&2 || true
    kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    exit 1
  fi
  sleep 0.02
done
if ! running "$pid"; then
  say "something answers on 127.0.0.1:$monport, but not the nats-server started here (PID $pid); the end of $log:"
  tail -n 20 "$log" >&2 || true
  kill "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  exit 1
fi
say "nats-server $(nats-server --version | sed 's/^nats-server: //') ready on 127.0.0.1:$port (PID $pid, monitoring $monport, store $dir/jetstream)"
print_env
