#!/usr/bin/env bash
# Everything the GPU box run needs, in one command (the box starts bare each time):
# build with CUDA, model parity against timm on the GPU, model-only throughput, and the
# served path (vitserve on CUDA fp16 driven by vitserve-client bench) with a /metrics excerpt.
#
# On the GPU host, in the project root, with .devdeps/ carried (../shared/device/README.md):
#   bash bench/gpu_box.sh [OUTDIR]
# Environment: GPU_STEPS (default "build parity model serve"), BENCH_MODELS, BENCH_SECONDS
# (per served-bench run, default 10), SERVE_MODELS (served one after another, default
# shvit_s1), SERVE_PRECISION (fp16), SERVE_MAX_BATCH (64), SERVE_FLAGS (more vitserve flags,
# e.g. --cuda-graphs=false to serve eagerly). Without the build step, binaries are taken from
# build-gpu/bin (e.g. built on a Debian 12 machine with the same LibTorch and copied there).
set -uo pipefail
OUT="${1:-${OUT:-/tmp/vitserve-gpu}}"
mkdir -p "$OUT"
STEPS="${GPU_STEPS:-build parity model serve}"
BENCH_MODELS="${BENCH_MODELS:-shvit_s1 shvit_s4 deit_tiny_patch16_224 deit_small_patch16_224 vit_base_patch16_224}"
SERVE_MODELS="${SERVE_MODELS:-shvit_s1}"
SERVE_PRECISION="${SERVE_PRECISION:-fp16}"
SERVE_MAX_BATCH="${SERVE_MAX_BATCH:-64}"
SERVE_FLAGS="${SERVE_FLAGS:-}"  # e.g. --cuda-graphs=false
B=build-gpu
log() { echo "[gpu_box $(date +%T)] $*"; }
parity_failed=0

source .devdeps/bootstrap.sh || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

if [[ " $STEPS " == *" build "* ]]; then
  log "configure + build"
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DVITSERVE_BUILD_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$DEPS_CMAKE_PREFIX_PATH" $DEPS_CMAKE_ARGS > "$OUT/configure.log" 2>&1 \
    || { tail -40 "$OUT/configure.log"; exit 1; }
  ninja -C $B vitserve vitserve-client vitserve-run-model vitserve-bench-model > "$OUT/build.log" 2>&1 \
    || { grep -B5 -A20 "error" "$OUT/build.log" | head -80; exit 1; }
  log "built"
fi

if [[ " $STEPS " == *" parity "* ]]; then
  log "parity against timm on CUDA"
  for p in fp32 fp16; do
    python3 tools/check_parity.py --binary $B/bin/vitserve-run-model --device cuda --precision $p \
      --tolerance 1e-2 shvit_s1 shvit_s4 deit_tiny_patch16_224 vit_base_patch16_224 2>&1 | tee -a "$OUT/parity.txt"
    # The checker's status, not tee's: the script exits 1 at the end when a model failed.
    [[ ${PIPESTATUS[0]} == 0 ]] || parity_failed=1
  done
fi

if [[ " $STEPS " == *" model "* ]]; then
  for m in $BENCH_MODELS; do
    for p in fp32 fp16; do
      $B/bin/vitserve-bench-model --model "$m" --device cuda --precision "$p" --batch-sizes 1,32,256 --seconds 1 2>&1 | tee -a "$OUT/model_bench.txt"
    done
    $B/bin/vitserve-bench-model --model "$m" --device cuda --precision fp16 --batch-sizes 1,32 --cuda-graphs --seconds 1 2>&1 | tee -a "$OUT/model_bench.txt"
  done
fi

if [[ " $STEPS " == *" serve "* ]]; then
  python3 - "$OUT/sample.jpg" <<'PY'
import sys, numpy as np
from PIL import Image
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(sys.argv[1], quality=90)
PY
  C=$B/bin/vitserve-client
  T="${BENCH_SECONDS:-10}"
  for m in $SERVE_MODELS; do
    S="$OUT/serve_$m.txt"
    log "serving $m on cuda $SERVE_PRECISION, max batch $SERVE_MAX_BATCH"
    started=$(date +%s.%N)
    $B/bin/vitserve --model "$m" --device cuda --precision "$SERVE_PRECISION" \
      --max-batch-size "$SERVE_MAX_BATCH" --max-queue-delay-us 2000 --max-queue-size 4096 \
      $SERVE_FLAGS > "$OUT/server_$m.log" 2>&1 &
    SERVER=$!
    ready=0
    for _ in $(seq 1 600); do
      kill -0 $SERVER 2>/dev/null || break
      python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8002/v2/health/ready').status==200 else 1)" 2>/dev/null && { ready=1; break; }
      sleep 0.5
    done
    if [[ $ready != 1 ]]; then
      echo "$m: server not ready" | tee -a "$S"; tail -20 "$OUT/server_$m.log"
      kill -KILL $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; continue
    fi
    echo "== $m ready after $(python3 -c "print(round($(date +%s.%N) - $started, 1))") s (load + warm-up)" | tee "$S"
    $C models --server localhost:8001 | tee -a "$S"
    $C classify --server localhost:8001 --model "$m" --top-k 3 "$OUT/sample.jpg" | tee -a "$S"
    for conc in 1 64; do
      echo "== bench jpeg 640x480, concurrency $conc" | tee -a "$S"
      $C bench --server localhost:8001 --model "$m" --concurrency $conc --duration $T --warmup 1 --image "$OUT/sample.jpg" 2>/dev/null | tee -a "$S"
    done
    echo "== bench raw RGB8 at the model's input size, concurrency 64, 8 images per request" | tee -a "$S"
    $C bench --server localhost:8001 --model "$m" --concurrency 64 --batch 8 --duration $T --warmup 1 --input raw 2>/dev/null | tee -a "$S"
    python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8002/metrics').read().decode())" > "$OUT/metrics_$m.txt"
    grep -E "^vitserve_(requests_total|batch_size_(sum|count)|compute_duration_seconds_(sum|count)|queue_duration_seconds_(sum|count)|gpu_memory_used_bytes|model_ready)" "$OUT/metrics_$m.txt" | grep -v " 0$" | head -20 | tee -a "$S"
    kill -TERM $SERVER; wait $SERVER; echo "vitserve exit code $?" | tee -a "$S"
    tail -3 "$OUT/server_$m.log"
  done
fi
log "done"
[[ $parity_failed == 0 ]] || { log "parity FAILED (OUT/parity.txt)"; exit 1; }
