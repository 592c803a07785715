#!/usr/bin/env bash
# Starts a Prometheus for tests and local runs: listens on 127.0.0.1 only, scrapes the given
# targets every second (PROMETHEUS_SCRAPE_INTERVAL), keeps its config, TSDB, log and PID under
# DIR. scripts/prometheus-stop.sh DIR stops exactly the server this started.
#
# Usage: scripts/prometheus-start.sh DIR PORT TARGET...
#   TARGET: HOST:PORT, or SERVICE=HOST:PORT to label the target's series service="SERVICE"
#   (on a cluster a ServiceMonitor sets that label; the dashboards select on it).
#
# Installs Debian's prometheus when it is missing (needs root). On success prints, and writes
# to DIR/env, the line a test runner exports:
#   TRANSFERLAB_PROMETHEUS_URL=http://127.0.0.1:PORT
# Exits non-zero with the tail of the server's log when it is not ready within
# PROMETHEUS_START_TIMEOUT seconds (default 30). Ready means serving; the first scrape of each
# target follows within a scrape interval or so: poll `up` before relying on data.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 DIR PORT TARGET..." >&2
  exit 2
fi
case "$2" in '' | *[!0-9]*)
  echo "prometheus-start: PORT must be a number, got '$2'" >&2
  exit 2
  ;;
esac
mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
port=$2
shift 2
interval=${PROMETHEUS_SCRAPE_INTERVAL:-1s}
timeout_s=${PROMETHEUS_START_TIMEOUT:-30}
pidfile="$dir/prometheus.pid"
log="$dir/prometheus.log"
config="$dir/prometheus.yml"

say() { printf 'prometheus-start: %s\n' "$*" >&2; }

alive() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# running PID: alive and the prometheus started for this folder (its command line names DIR's
# TSDB), so a reused PID is never taken for ours.
running() {
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "--storage.tsdb.path=$dir/data "
}

# ready: GET /-/ready answers 200. Plain bash (/dev/tcp), no curl needed.
ready() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    line=''
    IFS= read -r -t 2 line <&3 || true
    [[ "$line" == HTTP/1.?\ 200* ]]
  ) 2>/dev/null
}

print_env() {
  echo "TRANSFERLAB_PROMETHEUS_URL=http://127.0.0.1:$port" >"$dir/env.tmp"
  mv "$dir/env.tmp" "$dir/env"
  cat "$dir/env"
}

# The scrape configuration: one static group per target, labelled with its service when named.
{
  echo "# Written by scripts/prometheus-start.sh"
  echo "global:"
  echo "  scrape_interval: $interval"
  echo "  scrape_timeout: $interval"
  echo "  evaluation_interval: $interval"
  echo "scrape_configs:"
  echo "  - job_name: transferlab"
  echo "    static_configs:"
  for target in "$@"; do
    service=''
    address=$target
    case "$target" in *=*) service=${target%%=*} address=${target#*=} ;; esac
    if ! [[ "$address" =~ ^[A-Za-z0-9._-]+:[0-9]+$ ]]; then
      say "bad target '$target': expected HOST:PORT or SERVICE=HOST:PORT"
      exit 2
    fi
    if [ -n "$service" ] && ! [[ "$service" =~ ^[A-Za-z0-9._-]+$ ]]; then
      say "bad service name in '$target'"
      exit 2
    fi
    echo "      - targets: ['$address']"
    if [ -n "$service" ]; then echo "        labels: { service: '$service' }"; fi
  done
} >"$config.tmp"

if [ -f "$pidfile" ]; then
  pid=$(tr -dc '0-9' <"$pidfile")
  if [ -n "$pid" ] && running "$pid" && [ "$(cat "$dir/port" 2>/dev/null)" = "$port" ] && ready; then
    if cmp -s "$config.tmp" "$config"; then
      rm -f "$config.tmp"
      say "already running under $dir (PID $pid)"
      print_env
      exit 0
    fi
    say "a server for $dir runs with other targets (PID $pid): stop it first with scripts/prometheus-stop.sh $dir"
    rm -f "$config.tmp"
    exit 1
  fi
  if [ -n "$pid" ] && running "$pid"; then
    say "a server for $dir runs with another port (PID $pid): stop it first with scripts/prometheus-stop.sh $dir"
    rm -f "$config.tmp"
    exit 1
  fi
  rm -f "$pidfile"
fi
mv "$config.tmp" "$config"

if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    say "prometheus is not installed and this is not root: run 'apt-get install -y prometheus' first"
    exit 1
  fi
  say "installing prometheus (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt run may hold the dpkg lock for a while: wait and retry rather than fail.
  for attempt in $(seq 1 30); do
    if apt-get install -y -q --no-install-recommends prometheus >&2 ||
      { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends prometheus >&2; }; then
      break
    fi
    [ "$attempt" = 30 ] && { say "could not install prometheus"; exit 1; }
    say "apt busy or failing, retrying in 5 s ($attempt/30)"
    sleep 5
  done
fi

mkdir -p "$dir/data"
echo "$port" >"$dir/port"
prometheus --config.file="$config" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$port" --storage.tsdb.retention.time=1d \
  </dev/null >"$log" 2>&1 &
pid=$!
echo "$pid" >"$pidfile"

deadline=$(($(date +%s) + timeout_s))
until ready; do
  if ! alive "$pid"; then
    say "prometheus (PID $pid) exited; the end of $log:"
    tail -n 20 "$log" >&2 || true
    rm -f "$pidfile"
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    say "prometheus not ready on 127.0.0.1:$port after ${timeout_s}s; the end of $log:"
    tail -n 20 "$log" >&2 || true
    kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    exit 1
  fi
  sleep 0.1
done
if ! running "$pid"; then
  say "something answers on 127.0.0.1:$port, but not the prometheus started here (PID $pid); the end of $log:"
  tail -n 20 "$log" >&2 || true
  kill "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  exit 1
fi
say "prometheus $(prometheus --version 2>&1 | sed -n '1s/^prometheus, version \([^ ]*\).*/\1/p') ready on 127.0.0.1:$port (PID $pid, $# targets every $interval, data $dir/data)"
print_env
