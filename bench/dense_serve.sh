#!/usr/bin/env bash
# Serving throughput of the demo detector and segmenter (issue 10): examples/model_repository
# served by vitserve on CUDA in fp16, Detect and Segment load-tested with vitserve-client bench
# (closed loop), a raw RGB8 image at the models' input size and a 640x480 JPEG scene from
# vitserve-shapes, then the server's own means over all runs (batch size, compute per batch).
#   bash bench/dense_serve.sh OUTDIR        (B=build-gpu: where bin/vitserve is)
# Then, when this Python has numpy and PIL (and pycocotools for detection), the held-out scores
# of the served fp16 models on SCORE_SCENES (100) scenes of seed 424242 (tools/score_shapes.py).
# Env: DEVICE (cuda), PRECISION (fp16), MAX_BATCH (64), QUEUE_DELAY_US (1000), SECONDS_EACH (5), CONCURRENCY ("64 256").
set -uo pipefail
OUT="${1:?output directory}"
B="${B:-build-gpu}"
MAX_BATCH="${MAX_BATCH:-64}" QUEUE_DELAY_US="${QUEUE_DELAY_US:-1000}"
SECONDS_EACH="${SECONDS_EACH:-5}" CONCURRENCY="${CONCURRENCY:-64 256}"
DEVICE="${DEVICE:-cuda}" PRECISION="${PRECISION:-fp16}"
C="$B/bin/vitserve-client"
mkdir -p "$OUT"
log() { echo "[dense] $*" | tee -a "$OUT/summary.txt" >&2; }

"$B/bin/vitserve-shapes" --out "$OUT/scenes" --count 4 --seed 424242 --size 640x480 > /dev/null
SCENE=$(ls "$OUT"/scenes/images/*.jpg | head -1)
setsid "$B/bin/vitserve" --model-repository examples/model_repository --device "$DEVICE" \
  --precision "$PRECISION" --max-batch-size "$MAX_BATCH" --max-queue-delay-us "$QUEUE_DELAY_US" \
  --max-queue-size 16384 > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 180); do
  $C health --server localhost:8001 > /dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { log "vitserve exited"; tail -n 20 "$OUT/server.log" >&2; exit 1; }
  sleep 1
done
$C models --server localhost:8001 | tee -a "$OUT/summary.txt"
status=0
for model in shapes_det shapes_seg; do
  for input in raw jpeg; do
    image=()
    [[ $input == jpeg ]] && image=(--image "$SCENE")
    for c in $CONCURRENCY; do
      result="$OUT/${model}_${input}_c$c.json"
      $C bench --server localhost:8001 --model $model --input $input "${image[@]}" \
        --concurrency "$c" --channels 4 --warmup 1 --duration "$SECONDS_EACH" --json \
        > "$result" 2> /dev/null || status=1
      python3 - "$result" "$model $input concurrency $c" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"{sys.argv[2]}: no result ({e})")
    raise SystemExit
print(f"{sys.argv[2]}: {r['throughput_img_s']:.0f} img/s, p50 {r['p50_ms']:.2f} ms, "
      f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']}")
PY
    done
  done
done
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8002/metrics').read().decode())" > "$OUT/metrics.txt"
python3 - "$OUT/metrics.txt" <<'PY' | tee -a "$OUT/summary.txt"
import re, sys
sums, counts = {}, {}
for line in open(sys.argv[1]):
    m = re.match(r'vitserve_(batch_size|compute_duration_seconds)_(sum|count)\{model="(\w+)"', line)
    if m:
        table = sums if m.group(2) == "sum" else counts
        table[(m.group(3), m.group(1))] = float(line.split()[-1])
for (model, metric), total in sorted(sums.items()):
    if counts.get((model, metric)):
        mean = total / counts[(model, metric)]
        print(f"server mean {metric} for {model}: "
              + (f"{mean:.1f} images" if metric == "batch_size" else f"{mean * 1e3:.2f} ms"))
PY
SCORE_SCENES="${SCORE_SCENES:-100}"
if [[ "$SCORE_SCENES" -gt 0 ]]; then
  "$B/bin/vitserve-shapes" --out "$OUT/heldout" --count "$SCORE_SCENES" --seed 424242 > /dev/null 2>&1
  for task in segmentation detection; do
    model=$([[ $task == segmentation ]] && echo shapes_seg || echo shapes_det)
    if python3 tools/score_shapes.py --task $task --server localhost:8001 --model $model \
        --data "$OUT/heldout" --client "$C" > "$OUT/score_$task.json" 2> "$OUT/score_$task.err"; then
      log "$model ($PRECISION on $DEVICE) on $SCORE_SCENES held-out scenes: $(cat "$OUT/score_$task.json")"
    else
      log "$model not scored: $(tail -n 1 "$OUT/score_$task.err")"
    fi
  done
  rm -rf "$OUT/heldout"
fi
exit $status
