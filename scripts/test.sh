#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: CTest (unit + integration) and the
# pytest end-to-end suite against the real binaries. Exit status 0 only when all pass.
#   scripts/test.sh [extra pytest args...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
scripts/setup.sh

echo "[test] CTest: unit and integration suites" >&2
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)" --timeout 600

echo "[test] pytest: end-to-end suite against $BUILD_DIR/bin" >&2
export VITSERVE_BUILD_DIR="$ROOT/$BUILD_DIR"
.venv/bin/python -m pytest tests/e2e -q -rs "$@"
