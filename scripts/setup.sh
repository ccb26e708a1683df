#!/usr/bin/env bash
# Installs what vitserve needs on Debian 12 and builds it. Idempotent: a second run only
# rebuilds what changed.
#   scripts/setup.sh [--no-build]
# Environment: BUILD_DIR (default build), VITSERVE_BUILD_TYPE (default Release),
#              VITSERVE_JOBS (default: number of cores).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${VITSERVE_JOBS:-$(nproc)}"
log() { echo "[setup] $*" >&2; }

# A fresh checkout needs about 5 GiB for .venv/ (torch) and 2 GiB for the build. Running out
# midway shows up as a compiler that dies without a message, so say it up front.
free_gib=$(( $(df -Pk . | awk 'NR==2 {print $4}') / 1048576 ))
if [ ! -d .venv ] && [ "$free_gib" -lt 8 ]; then
  log "WARNING: only ${free_gib} GiB free here; a first setup needs about 8 GiB (.venv/ 5, build 2)"
elif [ "$free_gib" -lt 3 ]; then
  log "WARNING: only ${free_gib} GiB free here; the build may run out of disk space"
fi

# --- Debian packages ---------------------------------------------------------------------
# What building and testing need; scripts/check_dependencies.py (run by
# tests/e2e/test_system_deps.py) fails when the build or the tests use a system file that no
# package here, or one it depends on, brings.
APT_PACKAGES=(
  build-essential cmake ninja-build ccache git pkg-config python3 python3-venv python3-pip
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev
  # The three OpenCV modules we use, not libopencv-dev: cmake/VitserveOpenCV.cmake says why.
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev  # JSON (header-only): REST bodies, --json output, COCO files
  libcpp-httplib-dev  # HTTP/1.1 server of the REST port (server/rest/)
  libtcmalloc-minimal4  # tcmalloc, the vitserve binary's malloc (cmake/VitserveDependencies.cmake)
  curl  # the REST tests call the plain endpoint as users do
  clang libclang-rt-14-dev  # libFuzzer with ASan/UBSan: scripts/fuzz.sh (test.sh's short run)
  libb64-0d   # perf_analyzer's runtime dependency (e2e tests)
  prometheus  # prometheus + promtool: tests/e2e/test_prometheus.py scrapes vitserve with them
  # The container images' end-to-end test (scripts/container-test.sh): rootful podman with a
  # base image made by debootstrap (no registry is reachable), runc as the runtime.
  podman buildah debootstrap runc catatonit fuse-overlayfs slirp4netns uidmap
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${#missing[@]} Debian packages: ${missing[*]}"
  started=$SECONDS
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  log "Debian packages installed in $((SECONDS - started)) s"
fi

# --- Debian's kubectl, unpacked into .tools/ ----------------------------------------------
# tests/e2e/test_kustomize.py renders deploy/overlays with `kubectl kustomize`. Debian 12's
# kubectl (package kubernetes-client, 1.20) is unpacked here rather than installed: installing it
# would collide with a newer kubectl that the machine may have from elsewhere (both own
# /usr/bin/kubectl), and nothing else needs it.
KUBECTL_DIR=.tools/kubernetes-client
if [ ! -x "$KUBECTL_DIR/usr/bin/kubectl" ]; then
  log "unpacking Debian's kubernetes-client (kubectl) into $KUBECTL_DIR/"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  download_dir="$(mktemp -d)"
  chmod a+rwx "$download_dir"  # apt fetches as its own user (_apt) when it can write here
  # apt-get download needs the package lists; a machine that has never run apt-get update lacks them.
  (cd "$download_dir" && apt-get download -qq kubernetes-client 2>/dev/null) \
    || { $SUDO apt-get update -qq && (cd "$download_dir" && apt-get download -qq kubernetes-client); }
  rm -rf "$KUBECTL_DIR" && mkdir -p "$KUBECTL_DIR"
  dpkg-deb -x "$download_dir"/kubernetes-client_*.deb "$KUBECTL_DIR"
  rm -rf "$download_dir"
fi

# --- Python packages into .venv/ ---------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv/"
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
want="$(cat requirements-dev.txt requirements-vim.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages (torch 2.11 is large: the first time takes minutes)"
  started=$SECONDS
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q --progress-bar off -r requirements-dev.txt
  # mamba-ssm only for its pure-PyTorch reference scan: no CUDA extensions, no dependency
  # resolution (it would replace the pinned torch), no prebuilt-wheel download.
  MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE \
    .venv/bin/python -m pip install -q --progress-bar off --no-build-isolation --no-deps \
    -r requirements-vim.txt
  echo "$want" > "$stamp"
  log "Python packages installed in $((SECONDS - started)) s"
fi

[ "${1:-}" = "--no-build" ] && exit 0

# --- Build -------------------------------------------------------------------------------
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  log "configuring $BUILD_DIR/"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="${VITSERVE_BUILD_TYPE:-Release}" >/dev/null
fi
log "building in $BUILD_DIR/ with $JOBS jobs"
started=$SECONDS
cmake --build "$BUILD_DIR" -j "$JOBS"
log "built in $((SECONDS - started)) s"
