# shellcheck shell=bash
# Shared by the *-stop.sh scripts: stops exactly the server a start script recorded, and only
# while that PID is still the server the caller names (its command line holds `marker`), so a
# reused PID is never killed. SIGTERM first, SIGKILL after `timeout_s` seconds. Nothing
# running is no error.
#
# stop_recorded NAME PIDFILE MARKER TIMEOUT_S
stop_recorded() {
  local name=$1 pidfile=$2 marker=$3 timeout_s=$4 pid deadline
  say() { printf '%s-stop: %s\n' "$name" "$*" >&2; }
  running() {
    local state
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$marker"
  }
  if [ ! -f "$pidfile" ]; then
    say "no PID file $pidfile: nothing to stop"
    return 0
  fi
  pid=$(tr -dc '0-9' <"$pidfile")
  if [ -z "$pid" ] || ! running "$pid"; then
    say "$name recorded in $pidfile is not running"
    rm -f "$pidfile"
    return 0
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
  say "stopped $name PID $pid"
}
