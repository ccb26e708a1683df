#!/usr/bin/env bash
# libFuzzer over the parsers that read untrusted bytes (issue 14): the safetensors header JSON
# parser and the image header reader + decoder. Builds each target with clang
# (-fsanitize=fuzzer,address,undefined) into build-fuzz/ and runs it for SECONDS (default 60)
# from a seed corpus of our own files (tests/fuzz/corpus/<target>, grown by the run). A crash
# leaves build-fuzz/crash-* and fails the script: turn each into a regression test.
#   scripts/fuzz.sh [SECONDS]
# Needs clang and libclang-rt-14-dev (apt-get install clang libclang-rt-14-dev), besides what
# scripts/setup.sh installs; not part of CI yet.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_EACH="${1:-60}"
B=build-fuzz
mkdir -p "$B"
command -v clang++ > /dev/null || { echo "fuzz: clang++ is missing (apt-get install clang libclang-rt-14-dev)"; exit 2; }
FLAGS=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer -I. -I/usr/include/opencv4)
ABSL=$(pkg-config --libs absl_status absl_statusor absl_strings)
clang++ "${FLAGS[@]}" tests/fuzz/json_fuzz.cc models/weights/internal/json.cc $ABSL -o "$B/json_fuzz"
clang++ "${FLAGS[@]}" tests/fuzz/image_fuzz.cc server/image/decode.cc server/image/image_header.cc \
  $ABSL -lopencv_core -lopencv_imgproc -lopencv_imgcodecs -o "$B/image_fuzz"

# Seeds: our own sample images, and safetensors-style headers.
mkdir -p "$B/corpus/json" "$B/corpus/image"
cp tests/e2e/data/*.jpg tests/e2e/data/*.png tests/e2e/data/*.webp "$B/corpus/image/"
printf '%s' '{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}' > "$B/corpus/json/header.json"
printf '%s' '{"a":[1,-2.5e3,true,false,null,"\u00e9\ud83d\ude00\n"]}' > "$B/corpus/json/values.json"

status=0
for target in json image; do
  echo "[fuzz] ${target}_fuzz for ${SECONDS_EACH} s"
  if ! (cd "$B" && ./"${target}_fuzz" -max_total_time="$SECONDS_EACH" -max_len=65536 \
          -rss_limit_mb=2048 -print_final_stats=1 "corpus/$target" 2>&1 | tail -12); then
    status=1
  fi
done
ls "$B"/crash-* "$B"/leak-* "$B"/timeout-* 2> /dev/null && status=1
exit $status
