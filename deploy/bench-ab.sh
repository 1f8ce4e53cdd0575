#!/usr/bin/env bash
# Compares two builds on the 10,000-replica, 3-node scale figure, alternating their runs: on a
# 2-core machine single runs vary by ±15%, so only runs side by side say which is faster.
#
#   deploy/bench-ab.sh SAVE DIR             copy this build's binaries to DIR
#   deploy/bench-ab.sh DIR_A DIR_B [ROUNDS]  alternate A and B, ROUNDS times each (default 4)
#
# Binaries are taken from $CARGO_TARGET_DIR/debug (or target/debug). Each bench runs in a
# process group of its own, killed whole after its figure: a bench stopped early can leave
# its cluster running, and a stray cluster skews every later figure.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CARGO_TARGET_DIR:-target}/debug"
wasm=examples/target/wasm32-wasip2/release/hello_http.wasm

if [ "${1:-}" = "SAVE" ]; then
  dir="${2:?usage: bench-ab.sh SAVE DIR}"
  mkdir -p "$dir"
  cp "$bin/wasmlet" "$bin/wasmctl" "$bin/wasmkube-bench" "$dir/"
  echo "saved $bin to $dir"
  exit 0
fi

a="${1:?usage: bench-ab.sh DIR_A DIR_B [ROUNDS]}"
b="${2:?usage: bench-ab.sh DIR_A DIR_B [ROUNDS]}"
rounds="${3:-4}"
out=$(mktemp)
group=""
trap 'rm -f "$out"; [ -n "$group" ] && kill -9 -- "-$group" 2>/dev/null || true' EXIT

run() {
  : > "$out"
  setsid "$1/wasmkube-bench" --wasm "$wasm" scale > "$out" 2>&1 &
  group=$!
  for _ in $(seq 1 600); do
    grep -q "fewest Ready" "$out" && break
    sleep 0.5
  done
  kill -9 -- "-$group" 2>/dev/null || true
  sleep 2
  sed -n 2p "$out" | awk '{print $6}'
}

for _ in $(seq 1 "$rounds"); do
  echo "A $(run "$a")   B $(run "$b")"
done
