#!/usr/bin/env bash
# Interop: Eclipse Thingweb node-wot 0.9 (@node-wot/core and @node-wot/binding-http from npm,
# pinned, installed into a temporary directory) consumes `wot serve` over HTTP with its default
# form selection: requestThingDescription of the directory TD and of every bundled thing (node-wot
# validates each against its TD schema), read, write, invoke, observeProperty and subscribeEvent
# receiving the changes the consumer causes, unsubscribing; an EventSource on the SSE forms still
# gets the WoT Profile's named events. The consumer is nodewot.mjs beside this script.
# Then node-wot 0.7.5, the version the WebThings Gateway's wot-adapter runs, subscribes and
# observes the way that adapter does (nodewot07.mjs): default forms, changes received.
# Last, node-wot 0.9 again, through a bridge (a `wot serve` proxying the bundled things of a
# second one over CoAP).
set -euo pipefail
cd "$(dirname "$0")/../.."

NODE_WOT=0.9.2
NODE_WOT_ADAPTER=0.7.5 # WebThingsIO/wot-adapter's dependency
EVENTSOURCE=2.0.2 # what binding-http 0.9.2 resolves ("^2.0.2"), for the SSE check

fail() { echo "nodewot interop FAILED: $*" >&2; exit 1; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq nodejs npm >/dev/null
fi
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || fail "node $(node --version) is too old: node-wot 0.9 and fetch need 18 or later"

cargo build --quiet --bin wot

work=$(mktemp -d)
server_pid=""
upstream_pid=""
cleanup() {
  if [ -n "$upstream_pid" ]; then kill "$upstream_pid" 2>/dev/null || true; wait "$upstream_pid" 2>/dev/null || true; fi
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "installing @node-wot/core@$NODE_WOT @node-wot/binding-http@$NODE_WOT"
(
  cd "$work"
  npm init -y >/dev/null
  npm install --no-audit --no-fund --save-exact --loglevel=error \
    "@node-wot/core@$NODE_WOT" "@node-wot/binding-http@$NODE_WOT" "eventsource@$EVENTSOURCE" >/dev/null
)
installed=$(node -p "require('$work/node_modules/@node-wot/core/package.json').version")
[ "$installed" = "$NODE_WOT" ] || fail "npm installed @node-wot/core $installed, not $NODE_WOT"
echo "installing @node-wot/core@$NODE_WOT_ADAPTER @node-wot/binding-http@$NODE_WOT_ADAPTER"
mkdir "$work/v07"
(
  cd "$work/v07"
  npm init -y >/dev/null
  npm install --no-audit --no-fund --save-exact --loglevel=error \
    "@node-wot/core@$NODE_WOT_ADAPTER" "@node-wot/binding-http@$NODE_WOT_ADAPTER" >/dev/null
)

target/debug/wot serve --host 127.0.0.1 --http-port 0 --no-coap --no-mdns >"$work/ready" 2>"$work/log" &
server_pid=$!
for _ in $(seq 100); do
  [ -s "$work/ready" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/log" >&2; fail "wot serve exited"; }
  sleep 0.1
done
[ -s "$work/ready" ] || fail "no ready line"
HTTP=$(node -p "JSON.parse(require('fs').readFileSync('$work/ready', 'utf8').split('\n')[0]).http")
echo "wot serve at $HTTP"

# node-wot's ajv warns on stderr about the TD schema's "iri-reference" format; keep the rest.
node .ci/interop/nodewot.mjs "$HTTP" "$work" 2> >(grep -v 'unknown format "iri-reference"' >&2) \
  || { echo "--- wot serve log" >&2; tail -20 "$work/log" >&2; fail "the node-wot consumer"; }

# node-wot 0.7.5 logs every request on stdout: keep its log, show this script's lines.
node .ci/interop/nodewot07.mjs "$HTTP" "$work/v07" >"$work/v07.log" 2>&1 \
  || { tail -40 "$work/v07.log" >&2; fail "the node-wot $NODE_WOT_ADAPTER consumer"; }
grep -E '^(0\.7\.5 |node-wot 0\.7\.5)' "$work/v07.log"

kill -0 "$server_pid" 2>/dev/null || fail "the server died"

# The same consumer through a bridge: a second `wot serve` whose things/ holds a proxy file for
# each bundled thing of the first, used over CoAP only. node-wot sees the bridge's TDs and forms.
COAP_UPSTREAM_LOG="$work/upstream.log"
target/debug/wot serve --host 127.0.0.1 --http-port 0 --coap-port 0 --no-mdns \
  >"$work/upstream.ready" 2>"$COAP_UPSTREAM_LOG" &
upstream_pid=$!
for _ in $(seq 100); do [ -s "$work/upstream.ready" ] && break; sleep 0.1; done
COAP=$(node -p "JSON.parse(require('fs').readFileSync('$work/upstream.ready', 'utf8').split('\n')[0]).coap")
mkdir "$work/bridged"
for thing in lamp thermostat host; do
  printf '{"proxy": {"td": "%s/things/%s", "via": "coap"}}\n' "$COAP" "$thing" >"$work/bridged/$thing.json"
done
kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true
: >"$work/ready"
target/debug/wot serve "$work/bridged" --host 127.0.0.1 --http-port 0 --no-coap --no-mdns >"$work/ready" 2>"$work/log" &
server_pid=$!
for _ in $(seq 100); do [ -s "$work/ready" ] && break; sleep 0.1; done
BRIDGE=$(node -p "JSON.parse(require('fs').readFileSync('$work/ready', 'utf8').split('\n')[0]).http")
echo "--- node-wot $installed through a bridge at $BRIDGE to $COAP"
node .ci/interop/nodewot.mjs "$BRIDGE" "$work" 2> >(grep -v 'unknown format "iri-reference"' >&2) \
  || { echo "--- bridge log" >&2; tail -20 "$work/log" >&2; fail "the node-wot consumer through the bridge"; }
kill "$upstream_pid" 2>/dev/null; wait "$upstream_pid" 2>/dev/null || true

echo "nodewot interop passed: node-wot $installed and $NODE_WOT_ADAPTER, directly and through a bridge"
