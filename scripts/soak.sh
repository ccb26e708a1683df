#!/usr/bin/env bash
# Mixed-load soak (issue 14): starts BUILD_DIR/bin/vitserve on a model repository of a
# classifier, a detector and a segmenter (shvit_s1 with random weights, CPU), drives it with
# scripts/soak.py (every RPC, good and bad requests, cancellations, short deadlines, REST) for
# SECONDS, while a fourth classifier ("churned") is unloaded and reloaded through the KServe
# repository API under requests, then stops it with SIGTERM. Fails when an answer was not one
# its request may get, the server did not exit 0, or its log has a sanitizer report or says
# that a model's last handle was dropped on its own executor thread.
#   scripts/soak.sh [BUILD_DIR (build-asan)] [SECONDS (300)] [THREADS (6)]
# SIGTERM_AFTER=N: the SIGTERM comes after N seconds, while the load goes on (a drain under
# fire): every call begun before it must still get its usual answer, later ones may be refused,
# and the server must exit 0.
# scripts/sanitizers.sh --soak builds BUILD_DIR with AddressSanitizer + UBSan and runs this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD="${1:-build-asan}"; SECONDS_TOTAL="${2:-300}"; THREADS="${3:-6}"
WORK="$(mktemp -d /tmp/vitserve-soak.XXXXXX)"
REPO="$WORK/models"
for model in classifier:CLASSIFICATION:1000 detector:DETECTION:5 segmenter:SEGMENTATION:6 \
             churned:CLASSIFICATION:10; do
  IFS=: read -r name task classes <<< "$model"
  mkdir -p "$REPO/$name"
  printf 'architecture: "shvit_s1" task: %s num_classes: %s allow_random_weights: true\nbatching { max_batch_size: 8 max_queue_size: 32 }\n' \
    "$task" "$classes" > "$REPO/$name/config.pbtxt"
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GRPC=$(free_port); REST=$(free_port); HTTP=$(free_port)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
LOG="$WORK/vitserve.log"
"$BUILD/bin/vitserve" --model-repository "$REPO" --device cpu --host 127.0.0.1 \
  --grpc-port "$GRPC" --rest-port "$REST" --http-port "$HTTP" > "$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true' EXIT
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$HTTP/v2/health/ready" > /dev/null && break
  kill -0 $SERVER 2> /dev/null || { cat "$LOG"; echo "[soak] the server exited before it was ready"; exit 1; }
  sleep 0.5
done
echo "[soak] vitserve ($BUILD) ready: gRPC $GRPC, REST $REST; log $LOG"
RSS_BEFORE=$(awk '/VmRSS/ {print $2}' /proc/$SERVER/status)
status=0
.venv/bin/python scripts/soak.py --grpc "127.0.0.1:$GRPC" --rest "127.0.0.1:$REST" \
  --seconds "$SECONDS_TOTAL" --threads "$THREADS" --server-pid "$SERVER" --churned churned \
  ${SIGTERM_AFTER:+--sigterm-after "$SIGTERM_AFTER"} || status=1
RSS_AFTER=$( (awk '/VmRSS/ {print $2}' /proc/$SERVER/status || echo 0) 2> /dev/null)
if [[ $RSS_AFTER -gt 0 ]]; then
  echo "[soak] server resident memory: $((RSS_BEFORE / 1024)) MiB ready, $((RSS_AFTER / 1024)) MiB after the soak"
fi
kill -TERM $SERVER 2> /dev/null || true  # Gone already: soak.py said so, and wait tells how.
exit_code=0; wait $SERVER || exit_code=$?
trap - EXIT
echo "[soak] vitserve exit code $exit_code"
[[ $exit_code -eq 0 ]] || status=1
if grep -qE "ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:" "$LOG"; then
  grep -m10 -E -A20 "ERROR: .*Sanitizer|runtime error:" "$LOG"
  echo "[soak] the server's log has a sanitizer report: $LOG"
  status=1
fi
# ServableModel's destructor logs this when a caller broke model_manager.h's contract (it then
# drains on a detached thread instead of deadlocking): a bug to fix, not an outcome to accept.
if grep -q "last handle released inside an on_done callback" "$LOG"; then
  grep -m3 "last handle released" "$LOG"
  echo "[soak] a model's last handle was dropped on its own executor thread: $LOG"
  status=1
fi
[[ $status -eq 0 ]] && echo "[soak] PASS" || echo "[soak] FAIL (server log: $LOG)"
exit $status
