#!/usr/bin/env bash
# HTTP benchmark: wrk -t1 -c64 against a release `wot serve` on loopback, for GET property,
# GET TD, PUT property and POST action (synchronous toggle); then PUT with durable state, and GET
# property over HTTPS (rustls, self-signed, keep-alive: wrk reuses its 64 connections), also with
# a bearer token. Prints one line per case, then the ratios.
#
# Each of the first four cases runs between two runs of the bare handler (examples/bare_http.rs:
# a constant JSON answer on the same actix stack and settings, no routing or middleware) sent
# the very same request (method, path, body), so that a ratio compares what the runtime does
# with what actix costs anyway, within the same minute of the same run; a difference between
# the two bare runs around a case is the machine's drift (it is shared). The later cases are
# compared with the mean of all bare runs.
#   bash benches/http.sh [seconds] [rounds]        (needs wrk: apt-get install wrk)
# With rounds > 1 the four cases against the bare handler are run that many times over, and a
# last line per case gives the median ratio and the range: on a 2-core machine shared with wrk,
# one run's ratio moves by about 0.05 from one minute to the next.
# WOT_BIN=path/to/wot runs another build of `wot` (an A/B between two commits) against this
# checkout's bare handler, without building.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-1}
if [ -n "${WOT_BIN:-}" ]; then
  cargo build --release --quiet --example bare_http
  wot=$WOT_BIN
else
  cargo build --release --quiet --bin wot --example bare_http
  wot=target/release/wot
fi
out=$(mktemp)
bare_out=$(mktemp)
pid=
bare_pid=
trap 'kill $pid $bare_pid 2>/dev/null; rm -f "$out" "$bare_out" "$out.lua"' EXIT
echo "# $(date -Is); load average $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; wrk -t1 -c64 -d${secs}s"

# Waits for a ready line ({"http": ...}) and prints its HTTP origin.
ready() {
  for _ in $(seq 100); do [ -s "$1" ] && break; sleep 0.1; done
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$1"
}
target/release/examples/bare_http >"$bare_out" 2>/dev/null &
bare_pid=$!
bare=$(ready "$bare_out")
"$wot" serve things --host 127.0.0.1 --http-port 0 --no-coap --no-mdns >"$out" 2>/dev/null &
pid=$!
url=$(ready "$out")

rps=
run() {
  local name=$1; shift
  local res p50 p99 non2xx
  res=$(wrk -t1 -c64 -d"${secs}s" --latency "$@")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$res")
  p50=$(awk '$1=="50%" {print $2}' <<<"$res")
  p99=$(awk '$1=="99%" {print $2}' <<<"$res")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$res")
  printf '%-26s %12s req/s   p50 %-8s p99 %-8s non-2xx %s\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
}
bares=()
ratios=()
# versus_bare NAME PATH [wrk options]: bare, the case, bare, all with the same request.
versus_bare() {
  local name=$1 path=$2 before after case_rps
  shift 2
  run "  bare handler" "$@" "$bare$path"
  before=$rps
  run "$name" "$@" "$url$path"
  case_rps=$rps
  run "  bare handler" "$@" "$bare$path"
  after=$rps
  bares+=("$before" "$after")
  ratios+=("$(awk -v n="$name" -v c="$case_rps" -v b="$before" -v a="$after" \
    'BEGIN { printf "%-26s %.2fx of bare (%.0f req/s; bare %.0f before, %.0f after)", n, c / ((b + a) / 2), c, b, a }')")
  per_round+=("$name	$(awk -v c="$case_rps" -v b="$before" -v a="$after" 'BEGIN { printf "%.3f", c / ((b + a) / 2) }')")
}
per_round=()
# versus_mean NAME URL [wrk options]: against the mean of every bare run so far.
versus_mean() {
  local name=$1 target=$2
  shift 2
  run "$name" "$@" "$target"
  ratios+=("$(printf '%s\n' "${bares[@]}" | awk -v n="$name" -v c="$rps" \
    '{ s += $1 } END { printf "%-26s %.2fx of bare (%.0f req/s; mean of %d bare runs)", n, c / (s / NR), c, NR }')")
}
cat >"$out.lua" <<'LUA'
wrk.method = "PUT"
wrk.body = "42"
wrk.headers["Content-Type"] = "application/json"
LUA
for _ in $(seq "$rounds"); do
  versus_bare "GET property" /things/lamp/properties/brightness
  versus_bare "GET TD" /things/lamp
  versus_bare "PUT property" /things/lamp/properties/brightness -s "$out.lua"
  sed -i 's/"PUT"/"POST"/; s/wrk.body = "42"/wrk.body = nil/' "$out.lua"
  versus_bare "POST action (toggle)" /things/lamp/actions/toggle -s "$out.lua"
  sed -i 's/"POST"/"PUT"/; s/wrk.body = nil/wrk.body = "42"/' "$out.lua"
done

# PUT with durable state: fsync per group commit, then fsync at most once a second.
for durability in immediate periodic; do
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
  state=$(mktemp -d)
  : >"$out"
  "$wot" serve things --host 127.0.0.1 --http-port 0 --no-coap --no-mdns \
    --state-dir "$state" --durability $durability >"$out" 2>/dev/null &
  pid=$!
  url=$(ready "$out")
  versus_mean "PUT durable $durability" "$url/things/lamp/properties/brightness" -s "$out.lua"
  rm -rf "$state"
done

# GET property over HTTPS (TLS 1.3, keep-alive), without and with --auth.
for auth in none bearer; do
  kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
  state=$(mktemp -d)
  : >"$out"
  extra=()
  [ "$auth" = bearer ] && extra=(--auth bearer:bench-token)
  "$wot" serve things --host 127.0.0.1 --http-port 0 --no-coap --no-mdns \
    --tls-self-signed --state-dir "$state" "${extra[@]}" >"$out" 2>/dev/null &
  pid=$!
  url=$(ready "$out")
  if [ "$auth" = bearer ]; then
    versus_mean "GET property https+auth" "$url/things/lamp/properties/brightness" \
      -H "Authorization: Bearer bench-token"
  else
    versus_mean "GET property https" "$url/things/lamp/properties/brightness"
  fi
  rm -rf "$state"
done

echo "# load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${ratios[@]}"
if [ "$rounds" -gt 1 ]; then
  echo "# over $rounds rounds: median ratio (lowest-highest)"
  printf '%s\n' "${per_round[@]}" | python3 -c '
import statistics, sys
cases = {}
for line in sys.stdin:
    name, ratio = line.rstrip("\n").split("\t")
    cases.setdefault(name, []).append(float(ratio))
for name, r in cases.items():
    print(f"{name:<26} {statistics.median(r):.2f}x of bare ({min(r):.2f}-{max(r):.2f})")
'
fi
