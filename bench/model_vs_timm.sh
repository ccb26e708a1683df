#!/usr/bin/env bash
# Issue 16's table from one run on the GPU box: our model alone (vitserve-bench-model) against
# timm in PyTorch, fp16, random weights, at the same batch sizes, eager and from CUDA graphs,
# with the input in NCHW and in channels-last (NHWC) memory; then, with PROFILE_KERNELS=N, the
# GPU kernels of one eager batch of each, ours (Kineto from C++) beside timm's
# (torch.profiler), so a gap can be traced to the kernels that make it.
#
#   On the GPU box (carry .devdeps and .gpubin):  bash bench/model_vs_timm.sh OUTDIR
#   MODELS       registry names that timm also has (default: deit_tiny_patch16_224
#                vit_base_patch16_224 shvit_s1)
#   BATCHES      default 1,32,128,256
#   SECONDS_EACH per measurement (default 2)
#   LAYOUTS      our model's input layouts to measure (default "nchw nhwc"; the ratios use nhwc)
#   PROFILE_KERNELS  eager steps profiled per model at PROFILE_BATCH (default 256) and
#                PROFILE_SIZE px (default 224); 0: none
#   SIZES        input sides in pixels (default 224); sizes other than 224 use LARGE_BATCHES
#   LARGE_BATCHES  batch sizes above 224 px (default 1,8,32)
#   COMPILE      1: also timm under torch.compile(mode="max-autotune") at COMPILE_BATCH (default
#                256), 224 px, channels-last (issue 16's stretch anchor; compiling takes minutes:
#                given up after COMPILE_TIMEOUT seconds, default 300)
#   VIM          1: also issue 16's Vision Mamba row: vim_tiny against our deit_tiny (SDPA), fp16,
#                at VIM_SIZES px (default "1024 1248"), batch VIM_BATCH (default 8)
#                (vitserve-bench-vim-vs-deit; ratio = vim_tiny img/s / deit_tiny img/s)
#   FIBOTTENTION 1: also issue 16's Fibottention rows: its CUDA kernel against dense SDPA, ViT-B
#                heads (12 x 64), batch 64, official semantics, fp16, at FIB_TOKENS (default
#                "197,785,3137") (vitserve-bench-fibottention; ratio = SDPA ms / kernel ms)
# Binaries come from build-gpu/ (bench/stage_gpu_binaries.sh, or built here when missing).
set -uo pipefail
OUT="${1:-/tmp/model-vs-timm}"
mkdir -p "$OUT"
MODELS="${MODELS:-deit_tiny_patch16_224 vit_base_patch16_224 shvit_s1}"
BATCHES="${BATCHES:-1,32,128,256}"
SECONDS_EACH="${SECONDS_EACH:-2}"
LAYOUTS="${LAYOUTS:-nchw nhwc}"
SIZES="${SIZES:-224}"
LARGE_BATCHES="${LARGE_BATCHES:-1,8,32}"
COMPILE_BATCH="${COMPILE_BATCH:-256}"
PROFILE_KERNELS="${PROFILE_KERNELS:-0}"
PROFILE_BATCH="${PROFILE_BATCH:-256}"
PROFILE_SIZE="${PROFILE_SIZE:-224}"
B="${SWEEP_BUILD_DIR:-build-gpu}"
RESULTS="$OUT/model_vs_timm.tsv"  # model, size, impl, mode, layout, batch, img/s
log() { echo "[model-vs-timm $(date +%T)] $*"; }
: > "$RESULTS"

source .devdeps/bootstrap.sh > /dev/null || exit 1
TORCH_LIB="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB:/usr/local/cuda/lib64:$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__)'

if [[ ! -x $B/bin/vitserve-bench-model ]]; then
  log "configure + build vitserve-bench-model"
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DVITSERVE_BUILD_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$DEPS_CMAKE_PREFIX_PATH" $DEPS_CMAKE_ARGS > "$OUT/configure.log" 2>&1 \
    || { tail -40 "$OUT/configure.log"; exit 1; }
  ninja -C $B vitserve-bench-model > "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
fi
for want in "${VIM:-0}:vitserve-bench-vim-vs-deit" "${FIBOTTENTION:-0}:vitserve-bench-fibottention"; do
  if [[ ${want%%:*} == 1 && ! -x $B/bin/${want#*:} ]]; then
    log "build ${want#*:}"
    ninja -C $B "${want#*:}" >> "$OUT/build.log" 2>&1 || { tail -60 "$OUT/build.log"; exit 1; }
  fi
done
OTHERS="$OUT/other_families.tsv"  # row, reference, ours, reference value, ours value, unit, ratio
: > "$OTHERS"

# ours MODEL SIZE MODE(eager|graph) LAYOUT(nchw|nhwc) BATCHES [extra flags]
ours() {
  local model=$1 size=$2 mode=$3 layout=$4 batches=$5; shift 5
  local flags=(--model "$model" --device cuda --precision fp16 --batch-sizes "$batches"
               --seconds "$SECONDS_EACH" --image-size "$size")
  [[ $mode == graph ]] && flags+=(--cuda-graphs)
  [[ $layout == nhwc ]] && flags+=(--channels-last)
  local log_file="$OUT/ours_${model}_${size}_${mode}_${layout}.txt"
  $B/bin/vitserve-bench-model "${flags[@]}" "$@" > "$log_file" 2>&1 || { tail -5 "$log_file"; return 1; }
  awk -v m="$model" -v s="$size" -v mo="$mode" -v l="$layout" \
    '$1 ~ /^[0-9]+$/ && NF == 4 { printf "%s\t%s\tours\t%s\t%s\t%s\t%s\n", m, s, mo, l, $1, $2 }' \
    "$log_file" >> "$RESULTS"
}

# timm MODEL SIZE BATCHES: eager NCHW, eager NHWC and graph NHWC, in one Python process.
timm_anchor() {
  python3 - "$1" "$2" "$3" "$SECONDS_EACH" <<'PY' >> "$RESULTS"
import sys, time, torch, timm
name, size, batches, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
torch.backends.cudnn.benchmark = True
try:  # ViTs are laid out for the size (position embedding); convolutional models take any size.
    model = timm.create_model(name, pretrained=False, **({} if size == 224 else {"img_size": size}))
except TypeError:
    model = timm.create_model(name, pretrained=False)
model = model.cuda().half().eval()
def rate(step, batch):
    for _ in range(3): step()
    torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(5): step()
        n += 5
        torch.cuda.synchronize()
        if time.perf_counter() - start >= seconds: break
    return batch * n / (time.perf_counter() - start)
with torch.inference_mode():
    for batch in map(int, batches.split(",")):
        for layout in ("nchw", "nhwc"):
            fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
            model = model.to(memory_format=fmt)
            x = torch.randn(batch, 3, size, size, device="cuda", dtype=torch.half).to(memory_format=fmt)
            print(f"{name}\t{size}\ttimm\teager\t{layout}\t{batch}\t{rate(lambda: model(x), batch):.1f}")
            if layout == "nhwc":
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3): model(x)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model(x)
                print(f"{name}\t{size}\ttimm\tgraph\t{layout}\t{batch}\t{rate(graph.replay, batch):.1f}")
                del graph
PY
}

# timm_profile MODEL BATCH STEPS SIZE: kernels of eager NHWC steps, as vitserve-bench-model prints
# them.
timm_profile() {
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import sys, torch, timm
from collections import defaultdict
from torch.profiler import profile, ProfilerActivity
name, batch, steps, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.backends.cudnn.benchmark = True
try:  # As timm_anchor: ViTs are built for the size, convolutional models take any size.
    model = timm.create_model(name, pretrained=False, **({} if size == 224 else {"img_size": size}))
except TypeError:
    model = timm.create_model(name, pretrained=False)
model = model.cuda().half().eval().to(memory_format=torch.channels_last)
x = torch.randn(batch, 3, size, size, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
with torch.inference_mode():
    for _ in range(5): model(x)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(steps): model(x)
        torch.cuda.synchronize()
totals = defaultdict(lambda: [0, 0.0])
for e in p.events():
    if e.device_type == torch.autograd.DeviceType.CUDA:
        totals[e.name][0] += 1
        totals[e.name][1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
all_us = sum(t[1] for t in totals.values())
print(f"  kernels, per step: {all_us / steps:.1f} us of device time in {len(totals)} kinds")
print(f"  {'us/step':>10s} {'calls':>7s} {'share':>6s}  kernel")
for k, (n, us) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:25]:
    print(f"  {us / steps:10.1f} {n / steps:7.1f} {100 * us / all_us:5.1f}%  {k[:110]}")
PY
}

# timm_compiled MODEL BATCH: timm under torch.compile(mode="max-autotune"), 224 px, NHWC.
timm_compiled() {
  timeout "${COMPILE_TIMEOUT:-300}" python3 - "$1" "$2" "$SECONDS_EACH" <<'PY' >> "$RESULTS"
import sys, time, torch, timm
name, batch, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
torch.backends.cudnn.benchmark = True
model = timm.create_model(name, pretrained=False).cuda().half().eval().to(memory_format=torch.channels_last)
x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
compiled = torch.compile(model, mode="max-autotune")
with torch.inference_mode():
    start = time.perf_counter()
    for _ in range(3): compiled(x)
    torch.cuda.synchronize()
    print(f"{name}: compiled (max-autotune) in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(5): compiled(x)
        n += 5
        torch.cuda.synchronize()
        if time.perf_counter() - start >= seconds: break
    print(f"{name}\t224\ttimm\tcompile\tnhwc\t{batch}\t{batch * n / (time.perf_counter() - start):.1f}")
PY
}

for m in $MODELS; do
  for size in $SIZES; do
    batches=$BATCHES
    (( size != 224 )) && batches=$LARGE_BATCHES
    log "$m at $size px: ours (eager and graph, $LAYOUTS)"
    for layout in $LAYOUTS; do
      ours "$m" "$size" graph "$layout" "$batches"
      ours "$m" "$size" eager "$layout" "$batches"
    done
    log "$m at $size px: timm (eager NCHW, eager NHWC, graph NHWC)"
    timm_anchor "$m" "$size" "$batches" || log "timm failed for $m at $size px"
  done
  if [[ "${COMPILE:-0}" == 1 ]]; then
    log "$m: timm under torch.compile(mode=max-autotune), batch $COMPILE_BATCH"
    timm_compiled "$m" "$COMPILE_BATCH" || log "torch.compile failed or took over ${COMPILE_TIMEOUT:-300} s for $m"
  fi
  if (( PROFILE_KERNELS > 0 )); then
    {
      echo "== $m batch $PROFILE_BATCH, $PROFILE_SIZE px, eager NHWC: ours"
      $B/bin/vitserve-bench-model --model "$m" --device cuda --precision fp16 --channels-last \
        --batch-sizes "$PROFILE_BATCH" --seconds 0.5 --kernel-profile "$PROFILE_KERNELS" \
        --image-size "$PROFILE_SIZE" 2>&1 | grep '^  '
      echo "== $m batch $PROFILE_BATCH, $PROFILE_SIZE px, eager NHWC: timm"
      timm_profile "$m" "$PROFILE_BATCH" "$PROFILE_KERNELS" "$PROFILE_SIZE"
    } | tee "$OUT/kernels_$m.txt"
  fi
done
if [[ "${VIM:-0}" == 1 ]]; then
  for size in ${VIM_SIZES:-1024 1248}; do
    log "vim_tiny against deit_tiny (SDPA) at $size px, batch ${VIM_BATCH:-8}"
    $B/bin/vitserve-bench-vim-vs-deit --device cuda --precision fp16 --models vim_tiny,deit_tiny \
      --sizes "$size" --batch_sizes "${VIM_BATCH:-8}" --seconds "$SECONDS_EACH" \
      > "$OUT/vim_vs_deit_$size.txt" 2>&1 || { tail -5 "$OUT/vim_vs_deit_$size.txt"; continue; }
    # Rows: model px batch tokens images/s ms/batch peak_MiB.
    awk -v size="$size" -v batch="${VIM_BATCH:-8}" '
      $2 == size && $1 == "vim_tiny" { vim = $5 } $2 == size && $1 == "deit_tiny" { deit = $5 }
      END { if (vim && deit) printf "vim_tiny, %s px, batch %s\tour deit_tiny (SDPA)\t%s\t%s\timg/s\t%.2f\n", size, batch, deit, vim, vim / deit }' \
      "$OUT/vim_vs_deit_$size.txt" >> "$OTHERS"
  done
fi
if [[ "${FIBOTTENTION:-0}" == 1 ]]; then
  log "Fibottention kernel against SDPA at ${FIB_TOKENS:-197,785,3137} tokens"
  $B/bin/vitserve-bench-fibottention --device cuda --precision fp16 --batch 64 \
    --tokens "${FIB_TOKENS:-197,785,3137}" --seconds "$SECONDS_EACH" \
    > "$OUT/fibottention.txt" 2>&1 || tail -5 "$OUT/fibottention.txt"
  # Rows: T=N  impl  MS ms  kept P% ...
  awk '$1 ~ /^T=/ && $4 == "ms" { ms[$1, $2] = $3; if (!($1 in order)) { order[$1] = n++; key[n - 1] = $1 } }
       END { for (i = 0; i < n; i++) { t = key[i]; s = ms[t, "sdpa"]; f = ms[t, "fibottention"];
             if (s && f) printf "Fibottention kernel, ViT-B heads, batch 64, %s tokens\tSDPA\t%s\t%s\tms\t%.2f\n", substr(t, 3), s, f, s / f } }' \
    "$OUT/fibottention.txt" >> "$OTHERS"
fi

python3 - "$RESULTS" <<'PY' | tee "$OUT/table.txt"
import sys, collections
rows = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    m, size, impl, mode, layout, batch, rate = line.rstrip("\n").split("\t")
    rows[(m, int(size), int(batch))][(impl, mode, layout)] = float(rate)
print("fp16 img/s; ours = vitserve-bench-model, timm = timm in PyTorch, same run; ratio = ours / timm, same mode, NHWC")
hdr = ["model", "px", "batch", "ours graph nchw", "ours graph nhwc", "ours eager nchw", "ours eager nhwc",
       "timm eager nchw", "timm eager nhwc", "timm graph nhwc", "eager ratio", "graph ratio",
       "timm compiled", "graph / compiled"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
def f(v): return f"{v:,.0f}" if v else "-"
for (m, size, batch), r in sorted(rows.items()):
    og, ogn = r.get(("ours", "graph", "nchw")), r.get(("ours", "graph", "nhwc"))
    oe, oen = r.get(("ours", "eager", "nchw")), r.get(("ours", "eager", "nhwc"))
    te, ten, tg = r.get(("timm", "eager", "nchw")), r.get(("timm", "eager", "nhwc")), r.get(("timm", "graph", "nhwc"))
    er = f"{oen / ten:.2f}x" if oen and ten else "-"
    gr = f"{ogn / tg:.2f}x" if ogn and tg else "-"
    tc = r.get(("timm", "compile", "nhwc"))
    cr = f"{ogn / tc:.2f}x" if ogn and tc else "-"
    print(f"| {m} | {size} | {batch} | {f(og)} | {f(ogn)} | {f(oe)} | {f(oen)} | {f(te)} | {f(ten)} | {f(tg)} | {er} | {gr} | {f(tc)} | {cr} |")
PY
if [[ -s "$OTHERS" ]]; then
  {
    echo
    echo "other families, fp16, same run; ratio = ours / reference in speed (above 1: ours is faster)"
    echo "| row | reference | reference value | ours | unit | ratio |"
    echo "|---|---|---|---|---|---|"
    awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %sx |\n", $1, $2, $3, $4, $5, $6 }' "$OTHERS"
  } | tee -a "$OUT/table.txt"
fi
