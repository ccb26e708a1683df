#!/usr/bin/env bash
# libFuzzer over the parsers that read untrusted bytes (issue 14): the safetensors header reader
# (nlohmann-json underneath), the REST infer request reader, the image header reader + decoder,
# the config.pbtxt parser + validator (a model repository's files), request validation into
# batches (Vision and KServe requests, and the raw Classify and ModelInfer methods' own readers
# of gRPC's bytes, against protobuf: tests/fuzz/request_fuzz.cc), and whole safetensors files.
# Builds each target with clang (-fsanitize=fuzzer,address,undefined) into build-fuzz/ and runs
# it for SECONDS (default 60) from a seed corpus of our own files (tests/fuzz/corpus/<target>,
# grown by the run). A crash leaves build-fuzz/<target>-crash-* and fails the script: turn each
# into a regression test.
#   scripts/fuzz.sh [SECONDS] [--junit FILE]
# --junit FILE writes one JUnit test case per target (fuzz::<target>), for scripts/test_report.py;
# scripts/test.sh runs every target for 10 s this way (the CI's short run).
# Needs clang and libclang-rt-14-dev (apt-get install clang libclang-rt-14-dev), besides what
# scripts/setup.sh installs, and the build in build/ (config_fuzz links its model libraries,
# which the config code's model registry needs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_EACH=60
JUNIT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --junit) JUNIT="$2"; shift 2 ;;
    *) SECONDS_EACH="$1"; shift ;;
  esac
done
B=build-fuzz
mkdir -p "$B"
command -v clang++ > /dev/null || { echo "fuzz: clang++ is missing (apt-get install clang libclang-rt-14-dev)"; exit 2; }
CXX=(clang++); command -v ccache > /dev/null && CXX=(ccache clang++)
FLAGS=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -I. -I/usr/include/opencv4)
ABSL=$(pkg-config --libs absl_status absl_statusor absl_strings absl_raw_hash_set absl_hash)
"${CXX[@]}" "${FLAGS[@]}" tests/fuzz/header_fuzz.cc models/weights/internal/safetensors_header.cc \
  $ABSL -o "$B/header_fuzz"
"${CXX[@]}" "${FLAGS[@]}" tests/fuzz/image_fuzz.cc server/image/decode.cc server/image/image_header.cc \
  $ABSL -lopencv_core -lopencv_imgproc -lopencv_imgcodecs -o "$B/image_fuzz"
# The config code, instrumented; the model registry it calls comes uninstrumented from build/,
# with LibTorch (and its CUDA runtime, when the build has CUDA) from the torch wheel in .venv/.
TORCH="$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
CUDART="$TORCH/../nvidia/cu13/lib"
TORCH_LIBS=(-L"$TORCH/lib" -Wl,-rpath,"$TORCH/lib" -ltorch -ltorch_cpu -lc10)
if [[ -e "$TORCH/lib/libtorch_cuda.so" && -d "$CUDART" ]]; then
  # cuBLASLt: layers::LinearPlusResidual (models/) calls it directly in CUDA builds.
  TORCH_LIBS+=(-ltorch_cuda -lc10_cuda -L"$CUDART" -Wl,-rpath,"$CUDART" -l:libcudart.so.13
    -l:libcublasLt.so.13)
fi
[[ -f build/models/libvitserve_models.a ]] || { echo "fuzz: build/ is missing: run scripts/setup.sh first"; exit 2; }
"${CXX[@]}" "${FLAGS[@]}" -Ibuild/proto/gen -idirafter "$TORCH/include" \
  -idirafter "$TORCH/include/torch/csrc/api/include" -D_GLIBCXX_USE_CXX11_ABI=1 \
  tests/fuzz/config_fuzz.cc server/config/model_config.cc server/config/file_util.cc \
  build/proto/gen/vitserve/v1/model_config.pb.cc \
  -Wl,--start-group $(find build/models -name '*.a' | sort) -Wl,--end-group \
  $ABSL $(pkg-config --libs absl_str_format) -lprotobuf "${TORCH_LIBS[@]}" -o "$B/config_fuzz"

# The REST infer request reader: nlohmann-json, the shared JSON writer and the generated messages.
"${CXX[@]}" "${FLAGS[@]}" -Ibuild/proto/gen tests/fuzz/infer_fuzz.cc server/rest/kserve_json.cc \
  common/result_json.cc build/proto/gen/vitserve/v1/vision.pb.cc \
  build/proto/gen/vitserve/v1/model_config.pb.cc \
  build/proto/gen/inference/grpc_service.pb.cc build/proto/gen/inference/model_config.pb.cc \
  $ABSL $(pkg-config --libs absl_flat_hash_set 2>/dev/null || true) -lprotobuf -o "$B/infer_fuzz"

# Request validation into batches (Vision and KServe requests), instrumented with the image code
# it calls; the models' top-k and LibTorch come uninstrumented as for config_fuzz.
"${CXX[@]}" "${FLAGS[@]}" -Ibuild/proto/gen -idirafter "$TORCH/include" \
  -idirafter "$TORCH/include/torch/csrc/api/include" -D_GLIBCXX_USE_CXX11_ABI=1 \
  tests/fuzz/request_fuzz.cc server/api/wire_bytes.cc server/api/classify.cc \
  server/api/deferred_classify.cc server/api/deferred_infer.cc server/api/image_input.cc \
  server/api/kserve_tensor.cc server/api/detect.cc server/image/decode.cc server/image/image_header.cc \
  server/image/preprocess.cc server/image/resize_weights.cc server/image/dense_output.cc \
  server/image/jpeg_part.cc \
  build/proto/gen/vitserve/v1/vision.pb.cc build/proto/gen/vitserve/v1/model_config.pb.cc \
  build/proto/gen/inference/grpc_service.pb.cc build/proto/gen/inference/model_config.pb.cc \
  -Wl,--start-group $(find build/models -name '*.a' | sort) -Wl,--end-group \
  $ABSL $(pkg-config --libs absl_str_format) -lprotobuf -lopencv_core -lopencv_imgproc \
  -lopencv_imgcodecs $(pkg-config --libs grpc++) "${TORCH_LIBS[@]}" -o "$B/request_fuzz"

# A whole safetensors file through SafetensorsFile::Open and Tensor(), instrumented.
"${CXX[@]}" "${FLAGS[@]}" -idirafter "$TORCH/include" \
  -idirafter "$TORCH/include/torch/csrc/api/include" -D_GLIBCXX_USE_CXX11_ABI=1 \
  tests/fuzz/safetensors_fuzz.cc models/weights/safetensors.cc \
  models/weights/internal/safetensors_header.cc \
  $ABSL $(pkg-config --libs absl_str_format) "${TORCH_LIBS[@]}" -o "$B/safetensors_fuzz"

# Seeds: our own sample images, and safetensors-style headers.
mkdir -p "$B/corpus/header" "$B/corpus/image" "$B/corpus/config" "$B/corpus/infer" \
  "$B/corpus/request" "$B/corpus/safetensors"
cp tests/e2e/data/*.jpg tests/e2e/data/*.png tests/e2e/data/*.webp "$B/corpus/image/"
printf '%s' '{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}' > "$B/corpus/header/header.json"
printf '%s' '{"a":[1,-2.5e3,true,false,null,"\u00e9\ud83d\ude00\n"]}' > "$B/corpus/header/values.json"
cat > "$B/corpus/config/full.pbtxt" <<'PBTXT'
name: "m" architecture: "shvit_s1"
device: "cuda"  precision: FP16  instance_count: 2
batching { max_batch_size: 32 max_queue_delay_us: 2000 max_queue_size: 512 default_timeout_ms: 100 }
input { size: 224 mean: [0.485, 0.456, 0.406] std: [0.229, 0.224, 0.225] crop_pct: 0.875 interpolation: "bicubic" }
weights: "model.safetensors"  labels: "labels.txt"  cuda_graphs: false  device_preprocessing: true
PBTXT
printf '%s\n' 'architecture: "deit_tiny_patch16_224"' > "$B/corpus/config/minimal.pbtxt"
# Infer bodies: the first byte picks the binary-data header length (even: all JSON).
printf '%s' ' {"id":"a","inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[[1.5,2]]}],"outputs":[{"name":"logits","parameters":{"binary_data":true}}]}' > "$B/corpus/infer/json.bin"
printf '%s' ' {"inputs":[{"name":"input","shape":[3],"datatype":"UINT8","data":[0,7,255]}],"parameters":{"binary_data_output":true,"timeout":5}}' > "$B/corpus/infer/uint8.bin"

# Requests (protobuf wire format): two bytes (target path, options), then the message.
python3 - "$B/corpus/request" tests/e2e/data/shapes_200x300.png <<'PY'
import pathlib, struct, sys
out, png = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_bytes()
def varint(n):
    b = b""
    while True:
        b += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)]); n >>= 7
        if not n: return b
def ld(field, payload): return varint(field << 3 | 2) + varint(len(payload)) + payload
def num(field, value): return varint(field << 3) + varint(value)
raw_image = ld(2, num(1, 4) + num(2, 4) + ld(3, bytes(range(0, 144, 3))))  # 4x4 RGB
png_image = ld(1, png)
vision = lambda image: ld(1, b"m") + ld(2, image) + num(3, 3)
def infer(datatype, shape, data): return (ld(1, b"m") + ld(5, ld(1, b"input") + ld(2, datatype)
    + ld(3, b"".join(varint(d) for d in shape))) + ld(6, ld(1, b"logits")) + ld(7, data))
seeds = {"classify_raw": b"\0\0" + vision(raw_image),
         "classify_raw_device": b"\0\1" + vision(raw_image),
         "classify_png_device": b"\0\1" + vision(png_image),
         "dense_png": b"\1\0" + vision(png_image), "dense_raw_stretch": b"\1\x08" + vision(raw_image),
         "infer_uint8": b"\2\1" + infer(b"UINT8", [1, 3, 2, 2], bytes(range(12))),
         "infer_fp32": b"\2\3" + infer(b"FP32", [3, 4, 4], struct.pack("<48f", *range(48)))}
for name, data in seeds.items(): (out / name).write_bytes(data)
PY

# Safetensors files: two small F32/F16/BF16/I64 files as the format writes them.
python3 - "$B/corpus/safetensors" <<'PY'
import json, pathlib, struct, sys
out = pathlib.Path(sys.argv[1])
def file(tensors, metadata=None):
    header, data = {}, b""
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    if metadata: header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data
(out / "mixed.safetensors").write_bytes(file({
    "w": ("F32", [2, 3], struct.pack("<6f", *range(6))),
    "h": ("F16", [4], struct.pack("<4e", 1, -2, 0.5, 3)),
    "b": ("BF16", [2], b"\x80\x3f\x00\x40"),
    "n": ("I64", [], struct.pack("<q", 7))}, {"format": "pt"}))
(out / "empty_tensor.safetensors").write_bytes(file({"e": ("F32", [0, 3], b"")}))
PY

status=0
cases=""
for target in header image config infer request safetensors; do
  echo "[fuzz] ${target}_fuzz for ${SECONDS_EACH} s"
  dict=()  # Field names and values for the text-format parser (libprotobuf is not instrumented).
  [[ -f "tests/fuzz/$target.dict" ]] && dict=(-dict="$PWD/tests/fuzz/$target.dict")
  started=$SECONDS
  if (cd "$B" && ./"${target}_fuzz" -max_total_time="$SECONDS_EACH" -max_len=65536 \
          -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="${target}-" "${dict[@]}" \
          "corpus/$target" > "${target}.log" 2>&1); then
    outcome=""
  else
    status=1
    found="$(cd "$B" && ls "${target}"-crash-* "${target}"-leak-* "${target}"-timeout-* 2> /dev/null | tr '\n' ' ')"
    outcome="<failure message=\"${target}_fuzz failed: ${found:-see $B/${target}.log}\"/>"
  fi
  tail -8 "$B/${target}.log"
  cases+="<testcase classname=\"fuzz\" name=\"fuzz::${target}\" time=\"$((SECONDS - started))\">${outcome}</testcase>"
done
if [ -n "$JUNIT" ]; then
  printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="fuzz">%s</testsuite>\n' "$cases" > "$JUNIT"
fi
exit $status
