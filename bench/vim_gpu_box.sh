#!/usr/bin/env bash
# Vision Mamba on the GPU box, in one command: build with CUDA, check the CUDA kernels and
# vim_tiny on CUDA against the CPU reference (PASS/FAIL lines), then the vim_tiny vs deit_tiny
# throughput / peak-memory table (bench/vim_vs_deit.sh).
#
# On the GPU host, in the project root, with .devdeps/ carried (like bench/gpu_box.sh):
#   bash bench/vim_gpu_box.sh [OUTDIR]
# Environment: VIM_STEPS (default "build check bench"; leave out build to use binaries already
# in the build directory, e.g. built on a Debian 12 machine against the same LibTorch),
# VIM_BUILD_DIR (default build-gpu).
set -uo pipefail
OUT="${1:-${OUT:-/tmp/vitserve-vim}}"
mkdir -p "$OUT"
STEPS="${VIM_STEPS:-build check bench}"
B="${VIM_BUILD_DIR:-build-gpu}"
log() { echo "[vim_gpu_box $(date +%T)] $*"; }

source .devdeps/bootstrap.sh || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

if [[ " $STEPS " == *" build "* ]]; then
  log "configure + build"
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVITSERVE_BUILD_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$DEPS_CMAKE_PREFIX_PATH" $DEPS_CMAKE_ARGS > "$OUT/vim_configure.log" 2>&1 \
    || { tail -40 "$OUT/vim_configure.log"; exit 1; }
  ninja -k 0 -C "$B" vitserve-vim-gpu-check vitserve-bench-vim-vs-deit > "$OUT/vim_build.log" 2>&1 \
    || { grep -B5 -A20 "error" "$OUT/vim_build.log" | head -80; exit 1; }
  log "built"
fi

status=0
if [[ " $STEPS " == *" check "* ]]; then
  log "CUDA kernels and vim_tiny on CUDA vs the CPU reference"
  "$B/bin/vitserve-vim-gpu-check" 2>&1 | tee "$OUT/vim_gpu_check.txt"
  status=${PIPESTATUS[0]}
fi

if [[ " $STEPS " == *" bench "* ]]; then
  log "vim_tiny vs deit_tiny"
  BIN="$B/bin/vitserve-bench-vim-vs-deit" bash bench/vim_vs_deit.sh 2>&1 | tee "$OUT/vim_vs_deit.txt"
fi
log "done (check exit code $status)"
exit $status
