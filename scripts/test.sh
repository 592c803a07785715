#!/usr/bin/env bash
# Quick start, part two: install what the tests need, start the real servers they talk to
# (nats-server with JetStream, a Ceph radosgw for S3, a Kubernetes control plane), typecheck,
# lint, run every test, and stop exactly the servers this script started. The tests run on the
# tensorflow backend (tfjs-node, built by scripts/tfjs-node-install.sh); the nn and runner
# tests then run again on wasm, so both backends users train on are exercised.
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
# tfjs-node's binding is compiled here: g++, make and binutils. The TLS tests make their
# certificates with the openssl CLI.
if ! command -v openssl >/dev/null || ! command -v protoc >/dev/null || ! command -v grpc_python_plugin >/dev/null ||
  ! /usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null ||
  ! command -v g++ >/dev/null || ! command -v make >/dev/null || ! command -v readelf >/dev/null; then
  for attempt in 1 2 3 4 5 6; do
    if { apt-get update -qq && apt-get install -y -qq protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf g++ make binutils openssl; } >/dev/null 2>&1; then
      break
    fi
    echo "  apt-get failed (attempt $attempt; another apt may hold the lock): retrying"
    sleep 10
  done
fi

echo "== shared data (CIFAR-10 and the subcharts, never committed)"
# They sit in shared/ beside the project's root. A clone made elsewhere (git clone . /tmp/x) finds
# them beside the checkout it was cloned from. An explicit TRANSFERLAB_CIFAR10_JPG or
# TRANSFERLAB_SUBCHARTS_DIR wins; with neither, the tests that need them fail and say where they looked.
shared=""
for candidate in "$PWD/../shared" "$(git config --get remote.origin.url 2>/dev/null || true)/../shared"; do
  if [ -f "$candidate/data/cifar10-jpg.tar.gz" ]; then shared=$(cd "$candidate" && pwd); break; fi
done
if [ -n "$shared" ]; then
  export TRANSFERLAB_CIFAR10_JPG=${TRANSFERLAB_CIFAR10_JPG:-$shared/data/cifar10-jpg.tar.gz}
  export TRANSFERLAB_SUBCHARTS_DIR=${TRANSFERLAB_SUBCHARTS_DIR:-$shared/charts}
  echo "  $shared"
else
  echo "  not found beside this checkout or its origin: the real-data and chart tests will fail"
fi

echo "== tfjs-node (libtensorflow from the tensorflow-cpu wheel; cached after the first run)"
bash scripts/tfjs-node-install.sh

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
echo "== tests (tensorflow backend)"
status=0
rm -f .vitest-results*.json
TRANSFERLAB_BACKEND=tensorflow node_modules/.bin/vitest run --reporter=default --reporter=json \
  --outputFile.json=.vitest-results.json "$@" || status=$?
if [ $# -eq 0 ]; then
  echo "== nn and runner tests (wasm backend)"
  TRANSFERLAB_BACKEND=wasm node_modules/.bin/vitest run --reporter=default --reporter=json \
    --outputFile.json=.vitest-results-wasm.json packages/nn packages/runner test/local-sweep.test.ts || status=$?
fi
# One plain closing line per backend that any reader of the log understands.
results=(.vitest-results.json:tensorflow)
if [ $# -eq 0 ]; then results+=(.vitest-results-wasm.json:wasm); fi
node -e '
const fs = require("fs");
let failed = 0;
const total = { passed: 0, failed: 0, skipped: 0 };
for (const [file, backend] of process.argv.slice(1).map((arg) => arg.split(":"))) {
  if (!fs.existsSync(file)) {
    console.log(`tests on ${backend}: no results (${file} was not written)`);
    failed = 1;
    continue;
  }
  const r = JSON.parse(fs.readFileSync(file, "utf8"));
  console.log(`tests on ${backend}: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
  total.passed += r.numPassedTests;
  total.failed += r.numFailedTests;
  total.skipped += r.numPendingTests + r.numTodoTests;
  if (r.numTotalTests === 0) failed = 1;
}
console.log(`tests: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped`);
process.exit(failed);
' "${results[@]}" || status=1
exit $status
