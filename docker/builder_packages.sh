#!/usr/bin/env bash
# The Debian packages the image builders install: scripts/setup.sh's APT_PACKAGES (what the
# tree needs to configure and build; a package added there reaches the images without an edit
# here) without those only the tests use.
#   docker/builder_packages.sh scripts/setup.sh
set -euo pipefail
# Test-only: Prometheus/promtool, GoogleTest, Google Benchmark, perf_analyzer's libb64, git and
# pip (setup.sh's Python side; the builders make their own venv with python3-venv), curl, and the
# container tools scripts/container-test.sh uses.
TEST_ONLY='prometheus|libgtest-dev|libgmock-dev|libbenchmark-dev|libb64-0d|git|python3-pip'
TEST_ONLY+='|podman|buildah|debootstrap|runc|catatonit|fuse-overlayfs|slirp4netns|uidmap|curl|clang|libclang-rt-14-dev'
packages="$(sed -n '/^APT_PACKAGES=(/,/^)/{/^APT_PACKAGES=(/d;/^)/d;s/#.*//;p;}' "$1" \
              | tr -s ' \t' '\n' | grep -v -x -E "$TEST_ONLY|" || true)"
[ -n "$packages" ] || { echo "no APT_PACKAGES=( ... ) in $1" >&2; exit 1; }
echo "$packages"
