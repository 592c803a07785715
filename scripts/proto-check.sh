#!/usr/bin/env bash
# Checks the gRPC contracts: buf lint and format, docs/proto.md names every service and RPC,
# the generated TypeScript is up to date with proto/ (regenerated into a temporary folder and
# compared), and no breaking change (scripts/proto-breaking.sh). Fix stale generated code with
# scripts/proto-generate.sh (pnpm proto:generate).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== proto: buf lint"
node_modules/.bin/buf lint
echo "== proto: buf format"
if ! node_modules/.bin/buf format --diff --exit-code; then
  echo "proto-check: proto/ is not formatted; run: node_modules/.bin/buf format -w" >&2
  exit 1
fi

echo "== proto: every service and RPC in docs/proto.md"
missing=0
for name in $(sed -n -E 's/^ *(service|rpc) +([A-Za-z0-9_]+).*/\2/p' proto/transferlab/v1/*.proto); do
  if ! grep -q -F "\`$name\`" docs/proto.md; then
    echo "proto-check: docs/proto.md does not mention \`$name\`" >&2
    missing=1
  fi
done
[ "$missing" = 0 ] || exit 1

echo "== proto: generated code up to date"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash scripts/proto-generate.sh "$tmp"
if ! diff -r -u packages/proto/src/gen "$tmp/packages/proto/src/gen" >"$tmp/diff"; then
  head -n 200 "$tmp/diff"
  echo "proto-check: packages/proto/src/gen is stale (diff above: - committed, + fresh); run: pnpm proto:generate" >&2
  exit 1
fi

echo "== proto: breaking changes"
bash scripts/proto-breaking.sh
