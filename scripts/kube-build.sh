#!/usr/bin/env bash
# Builds, once, the Kubernetes control plane the tests run against, and caches it outside the
# work tree keyed by version: kube-apiserver, kube-controller-manager and kube-scheduler from
# the k8s.io/kubernetes Go module, etcd from the go.etcd.io/etcd/server/v3 version that release
# pins, and kwok (sigs.k8s.io/kwok), which simulates nodes. No binary of these ships in Debian
# or npm here, and the Go module proxy is reachable, so they come from source.
#
# Usage: scripts/kube-build.sh          prints the folder holding the binaries (bin/) on stdout
#
# The cache is ${TRANSFERLAB_CACHE:-$HOME/.cache/transferlab}/kube-<version>-kwok-<version>/;
# a repeat run finds its VERSIONS file (written last) and only prints the path. The first
# build takes tens of minutes on 2 cores (docs/operations.md, "the test control plane"); its
# log is kept in the cache folder as build.log. KUBE_BUILD_JOBS (default 2) bounds the Go
# compiler's parallel packages.
set -euo pipefail
# One brace group, read whole before it runs: editing this file during a long build cannot
# change what the running build does next.
{

KUBE_VERSION=v1.37.2
KWOK_VERSION=v0.8.0
cache_root=${TRANSFERLAB_CACHE:-$HOME/.cache/transferlab}
dest="$cache_root/kube-$KUBE_VERSION-kwok-$KWOK_VERSION"
jobs=${KUBE_BUILD_JOBS:-2}

say() { printf 'kube-build: %s\n' "$*" >&2; }

complete() { [ -f "$dest/VERSIONS" ] && [ -x "$dest/bin/kube-apiserver" ] && [ -x "$dest/bin/kwok" ]; }

# kwok moves nodes and pods through "stages" it reads from a config file; its module ships the
# upstream ones. The fast node and pod stages (a node is Ready at once and keeps its lease; a
# Job's pod runs and then succeeds) are what the scale test wants: concatenated into one file.
kwok_stages() {
  local target=$1 moddir file
  moddir=$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$moddir/kustomize/stage" ] || { say "no kustomize/stage in sigs.k8s.io/kwok@$KWOK_VERSION"; return 1; }
  : >"$target.tmp"
  for file in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [ -f "$moddir/kustomize/stage/$file" ] || { say "kwok $KWOK_VERSION has no stage $file"; return 1; }
    { echo '---'; cat "$moddir/kustomize/stage/$file"; } >>"$target.tmp"
  done
  mv "$target.tmp" "$target"
}

if complete; then
  [ -f "$dest/kwok-stages.yaml" ] || kwok_stages "$dest/kwok-stages.yaml"
  echo "$dest"
  exit 0
fi
if ! command -v go >/dev/null; then
  say "no Go toolchain on PATH: the control plane is built from source (Go >= 1.26 needed)"
  exit 1
fi

mkdir -p "$cache_root"
# One build at a time per version: a second test run waits for the first instead of
# compiling the same thing twice on a 2-core machine.
exec 9>"$dest.lock"
if ! flock -n 9; then
  say "another build of $dest runs: waiting for it"
  flock 9
fi
if complete; then
  echo "$dest"
  exit 0
fi

stage="$dest.tmp.$$"
work=$(mktemp -d "${TMPDIR:-/tmp}/transferlab-kube-build.XXXXXX")
trap 'rm -rf "$work" "$stage"' EXIT
mkdir -p "$stage/bin"
log="$stage/build.log"
started=$(date +%s)

export GOFLAGS="-trimpath -mod=mod"
export CGO_ENABLED=0
ldflags_base="-s -w"

# k8s.io/kubernetes replaces its staging modules (k8s.io/api, client-go, ...) with folders of
# its own repository; a module that requires it must point each at its published v0.X.Y.
say "resolving k8s.io/kubernetes@$KUBE_VERSION (log: $dest/build.log once done, $log meanwhile)"
(cd "$work" && go mod init transferlab.local/kube-build >>"$log" 2>&1)
modfile=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
if [ -z "$modfile" ] || [ ! -f "$modfile" ]; then
  say "could not download k8s.io/kubernetes@$KUBE_VERSION from the Go module proxy"
  exit 1
fi
staging_version="v0.${KUBE_VERSION#v1.}"
{
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 '"$staging_version"'#p' "$modfile"
} >>"$work/go.mod"
if ! grep -q '^replace k8s.io/client-go ' "$work/go.mod"; then
  say "found no staging replace lines in k8s.io/kubernetes@$KUBE_VERSION's go.mod: its layout changed"
  exit 1
fi
etcd_version=$(sed -n 's#^[[:space:]]*go.etcd.io/etcd/server/v3 \(v[^ ]*\).*#\1#p' "$modfile" | head -n 1)
if [ -z "$etcd_version" ]; then
  say "k8s.io/kubernetes@$KUBE_VERSION's go.mod names no go.etcd.io/etcd/server/v3 version"
  exit 1
fi
echo "require go.etcd.io/etcd/server/v3 $etcd_version" >>"$work/go.mod"

# The version stamps kubectl and the components report; without them they call themselves
# v0.0.0-master and version-skew checks misread them.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
vpkg=k8s.io/component-base/version
kube_ldflags="$ldflags_base -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"

say "building kube-apiserver, kube-controller-manager, kube-scheduler $KUBE_VERSION (-p $jobs)"
if ! (cd "$work" && go build -p "$jobs" -ldflags "$kube_ldflags" -o "$stage/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler >>"$log" 2>&1); then
  say "building the Kubernetes components failed; the end of the log:"
  tail -n 30 "$log" >&2
  exit 1
fi
say "building etcd $etcd_version"
if ! (cd "$work" && go build -p "$jobs" -ldflags "$ldflags_base" -o "$stage/bin/etcd" go.etcd.io/etcd/server/v3 >>"$log" 2>&1); then
  say "building etcd failed; the end of the log:"
  tail -n 30 "$log" >&2
  exit 1
fi
say "building kwok $KWOK_VERSION"
# kwok's go.mod pins its own k8s.io/* versions, so it builds as its own main module.
if ! (cd "$work" && GOBIN="$stage/bin" go install -p "$jobs" -ldflags "$ldflags_base" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >>"$log" 2>&1); then
  say "building kwok failed; the end of the log:"
  tail -n 30 "$log" >&2
  exit 1
fi

kwok_stages "$stage/kwok-stages.yaml"

seconds=$(($(date +%s) - started))
{
  echo "kubernetes $KUBE_VERSION"
  echo "etcd $etcd_version"
  echo "kwok $KWOK_VERSION"
  echo "go $(go env GOVERSION)"
  echo "build_seconds $seconds"
} >"$stage/VERSIONS"
rm -rf "$dest"
mv -T "$stage" "$dest"
say "built in ${seconds}s: $(du -sh "$dest" | cut -f1) in $dest"
echo "$dest"
exit 0
}
