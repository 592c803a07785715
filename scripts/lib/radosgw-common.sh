# shellcheck shell=bash
# Shared by scripts/radosgw-start.sh and scripts/radosgw-stop.sh: names, fixed test credentials
# and the PID bookkeeping of a throwaway Ceph cluster (one mon, one memstore OSD, radosgw)
# whose whole state lives under one folder.

# Fixed credentials of the S3 test user. They guard nothing: the cluster listens on 127.0.0.1
# only, lives as long as a test run, and keeps its objects in memory.
RGW_TEST_UID=transferlab-test
RGW_TEST_ACCESS_KEY=TRANSFERLABTESTKEY01
RGW_TEST_SECRET_KEY=transferlab-test-secret-key-not-a-secret
RGW_TEST_REGION=us-east-1
RGW_TEST_BUCKET=transferlab-test

# The daemons, in start order. Stop goes in reverse.
RGW_DAEMONS=(mon osd rgw)

rgw_log() { printf 'radosgw: %s\n' "$*" >&2; }

# rgw_pid DIR NAME: the recorded PID of a daemon, or nothing.
rgw_pid() {
  local file="$1/pids/$2.pid"
  [ -f "$file" ] && tr -dc '0-9' <"$file"
  return 0
}

# rgw_alive DIR NAME: true when the recorded PID is running and is the daemon this folder started
# (its command line names this folder's ceph.conf), so a reused PID is never mistaken for ours.
rgw_alive() {
  local pid
  pid=$(rgw_pid "$1" "$2")
  [ -n "$pid" ] && rgw_running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$1/ceph.conf"
}

# rgw_http_up PORT: true when something on 127.0.0.1:PORT answers an HTTP request.
# Plain bash (/dev/tcp), so polling needs neither curl nor a second runtime.
rgw_http_up() {
  # A subshell: the probe's file descriptor never leaks into the caller.
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    line=''
    IFS= read -r -t 3 line <&3 || true
    [[ "$line" == HTTP/1.* ]]
  ) 2>/dev/null
}

# rgw_port_free PORT: true when no TCP socket on this machine uses PORT as its local port
# (listening, connected or in TIME_WAIT), so a bind to it will succeed. Reads /proc/net/tcp*.
rgw_port_free() {
  local hex
  hex=$(printf ':%04X' "$1")
  ! awk -v port="$hex" 'FNR > 1 && substr($2, length($2) - 4) == port { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# rgw_free_port AVOID: prints a free port below the kernel's ephemeral range (so no outgoing
# connection takes it between the check and the bind), other than AVOID.
rgw_free_port() {
  local low candidate _
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 12000 ] 2>/dev/null || low=32768
  for _ in $(seq 1 100); do
    candidate=$((10000 + RANDOM % (low - 10000)))
    if [ "$candidate" != "$1" ] && rgw_port_free "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# rgw_running PID: true while the process exists and is not a zombie.
rgw_running() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# rgw_stop_all DIR: stops every recorded daemon that is still ours, one at a time in reverse
# start order (radosgw first: with the monitor gone it would hang in its shutdown), TERM first
# and KILL after ~5 s. Removes the PID files.
rgw_stop_all() {
  local dir="$1" name pid i waited
  for ((i = ${#RGW_DAEMONS[@]} - 1; i >= 0; i--)); do
    name=${RGW_DAEMONS[$i]}
    rgw_alive "$dir" "$name" || continue
    pid=$(rgw_pid "$dir" "$name")
    kill -TERM "$pid" 2>/dev/null || true
    waited=0
    while rgw_running "$pid" && [ "$waited" -lt 50 ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if rgw_running "$pid"; then
      rgw_log "$name (PID $pid) did not exit on TERM within 5 s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$dir"/pids/*.pid
}
