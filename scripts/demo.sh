#!/usr/bin/env bash
# Quick start, part one: install, then run the built-in demo sweep (MNIST, all arms, n = 1..7).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec node --import tsx services/cli/src/main.ts demo "$@"
