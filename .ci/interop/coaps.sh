#!/usr/bin/env bash
# Interop for coaps:// (CoAP over DTLS 1.2, pre-shared keys) with libcoap's DTLS clients from
# Debian's libcoap3-bin: coap-client-openssl and coap-client-gnutls, each with -k KEY -u IDENTITY.
# `wot serve --auth bearer:TOKEN --coap-psk device-1:KEY`; for each client: the TD fetched
# block-wise (64-byte blocks, valid JSON with coaps forms stating psk_sc), a property PUT then
# read back (also over HTTP), an action POSTed, an observation (-s) that receives a change made
# over HTTP, the key derived from --auth (identity wot, key = hex SHA-256 of the token), a wrong
# key and an unknown identity failing the handshake; plain coap:// still refused a write (4.01).
# aiocoap's DTLS transport (DTSLSocket, built from source with autotools) is tried when it
# installs within a few minutes; otherwise the step says it was skipped and why.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() { echo "coaps interop FAILED: $*" >&2; exit 1; }

echo "building"
cargo build --quiet --bin wot

if ! command -v coap-client-openssl >/dev/null 2>&1 || ! command -v coap-client-gnutls >/dev/null 2>&1 \
  || ! command -v coap-client-notls >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libcoap3-bin >/dev/null
fi

work=$(mktemp -d)
. .ci/lib/wot-serve.sh
cleanup() {
  end_wot
  rm -rf "$work"
}
trap cleanup EXIT

TOKEN=coaps-interop-token
KEY=device-secret-key
start_wot --http-port 0 --coap-port 0 --coaps-port 0 --auth "bearer:$TOKEN" --coap-psk "device-1:$KEY"
[ -n "$COAPS" ] || fail "no coaps in the ready line"
echo "server: $HTTP $COAP $COAPS"
# Under --auth, HTTP wants the token.
http() { curl -sf -H "Authorization: Bearer $TOKEN" "$@"; }

for client in coap-client-openssl coap-client-gnutls; do
  c() { timeout 30 "$client" -B 10 -k "$KEY" -u device-1 "$@"; }
  echo "== $client"

  echo "-- TD block-wise (64-byte blocks) with coaps forms stating psk_sc"
  c -m get -b 64 "$COAPS/things/lamp" >"$work/td"
  [ "$(stat -c %s "$work/td")" -gt 1024 ] || fail "TD too small to have needed Block2"
  python3 - "$work/td" "$COAPS" <<'PY' || fail "TD over coaps: no coaps forms with psk_sc"
import json, sys
td = json.load(open(sys.argv[1]))
assert td["securityDefinitions"]["psk_sc"]["scheme"] == "psk", td["securityDefinitions"]
forms = [f for p in td["properties"].values() for f in p["forms"] if f["href"].startswith(sys.argv[2])]
assert any("writeproperty" in f["op"] for f in forms), forms
assert all(f["security"] in ("psk_sc", ["psk_sc"]) for f in forms), forms
PY

  echo "-- PUT a property, read it back over coaps and HTTP"
  c -m put -e 37 -t 50 "$COAPS/things/lamp/properties/brightness"
  got=$(c -m get "$COAPS/things/lamp/properties/brightness")
  [ "$got" = "37" ] || fail "GET after PUT returned '$got'"
  [ "$(http "$HTTP/things/lamp/properties/brightness")" = "37" ] || fail "the coaps PUT is not visible over HTTP"

  echo "-- POST an action"
  before=$(http "$HTTP/things/lamp/properties/on")
  got=$(c -m post "$COAPS/things/lamp/actions/toggle")
  after=$(http "$HTTP/things/lamp/properties/on")
  [ "$got" = "$after" ] && [ "$before" != "$after" ] || fail "toggle over coaps: '$before' → '$got' / '$after'"

  echo "-- observe (-s 4) receives a change made over HTTP"
  ( sleep 1.5; http -X PUT -H 'Content-Type: application/json' -d 58 "$HTTP/things/lamp/properties/brightness" >/dev/null ) &
  writer=$!
  c -m get -s 4 "$COAPS/things/lamp/properties/brightness" >"$work/observe"
  wait "$writer" || fail "the HTTP write during the observation failed"
  grep -q "37" "$work/observe" || fail "no initial value in the observation: $(cat "$work/observe")"
  grep -q "58" "$work/observe" || fail "no notification in the observation: $(cat "$work/observe")"

  echo "-- the key derived from --auth: identity wot, key = hex SHA-256 of the token"
  derived=$(printf %s "$TOKEN" | sha256sum | cut -c1-64)
  got=$(timeout 30 "$client" -B 10 -k "$derived" -u wot -m get "$COAPS/things/lamp/properties/brightness")
  [ "$got" = "58" ] || fail "derived key: got '$got'"

  echo "-- a wrong key and an unknown identity fail the handshake"
  for args in "-k wrong-key -u device-1" "-k $KEY -u nobody"; do
    # shellcheck disable=SC2086
    out=$(timeout 30 "$client" -B 5 $args -m put -e 1 -t 50 "$COAPS/things/lamp/properties/brightness" 2>&1 || true)
    echo "$out" | grep -qi "alert\|fail\|error" || fail "$args: no handshake failure reported: $out"
    [ "$(http "$HTTP/things/lamp/properties/brightness")" = "58" ] || fail "$args changed the value"
  done
done

echo "-- plain coap:// is still refused a write under --auth"
out=$(timeout 30 coap-client-notls -B 10 -m put -e 1 -t 50 "$COAP/things/lamp/properties/brightness" 2>&1 || true)
echo "$out" | grep -q "4.01" || fail "plain coap write not refused: $out"
[ "$(http "$HTTP/things/lamp/properties/brightness")" = "58" ] || fail "the refused plain write changed the value"

echo "-- aiocoap over DTLS (tinydtls through DTLSSocket), if it installs in time"
venv="$work/aiocoap"
aiocoap_ok=""
if python3 -m venv "$venv" >/dev/null 2>&1; then
  if ! command -v autoreconf >/dev/null 2>&1 || ! command -v libtoolize >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    timeout 240 sh -c 'apt-get update -qq && apt-get install -y -qq autoconf automake libtool >/dev/null' || true
  fi
  if timeout 300 "$venv/bin/pip" install -q 'aiocoap[tinydtls]' >/dev/null 2>&1 \
    && "$venv/bin/python" -c 'import DTLSSocket' 2>/dev/null; then
    aiocoap_ok=1
  fi
fi
if [ -n "$aiocoap_ok" ]; then
  port=${COAPS##*:}
  cat >"$work/creds.json" <<JSON
{"coaps://127.0.0.1:$port/*": {"dtls": {"psk": {"ascii": "$KEY"}, "client-identity": {"ascii": "device-1"}}}}
JSON
  timeout 60 "$venv/bin/aiocoap-client" --credentials "$work/creds.json" -m PUT --content-format application/json \
    --payload 21 "$COAPS/things/lamp/properties/brightness" >/dev/null 2>&1 || true
  got=$(timeout 60 "$venv/bin/aiocoap-client" --credentials "$work/creds.json" "$COAPS/things/lamp/properties/brightness" 2>/dev/null || true)
  [ "$got" = "21" ] || fail "aiocoap over DTLS: GET after PUT returned '$got'"
  echo "aiocoap over DTLS: PUT and GET ok"
else
  echo "aiocoap over DTLS: skipped (aiocoap[tinydtls] / DTLSSocket did not build here within the time limit)"
fi

echo "coaps interop OK"
