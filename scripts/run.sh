#!/usr/bin/env bash
# Quick start: installs what is missing, builds, starts vitserve with the default model,
# classifies the bundled sample images with vitserve-client and keeps serving until Ctrl-C.
#   scripts/run.sh [vitserve flags...]     e.g. scripts/run.sh --model deit_tiny_patch16_224
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
scripts/setup.sh
BIN="$BUILD_DIR/bin"
GRPC_PORT="${VITSERVE_GRPC_PORT:-8001}"
MODEL="shvit_s1"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --model) MODEL="${args[$((i + 1))]}" ;;
    --model=*) MODEL="${args[$i]#--model=}" ;;
  esac
done

# Its own session: a Ctrl-C in the terminal reaches this script only, which forwards one SIGTERM
# (a second signal would make vitserve skip the drain).
setsid "$BIN/vitserve" --grpc-port "$GRPC_PORT" "$@" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER' INT TERM
echo "[run] waiting for vitserve (pid $SERVER) on port $GRPC_PORT" >&2
for _ in $(seq 1 120); do
  if "$BIN/vitserve-client" health --server "localhost:$GRPC_PORT" >/dev/null 2>&1; then break; fi
  kill -0 $SERVER 2>/dev/null || { echo "[run] vitserve exited" >&2; exit 1; }
  sleep 1
done
"$BIN/vitserve-client" models --server "localhost:$GRPC_PORT"
"$BIN/vitserve-client" classify --server "localhost:$GRPC_PORT" --model "$MODEL" --top-k 3 \
  tests/e2e/data/*.jpg tests/e2e/data/*.png tests/e2e/data/*.webp 2>/dev/null || true
echo "[run] vitserve keeps serving on grpc :$GRPC_PORT (metrics on http :${VITSERVE_HTTP_PORT:-8002}/metrics); Ctrl-C stops it" >&2
wait $SERVER
