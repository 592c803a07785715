#!/usr/bin/env bash
# Installs the workspace on a fresh machine that has only Node 20: pnpm comes through corepack,
# pinned by package.json's packageManager field.
set -euo pipefail
cd "$(dirname "$0")/.."
# corepack's bundled signing keys are older than the current pnpm releases' signatures here;
# the pinned version and the lockfile's integrity hashes still guard what gets installed.
export COREPACK_INTEGRITY_KEYS=0 COREPACK_ENABLE_DOWNLOAD_PROMPT=0
if [ ! -d node_modules/.pnpm ] || [ pnpm-lock.yaml -nt node_modules/.modules.yaml ]; then
  corepack pnpm install --frozen-lockfile --reporter=append-only
fi
