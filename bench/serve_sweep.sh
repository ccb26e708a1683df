#!/usr/bin/env bash
# The served-path sweep of issue 11, in one command on the GPU box (within 10 minutes): the
# anchors (timm in PyTorch, eager fp16 batch 256; our model alone from a CUDA graph at the
# server's max batch) and vitserve serving the same model (raw RGB8 at concurrency 1/64/256,
# photo-like JPEG 224x224 and 640x480, KServe through perf_analyzer when one is carried), all
# in the same run, then a table of ratios. Per-thread CPU time of the server (by thread name,
# from /proc) is printed for the raw run at the highest concurrency; with PROFILE=1 a gperftools
# CPU profile of that run is reported too (carry .prof/ with libprofiler.so, see below).
#
# On the GPU box, in the project root, with .devdeps/ carried (../shared/device/README.md):
#   bash bench/serve_sweep.sh [OUTDIR]
# Environment:
#   SWEEP_MODELS   models (default "shvit_s1 deit_tiny_patch16_224 vit_base_patch16_224")
#   MAX_BATCH      the server's --max-batch-size and the model-only batch (default 128)
#   QUEUE_DELAY_US the server's --max-queue-delay-us (default 1000)
#   SECONDS_EACH   seconds per served measurement (default 5)
#   CONCURRENCY    served concurrencies for raw images (default "1 64 256")
#   SERVE_FLAGS    more vitserve flags
#   RTT_IMAGE_SIZE the raw image of the round-trip rows after raw_c1 (default 224): the floor
#                  under a lone request from vitserve-bench-grpc-rtt, when it was staged
#   BUILD          1 (default when build-gpu/bin/vitserve is missing): build on the box first
#   SERVER_PRELOAD a library (or colon-separated list) to LD_PRELOAD into vitserve, e.g. another
#                  malloc (libtcmalloc_minimal.so.4) for an A/B against glibc's
#   SERVER_ENV     VAR=value words (space-separated) in vitserve's environment only, e.g.
#                  GRPC_EXPERIMENTS=tcp_frame_size_tuning,tcp_rcv_lowat (gRPC's own switches)
#   PROFILE        1: LD_PRELOAD .prof/libprofiler.so into vitserve (CPUPROFILE) for the raw
#                  run at the highest concurrency and print the top of google-pprof --text
#   PERF_ANALYZER  perf_analyzer to run against the KServe API (default $SWEEP_BUILD_DIR/bin/pa/
#                  perf_analyzer when bench/stage_gpu_binaries.sh staged it; libraries beside it
#                  are found through LD_LIBRARY_PATH)
#   SWEEP_BUILD_DIR  where the binaries are (default build-gpu: $SWEEP_BUILD_DIR/bin/vitserve, ...)
#   SWEEP_CLIENT   the vitserve-client to load with (default $SWEEP_BUILD_DIR/bin/vitserve-client)
#   CLIENT_FLAGS   more vitserve-client bench flags (default "--channels 64"; set it empty for one)
#   SPLIT_CLIENTS  client processes for one more raw row at the highest concurrency, the load
#                  split between them (default 2; 1: no such row): is the client the limit?
#   KSERVE_UINT8   1: after each model's runs, serve it again with --kserve-input-datatype=UINT8
#                  and repeat the KServe rows with UINT8 pixels (perf_analyzer and our client)
#   ALONE_FLAGS    vitserve-bench-model flags of the model-alone anchor (default --channels-last,
#                  as the server runs CUDA models; set it empty when SERVE_FLAGS has
#                  --channels-last=false)
#   ANCHORS        0: skip the timm and model-alone anchors (a second sweep in the same call,
#                  whose ratios then use the first one's anchors)
#   CPU_JPEG       1: after each model's runs, serve it again with --gpu-jpeg-decoding=false
#                  and repeat the JPEG rows as cpujpeg224_c*, cpujpeg640_c* (CPU decoding against
#                  the default, GPU decoding with nvJPEG, in the same call)
#   JPEG_ONLY      1: of the served rows, only the JPEG ones (and CPU_JPEG's)
#   JPEG_MODELS    the models that get the JPEG rows (and CPU_JPEG's), default all of
#                  SWEEP_MODELS (the issue states its JPEG targets for shvit_s1)
#   KSERVE_MODELS  the models that get the KServe rows (and KSERVE_UINT8's), default all
#   NO_JPEG        1: no JPEG rows
#   NO_KSERVE      1: no KServe rows (KSERVE_UINT8's still run)
#   PA_ASYNC       1: each perf_analyzer row once more with --async (perf_analyzer_async_*)
#   KSERVE_ROUNDS  N > 1: the KServe rows become N interleaved pairs (perf_analyzer --async,
#                  then our client on perf_analyzer's 11 connections), compared by their medians
#                  (single rows vary by about 10% on the box, the size of the issue's margin)
#   KSERVE_CONCURRENCY  (with KSERVE_ROUNDS) the concurrencies of each round's pairs, default 64:
#                  a closed loop completes concurrency / (server latency + the client's own
#                  time per request) requests per second, so two load generators agree only
#                  where the server's queue, not their own overhead, sets the cycle
#   KSERVE_SHM     1 (with KSERVE_ROUNDS): each round's pairs once more with the tensors in
#                  system shared memory (Triton's extension; vitserve gets --allow-client-shm):
#                  perf_analyzer --shared-memory system against vitserve-client
#                  --shared-memory system. Without bytes in the requests perf_analyzer no longer
#                  copies each input into its records, which limits it above low concurrency
#                  (docs/performance.md, runs 32-34). Rows *_cN_shm_rR; the table's
#                  "KServe agreement, shared memory" lines compare their medians
#   PA_MAX_THREADS_ROWS  "8 16" (with KSERVE_ROUNDS): each pair gets one more perf_analyzer row
#                  with --max-threads N (rows *_cC_tN_rR; with KSERVE_SHM, *_cC_shm_tN_rR instead,
#                  the tensors in shared memory, where its input copies no longer limit it). In
#                  concurrency mode perf_analyzer otherwise starts one worker thread per
#                  outstanding request, each with its own client (and completion-queue thread):
#                  is the hand-off between those threads what sets its cycle? (Run 42: no.)
#   PA_SYNC_ROWS   1 (with KSERVE_ROUNDS): each pair gets one more perf_analyzer row in its
#                  synchronous mode (one thread per outstanding request, each blocked in its own
#                  call: no completion-queue thread between the reply and the next request);
#                  rows perf_analyzer_sync_DTYPE_cC_rR (_shm_ with KSERVE_SHM)
#   PA_LOCALHOST_ROWS  1 (with KSERVE_ROUNDS): each pair gets one more perf_analyzer --async row
#                  sent to localhost:8001 instead of PA_TARGET (rows *_cC_localhost_rR): does the
#                  name cost its first requests seconds (PA_TARGET below)?
#   KSERVE_BYTES   0 (with KSERVE_SHM): the rounds' pairs with the tensors in shared memory only
#   PA_EXPORT      1: every perf_analyzer row also writes its per-request timestamps
#                  (--profile-export-file) and bench/pa_export_tail.py prints their tail (the
#                  mean against p50-p99.9 and max, whether the slow requests come together) with
#                  the server's own slow requests over the row (/metrics before and after)
#   PA_TARGET      where perf_analyzer sends its requests, default 127.0.0.1:8001 (runs up to
#                  43: localhost:8001). perf_analyzer's gRPC resolves a name with getaddrinfo,
#                  which asks the DNS server for localhost's IPv6 address as its workers connect
#                  (strace on the development machine); on a box whose DNS server cannot be
#                  reached that wait falls on each context's first request (run 43: 2-3 s).
#                  Our client's gRPC sends no DNS query for localhost. PA_LOCALHOST_ROWS (`bash
#                  bench/gpu_pending.sh patarget`) compares the two targets
#   PA_SPLIT       1 (with KSERVE_ROUNDS): each round also runs two perf_analyzer processes at
#                  concurrency 32, summed (is perf_analyzer its own limit?)
#   PA_MALLOC_ROWS "tcmalloc tuned" (with KSERVE_ROUNDS): each round also runs perf_analyzer
#                  with another allocator: tcmalloc preloaded (the one vitserve links, from
#                  $B/bin/lib) or glibc's with vitserve's thresholds (mmap 32 MiB, trim 256 MiB).
#                  perf_analyzer copies each request's input into its per-request records
#                  (InferContext::GetInputs, several copies of 150-602 KB, freed in bursts at
#                  each measurement window), which glibc's default allocator serves with fresh
#                  pages: is that its limit? Rows perf_analyzer_async_DTYPE_c64_KIND_rN
#   PA_SHARE       N: one more KServe pair, perf_analyzer --async sharing a connection among at
#                  most N of its contexts (TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT) and our
#                  client with as many connections
#   SERVER_CPUS    CPU list (taskset -c) for vitserve, e.g. 0-7; CLIENT_CPUS the same for the
#                  load generators (vitserve-client, perf_analyzer), e.g. 8-15: with both, the
#                  server and the clients no longer take each other's cores, so a row measures
#                  the server on its cores unless the client's cores are the limit
#   NO_RAW16       1: no row of 16 images per request
#   PA_FLAGS       more perf_analyzer flags for every perf_analyzer row (e.g. --max-threads 64)
set -uo pipefail
OUT="${1:-${OUT:-/tmp/vitserve-sweep}}"
mkdir -p "$OUT"
MODELS="${SWEEP_MODELS:-shvit_s1 deit_tiny_patch16_224 vit_base_patch16_224}"
MAX_BATCH="${MAX_BATCH:-128}"
QUEUE_DELAY_US="${QUEUE_DELAY_US:-1000}"
T="${SECONDS_EACH:-5}"
CONCURRENCY="${CONCURRENCY:-1 64 256}"
SERVE_FLAGS="${SERVE_FLAGS:-}"
[[ "${KSERVE_SHM:-0}" == 1 ]] && SERVE_FLAGS="$SERVE_FLAGS --allow-client-shm"
B="${SWEEP_BUILD_DIR:-build-gpu}"  # binaries in $B/bin
C="${SWEEP_CLIENT:-$B/bin/vitserve-client}"
# 64 connections by default: one connection's reads are handled by one gRPC thread at a time,
# so a few connections cap what 1024 clients can send (runs 17-18, docs/performance.md), where a
# served model's clients each have their own.
CLIENT_FLAGS="${CLIENT_FLAGS---channels 64}"
PA="${PERF_ANALYZER:-$B/bin/pa/perf_analyzer}"
SERVER_TASKSET=(); [[ -n "${SERVER_CPUS:-}" ]] && SERVER_TASKSET=(taskset -c "$SERVER_CPUS")
CLIENT_TASKSET=(); [[ -n "${CLIENT_CPUS:-}" ]] && CLIENT_TASKSET=(taskset -c "$CLIENT_CPUS")
RESULTS="$OUT/results.tsv"
log() { echo "[sweep $(date +%T)] $*"; }
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RESULTS"; }  # model, measurement, img/s
: > "$RESULTS"

source .devdeps/bootstrap.sh > /dev/null || exit 1
TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB:/usr/local/cuda/lib64:$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
nproc | sed 's/^/cores: /'

if [[ "${BUILD:-}" == 1 || ! -x $B/bin/vitserve ]]; then
  log "configure + build"
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DVITSERVE_BUILD_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$DEPS_CMAKE_PREFIX_PATH" $DEPS_CMAKE_ARGS > "$OUT/configure.log" 2>&1 \
    || { tail -40 "$OUT/configure.log"; exit 1; }
  ninja -C $B vitserve vitserve-client vitserve-bench-model > "$OUT/build.log" 2>&1 \
    || { grep -B5 -A20 "error" "$OUT/build.log" | head -80; exit 1; }
  log "built"
fi

# Photo-like JPEGs (bench/make_photos.py says why not white noise).
python3 bench/make_photos.py "$OUT" 224x224 640x480 || exit 1
ls -la "$OUT"/photo_*.jpg | awk '{print "photo: " $NF " " $5 " bytes"}'

# --- anchors: timm eager fp16 batch 256, channels_last, random weights -------------------------
if [[ "${ANCHORS:-1}" != 0 ]]; then
log "timm anchors"
python3 bench/timm_anchor.py $MODELS | tee "$OUT/timm.txt"
grep -P '^timm\t' "$OUT/timm.txt" | while IFS=$'\t' read -r _ m v; do record "$m" timm_eager_b256 "$v"; done

# --- our model alone, CUDA graph at MAX_BATCH (and smaller batches) -------------------------------------------------
for m in $MODELS; do
  # ALONE_FLAGS: the server's memory format (channels-last by default since 2026-12-03).
  $B/bin/vitserve-bench-model --model "$m" --device cuda --precision fp16 --batch-sizes "1,16,32,64,$MAX_BATCH" \
    --cuda-graphs --seconds 2 ${ALONE_FLAGS---channels-last} > "$OUT/model_$m.txt" 2>&1
  v=$(awk -v b="$MAX_BATCH" '$1 == b {print $2}' "$OUT/model_$m.txt")
  ms1=$(awk '$1 == 1 {print $3}' "$OUT/model_$m.txt")
  record "$m" model_graph_b$MAX_BATCH "${v:-nan}"
  record "$m" model_graph_b1_ms "${ms1:-nan}"
  log "$m alone: $v img/s at batch $MAX_BATCH, $ms1 ms at batch 1"
  grep -E '^ +[0-9]+ ' "$OUT/model_$m.txt"  # Every batch size: the served batches are smaller.
done
fi  # ANCHORS

# Per-thread CPU seconds of process $1, by thread name: "name seconds" lines.
thread_cpu() {
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(cat "$t/comm" 2>/dev/null)" "$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null)"
  done | awk -v hz="$(getconf CLK_TCK)" '{cpu[$1] += $2} END {for (n in cpu) printf "%s %.2f\n", n, cpu[n] / hz}'
}

# thread_cpu_delta BEFORE AFTER N: the N threads (by name) that used the most CPU between two
# thread_cpu snapshots, in seconds.
thread_cpu_delta() {
  join <(sort "$1") <(sort "$2") | awk '{printf "  %-16s %7.2f\n", $1, $3 - $2}' \
    | sort -k2 -nr | head -"$3"
}

bench() {  # model label args... -> records img/s
  local m=$1 label=$2; shift 2
  # The client's own CPU seconds too (it shares the box's cores with the server): a load
  # generator near the cores' limit would cap the numbers, not the server.
  python3 -c 'import resource, subprocess, sys
code = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1], "w"))
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"client_cpu_s {u.ru_utime + u.ru_stime:.2f}", file=sys.stderr)
sys.exit(code)' "$OUT/bench_${m}_$label.json" \
    "${CLIENT_TASKSET[@]}" $C bench --server localhost:8001 --model "$m" --duration "$T" \
    --warmup 1 --json $CLIENT_FLAGS "$@" 2> "$OUT/bench_${m}_$label.err"
  local v p50 cpu
  v=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(round(d['throughput_img_s']))" "$OUT/bench_${m}_$label.json" 2>/dev/null)
  p50=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['p50_ms'])" "$OUT/bench_${m}_$label.json" 2>/dev/null)
  cpu=$(awk '$1 == "client_cpu_s" {print $2}' "$OUT/bench_${m}_$label.err")
  record "$m" "$label" "${v:-nan}"
  record "$m" "${label}_p50_ms" "${p50:-nan}"
  log "$m $label: ${v:-?} img/s, p50 ${p50:-?} ms, client CPU ${cpu:-?} s in $((T + 1)) s"
}

# The floor under the lone request (row raw_c1), from vitserve-bench-grpc-rtt, a client of one
# thread waiting on its own completion queue: the same raw request for a model the server does
# not have (answered NOT_FOUND on the gRPC thread: gRPC and the kernel both ways, no model),
# back to back and with raw_c1's p50 as an idle gap before each call (a closed loop waits that
# long for its reply, and the threads sleep meanwhile); then the served model
# from the same client (rtt_served: the lone request without our load generator's own threads).
round_trip_floor() {  # model
  local m=$1 rtt="$B/bin/vitserve-bench-grpc-rtt" gap label
  [[ -x $rtt ]] || return 0
  gap=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['p50_ms'] * 1000))" \
    "$OUT/bench_${m}_raw_c1.json" 2>/dev/null || echo 500)
  for label in "rtt_floor:0" "rtt_floor_gap:$gap" "rtt_served:0"; do
    # The sweep's models take 224 px (RTT_IMAGE_SIZE for another); the served model resizes any.
    local args=(--server localhost:8001 --image_size "${RTT_IMAGE_SIZE:-224}"
                --gap_us "${label#*:}")
    [[ ${label%%:*} == rtt_served ]] && args+=(--model "$m" --calls 1000)
    "${CLIENT_TASKSET[@]}" "$rtt" "${args[@]}" > "$OUT/${label%%:*}_$m.txt" 2>&1
    log "$m ${label%%:*}: $(head -1 "$OUT/${label%%:*}_$m.txt" | sed 's/^[^,]*, //')"
  done
}

# The same load from $SPLIT_CLIENTS client processes at once (each with its share of the
# concurrency), throughputs summed: when this row beats the one-client row at the same total
# concurrency, the load generator, not the server, was the limit.
bench_split() {  # model label clients concurrency args...
  local m=$1 label=$2 n=$3 c=$4 i v
  shift 4
  local pids=()
  for i in $(seq 1 "$n"); do
    "${CLIENT_TASKSET[@]}" $C bench --server localhost:8001 --model "$m" --duration "$T" \
      --warmup 1 --json $CLIENT_FLAGS --concurrency $((c / n)) "$@" \
      > "$OUT/bench_${m}_${label}_$i.json" 2> "$OUT/bench_${m}_${label}_$i.err" &
    pids+=($!)
  done
  wait "${pids[@]}"
  v=$(python3 -c 'import json, sys; print(round(sum(json.load(open(f))["throughput_img_s"] for f in sys.argv[1:])))' \
      "$OUT"/bench_"${m}_${label}"_*.json 2>/dev/null)
  record "$m" "$label" "${v:-nan}"
  log "$m $label: ${v:-?} img/s from $n client processes"
}

# /metrics of the running server into $1.
scrape() {
  python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8002/metrics').read().decode())" > "$1" 2>/dev/null
}
# Where a served image's time went (histogram sum / count): over snapshot $2, or between
# snapshots $3 (before) and $2 (after). $1 says which window.
stage_means() {
  python3 - "$@" <<'PY'
import re, sys
def read(path):
    sums, counts = {}, {}
    for line in open(path):
        m = re.match(r'(vitserve_\w+?)_(sum|count)\{([^}]*)\} (\S+)', line)
        if not m:
            continue
        stage = re.search(r'stage="(\w+)"', m.group(3))
        key = m.group(1) + (f"[{stage.group(1)}]" if stage else "")
        table = sums if m.group(2) == "sum" else counts
        table[key] = table.get(key, 0) + float(m.group(4))
    return sums, counts
sums, counts = read(sys.argv[2])
if len(sys.argv) > 3:
    before_sums, before_counts = read(sys.argv[3])
    sums = {k: v - before_sums.get(k, 0) for k, v in sums.items()}
    counts = {k: v - before_counts.get(k, 0) for k, v in counts.items()}
print(f"server-side means {sys.argv[1]}:")
for key in sorted(sums):
    if counts.get(key):
        unit = "" if key.startswith("vitserve_batch_size") else " ms"
        scale = 1 if unit == "" else 1e3
        print(f"  {key:58s} {sums[key] / counts[key] * scale:9.3f}{unit}  (n={counts[key]:.0f})")
PY
}

# start_server MODEL LOG [VAR=value ...] [-- extra server flags]: vitserve in the background
# ($SERVER), waiting until it answers health checks; fails (and kills it) when it does not.
start_server() {
  local m=$1 log_file=$2 envs=() extra=()
  shift 2
  while (($#)); do
    if [[ $1 == -- ]]; then shift; extra=("$@"); break; fi
    envs+=("$1"); shift
  done
  setsid env "${envs[@]}" "${SERVER_TASKSET[@]}" \
    $B/bin/vitserve --model "$m" --device cuda --precision fp16 --max-batch-size "$MAX_BATCH" \
    --max-queue-delay-us "$QUEUE_DELAY_US" --max-queue-size 16384 $SERVE_FLAGS "${extra[@]}" \
    > "$log_file" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 600); do
    kill -0 $SERVER 2>/dev/null || break
    $C health --server localhost:8001 > /dev/null 2>&1 && return 0
    sleep 0.25
  done
  log "$m: server not ready"; tail -20 "$log_file"; kill -KILL $SERVER 2>/dev/null
  return 1
}

# kserve_rows MODEL DTYPE: KServe ModelInfer, [1,3,S,S] tensors of the datatype the running
# server's metadata declares, concurrency 64, from our client and from Triton's perf_analyzer
# (the issue wants the two within 10%). perf_analyzer's gRPC client shares a connection among
# at most 6 of its contexts (TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT): 11 connections at
# concurrency 64, counted with ss on the development machine. Our client's like-for-like row
# opens as many (_pa_conns). (Counted again with ss in session 35, perf_analyzer 2.41: 11 in its
# synchronous mode, 3 with --async, which the rounds below use.)
kserve_rows() {
  local m=$1 dtype=$2 v p50 r
  if [[ "${KSERVE_ROUNDS:-1}" -gt 1 && -x "$PA" ]]; then
    # KSERVE_ROUNDS=N: N interleaved pairs, perf_analyzer --async then our client; the table's
    # "KServe agreement" lines compare the medians.
    local c
    for r in $(seq 1 "$KSERVE_ROUNDS"); do
      # KSERVE_CONCURRENCY: each pair at these concurrencies; our client opens one connection
      # per 6 of perf_analyzer's contexts (it has one more than its concurrency), as
      # perf_analyzer's synchronous mode does; its --async mode opened fewer (above).
      for c in ${KSERVE_CONCURRENCY:-64}; do
        if [[ "${KSERVE_BYTES:-1}" == 1 ]]; then
          PA_CONCURRENCY=$c pa_row "$m" perf_analyzer_async_${dtype}_c${c}_r$r --async
          bench "$m" kserve_${dtype}_c${c}_pa_conns_r$r --input tensor --concurrency "$c" \
            --channels $(( (c + 1 + 5) / 6 ))
        fi
        # The extra perf_analyzer rows below send the tensors as the last pair does.
        local place="" place_flags=()
        if [[ "${KSERVE_SHM:-0}" == 1 ]]; then
          place=_shm place_flags=(--shared-memory system)
          PA_CONCURRENCY=$c pa_row "$m" perf_analyzer_async_${dtype}_c${c}_shm_r$r --async \
            --shared-memory system
          bench "$m" kserve_${dtype}_c${c}_shm_r$r --input tensor --concurrency "$c" \
            --channels $(( (c + 1 + 5) / 6 )) --shared-memory system
        fi
        local t
        for t in ${PA_MAX_THREADS_ROWS:-}; do
          PA_CONCURRENCY=$c pa_row "$m" perf_analyzer_async_${dtype}_c${c}${place}_t${t}_r$r \
            --async "${place_flags[@]}" --max-threads "$t"
        done
        if [[ "${PA_SYNC_ROWS:-0}" == 1 ]]; then
          PA_CONCURRENCY=$c pa_row "$m" perf_analyzer_sync_${dtype}_c${c}${place}_r$r \
            "${place_flags[@]}"
        fi
        if [[ "${PA_LOCALHOST_ROWS:-0}" == 1 ]]; then
          PA_TARGET=localhost:8001 PA_CONCURRENCY=$c pa_row "$m" \
            perf_analyzer_async_${dtype}_c${c}${place}_localhost_r$r --async "${place_flags[@]}"
        fi
      done
      # PA_SPLIT=1: two perf_analyzer processes at concurrency 32 each, summed: more than one
      # process at 64 means perf_analyzer itself, not the server, was the limit.
      [[ "${PA_SPLIT:-0}" == 1 ]] && pa_split_row "$m" perf_analyzer_async_${dtype}_2x32_r$r --async
      local kind
      for kind in ${PA_MALLOC_ROWS:-}; do
        PA_ENV="$(pa_malloc_env "$kind")" || return 1
        PA_ENV="$PA_ENV" pa_row "$m" perf_analyzer_async_${dtype}_c64_${kind}_r$r --async
      done
    done
    return 0
  fi
  bench "$m" kserve_${dtype}_c64 --input tensor --concurrency 64
  bench "$m" kserve_${dtype}_c64_pa_conns --input tensor --concurrency 64 --channels 11
  [[ -x "$PA" ]] || return 0
  pa_row "$m" perf_analyzer_${dtype}_c64
  # PA_ASYNC=1: once more in perf_analyzer's asynchronous mode (a few threads and completion
  # queues), where its default, synchronous mode blocks one thread per outstanding request.
  [[ "${PA_ASYNC:-0}" == 1 ]] && pa_row "$m" perf_analyzer_async_${dtype}_c64 --async
  # PA_SHARE=N: perf_analyzer (asynchronous) sharing a connection among at most N contexts
  # instead of 6, and our client with as many connections (ceil(64 / N)).
  if [[ -n "${PA_SHARE:-}" ]]; then
    bench "$m" kserve_${dtype}_c64_share$PA_SHARE --input tensor --concurrency 64 \
      --channels $(( (64 + PA_SHARE - 1) / PA_SHARE ))
    TRITON_CLIENT_GRPC_CHANNEL_MAX_SHARE_COUNT=$PA_SHARE \
      pa_row "$m" perf_analyzer_async_${dtype}_c64_share$PA_SHARE --async
  fi
}
# pa_malloc_env KIND: the environment (VAR=VALUE words) that gives perf_analyzer the allocator
# PA_MALLOC_ROWS names.
pa_malloc_env() {
  case "$1" in
    tcmalloc)
      [[ -f "$B/bin/lib/libtcmalloc_minimal.so.4" ]] || { log "no $B/bin/lib/libtcmalloc_minimal.so.4"; return 1; }
      echo "LD_PRELOAD=$PWD/$B/bin/lib/libtcmalloc_minimal.so.4" ;;
    tuned) echo "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456" ;;
    *) log "PA_MALLOC_ROWS: unknown allocator '$1' (tcmalloc or tuned)"; return 1 ;;
  esac
}

# run_pa MODEL CONCURRENCY OUTFILE [FLAGS...]: one perf_analyzer run (batch 1, 3-second time
# windows, at most three) on the clients' cores, with PA_ENV's VAR=VALUE words in its
# environment (pa_malloc_env); its output into OUTFILE.
run_pa() {
  local m=$1 concurrency=$2 out=$3
  shift 3
  # shellcheck disable=SC2086  # PA_ENV and PA_FLAGS: words.
  env ${PA_ENV:-} LD_LIBRARY_PATH="$(dirname "$PA"):$LD_LIBRARY_PATH" "${CLIENT_TASKSET[@]}" \
    "$PA" -m "$m" -i grpc -u "${PA_TARGET:-127.0.0.1:8001}" --concurrency-range "$concurrency" \
    --measurement-interval 3000 --measurement-mode time_windows \
    --max-trials 3 --stability-percentage 999 -b 1 ${PA_FLAGS:-} "$@" > "$out" 2>&1
}

# pa_reason FILE LABEL: why a perf_analyzer run reported no throughput (its output's last two
# lines, e.g. "Failed to obtain stable measurement"), each under LABEL.
pa_reason() { tail -2 "$1" | sed "s/^/  $2: perf_analyzer: /"; }

# pa_row MODEL NAME [FLAGS...]: perf_analyzer (run_pa) at concurrency PA_CONCURRENCY (default
# 64), recorded as NAME. The log line also gives perf_analyzer's CPU time (user + system, from
# bash's `time`) over its whole run, as the client rows give vitserve-client's: is the load
# generator its own limit?
pa_row() {
  local m=$1 name=$2 v p50 timing wall user sys export_flags=()
  shift 2
  if [[ "${PA_EXPORT:-0}" == 1 ]]; then
    export_flags=(--profile-export-file "$OUT/pa_${m}_${name}.json")
    rm -f "$OUT/pa_${m}_${name}.json"  # perf_analyzer refuses a path that exists.
    scrape "$OUT/pa_${m}_${name}_metrics_before.txt"
  fi
  timing=$( { TIMEFORMAT='%R %U %S'; time run_pa "$m" "${PA_CONCURRENCY:-64}" \
    "$OUT/pa_${m}_${name}.txt" "$@" "${export_flags[@]}"; } 2>&1 )
  read -r wall user sys <<< "$timing"
  v=$(grep -oP 'throughput: \K[0-9.]+' "$OUT/pa_${m}_${name}.txt" | tail -1)
  p50=$(grep -oP 'p50 latency: \K[0-9]+' "$OUT/pa_${m}_${name}.txt" | tail -1)
  record "$m" "$name" "${v:-nan}"
  [[ -n "$p50" ]] && record "$m" "${name}_p50_ms" "$(awk -v u="$p50" 'BEGIN {print u / 1000}')"
  log "$m $name: ${v:-?} infer/s (KServe), perf_analyzer CPU" \
    "$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN {printf "%.2f", u + s}') s in ${wall:-?} s"
  # No throughput: say why; the summary counts the row as failed.
  [[ -z "$v" ]] && pa_reason "$OUT/pa_${m}_${name}.txt" "$name"
  if [[ "${PA_EXPORT:-0}" == 1 ]]; then
    # The tail of its latencies and the server's own slow requests over the same row; the
    # export (tens of MB) is not kept.
    if [[ -s "$OUT/pa_${m}_${name}.json" ]]; then
      scrape "$OUT/pa_${m}_${name}_metrics_after.txt"
      python3 bench/pa_export_tail.py "$OUT/pa_${m}_${name}.json" \
        --metrics "$OUT/pa_${m}_${name}_metrics_after.txt" \
        --metrics-before "$OUT/pa_${m}_${name}_metrics_before.txt" | sed "s/^/  $name: /"
    else
      echo "  $name: no profile export (perf_analyzer wrote none)"
    fi
    rm -f "$OUT/pa_${m}_${name}.json" "$OUT/pa_${m}_${name}"_metrics_*.txt
  fi
}

# pa_split_row MODEL NAME [FLAGS...]: two perf_analyzer processes (run_pa) at concurrency 32 at
# once, their throughputs summed, recorded as NAME.
pa_split_row() {
  local m=$1 name=$2 i v pids=()
  shift 2
  for i in 1 2; do
    run_pa "$m" 32 "$OUT/pa_${m}_${name}_$i.txt" "$@" &
    pids+=($!)
  done
  wait "${pids[@]}"  # Not the server, which runs in the background too.
  v=$(for i in 1 2; do grep -oP 'throughput: \K[0-9.]+' "$OUT/pa_${m}_${name}_$i.txt" | tail -1; done \
      | awk '{s += $1; n++} END {if (n == 2) printf "%.0f", s}')
  record "$m" "$name" "${v:-nan}"
  log "$m $name: ${v:-?} infer/s (KServe, two perf_analyzer processes)"
  # A process without a throughput: its reason.
  for i in 1 2; do
    grep -q 'throughput: ' "$OUT/pa_${m}_${name}_$i.txt" ||
      pa_reason "$OUT/pa_${m}_${name}_$i.txt" "$name ($i of 2)"
  done
}

top_c=${CONCURRENCY##* }
# in_list WORD "LIST": is WORD one of LIST's words?
in_list() { [[ " $2 " == *" $1 "* ]]; }
# jpeg_rows MODEL PREFIX: the JPEG rows against the running server (224x224 and 640x480 photos,
# at the highest concurrency and at 1).
jpeg_rows() {
  bench "$1" ${2}224_c$top_c --input jpeg --image "$OUT/photo_224x224.jpg" --concurrency "$top_c"
  bench "$1" ${2}640_c$top_c --input jpeg --image "$OUT/photo_640x480.jpg" --concurrency "$top_c"
  bench "$1" ${2}224_c1 --input jpeg --image "$OUT/photo_224x224.jpg" --concurrency 1
  bench "$1" ${2}640_c1 --input jpeg --image "$OUT/photo_640x480.jpg" --concurrency 1
}
for m in $MODELS; do
  log "serving $m: fp16, max batch $MAX_BATCH, queue delay $QUEUE_DELAY_US us"
  PRELOAD="${SERVER_PRELOAD:-}"
  PROFILE_ENV=()
  if [[ "${PROFILE:-}" == 1 ]]; then
    PRELOAD="$PWD/.prof/libprofiler.so${PRELOAD:+:$PRELOAD}"
    # With CPUPROFILESIGNAL, gperftools profiles only between two SIGUSR2s (the raw run at the
    # highest concurrency, below) and writes $OUT/cpu_$m.prof.0.
    PROFILE_ENV=(CPUPROFILE="$OUT/cpu_$m.prof" CPUPROFILESIGNAL=12 CPUPROFILE_FREQUENCY=250)
  fi
  # shellcheck disable=SC2086 # SERVER_ENV is a list of words.
  start_server "$m" "$OUT/server_$m.log" \
    ${PRELOAD:+LD_PRELOAD=$PRELOAD LD_LIBRARY_PATH=$PWD/.prof:$LD_LIBRARY_PATH} "${PROFILE_ENV[@]}" \
    ${SERVER_ENV:-} || continue
  grep -i "jpeg decoding" "$OUT/server_$m.log" | head -1
  for c in $CONCURRENCY; do
    [[ "${JPEG_ONLY:-0}" == 1 ]] && break
    if [[ $c == "$top_c" ]]; then
      thread_cpu $SERVER > "$OUT/threads_before_$m.txt"
      faults_before=$(awk '{print $10}' /proc/$SERVER/stat)
      scrape "$OUT/metrics_before_top_$m.txt"
      [[ "${PROFILE:-}" == 1 ]] && kill -USR2 $SERVER  # Profile this run only.
    fi
    bench "$m" raw_c$c --input raw --concurrency "$c"
    [[ $c == 1 ]] && round_trip_floor "$m"
    if [[ $c == "$top_c" ]]; then
      [[ "${PROFILE:-}" == 1 ]] && kill -USR2 $SERVER
      thread_cpu $SERVER > "$OUT/threads_after_$m.txt"
      # Minor page faults (fresh memory touched): a copy into pages the allocator has just
      # returned to the kernel pays one per 4 KiB inside the copy.
      echo "server minor page faults during raw_c$c: \
$(( $(awk '{print $10}' /proc/$SERVER/stat) - faults_before ))"
      scrape "$OUT/metrics_after_top_$m.txt"
      stage_means "during raw_c$c" "$OUT/metrics_after_top_$m.txt" "$OUT/metrics_before_top_$m.txt"
      echo "server CPU seconds by thread during raw_c$c ($T s + 1 s warm-up):"
      thread_cpu_delta "$OUT/threads_before_$m.txt" "$OUT/threads_after_$m.txt" 12
    fi
  done
  if [[ "${SPLIT_CLIENTS:-2}" -gt 1 && "${JPEG_ONLY:-0}" != 1 ]]; then
    bench_split "$m" "raw_c${top_c}_${SPLIT_CLIENTS:-2}clients" "${SPLIT_CLIENTS:-2}" "$top_c" --input raw
  fi
  [[ "${JPEG_ONLY:-0}" != 1 && "${NO_RAW16:-0}" != 1 ]] && \
    bench "$m" raw16_c32 --input raw --batch 16 --concurrency 32
  jpeg=0 kserve=0
  [[ "${NO_JPEG:-0}" != 1 ]] && in_list "$m" "${JPEG_MODELS:-$MODELS}" && jpeg=1
  in_list "$m" "${KSERVE_MODELS:-$MODELS}" && kserve=1
  if [[ $jpeg == 1 ]]; then
    thread_cpu $SERVER > "$OUT/threads_before_jpeg_$m.txt"
    jpeg_rows "$m" jpeg
    thread_cpu $SERVER > "$OUT/threads_after_jpeg_$m.txt"
    echo "server CPU seconds by thread during the JPEG rows:"
    thread_cpu_delta "$OUT/threads_before_jpeg_$m.txt" "$OUT/threads_after_jpeg_$m.txt" 8
  fi
  [[ "${JPEG_ONLY:-0}" != 1 && "${NO_KSERVE:-0}" != 1 && $kserve == 1 ]] && kserve_rows "$m" fp32
  scrape "$OUT/metrics_$m.txt"
  stage_means "over the model's runs" "$OUT/metrics_$m.txt"
  kill -TERM $SERVER; wait $SERVER 2>/dev/null
  if [[ "${CPU_JPEG:-0}" == 1 && $jpeg == 1 ]]; then
    if start_server "$m" "$OUT/server_${m}_cpujpeg.log" -- --gpu-jpeg-decoding=false; then
      thread_cpu $SERVER > "$OUT/threads_before_cpujpeg_$m.txt"
      jpeg_rows "$m" cpujpeg
      thread_cpu $SERVER > "$OUT/threads_after_cpujpeg_$m.txt"
      echo "server CPU seconds by thread during the JPEG rows (CPU decoding):"
      thread_cpu_delta "$OUT/threads_before_cpujpeg_$m.txt" "$OUT/threads_after_cpujpeg_$m.txt" 8
      scrape "$OUT/metrics_cpujpeg_$m.txt"
      stage_means "CPU JPEG decoding, over its runs" "$OUT/metrics_cpujpeg_$m.txt"
      kill -TERM $SERVER; wait $SERVER 2>/dev/null
    fi
  fi
  if [[ "${KSERVE_UINT8:-0}" == 1 && $kserve == 1 ]]; then
    # The same KServe rows with UINT8 pixels: a server whose metadata declares UINT8, so that
    # perf_analyzer (which sends what the metadata declares) and our client both send them.
    if start_server "$m" "$OUT/server_${m}_uint8.log" -- --kserve-input-datatype=UINT8; then
      kserve_rows "$m" uint8
      kill -TERM $SERVER; wait $SERVER 2>/dev/null
    fi
  fi
  if [[ "${PROFILE:-}" == 1 && -s "$OUT/cpu_$m.prof.0" ]]; then
    echo "== CPU profile of vitserve serving $m (top 40 by own time)"
    perl .prof/pprof --text --nodecount=40 $B/bin/vitserve "$OUT/cpu_$m.prof.0" 2> /dev/null | head -48
    echo "== the same profile, top 60 by cumulative time"
    perl .prof/pprof --text --cum --nodecount=60 $B/bin/vitserve "$OUT/cpu_$m.prof.0" 2> /dev/null | head -68
  fi
done

log "table"
python3 bench/sweep_table.py "$RESULTS" | tee "$OUT/table.txt"
log "done"
