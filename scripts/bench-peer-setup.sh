#!/usr/bin/env bash
# Installs the PyTorch peer that bench/train-vs-pytorch.ts measures transferlab against:
#   - Debian's python3-torch (1.13), for /usr/bin/python3;
#   - OpenBLAS (the pthread build), unpacked, not installed, into a cache folder under
#     node_modules so nothing lands in git and the system's BLAS alternative is left alone.
#     Debian's default reference BLAS makes torch's dense layers ~50x slower, which would make
#     the peer an unfair one. The benchmark points LD_LIBRARY_PATH at the unpacked folder.
# Idempotent: every step is skipped when its result is already there. Needs root for apt-get.
#
#   bash scripts/bench-peer-setup.sh
#
# TRANSFERLAB_BENCH_CACHE overrides the cache folder (default node_modules/.cache/transferlab-bench).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${TRANSFERLAB_BENCH_CACHE:-$PWD/node_modules/.cache/transferlab-bench}
OPENBLAS_DIR=$CACHE/openblas
PYTHON=/usr/bin/python3

log() { printf 'bench-peer-setup: %s\n' "$*" >&2; }

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

# 1. PyTorch.
if torch_importable; then
  log "torch $("$PYTHON" -c 'import torch; print(torch.__version__)') already importable by $PYTHON"
else
  # Update the package lists only when apt does not know the package yet.
  if ! apt-cache show python3-torch >/dev/null 2>&1; then apt_retry apt-get update; fi
  apt_retry apt-get install -y --no-install-recommends python3-torch
  torch_importable || { log "python3-torch installed but $PYTHON cannot import torch"; exit 1; }
  log "installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
fi

# 2. OpenBLAS, pthread build, unpacked into the cache.
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
