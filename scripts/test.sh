#!/usr/bin/env bash
# Quick start, part two: install what the tests need, start the real servers they talk to
# (nats-server with JetStream, a Ceph radosgw for S3, a Kubernetes control plane), typecheck,
# lint, run every test, and stop exactly the servers this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/transferlab-test.XXXXXX")
stop_servers() {
  bash scripts/nats-stop.sh "$run_dir/nats" >/dev/null 2>&1 || true
  bash scripts/radosgw-stop.sh "$run_dir/rgw" >/dev/null 2>&1 || true
  bash scripts/kube-stop.sh "$run_dir/kube" >/dev/null 2>&1 || true
  rm -rf "$run_dir"
}
trap stop_servers EXIT

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

echo "== system packages"
# The Python gRPC client test needs Debian's protoc, its gRPC plugin and python3-grpcio.
if ! command -v protoc >/dev/null || ! command -v grpc_python_plugin >/dev/null ||
  ! /usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null; then
  for attempt in 1 2 3 4 5 6; do
    if { apt-get update -qq && apt-get install -y -qq protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf; } >/dev/null 2>&1; then
      break
    fi
    echo "  apt-get failed (attempt $attempt; another apt may hold the lock): retrying"
    sleep 10
  done
fi

echo "== servers"
nats_env=$(bash scripts/nats-start.sh "$run_dir/nats" "$(free_port)" "$(free_port)")
rgw_env=$(bash scripts/radosgw-start.sh "$run_dir/rgw" "$(free_port)")
# The Kubernetes control plane is built from source once per version and cached outside the
# work tree (scripts/kube-build.sh): the first run on a machine spends tens of minutes here.
if ! kube_cache=$(bash scripts/kube-build.sh); then
  echo "test.sh: building the Kubernetes control plane failed (see the lines above)" >&2
  exit 1
fi
echo "  Kubernetes control plane binaries: $kube_cache"
kube_env=$(bash scripts/kube-start.sh "$run_dir/kube")
while IFS= read -r line; do
  case "$line" in TRANSFERLAB_*=*) export "${line?}"; echo "  ${line%%=*} set" ;; esac
done <<<"$nats_env
$rgw_env
$kube_env"

echo "== typecheck"; node_modules/.bin/tsc -p tsconfig.json --noEmit
echo "== lint"; node_modules/.bin/eslint --max-warnings=0 .
echo "== format"; node_modules/.bin/prettier --check --log-level=warn .
echo "== contracts"; bash scripts/proto-check.sh
echo "== tests"
status=0
node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile.json=.vitest-results.json "$@" || status=$?
# One plain closing line that any reader of the log understands.
node -e '
const r = JSON.parse(require("fs").readFileSync(".vitest-results.json", "utf8"));
console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
if (r.numTotalTests === 0) process.exit(1);
' || status=1
exit $status
