#!/usr/bin/env bash
# Quick start: installs what is missing, builds, starts vitserve and keeps it serving until
# Ctrl-C. Without arguments it serves the trained demo models (examples/model_repository: a
# shape classifier, detector and segmenter) and shows one classify, one detect and one segment
# call on the sample scenes of examples/images (annotated copies in build/demo/). With vitserve
# flags it serves what they say and classifies the sample photos of tests/e2e/data:
#   scripts/run.sh                         the demo models
#   scripts/run.sh [vitserve flags...]     e.g. scripts/run.sh --model deit_tiny_patch16_224
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
scripts/setup.sh
BIN="$BUILD_DIR/bin"
GRPC_PORT="${VITSERVE_GRPC_PORT:-8001}"
MODEL="shvit_s1"
DEMO=0
if [[ $# == 0 ]]; then
  DEMO=1
  set -- --model-repository examples/model_repository
fi
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
CLIENT=("$BIN/vitserve-client")
SERVER_ADDRESS=(--server "localhost:$GRPC_PORT")
"${CLIENT[@]}" models "${SERVER_ADDRESS[@]}"
if [[ $DEMO == 1 ]]; then
  DEMO_OUT="$BUILD_DIR/demo"
  mkdir -p "$DEMO_OUT"
  # Failed calls print their gRPC error; the server keeps serving either way.
  echo "[run] classify (shapes_cls: the shape classes present, best first)" >&2
  "${CLIENT[@]}" classify "${SERVER_ADDRESS[@]}" --model shapes_cls --top-k 3 examples/images/*.jpg || true
  echo "[run] detect (shapes_det; boxes in image pixels, drawn in $DEMO_OUT)" >&2
  "${CLIENT[@]}" detect "${SERVER_ADDRESS[@]}" --model shapes_det --score-threshold 0.3 \
    --annotate "$DEMO_OUT" examples/images/scene_1.jpg || true
  echo "[run] segment (shapes_seg; label map and its overlay in $DEMO_OUT)" >&2
  "${CLIENT[@]}" segment "${SERVER_ADDRESS[@]}" --model shapes_seg --output-dir "$DEMO_OUT" \
    --annotate "$DEMO_OUT/overlay" examples/images/scene_2.jpg || true
else
  "${CLIENT[@]}" classify "${SERVER_ADDRESS[@]}" --model "$MODEL" --top-k 3 \
    tests/e2e/data/*.jpg tests/e2e/data/*.png tests/e2e/data/*.webp 2>/dev/null || true
fi
echo "[run] vitserve keeps serving on grpc :$GRPC_PORT (metrics on http :${VITSERVE_HTTP_PORT:-8002}/metrics); Ctrl-C stops it" >&2
wait $SERVER
