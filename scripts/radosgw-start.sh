#!/usr/bin/env bash
# Starts a throwaway Ceph cluster that serves S3 for tests: one monitor, one OSD keeping its
# objects in memory (memstore), and radosgw on 127.0.0.1:PORT. Auth is off inside the cluster
# and pools have one replica. Everything lives under DIR (config, mon store, logs, PID files);
# scripts/radosgw-stop.sh DIR stops exactly the daemons this started.
#
# Usage: scripts/radosgw-start.sh DIR PORT
#
# Installs the Debian packages when they are missing (root only). On success prints, and writes
# to DIR/env, the lines a test runner exports:
#   TRANSFERLAB_S3_ENDPOINT=http://127.0.0.1:PORT
#   TRANSFERLAB_S3_ACCESS_KEY=...  TRANSFERLAB_S3_SECRET_KEY=...
#   TRANSFERLAB_S3_REGION=...      TRANSFERLAB_S3_BUCKET=...
# Progress goes to stderr. When DIR's cluster already runs and answers on PORT it only prints
# those lines again. Exits non-zero with the tail of the failing daemon's log when something
# does not come up within RADOSGW_START_TIMEOUT seconds (default 60).
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/radosgw-common.sh
. "$here/lib/radosgw-common.sh"

mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
port=$2
case "$port" in '' | *[!0-9]*)
  echo "radosgw-start: PORT must be a number, got '$port'" >&2
  exit 2
  ;;
esac
timeout_s=${RADOSGW_START_TIMEOUT:-60}

# One start at a time per folder: a second caller waits, then finds the cluster running.
exec 9>"$dir/lock"
flock 9

print_env() {
  cat >"$dir/env.tmp" <<EOF
TRANSFERLAB_S3_ENDPOINT=http://127.0.0.1:$port
TRANSFERLAB_S3_ACCESS_KEY=$RGW_TEST_ACCESS_KEY
TRANSFERLAB_S3_SECRET_KEY=$RGW_TEST_SECRET_KEY
TRANSFERLAB_S3_REGION=$RGW_TEST_REGION
TRANSFERLAB_S3_BUCKET=$RGW_TEST_BUCKET
EOF
  mv "$dir/env.tmp" "$dir/env"
  cat "$dir/env"
}

# Already running for this folder and port: say so and stop here.
if rgw_alive "$dir" mon && rgw_alive "$dir" osd && rgw_alive "$dir" rgw &&
  [ "$(cat "$dir/port" 2>/dev/null)" = "$port" ] && rgw_http_up "$port"; then
  rgw_log "already running under $dir on port $port"
  print_env
  exit 0
fi
# A partial or stale cluster from an earlier run: its objects were in memory, so start afresh.
rgw_stop_all "$dir"

# ---------------------------------------------------------------------------------------------
# Packages.
need=()
for bin in ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw ceph:ceph-common radosgw-admin:radosgw monmaptool:ceph-common; do
  command -v "${bin%%:*}" >/dev/null 2>&1 || need+=("${bin#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  if [ "$(id -u)" != 0 ]; then
    echo "radosgw-start: missing Ceph packages (${need[*]}); install them as root:" >&2
    echo "  apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd ceph-common" >&2
    exit 1
  fi
  rgw_log "installing ${need[*]} (apt-get)"
  updated=0
  for attempt in $(seq 1 60); do
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      radosgw ceph-mon ceph-osd ceph-common >"$dir/apt.log" 2>&1; then
      break
    fi
    if grep -qiE 'could not get lock|dpkg.*lock|unable to acquire' "$dir/apt.log"; then
      rgw_log "dpkg lock busy, retrying in 5 s ($attempt/60)"
      sleep 5
    elif [ "$updated" = 0 ]; then
      updated=1
      rgw_log "apt-get update"
      DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$dir/apt.log" 2>&1 || true
    else
      echo "radosgw-start: apt-get install failed; last lines of $dir/apt.log:" >&2
      tail -n 20 "$dir/apt.log" >&2
      exit 1
    fi
  done
  command -v radosgw >/dev/null 2>&1 || {
    echo "radosgw-start: radosgw still missing after apt-get install; see $dir/apt.log" >&2
    exit 1
  }
fi

# The start-up deadline counts from here: installing is not starting.
started_at=$(date +%s%N)

# ---------------------------------------------------------------------------------------------
# Fresh state.
rm -rf "$dir/mon" "$dir/osd" "$dir/rgw" "$dir/run" "$dir/log" "$dir/crash" "$dir/pids" \
  "$dir/env" "$dir/port" "$dir/monmap"
mkdir -p "$dir/mon" "$dir/osd/ceph-0" "$dir/rgw" "$dir/run" "$dir/log" "$dir/crash" "$dir/pids"
conf="$dir/ceph.conf"

# The monitor's port: any free one, away from PORT.
mon_port=$(rgw_free_port "$port") || {
  echo "radosgw-start: no free port found for the monitor" >&2
  exit 1
}
if ! rgw_port_free "$port"; then
  echo "radosgw-start: port $port on 127.0.0.1 is already taken" >&2
  exit 1
fi

fsid=$(cat /proc/sys/kernel/random/uuid)
osd_uuid=$(cat /proc/sys/kernel/random/uuid)
cat >"$conf" <<EOF
# Written by scripts/radosgw-start.sh: a throwaway single-node test cluster.
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$mon_port]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = $dir/keyring
run dir = $dir/run
crash dir = $dir/crash
log file = $dir/log/\$cluster-\$name.log
mon cluster log file = $dir/log/\$cluster.log
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon data avail warn = 1
mon data avail crit = 0
mon allow pool delete = true
# A single monitor needs no batching of proposals: commit map changes at once (the default
# waits ~1 s per change, and radosgw makes a dozen at start and at its first bucket).
paxos propose interval = 0.01
paxos min wait = 0.001

[mon]
mon data = $dir/mon/\$cluster-\$id

[osd]
osd data = $dir/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 2147483648

[client]
# Without this radosgw and radosgw-admin hang at start (get_initial_auth_request returned -13).
ms mon client mode = crc secure

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$port
rgw data = $dir/rgw
rgw dns name = 127.0.0.1
EOF
echo "$port" >"$dir/port"

ok=0
cleanup() {
  if [ "$ok" != 1 ]; then rgw_stop_all "$dir"; fi
}
trap cleanup EXIT

fail() { # fail MESSAGE LOG...
  local message=$1
  shift
  echo "radosgw-start: $message" >&2
  local log
  for log in "$@"; do
    if [ -s "$log" ]; then
      echo "--- last lines of $log" >&2
      case "$log" in
        # Ceph's own lines start with a timestamp; skip RocksDB's statistics tables between them.
        *.log) grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' "$log" | grep -v ' rocksdb: ' | tail -n 25 >&2 || true ;;
        *) tail -n 25 "$log" >&2 ;;
      esac
    fi
  done
  exit 1
}

elapsed() { echo $((($(date +%s%N) - started_at) / 1000000)); }
deadline_passed() { [ "$(elapsed)" -gt $((timeout_s * 1000)) ]; }

# launch NAME COMMAND...: starts a daemon in the foreground mode of Ceph, as a background job of
# its own session (so a test runner's signals to its process group do not reach it), and records
# its PID.
launch() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$dir/log/$name.out" 2>&1 9>&- &
  echo $! >"$dir/pids/$name.pid"
}

ceph_cli() { timeout 20 ceph -c "$conf" --connect-timeout 10 "$@"; }

# ---------------------------------------------------------------------------------------------
# Monitor.
monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >"$dir/log/mkfs.out" 2>&1 ||
  fail "monmaptool failed" "$dir/log/mkfs.out"
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >>"$dir/log/mkfs.out" 2>&1 ||
  fail "ceph-mon --mkfs failed" "$dir/log/mkfs.out" "$dir/log/ceph-mon.a.log"
launch mon ceph-mon -f -c "$conf" -i a
# Wait for its port first: a ceph command sent before the monitor listens stalls for seconds.
while rgw_port_free "$mon_port"; do
  rgw_alive "$dir" mon || fail "the monitor exited" "$dir/log/mon.out" "$dir/log/ceph-mon.a.log"
  deadline_passed && fail "the monitor did not listen within ${timeout_s} s" "$dir/log/ceph-mon.a.log"
  sleep 0.05
done
rgw_log "monitor listens on 127.0.0.1:$mon_port after $(elapsed) ms"

# OSD: registered with the monitor, then formatted and started.
osd_id=''
until osd_id=$(ceph_cli osd new "$osd_uuid" 2>>"$dir/log/mkfs.out"); do
  rgw_alive "$dir" mon || fail "the monitor exited" "$dir/log/mon.out" "$dir/log/ceph-mon.a.log"
  deadline_passed && fail "the monitor did not answer within ${timeout_s} s" "$dir/log/ceph-mon.a.log" "$dir/log/mkfs.out"
  sleep 0.2
done
[ "$osd_id" = 0 ] || fail "expected OSD id 0, the monitor gave '$osd_id'" "$dir/log/mkfs.out"
ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/mkfs.out" 2>&1 ||
  fail "ceph-osd --mkfs failed" "$dir/log/mkfs.out" "$dir/log/ceph-osd.0.log"
launch osd ceph-osd -f -c "$conf" -i 0
# radosgw creates its pools at once; a pool made before the OSD has booted stays inactive until a
# later retry (~5 s), so wait for the boot, which the monitor's cluster log records.
until grep -qE 'osd\.0 .*boot' "$dir/log/ceph.log" 2>/dev/null; do
  rgw_alive "$dir" osd || fail "the OSD exited" "$dir/log/osd.out" "$dir/log/ceph-osd.0.log"
  deadline_passed && fail "the OSD did not boot within ${timeout_s} s" "$dir/log/ceph-osd.0.log" "$dir/log/ceph.log"
  sleep 0.05
done
rgw_log "OSD up after $(elapsed) ms"

# radosgw: creates its pools as soon as the OSD is up.
launch rgw radosgw -f -c "$conf" -n client.rgw.a
until rgw_http_up "$port"; do
  rgw_alive "$dir" osd || fail "the OSD exited" "$dir/log/osd.out" "$dir/log/ceph-osd.0.log"
  rgw_alive "$dir" rgw || fail "radosgw exited" "$dir/log/rgw.out" "$dir/log/ceph-client.rgw.a.log"
  deadline_passed && fail "radosgw did not answer on 127.0.0.1:$port within ${timeout_s} s" \
    "$dir/log/ceph-client.rgw.a.log" "$dir/log/ceph-osd.0.log"
  sleep 0.2
done
rgw_log "radosgw answers on 127.0.0.1:$port after $(elapsed) ms"

# The S3 user with the fixed test keys.
timeout 30 radosgw-admin -c "$conf" user create --uid="$RGW_TEST_UID" --display-name="transferlab tests" \
  --access-key="$RGW_TEST_ACCESS_KEY" --secret-key="$RGW_TEST_SECRET_KEY" >"$dir/log/user.out" 2>&1 ||
  fail "radosgw-admin user create failed" "$dir/log/user.out"

ok=1
rgw_log "ready after $(elapsed) ms (stop with scripts/radosgw-stop.sh $dir)"
print_env
