#!/usr/bin/env bash
# Interop for the legacy /webthing/ view with the validator the WebThings Gateway runs: Ajv 8
# (npm `ajv`, into target/), which gateway-addon's Device.requestAction uses to compile an action's
# `input` as `new Ajv()` does, strict by default and without ajv-formats. `wot serve` runs the
# bundled things plus a thing whose action input uses TD terms (`unit`, `@type`, `format`). For
# every description on /webthing/: each action input compiles under the Gateway's options and
# under `strict: true`, a conforming input validates, and the POST the Gateway would send is
# accepted. A control schema with `unit` must throw, so the check itself is strict. Then the
# capability types hubs key on are asserted.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { echo "webthings interop FAILED: $*" >&2; exit 1; }

cargo build --quiet --bin wot
NODE_DIR=target/interop-webthings
if [ ! -d "$NODE_DIR/node_modules/ajv" ]; then
  mkdir -p "$NODE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" 'ajv@^8.17' >/dev/null
fi

work=$(mktemp -d)
. .ci/lib/wot-serve.sh
cleanup() {
  end_wot
  rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/things"
cp things/*.json "$work/things/"
cat >"$work/things/plug.json" <<'JSON'
{
  "@context": [{ "wt": "https://webthings.io/schemas#", "saref": "https://saref.etsi.org/core/" }],
  "@type": ["wt:SmartPlug", "wt:OnOffSwitch", "saref:Switch"],
  "title": "Plug",
  "properties": {
    "on": { "@type": "wt:OnOffProperty", "type": "boolean", "observable": true }
  },
  "actions": {
    "schedule": {
      "@type": "saref:Command",
      "input": {
        "type": "object",
        "@type": "saref:Schedule",
        "properties": {
          "at": { "type": "string", "format": "date-time", "@type": "saref:Time" },
          "level": { "type": "integer", "minimum": 0, "maximum": 100, "unit": "percent" }
        },
        "required": ["level"]
      },
      "runtime": { "effect": "nothing" }
    }
  }
}
JSON

start_wot --http-port 0 --no-coap "$work/things"
echo "wot serve at $HTTP"
curl -sf "$HTTP/webthing/" >"$work/list.json" || fail "GET /webthing/"

echo "-- Ajv 8 strict compiles every action input of every description"
NODE_PATH="$NODE_DIR/node_modules" node - "$work/list.json" "$HTTP" <<'JS' || fail "Ajv"
const fs = require('fs');
const Ajv = require('ajv').default;
const [list, http] = [JSON.parse(fs.readFileSync(process.argv[2], 'utf8')), process.argv[3]];

// The Gateway's options (gateway-addon: `new Ajv()`), and every strict option on.
const gateway = () => new Ajv();
const strictest = () => new Ajv({strict: true});

// The checker is strict: a TD term in an input schema throws.
let threw = false;
try {
  gateway().compile({type: 'object', properties: {level: {type: 'integer', unit: 'percent'}}});
} catch (e) {
  threw = /unknown keyword/.test(String(e));
}
if (!threw) throw new Error('control: Ajv accepted "unit"');

// A value that satisfies a (plain) schema, enough for the inputs served here.
function sample(s) {
  if (s.const !== undefined) return s.const;
  if (s.enum) return s.enum[0];
  switch (s.type) {
    case 'object': {
      const o = {};
      for (const [k, v] of Object.entries(s.properties || {})) o[k] = sample(v);
      return o;
    }
    case 'integer': case 'number': return s.minimum !== undefined ? s.minimum : 0;
    case 'boolean': return true;
    // A date-time: the plain schema has lost its `format`, the core still checks it.
    case 'string': return '2026-01-01T00:00:00Z';
    case 'array': return [];
    default: return null;
  }
}

async function main() {
  let compiled = 0;
  for (const thing of list) {
    for (const [name, action] of Object.entries(thing.actions || {})) {
      if (!('input' in action)) continue;
      for (const make of [gateway, strictest]) {
        const validate = make().compile(action.input);
        const input = sample(action.input);
        if (!validate(input)) {
          throw new Error(`${thing.href} ${name}: sample ${JSON.stringify(input)} invalid: ${JSON.stringify(validate.errors)}`);
        }
      }
      // What the Gateway then sends: POST {name: {input}} to the thing's actions.
      const r = await fetch(`${http}${thing.href}/actions`, {
        method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({[name]: {input: sample(action.input)}}),
      });
      if (r.status !== 201) throw new Error(`${thing.href} ${name}: POST answered ${r.status} ${await r.text()}`);
      compiled++;
      console.log(`ok: ${thing.href} ${name}`);
    }
  }
  if (compiled < 2) throw new Error(`only ${compiled} action inputs found (lamp fade, plug schedule expected)`);
}
main().catch((e) => { console.error(String(e)); process.exit(1); });
JS

echo "-- capability types"
python3 - "$work/list.json" <<'PY' || fail "capability types"
import json, sys
things = {t["href"]: t for t in json.load(open(sys.argv[1]))}
lamp, thermostat, host, plug = (things[f"/webthing/{n}"] for n in ("lamp", "thermostat", "host", "plug"))
for t in things.values():
    assert t["@context"] == "https://webthings.io/schemas", t["@context"]
    assert isinstance(t["@type"], list), t["@type"]
assert lamp["@type"] == ["Light", "OnOffSwitch"], lamp["@type"]
assert lamp["properties"]["on"]["@type"] == "OnOffProperty"
assert lamp["properties"]["brightness"]["@type"] == "BrightnessProperty"
assert thermostat["@type"] == ["Thermostat"], thermostat["@type"]
assert thermostat["properties"]["temperature"]["@type"] == "TemperatureProperty"
assert thermostat["properties"]["target"]["@type"] == "TargetTemperatureProperty"
assert host["@type"] == ["MultiLevelSensor"], host["@type"]
assert host["properties"]["loadAverage"]["@type"] == "LevelProperty"
assert plug["@type"] == ["SmartPlug", "OnOffSwitch"], plug["@type"]
assert "@type" not in plug["actions"]["schedule"]
print("capabilities ok")
PY

kill -0 "$WOT_PID" 2>/dev/null || fail "the server died"
echo "webthings interop passed"
