#!/usr/bin/env bash
# Checks proto/ for breaking changes (buf's FILE rules, set in buf.yaml) against its previous
# version:
#   - with uncommitted changes under proto/: against HEAD;
#   - otherwise: against the parent of the last commit that changed proto/;
#   - TRANSFERLAB_PROTO_AGAINST=<git revision> compares against that revision instead
#     (e.g. the main branch a change will land on).
# Passes, saying so, when there is no earlier version to compare with, and when the last commit
# that changed proto/ says in a `Proto-Breaking: <reason>` line of its message that it breaks on
# purpose (better: add transferlab.v2 beside v1).
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  echo "proto-breaking: $1; no breaking-change check"
  exit 0
}

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then skip "not a git work tree"; fi
if ! git rev-parse --verify --quiet HEAD >/dev/null; then skip "no commit yet"; fi

against=${TRANSFERLAB_PROTO_AGAINST:-}
if [ -z "$against" ]; then
  if [ -n "$(git status --porcelain -- proto)" ]; then
    against=HEAD
  else
    last=$(git log -1 --format=%H -- proto)
    [ -n "$last" ] || skip "proto/ has never been committed"
    if ! against=$(git rev-parse --verify --quiet "$last^"); then
      if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
        skip "the commit before ${last:0:12} is not in this shallow clone"
      fi
      skip "${last:0:12} is the first commit"
    fi
    reason=$(git log -1 --format=%B "$last" | sed -n 's/^Proto-Breaking: *//p' | head -n 1)
    [ -z "$reason" ] || skip "${last:0:12} breaks on purpose: $reason"
  fi
fi
against=$(git rev-parse --verify --quiet "$against^{commit}") || {
  echo "proto-breaking: unknown revision '${TRANSFERLAB_PROTO_AGAINST:-$against}'" >&2
  exit 2
}
if ! git cat-file -e "$against:proto" 2>/dev/null; then
  skip "proto/ does not exist at ${against:0:12} (this is its first version)"
fi

echo "proto-breaking: proto/ against ${against:0:12} ($(git log -1 --format=%s "$against" | cut -c1-60))"
node_modules/.bin/buf breaking --against ".git#ref=${against},subdir=proto"
echo "proto-breaking: no breaking changes"
