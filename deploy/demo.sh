#!/usr/bin/env bash
# `make demo`: start a one-node cluster, deploy examples/hello-http with 5 replicas, show it
# serving through the proxy from 5 distinct pods, and clean up.
set -euo pipefail

BIN=${BIN:-target/debug}
EXAMPLES=${EXAMPLES:-examples/target/wasm32-wasip2/release}
API=${API:-127.0.0.1:7700}
PROXY=${PROXY:-127.0.0.1:8080}

work=$(mktemp -d)
export WASMKUBE_CONFIG="$work/config.json"   # keep the demo's cluster out of your own config
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> starting wasmlet (API $API, proxy $PROXY, data in $work)"
"$BIN/wasmlet" --name demo --data-dir "$work/node" --listen "$API" --proxy-listen "$PROXY" >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 1 300); do
  grep -q "wasmlet ready" "$work/out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/log"; echo "wasmlet exited (is $API or $PROXY in use?)"; exit 1; }
  sleep 0.1
done
grep -q "wasmlet ready" "$work/out" || { cat "$work/log"; echo "wasmlet did not start"; exit 1; }

echo "==> wasmctl deploy hello_http.wasm --name hello --replicas 5 --wait"
"$BIN/wasmctl" deploy "$EXAMPLES/hello_http.wasm" --name hello --replicas 5 --wait
echo
echo "==> wasmctl get pods"
"$BIN/wasmctl" get pods
echo
echo "==> curl -H 'Host: hello' http://$PROXY/   (10 times)"
pods=""
for i in $(seq 1 10); do
  headers=$(curl -s -D - -o "$work/body" -H 'Host: hello' "http://$PROXY/")
  pod=$(printf '%s' "$headers" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-wasmkube-pod" {print $2}')
  printf '  %-28s %s' "$pod" "$(cat "$work/body")"
  echo
  pods="$pods $pod"
done
distinct=$(echo $pods | tr ' ' '\n' | sort -u | grep -c .)
echo
echo "==> $distinct distinct pods answered"
[ "$distinct" -eq 5 ] || { echo "expected 5"; exit 1; }
