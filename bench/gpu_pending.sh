#!/usr/bin/env bash
# The GPU runs still open, from binaries staged by bench/stage_gpu_binaries.sh: one device call
# per step keeps each under the 10-minute limit.
#   On the GPU box (carry .devdeps and .gpubin):  bash bench/gpu_pending.sh STEP [OUTDIR]
#   (The carry must fit in 64 MiB: `bash bench/device_carry.sh size`; `trim` before the call and
#   `restore` after it move the tracked demo models out of the way.)
# Steps:
#   cudatests  the CUDA cases of the GoogleTest suites: CUDA graphs vs eager for every family,
#              the fused preprocessing kernel, NMS and label maps on CUDA vs CPU,
#              fp16 serving, the Vim scan/conv kernels and the Fibottention kernel vs CPU, the
#              LayerNorm kernel vs ATen
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
#   gpujpeg    GPU JPEG decoding with nvJPEG (issue 11): its CUDA tests (decoder against the CPU
#              decoder, JPEG parts through an instance, the server with and without it), its
#              parity with CPU decoding and preprocessing on shvit_s1 (bench/preprocess_parity.sh,
#              model gpu_jpeg), then the sweep's JPEG rows with GPU decoding (the default) and
#              with CPU decoding (cpujpeg*) in one call (JPEG_CONCURRENCY clients, default "1 1024"; SWEEP_MODELS, default shvit_s1
#              and deit_tiny_patch16_224)
#   instances  the served sweep (device preprocessing, the default) with one and with two model
#              instances per GPU, for $SWEEP_MODELS (default shvit_s1); PROFILE=1 profiles
#              the one-instance server (carry .prof); the outputs are packed into
#              OUTDIR/instances.tar.gz (the device tool brings back only a few files)
#   train      issue 10's demo segmenter and detector trained on the GPU (vitserve-train, bf16
#              mixed precision, both at once), with `cudatests` running beside them: a 40 s
#              probe measures each trainer's images/s, then each gets the steps that fit in
#              TRAIN_SECONDS (default 400) at TRAIN_BATCH (64) and TRAIN_SIZE (256) px. Brings
#              back OUTDIR/shapes_seg.safetensors, OUTDIR/shapes_det.safetensors and
#              OUTDIR/train.tar.gz (configs, labels, logs, the trainers' JSON, the test logs).
#              TRAIN_INIT=DIR fine-tunes DIR/shapes_seg and DIR/shapes_det (vitserve-train
#              --init-from) at TRAIN_LR (default: the trainer's 2e-3); TRAIN_CUDATESTS=0 leaves
#              the tests out (all cores to the trainers); TRAIN_SEED other scenes (fine-tuning:
#              not the first run's seed 1); TRAIN_RATES="SEG DET" (img/s, from an
#              earlier probe) skips the probe
#   dense      issue 10's demo detector and segmenter (examples/model_repository) served on CUDA
#              in fp16: vitserve-client bench of Detect and Segment, raw and JPEG scenes
#              (bench/dense_serve.sh)
#   models     issue 16's table: our models alone against timm, eager and CUDA graphs, NCHW and
#              NHWC, and the Vision Mamba and Fibottention rows (bench/model_vs_timm.sh with VIM=1
#              FIBOTTENTION=1 unless set; MODELS, BATCHES, LAYOUTS, SIZES, PROFILE_KERNELS, COMPILE)
#   variants   the served sweep once per variant in $VARIANTS ("label:server flags[:client
#              flags];...", default "inst2:--instance-count=2;inst4:--instance-count=4";
#              client flags default to $CLIENT_FLAGS), anchors measured in the first only, for
#              $SWEEP_MODELS; outputs packed into OUTDIR/variants.tar.gz
#   fibmma     Fibottention's tiled kernel (issue 16): the fibottention test's CUDA cases (each
#              against dense masked attention and the row kernel), then --check and the kernels
#              by name against SDPA at 197, 785 and 3,137 tokens, in FIB_PRECISIONS (default
#              fp16 and bf16), each tiled shape also with the class row's kernel overlapped (the
#              "pdl" names: overlap_dense_row), and the tensor-core rows kernel (mma64pdl,
#              mma128pdl);
#              NCU=1 then reads the rows kernels at 785 tokens with Nsight Compute (issue
#              rate, warps, stalls: OUTDIR/ncu_785.txt, ncu_785_mma64.txt and
#              ncu_785_mma128.txt; NCU_STALLS=1: each stall
#              reason's warps per issued instruction, as read in docs/performance.md run M);
#              NCU_SOURCE=1: each SASS instruction's executions and stall samples of the
#              default rows kernel at 785 tokens (OUTDIR/ncu_source_785.csv), summed by
#              bench/ncu_source_summary.py (as run O read them)
#   fibab      Fibottention's kernels A/B (issue 16): the staged binaries (A) against another
#              build's (B: FIB_B_DIR, a directory under .gpubin/ holding that build's
#              vitserve-bench-fibottention and vitserve_fibottention_test, copied there after
#              bench/stage_gpu_binaries.sh, which empties .gpubin): B's CUDA test cases
#              and --check first, then both benches alternately for FIB_AB_ROUNDS rounds
#              (default 3), fp16, SDPA and the default kernel at 197, 785 and 3,137 tokens;
#              prints ms per call of each round and each side's speed-up over SDPA.
#              FIB_A_IMPLS / FIB_B_IMPLS: other --impls for either side (sdpa first, as the
#              ratios take the SDPA row before; B defaults to A's), FIB_TOKENS: other lengths;
#              B's test binary may be packed (vitserve_fibottention_test.xz)
#   issue16    what issue 16 still has to measure, in one call, most wanted first (the device
#              tool returns what OUTDIR holds when its limit ends a call): `fibmma` with NCU=1
#              (OUTDIR/fibmma), `vimab` with NCU=1 against VIM_B_DIR (default .gpubin/lean;
#              OUTDIR/vimab), the ViT/SHViT rows at 1248 px (NHWC, batches 1, 8, 32;
#              OUTDIR/vit1248), then `fibab` against FIB_B_DIR (default .gpubin/exp; SDPA and
#              the tensor-core kernels; OUTDIR/fibab); a part whose B directory is missing is
#              left out. Each part's exit status is printed; the call exits 1 when any failed
#   vimab      a Vision Mamba kernel change A/B (issue 16): the staged binaries (A) against another
#              build's (B: VIM_B_DIR, a directory under .gpubin/ holding that build's
#              vitserve_vim_test, vitserve-bench-vim-ops and vitserve-bench-vim-vs-deit, each
#              may be packed .xz): B's CUDA cases of vitserve_vim_test, then vim-ops of both at
#              batch 8 x 1248 px and 128 x 224 px alternately for VIM_AB_ROUNDS rounds (default
#              2; the scan rows), then each side's vim_tiny vs deit_tiny row at 1024 / 1248 px;
#              NCU=1 also reads each side's split scan at 1248 px with Nsight Compute
#              (OUTDIR/ncu_scan_split_A.txt and _B.txt)
#   modelab    a model change A/B (issue 16): the staged binaries (A) against another build's
#              vitserve-bench-model (B: MODEL_B_DIR, e.g. .gpubin/old holding bin.tar.xz of the
#              build before the change; or, without MODEL_B_DIR, A's own binary with the
#              flags AB_B_FLAGS, e.g. --approximate-gelu=false), both alone on the GPU, fp16,
#              channels-last, CUDA
#              graphs, batches 128 and 256 (AB_BATCHES), alternately for AB_ROUNDS rounds
#              (default 3) for each model in AB_MODELS (default deit_tiny_patch16_224); first
#              vitserve_models_test's CUDA cases (A), last each side's GPU kernels of 10 eager
#              batches of 256 (the first model) and timm's eager fp16 batch 256 as the anchor;
#              NCU=1 (NCU_STALLS=1) also reads A's kernels matching NCU_KERNELS (default
#              nvjet: cuBLAS's products; run U read its fused GELU kernel so) with Nsight
#              Compute at batch 256 (OUTDIR/ncu_ab.txt)
#   served     issue 11's goal beyond for SWEEP_MODELS (default shvit_s1): raw images, one per
#              request, at CONCURRENCY (default "1024 2048") clients, ROUNDS (default 2) sweeps
#              in one call, the anchors (model alone, timm) in the first; prints each sweep's
#              table rows (share of round 1's model alone, x timm) with batch and stage means
#   serverenv  SWEEP_MODELS (default shvit_s1) served as in `served` (raw, one image per
#              request, CONCURRENCY default 1024) with vitserve's environment as it is and with
#              each of ENV_VARIANTS ('|'-separated lists of VAR=value words; default gRPC's
#              TCP read experiments: GRPC_EXPERIMENTS=tcp_frame_size_tuning,tcp_rcv_lowat and
#              the same with tcp_read_chunks), alternately for ROUNDS (default 2) rounds, the
#              anchors in the first; each row with the server's stage means, its CPU seconds by
#              thread and its minor page faults (run 48: the two experiments changed nothing)
#   issue11    every target of issue 11 in one call (within the 10 minutes): bench/serve_sweep.sh
#              with shvit_s1, deit_tiny and vit_base (raw at CONCURRENCY, default 1/64/256/1,024
#              clients; JPEG 224 and 640 and KServe for shvit_s1: FP32 and UINT8, the tensors in
#              the requests and in shared memory, two interleaved rounds), its table with each
#              target's verdict (bench/sweep_table.py), then the CPU target on two pinned cores
#              (bench/cpu_target.sh, CPU_MODELS); everything packed into OUTDIR/issue11.tar.gz
#   verify     what the open issues need run at HEAD, in one call: `cudatests`, `parity`, the GPU
#              preprocessing against the CPU's (bench/preprocess_parity.sh, shvit_s1), then
#              issue 16's ViT/SHViT rows (bench/model_vs_timm.sh: MODELS, default deit_tiny,
#              vit_base, shvit_s1; NHWC; 224 px at BATCHES 1,32,128,256 and 1024 px at 1,8,32)
#   spin       a lone request's latency with and without --executor-idle-spin-us (SPIN_US:
#              one or more values, default 2000; each in turn, then 0), in ROUNDS (default 2)
#              rounds at concurrency 1, with the anchors (graph replay at batch 1) first, for
#              $SWEEP_MODELS (default deit_tiny_patch16_224); the server's stage means of each
#              row beside it, and its executor threads' CPU seconds (what a poll costs: with
#              SPIN_US="250 500 1000 2000", the shortest poll that still takes the wake-up off);
#              SPIN_LOADED="16 64" then also runs those concurrencies with SPIN_US's first value
#              and with 0 (the throughput polling costs where executors idle briefly)
#   vimscan    Vision Mamba's scan (issue 16): vitserve-bench-vim-ops at batch 8 x 1248 px and
#              batch 128 x 224 px, fp16 (every operator, and the scan at fixed chunk counts);
#              with NCU=1 also Nsight Compute on the scan kernel's launches at 1248 px (issue
#              rate, occupancy, stalls: OUTDIR/ncu_scan.txt; ncu_scan_branch_free.txt and
#              ncu_scan_split.txt for the kChunkedBranchFree and kSplitStates kernels), to find
#              what keeps it at several times its arithmetic floor. The table's "branch-free" /
#              "br-free" and "split" rows time those kernels beside the chunked one
#   kernels    what changed in the Vim and Fibottention kernels since run I, in one call: the
#              CUDA cases of vitserve_vim_test and vitserve_fibottention_test, vim-ops at
#              batch 8 x 1248 px and 128 x 224 px, the Fibottention kernels by name (fp16,
#              --check), then bench/model_vs_timm.sh's Vim and Fibottention rows (OUTDIR/models)
#   vimcross   vim_tiny against our deit_tiny (SDPA), fp16, batch 8, eager, at 1024 to 2560 px
#              (VIMCROSS_SIZES, VIMCROSS_BATCHES): the resolution where Vision Mamba overtakes
#   kservepin  KServe agreement (issue 11): KSERVE_ROUNDS (default 3) interleaved rounds of
#              perf_analyzer --async and vitserve-client, FP32 and UINT8, with vitserve on one
#              half of the physical cores and the clients on the other (SERVER_CPUS /
#              CLIENT_CPUS of bench/serve_sweep.sh), each round also with two perf_analyzer
#              processes at concurrency 32 (PA_SPLIT, default 1; is perf_analyzer its own
#              limit?) and, with PA_MALLOC_ROWS="tcmalloc tuned", perf_analyzer with other
#              allocators (bench/serve_sweep.sh), with KSERVE_SHM=1 each pair once more with
#              the tensors in system shared memory (both tools --shared-memory system;
#              KSERVE_BYTES=0: only so), with PA_MAX_THREADS_ROWS / PA_SYNC_ROWS more
#              perf_analyzer rows per pair (fewer worker threads; its synchronous mode), then
#              FP32 with all cores shared as before (KSERVE_SHARED=0: not)
#   patarget   kservepin with the tensors in shared memory at concurrency 64, two rounds, each
#              pair with one more perf_analyzer row sent to "localhost:8001" beside the default
#              "127.0.0.1:8001" (PA_LOCALHOST_ROWS), every perf_analyzer row with its latency
#              tail (PA_EXPORT, bench/pa_export_tail.py): does the name cost its first requests
#              seconds?
#   graphsizes shvit_s1 (SWEEP_MODELS) served at 256 and 1,024 clients with the default CUDA
#              graph batch sizes and with --cuda-graph-batch-sizes=GRAPH_SIZES (default the
#              powers of two below 16, then four per doubling), alternately, ROUNDS (default
#              2) times: run 45's batches of 91 images each replayed the graph of 128 (run 46:
#              the finer buckets served 4-7% less at 1,024 clients; the default stayed)
set -uo pipefail
STEP="${1:?step: cudatests | train | dense | vimserve | vim | zoo3 | graphs | parity | devpre \
| gpujpeg | instances | variants | fibmma | fibab | vimab | spin | kservepin | patarget | graphsizes \
| vimscan | kernels | vimcross | modelab | served | serverenv | issue11 | verify | issue16}"
OUT="${2:-${OUT:-/tmp/vitserve-gpu}}"
mkdir -p "$OUT"
source .devdeps/bootstrap.sh >/dev/null || exit 1
TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB:/usr/local/cuda/lib64:$LD_LIBRARY_PATH"
mkdir -p build-gpu && tar -xJf .gpubin/bin.tar.xz -C build-gpu
# Last: only what neither the box nor .devdeps has (bench/stage_gpu_binaries.sh).
export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$PWD/build-gpu/bin/lib"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

# Nsight Compute on the launches of the kernels matching $1 (after skipping $2), the sections
# that tell why a kernel waits, into $3; then the summary lines (and $4's extra ones). The rest
# is the command to profile. Nothing when NCU is not 1 or ncu is missing. ncu locks the clocks,
# so its durations run 10-20% above the benchmarks'. NCU_STALLS=1 adds each stall reason's
# warps per issued instruction (the sections print only their total; first read in run M).
profile_kernels() {
  local kernels="$1" skip="$2" out="$3" extra="$4" stall_metrics=()
  shift 4
  [[ "${NCU:-0}" == 1 ]] && command -v ncu > /dev/null || return 0
  [[ "${NCU_STALLS:-0}" == 1 ]] && stall_metrics=(--metrics \
    'regex:^smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$')
  ncu --kernel-name regex:"$kernels" --launch-skip "$skip" --launch-count 4 \
    --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section SchedulerStats --section InstructionStats \
    "${stall_metrics[@]}" "$@" > "$out" 2>&1
  local metrics="Duration|Issue Slots Busy|Achieved Occupancy|Registers Per|Executed Ipc A"
  [[ ${#stall_metrics[@]} -gt 0 ]] && metrics+="|issue_stalled"
  grep -E "$kernels|$metrics${extra:+|$extra}" "$out" | head -80
}

# The CUDA cases of the test binaries named after the first argument (default: all of them);
# logs in the first argument, a directory.
# Returns 1 when any failed.
run_cudatests() {
  local dir="$1" status=0
  shift
  local tests=("$@")
  [[ ${#tests[@]} -gt 0 ]] || tests=(runtime_test tensor_preprocess_test dense_output_test \
    heads_test model_manager_test vitserve_models_test vitserve_vim_test \
    vitserve_fibottention_test)
  mkdir -p "$dir"
  for t in "${tests[@]}"; do
    echo "== $t (CUDA cases)"
    # (No "|| true" after the pipeline: under pipefail it would reset PIPESTATUS.)
    build-gpu/bin/$t --gtest_filter='*Cuda*:*CUDA*:*Gpu*' 2>&1 | tee "$dir/$t.txt" | \
      grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) *\]|Failure|max \|diff\|"
    local codes=("${PIPESTATUS[@]}")
    [[ ${codes[0]} == 0 ]] || { echo "$t FAILED (exit ${codes[0]})"; status=1; }
  done
  return $status
}

# vitserve-bench-vim-ops at batch 8 x 1248 px and 128 x 224 px, fp16, $1 seconds per row; $2:
# another build's binary (default the staged one); tables in OUT/vim_ops_SIZE$3.txt. Returns 1
# when a run failed.
run_vim_ops() {
  local shape size batch status=0
  for shape in "1248 8" "224 128"; do
    read -r size batch <<< "$shape"
    "${2:-build-gpu/bin/vitserve-bench-vim-ops}" --image-size "$size" --batch "$batch" \
      --precision fp16 --seconds "$1" 2>&1 | tee "$OUT/vim_ops_${size}${3:-}.txt"
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
  done
  return $status
}

# The binary $3 of side $1 of an A/B step: A's staged one, or B's in directory $2.
side_binary() {
  if [[ $1 == B ]]; then echo "$2/$3"; else echo "build-gpu/bin/$3"; fi
}

# The Fibottention kernels by name against SDPA at 197, 785 and 3,137 tokens in precision $1
# (--check first, 1 s per row); the table in OUT/bench_$1.txt.
# fibab's table from OUT/ab_{A,B}_ROUND.txt (vitserve-bench-fibottention's "T=785 fibottention
# 0.267 ms" lines): per token count, each round's ms per call of A and B and the speed-ups
# over the same run's SDPA.
fib_ab_summary() {
  awk '
    FNR == 1 { n = split(FILENAME, parts, "/"); side = substr(parts[n], 4, 1) }
    $1 ~ /^T=/ && $3 ~ /^[0-9.]+$/ && $4 == "ms" {
      t = substr($1, 3)
      if ($2 == "sdpa") { last_sdpa[t] = $3; impl = "sdpa" } else impl = $2
      key = t SUBSEP side SUBSEP impl
      if (!(key in ms)) order[++rows] = key
      ms[key] = ms[key] " " $3
      if (impl != "sdpa" && last_sdpa[t] > 0)
        ratio[key] = ratio[key] sprintf(" %.2f", last_sdpa[t] / $3)
    }
    $1 ~ /^T=/ && $3 == "failed:" {  # A kernel that refused or failed: its round says so.
      key = substr($1, 3) SUBSEP side SUBSEP $2
      if (!(key in ms)) order[++rows] = key
      ms[key] = ms[key] " failed"
    }
    END {
      print "tokens  side  kernel            ms per round  (x SDPA of the same run)"
      for (i = 1; i <= rows; ++i) {
        split(order[i], f, SUBSEP)
        printf "%-7s %-5s %-17s%s%s\n", f[1], f[2], f[3], ms[order[i]],
          ratio[order[i]] == "" ? "" : "  (" ratio[order[i]] " )"
      }
    }' $(ls "$1"/ab_[AB]_*.txt | sort -t_ -k3n) | sort -n -s -k1,1
}

run_fib_kernels() {
  build-gpu/bin/vitserve-bench-fibottention --precision "$1" --check --check-max-tokens 3137 \
    --seconds 1 \
    --impls sdpa,fibottention,tiled,tiledpdl,tiled64x4,tiled64x4pdl,tiled128x1,mma64pdl,mma128pdl \
    2>&1 | tee "$OUT/bench_$1.txt"
}

# borrow_anchors FROM TO: a sweep run with ANCHORS=0 (in TO) gets the model-alone and timm rows
# of one that measured them (FROM), and its table is printed again with their ratios.
borrow_anchors() {
  grep -P '\t(model_|timm_)' "$1/results.tsv" >> "$2/results.tsv"
  python3 bench/sweep_table.py "$2/results.tsv" > "$2/table.txt"
}
# The images/s of a trainer's last progress line in log $1 (empty when it printed none).
train_rate() { grep -o '[0-9.]* img/s' "$1" | tail -1 | cut -d' ' -f1; }

case "$STEP" in
  cudatests)
    run_cudatests "$OUT"
    exit $?
    ;;
  train)
    W=/tmp/vitserve-train-run
    rm -rf "$W" && mkdir -p "$W"
    TRAINER=build-gpu/bin/vitserve-train
    BATCH="${TRAIN_BATCH:-64}" SIZE="${TRAIN_SIZE:-256}" BUDGET="${TRAIN_SECONDS:-400}"
    # Scene generation is CPU work: the two trainers split the cores.
    export OMP_NUM_THREADS="${TRAIN_THREADS:-7}"
    tests_pid=""
    if [[ "${TRAIN_CUDATESTS:-1}" == 1 ]]; then
      (run_cudatests "$W/cudatests" > "$W/cudatests.log" 2>&1; echo "cudatests exit $?" >> "$W/cudatests.log") &
      tests_pid=$!
    fi
    precision=auto
    extra=()
    [[ -n "${TRAIN_LR:-}" ]] && extra+=(--lr "$TRAIN_LR")
    [[ -n "${TRAIN_SEED:-}" ]] && extra+=(--seed "$TRAIN_SEED")
    read -r seg_rate det_rate <<< "${TRAIN_RATES:-}"
    for attempt in 1 2; do
      [[ -n "$seg_rate" && -n "$det_rate" ]] && break
      probe_pids=()
      for task in segmentation detection; do
        timeout 40 $TRAINER --task $task --out "$W/probe_$task" --steps 1000000 \
          --batch-size "$BATCH" --input-size "$SIZE" --device cuda --precision $precision \
          --data-threads "$OMP_NUM_THREADS" > /dev/null 2> "$W/probe_$task.$precision.log" &
        probe_pids+=($!)
      done
      wait "${probe_pids[@]}"
      seg_rate=$(train_rate "$W/probe_segmentation.$precision.log")
      det_rate=$(train_rate "$W/probe_detection.$precision.log")
      echo "probe ($precision): segmentation ${seg_rate:-none} img/s, detection ${det_rate:-none} img/s"
      [[ -n "$seg_rate" && -n "$det_rate" ]] && break
      tail -n 3 "$W"/probe_*."$precision".log
      precision=fp32  # bf16 autocast failed: train in fp32.
    done
    [[ -n "$seg_rate" && -n "$det_rate" ]] || exit 1
    pids=()
    for task in segmentation detection; do
      rate=$([[ $task == segmentation ]] && echo "$seg_rate" || echo "$det_rate")
      steps=$(python3 -c "print(max(200, int(0.9 * $rate * $BUDGET / $BATCH)))")
      short=$([[ $task == segmentation ]] && echo seg || echo det)
      echo "== $task: $steps steps of $BATCH at $SIZE px, precision $precision"
      init=()
      [[ -n "${TRAIN_INIT:-}" ]] && init=(--init-from "$TRAIN_INIT/shapes_$short")
      echo "$TRAINER --task $task --out shapes_$short --steps $steps --batch-size $BATCH --input-size $SIZE --device cuda --precision $precision --data-threads $OMP_NUM_THREADS --eval-scenes 256 ${extra[*]} ${init[*]}" > "$W/$task.command"
      $TRAINER --task $task --out "$W/shapes_$short" --steps "$steps" --batch-size "$BATCH" \
        --data-threads "$OMP_NUM_THREADS" "${extra[@]}" "${init[@]}" \
        --input-size "$SIZE" --device cuda --precision $precision --eval-scenes 256 \
        --checkpoint-every 1000000 > "$W/$task.json" 2> "$W/$task.log" &
      pids+=($!)
    done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    if [[ -n "$tests_pid" ]]; then
      wait "$tests_pid"
      grep -E "^== |\[  (PASSED|FAILED)|FAILED|cudatests exit" "$W/cudatests.log"
    fi
    tail -n 2 "$W/segmentation.log" "$W/detection.log"; cat "$W/segmentation.json" "$W/detection.json"
    for short in seg det; do
      [[ -f "$W/shapes_$short/model.safetensors" ]] && \
        mv "$W/shapes_$short/model.safetensors" "$OUT/shapes_$short.safetensors"
      rm -rf "$W/shapes_$short/train_state" "$W"/probe_*/train_state
    done
    tar -czf "$OUT/train.tar.gz" -C "$W" --exclude='probe_segmentation' --exclude='probe_detection' .
    exit $status
    ;;
  dense)
    bash bench/dense_serve.sh "$OUT"
    ;;
  verify)
    # What the open issues still need run at HEAD, in one call (about 6 minutes): every CUDA
    # test case and the GPU preprocessing within 1e-3 of the CPU's (issue 11's correctness
    # condition), parity against timm through the served default, then issue 16's ViT and
    # SHViT rows (NHWC, eager and CUDA graphs, 224 px at batches 1-256 and 1024 px at 1-32).
    # Exits 1 when a test or a parity check failed.
    status=0
    run_cudatests "$OUT/cudatests" || status=1
    GPU_STEPS=parity bash bench/gpu_box.sh "$OUT/parity" || status=1
    bash bench/preprocess_parity.sh "$OUT/preprocess_parity" shvit_s1 || status=1
    MODELS="${MODELS:-deit_tiny_patch16_224 vit_base_patch16_224 shvit_s1}" LAYOUTS=nhwc \
      BATCHES="${BATCHES:-1,32,128,256}" SIZES="${SIZES:-224 1024}" LARGE_BATCHES=1,8,32 \
      SECONDS_EACH="${SECONDS_EACH:-1}" VIM=0 FIBOTTENTION=0 bash bench/model_vs_timm.sh "$OUT/models"
    exit $status
    ;;
  issue16)
    # Each part in a process of its own (the steps end with exit), most wanted first.
    status=0
    part() {  # part NAME COMMAND...: runs COMMAND, prints its exit status and seconds.
      local name="$1" start=$SECONDS
      shift
      echo "== $name"
      "$@"
      local code=$?
      echo "== $name: exit $code after $((SECONDS - start)) s"
      [[ $code == 0 ]] || status=1
    }
    # fp16 only (the issue's precision): bf16's kernel table would take about a minute more.
    part fibmma env NCU="${NCU:-1}" FIB_PRECISIONS="${FIB_PRECISIONS:-fp16}" \
      bash bench/gpu_pending.sh fibmma "$OUT/fibmma"
    vim_b="${VIM_B_DIR:-.gpubin/lean}"
    if [[ -d $vim_b ]]; then
      part vimab env VIM_B_DIR="$vim_b" NCU="${NCU:-1}" bash bench/gpu_pending.sh vimab "$OUT/vimab"
    else echo "== vimab left out: no $vim_b"; fi
    part vit1248 env MODELS="${MODELS:-deit_tiny_patch16_224 vit_base_patch16_224 shvit_s1}" \
      LAYOUTS=nhwc SIZES=1248 LARGE_BATCHES="${LARGE_BATCHES:-1,8,32}" SECONDS_EACH=1 VIM=0 \
      FIBOTTENTION=0 bash bench/model_vs_timm.sh "$OUT/vit1248"
    fib_b="${FIB_B_DIR:-.gpubin/exp}"
    if [[ -d $fib_b ]]; then
      part fibab env FIB_B_DIR="$fib_b" FIB_A_IMPLS="${FIB_A_IMPLS:-sdpa,mma64pdl,mma128pdl}" \
        bash bench/gpu_pending.sh fibab "$OUT/fibab"
    else echo "== fibab left out: no $fib_b"; fi
    exit $status
    ;;
  models)
    VIM="${VIM:-1}" FIBOTTENTION="${FIBOTTENTION:-1}" bash bench/model_vs_timm.sh "$OUT"
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
    export SWEEP_MODELS=shvit_s1 SECONDS_EACH=3 CLIENT_FLAGS="--channels 64"
    SERVE_FLAGS=--device-preprocessing=true bash bench/serve_sweep.sh "$OUT/on"
    SERVE_FLAGS=--device-preprocessing=false bash bench/serve_sweep.sh "$OUT/off"
    ;;
  gpujpeg)
    status=0
    for t in runtime_test integration_test; do
      echo "== $t (GPU JPEG decoding)"
      build-gpu/bin/$t --gtest_filter='*Jpeg*:*JPEG*' 2>&1 | tee "$OUT/$t.txt" | \
        grep -E "^\[ *(OK|FAILED|SKIPPED|PASSED) *\]|Failure|hardware JPEG|probability difference"
      codes=("${PIPESTATUS[@]}")
      [[ ${codes[0]} == 0 ]] || { echo "$t FAILED (exit ${codes[0]})"; status=1; }
    done
    bash bench/preprocess_parity.sh "$OUT/parity" shvit_s1 || status=1
    ANCHORS=0 JPEG_ONLY=1 CPU_JPEG=1 SPLIT_CLIENTS=1 CONCURRENCY="${JPEG_CONCURRENCY:-1 1024}" \
      SECONDS_EACH="${SECONDS_EACH:-4}" SWEEP_MODELS="${SWEEP_MODELS:-shvit_s1 deit_tiny_patch16_224}" \
      bash bench/serve_sweep.sh "$OUT/sweep"
    exit $status
    ;;
  instances)
    export SWEEP_MODELS="${SWEEP_MODELS:-shvit_s1}" SECONDS_EACH="${SECONDS_EACH:-3}" \
      CLIENT_FLAGS="${CLIENT_FLAGS---channels 64}"
    SERVE_FLAGS=--instance-count=1 bash bench/serve_sweep.sh "$OUT/instances1"
    PROFILE=0 SERVE_FLAGS=--instance-count=2 bash bench/serve_sweep.sh "$OUT/instances2"
    tar -czf "$OUT/instances.tar.gz" -C "$OUT" --exclude='*.jpg' instances1 instances2 && \
      rm -rf "$OUT/instances1" "$OUT/instances2"
    ;;
  fibmma)
    status=0
    build-gpu/bin/vitserve_fibottention_test --gtest_filter='*Cuda*' 2>&1 | \
      tee "$OUT/fibottention_test.txt" | grep -E "^\[ *(OK|FAILED|PASSED) *\]|Failure|tensor cores"
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
    for precision in ${FIB_PRECISIONS:-fp16 bf16}; do run_fib_kernels "$precision"; done
    # The class row's kernel and the rows kernel at 785 tokens, after warm-up (Nsight Compute
    # runs them one after the other, so DenseRowKernel's time is what the overlap can hide).
    profile_kernels 'DenseRowKernel|TiledRowsKernel' 6 "$OUT/ncu_785.txt" "" \
      build-gpu/bin/vitserve-bench-fibottention --tokens 785 --seconds 0.05 --warmup 3 \
      --impls tiled64x4,tiled64x4pdl
    # The tensor-core rows kernel at both tiles, one bench per tile (the launches profiled are
    # the first after the skipped ones).
    for impl in mma64 mma128; do
      profile_kernels MmaRowsKernel 6 "$OUT/ncu_785_$impl.txt" "Compute \(SM\) Throughput" \
        build-gpu/bin/vitserve-bench-fibottention --tokens 785 --seconds 0.05 --warmup 3 \
        --impls "$impl"
    done
    if [[ "${NCU_SOURCE:-0}" == 1 ]] && command -v ncu > /dev/null; then
      # One launch of the default rows kernel, per SASS instruction (the report is large and
      # the device tool returns few files: only the CSV and the summary stay).
      ncu --kernel-name regex:TiledRowsKernel --launch-skip 6 --launch-count 1 \
        --section SourceCounters -f -o "$OUT/rows_785" \
        build-gpu/bin/vitserve-bench-fibottention --tokens 785 --seconds 0.05 --warmup 3 \
        --impls tiled64x4pdl > "$OUT/ncu_source_collect.txt" 2>&1
      ncu -i "$OUT/rows_785.ncu-rep" --page source --csv --print-source sass \
        > "$OUT/ncu_source_785.csv" && rm -f "$OUT/rows_785.ncu-rep"
      python3 bench/ncu_source_summary.py "$OUT/ncu_source_785.csv" | tee "$OUT/ncu_source_785.txt"
    fi
    exit $status
    ;;
  fibab)
    b_dir="${FIB_B_DIR:?set FIB_B_DIR to the directory of the B binaries}"
    status=0
    # The test binary may come packed (xz) to keep the device call's carry small.
    [[ -f "$b_dir/vitserve_fibottention_test" ]] || unxz -kf "$b_dir/vitserve_fibottention_test.xz"
    chmod +x "$b_dir"/vitserve*
    "$b_dir/vitserve_fibottention_test" --gtest_filter='*Cuda*' 2>&1 | \
      tee "$OUT/fibottention_test_b.txt" | grep -E "^\[ *(OK|FAILED|PASSED) *\]|Failure"
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
    for semantics in official neginf; do
      "$b_dir/vitserve-bench-fibottention" --precision fp16 --check --check-max-tokens 3137 \
        --semantics "$semantics" --seconds 0.1 --impls fibottention \
        > "$OUT/check_b_$semantics.txt" 2>&1 || status=1
      grep -E "^(PASS|FAIL)" "$OUT/check_b_$semantics.txt"
    done
    # Alternately, so that a drift of the clocks or of the box touches both sides alike.
    for round in $(seq "${FIB_AB_ROUNDS:-3}"); do
      for side in A B; do
        bench=$(side_binary "$side" "$b_dir" vitserve-bench-fibottention)
        impls="${FIB_A_IMPLS:-sdpa,fibottention}"
        [[ $side == B ]] && impls="${FIB_B_IMPLS:-$impls}"
        "$bench" --precision fp16 --seconds 1 ${FIB_TOKENS:+--tokens "$FIB_TOKENS"} \
          --impls "$impls" > "$OUT/ab_${side}_$round.txt" 2>&1 || status=1
      done
    done
    fib_ab_summary "$OUT"
    exit $status
    ;;
  vimab)
    b_dir="${VIM_B_DIR:?set VIM_B_DIR to the directory of the B binaries}"
    status=0
    # B's binaries may come packed (xz) to keep the device call's carry small.
    for packed in "$b_dir"/*.xz; do [[ -f ${packed%.xz} ]] || unxz -kf "$packed"; done
    chmod +x "$b_dir"/vitserve*
    "$b_dir/vitserve_vim_test" --gtest_filter='*Cuda*:ScanOffsets*' 2>&1 | \
      tee "$OUT/vim_test_b.txt" | grep -E "^\[ *(OK|FAILED|PASSED) *\]|Failure"
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
    # Alternately, so that a drift of the clocks or of the box touches both sides alike.
    for round in $(seq "${VIM_AB_ROUNDS:-2}"); do
      for side in A B; do
        ops=$(side_binary "$side" "$b_dir" vitserve-bench-vim-ops)
        # Only each table's shape line and scan rows.
        run_vim_ops 0.3 "$ops" "_${side}_$round" | \
          grep -E '^(device|selective scan|  split |  split avg|  branch-free|  chunked |sum)' | \
          sed "s/^/round $round $side: /"
        [[ ${PIPESTATUS[0]} == 0 ]] || status=1
      done
    done
    # NCU=1: each side's split scan at 1248 px in Nsight Compute (issue rate, stalls): is the
    # kernel still bound by instruction issue, or now waiting on memory (docs/vim.md)?
    for side in A B; do
      ops=$(side_binary "$side" "$b_dir" vitserve-bench-vim-ops)
      profile_kernels SelectiveScanKernel 4 "$OUT/ncu_scan_split_$side.txt" Stall "$ops" \
        --image-size 1248 --batch 8 --precision fp16 --seconds 0.05 --scan-kernel split-states
    done
    # Each side's issue row: vim_tiny against our deit_tiny (SDPA), fp16, batch 8, eager.
    for side in A B; do
      bench=$(side_binary "$side" "$b_dir" vitserve-bench-vim-vs-deit)
      echo "== side $side: vim_tiny vs deit_tiny"
      SIZES=1024,1248 BATCHES=8,8 PRECISIONS=fp16 MODELS=vim_tiny,deit_tiny GRAPHS=0 \
        SECONDS_PER_CASE=2 BIN="$bench" bash bench/vim_vs_deit.sh 2>&1 | \
        tee "$OUT/vim_vs_deit_$side.txt"
    done
    exit $status
    ;;
  modelab)
    # B: another build (MODEL_B_DIR) or, without one, the same binary with AB_B_FLAGS.
    b_dir="${MODEL_B_DIR:-}"
    [[ -n $b_dir || -n ${AB_B_FLAGS:-} ]] || { echo "set MODEL_B_DIR or AB_B_FLAGS"; exit 2; }
    status=0
    if [[ -n $b_dir ]]; then
      mkdir -p "$b_dir/x" && tar -xJf "$b_dir/bin.tar.xz" -C "$b_dir/x" bin/vitserve-bench-model
    fi
    build-gpu/bin/vitserve_models_test --gtest_filter='*Cuda*' 2>&1 | \
      tee "$OUT/models_test.txt" | \
      awk '/^\[ *(OK|FAILED|PASSED|SKIPPED) *\]/ { print; next }
           /Failure/ { n = 5 } n > 0 { print; n-- }'
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
    models="${AB_MODELS:-deit_tiny_patch16_224}"
    side_bench() {  # The vitserve-bench-model of side $1 (A or B), with that side's flags.
      if [[ $1 == B && -n $b_dir ]]; then echo "$b_dir/x/bin/vitserve-bench-model"
      else echo build-gpu/bin/vitserve-bench-model; fi
      [[ $1 == B ]] && echo "${AB_B_FLAGS:-}"
    }
    # Alternately, so that a drift of the clocks or of the box touches both sides alike.
    for round in $(seq "${AB_ROUNDS:-3}"); do
      for m in $models; do
        for side in A B; do
          $(side_bench $side) --model "$m" --device cuda --precision fp16 --channels-last \
            --cuda-graphs --batch-sizes "${AB_BATCHES:-128,256}" --seconds 1 \
            > "$OUT/ab_${m}_${side}_$round.txt" 2>&1 || status=1
          rates=$(awk '/^ +[0-9]+ +[0-9.]+ / { printf "b%s %s img/s  ", $1, $2 }' \
            "$OUT/ab_${m}_${side}_$round.txt")
          echo "$m $side round $round: $rates"
        done
      done
    done
    first="${models%% *}"
    # NCU=1: Nsight Compute on the A side's kernels matching NCU_KERNELS (issue rate, occupancy,
    # memory and pipe throughput, stalls) at batch 256, into OUTDIR/ncu_ab.txt.
    profile_kernels "${NCU_KERNELS:-nvjet}" 24 "$OUT/ncu_ab.txt" \
      "Throughput|Pipe|Bandwidth|L2 Hit|Stall" build-gpu/bin/vitserve-bench-model \
      --model "$first" --device cuda --precision fp16 --channels-last --batch-sizes 256 \
      --seconds 0.1 --warmup 1
    for side in A B; do
      $(side_bench $side) --model "$first" --device cuda --precision fp16 --channels-last \
        --batch-sizes 256 --seconds 0.5 --kernel-profile 10 --kernel-profile-top 12 \
        > "$OUT/kernels_$side.txt" 2>&1
      echo "kernels of $first, side $side:"
      sed -n '/kernels, per step/,$p' "$OUT/kernels_$side.txt" | head -15
    done
    python3 bench/timm_anchor.py "$first" 2>&1 | tee "$OUT/timm.txt"
    exit $status
    ;;
  served)
    export SWEEP_MODELS="${SWEEP_MODELS:-shvit_s1}" NO_KSERVE=1 NO_JPEG=1 NO_RAW16=1 \
      SPLIT_CLIENTS=1 CONCURRENCY="${CONCURRENCY:-1024 2048}" SECONDS_EACH="${SECONDS_EACH:-4}"
    for r in $(seq 1 "${ROUNDS:-2}"); do
      ANCHORS=$([[ $r == 1 ]] && echo 1 || echo 0) bash bench/serve_sweep.sh "$OUT/r$r" \
        > "$OUT/r$r.log" 2>&1
      # Later rounds' ratios against round 1's anchors (the sweep measures them once).
      [[ $r == 1 ]] || borrow_anchors "$OUT/r1" "$OUT/r$r"
      echo "round $r:"
      grep -E "vitserve_batch_size|stage_duration_seconds\[(forward|input)\]|queue_duration|\
request_duration" "$OUT/r$r.log" | awk '!seen[$0]++'
      grep -E "model alone \(graph\)|^  raw_c[0-9]+ " "$OUT/r$r/table.txt"
    done
    ;;
  kernels)
    # Everything built since run I in one call: the two kernel suites' CUDA cases, the Vim
    # operators at both shapes, the Fibottention kernels by name (fp16), then the issue's rows.
    status=0
    run_cudatests "$OUT" vitserve_vim_test vitserve_fibottention_test || status=1
    run_vim_ops 0.3
    run_fib_kernels fp16
    MODELS=" " VIM=1 FIBOTTENTION=1 SECONDS_EACH="${SECONDS_EACH:-2}" \
      bash bench/model_vs_timm.sh "$OUT/models"
    exit $status
    ;;
  vimscan)
    run_vim_ops 0.5
    # Both passes of the chunked scan at 1248 px, then of its branch-free and split versions.
    profile_kernels SelectiveScanKernel 4 "$OUT/ncu_scan.txt" Stall \
      build-gpu/bin/vitserve-bench-vim-ops --image-size 1248 --batch 8 --precision fp16 \
      --seconds 0.05 --scan-kernel chunked
    profile_kernels SelectiveScanKernel 4 "$OUT/ncu_scan_branch_free.txt" Stall \
      build-gpu/bin/vitserve-bench-vim-ops --image-size 1248 --batch 8 --precision fp16 \
      --seconds 0.05 --scan-kernel branch-free
    profile_kernels SelectiveScanKernel 4 "$OUT/ncu_scan_split.txt" Stall \
      build-gpu/bin/vitserve-bench-vim-ops --image-size 1248 --batch 8 --precision fp16 \
      --seconds 0.05 --scan-kernel split-states
    ;;
  vimcross)
    # Where vim_tiny overtakes our deit_tiny with SDPA (fp16, batch 8, eager): attention grows
    # with the square of the tokens, the scan linearly (docs/vim.md predicts 2,200-2,300 px).
    SIZES="${VIMCROSS_SIZES:-1024,1248,1536,2048,2560}" BATCHES="${VIMCROSS_BATCHES:-8,8,8,8,8}" \
      PRECISIONS=fp16 MODELS=vim_tiny,deit_tiny GRAPHS=0 SECONDS_PER_CASE=2 \
      BIN=build-gpu/bin/vitserve-bench-vim-vs-deit bash bench/vim_vs_deit.sh 2>&1 | \
      tee "$OUT/vimcross.txt"
    ;;
  spin)
    export SWEEP_MODELS="${SWEEP_MODELS:-deit_tiny_patch16_224}" NO_KSERVE=1 NO_JPEG=1 NO_RAW16=1 \
      SPLIT_CLIENTS=1 CONCURRENCY=1 SECONDS_EACH="${SECONDS_EACH:-4}"
    SERVE_FLAGS="--executor-idle-spin-us 0" bash bench/serve_sweep.sh "$OUT/anchors" \
      > "$OUT/anchors.log" 2>&1
    grep -E "alone:|raw_c1:" "$OUT/anchors.log"
    for r in $(seq 1 "${ROUNDS:-2}"); do
      for spin in ${SPIN_US:-2000} 0; do
        ANCHORS=0 SERVE_FLAGS="--executor-idle-spin-us $spin" \
          bash bench/serve_sweep.sh "$OUT/spin${spin}_r$r" > "$OUT/spin${spin}_r$r.log" 2>&1
        echo "spin $spin us, round $r: $(grep -E 'raw_c1:' "$OUT/spin${spin}_r$r.log")"
        grep -E " rtt_[a-z_]+:" "$OUT/spin${spin}_r$r.log" | sed 's/^/  /' || true
        grep -E "vitserve_(request|queue|preprocess|compute)_duration|compute_stage" \
          "$OUT/spin${spin}_r$r.log" | head -9
        grep -E "^  executor" "$OUT/spin${spin}_r$r.log" | sed 's/^/  CPU s /' || true
        # The polls that paid and those that ran out (since the server started: warm-up too).
        grep -h "^vitserve_executor_idle_polls_total" "$OUT/spin${spin}_r$r"/metrics_after_top_*.txt \
          2>/dev/null | sed 's/^/  /' || true
      done
    done
    # SPIN_LOADED="16 64": the same polls (the first of SPIN_US, then 0) where batches are small
    # but the executors are seldom idle long: what polling costs gRPC's threads in throughput.
    for c in ${SPIN_LOADED:-}; do
      for spin in ${SPIN_US%% *} 0; do
        ANCHORS=0 CONCURRENCY=$c SERVE_FLAGS="--executor-idle-spin-us $spin" \
          bash bench/serve_sweep.sh "$OUT/load_c${c}_spin$spin" > "$OUT/load_c${c}_spin$spin.log" 2>&1
        echo "spin $spin us, concurrency $c: $(grep -E "raw_c$c:" "$OUT/load_c${c}_spin$spin.log")"
        grep -E "^  executor" "$OUT/load_c${c}_spin$spin.log" | sed 's/^/  CPU s /' || true
      done
    done
    ;;
  issue11)
    # Every target of issue 11 in one call: one sweep of the three models (raw at 1 to 1,024
    # clients, JPEG and KServe for shvit_s1: FP32 and UINT8, tensors in the requests and in
    # shared memory, two interleaved rounds), its table with each target's verdict, then the
    # CPU target (bench/cpu_target.sh: two pinned cores as in run 20).
    SWEEP_MODELS="${SWEEP_MODELS:-shvit_s1 deit_tiny_patch16_224 vit_base_patch16_224}" \
      CONCURRENCY="${CONCURRENCY:-1 64 256 1024}" SECONDS_EACH="${SECONDS_EACH:-4}" \
      JPEG_MODELS="${JPEG_MODELS:-shvit_s1}" KSERVE_MODELS="${KSERVE_MODELS:-shvit_s1}" \
      KSERVE_ROUNDS="${KSERVE_ROUNDS:-2}" KSERVE_SHM=1 KSERVE_UINT8=1 \
      bash bench/serve_sweep.sh "$OUT/sweep" > "$OUT/sweep.log" 2>&1
    grep -E "^\[sweep|JPEG decoding" "$OUT/sweep.log"
    cat "$OUT/sweep/table.txt"
    for m in ${CPU_MODELS-shvit_s1 deit_tiny_patch16_224}; do
      MODEL=$m BUILD_DIR=build-gpu SERVER_CORES=0,1 CLIENT_CORES=4-7 ROUNDS=3 SECONDS_EACH=4 \
        bash bench/cpu_target.sh "$OUT/cpu_$m" 2>&1 | grep -E "round|median"
    done
    # The logs and results (no photos), as one file: the tool brings back only a few.
    (cd "$OUT" && shopt -s nullglob && tar -czf issue11.tar.gz --exclude='*.jpg' sweep sweep.log \
      cpu_*/) && rm -rf "$OUT/sweep" "$OUT"/cpu_*/
    ;;
  serverenv)
    export SWEEP_MODELS="${SWEEP_MODELS:-shvit_s1}" NO_KSERVE=1 NO_JPEG=1 NO_RAW16=1 \
      SPLIT_CLIENTS=1 CONCURRENCY="${CONCURRENCY:-1024}" SECONDS_EACH="${SECONDS_EACH:-4}"
    exps="GRPC_EXPERIMENTS=tcp_frame_size_tuning,tcp_rcv_lowat"
    IFS='|' read -r -a variants <<< "${ENV_VARIANTS:-$exps|$exps,tcp_read_chunks}"
    for r in $(seq 1 "${ROUNDS:-2}"); do
      for v in $(seq 0 "${#variants[@]}"); do
        server_env=""
        ((v > 0)) && server_env="${variants[v - 1]}"
        ANCHORS=$([[ $r == 1 && $v == 0 ]] && echo 1 || echo 0) SERVER_ENV="$server_env" \
          bash bench/serve_sweep.sh "$OUT/v${v}_r$r" > "$OUT/v${v}_r$r.log" 2>&1
        [[ $r == 1 && $v == 0 ]] || borrow_anchors "$OUT/v0_r1" "$OUT/v${v}_r$r"
        echo "round $r, environment '${server_env:-as it is}':"
        grep -E "raw_c[0-9]+:|minor page faults|vitserve_batch_size|\
stage_duration_seconds\[(forward|input)\]" "$OUT/v${v}_r$r.log" | awk '!seen[$0]++'
        grep -A6 "server CPU seconds by thread" "$OUT/v${v}_r$r.log" | head -7
        grep -E "model alone \(graph\)|^  raw_c[0-9]+ " "$OUT/v${v}_r$r/table.txt"
      done
    done
    ;;
  graphsizes)
    # Run 45: at 1,024 clients shvit_s1's batches averaged 91 images and each replayed the graph
    # of 128. The default buckets (powers of two) against GRAPH_SIZES (the same below 16, then
    # four per doubling), alternately, ROUNDS times: throughput, batch size and stage means,
    # with the sweep's timestamps (the gap from "serving" to the first row holds the captures).
    export SWEEP_MODELS="${SWEEP_MODELS:-shvit_s1}" NO_KSERVE=1 NO_JPEG=1 NO_RAW16=1 \
      SPLIT_CLIENTS=1 CONCURRENCY="${CONCURRENCY:-256 1024}" SECONDS_EACH="${SECONDS_EACH:-4}"
    dense="${GRAPH_SIZES:-1,2,4,8,16,20,24,28,32,40,48,56,64,80,96,112}"
    for r in $(seq 1 "${ROUNDS:-2}"); do
      for side in pow2 dense; do
        flags=""
        [[ $side == dense ]] && flags="--cuda-graph-batch-sizes=$dense"
        ANCHORS=$([[ $r == 1 && $side == pow2 ]] && echo 1 || echo 0) SERVE_FLAGS="$flags" \
          bash bench/serve_sweep.sh "$OUT/${side}_r$r" > "$OUT/${side}_r$r.log" 2>&1
        echo "$side, round $r: $(grep -E 'serving |raw_c[0-9]+:' "$OUT/${side}_r$r.log" | \
          sed 's/^\[sweep //' | tr '\n' ' ')"
        # The sweep's own table too (its rows say "vs alone" and "vs timm"), so that the
        # ratios come back in this step's output even when the logs under OUT do not.
        grep -E "alone:|model alone \(graph\)|^  raw_c[0-9]+ |vitserve_batch_size|\
stage_duration_seconds\[(forward|input)\]" "$OUT/${side}_r$r.log" | awk '!seen[$0]++'
      done
    done
    ;;
  patarget)
    # perf_analyzer's first request per context took about 3 s in every row of run 43 while
    # the server saw none slower than 25 ms: is it the name (a DNS query for localhost's IPv6
    # address, reproduced on the development machine)? The box's view of "localhost" and its
    # resolver, then kservepin's rounds with the tensors in shared memory, each pair with one
    # more perf_analyzer row sent to localhost:8001 beside the default 127.0.0.1:8001, every
    # perf_analyzer row with its latency tail (PA_EXPORT).
    getent ahosts localhost | head -4
    grep -v '^#' /etc/hosts | head -4
    grep -v '^#' /etc/resolv.conf | head -4
    export KSERVE_SHM=1 KSERVE_BYTES=0 PA_LOCALHOST_ROWS=1 PA_EXPORT=1 PA_SPLIT=0 KSERVE_SHARED=0 \
      KSERVE_ROUNDS="${KSERVE_ROUNDS:-2}" KSERVE_CONCURRENCY="${KSERVE_CONCURRENCY:-64}"
    ;&  # Falls through to kservepin with these settings.
  kservepin)
    # Two halves of the cores that share no physical core (hyperthread siblings together).
    read -r server_cpus client_cpus < <(python3 - <<'PY'
import glob
groups = sorted({open(p).read().strip() for p in
                 glob.glob("/sys/devices/system/cpu/cpu[0-9]*/topology/thread_siblings_list")},
                key=lambda g: int(g.replace("-", ",").split(",")[0]))
print(",".join(groups[:len(groups) // 2]), ",".join(groups[len(groups) // 2:]))
PY
    )
    echo "vitserve on cores $server_cpus, the clients on $client_cpus"
    export SWEEP_MODELS="${SWEEP_MODELS:-deit_tiny_patch16_224}" ANCHORS=0 NO_JPEG=1 NO_RAW16=1 \
      SPLIT_CLIENTS=1 CONCURRENCY=1 SECONDS_EACH="${SECONDS_EACH:-4}" \
      KSERVE_ROUNDS="${KSERVE_ROUNDS:-3}"
    # PA_SPLIT=1: each round also runs two perf_analyzer processes at concurrency 32 (summed);
    # with the CPU time each perf_analyzer row prints, that tells whether perf_analyzer is its
    # own limit (run 30 left FP32 at 0.60-0.65 of our client).
    SERVER_CPUS="$server_cpus" CLIENT_CPUS="$client_cpus" KSERVE_UINT8=1 \
      PA_SPLIT="${PA_SPLIT:-1}" bash bench/serve_sweep.sh "$OUT/pinned" > "$OUT/pinned.log" 2>&1
    # One grep, so that a line of both kinds prints once; the second line's patterns are
    # PA_EXPORT's tail lines (patarget) and a failed perf_analyzer row's reason.
    grep -E "KServe|infer/s|kserve_|malloc|max-threads|synchronous|localhost|\
requests:|over 25|start time|server's own|perf_analyzer: |no profile export" "$OUT/pinned.log"
    [[ "${KSERVE_SHARED:-1}" == 1 ]] || exit 0
    bash bench/serve_sweep.sh "$OUT/shared" > "$OUT/shared.log" 2>&1
    grep -E "KServe|infer/s|kserve_" "$OUT/shared.log"
    ;;
  variants)
    export SWEEP_MODELS="${SWEEP_MODELS:-shvit_s1}" SECONDS_EACH="${SECONDS_EACH:-3}" \
      CLIENT_FLAGS="${CLIENT_FLAGS---channels 64}"
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
