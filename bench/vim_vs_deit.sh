#!/usr/bin/env bash
# vim_tiny vs deit_tiny: images/s and peak GPU memory at 224, 512, 1024 and 1248 px on CUDA, in
# fp16 and fp32. Batch sizes 128/32/8/8: the Vim paper's figure does not state its batch size
# in the text we checked (docs/vim.md), so these are the project's usual per-size choices.
#   bash bench/vim_vs_deit.sh            (BIN=path/to/vitserve-bench-vim-vs-deit to override)
set -uo pipefail
BIN="${BIN:-build-gpu/bin/vitserve-bench-vim-vs-deit}"
SIZES="${SIZES:-224,512,1024,1248}"
BATCHES="${BATCHES:-128,32,8,8}"
for p in ${PRECISIONS:-fp16 fp32}; do
  "$BIN" --device cuda --precision "$p" --sizes "$SIZES" --batch_sizes "$BATCHES" \
    --models vim_tiny,deit_tiny --seconds "${SECONDS_PER_CASE:-3}"
done
