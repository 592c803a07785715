#!/usr/bin/env bash
# Installs the PyTorch peers that bench/train-vs-pytorch.ts measures transferlab against:
#   - PyTorch 2.x from PyPI in a venv cached outside the work tree,
#     ${TRANSFERLAB_CACHE:-~/.cache/transferlab}/torch-<version>/venv (the default peer). PyPI's
#     Linux x86_64 torch wheels are CUDA builds: the CPU path needs no GPU, but the import
#     needs the CUDA libraries, which pip installs as nvidia-* wheels (about 4 GB in all).
#     Its dense layers run on MKL, linked into the wheel.
#   - with --debian, also Debian's python3-torch (1.13) for /usr/bin/python3, and OpenBLAS (the
#     pthread build) unpacked, not installed, into a cache folder under node_modules, so the
#     system's BLAS alternative is left alone. Debian's default reference BLAS makes torch 1.13's
#     dense layers ~50x slower, which would make it an unfair peer; the benchmark points
#     LD_LIBRARY_PATH at the unpacked folder (`--peer debian`).
# Idempotent: every step is skipped when its result is already there. --debian needs root.
#
#   bash scripts/bench-peer-setup.sh [--debian]
#
# TRANSFERLAB_BENCH_CACHE overrides the OpenBLAS cache folder (default node_modules/.cache/transferlab-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH2_VERSION=2.15.0 # bench/train-vs-pytorch.ts names the same version
TORCH2_DIR=${TRANSFERLAB_CACHE:-$HOME/.cache/transferlab}/torch-$TORCH2_VERSION
CACHE=${TRANSFERLAB_BENCH_CACHE:-$PWD/node_modules/.cache/transferlab-bench}
OPENBLAS_DIR=$CACHE/openblas
PYTHON=/usr/bin/python3

log() { printf 'bench-peer-setup: %s\n' "$*" >&2; }

debian=false
case "${1:-}" in
  '') ;;
  --debian) debian=true ;;
  *)
    log "unknown argument '$1' (use --debian)"
    exit 2
    ;;
esac

# 1. PyTorch 2.x in its venv; pip picks the wheel for the venv's Python.
# The wheel reports a local version (2.15.0+cu132): compare the public part.
torch2_version() { "$TORCH2_DIR/venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null; }
if [ "$(torch2_version)" = "$TORCH2_VERSION" ]; then
  log "torch $TORCH2_VERSION already in $TORCH2_DIR/venv"
else
  base=''
  for candidate in python3 python3.12 python3.11 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -m venv --help >/dev/null 2>&1; then
      base=$candidate
      break
    fi
  done
  [ -n "$base" ] || {
    log 'no python3 with the venv module (apt-get install python3-venv)'
    exit 1
  }
  rm -rf "$TORCH2_DIR"
  mkdir -p "$TORCH2_DIR"
  "$base" -m venv "$TORCH2_DIR/venv"
  log "installing torch $TORCH2_VERSION and its CUDA library wheels into $TORCH2_DIR/venv (about 4 GB)"
  "$TORCH2_DIR/venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
    "torch==$TORCH2_VERSION" >&2
  [ "$(torch2_version)" = "$TORCH2_VERSION" ] || {
    log "torch $TORCH2_VERSION installed but $TORCH2_DIR/venv/bin/python cannot import it"
    exit 1
  }
  log "installed torch $TORCH2_VERSION"
fi
if [ "$debian" = false ]; then
  log "ready: $TORCH2_DIR/venv/bin/python (pass --debian for Debian's torch 1.13 as well)"
  exit 0
fi

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
  SUDO=''
  log 'not root and no sudo: apt-get install will fail if python3-torch is missing'
elif [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=''
fi

# apt_retry CMD...: runs an apt command, waiting while another apt/dpkg process holds the lock
# (other jobs on the machine may be installing too). Gives up after about 10 minutes.
apt_retry() {
  local attempt
  for attempt in $(seq 1 60); do
    if $SUDO env DEBIAN_FRONTEND=noninteractive "$@" -o DPkg::Lock::Timeout=10; then return 0; fi
    log "'$*' failed (attempt $attempt), probably the dpkg lock: retrying in 10 s"
    sleep 10
  done
  log "'$*' kept failing: giving up"
  return 1
}

torch_importable() { "$PYTHON" -c 'import torch' >/dev/null 2>&1; }

# 2. Debian's PyTorch 1.13.
if torch_importable; then
  log "torch $("$PYTHON" -c 'import torch; print(torch.__version__)') already importable by $PYTHON"
else
  # Update the package lists only when apt does not know the package yet.
  if ! apt-cache show python3-torch >/dev/null 2>&1; then apt_retry apt-get update; fi
  apt_retry apt-get install -y --no-install-recommends python3-torch
  torch_importable || { log "python3-torch installed but $PYTHON cannot import torch"; exit 1; }
  log "installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
fi

# 3. OpenBLAS, pthread build, unpacked into the cache.
if compgen -G "$OPENBLAS_DIR/usr/lib/*/openblas-pthread/libblas.so.3" >/dev/null; then
  log "OpenBLAS already unpacked in $OPENBLAS_DIR"
else
  if ! apt-cache show libopenblas0-pthread >/dev/null 2>&1; then apt_retry apt-get update; fi
  mkdir -p "$CACHE"
  work=$(mktemp -d "$CACHE/download.XXXXXX")
  chmod 755 "$work" # so apt can fetch as its sandbox user _apt
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt_retry apt-get download libopenblas0-pthread)
  deb=$(find "$work" -maxdepth 1 -name 'libopenblas0-pthread_*.deb' | head -n 1)
  [ -n "$deb" ] || { log 'apt-get download produced no libopenblas0-pthread .deb'; exit 1; }
  # Unpack beside the final folder, then rename, so an interrupted run never leaves a half folder.
  rm -rf "$work/unpacked"
  dpkg -x "$deb" "$work/unpacked"
  compgen -G "$work/unpacked/usr/lib/*/openblas-pthread/libblas.so.3" >/dev/null || {
    log "$(basename "$deb") has no openblas-pthread/libblas.so.3"
    exit 1
  }
  rm -rf "$OPENBLAS_DIR"
  mv "$work/unpacked" "$OPENBLAS_DIR"
  log "unpacked $(basename "$deb") into $OPENBLAS_DIR"
fi

lib=$(compgen -G "$OPENBLAS_DIR/usr/lib/*/openblas-pthread" | head -n 1)
log "ready: LD_LIBRARY_PATH=$lib $PYTHON"
