#!/usr/bin/env bash
# Quick start, part two: install what the tests need, then typecheck, lint and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
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
