#!/usr/bin/env bash
# vim_tiny vs deit_tiny: images/s and peak GPU memory at 224, 512, 1024 and 1248 px on CUDA, in
# fp16 and fp32. Batch sizes 128/32/8/8: the Vim paper's figure does not state its batch size
# in the text we checked (docs/vim.md), so these are the project's usual per-size choices.
# deit_tiny uses fused attention (SDPA); deit_tiny_explicit materialises the attention matrix,
# the DeiT code the paper measured. Then vim_tiny once more with a CUDA graph per size
# (vitserve-bench-model --cuda-graphs), which removes the per-kernel launch cost.
#   bash bench/vim_vs_deit.sh            (BIN=path/to/vitserve-bench-vim-vs-deit to override)
set -uo pipefail
BIN="${BIN:-build-gpu/bin/vitserve-bench-vim-vs-deit}"
MODEL_BIN="${MODEL_BIN:-$(dirname "$BIN")/vitserve-bench-model}"
SIZES="${SIZES:-224,512,1024,1248}"
BATCHES="${BATCHES:-128,32,8,8}"
MODELS="${MODELS:-vim_tiny,deit_tiny,deit_tiny_explicit}"
for p in ${PRECISIONS:-fp16 fp32}; do
  "$BIN" --device cuda --precision "$p" --sizes "$SIZES" --batch_sizes "$BATCHES" \
    --models "$MODELS" --seconds "${SECONDS_PER_CASE:-3}"
done
if [[ -x "$MODEL_BIN" && "${GRAPHS:-1}" == 1 ]]; then
  IFS=, read -r -a sizes <<< "$SIZES"
  IFS=, read -r -a batches <<< "$BATCHES"
  for p in ${PRECISIONS:-fp16 fp32}; do
    for i in "${!sizes[@]}"; do
      "$MODEL_BIN" --model vim_tiny --device cuda --precision "$p" --image-size "${sizes[$i]}" \
        --batch-sizes "${batches[$i]}" --cuda-graphs --seconds "${SECONDS_PER_CASE:-3}"
    done
  done
fi
