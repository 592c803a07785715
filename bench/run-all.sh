#!/usr/bin/env bash
# Every benchmark in one sitting, one after another, each log in OUT: the figures of
# docs/performance.md's one table come from one run of this. Run it on a quiet machine (nothing
# else busy: the ratios hold up under load, the wall-clock figures do not).
#
#   bash bench/run-all.sh OUT [--cifar-seconds S]
#
# --cifar-seconds S: the measured wall time of `transferlab run examples/cifar10-cpu.yaml`, for
# the forecast check (that run takes hours, so it is not repeated here). About 15 minutes in all,
# the demo run of the forecast check included.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  echo "usage: $0 OUT [--cifar-seconds S]" >&2
  exit 2
fi
out=$1
shift
cifar=()
if [ "${1:-}" = --cifar-seconds ]; then
  [ -n "${2:-}" ] || { echo "run-all: --cifar-seconds needs a number of seconds" >&2; exit 2; }
  cifar=(--cifar-seconds "$2")
fi
mkdir -p "$out"
tsx=node_modules/.bin/tsx
status=0

# step NAME COMMAND...: runs one benchmark into OUT/NAME.log and records its exit code.
step() {
  local name=$1
  shift
  printf 'run-all: %s (%s)\n' "$name" "$(date -u +%T)" >&2
  { echo "\$ $*"; uptime; } >"$out/$name.log"
  if "$@" >>"$out/$name.log" 2>&1; then
    echo "rc=0" >>"$out/$name.log"
  else
    local rc=$?
    echo "rc=$rc" >>"$out/$name.log"
    printf 'run-all: %s exited %s; see %s\n' "$name" "$rc" "$out/$name.log" >&2
    status=1
  fi
}

bash scripts/bench-peer-setup.sh >"$out/peer-setup.log" 2>&1
step train-vs-pytorch "$tsx" bench/train-vs-pytorch.ts --steps 40
step frozen-prefix env TRANSFERLAB_BACKEND=tensorflow "$tsx" bench/frozen-prefix.ts --epochs 6
step overhead "$tsx" bench/overhead.ts
step controller-scale "$tsx" bench/controller-scale.ts
step controller-scale-200 "$tsx" bench/controller-scale.ts --concurrency 200 --train-ms 50
step forecast-vs-measured env TRANSFERLAB_BACKEND=tensorflow "$tsx" bench/forecast-vs-measured.ts \
  --recalibrate --run-demo "${cifar[@]}"
printf 'run-all: done; logs in %s\n' "$out" >&2
exit "$status"
