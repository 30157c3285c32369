#!/usr/bin/env bash
# Interop: a third-party WebSocket client (python-websockets, installed from PyPI into a venv under
# target/) speaks the Web Thing Protocol to `wot serve`: handshake with the subprotocol, the TD's
# ws form, read, write, observe after an HTTP write, and an error for bad input. Asserts on the
# messages that came back.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet --bin wot
VENV=target/interop-ws-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'websockets>=12,<16'

. .ci/lib/wot-serve.sh
trap end_wot EXIT
start_wot --http-port 0 --no-coap
echo "wot serve at $HTTP"

"$VENV/bin/python" - "$HTTP" <<'PY'
import asyncio, json, sys, urllib.request, uuid
import websockets

http = sys.argv[1]

def td(slug):
    with urllib.request.urlopen(f"{http}/things/{slug}") as r:
        return json.load(r)

def put(path, value):
    req = urllib.request.Request(f"{http}{path}", data=json.dumps(value).encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 204, r.status

async def main():
    lamp = td("lamp")
    forms = [f for f in lamp["forms"] if f.get("subprotocol") == "webthingprotocol"]
    assert len(forms) == 1 and forms[0]["href"].startswith("ws://"), forms
    url = forms[0]["href"]
    async with websockets.connect(url, subprotocols=["webthingprotocol"]) as ws:
        assert ws.subprotocol == "webthingprotocol", ws.subprotocol

        async def request(op, **members):
            cid = str(uuid.uuid4())
            msg = {"thingID": lamp["id"], "messageID": str(uuid.uuid4()), "messageType": "request",
                   "operation": op, "correlationID": cid, **members}
            await ws.send(json.dumps(msg))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if reply.get("correlationID") == cid and reply["messageType"] == "response":
                    return reply

        r = await request("readproperty", name="brightness")
        assert r["value"] == 50 and r["name"] == "brightness", r
        r = await request("writeproperty", name="brightness", value=42)
        assert r["value"] == 42, r
        r = await request("readallproperties")
        assert r["values"] == {"on": False, "brightness": 42}, r
        obs = await request("observeproperty", name="on")
        assert "error" not in obs, obs
        put("/things/lamp/properties/on", True)
        n = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert n["messageType"] == "notification" and n["name"] == "on" and n["value"] is True, n
        assert n["correlationID"] == obs["correlationID"], n
        r = await request("writeproperty", name="brightness", value=1000)
        assert r["error"]["status"] == 400 and r["error"]["rule"] == "maximum", r
        await ws.send("not json")
        r = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert r["error"]["status"] == 400, r
        r = await request("invokeaction", name="toggle")
        assert r["output"] is False, r
    print("ws interop: python-websockets", websockets.__version__, "OK")

asyncio.run(main())
PY
