#!/usr/bin/env bash
# Starts a Kubernetes control plane for tests on 127.0.0.1: etcd, kube-apiserver (real
# authentication with bearer tokens and service-account tokens, Node,RBAC authorization),
# kube-controller-manager (the Job controller, the garbage collector, the service-account
# controllers, ...), kube-scheduler, and kwok, which plays the kubelet of the nodes that carry
# its annotation (kwok.x-k8s.io/node=fake). There is no real kubelet: other nodes are played by
# the simulated kubelet of the tests (test/support/simulated-kubelet.ts).
#
# Usage: scripts/kube-start.sh DIR
#
# Builds the binaries first when they are not cached (scripts/kube-build.sh: long the first
# time). Keeps etcd's data, the keys, certificates, kubeconfigs, logs and PIDs under DIR;
# scripts/kube-stop.sh DIR stops exactly what this started. Picks free loopback ports itself.
# On success prints, and writes to DIR/env, the lines a test runner exports:
#   TRANSFERLAB_KUBECONFIG=DIR/admin.kubeconfig     cluster-admin (system:masters), for set-up
#   TRANSFERLAB_KUBE_ETCD_URL=http://127.0.0.1:PORT etcd's client URL (tests force compactions)
#   TRANSFERLAB_KUBE_AUDIT_LOG=DIR/audit.log        every request made as a ServiceAccount (JSON
#                                                   lines): tests count the controller's API calls
# Exits non-zero with the tail of the failing component's log when something is not ready
# within KUBE_START_TIMEOUT seconds (default 120).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
dir=$(cd "$1" && pwd -P)
timeout_s=${KUBE_START_TIMEOUT:-120}
say() { printf 'kube-start: %s\n' "$*" >&2; }

# alive PID: the process exists and is not a zombie.
alive() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

if [ -f "$dir/env" ] && [ -f "$dir/kube-apiserver.pid" ] && alive "$(tr -dc '0-9' <"$dir/kube-apiserver.pid")"; then
  say "a control plane already runs under $dir: stop it first with scripts/kube-stop.sh $dir"
  exit 1
fi

kube=$(bash "$here/kube-build.sh")
bin="$kube/bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
etcd_port=$(free_port)
etcd_peer_port=$(free_port)
api_port=$(free_port)
kcm_port=$(free_port)
sched_port=$(free_port)
kwok_port=$(free_port)

# ---- keys and certificates -------------------------------------------------------------
pki="$dir/pki"
mkdir -p "$pki"
chmod 700 "$pki"
(
  cd "$pki"
  # A CA of our own signs the API server's serving certificate; clients trust the CA.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=transferlab-test-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.96.0.1\n' >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  # The key service-account tokens are signed with (the apiserver) and checked with (both).
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)

# Static bearer tokens: cluster-admin for the tests' set-up, and the identities the bootstrap
# RBAC policy already grants to the scheduler and the controller manager.
token() { openssl rand -hex 24; }
admin_token=$(token)
kcm_token=$(token)
sched_token=$(token)
kwok_token=$(token)
umask 077
cat >"$pki/tokens.csv" <<EOF
$admin_token,transferlab-test-admin,transferlab-test-admin,"system:masters"
$kcm_token,system:kube-controller-manager,system:kube-controller-manager
$sched_token,system:kube-scheduler,system:kube-scheduler
$kwok_token,transferlab-kwok,transferlab-kwok,"system:masters"
EOF
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: transferlab-test
    cluster:
      server: https://127.0.0.1:$api_port
      certificate-authority: $pki/ca.crt
users:
  - name: $2
    user:
      token: $3
contexts:
  - name: transferlab-test
    context: { cluster: transferlab-test, user: $2 }
current-context: transferlab-test
EOF
}
kubeconfig "$dir/admin.kubeconfig" admin "$admin_token"
kubeconfig "$dir/controller-manager.kubeconfig" kube-controller-manager "$kcm_token"
kubeconfig "$dir/scheduler.kubeconfig" kube-scheduler "$sched_token"
kubeconfig "$dir/kwok.kubeconfig" kwok "$kwok_token"
umask 022

# ---- start --------------------------------------------------------------------------------
# start NAME ARGS...: runs one component in the background, logging to DIR/NAME.log.
start() {
  local name=$1
  shift
  "$@" </dev/null >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# fail NAME WHY: the component's log tail, then stop what already runs.
fail() {
  say "$2; the end of $dir/$1.log:"
  tail -n 25 "$dir/$1.log" >&2 || true
  bash "$here/kube-stop.sh" "$dir" >/dev/null 2>&1 || true
  exit 1
}

# wait_for NAME CHECK...: polls CHECK until it passes, the component dies or time runs out.
wait_for() {
  local name=$1 pid deadline
  shift
  pid=$(cat "$dir/$name.pid")
  deadline=$(($(date +%s) + timeout_s))
  until "$@" >/dev/null 2>&1; do
    alive "$pid" || fail "$name" "$name (PID $pid) exited"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$name" "$name not ready after ${timeout_s}s"
    sleep 0.2
  done
}

api() { curl -sf --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$api_port$1"; }

# Audit only what ServiceAccounts do (the controller under test), one line per request.
cat >"$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
EOF

mkdir -p "$dir/etcd"
# --unsafe-no-fsync: a test cluster's data is thrown away; fsync per write is what makes etcd
# slow on a shared disk.
start etcd "$bin/etcd" --name transferlab-test --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "transferlab-test=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync --log-level warn
wait_for etcd curl -sf "http://127.0.0.1:$etcd_port/health"

# --watch-cache-sizes=jobs.batch#0: Job watches are served from etcd, not the apiserver's watch
# cache, so a test can make a real "410 Gone" by compacting etcd (test/kubernetes-executor.test.ts).
# It also sends every Job list to etcd; KUBE_JOBS_WATCH_CACHE=1 keeps the cache, as a production
# API server has it (scripts/kube-scale.ts measures both).
jobs_cache=('--watch-cache-sizes' 'jobs.batch#0')
[ "${KUBE_JOBS_WATCH_CACHE:-0}" = 1 ] && jobs_cache=()
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --endpoint-reconciler-type none \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
  --token-auth-file "$pki/tokens.csv" --anonymous-auth=false \
  --authorization-mode Node,RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  "${jobs_cache[@]}" \
  --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/audit.log" --audit-log-format json \
  --profiling=false --cert-dir "$dir/pki/apiserver-generated"
wait_for kube-apiserver api /readyz

common=(--bind-address 127.0.0.1 --leader-elect=false --profiling=false --kube-api-qps 200 --kube-api-burst 400)
start kube-controller-manager "$bin/kube-controller-manager" "${common[@]}" \
  --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --secure-port "$kcm_port" --cert-dir "$dir/pki/kcm-generated" \
  --use-service-account-credentials \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --concurrent-job-syncs 20
start kube-scheduler "$bin/kube-scheduler" "${common[@]}" \
  --kubeconfig "$dir/scheduler.kubeconfig" \
  --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
  --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
  --secure-port "$sched_port" --cert-dir "$dir/pki/scheduler-generated"
health() { curl -skf "https://127.0.0.1:$1/healthz"; }
wait_for kube-controller-manager health "$kcm_port"
wait_for kube-scheduler health "$sched_port"
# The service-account controller has run once the default namespace has its account: pods
# (which name it) can be created from then on.
wait_for kube-controller-manager api /api/v1/namespaces/default/serviceaccounts/default

start kwok "$bin/kwok" --kubeconfig "$dir/kwok.kubeconfig" --config "$kube/kwok-stages.yaml" \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --server-address "127.0.0.1:$kwok_port" --node-lease-duration-seconds 40
wait_for kwok curl -sf "http://127.0.0.1:$kwok_port/healthz"

{
  echo "TRANSFERLAB_KUBECONFIG=$dir/admin.kubeconfig"
  echo "TRANSFERLAB_KUBE_ETCD_URL=http://127.0.0.1:$etcd_port"
  echo "TRANSFERLAB_KUBE_AUDIT_LOG=$dir/audit.log"
} >"$dir/env.tmp"
mv "$dir/env.tmp" "$dir/env"
say "Kubernetes $(sed -n 's/^kubernetes //p' "$kube/VERSIONS") ready on https://127.0.0.1:$api_port (etcd $etcd_port; state under $dir)"
cat "$dir/env"
