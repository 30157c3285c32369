#!/usr/bin/env bash
# Bridge benchmark: GET property through a bridge (`wot serve` with a proxy file, HTTP in front)
# to a CoAP upstream (a second `wot serve`), wrk -t1 -c64; beside it the same GET straight to
# the upstream over CoAP (examples/coap_bench, 64 in flight) and over HTTP (wrk). Release
# build, loopback; the load generators share the two cores with both servers.
#   bash benches/bridge.sh [seconds]      (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
cargo build --release --quiet --bin wot --example coap_bench
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
ready() { # file → the ready line's member $2
  for _ in $(seq 100); do [ -s "$1" ] && break; sleep 0.1; done
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}
target/release/wot serve things --host 127.0.0.1 --http-port 0 --coap-port 0 --no-mdns \
  >"$work/upstream" 2>/dev/null &
pids+=($!)
coap=$(ready "$work/upstream" coap)
direct_http=$(ready "$work/upstream" http)
mkdir "$work/things"
printf '{"proxy": {"td": "%s/things/lamp", "via": "coap"}}\n' "$coap" >"$work/things/lamp.json"
target/release/wot serve "$work/things" --host 127.0.0.1 --http-port 0 --no-coap --no-mdns \
  >"$work/bridge" 2>/dev/null &
pids+=($!)
bridge=$(ready "$work/bridge" http)
run() {
  local name=$1; shift
  res=$(wrk -t1 -c64 -d"${secs}s" --latency "$@")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$res")
  p50=$(awk '$1=="50%" {print $2}' <<<"$res")
  p99=$(awk '$1=="99%" {print $2}' <<<"$res")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$res")
  printf '%-34s %12s req/s   p50 %-8s p99 %-8s non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
}
run "GET property via the bridge (HTTP)" "$bridge/things/lamp/properties/brightness"
run "GET property, upstream over HTTP" "$direct_http/things/lamp/properties/brightness"
requests=$((secs * 60000))
printf '%-34s ' "GET property, upstream over CoAP"
target/release/examples/coap_bench --concurrency 64 --requests "$requests" --target "$coap" | grep "(again)"
