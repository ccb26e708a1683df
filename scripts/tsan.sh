#!/usr/bin/env bash
# ThreadSanitizer over the dynamic batcher's unit tests (tests/unit/server/batching/, the
# dynamic_batcher_test target: server/batching/ + tests/test_util/ + LibTorch + abseil, no gRPC).
#
#   scripts/tsan.sh            (after scripts/setup.sh has installed the dependencies)
#   TSAN_JOBS=2 scripts/tsan.sh    (more parallel compile jobs; default 1, compiles run niced)
#   scripts/tsan.sh --gtest_filter='DynamicBatcherTest.Stop*'   (extra args go to the test)
#
# What it builds:
#   1. build-tsan-deps/absl-tsan/: abseil 20220623.1 (the upstream tarball of the version Debian 12
#      ships) compiled with -fsanitize=thread, static, installed with its CMake config. Built once
#      and cached; delete build-tsan-deps/ to rebuild it.
#   2. build-tsan/: the project configured with -fsanitize=thread -g -O1 and pointed at that
#      abseil (-Dabsl_DIR=...), then only the dynamic_batcher_test target is built and run with
#      TSAN_OPTIONS=halt_on_error=1 second_deadlock_stack=1. The script exits non-zero on any
#      TSan report or test failure; the full log is build-tsan/dynamic_batcher_test.tsan.log.
#
# Why abseil is rebuilt: Debian's libabsl20220623 is not compiled with TSan, and abseil emits the
# annotations that tell TSan what absl::Mutex / CondVar / Notification synchronise only when
# abseil itself is compiled with -fsanitize=thread. Against the system abseil, TSan cannot see
# the batcher's locking and reports a false race on every mutex-guarded field. The rebuilt abseil
# keeps Debian's configuration (absl::optional/any/variant/string_view are abseil's own types,
# hardened mode on) but uses its own inline namespace (absl::tsan_20220623), so an accidental mix
# with the system abseil fails to link instead of misbehaving silently.
#
# Cost (2 cores, -j1, niced, another build running): the first run takes about 30 minutes
# (abseil about 20, the LibTorch precompiled header and the test about 10); later runs only
# rebuild what changed and the test itself runs in about a minute under TSan.
#
# Suppressions: see the heredoc below. Only code inside the uninstrumented LibTorch shared
# libraries (libc10.so, libtorch_cpu.so) is suppressed; nothing in server/, models/, common/ or
# tests/ is.
#
# Scope / limitation: only the batcher. The server core (server/core, server/api, ...) links gRPC,
# protobuf and prometheus-cpp from Debian, which are themselves linked against the uninstrumented
# system abseil (inline namespace debian3); mixing them with the TSan abseil is not possible in one
# binary, and with the system abseil TSan is blind to every absl::Mutex.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
JOBS=${TSAN_JOBS:-1}
NICE=(nice -n 19)
TSAN_CFLAGS="-fsanitize=thread -g -O1"

# --- 1. abseil with TSan, once -----------------------------------------------------------
ABSL_VERSION=20220623.1
DEPS=$ROOT/build-tsan-deps
ABSL_SRC=$DEPS/abseil-$ABSL_VERSION
ABSL_PREFIX=$DEPS/absl-tsan
ABSL_DIR=$ABSL_PREFIX/lib/cmake/absl
if [[ ! -f $ABSL_DIR/abslConfig.cmake ]]; then
  echo "[tsan] building abseil $ABSL_VERSION with -fsanitize=thread into $ABSL_PREFIX (once)"
  mkdir -p "$DEPS"
  tarball=$DEPS/abseil_$ABSL_VERSION.orig.tar.gz
  [[ -f $tarball ]] || curl -fsSL -o "$tarball" \
    "http://deb.debian.org/debian/pool/main/a/abseil/abseil_$ABSL_VERSION.orig.tar.gz"
  rm -rf "$ABSL_SRC" "$DEPS/absl-build"
  tar -xzf "$tarball" -C "$DEPS"
  # Debian's options (see /usr/include/absl/base/options.h), under a namespace of our own.
  sed -i -E \
    -e 's/^#define ABSL_OPTION_USE_STD_(ANY|OPTIONAL|STRING_VIEW|VARIANT) 2$/#define ABSL_OPTION_USE_STD_\1 0/' \
    -e 's/^#define ABSL_OPTION_INLINE_NAMESPACE_NAME .*/#define ABSL_OPTION_INLINE_NAMESPACE_NAME tsan_20220623/' \
    -e 's/^#define ABSL_OPTION_HARDENED 0$/#define ABSL_OPTION_HARDENED 1/' \
    "$ABSL_SRC/absl/base/options.h"
  [[ $(grep -cE '^#define ABSL_OPTION_(USE_STD_[A-Z_]+ 0|HARDENED 1|INLINE_NAMESPACE_NAME tsan_)' \
       "$ABSL_SRC/absl/base/options.h") == 6 ]] || { echo "[tsan] could not set abseil's options.h"; exit 1; }
  "${NICE[@]}" cmake -S "$ABSL_SRC" -B "$DEPS/absl-build" -G Ninja \
    -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_STANDARD=17 -DABSL_PROPAGATE_CXX_STD=ON \
    -DCMAKE_CXX_FLAGS="$TSAN_CFLAGS -DNDEBUG" -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DBUILD_SHARED_LIBS=OFF -DBUILD_TESTING=OFF -DABSL_BUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX="$ABSL_PREFIX" > /dev/null
  "${NICE[@]}" ninja -C "$DEPS/absl-build" -j"$JOBS" install > "$DEPS/absl-build.log" \
    || { tail -30 "$DEPS/absl-build.log"; exit 1; }
  rm -rf "$DEPS/absl-build" "$ABSL_SRC"
fi

# --- 2. the batcher test, instrumented, against that abseil --------------------------------
# -O1 instead of RelWithDebInfo's -O2 (better stacks); gRPC's CMake config, found first, reuses
# the TSan abseil's targets (same version) but nothing that links gRPC is built here.
B=build-tsan
"${NICE[@]}" cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DVITSERVE_BUILD_BENCH=OFF -Dabsl_DIR="$ABSL_DIR" \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-g -O1 -DNDEBUG" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" > /dev/null
"${NICE[@]}" ninja -C "$B" -j"$JOBS" dynamic_batcher_test
TEST=$B/tests/dynamic_batcher_test
# The binary must carry the TSan abseil only (statically), never Debian's libabsl_*.so.
# (grep > /dev/null, not grep -q: with pipefail, grep -q's early exit would fail the pipeline.)
if ldd "$TEST" | grep 'libabsl_' > /dev/null; then
  echo "[tsan] $TEST links the system abseil:"; ldd "$TEST" | grep 'libabsl_'; exit 1
fi
nm -C "$TEST" | grep 'absl::tsan_20220623::Mutex::Lock()' > /dev/null \
  || { echo "[tsan] $TEST does not contain the TSan abseil's Mutex"; exit 1; }

# --- 3. run ----------------------------------------------------------------------------------
LOG=$B/dynamic_batcher_test.tsan.log
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
echo "[tsan] running $TEST (TSAN_OPTIONS=$TSAN_OPTIONS)"
status=0
"$TEST" "$@" > "$LOG" 2>&1 || status=$?
if [[ $status -eq 0 ]] && ! grep -q 'ThreadSanitizer' "$LOG" && grep -q '^\[  PASSED' "$LOG"; then
  echo "[tsan] dynamic_batcher_test: $(grep -E '^\[  PASSED' "$LOG"), no TSan report"
  exit 0
fi
echo "[tsan] dynamic_batcher_test FAILED (exit $status): see $LOG"
grep -m1 -A40 -E 'WARNING: ThreadSanitizer|ERROR: ThreadSanitizer|ThreadSanitizer:' "$LOG" \
  || grep -m10 -E '^\[  FAILED|Failure' "$LOG" || tail -20 "$LOG"
exit 1
