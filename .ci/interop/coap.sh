#!/usr/bin/env bash
# Interop for the CoAP binding with real third-party clients, installed here:
# libcoap's coap-client (Debian libcoap3-bin) and aiocoap (PyPI). Starts `wot serve` on free
# ports, then asserts on what came back: the TD fetched block-wise equals the HTTP TD, a
# property read and written, an observation that receives a change made over HTTP,
# /.well-known/core filtered by rt; aiocoap fetches the TD and observes. Then, under --auth with
# only reads opened: a read is served, a write and an invocation are refused with 4.01.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { echo "coap interop FAILED: $*" >&2; exit 1; }

echo "building"
cargo build --quiet --bin wot

if ! command -v coap-client-notls >/dev/null 2>&1 && ! command -v coap-client >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libcoap3-bin >/dev/null
fi
COAP_CLIENT=$(command -v coap-client-notls || command -v coap-client)
if ! python3 -c 'import aiocoap' 2>/dev/null; then
  python3 -m pip install -q aiocoap 2>/dev/null || python3 -m pip install -q --break-system-packages aiocoap
fi

work=$(mktemp -d)
. .ci/lib/wot-serve.sh
cleanup() {
  end_wot
  rm -rf "$work"
}
trap cleanup EXIT

# Starts `wot serve` on free ports with extra flags; sets HTTP and COAP from its ready line.
start_server() {
  start_wot --http-port 0 --coap-port 0 "$@"
  echo "server: $HTTP $COAP $*"
}
start_server

echo "-- coap-client: TD block-wise (64-byte blocks) equals the HTTP TD"
"$COAP_CLIENT" -m get -b 64 -B 10 "$COAP/things/lamp" >"$work/td-coap"
curl -sf "$HTTP/things/lamp" >"$work/td-http"
# coap-client ends its output with a newline of its own; the body is everything before it.
python3 - "$work/td-coap" "$work/td-http" <<'PY' || fail "TD over CoAP differs from the TD over HTTP"
import sys
coap, http = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
if coap.endswith(b"\n") and not http.endswith(b"\n"):
    coap = coap[:-1]
assert coap == http, (len(coap), len(http))
PY
[ "$(stat -c %s "$work/td-coap")" -gt 1024 ] || fail "TD too small to have needed Block2"
python3 - "$work/td-coap" <<'PY' || fail "TD lacks coap:// forms"
import json, sys
td = json.load(open(sys.argv[1]))
forms = [f for p in td["properties"].values() for f in p["forms"] if f["href"].startswith("coap://")]
assert any("readproperty" in f["op"] for f in forms), forms
assert "https://www.w3.org/2019/wot/coap#" in json.dumps(td["@context"])
PY

echo "-- coap-client: GET and PUT a property"
"$COAP_CLIENT" -m put -e 37 -B 10 "$COAP/things/lamp/properties/brightness"
got=$("$COAP_CLIENT" -m get -B 10 "$COAP/things/lamp/properties/brightness")
[ "$got" = "37" ] || fail "GET after PUT returned '$got'"
[ "$(curl -sf "$HTTP/things/lamp/properties/brightness")" = "37" ] || fail "the CoAP PUT is not visible over HTTP"
bad=$("$COAP_CLIENT" -m put -e 101 -B 10 "$COAP/things/lamp/properties/brightness" 2>&1 || true)
echo "$bad" | grep -q "4.00" || fail "a schema violation did not give 4.00: $bad"
[ "$(curl -sf "$HTTP/things/lamp/properties/brightness")" = "37" ] || fail "a rejected PUT changed the value"

echo "-- coap-client: observe (-s 3) receives a change made over HTTP"
( sleep 1; curl -sf -X PUT -H 'Content-Type: application/json' -d 58 "$HTTP/things/lamp/properties/brightness" ) &
writer=$!
"$COAP_CLIENT" -m get -s 3 -B 5 "$COAP/things/lamp/properties/brightness" >"$work/observe"
wait "$writer" || fail "the HTTP write during the observation failed"
grep -q "37" "$work/observe" || fail "no initial value in the observation: $(cat "$work/observe")"
grep -q "58" "$work/observe" || fail "no notification in the observation: $(cat "$work/observe")"

echo "-- coap-client: /.well-known/core"
"$COAP_CLIENT" -m get -B 10 "$COAP/.well-known/core" >"$work/core"
grep -q '</things/lamp>;rt="wot.thing";ct=432' "$work/core" || fail "no TD link: $(cat "$work/core")"
grep -q '</things/lamp/properties/on>;ct=50;obs' "$work/core" || fail "no observable property link"
"$COAP_CLIENT" -m get -B 10 "$COAP/.well-known/core?rt=wot.thing" >"$work/core-rt"
grep -q "properties" "$work/core-rt" && fail "?rt= did not filter: $(cat "$work/core-rt")"
grep -q '</things/thermostat>' "$work/core-rt" || fail "?rt=wot.thing lost a TD"

echo "-- aiocoap: TD and observe"
python3 - "$COAP" "$HTTP" "$work/td-http" <<'PY' || fail "aiocoap"
import asyncio, json, sys, urllib.request
import aiocoap

coap, http, td_http = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read()

def http_put(path, value):
    req = urllib.request.Request(http + path, data=json.dumps(value).encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()

async def main():
    ctx = await aiocoap.Context.create_client_context()
    # TD: aiocoap reassembles Block2 on its own; ask for application/td+json (432).
    r = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=coap + "/things/lamp", accept=432)).response
    assert r.code == aiocoap.CONTENT, r.code
    assert r.opt.content_format == 432, r.opt.content_format
    assert r.payload == td_http, "aiocoap TD differs from the HTTP TD"
    json.loads(r.payload)
    # Observe: a change made over HTTP arrives as a notification.
    pr = ctx.request(aiocoap.Message(code=aiocoap.GET, uri=coap + "/things/lamp/properties/on", observe=0))
    first = await pr.response
    assert first.opt.observe is not None, "not registered"
    before = json.loads(first.payload)
    await asyncio.get_running_loop().run_in_executor(None, http_put, "/things/lamp/properties/on", not before)
    async def next_notification():
        async for n in pr.observation:
            return n
    n = await asyncio.wait_for(next_notification(), 10)
    assert json.loads(n.payload) == (not before), n.payload
    assert n.opt.observe > first.opt.observe
    pr.observation.cancel()
    await ctx.shutdown()
    print("aiocoap ok: TD", len(r.payload), "bytes; notification", n.payload)

asyncio.run(main())
PY

kill -0 "$WOT_PID" 2>/dev/null || fail "the server died"
stop_wot

echo "-- coap-client under --auth with --coap-open read: reads served, writes and invocations 4.01"
start_server --auth bearer:interop-token --coap-open read
got=$("$COAP_CLIENT" -m get -B 10 "$COAP/things/lamp/properties/brightness")
[ "$got" = "50" ] || fail "an opened read returned '$got'"
denied=$("$COAP_CLIENT" -m put -e 7 -B 10 "$COAP/things/lamp/properties/brightness" 2>&1 || true)
echo "$denied" | grep -q "4.01" || fail "an unauthenticated CoAP write was not refused with 4.01: $denied"
denied=$("$COAP_CLIENT" -m post -B 10 "$COAP/things/lamp/actions/toggle" 2>&1 || true)
echo "$denied" | grep -q "4.01" || fail "an unauthenticated CoAP invocation was not refused with 4.01: $denied"
[ "$(curl -sf -H 'Authorization: Bearer interop-token' "$HTTP/things/lamp/properties/brightness")" = "50" ] \
  || fail "a refused CoAP write changed the value"
[ "$(curl -sf -H 'Authorization: Bearer interop-token' "$HTTP/things/lamp/properties/on")" = "false" ] \
  || fail "a refused CoAP invocation changed the value"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP/things/lamp/properties/brightness")" = "401" ] \
  || fail "HTTP without credentials was not refused"

kill -0 "$WOT_PID" 2>/dev/null || fail "the server died"
echo "coap interop passed"
