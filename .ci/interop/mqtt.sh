#!/usr/bin/env bash
# Interop: the MQTT binding on a real broker. Installs Mosquitto (Debian `mosquitto`,
# `mosquitto-clients`) when missing, runs the MQTT integration tests against it
# (WOT_MQTT_TESTS=1: a missing broker fails them), then starts Mosquitto on a free loopback port
# and `wot serve --mqtt`, and checks it with clients we did not write: mosquitto_sub reads the
# retained TD and value, mosquitto_pub writes (read back over HTTP) and invokes; then node-wot's
# MQTT client (@node-wot/binding-mqtt 0.8.16 from npm, pinned) consumes the lamp's TD through
# the broker (nodewot-mqtt.mjs).
set -euo pipefail
cd "$(dirname "$0")/../.."

NODE_WOT_MQTT=0.8.16 # the newest @node-wot/binding-mqtt on npm
fail() { echo "mqtt interop FAILED: $*" >&2; exit 1; }

if ! command -v mosquitto >/dev/null || ! command -v mosquitto_sub >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi
PATH="$PATH:/usr/sbin"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get install -y -qq nodejs npm >/dev/null
fi

WOT_MQTT_TESTS=1 cargo test --quiet --test it -- mqtt:: 2>&1 | tail -3

work=$(mktemp -d)
broker_pid=""
cleanup() {
  end_wot
  [ -n "$broker_pid" ] && { kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; }
  rm -rf "$work"
}
. .ci/lib/wot-serve.sh
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mosquitto -p "$port" >"$work/mosquitto.log" 2>&1 &
broker_pid=$!
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
echo "mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') on port $port"

start_wot --http-port 0 --no-coap --mqtt "mqtt://127.0.0.1:$port"
echo "wot serve at $HTTP, through mqtt://127.0.0.1:$port"
sub() { timeout 10 mosquitto_sub -p "$port" -C 1 -t "$1"; }

sub wot/lamp/td >"$work/td.json" || fail "no retained TD on wot/lamp/td"
python3 - "$work/td.json" "$port" <<'PY' || fail "the TD's MQTT forms"
import json, sys
td = json.load(open(sys.argv[1]))
forms = td["properties"]["brightness"]["forms"]
mq = [f for f in forms if f["href"].startswith("mqtt://")]
assert any(f.get("mqv:filter") == "wot/lamp/properties/brightness" and f["href"].endswith("/wot/lamp/properties/brightness") for f in mq), mq
assert any(f.get("mqv:topic") == "wot/lamp/properties/brightness/write" for f in mq), mq
PY
echo "mosquitto_sub: retained TD with MQTT forms"
[ "$(sub wot/lamp/properties/brightness)" = 50 ] || fail "the retained brightness"
mosquitto_pub -p "$port" -q 1 -t wot/lamp/properties/brightness/write -m 42
for _ in $(seq 50); do [ "$(curl -s "$HTTP/things/lamp/properties/brightness")" = 42 ] && break; sleep 0.1; done
[ "$(curl -s "$HTTP/things/lamp/properties/brightness")" = 42 ] || fail "mosquitto_pub's write did not land"
[ "$(sub wot/lamp/properties/brightness)" = 42 ] || fail "the retained value after the write"
echo "mosquitto_pub: wrote 42, read back over HTTP and retained"
timeout 10 mosquitto_sub -p "$port" -C 1 -t wot/lamp/properties/brightness/write/reply >"$work/reply" &
sleep 0.5
mosquitto_pub -p "$port" -q 1 -t wot/lamp/properties/brightness/write -m 420
wait $! || fail "no reply to a bad write"
grep -q '"rule":"maximum"' "$work/reply" || fail "the bad write's reply: $(cat "$work/reply")"
[ "$(curl -s "$HTTP/things/lamp/properties/brightness")" = 42 ] || fail "a bad write changed the value"
echo "mosquitto_pub: a bad write answered with $(cat "$work/reply")"

echo "installing @node-wot/core@$NODE_WOT_MQTT @node-wot/binding-mqtt@$NODE_WOT_MQTT"
mkdir "$work/nw"
(cd "$work/nw" && npm init -y >/dev/null && timeout 300 npm install --no-audit --no-fund --save-exact \
  --loglevel=error "@node-wot/core@$NODE_WOT_MQTT" "@node-wot/binding-mqtt@$NODE_WOT_MQTT" >/dev/null)
timeout 120 node .ci/interop/nodewot-mqtt.mjs "$HTTP" "$work/nw" 2> >(grep -v 'unknown format' >&2) \
  || { tail -20 "$WOT_DIR/log" >&2; fail "node-wot's MQTT consumer"; }
kill -0 "$WOT_PID" || fail "wot serve died"
echo "mqtt interop passed: Mosquitto, mosquitto_sub/pub, node-wot $NODE_WOT_MQTT"
