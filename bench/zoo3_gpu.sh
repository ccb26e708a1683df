#!/usr/bin/env bash
# zoo3 on the GPU box, in one command: build with CUDA; check the Fibottention CUDA kernel against
# dense masked attention (PASS/FAIL lines); model-only images/s of vittm_base and
# vit_base_tokenlearner against vit_base_patch16_224 (vitserve-bench-model, fp16, batch
# 1/32/256, plus fp32 at the same sizes); the Fibottention kernel vs dense
# at::scaled_dot_product_attention at 197, 785 and 3137 tokens (ViT-B 12×64, batch 64, fp16);
# and the analytical FLOPs table (bench/zoo3_flops.py, no GPU needed).
#
# On the GPU host, in the project root, with .devdeps/ carried (like bench/gpu_box.sh):
#   bash bench/zoo3_gpu.sh [OUTDIR]
# Environment: ZOO3_STEPS (default "build check model attn flops"), ZOO3_BUILD_DIR (default
# build-gpu; without the build step its bin/ must hold the binaries), ZOO3_MODELS (default
# "vit_base_patch16_224 vittm_base vittm_base_28 vit_base_tokenlearner vit_base_fibottention").
set -uo pipefail
OUT="${1:-${OUT:-/tmp/vitserve-zoo3}}"
mkdir -p "$OUT"
STEPS="${ZOO3_STEPS:-build check model attn flops}"
B="${ZOO3_BUILD_DIR:-build-gpu}"
MODELS="${ZOO3_MODELS:-vit_base_patch16_224 vittm_base vittm_base_28 vit_base_tokenlearner vit_base_fibottention}"
log() { echo "[zoo3_gpu $(date +%T)] $*"; }

source .devdeps/bootstrap.sh || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

if [[ " $STEPS " == *" build "* ]]; then
  log "configure + build"
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVITSERVE_BUILD_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$DEPS_CMAKE_PREFIX_PATH" $DEPS_CMAKE_ARGS > "$OUT/zoo3_configure.log" 2>&1 \
    || { tail -40 "$OUT/zoo3_configure.log"; exit 1; }
  ninja -k 0 -C "$B" vitserve-bench-model vitserve-bench-fibottention > "$OUT/zoo3_build.log" 2>&1 \
    || { grep -B5 -A20 "error" "$OUT/zoo3_build.log" | head -80; exit 1; }
  log "built"
fi

status=0
if [[ " $STEPS " == *" check "* ]]; then
  log "Fibottention CUDA kernel vs dense masked attention"
  "$B/bin/vitserve-bench-fibottention" --device cuda --precision fp16 --tokens 197,785 --batch 2 \
    --seconds 0.2 --check 2>&1 | tee "$OUT/zoo3_fib_check.txt"
  status=${PIPESTATUS[0]}
fi

if [[ " $STEPS " == *" model "* ]]; then
  log "model-only images/s"
  for m in $MODELS; do
    for p in fp16 fp32; do
      "$B/bin/vitserve-bench-model" --model "$m" --device cuda --precision "$p" \
        --batch-sizes 1,32,256 --seconds 2 2>&1 | tee -a "$OUT/zoo3_model_bench.txt"
    done
  done
fi

if [[ " $STEPS " == *" attn "* ]]; then
  log "Fibottention kernel vs dense SDPA (ViT-B 12x64, batch 64, fp16)"
  for sem in official neginf; do
    "$B/bin/vitserve-bench-fibottention" --device cuda --precision fp16 --tokens 197,785,3137 \
      --batch 64 --semantics "$sem" --impls sdpa,fibottention 2>&1 | tee -a "$OUT/zoo3_fib_bench.txt"
  done
fi

if [[ " $STEPS " == *" flops "* ]]; then
  python3 bench/zoo3_flops.py 2>&1 | tee "$OUT/zoo3_flops.txt"
fi
log "done (check exit code $status)"
exit $status
