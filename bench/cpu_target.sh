#!/usr/bin/env bash
# Issue 11's CPU target: served raw throughput against our model alone on the same cores, at the
# same batch, in interleaved rounds (the model alone, then vitserve serving it, ROUNDS times), so
# that the box's drift hits both alike. With SERVER_CORES the model alone and the server run on
# those cores only (taskset) and the load generator on CLIENT_CORES, so that it does not take
# cores from the forward pass; without them (a 2-core machine) all three share every core.
#
#   bash bench/cpu_target.sh [OUTDIR]
#   MODEL         registry model (default shvit_s1)
#   BATCH         the server's --max-batch-size and the model-alone batch (default 8)
#   CONCURRENCY   vitserve-client bench --concurrency (default 2 * BATCH)
#   SECONDS_EACH  seconds per measurement (default 8)
#   ROUNDS        interleaved rounds (default 3)
#   SERVER_CORES  taskset list for the model alone and the server, e.g. 0,1 (default: none)
#   CLIENT_CORES  taskset list for the client, e.g. 2-5 (default: none)
#   SERVE_FLAGS   more vitserve flags (they come last, so they win), e.g.
#                 "--instance-count 1" (one instance on every core instead of the default two)
#   SERVER_PRELOAD a library to LD_PRELOAD into vitserve only (e.g. another malloc, for an A/B)
#   BUILD_DIR     where bin/vitserve, bin/vitserve-client and bin/vitserve-bench-model are
#                 (default build)
# Prints each round and the median ratio served / alone (the target: at least 0.9).
set -uo pipefail
OUT="${1:-/tmp/vitserve-cpu-target}"
mkdir -p "$OUT"
MODEL="${MODEL:-shvit_s1}"
BATCH="${BATCH:-8}"
CONCURRENCY="${CONCURRENCY:-$((2 * BATCH))}"
T="${SECONDS_EACH:-8}"
ROUNDS="${ROUNDS:-3}"
B="${BUILD_DIR:-build}/bin"
GRPC_PORT="${GRPC_PORT:-18101}"
HTTP_PORT="${HTTP_PORT:-18102}"
log() { echo "[cpu-target $(date +%T)] $*"; }
# Command prefixes that pin to the given cores (empty: no pinning).
SERVER_PIN=(); CLIENT_PIN=()
[[ -n "${SERVER_CORES:-}" ]] && SERVER_PIN=(taskset -c "$SERVER_CORES")
[[ -n "${CLIENT_CORES:-}" ]] && CLIENT_PIN=(taskset -c "$CLIENT_CORES")

# The cores the model may use, as OMP_NUM_THREADS: LibTorch's default counts the machine's cores,
# not the ones taskset allows, and would oversubscribe a pinned process. The model alone uses all
# of them; the server shares them among its instances (its --intra-op-threads default).
THREADS=$("${SERVER_PIN[@]}" nproc)
export OMP_NUM_THREADS=$THREADS
log "$MODEL fp32 on CPU, batch $BATCH, $THREADS cores, server cores '${SERVER_CORES:-all}'," \
    "client cores '${CLIENT_CORES:-all}', concurrency $CONCURRENCY, $ROUNDS rounds of $T s"

if "$B/vitserve-client" health --server "localhost:$GRPC_PORT" > /dev/null 2>&1; then
  log "a server already answers on port $GRPC_PORT: stop it or set GRPC_PORT"; exit 1
fi
"${SERVER_PIN[@]}" env ${SERVER_PRELOAD:+LD_PRELOAD=$SERVER_PRELOAD} \
  "$B/vitserve" --model "$MODEL" --device cpu --max-batch-size "$BATCH" \
  --preprocess-threads "$THREADS" --grpc-port "$GRPC_PORT" \
  --http-port "$HTTP_PORT" --rest-port -1 ${SERVE_FLAGS:-} > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 240); do
  kill -0 $SERVER 2>/dev/null || { log "server exited"; tail -20 "$OUT/server.log"; exit 1; }
  "$B/vitserve-client" health --server "localhost:$GRPC_PORT" > /dev/null 2>&1 && break
  sleep 0.5
done

: > "$OUT/rounds.tsv"
for r in $(seq 1 "$ROUNDS"); do
  "${SERVER_PIN[@]}" "$B/vitserve-bench-model" --model "$MODEL" --device cpu \
    --batch-sizes "$BATCH" --seconds "$T" > "$OUT/alone_$r.txt" 2>&1
  alone=$(awk -v b="$BATCH" '$1 == b {print $2}' "$OUT/alone_$r.txt")
  "${CLIENT_PIN[@]}" "$B/vitserve-client" bench --server "localhost:$GRPC_PORT" \
    --model "$MODEL" --input raw --concurrency "$CONCURRENCY" --warmup 2 --duration "$T" --json \
    > "$OUT/served_$r.json" 2> "$OUT/served_$r.err"
  served=$(python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["throughput_img_s"], 1))' \
    "$OUT/served_$r.json" 2>/dev/null)
  log "round $r: alone ${alone:-?} img/s, served ${served:-?} img/s"
  printf '%s\t%s\n' "${alone:-nan}" "${served:-nan}" >> "$OUT/rounds.tsv"
done
python3 - "$OUT/rounds.tsv" <<'PY' | tee "$OUT/table.txt"
import statistics, sys
rows = [tuple(map(float, line.split())) for line in open(sys.argv[1])]
ratios = [s / a for a, s in rows if a > 0]
for i, (a, s) in enumerate(rows, 1):
    print(f"round {i}: model alone {a:8.1f} img/s  served {s:8.1f} img/s  served/alone {s / a:6.1%}")
if ratios:
    print(f"median served/alone over {len(ratios)} rounds: {statistics.median(ratios):.1%} (target: at least 90%)")
PY
