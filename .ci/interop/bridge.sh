#!/usr/bin/env bash
# Interop: the bridge used by clients we did not write. An upstream `wot serve` (the bundled
# things) is proxied over CoAP by a second `wot serve` (a things/ of proxy files); on the bridge,
# curl reads, writes (a bad value refused, the upstream unchanged) and invokes (the asynchronous
# fade followed through its Location), `curl -N` holds an SSE stream, and python-websockets speaks
# the Web Thing Protocol (observeproperty). The upstream is stopped: curl gets 502/503 and the TD
# is still served; it is started again on the same port: the SSE stream opened before the stop
# carries the next change. (node-wot's consumer through a bridge is in nodewot.sh.)
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { echo "bridge interop FAILED: $*" >&2; exit 1; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

cargo build --quiet --bin wot
VENV=target/interop-ws-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'websockets>=12,<16'

work=$(mktemp -d)
upstream_pid=""
sse_pid=""
cleanup() {
  for pid in $upstream_pid $sse_pid; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  end_wot
  rm -rf "$work"
}
. .ci/lib/wot-serve.sh
trap cleanup EXIT

upstream() { # COAP_PORT: the bundled things, CoAP on that port (0: any)
  : >"$work/upstream.ready"
  target/debug/wot serve things --host 127.0.0.1 --http-port 0 --coap-port "$1" --no-mdns \
    >"$work/upstream.ready" 2>>"$work/upstream.log" &
  upstream_pid=$!
  for _ in $(seq 100); do [ -s "$work/upstream.ready" ] && break; sleep 0.1; done
  [ -s "$work/upstream.ready" ] || { cat "$work/upstream.log" >&2; fail "the upstream did not start"; }
  UP_HTTP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$work/upstream.ready")
  UP_COAP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["coap"])' "$work/upstream.ready")
}
upstream 0
mkdir "$work/things"
printf '{"proxy": {"td": "%s/things/lamp", "via": "coap", "probe": 1}}\n' "$UP_COAP" >"$work/things/lamp.json"
start_wot "$work/things" --http-port 0 --coap-port 0
echo "bridge at $HTTP in front of $UP_COAP"
LAMP="$HTTP/things/lamp"

status() { curl -s -o "$work/body" -w '%{http_code}' "$@"; }
[ "$(status "$LAMP")" = 200 ] || fail "the bridged TD"
python3 - "$work/body" "$UP_COAP" <<'PY' || fail "the bridged TD names the upstream or lost its description"
import json, sys
td = json.load(open(sys.argv[1]))
assert td["title"] == "Lamp" and "fade" in td["actions"], td
assert sys.argv[2] not in json.dumps(td), "an upstream href in the bridged TD"
PY
[ "$(status -X PUT -H 'Content-Type: application/json' -d 42 "$LAMP/properties/brightness")" = 204 ] || fail "curl write"
[ "$(curl -s "$UP_HTTP/things/lamp/properties/brightness")" = 42 ] || fail "the write did not reach the upstream"
[ "$(curl -s "$LAMP/properties/brightness")" = 42 ] || fail "curl read"
[ "$(status -X PUT -H 'Content-Type: application/json' -d 420 "$LAMP/properties/brightness")" = 400 ] || fail "a bad value"
grep -q '"rule":"maximum"' "$work/body" || fail "the 400 does not name the rule: $(cat "$work/body")"
[ "$(curl -s "$UP_HTTP/things/lamp/properties/brightness")" = 42 ] || fail "a refused value reached the upstream"
echo "curl: read, write, refused write ok"
curl -s -D "$work/headers" -o "$work/body" -H 'Content-Type: application/json' \
  -d '{"level": 9, "duration": 300}' "$LAMP/actions/fade"
location=$(awk 'tolower($1)=="location:" {print $2}' "$work/headers" | tr -d '\r')
[ -n "$location" ] || fail "fade gave no Location: $(cat "$work/headers")"
for _ in $(seq 50); do
  curl -s "$location" >"$work/status"
  grep -q '"status":"completed"' "$work/status" && break
  sleep 0.1
done
grep -q '"output":9' "$work/status" || fail "fade did not complete: $(cat "$work/status")"
echo "curl: fade followed through $location to $(cat "$work/status")"

# An SSE stream held by curl across everything below.
curl -sN -H 'Accept: text/event-stream' "$LAMP/properties/brightness" >"$work/sse" &
sse_pid=$!
"$VENV/bin/python" - "$LAMP" "$UP_HTTP" <<'PY' || fail "python-websockets on the bridge"
import asyncio, json, sys, urllib.request, uuid
import websockets

lamp, upstream = sys.argv[1], sys.argv[2]
td = json.load(urllib.request.urlopen(lamp))
url = next(f["href"] for f in td["forms"] if f.get("subprotocol") == "webthingprotocol")

def put(value):
    req = urllib.request.Request(f"{upstream}/things/lamp/properties/brightness", method="PUT",
                                 data=json.dumps(value).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req)

async def main():
    async with websockets.connect(url, subprotocols=["webthingprotocol"]) as ws:
        await ws.send(json.dumps({"thingID": td["id"], "messageID": str(uuid.uuid4()),
                                  "messageType": "request", "operation": "observeproperty",
                                  "name": "brightness", "correlationID": "o1"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 10)).get("correlationID") != "o1":
            pass
        put(55)
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if m.get("messageType") == "notification" and m.get("name") == "brightness":
                assert m["value"] == 55, m
                print("python-websockets: observed brightness 55 on the bridge")
                return

asyncio.run(main())
PY
for _ in $(seq 50); do grep -q '^data: 55' "$work/sse" && break; sleep 0.1; done
grep -q '^data: 55' "$work/sse" || fail "curl's SSE stream missed 55: $(cat "$work/sse")"
echo "curl -N: SSE got 55"

# The upstream goes away: 502 or 503 for reads, writes and actions; the TD stays.
port=${UP_COAP##*:}
kill "$upstream_pid"; wait "$upstream_pid" 2>/dev/null || true; upstream_pid=""
code=$(status "$LAMP/properties/brightness")
case $code in 502|503) ;; *) fail "a read with the upstream away answered $code";; esac
for _ in $(seq 50); do [ "$(status "$LAMP/properties/brightness")" = 503 ] && break; sleep 0.1; done
grep -q upstream-away "$work/body" || fail "no upstream-away problem: $(cat "$work/body")"
detail=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["detail"])' "$work/body")
[ "$(status -X POST "$LAMP/actions/toggle")" = 503 ] || fail "an action with the upstream away"
[ "$(status "$LAMP")" = 200 ] || fail "the TD while the upstream is away"
echo "upstream away: $code, then 503 ($detail)"

upstream "$port"
back=""
for _ in $(seq 150); do [ "$(status "$LAMP/properties/brightness")" = 200 ] && { back=1; break; }; sleep 0.1; done
[ -n "$back" ] || fail "the bridge did not reconnect in 15 s"
echo "upstream restarted on port $port: the bridge reads again"
curl -s -X PUT -H 'Content-Type: application/json' -d 77 "$UP_HTTP/things/lamp/properties/brightness"
for _ in $(seq 50); do grep -q '^data: 77' "$work/sse" && break; sleep 0.1; done
grep -q '^data: 77' "$work/sse" || fail "the SSE stream opened before the restart missed 77: $(cat "$work/sse")"
kill -0 "$WOT_PID" || fail "the bridge died"
echo "curl -N: the SSE stream opened before the stop got 77"
echo "bridge interop passed: curl, curl -N (SSE), python-websockets; upstream stopped and restarted"
