#!/usr/bin/env bash
# What a device call carries to the GPU box, and room for it under the device tool's 64 MiB.
#   bash bench/device_carry.sh size [DIR...]  the carry's size: tracked files, untracked files
#                                             that git does not ignore, and each DIR named
#                                             (default .devdeps .gpubin, the usual carry)
#   bash bench/device_carry.sh trim           moves the trained demo models of
#                                             examples/model_repository (about 36 MB, tracked;
#                                             only gpu_pending.sh's `dense` step serves them) to
#                                             $HOLD, then prints size
#   bash bench/device_carry.sh restore        moves them back and checks git sees them unchanged
# Trim before the call and restore right after it: while they are away git sees them deleted,
# so nothing may be committed in between. HOLD defaults to /tmp/vitserve-carry-hold.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HOLD="${HOLD:-/tmp/vitserve-carry-hold}"
LIMIT=$((64 * 1024 * 1024))
MODELS_DIR=examples/model_repository

bytes_of_list() {  # NUL-separated paths on stdin: their total size in bytes (missing ones: 0)
  local total=0 path
  while IFS= read -r -d '' path; do
    [[ -f $path ]] && total=$((total + $(stat -c %s "$path")))
  done
  echo "$total"
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

size() {
  local tracked untracked dirs=("$@") total extra=0 dir
  [[ ${#dirs[@]} -gt 0 ]] || dirs=(.devdeps .gpubin)
  tracked=$(git ls-files -z | bytes_of_list)
  untracked=$(git ls-files -z -o --exclude-standard | bytes_of_list)
  printf '%-28s %8s MiB\n' "tracked files" "$(mib "$tracked")"
  printf '%-28s %8s MiB\n' "untracked, not ignored" "$(mib "$untracked")"
  for dir in "${dirs[@]}"; do
    [[ -e $dir ]] || { printf '%-28s %8s\n' "$dir" "absent"; continue; }
    local b
    b=$(du -sb "$dir" | cut -f1)
    extra=$((extra + b))
    printf '%-28s %8s MiB\n' "$dir" "$(mib "$b")"
  done
  total=$((tracked + untracked + extra))
  printf '%-28s %8s MiB of 64 (%s)\n' "total" "$(mib "$total")" \
    "$([[ $total -le $LIMIT ]] && echo fits || echo "too large: trim, or stage fewer binaries")"
}

case "${1:-}" in
  size)
    shift
    size "$@"
    ;;
  trim)
    [[ ! -e $HOLD ]] || { echo "$HOLD exists: restore first (or remove it)" >&2; exit 1; }
    # Only what git tracks, unmodified: restore must give back exactly what was taken.
    if ! git diff --quiet -- "$MODELS_DIR"; then
      echo "$MODELS_DIR has uncommitted changes; commit or revert them first" >&2
      exit 1
    fi
    mkdir -p "$HOLD"
    moved=0
    for model in "$MODELS_DIR"/shapes_*; do
      [[ -d $model ]] || continue
      mv "$model" "$HOLD/"
      moved=$((moved + 1))
    done
    echo "moved $moved demo models to $HOLD (restore with: bash bench/device_carry.sh restore)"
    size
    ;;
  restore)
    [[ -d $HOLD ]] || { echo "nothing to restore: $HOLD does not exist" >&2; exit 1; }
    for model in "$HOLD"/*; do
      [[ -e $model ]] || continue
      [[ ! -e $MODELS_DIR/$(basename "$model") ]] || {
        echo "$MODELS_DIR/$(basename "$model") exists; left $model where it is" >&2; exit 1; }
      mv "$model" "$MODELS_DIR/"
    done
    rmdir "$HOLD"
    if git diff --quiet -- "$MODELS_DIR" && \
       [[ -z $(git ls-files -d -- "$MODELS_DIR") ]]; then
      echo "restored: git sees $MODELS_DIR unchanged"
    else
      echo "restored, but git sees changes in $MODELS_DIR:" >&2
      git status --short -- "$MODELS_DIR" >&2
      exit 1
    fi
    ;;
  *)
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
