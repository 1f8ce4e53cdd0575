#!/usr/bin/env bash
# Starts an N-node wasmkube cluster on this machine (loopback only) and stops it on Ctrl-C.
#   deploy/local-cluster.sh 3
# Node i listens on 127.0.0.1:770i (API and peers) and 127.0.0.1:808i (proxy); data and logs
# go under $WASMKUBE_CLUSTER_DIR (default: a new temporary directory).
set -euo pipefail

n=${1:-3}
[[ "$n" =~ ^[1-9]$ ]] || { echo "usage: $0 N   (1-9 nodes)"; exit 2; }
BIN=${BIN:-target/debug}
dir=${WASMKUBE_CLUSTER_DIR:-$(mktemp -d)}
mkdir -p "$dir"
export WASMKUBE_CONFIG="$dir/config.json"
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "cluster stopped (data kept in $dir)"
}
trap cleanup EXIT INT TERM

wait_ready() { # out-file pid
  for _ in $(seq 1 300); do
    grep -q "wasmlet ready" "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "a node exited; see ${1%.out}.log"; exit 1; }
    sleep 0.1
  done
  echo "a node did not start; see ${1%.out}.log"; exit 1
}

start_node() { # index extra-args...
  local i=$1; shift
  local name
  name=$(printf "\\x$(printf %x $((96 + i)))")   # a, b, c, ...
  "$BIN/wasmlet" --name "$name" --data-dir "$dir/$name" --listen "127.0.0.1:770$i" \
    --proxy-listen "127.0.0.1:808$i" "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
  pids+=($!)
  wait_ready "$dir/$name.out" $!
  echo "node $name: API http://127.0.0.1:770$i  proxy http://127.0.0.1:808$i"
}

start_node 1
token=$("$BIN/wasmctl" cluster join-token 2>/dev/null)
for i in $(seq 2 "$n"); do
  start_node "$i" --join http://127.0.0.1:7701 --join-token "$token"
done
for _ in $(seq 1 100); do   # joined nodes register within a moment
  [ "$("$BIN/wasmctl" get nodes 2>/dev/null | grep -c ' Ready ')" -ge "$n" ] && break
  sleep 0.1
done
echo
echo "export WASMKUBE_CONFIG=$WASMKUBE_CONFIG"
"$BIN/wasmctl" get nodes || true
echo
echo "Ctrl-C stops the cluster."
wait
