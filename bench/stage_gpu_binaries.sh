#!/usr/bin/env bash
# Stages what bench/gpu_pending.sh runs on the GPU box: the binaries and the CUDA-capable test
# binaries of a CUDA build made here (Debian 12, same torch wheel as the box), without debug
# sections (symbols kept, for profiles) and packed into .gpubin/bin.tar.xz (git-ignored; name
# .gpubin in the device call's carry, with .devdeps from ../shared/device/prepare.sh; the carry
# limit is 64 MiB in all, which the unpacked binaries exceed).
#   bash bench/stage_gpu_binaries.sh [BUILD_DIR]      (default build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
B="${1:-build}"
rm -rf .gpubin && mkdir -p .gpubin/bin
for f in "$B"/bin/vitserve "$B"/bin/vitserve-client "$B"/bin/vitserve-bench-model \
         "$B"/bin/vitserve-bench-fibottention "$B"/bin/vitserve-vim-gpu-check \
         "$B"/bin/vitserve-bench-vim-vs-deit "$B"/bin/vitserve-bench-vim-ops "$B"/bin/vitserve-bench-grpc-rtt \
         "$B"/bin/vitserve-run-model "$B"/bin/vitserve-train "$B"/bin/vitserve-shapes \
         "$B"/tests/runtime_test "$B"/tests/tensor_preprocess_test "$B"/tests/dense_output_test "$B"/tests/heads_test "$B"/tests/model_manager_test "$B"/tests/vitserve_models_test "$B"/tests/vitserve_vim_test \
         "$B"/tests/vitserve_fibottention_test "$B"/tests/integration_test; do
  # Debug sections go, the symbol table stays: gperftools profiles on the box need names.
  strip --strip-debug -o ".gpubin/bin/$(basename "$f")" "$f"
done
# Libraries the servers link that .devdeps (made before the REST server) lacks: cpp-httplib and
# the brotli encoder it uses, tcmalloc (bin/lib/, put on LD_LIBRARY_PATH by bench/gpu_pending.sh).
mkdir -p .gpubin/bin/lib
for lib in libcpp-httplib.so.0.11 libbrotlienc.so.1 libtcmalloc_minimal.so.4; do
  cp -L "/usr/lib/x86_64-linux-gnu/$lib" .gpubin/bin/lib/
done
# Triton's perf_analyzer from the PyPI wheel in .venv/, with the two libraries the box lacks
# (libb64 from Debian, the CUDA 12 runtime it links from nvidia-cuda-runtime-cu12): the sweep
# measures the KServe API with it (bin/pa/, LD_LIBRARY_PATH=bin/pa).
if [[ -x .venv/bin/perf_analyzer ]]; then
  mkdir -p .gpubin/bin/pa
  cp .venv/bin/perf_analyzer /usr/lib/x86_64-linux-gnu/libb64.so.0d .gpubin/bin/pa/
  cp "$(.venv/bin/python -c 'import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib", "libcudart.so.12"))')" .gpubin/bin/pa/
fi
# A dictionary larger than any one binary: the test binaries each carry the same CUDA kernels
# (several MB), which xz finds again only within its dictionary (8 MiB by default).
tar -cf - -C .gpubin bin | xz -T2 --lzma2=preset=6,dict=256MiB > .gpubin/bin.tar.xz
rm -rf .gpubin/bin
du -sh .gpubin
