#!/usr/bin/env bash
# Cost of scale (issue #19): N lamp-like thing files (two observable properties, one action, one
# event, distinct slugs) served by a release `wot serve DIR --no-coap --no-mdns`. For each N it
# prints the time from process start to the last thing's TD being served (GET /things/<last>),
# the RSS two seconds later (VmRSS), RSS per thing, and the bytes each thing adds over a one-thing
# run. Then the bundled things' idle RSS (`wot serve` without a dir in an empty cwd), without and
# with CoAP.
#   bash benches/scale.sh [N...]          (default: 1000 10000 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(1000 10000 100000)
cargo build --release --quiet
wot=$PWD/target/release/wot
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Writes N thing files into $1; every thing has its own title and slug.
generate() {
  python3 - "$1" "$2" <<'PY'
import json, os, sys
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
for i in range(n):
    thing = {
        "title": f"Lamp {i}",
        "description": "A dimmable lamp",
        "properties": {
            "on": {"type": "boolean", "default": False, "observable": True},
            "brightness": {"type": "integer", "minimum": 0, "maximum": 100, "unit": "percent",
                           "default": 50, "observable": True},
        },
        "actions": {
            "toggle": {"synchronous": True, "output": {"type": "boolean"},
                       "runtime": {"effect": {"toggle": "on"}}},
        },
        "events": {
            "overheated": {"data": {"type": "integer", "minimum": 0, "maximum": 100}},
        },
    }
    with open(os.path.join(out, f"lamp-{i:06}.json"), "w") as f:
        json.dump(thing, f)
PY
}

# Starts wot with "$@" (cwd: $dir_cwd), waits until GET $path answers 200, prints
# "<ms to served> <rss KiB 2 s later>", stops it.
measure() {
  local path=$1; shift
  local out=$work/ready
  : >"$out"
  local t0
  t0=$(date +%s%N)
  (cd "$dir_cwd" && exec "$wot" serve "$@" --host 127.0.0.1 --http-port 0 --no-mdns >"$out" 2>"$work/log") &
  pid=$!
  python3 - "$out" "$path" "$t0" "$pid" <<'PY'
import http.client, json, os, sys, time
out, path, t0, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
deadline = time.time() + 600
line = ""
while time.time() < deadline:
    with open(out) as f:
        line = f.readline()
    if line.endswith("\n"):
        break
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit("wot exited before its ready line")
    time.sleep(0.002)
host = json.loads(line)["http"].split("//")[1]
conn = None
while time.time() < deadline:
    try:
        conn = conn or http.client.HTTPConnection(host, timeout=60)
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        if resp.status == 200:
            break
    except OSError:
        conn = None
    time.sleep(0.002)
print(f"{(time.time_ns() - t0) / 1e6:.0f}")
PY
  sleep 2
  awk '/VmRSS/ {print $2}' "/proc/$pid/status"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  pid=
}

dir_cwd=$work
generate "$work/one" 1
read -r _ base < <(measure /things/lamp-000000 "$work/one" --no-coap | paste -sd' ')
printf 'one thing: RSS %d KiB\n' "$base"
for n in "${sizes[@]}"; do
  rm -rf "$work/things"
  generate "$work/things" "$n"
  last=$(printf 'lamp-%06d' $((n - 1)))
  read -r ms rss < <(measure "/things/$last" "$work/things" --no-coap | paste -sd' ')
  printf '%7d things: last TD served after %6d ms   RSS %8.1f MB   %6d B/thing   %6d B/thing over one thing\n' \
    "$n" "$ms" "$(echo "$rss / 1024" | bc -l)" $((rss * 1024 / n)) $(((rss - base) * 1024 / (n - 1)))
done
rm -rf "$work/things"

# The bundled things, idle: no dir, in an empty cwd.
mkdir -p "$work/empty"
dir_cwd=$work/empty
read -r ms rss < <(measure /things/lamp --no-coap | paste -sd' ')
printf 'bundled things, idle, --no-coap: RSS %.1f MB (ready and TD served after %d ms)\n' "$(echo "$rss / 1024" | bc -l)" "$ms"
read -r ms rss < <(measure /things/lamp --coap-port 0 | paste -sd' ')
printf 'bundled things, idle, with CoAP: RSS %.1f MB (ready and TD served after %d ms)\n' "$(echo "$rss / 1024" | bc -l)" "$ms"
