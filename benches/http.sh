#!/usr/bin/env bash
# HTTP benchmark: wrk -t1 -c64 against a release `wot serve` on loopback, for GET property,
# PUT property, POST action (synchronous toggle) and GET TD; PUT with durable state; then GET
# property over HTTPS (rustls, self-signed, keep-alive: wrk reuses its 64 connections), also
# with a bearer token. Prints one line per case.
#   bash benches/http.sh [seconds]        (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
cargo build --release --quiet
out=$(mktemp)
target/release/wot serve things --host 127.0.0.1 --http-port 0 --no-coap --no-mdns >"$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$out" "$out.lua"' EXIT
for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$out")
run() {
  local name=$1; shift
  local rps lat
  res=$(wrk -t1 -c64 -d"${secs}s" --latency "$@")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$res")
  p50=$(awk '$1=="50%" {print $2}' <<<"$res")
  p99=$(awk '$1=="99%" {print $2}' <<<"$res")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$res")
  printf '%-22s %12s req/s   p50 %-8s p99 %-8s non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
}
cat >"$out.lua" <<'LUA'
wrk.method = "PUT"
wrk.body = "42"
wrk.headers["Content-Type"] = "application/json"
LUA
run "GET property" "$url/things/lamp/properties/brightness"
run "PUT property" -s "$out.lua" "$url/things/lamp/properties/brightness"
sed -i 's/"PUT"/"POST"/; s/wrk.body = "42"/wrk.body = nil/' "$out.lua"
run "POST action (toggle)" -s "$out.lua" "$url/things/lamp/actions/toggle"
run "GET TD" "$url/things/lamp"

# PUT with durable state: fsync per group commit, then fsync at most once a second.
for durability in immediate periodic; do
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
  state=$(mktemp -d)
  : >"$out"
  target/release/wot serve things --host 127.0.0.1 --http-port 0 --no-coap --no-mdns \
    --state-dir "$state" --durability $durability >"$out" 2>/dev/null &
  pid=$!
  for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
  url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$out")
  sed -i 's/"POST"/"PUT"/; s/wrk.body = nil/wrk.body = "42"/' "$out.lua"
  run "PUT durable $durability" -s "$out.lua" "$url/things/lamp/properties/brightness"
  rm -rf "$state"
done

# GET property over HTTPS (TLS 1.3, keep-alive), without and with --auth.
for auth in none bearer; do
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
  state=$(mktemp -d)
  : >"$out"
  extra=()
  [ "$auth" = bearer ] && extra=(--auth bearer:bench-token)
  target/release/wot serve things --host 127.0.0.1 --http-port 0 --no-coap --no-mdns \
    --tls-self-signed --state-dir "$state" "${extra[@]}" >"$out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.1; done
  url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$out")
  if [ "$auth" = bearer ]; then
    run "GET property https+auth" -H "Authorization: Bearer bench-token" "$url/things/lamp/properties/brightness"
  else
    run "GET property https" "$url/things/lamp/properties/brightness"
  fi
  rm -rf "$state"
done
