#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: CTest (unit and integration), the
# pytest end-to-end suite against the real binaries, a short libFuzzer run of every fuzz
# target (scripts/fuzz.sh), the short AddressSanitizer + UndefinedBehaviorSanitizer run
# (scripts/sanitizers.sh --short), and the container image's end-to-end test
# (scripts/container-test.sh, as root). Exit status 0 only when all pass and no test was
# skipped other than a CUDA one (without a GPU) or the container image test on a disk without
# room for the build; the last line sums up all three.
#   scripts/test.sh [extra pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
scripts/setup.sh

echo "[test] CTest: unit and integration suites" >&2
started=$SECONDS
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" --timeout 600 \
  --output-junit "$ROOT/$BUILD_DIR/ctest-junit.xml"
echo "[test] CTest took $((SECONDS - started)) s" >&2

echo "[test] pytest: end-to-end suite against $BUILD_DIR/bin" >&2
started=$SECONDS
export VITSERVE_BUILD_DIR="$ROOT/$BUILD_DIR"
# The suite's checkpoints (vit_base-sized ones included) take about 4 GB under pytest's temporary
# directory while it runs; say so up front rather than as a dozen "No space left on device"
# failures. Only failed tests' directories are kept afterwards (pytest keeps every test's, for
# its last three runs, by default: 11 GB).
tmp_root="${TMPDIR:-/tmp}"
tmp_free_gb=$(( $(df -Pk "$tmp_root" | awk 'NR == 2 {print $4}') / 1048576 ))
if [ "$tmp_free_gb" -lt 5 ]; then
  echo "[test] warning: ${tmp_free_gb} GB free in $tmp_root; the end-to-end suite needs about" \
    "4 GB there (set TMPDIR to a roomier directory)" >&2
fi
.venv/bin/python -m pytest tests/e2e -q -rs -o tmp_path_retention_policy=failed \
  --junitxml "$BUILD_DIR/pytest-junit.xml" "$@"
echo "[test] pytest took $((SECONDS - started)) s" >&2

# libFuzzer, short: every target of scripts/fuzz.sh for 10 s, six targets: a minute (the long
# run: scripts/fuzz.sh 600).
echo "[test] fuzzing: scripts/fuzz.sh 10" >&2
started=$SECONDS
fuzz_junit="$ROOT/$BUILD_DIR/fuzz-junit.xml"
rm -f "$fuzz_junit"
scripts/fuzz.sh 10 --junit "$fuzz_junit" >&2 \
  || echo "[test] a fuzz target failed (its case in the summary says which)" >&2
# A build that failed before any target ran still counts, as one failed case.
[ -s "$fuzz_junit" ] || printf '<testsuite><testcase classname="fuzz" name="fuzz::build"><failure message="scripts/fuzz.sh failed before running its targets"/></testcase></testsuite>\n' > "$fuzz_junit"
echo "[test] fuzzing took $((SECONDS - started)) s" >&2

# AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer on), short: the suites that take
# hostile bytes or run concurrently without the model zoo (the full run: scripts/sanitizers.sh).
echo "[test] sanitizers: scripts/sanitizers.sh --short" >&2
started=$SECONDS
sanitizers_junit="$ROOT/$BUILD_DIR/sanitizers-junit.xml"
rm -f "$sanitizers_junit"
scripts/sanitizers.sh --short --junit "$sanitizers_junit" >&2 \
  || echo "[test] a sanitizer suite failed (its case in the summary says which)" >&2
[ -s "$sanitizers_junit" ] || printf '<testsuite><testcase classname="sanitizers" name="sanitizers::build"><failure message="scripts/sanitizers.sh failed before running its suites"/></testcase></testsuite>\n' > "$sanitizers_junit"
echo "[test] sanitizers took $((SECONDS - started)) s" >&2

# The CPU image built from docker/Dockerfile.cpu as a user would, run and drained with podman
# (docs/deployment.md section 1; the CUDA image: scripts/container-test.sh --cuda, by hand: it
# needs about 20 GB of disk).
# Its outcome (passed, failed, or skipped when the disk lacks room for the build) is one JUnit
# test case in the summary below.
echo "[test] container image: scripts/container-test.sh --prune" >&2
started=$SECONDS
container_junit="$ROOT/$BUILD_DIR/container-junit.xml"
rm -f "$container_junit"
VITSERVE_BUILD_DIR="$ROOT/$BUILD_DIR" scripts/container-test.sh --prune --junit "$container_junit" \
  || echo "[test] container test failed (exit status $?)" >&2
[ -s "$container_junit" ] || { echo "[test] FAIL: the container test wrote no report" >&2; exit 1; }
echo "[test] container test took $((SECONDS - started)) s" >&2

.venv/bin/python scripts/test_report.py "$BUILD_DIR/ctest-junit.xml" "$BUILD_DIR/pytest-junit.xml" \
  "$BUILD_DIR/fuzz-junit.xml" "$BUILD_DIR/sanitizers-junit.xml" "$container_junit"
