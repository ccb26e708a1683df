#!/usr/bin/env bash
# ThreadSanitizer over the server core's suites that link no gRPC: the dynamic batcher
# (dynamic_batcher_test), the model instances (runtime_test) and the model manager
# (model_manager_test: ServableModel with its admission, batcher, instances and metrics).
#
#   scripts/tsan.sh        (after scripts/setup.sh; the first run downloads abseil's source from
#                           deb.debian.org; needs curl and patch)
#   TSAN_JOBS=2 scripts/tsan.sh        (parallel compile jobs; default 1; compiles run niced)
#   scripts/tsan.sh --gtest_filter='DynamicBatcherTest.Stop*'   (extra args go to the test)
#
# What it builds:
#   1. build-tsan-deps/absl-tsan/: abseil 20220623.1 (the upstream tarball of the version Debian 12
#      ships) compiled with -fsanitize=thread, static, installed with its CMake config. Built once
#      and cached; delete build-tsan-deps/ to rebuild it.
#   2. build-tsan/: the project configured with -fsanitize=thread -g -O1 and pointed at that
#      abseil (-Dabsl_DIR=...), then only those three suites are built and run with
#      TSAN_OPTIONS=halt_on_error=1 second_deadlock_stack=1. The script exits non-zero on any
#      TSan report or test failure; the full logs are build-tsan/<suite>.tsan.log.
#
# Why abseil is rebuilt: Debian's libabsl20220623 is not compiled with TSan, and abseil emits the
# annotations that tell TSan what absl::Mutex / CondVar / Notification synchronise only when
# abseil itself is compiled with -fsanitize=thread. Against the system abseil, TSan cannot see
# the batcher's locking and reports a false race on every mutex-guarded field. The rebuilt abseil
# keeps Debian's configuration (absl::optional/any/variant/string_view are abseil's own types,
# hardened mode on) but uses its own inline namespace (absl::tsan_20220623), so an accidental mix
# with the system abseil fails to link instead of misbehaving silently.
#
# The abseil build also backports one upstream fix to its TSan annotations (commit bb7be494,
# in abseil 20230125+): without it every test fails on a false race inside absl::Mutex itself.
#
# Cost (2 cores, -j1, niced, another build running, ccache off): the first run took 4 minutes
# (download and abseil about 2, the project's configure and its 770 MB LibTorch precompiled header
# about 1, the batcher and the test about 1; build-tsan/ is then about 0.8 GB); the test itself runs
# in about 5 seconds under TSan. Later runs rebuild only what changed. For a longer hunt:
#   scripts/tsan.sh --gtest_repeat=30 --gtest_shuffle
#
# Suppressed (TSAN_OPTIONS=suppressions=build-tsan/tsan.supp, written below), exactly:
#   race:libc10.so
#   race:libtorch_cpu.so
#   deadlock:libgdal.so
# i.e. race reports with a frame of either stack in the uninstrumented LibTorch libraries, and
# lock-order reports inside GDAL: OpenCV's imgcodecs loads it, and GDAL's own lazily created
# mutexes (CPLCreateOrAcquireMutexEx inside CPLAcquireMutex) take two of its locks in both
# orders on one thread when a test encodes a JPEG with cv::imencode (runtime_test's GPU JPEG
# cases, 2026-12-03); no lock of ours is in those stacks. Why:
# a tensor's last reference is often dropped inside them (e.g. a view dropping its base), and TSan
# sees that free but not the refcount's acquire that orders it after other threads' decrements
# (details and the report it hid at the heredoc). Nothing in server/, models/, common/ or tests/
# is suppressed: a race between two accesses made by our code is still reported (checked with a
# copy of dynamic_batcher.cc missing one lock). The run prints how many reports each line hid.
#
# Scope / limitation: the three suites above. The rest of the server that uses absl::Mutex
# (server/api, server/rest through vitserve_api, vitserve_server) links
# Debian's gRPC (libgrpc++.so, libgrpc.so, ...), itself linked against the uninstrumented system
# abseil (libabsl_*.so, inline namespace debian3): one binary cannot use both abseils
# consistently, and with the system abseil TSan is blind to every absl::Mutex. Covering it needs
# gRPC rebuilt against the TSan abseil too.
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
  # Upstream abseil commit bb7be494 ("absl: fix Mutex TSan annotations", 2022-11-28, in
  # 20230125 and later), backported: without it TSan reports a false race between a thread's
  # first blocking wait (its ThreadIdentity, mmap'ed by LowLevelAlloc) and the thread that wakes
  # it (Waiter::Post), on the very first Schedule of every test (abseil-cpp issue 1239).
  patch -s -p1 -d "$ABSL_SRC" <<'PATCH'
--- a/absl/synchronization/mutex.cc
+++ b/absl/synchronization/mutex.cc
@@ -563,10 +563,15 @@
 void Mutex::IncrementSynchSem(Mutex *mu, PerThreadSynch *w) {
   if (mu) {
     ABSL_TSAN_MUTEX_PRE_DIVERT(mu, 0);
-  }
-  PerThreadSem::Post(w->thread_identity());
-  if (mu) {
+    // We miss synchronization around passing PerThreadSynch between threads
+    // since it happens inside of the Mutex code, so we need to ignore all
+    // accesses to the object.
+    ABSL_ANNOTATE_IGNORE_READS_AND_WRITES_BEGIN();
+    PerThreadSem::Post(w->thread_identity());
+    ABSL_ANNOTATE_IGNORE_READS_AND_WRITES_END();
     ABSL_TSAN_MUTEX_POST_DIVERT(mu, 0);
+  } else {
+    PerThreadSem::Post(w->thread_identity());
   }
 }
 
PATCH
  "${NICE[@]}" cmake -S "$ABSL_SRC" -B "$DEPS/absl-build" -G Ninja \
    -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_STANDARD=17 -DABSL_PROPAGATE_CXX_STD=ON \
    -DCMAKE_CXX_FLAGS="$TSAN_CFLAGS -DNDEBUG" -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DBUILD_SHARED_LIBS=OFF -DBUILD_TESTING=OFF -DABSL_BUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX="$ABSL_PREFIX" > /dev/null
  "${NICE[@]}" ninja -C "$DEPS/absl-build" -j"$JOBS" install > "$DEPS/absl-build.log" \
    || { tail -30 "$DEPS/absl-build.log"; exit 1; }
  rm -rf "$DEPS/absl-build" "$ABSL_SRC"
fi

# --- 2. the suites, instrumented, against that abseil ------------------------------------
# -O1 instead of RelWithDebInfo's -O2 (better stacks); gRPC's CMake config, found first, reuses
# the TSan abseil's targets (same version) but nothing that links gRPC is built here.
B=build-tsan
"${NICE[@]}" cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DVITSERVE_BUILD_BENCH=OFF -Dabsl_DIR="$ABSL_DIR" \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-g -O1 -DNDEBUG" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" > /dev/null
# The suites of the server core that link no gRPC: the batcher, the model instances, and the
# model manager (ServableModel: admission, batcher, instances and metrics together).
SUITES=(dynamic_batcher_test runtime_test model_manager_test)
"${NICE[@]}" ninja -C "$B" -j"$JOBS" "${SUITES[@]}"
for suite in "${SUITES[@]}"; do
  TEST=$B/tests/$suite
  # The binary must carry the TSan abseil only (statically), never Debian's libabsl_*.so.
  # (grep > /dev/null, not grep -q: with pipefail, grep -q's early exit would fail the pipeline.)
  if ldd "$TEST" | grep 'libabsl_' > /dev/null; then
    echo "[tsan] $TEST links the system abseil:"; ldd "$TEST" | grep 'libabsl_'; exit 1
  fi
  nm -C "$TEST" | grep 'absl::tsan_20220623::Mutex::Lock()' > /dev/null \
    || { echo "[tsan] $TEST does not contain the TSan abseil's Mutex"; exit 1; }
done

# --- 3. run ----------------------------------------------------------------------------------
# Suppressions: only the uninstrumented LibTorch libraries. A tensor's refcount is an atomic in
# c10/util/intrusive_ptr.h: decrements inlined into our (instrumented) code are seen by TSan, but
# the last decrement and the free often run inside libc10.so / libtorch_cpu.so (e.g. a view's
# DifferentiableViewMeta dropping its base tensor), where TSan sees the free (an intercepted
# operator delete) but not the acquire that orders it after the other threads' decrements. Seen
# in SetupsRunOnTheirExecutorThreadsBeforeCreateReturns: an executor drops the batch output (the
# views' base) in RunBatch after the last on_done, the test thread frees it when it destroys its
# results. `race:<module>` drops a report when any frame of either stack is in that module. Since
# TSan records no plain memory access made by those libraries anyway (they are not
# instrumented), this only hides reports involving their intercepted calls (free, memcpy, ...);
# races between accesses made by our code (server/, common/, tests/) are still reported, and
# the run prints how many reports each line suppressed.
SUPP=$B/tsan.supp
cat > "$SUPP" <<'SUPPRESSIONS'
race:libc10.so
race:libtorch_cpu.so
deadlock:libgdal.so
SUPPRESSIONS
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$ROOT/$SUPP print_suppressions=1 ${TSAN_OPTIONS:-}"
REPORT='(WARNING|ERROR|FATAL): ThreadSanitizer|ThreadSanitizer: reported'
failed=0
for suite in "${SUITES[@]}"; do
  TEST=$B/tests/$suite
  LOG=$B/$suite.tsan.log
  echo "[tsan] running $TEST (TSAN_OPTIONS=$TSAN_OPTIONS)"
  status=0
  "$TEST" "$@" > "$LOG" 2>&1 || status=$?
  if [[ $status -eq 0 ]] && ! grep -qE "$REPORT" "$LOG" && grep -q '^\[  PASSED' "$LOG"; then
    echo "[tsan] $suite: $(grep -E '^\[  PASSED' "$LOG"), no TSan report"
    sed -n '/ThreadSanitizer: Matched/,$p' "$LOG" | sed 's/^/[tsan]   /'
    continue
  fi
  failed=1
  echo "[tsan] $suite FAILED (exit $status): see $LOG"
  if grep -qE "$REPORT" "$LOG"; then
    sed -n '/WARNING: ThreadSanitizer/,/SUMMARY: ThreadSanitizer/p' "$LOG" | head -80
    grep -m3 -E "$REPORT" "$LOG"
  else
    grep -m10 -E '^\[  FAILED|Failure' "$LOG" || tail -20 "$LOG"
  fi
done
exit $failed
