#!/usr/bin/env bash
# Builds @tensorflow/tfjs-node's native binding against the TensorFlow shared libraries of a
# pinned tensorflow-cpu wheel from PyPI, and makes `@tensorflow/tfjs-node` loadable by the
# workspace. tfjs-node's own install script downloads libtensorflow from Google's storage, which
# these machines (and air-gapped clusters with only a PyPI mirror) cannot reach.
# docs/decisions/0007-libtensorflow-from-a-pypi-wheel.md says why this works and what was tried.
#
#   bash scripts/tfjs-node-install.sh
#
# What it does, each step skipped when its result is already cached:
#   1. pip download of the wheel (any index pip is configured for, e.g. PIP_INDEX_URL), verified
#      against the sha256 pinned below; TRANSFERLAB_TF_WHEEL=FILE uses a wheel already on disk.
#   2. Unpacks only the C API headers, libtensorflow_framework.so.2 and
#      _pywrap_tensorflow_internal.so (which carries the C API). Python is never imported.
#   3. Compiles libtfjs_pystubs.so: the Python symbols _pywrap_tensorflow_internal.so refers to,
#      generated from the wheel itself, each aborting if ever called. The C API never calls them;
#      they exist only so the dynamic linker can load the library without libpython.
#   4. node-gyp builds tfjs-node's binding from the sources in its npm package against those.
#   5. Symlinks `lib` (the binding) and `deps` (the libraries) of every tfjs-node 4.22 package
#      pnpm installed to the cache, where the package's own loader (node-pre-gyp) looks.
# The build lives in ${TRANSFERLAB_CACHE:-~/.cache/transferlab}/tfjs-node-<tfjs>-tf<tf>-<sha256
# prefix>/ (about 520 MB), outside the work tree, so a new clone or a `pnpm install` only needs
# step 5. Needs python3 with pip, a C/C++ compiler, make, binutils, and Node's headers.
set -euo pipefail
cd "$(dirname "$0")/.."

TFJS_VERSION=4.22.0
TF_VERSION=2.9.3 # tfjs-node 4.22 was built against libtensorflow 2.9.1; 2.9.3 is its patch release
WHEEL=tensorflow_cpu-2.9.3-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
WHEEL_PYTHON=3.10 # only picks the file: its C API does not depend on the Python version
WHEEL_SHA256=9037ab0580b0dfcc054713490dd6c84a6e66ea32216488faadcc2e8f7a0abaa8

CACHE_ROOT=${TRANSFERLAB_CACHE:-$HOME/.cache/transferlab}
BUILD=$CACHE_ROOT/tfjs-node-$TFJS_VERSION-tf$TF_VERSION-${WHEEL_SHA256:0:12}

log() { printf 'tfjs-node-install: %s\n' "$*" >&2; }
fail() {
  log "$*"
  exit 1
}

[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] ||
  fail "the pinned wheel is for Linux x86_64; this is $(uname -s)-$(uname -m)"

# node-pre-gyp, tfjs-node's loader, looks for lib/napi-v<N>/tfjs_binding.node with N the highest
# of the package's napi_versions that this Node supports.
packages=()
while IFS= read -r dir; do packages+=("$dir"); done < <(
  find node_modules/.pnpm -maxdepth 1 -name "@tensorflow+tfjs-node@$TFJS_VERSION*" -type d |
    sed 's|$|/node_modules/@tensorflow/tfjs-node|' | sort
)
[ "${#packages[@]}" -gt 0 ] ||
  fail "no @tensorflow/tfjs-node@$TFJS_VERSION under node_modules/.pnpm: run bash scripts/bootstrap.sh first"
napi=$(node -e '
  const supported = Number(process.versions.napi);
  const wanted = require(process.argv[1]).binary.napi_versions.filter((v) => v <= supported);
  if (wanted.length === 0) process.exit(1);
  console.log(Math.max(...wanted));
' "$PWD/${packages[0]}/package.json") || fail "this Node's N-API ($(node -p process.versions.napi)) is older than tfjs-node supports"
binding=$BUILD/lib/napi-v$napi/tfjs_binding.node

build() {
  local work=$1 wheel
  command -v c++ >/dev/null && command -v make >/dev/null || fail 'needs a C++ compiler and make (apt-get install -y g++ make)'
  command -v nm >/dev/null && command -v readelf >/dev/null || fail 'needs nm and readelf (apt-get install -y binutils)'
  local node_dir
  node_dir=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  [ -f "$node_dir/include/node/node_api.h" ] ||
    fail "Node's headers are not in $node_dir/include/node (node-gyp would download them, which fails offline)"
  local node_gyp
  node_gyp=$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js
  [ -f "$node_gyp" ] || fail "npm's bundled node-gyp is not at $node_gyp"

  # 1. The wheel, checked against the pinned sha256 (pip checks it too, with --require-hashes).
  if [ -n "${TRANSFERLAB_TF_WHEEL:-}" ]; then
    wheel=$TRANSFERLAB_TF_WHEEL
    [ -f "$wheel" ] || fail "TRANSFERLAB_TF_WHEEL=$wheel is not a file"
  else
    local python=''
    for candidate in python3 /usr/bin/python3; do
      if "$candidate" -m pip --version >/dev/null 2>&1; then
        python=$candidate
        break
      fi
    done
    [ -n "$python" ] || fail 'needs a python3 with pip to download the wheel (or set TRANSFERLAB_TF_WHEEL)'
    printf 'tensorflow-cpu==%s --hash=sha256:%s\n' "$TF_VERSION" "$WHEEL_SHA256" >"$work/requirements.txt"
    log "downloading $WHEEL (about 210 MB)"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
      --python-version "$WHEEL_PYTHON" --platform manylinux2014_x86_64 \
      -r "$work/requirements.txt" -d "$work/wheel" >&2
    wheel=$work/wheel/$WHEEL
    [ -f "$wheel" ] || fail "pip download did not produce $WHEEL"
  fi
  local actual
  actual=$(sha256sum "$wheel" | cut -d' ' -f1)
  [ "$actual" = "$WHEEL_SHA256" ] || fail "$wheel has sha256 $actual, not the pinned $WHEEL_SHA256"

  # 2. Only what the binding needs: a few hundred KB of headers and the two libraries.
  log 'unpacking the C API headers and the TensorFlow libraries'
  python3 - "$wheel" "$work/out" <<'PY'
import os, sys, zipfile
wanted_prefixes = ('tensorflow/include/tensorflow/c/', 'tensorflow/include/tensorflow/core/platform/')
wanted_files = {
    'tensorflow/libtensorflow_framework.so.2': 'deps/lib/libtensorflow_framework.so.2',
    'tensorflow/python/_pywrap_tensorflow_internal.so': 'deps/lib/_pywrap_tensorflow_internal.so',
}
out = sys.argv[2]
found = set()
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for info in wheel.infolist():
        name = info.filename
        if name in wanted_files:
            target = os.path.join(out, wanted_files[name])
            found.add(name)
        elif name.startswith(wanted_prefixes) and not name.endswith('/'):
            target = os.path.join(out, 'deps/include', name[len('tensorflow/include/'):])
        else:
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with wheel.open(info) as source, open(target, 'wb') as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
        os.chmod(target, 0o755 if name in wanted_files else 0o644)
missing = set(wanted_files) - found
if missing:
    sys.exit(f'the wheel lacks {", ".join(sorted(missing))}')
PY
  local lib=$work/out/deps/lib internal=$work/out/deps/lib/_pywrap_tensorflow_internal.so
  for header in c/c_api.h c/eager/c_api.h core/platform/ctstring_internal.h; do
    [ -f "$work/out/deps/include/tensorflow/$header" ] || fail "the wheel has no tensorflow/include/tensorflow/$header"
  done

  # 3. The Python symbols, from the library's own undefined symbols. Data symbols (reached
  # through GLOB_DAT relocations, resolved at load time) become zeroed objects; functions
  # (JUMP_SLOT, resolved on first call) abort with their name.
  readelf --wide --relocs "$internal" | awk '$3 ~ /GLOB_DAT/ {print $5}' | sed 's/@.*//' |
    grep -E '^_?Py' | sort -u >"$work/python-data.txt" || true
  nm --dynamic --undefined-only "$internal" | awk '{print $2}' | sed 's/@.*//' |
    grep -E '^_?Py' | sort -u >"$work/python-all.txt" || true
  [ -s "$work/python-all.txt" ] || log 'note: the library refers to no Python symbols; the stubs are empty'
  {
    echo '// Generated by scripts/tfjs-node-install.sh from the undefined symbols of the wheel'"'"'s'
    echo '// _pywrap_tensorflow_internal.so. None is ever used by the C API; see that script.'
    echo '#include <stdio.h>'
    echo '#include <stdlib.h>'
    echo 'static void called(const char *name) {'
    echo '  fprintf(stderr, "libtfjs_pystubs: Python symbol %s called; TensorFlow ran Python code\n", name);'
    echo '  abort();'
    echo '}'
    comm -23 "$work/python-all.txt" "$work/python-data.txt" | while IFS= read -r name; do
      printf 'void %s(void) { called("%s"); }\n' "$name" "$name"
    done
    while IFS= read -r name; do
      printf '__attribute__((aligned(64))) char %s[512];\n' "$name"
    done <"$work/python-data.txt"
  } >"$work/pystubs.c"
  cc -shared -fPIC -O2 -Wl,-soname,libtfjs_pystubs.so -o "$lib/libtfjs_pystubs.so" "$work/pystubs.c"

  # binding.gyp links -ltensorflow -ltensorflow_framework from deps/lib. libtensorflow.so is a
  # linker script naming the library that holds the C API and the stubs, so the binding
  # records both as needed and the stubs are loaded before TensorFlow's Python references bind.
  echo 'INPUT(-l:_pywrap_tensorflow_internal.so -l:libtfjs_pystubs.so)' >"$lib/libtensorflow.so"
  ln -s libtensorflow_framework.so.2 "$lib/libtensorflow_framework.so"

  # 4. The binding, from the npm package's own sources and binding.gyp.
  log "building tfjs_binding.node (N-API $napi) with node-gyp"
  mkdir -p "$work/src"
  cp -R "${packages[0]}/binding" "${packages[0]}/binding.gyp" "${packages[0]}/package.json" "$work/src/"
  ln -s "$work/out/deps" "$work/src/deps"
  (cd "$work/src" && node "$node_gyp" rebuild --nodedir="$node_dir" --module_name=tfjs_binding \
    --module_path="$work/out/lib/napi-v$napi" --napi_build_version="$napi" --jobs=2 >"$work/node-gyp.log" 2>&1) || {
    cp "$work/node-gyp.log" "$CACHE_ROOT/tfjs-node-build-failed.log"
    fail "node-gyp failed; its log is in $CACHE_ROOT/tfjs-node-build-failed.log"
  }
  readelf --dynamic "$work/out/lib/napi-v$napi/tfjs_binding.node" | grep -q 'libtfjs_pystubs.so' ||
    fail 'the binding does not record libtfjs_pystubs.so as needed (did the linker drop it with --as-needed?)'
  # The RUNPATH ($ORIGIN/../../deps/lib) makes the binding find the libraries from lib/napi-vN.
  LD_BIND_NOW=1 node -e 'require(process.argv[1])' "$work/out/lib/napi-v$napi/tfjs_binding.node" 2>"$work/load.log" ||
    fail "the built binding does not load with every symbol bound: $(grep -m 1 -i -e error -e undefined "$work/load.log")"
  cat >"$work/out/build-info.json" <<EOF
{
  "tfjsNode": "$TFJS_VERSION",
  "tensorflowWheel": "$WHEEL",
  "wheelSha256": "$WHEEL_SHA256",
  "napi": $napi,
  "pythonStubs": { "functions": $(comm -23 "$work/python-all.txt" "$work/python-data.txt" | wc -l), "data": $(wc -l <"$work/python-data.txt") },
  "node": "$(node --version)"
}
EOF
}

if [ -f "$binding" ]; then
  log "cached build in $BUILD"
else
  mkdir -p "$CACHE_ROOT"
  work=$(mktemp -d "$CACHE_ROOT/.tfjs-node-build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  build "$work"
  if [ -d "$BUILD" ]; then
    # Another N-API version is cached: add this one beside it.
    mkdir -p "$BUILD/lib"
    mv "$work/out/lib/napi-v$napi" "$BUILD/lib/"
  else
    # A rename, so an interrupted run never leaves a half-built cache that looks complete.
    # The binding's RUNPATH is relative ($ORIGIN), so it survives the move.
    mv "$work/out" "$BUILD"
  fi
  log "built into $BUILD"
fi

# 5. Point every installed tfjs-node 4.22 at the build. pnpm made these package folders; the
# files in them are hard links into pnpm's store, so only new entries are added, never edits.
for dir in "${packages[@]}"; do
  for entry in lib deps; do
    if [ -e "$dir/$entry" ] && [ ! -L "$dir/$entry" ]; then
      fail "$dir/$entry exists and is not a link this script made (a 'pnpm rebuild' of tfjs-node?): remove it first"
    fi
    ln -sfn "$BUILD/$entry" "$dir/$entry"
  done
done

# The package loads through the workspace's own tfjs-core, and runs an op natively.
check_log=$(mktemp "${TMPDIR:-/tmp}/tfjs-node-check.XXXXXX")
(cd packages/nn && node -e '
  const tf = require("@tensorflow/tfjs-node");
  const product = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[1], [1]])).dataSync();
  if (tf.getBackend() !== "tensorflow" || product[0] !== 3 || product[1] !== 7) {
    console.error(`tfjs-node loaded but computed [${product}] on backend ${tf.getBackend()}`);
    process.exit(1);
  }
' >"$check_log" 2>&1) || {
  reason=$(grep -m 1 -i -e error -e 'computed' "$check_log" || true)
  rm -f "$check_log"
  fail "@tensorflow/tfjs-node does not load from packages/nn: $reason"
}
rm -f "$check_log"
log "ready: @tensorflow/tfjs-node $TFJS_VERSION on TensorFlow $TF_VERSION ($BUILD)"
