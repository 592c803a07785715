#!/usr/bin/env bash
# Stops the control plane that scripts/kube-start.sh DIR started: exactly the PIDs recorded in
# DIR, each only while it is still the component serving DIR (its command line names DIR's
# files), in reverse order of starting. SIGTERM first, SIGKILL after KUBE_STOP_TIMEOUT seconds
# (default 10). Leaves DIR in place. Nothing running is no error.
#
# Usage: scripts/kube-stop.sh DIR
set -euo pipefail
# shellcheck source=lib/stop-recorded.sh
source "$(dirname "$0")/lib/stop-recorded.sh"

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  echo "kube-stop: no folder $1: nothing to stop" >&2
  exit 0
fi
dir=$(cd "$1" && pwd -P)
timeout_s=${KUBE_STOP_TIMEOUT:-10}
stop_recorded kwok "$dir/kwok.pid" "--kubeconfig $dir/kwok.kubeconfig " "$timeout_s"
stop_recorded kube-scheduler "$dir/kube-scheduler.pid" "--kubeconfig $dir/scheduler.kubeconfig " "$timeout_s"
stop_recorded kube-controller-manager "$dir/kube-controller-manager.pid" "--kubeconfig $dir/controller-manager.kubeconfig " "$timeout_s"
stop_recorded kube-apiserver "$dir/kube-apiserver.pid" "--token-auth-file $dir/pki/tokens.csv " "$timeout_s"
stop_recorded etcd "$dir/etcd.pid" "--data-dir $dir/etcd " "$timeout_s"
rm -f "$dir/env"
