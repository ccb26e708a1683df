#!/usr/bin/env bash
# Used by the Dockerfiles' builder stages: copies the binaries and every shared library they
# load (ldd) into a runtime tree, except the Debian libraries every debian:12-slim image has
# (packages of Priority "required": libc6, libstdc++6, zlib1g, ...).
#
#   [STAGE_SKIP_PREFIX=/dir/] docker/stage_runtime.sh DEST BINARY...
#     STAGE_SKIP_PREFIX  libraries under it are left out (the Dockerfile copies them itself)
#     DEST/bin/      the binaries
#     DEST/lib/      their libraries, flattened (the image sets LD_LIBRARY_PATH=DEST/lib)
#     DEST/lib/PACKAGES.txt   where each library came from: Debian package and version, or the
#                             file it was copied from (LibTorch, CUDA wheels)
#     DEST/share/doc/<package>/copyright   the Debian packages' licences
#
# Why not `apt-get install` the runtime packages in the final stage: Debian's
# libopencv-core406 depends on libglx0, which pulls Mesa's GL drivers and LLVM (170 MB that a
# server never loads), and libopencv-imgcodecs406 pulls GDAL's data files. The libraries copied
# here are the same files of the same Debian packages the builder compiled against.
set -euo pipefail
dest="$1"; shift
mkdir -p "$dest/bin" "$dest/lib"
cp "$@" "$dest/bin/"

deb_package() {  # the Debian package that owns a library file ("" if none)
  local f="$1" p
  for candidate in "$f" "${f/#\/lib\//\/usr\/lib\/}" "$(readlink -f "$f")"; do
    p="$(dpkg -S "$candidate" 2>/dev/null | head -1 | cut -d: -f1)" && [ -n "$p" ] && { echo "$p"; return; }
  done
  echo ""
}

: > "$dest/lib/PACKAGES.txt"
ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  if [ -n "${STAGE_SKIP_PREFIX:-}" ] && [[ "$(readlink -f "$lib")" == "$STAGE_SKIP_PREFIX"* ]]; then
    continue
  fi
  pkg="$(deb_package "$lib")"
  if [ -n "$pkg" ]; then
    [ "$(dpkg-query -W -f='${Priority}' "$pkg")" = required ] && continue
    echo "$(basename "$lib") $pkg $(dpkg-query -W -f='${Version}' "$pkg")" >> "$dest/lib/PACKAGES.txt"
    if [ -f "/usr/share/doc/$pkg/copyright" ]; then
      mkdir -p "$dest/share/doc/$pkg"; cp "/usr/share/doc/$pkg/copyright" "$dest/share/doc/$pkg/"
    fi
  else
    echo "$(basename "$lib") $(readlink -f "$lib")" >> "$dest/lib/PACKAGES.txt"
  fi
  cp -L "$lib" "$dest/lib/"
done
if ldd "$@" | grep 'not found' | grep -vE 'libcuda\.so|libnvidia-ml\.so'; then
  echo "unresolved libraries (above)" >&2; exit 1
fi
echo "staged $(wc -l < "$dest/lib/PACKAGES.txt") libraries, $(du -sh "$dest/lib" | cut -f1)"
