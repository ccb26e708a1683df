#!/usr/bin/env bash
# Device preprocessing against CPU preprocessing on a real model, on the GPU box (issue 11: "parity
# ... through the new GPU preprocessing, <= 1e-3 top-1 probability difference vs CPU
# preprocessing"). Serves one checkpoint twice from one repository, on CUDA in fp32, as
# `cpu_pre` (device_preprocessing: false: OpenCV on the CPU) and `gpu_pre` (true: resized and
# normalised on the GPU), classifies the same photo-like images (JPEG and PNG; enlarged, shrunk
# within twice, and beyond twice, which stays on the CPU) with every class returned, and prints
# per image the top-1 agreement, the top-1 probability difference and the largest difference of
# any class probability. Exit status 1 when a top-1 probability differs by more than 1e-3.
#
# On the GPU box, in the project root, after `source .devdeps/bootstrap.sh` and with the binaries
# in $SWEEP_BUILD_DIR/bin (default build-gpu):
#   bash bench/preprocess_parity.sh [OUTDIR] [MODEL]      (default /tmp/vitserve-parity shvit_s1)
# PARITY_DEVICE=cpu runs the same comparison on the CPU (the tensor ops are the GPU's).
# On CUDA a third model, `gpu_jpeg` (device preprocessing and gpu_jpeg_decoding: JPEGs decoded
# by nvJPEG), is compared with cpu_pre the same way (PNGs take the CPU decoder there).
# The checkpoint is random but input-sensitive (tools/make_random_checkpoint.py), so different
# images get clearly different answers and a preprocessing difference shows.
set -uo pipefail
OUT="${1:-/tmp/vitserve-parity}"
MODEL="${2:-shvit_s1}"
B="${SWEEP_BUILD_DIR:-build-gpu}"
PORT="${PARITY_PORT:-8011}"
NAMES=(cpu_pre gpu_pre)
[[ "${PARITY_DEVICE:-cuda}" == cuda ]] && NAMES+=(gpu_jpeg)
mkdir -p "$OUT/images"

python3 tools/make_random_checkpoint.py --model "$MODEL" --out "$OUT/model.safetensors" > /dev/null || exit 1
for name in "${NAMES[@]}"; do
  mkdir -p "$OUT/repo/$name"
  ln -sf "$OUT/model.safetensors" "$OUT/repo/$name/model.safetensors"
  on=$([[ $name != cpu_pre ]] && echo true || echo false)
  # gpu_jpeg_decoding is on by default where device preprocessing is: gpu_pre turns it off so
  # that its JPEGs are decoded on the CPU and only resized and normalised on the GPU.
  jpeg=$([[ $name == gpu_jpeg ]] && echo true || echo false)
  printf '%s: %s\n' architecture "\"$MODEL\"" device "\"${PARITY_DEVICE:-cuda}\"" \
    precision FP32 device_preprocessing "$on" gpu_jpeg_decoding "$jpeg" \
    > "$OUT/repo/$name/config.pbtxt"
done

# Photo-like images of sizes that exercise each resize, as JPEG and PNG.
python3 bench/make_photos.py "$OUT/images" 224x224 200x150 256x256 300x400 500x375 640x480 \
  1280x720 --seed 1 --png || exit 1

$B/bin/vitserve --model-repository "$OUT/repo" --grpc-port "$PORT" --http-port 0 \
  > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 600); do
  $B/bin/vitserve-client health --server "localhost:$PORT" > /dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { tail -20 "$OUT/server.log"; exit 1; }
  sleep 0.25
done
for name in "${NAMES[@]}"; do
  $B/bin/vitserve-client classify --server "localhost:$PORT" --model "$name" --top-k 1000 --json \
    "$OUT"/images/* > "$OUT/$name.jsonl" || { tail -20 "$OUT/server.log"; exit 1; }
done

status=0
for other in "${NAMES[@]:1}"; do
python3 - "$OUT/cpu_pre.jsonl" "$OUT/$other.jsonl" "$MODEL" "${PARITY_DEVICE:-cuda}" "$other" <<'PY' || status=1
import json, sys
def load(path):
    out = {}
    for line in open(path):
        d = json.loads(line)
        out[d["image"].rsplit("/", 1)[-1]] = {c["index"]: c["score"] for c in d["classes"]}
    return out
cpu, gpu = load(sys.argv[1]), load(sys.argv[2])
worst = 0.0
print(f"{sys.argv[5]} against CPU preprocessing, {sys.argv[3]} on {sys.argv[4]} in fp32, all classes:")
print(f"  {'image':22s} {'top-1 same':>10s} {'top-1 p':>9s} {'|d top-1 p|':>12s} {'max |d p|':>10s}")
for image in sorted(cpu):
    a, b = cpu[image], gpu[image]
    top = max(a, key=a.get)
    d_top = abs(a[top] - b.get(top, 0.0))
    d_max = max(abs(a[k] - b.get(k, 0.0)) for k in a)
    worst = max(worst, d_top)
    print(f"  {image:22s} {str(max(b, key=b.get) == top):>10s} {a[top]:9.5f} {d_top:12.2e} {d_max:10.2e}")
# Different images must differ by far more, or the comparison proves nothing.
names = sorted(cpu)
spread = min(max(abs(cpu[x][k] - cpu[y][k]) for k in cpu[x]) for x in names for y in names if x < y and x.split(".")[0] != y.split(".")[0])
print(f"largest top-1 difference {worst:.2e} (bar 1e-3); smallest difference between two different images {spread:.2e}")
sys.exit(0 if worst <= 1e-3 else 1)
PY
done
exit $status
