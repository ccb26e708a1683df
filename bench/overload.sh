#!/usr/bin/env bash
# Overload on the CPU (issue 14): deit_tiny on --device cpu with a queue of 64, loaded open-loop
# far beyond its capacity by `vitserve-client bench --rate`, in rounds a few seconds apart.
# Prints each round's accepted throughput, p50/p99 latency of the accepted requests and the
# refusals by code, and the server's resident memory sampled every second (OUTDIR/rss.txt, with
# the load windows in OUTDIR/load.txt: `python3 bench/plot_memory.py OUTDIR FILE.svg` draws it).
#   bash bench/overload.sh [BUILD_DIR] [OUTDIR]          (default build, /tmp/vitserve-overload)
# Environment: RATE (2000 requests/s), ROUNDS (3), SECONDS_EACH (10), GAP (3 s between rounds),
#              MODEL (deit_tiny_patch16_224), PORT (8021).
set -uo pipefail
B="${1:-build}"
OUT="${2:-/tmp/vitserve-overload}"
RATE="${RATE:-2000}"; ROUNDS="${ROUNDS:-3}"; T="${SECONDS_EACH:-10}"; GAP="${GAP:-3}"
MODEL="${MODEL:-deit_tiny_patch16_224}"; PORT="${PORT:-8021}"
mkdir -p "$OUT"
"$B/bin/vitserve" --model "$MODEL" --device cpu --max-batch-size 8 --max-queue-size 64 \
  --grpc-port "$PORT" --http-port 0 > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SAMPLER 2>/dev/null; kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 600); do
  "$B/bin/vitserve-client" health --server "localhost:$PORT" > /dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { tail -20 "$OUT/server.log"; exit 1; }
  sleep 0.2
done
rss() { awk '/^VmRSS/ {printf "%d", $2 / 1024}' "/proc/$SERVER/status"; }
(while kill -0 $SERVER 2>/dev/null; do echo "$(date +%s) $(rss)"; sleep 1; done) > "$OUT/rss.txt" &
SAMPLER=$!
echo "resident memory before load: $(rss) MiB"
: > "$OUT/load.txt"  # "start end" (epoch seconds) of each round, for bench/plot_memory.py.
for round in $(seq 1 "$ROUNDS"); do
  round_start=$(date +%s)
  "$B/bin/vitserve-client" bench --server "localhost:$PORT" --model "$MODEL" --input raw \
    --rate "$RATE" --duration "$T" --json > "$OUT/round$round.json" 2> "$OUT/round$round.err"
  python3 - "$OUT/round$round.json" "$round" "$(rss)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"round {sys.argv[2]}: accepted {d['throughput_img_s']:.1f} img/s, p50 {d['p50_ms']:.0f} ms, "
      f"p99 {d['p99_ms']:.0f} ms, max {d['max_ms']:.0f} ms, requests sent {d['requests']}, "
      f"errors {d.get('errors_by_code', {})}; resident memory after: {sys.argv[3]} MiB")
PY
  echo "$round_start $(date +%s)" >> "$OUT/load.txt"
  sleep "$GAP"
done
echo "resident memory after the rounds and ${GAP} s idle: $(rss) MiB"
echo "resident memory per second (MiB): $(awk '{printf "%s ", $2}' "$OUT/rss.txt")"
