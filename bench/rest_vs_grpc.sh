#!/usr/bin/env bash
# HTTP/REST against gRPC with Triton's perf_analyzer: one vitserve, one model, the same
# concurrency, KServe infer over gRPC, over HTTP with binary tensors, and over HTTP with JSON
# tensors, each ROUNDS times interleaved (the machine is noisy: compare within one run).
#   bench/rest_vs_grpc.sh [MODEL] [CONCURRENCY] [ROUNDS]     (default shvit_s1 8 2)
# Environment: DEVICE (default cpu), SECONDS_EACH (measurement window, default 5).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL="${1:-shvit_s1}"; CONCURRENCY="${2:-8}"; ROUNDS="${3:-2}"
DEVICE="${DEVICE:-cpu}"; WINDOW_MS=$(( ${SECONDS_EACH:-5} * 1000 ))
PA=.venv/bin/perf_analyzer
[ -x "$PA" ] || { echo "perf_analyzer is missing from .venv (scripts/setup.sh)"; exit 2; }
# The PyPI perf_analyzer links libcudart.so.12 (no GPU is used): the wheel in .venv has it.
CUDART="$(.venv/bin/python -c 'import nvidia.cuda_runtime, pathlib; print(pathlib.Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib")')"
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GRPC=$(port); REST=$(port); HTTP=$(port)
log="$(mktemp)"
build/bin/vitserve --model "$MODEL" --device "$DEVICE" --max-batch-size 8 --host 127.0.0.1 \
  --grpc-port "$GRPC" --rest-port "$REST" --http-port "$HTTP" > "$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2> /dev/null; wait $server 2> /dev/null; rm -f "$log"' EXIT
for _ in $(seq 120); do
  curl -sf "127.0.0.1:$HTTP/v2/health/ready" > /dev/null && break
  kill -0 $server 2> /dev/null || { cat "$log"; exit 1; }
  sleep 1
done
measure() {  # measure LABEL perf_analyzer-args...
  local label="$1"; shift
  LD_LIBRARY_PATH="$CUDART" "$PA" -m "$MODEL" "$@" -b 1 --concurrency-range "$CONCURRENCY" \
      --measurement-interval "$WINDOW_MS" --measurement-mode time_windows --max-trials 3 \
      --stability-percentage 999 2>&1 \
    | awk -v label="$label" '/Throughput:/ {t = $2} /p50 latency/ {p50 = $3} /p99 latency/ {p99 = $3}
        END { printf "%-12s %10.1f infer/s   p50 %7.1f ms   p99 %7.1f ms\n", label, t, p50 / 1000, p99 / 1000 }'
}
echo "$MODEL on $DEVICE, concurrency $CONCURRENCY, batch 1, ${WINDOW_MS} ms windows ($(nproc) cores)"
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  measure grpc -i grpc -u "127.0.0.1:$GRPC"
  measure http-binary -i http -u "127.0.0.1:$REST"
  # JSON tensors: perf_analyzer's random FP32 data holds NaN, which strict JSON refuses.
  measure http-json -i http -u "127.0.0.1:$REST" --input-tensor-format json \
      --output-tensor-format json --input-data zero
done
