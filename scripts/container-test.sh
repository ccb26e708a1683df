#!/usr/bin/env bash
# Builds the vitserve:cpu image with podman exactly as a user would and checks it end to end:
# base image (made locally with debootstrap: no registry is reachable here), image build, a
# container with a mounted model repository, `podman healthcheck run`, classification of the
# sample images through the published gRPC port with the host's vitserve-client, /metrics, and
# `podman stop` after which the container must have drained and exited 0.
#
#   scripts/container-test.sh [--cuda] [--no-build] [--rebuild-base] [--base-only] [--prune] [--keep]
#                             [--junit FILE]
#     --cuda          also build vitserve:cuda and check it without a GPU (--device cpu serves,
#                     --device cuda fails with a clear message)
#     --no-build      test the images that exist (skip `podman build`)
#     --rebuild-base  remake debian:12-slim / debian:12 even if they exist
#     --base-only     only make the base images (with --rebuild-base: remake them)
#     --prune         remove dangling images afterwards (the builder stages, ~3.5 GB per build;
#                     pip's and ccache's build caches stay, so the next build is still quick)
#     --keep          leave the test container and its temporary files behind
#     --junit FILE    also write the outcome as a JUnit report of one test case
#                     (container_image::<cpu|cuda>), for scripts/test_report.py
#
# Room: the builds need disk (about 8 GB for the CPU image, 20 GB with --cuda) where podman
# keeps images and where it stages layers (/var/lib/containers, /var/tmp). With less free, the
# test does not start a build that would fail late ("read/write on closed pipe" while podman
# commits a layer): it says so and exits 0 as SKIPPED (so reported with --junit), after pruning
# dangling images to make room.
#
# Environment:
#   CONTAINERS_CONF      default: deploy/podman/containers.conf (runc, ulimits; see that file)
#   VITSERVE_BUILD_DIR   where the host's vitserve-client is (default: build)
#   VITSERVE_CT_WORK     scratch directory (default: /var/tmp/vitserve-container-test)
#   VITSERVE_CT_MIRROR   Debian mirror for the base image (default: the one apt uses here)
#   VITSERVE_JOBS        compile jobs inside the build (default: all cores)
#   VITSERVE_CT_NEED_GB  free disk the build needs, in GB (default: 8, with --cuda 20)
# Needs root (debootstrap, rootful podman) and Debian's podman, buildah, debootstrap, runc,
# catatonit, fuse-overlayfs, slirp4netns and uidmap.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { echo "[container-test] $(date -u +%H:%M:%S) $*" >&2; }
# Without systemd podman cannot schedule health checks and says so on every run/stop/rm; the
# checks run on demand here (`podman healthcheck run`), so drop those lines.
podman() { command podman "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }
JUNIT=""
FAILURE=""
die() { FAILURE="$*"; log "FAIL: $*"; exit 1; }

# One JUnit test case for the whole run: passed, failed (with the reason) or skipped.
write_junit() {  # write_junit pass|fail|skip [message]
  [ -n "$JUNIT" ] || return 0
  local outcome="$1" message="${2:-}" name="container_image::cpu" body=""
  [ "$WITH_CUDA" = 1 ] && name="container_image::cuda"
  message="$(printf '%s' "$message" | sed 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g; s/"/\&quot;/g')"
  case "$outcome" in
    fail) body="<failure message=\"$message\"/>" ;;
    skip) body="<skipped message=\"$message\"/>" ;;
  esac
  mkdir -p "$(dirname "$JUNIT")"
  printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name="container-test" tests="1">\n<testcase classname="container_image" name="%s" time="%s">%s</testcase>\n</testsuite>\n' \
    "$name" "$SECONDS" "$body" > "$JUNIT"
}

WITH_CUDA=0; BUILD=1; REBUILD_BASE=0; BASE_ONLY=0; PRUNE=0; KEEP=0
expect_junit=0
for arg in "$@"; do
  if [ "$expect_junit" = 1 ]; then JUNIT="$arg"; expect_junit=0; continue; fi
  case "$arg" in
    --junit) expect_junit=1 ;;
    --junit=*) JUNIT="${arg#--junit=}" ;;
    --cuda) WITH_CUDA=1 ;;
    --no-build) BUILD=0 ;;
    --rebuild-base) REBUILD_BASE=1 ;;
    --base-only) BASE_ONLY=1 ;;
    --prune) PRUNE=1 ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) die "unknown argument $arg (see --help)" ;;
  esac
done
[ "$expect_junit" = 0 ] || die "--junit needs a file name"
# Whatever ends the run (die, a failed command under set -e, success) is reported.
report_outcome() {
  local rc="${1:-$?}"
  if [ "$rc" = 0 ]; then
    [ -n "${SKIP_REASON:-}" ] && write_junit skip "$SKIP_REASON" || write_junit pass
  else
    write_junit fail "${FAILURE:-exit status $rc (see the log above)}"
  fi
}
trap report_outcome EXIT

export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}"
BUILD_DIR="${VITSERVE_BUILD_DIR:-$ROOT/build}"
WORK="${VITSERVE_CT_WORK:-/var/tmp/vitserve-container-test}"
CLIENT="$BUILD_DIR/bin/vitserve-client"
# Heavy steps yield to everything else on the machine.
NICE=(nice -n 19); command -v ionice > /dev/null && NICE+=(ionice -c3)

for tool in podman debootstrap; do
  command -v "$tool" > /dev/null || die "$tool is missing: apt-get install podman buildah debootstrap runc catatonit fuse-overlayfs slirp4netns uidmap"
done
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and rootful podman)"
[ -x "$CLIENT" ] || die "$CLIENT is missing: build first (scripts/setup.sh)"
mkdir -p "$WORK"
# Builds need room: the CPU build about 8 GB (builder stage, image), the CUDA build about 20 GB
# (a 5.3 GB layer of wheels, committed through a temporary copy in /var/tmp, and a 3.9 GB image).
# Running out shows up late, as "no space left on device" while podman commits a layer.
need_gb=8; [ "$WITH_CUDA" = 1 ] && need_gb=20
need_gb="${VITSERVE_CT_NEED_GB:-$need_gb}"
free_for_podman_gb() {
  mkdir -p /var/lib/containers
  echo $(( $(df -Pk /var/lib/containers /var/tmp | awk 'NR > 1 {print $4}' | sort -n | head -1) / 1048576 ))
}
if [ "$BUILD" = 1 ] && [ "$(free_for_podman_gb)" -lt "$need_gb" ]; then
  # Layers of an earlier failed or interrupted build are dangling images: reclaim them first.
  podman image prune -f > /dev/null 2>&1 || true
fi
free_gb="$(free_for_podman_gb)"
if [ "$BUILD" = 1 ] && [ "$free_gb" -lt "$need_gb" ]; then
  SKIP_REASON="not enough disk: ${free_gb} GB free for podman (/var/lib/containers, /var/tmp), the image build needs about ${need_gb} GB"
  log "SKIPPED: $SKIP_REASON"
  exit 0
fi

# --- 1. Base image: debian:12-slim and debian:12, from the Debian mirror apt uses here ----------
debian_mirror() {
  if [ -n "${VITSERVE_CT_MIRROR:-}" ]; then echo "$VITSERVE_CT_MIRROR"; return; fi
  local f uri
  # deb822 stanzas (sources.list.d/*.sources): the URI of the stanza whose Suites has bookworm.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri="$(awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm( |$|\n)/ && !/Enabled: *no/ {
             if (match($0, /URIs: *[^ \n]+/)) { s = substr($0, RSTART, RLENGTH); sub(/URIs: */, "", s); print s; exit } }' "$f")"
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  # one-line format
  uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
           | awk '$1 == "deb" && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }')"
  [ -n "$uri" ] && { echo "$uri"; return; }
  echo "http://deb.debian.org/debian"
}

unmount_below() {  # every mount point at or under $1, deepest first
  local dir="$1"
  findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount -l "$m" || true
  done
}

remove_rootfs() {
  local dir="$1"
  [ -d "$dir" ] || return 0
  unmount_below "$dir"
  if findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d) == 1' | grep -q .; then
    die "$dir still has mounts below it; not removing it"
  fi
  rm -rf --one-file-system "$dir"
}

make_base() {
  local rootfs="$WORK/rootfs" mirror started=$SECONDS
  mirror="$(debian_mirror)"
  log "base image: debootstrap --variant=minbase bookworm from $mirror"
  remove_rootfs "$rootfs"
  "${NICE[@]}" debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; remove_rootfs "$rootfs"; die "debootstrap failed"; }
  unmount_below "$rootfs"   # debootstrap unmounts /proc and /sys itself; make sure

  # apt inside builds uses the same sources as the host, and the same tolerance for a dated
  # snapshot mirror (Release files past their Valid-Until).
  rm -f "$rootfs/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/*.sources "$rootfs/etc/apt/sources.list.d/" 2>/dev/null || true
  [ -s /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list && cp /etc/apt/sources.list "$rootfs/etc/apt/"
  if ! ls "$rootfs"/etc/apt/sources.list.d/*.sources > /dev/null 2>&1 && [ ! -f "$rootfs/etc/apt/sources.list" ]; then
    echo "deb $mirror bookworm main" > "$rootfs/etc/apt/sources.list"
  fi
  grep -l -E 'Check-Valid-Until|Check-Date' /etc/apt/apt.conf.d/* 2>/dev/null | while read -r f; do
    grep -E 'Check-Valid-Until|Check-Date' "$f" > "$rootfs/etc/apt/apt.conf.d/99snapshot-mirror"
  done

  # Slim like debian:12-slim: no docs, man pages, locales; apt keeps no lists or caches.
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' > "$rootfs/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' > "$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
  printf 'APT::AutoRemove::SuggestsImportant "false";\n' > "$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda}/* "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs/debootstrap"
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  : > "$rootfs/etc/machine-id"
  rm -f "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf"

  tar --numeric-owner -C "$rootfs" -c . | podman import \
      --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      - debian:12-slim > /dev/null
  podman tag debian:12-slim debian:12
  remove_rootfs "$rootfs"
  log "base image made in $((SECONDS - started)) s: $(podman image inspect --format '{{.Size}}' debian:12-slim | awk '{printf "%.0f MB", $1/1e6}')"
}

if [ "$REBUILD_BASE" = 1 ] || ! podman image exists debian:12-slim || ! podman image exists debian:12; then
  make_base
else
  log "base image debian:12-slim exists (--rebuild-base remakes it)"
fi
[ "$BASE_ONLY" = 0 ] || exit 0

# --- 2. Build-time pip settings, as build secrets (never in an image layer) ---------------------
# Here pip reaches PyPI only through the host's settings (an extra CA bundle, timeouts). The
# Dockerfiles read them from the optional secrets `pip.conf` and `pip-ca.pem`; elsewhere a user
# passes nothing.
SECRETS=()
pip_secrets() {
  local dir="$WORK/pip-secrets"
  rm -rf "$dir"; mkdir -p "$dir"; chmod 700 "$dir"
  # `pip config list` merges /etc/pip.conf, user files and PIP_* variables (key='value').
  # Host paths (find-links, ...) are dropped; the CA bundle pip trusts here becomes a secret.
  python3 -m pip config list 2>/dev/null | python3 -c '
import os, re, shutil, sys
out, ca = ["[global]"], None
for line in sys.stdin:
    m = re.match(r"^[^.]*\.([a-z-]+)=(.*)$", line.strip())
    if not m:
        continue
    key, value = m.group(1), m.group(2).strip("\x27\"")
    if key == "cert":
        ca = value
    elif key not in ("find-links", "no-index", "target", "prefix", "root", "user", "cache-dir", "log"):
        out.append(f"{key} = {value}")
ca = ca or os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
if ca and os.path.isfile(ca):
    shutil.copyfile(ca, sys.argv[1] + "/pip-ca.pem")
    out.append("cert = /run/secrets/pip-ca.pem")
open(sys.argv[1] + "/pip.conf", "w").write("\n".join(dict.fromkeys(out)) + "\n")
' "$dir"
  SECRETS=(--secret "id=pip.conf,src=$dir/pip.conf")
  [ -f "$dir/pip-ca.pem" ] && SECRETS+=(--secret "id=pip-ca.pem,src=$dir/pip-ca.pem")
  log "pip build secrets: $(tr '\n' ' ' < "$dir/pip.conf")${SECRETS[2]:+ + pip-ca.pem}"
}

build_image() {  # build_image <Dockerfile> <tag>
  local dockerfile="$1" tag="$2" started=$SECONDS
  log "podman build --format docker -f $dockerfile -t $tag . (log: $WORK/build-${tag/:/-}.log)"
  # --format docker: OCI image configs have no HEALTHCHECK, podman would drop it.
  if ! "${NICE[@]}" podman build --format docker "${SECRETS[@]}" \
        ${VITSERVE_JOBS:+--build-arg "VITSERVE_JOBS=$VITSERVE_JOBS"} \
        -f "$dockerfile" -t "$tag" . > "$WORK/build-${tag/:/-}.log" 2>&1; then
    tail -40 "$WORK/build-${tag/:/-}.log" >&2
    die "podman build of $tag failed after $((SECONDS - started)) s"
  fi
  log "built $tag in $((SECONDS - started)) s: $(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
}

if [ "$BUILD" = 1 ]; then pip_secrets; fi
if [ "$BUILD" = 1 ]; then
  build_image docker/Dockerfile.cpu vitserve:cpu
else
  podman image exists vitserve:cpu || die "vitserve:cpu does not exist (drop --no-build)"
fi

# --- 3. Run it: mounted model repository, health check, classify, /metrics, drain on stop -------
NAME="vitserve-ct-$$"
REPO="$WORK/models-$$"
cleanup() {
  if [ "$KEEP" = 0 ]; then
    podman rm -f -i "$NAME" > /dev/null 2>&1 || true
    podman rm -f -i "$NAME-cuda" > /dev/null 2>&1 || true
    rm -rf "$REPO" "$WORK/pip-secrets"
  fi
}
trap 'rc=$?; cleanup; report_outcome "$rc"' EXIT

mkdir -p "$REPO/shvit"
cat > "$REPO/shvit/config.pbtxt" <<'EOF'
architecture: "shvit_s1"
allow_random_weights: true
batching { max_batch_size: 4 max_queue_delay_us: 2000 }
EOF
# 1000 ImageNet-sized labels; random weights, so the classes are arbitrary but well-formed.
for i in $(seq 0 999); do echo "class_$i"; done > "$REPO/shvit/labels.txt"
chmod -R a+rX "$REPO"

GRPC_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HTTP_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
REST_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log "podman run vitserve:cpu --model-repository /models (gRPC 127.0.0.1:$GRPC_PORT, REST 127.0.0.1:$REST_PORT, HTTP 127.0.0.1:$HTTP_PORT)"
# --init: catatonit is PID 1 and forwards SIGTERM to vitserve.
podman run -d --init --name "$NAME" --stop-timeout 45 \
  -p "127.0.0.1:$GRPC_PORT:8001" -p "127.0.0.1:$HTTP_PORT:8002" -p "127.0.0.1:$REST_PORT:8000" \
  -v "$REPO:/models:ro" vitserve:cpu \
  --model-repository /models --shutdown-grace-seconds 30 > /dev/null

started=$SECONDS
until podman healthcheck run "$NAME" > /dev/null 2>&1; do
  [ "$(podman inspect --format '{{.State.Running}}' "$NAME")" = true ] \
    || { podman logs "$NAME" >&2; die "the container exited before it became healthy"; }
  [ $((SECONDS - started)) -lt 180 ] || { podman logs "$NAME" >&2; die "not healthy after 180 s"; }
  sleep 2
done
log "healthy after $((SECONDS - started)) s: podman healthcheck run passed; status: $(podman inspect --format '{{.State.Healthcheck.Status}}' "$NAME" 2>/dev/null || podman inspect --format '{{.State.Health.Status}}' "$NAME")"

"$CLIENT" models --server "127.0.0.1:$GRPC_PORT" >&2
images=(tests/e2e/data/*.jpg tests/e2e/data/*.png tests/e2e/data/*.webp)
out="$("$CLIENT" classify --server "127.0.0.1:$GRPC_PORT" --model shvit --top-k 3 --json "${images[@]}")"
echo "$out" >&2
n_images=${#images[@]}
[ "$(echo "$out" | grep -c '"classes":\[{')" -eq "$n_images" ] || die "expected $n_images classified images"
log "classified $n_images sample images through the published gRPC port"


metrics="$(python3 - "$HTTP_PORT" <<'EOF'
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode())
EOF
)"
echo "$metrics" | grep -E '^vitserve_(requests_total|model_ready|inflight_requests)\{' >&2
echo "$metrics" | grep -qE "^vitserve_requests_total\{[^}]*model=\"shvit\"[^}]*\} $n_images\$" \
  || die "/metrics does not count the $n_images requests"
log "/metrics counts the requests"

# The REST port: the plain endpoint with curl, as a user would call it.
rest="$(curl -sS --fail-with-body -F "image=@${images[0]}" "http://127.0.0.1:$REST_PORT/v1/models/shvit:classify?top_k=2")" \
  || die "REST classify failed: $rest"
echo "$rest" >&2
echo "$rest" | grep -q '"classes":\[{' || die "the REST reply has no classes"
log "classified one image through the published REST port"

# Drain: stop under load. vitserve must log the SIGTERM (through catatonit, --init), answer
# what it accepted, log "shut down cleanly" and exit 0; the load generator sees only OK and
# refusals: UNAVAILABLE after the listener closed, or CANCELLED for a call that reached gRPC's
# transport but no handler when shutdown began (gRPC cancels such unmatched calls; vitserve never
# started them). Any other code (INTERNAL, DEADLINE_EXCEEDED, ...) is a request lost mid-way.
"$CLIENT" bench --server "127.0.0.1:$GRPC_PORT" --model shvit --concurrency 4 --duration 8 --json \
  > "$WORK/bench-$$.json" 2> "$WORK/bench-$$.log" &
bench=$!
sleep 4
stop_started=$SECONDS
podman stop -t 45 "$NAME" > /dev/null
stop_s=$((SECONDS - stop_started))
wait "$bench" || true
exit_code="$(podman inspect --format '{{.State.ExitCode}}' "$NAME")"
podman logs "$NAME" > "$WORK/container-$$.log" 2>&1
grep -E 'SIGTERM|shut down' "$WORK/container-$$.log" >&2 || true
python3 - "$WORK/bench-$$.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
errors = r.get("errors_by_code", {})
ok = r["requests"] - sum(errors.values())
print(f"[container-test] load across the stop: {ok} requests answered OK, then refused: {errors}",
      file=sys.stderr)
assert ok > 0, r
unexpected = {k: v for k, v in errors.items() if k not in ("UNAVAILABLE", "CANCELLED")}
assert not unexpected, f"requests failed during the drain: {unexpected}"
EOF
log "podman stop took ${stop_s} s; exit code $exit_code"
grep -q 'received SIGTERM' "$WORK/container-$$.log" || die "vitserve never saw SIGTERM"
grep -q 'shut down cleanly' "$WORK/container-$$.log" || die "vitserve did not finish its drain"
[ "$exit_code" = 0 ] || { tail -30 "$WORK/container-$$.log" >&2; die "the container exited $exit_code, not 0"; }
rm -f "$WORK/bench-$$.json" "$WORK/bench-$$.log" "$WORK/container-$$.log"

# --- 4. CUDA image (optional): built, and checked without a GPU ---------------------------------
if [ "$WITH_CUDA" = 1 ]; then
  if [ "$BUILD" = 1 ]; then
    build_image docker/Dockerfile.cuda vitserve:cuda
  else
    podman image exists vitserve:cuda || die "vitserve:cuda does not exist (drop --no-build)"
  fi
  log "vitserve:cuda --device cpu: starts and lists its models"
  podman run -d --init --name "$NAME-cuda" -p "127.0.0.1:$GRPC_PORT:8001" vitserve:cuda \
    --model shvit_s1 --device cpu --precision fp32 > /dev/null
  started=$SECONDS
  until podman healthcheck run "$NAME-cuda" > /dev/null 2>&1; do
    [ "$(podman inspect --format '{{.State.Running}}' "$NAME-cuda")" = true ] \
      || { podman logs "$NAME-cuda" >&2; die "vitserve:cuda --device cpu exited"; }
    [ $((SECONDS - started)) -lt 240 ] || { podman logs "$NAME-cuda" >&2; die "vitserve:cuda not healthy"; }
    sleep 2
  done
  "$CLIENT" models --server "127.0.0.1:$GRPC_PORT" >&2
  podman stop -t 45 "$NAME-cuda" > /dev/null
  [ "$(podman inspect --format '{{.State.ExitCode}}' "$NAME-cuda")" = 0 ] || die "vitserve:cuda did not exit 0"
  podman rm "$NAME-cuda" > /dev/null

  log "vitserve:cuda --device cuda on a host without a GPU: must fail with a clear message"
  set +e
  out="$(timeout 120 podman run --rm --init vitserve:cuda --model shvit_s1 --device cuda 2>&1)"
  rc=$?
  set -e
  out="$(echo "$out" | grep -v 'unable to get systemd connection')"
  echo "$out" | tail -5 >&2
  [ "$rc" -ne 0 ] || die "--device cuda without a GPU exited 0"
  echo "$out" | grep -qi -E 'cuda|gpu' || die "--device cuda failed without naming CUDA/GPU"
  log "--device cuda exited $rc with a CUDA error (expected without a GPU)"
fi

if [ "$PRUNE" = 1 ]; then
  # Housekeeping after every check passed, so it warns rather than fails: a dangling image that
  # another container still holds (buildah's working container of a build that was killed)
  # cannot go until that container does (`buildah rm`).
  if prune_error="$(podman image prune -f 2>&1 > /dev/null)"; then
    log "pruned dangling images"
  else
    log "WARNING: some dangling images stay: $(echo "$prune_error" | tail -1)"
  fi
fi
log "PASS"
