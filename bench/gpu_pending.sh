#!/usr/bin/env bash
# The GPU runs still open, from binaries staged by bench/stage_gpu_binaries.sh: one device call
# per step keeps each under the 10-minute limit.
#   On the GPU box (carry .devdeps and .gpubin):  bash bench/gpu_pending.sh STEP [OUTDIR]
# Steps:
#   cudatests  the CUDA cases of the GoogleTest suites: CUDA graphs vs eager for every family,
#              the fused preprocessing kernel, NMS and label maps on CUDA vs CPU,
#              fp16 serving, the Vim scan/conv kernels and the Fibottention kernel vs CPU
#   vimserve   vim_tiny and vim_small served by vitserve on CUDA (issue 4), client bench
#   vim        vim kernels and vim_tiny on CUDA vs the CPU reference at up to 6085 tokens, then the
#              vim_tiny vs deit_tiny table (bench/vim_gpu_box.sh without its build step)
#   zoo3       Fibottention kernel check, model images/s vs ViT-B, kernel vs SDPA (issue 5)
#   graphs     shvit_s1 served eagerly (--cuda-graphs=false) and with CUDA graphs (the default),
#              same client bench (load time, latency, throughput)
#   parity     issue 3's timm parity on CUDA again, now with TF32 off in vitserve-run-model
#   devpre     device preprocessing (issue 11): its parity with CPU preprocessing on shvit_s1
#              (bench/preprocess_parity.sh), then the served sweep with it on and off in one
#              call; its CUDA unit test is part of `cudatests`
#   instances  the served sweep (device preprocessing, the default) with one and with two model
#              instances per GPU, for $SWEEP_MODELS (default shvit_s1); PROFILE=1 profiles
#              the one-instance server (carry .prof); the outputs are packed into
#              OUTDIR/instances.tar.gz (the device tool brings back only a few files)
#   variants   the served sweep once per variant in $VARIANTS ("label:server flags[:client
#              flags];...", default "inst2:--instance-count=2;inst4:--instance-count=4";
#              client flags default to $CLIENT_FLAGS), anchors measured in the first only, for
#              $SWEEP_MODELS; outputs packed into OUTDIR/variants.tar.gz
set -uo pipefail
STEP="${1:?step: cudatests | vimserve | vim | zoo3 | graphs | parity | devpre | instances | variants}"
OUT="${2:-${OUT:-/tmp/vitserve-gpu}}"
mkdir -p "$OUT"
source .devdeps/bootstrap.sh >/dev/null || exit 1
TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB:/usr/local/cuda/lib64:$LD_LIBRARY_PATH"
mkdir -p build-gpu && tar -xJf .gpubin/bin.tar.xz -C build-gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

case "$STEP" in
  cudatests)
    status=0
    for t in runtime_test tensor_preprocess_test dense_output_test heads_test model_manager_test vitserve_vim_test vitserve_fibottention_test; do
      echo "== $t (CUDA cases)"
      build-gpu/bin/$t --gtest_filter='*Cuda*:*CUDA*:*Gpu*' 2>&1 | tee "$OUT/$t.txt" | \
        grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) *\]|Failure|max \|diff\|" || true
      [[ ${PIPESTATUS[0]} == 0 ]] || status=1
    done
    exit $status
    ;;
  vimserve)
    GPU_STEPS=serve SERVE_MODELS="vim_tiny vim_small" SERVE_MAX_BATCH=32 BENCH_SECONDS=5 \
      bash bench/gpu_box.sh "$OUT"
    ;;
  vim)
    VIM_STEPS="check bench" bash bench/vim_gpu_box.sh "$OUT"
    ;;
  zoo3)
    ZOO3_STEPS="check model attn flops" bash bench/zoo3_gpu.sh "$OUT"
    ;;
  graphs)
    GPU_STEPS=serve SERVE_MODELS=shvit_s1 BENCH_SECONDS=5 SERVE_FLAGS=--cuda-graphs=false \
      bash bench/gpu_box.sh "$OUT/eager"
    GPU_STEPS=serve SERVE_MODELS=shvit_s1 BENCH_SECONDS=5 bash bench/gpu_box.sh "$OUT/graphs"
    ;;
  parity)
    GPU_STEPS=parity bash bench/gpu_box.sh "$OUT"
    ;;
  devpre)
    bash bench/preprocess_parity.sh "$OUT/parity" shvit_s1
    export SWEEP_MODELS=shvit_s1 SECONDS_EACH=3 CLIENT_FLAGS="--channels 4"
    SERVE_FLAGS=--device-preprocessing=true bash bench/serve_sweep.sh "$OUT/on"
    SERVE_FLAGS=--device-preprocessing=false bash bench/serve_sweep.sh "$OUT/off"
    ;;
  instances)
    export SWEEP_MODELS="${SWEEP_MODELS:-shvit_s1}" SECONDS_EACH="${SECONDS_EACH:-3}" \
      CLIENT_FLAGS="${CLIENT_FLAGS:---channels 4}"
    SERVE_FLAGS=--instance-count=1 bash bench/serve_sweep.sh "$OUT/instances1"
    PROFILE=0 SERVE_FLAGS=--instance-count=2 bash bench/serve_sweep.sh "$OUT/instances2"
    tar -czf "$OUT/instances.tar.gz" -C "$OUT" --exclude='*.jpg' instances1 instances2 && \
      rm -rf "$OUT/instances1" "$OUT/instances2"
    ;;
  variants)
    export SWEEP_MODELS="${SWEEP_MODELS:-shvit_s1}" SECONDS_EACH="${SECONDS_EACH:-3}" \
      CLIENT_FLAGS="${CLIENT_FLAGS:---channels 4}"
    anchors=1
    labels=()
    IFS=';' read -ra variants <<< "${VARIANTS:-inst2:--instance-count=2;inst4:--instance-count=4}"
    for variant in "${variants[@]}"; do
      IFS=':' read -r label serve_flags client_flags <<< "$variant"
      labels+=("$label")
      client_flags="${client_flags:-$CLIENT_FLAGS}"
      echo "== variant $label: server '$serve_flags', client '$client_flags'"
      ANCHORS=$anchors SERVE_FLAGS="$serve_flags" CLIENT_FLAGS="$client_flags" \
        bash bench/serve_sweep.sh "$OUT/$label"
      anchors=0
      PROFILE=0  # Profile the first variant only.
    done
    tar -czf "$OUT/variants.tar.gz" -C "$OUT" --exclude='*.jpg' "${labels[@]}" && \
      (cd "$OUT" && rm -rf "${labels[@]}")
    ;;
  *)
    echo "unknown step '$STEP'" >&2
    exit 2
    ;;
esac
