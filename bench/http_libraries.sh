#!/usr/bin/env bash
# The HTTP libraries Debian 12 offers, alone: cpp-httplib (what server/rest/ uses) against
# Boost.Beast, each as a minimal thread-per-connection keep-alive server that takes a POST of a
# 224x224 RGB8 image (150,528 bytes) and answers a 1 KB JSON reply; wrk drives them with the same
# connections, interleaved, ROUNDS times (compare within one run: the machine is noisy).
#   bench/http_libraries.sh [CONNECTIONS] [SECONDS] [ROUNDS]     (default 16 10 2)
# Needs (bench only, not in scripts/setup.sh): apt-get install libboost-dev wrk
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONNECTIONS="${1:-16}"; DURATION="${2:-10}"; ROUNDS="${3:-2}"
command -v wrk > /dev/null && [ -f /usr/include/boost/beast.hpp ] \
  || { echo "needs wrk and Boost.Beast: apt-get install libboost-dev wrk"; exit 2; }
out="$(mktemp -d)"
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$out"' EXIT
g++ -std=c++17 -O2 -o "$out/beast_server" bench/http_libraries/beast_server.cc -pthread
g++ -std=c++17 -O2 $(pkg-config --cflags cpp-httplib) -o "$out/httplib_server" \
  bench/http_libraries/httplib_server.cc $(pkg-config --libs cpp-httplib) -pthread
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTPLIB=$(port); BEAST=$(port)
"$out/httplib_server" "$HTTPLIB" & "$out/beast_server" "$BEAST" &
sleep 1
cat > "$out/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 150528)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
echo "POST 150,528 bytes -> 1 KB JSON; wrk -t2 -c$CONNECTIONS -d${DURATION}s; $(nproc) cores"
for round in $(seq "$ROUNDS"); do
  for lib in httplib beast; do
    p=$HTTPLIB; [ "$lib" = beast ] && p=$BEAST
    wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$out/post.lua" "http://127.0.0.1:$p/" \
      | awk -v lib="$lib" -v round="$round" '/Requests\/sec/ {rps = $2} /^ +50%/ {p50 = $2} /^ +99%/ {p99 = $2}
          END { printf "round %s  %-8s %10s req/s   p50 %8s   p99 %8s\n", round, lib, rps, p50, p99 }'
  done
done
