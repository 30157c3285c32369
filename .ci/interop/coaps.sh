#!/usr/bin/env bash
# Interop for coaps:// (CoAP over DTLS 1.2, pre-shared keys) with libcoap's DTLS clients from
# Debian's libcoap3-bin: coap-client-openssl and coap-client-gnutls, each with -k KEY -u IDENTITY.
# `wot serve --auth bearer:TOKEN --coap-psk device-1:KEY`; for each client: the TD fetched
# block-wise (64-byte blocks, valid JSON with coaps forms stating psk_sc), a property PUT then
# read back (also over HTTP), an action POSTed, an observation (-s) that receives a change made
# over HTTP, the key derived from --auth (identity wot, key = hex SHA-256 of the token), a wrong
# key and an unknown identity failing the handshake; plain coap:// still refused a write (4.01).
# Certificate mode, with `--tls-self-signed --coap-open read` added: openssl s_client -dtls1_2
# verifies the coaps port's certificate against the HTTPS one (cert.pem, IP 127.0.0.1) and finds
# the same fingerprint HTTPS presents, and a CA that did not sign it fails; then each libcoap
# client with -R cert.pem (coap-client accepts any self-signed server certificate, so -R proves
# nothing on its own: s_client does the strict check) GETs a property and the TD block-wise as
# the anonymous client it is, and is refused a PUT (4.01) as plain CoAP is.
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

echo "== certificate mode: the HTTPS certificate on the coaps port (--tls-self-signed)"
command -v openssl >/dev/null 2>&1 || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq openssl >/dev/null; }
start_wot --http-port 0 --coap-port 0 --coaps-port 0 --auth "bearer:$TOKEN" --coap-psk "device-1:$KEY" \
  --coap-open read --tls-self-signed --state-dir "$work/state"
cert="$work/state/tls/cert.pem"
case "$HTTP" in https://*) ;; *) fail "no https in the ready line: $HTTP" ;; esac
https() { curl -sf --cacert "$cert" -H "Authorization: Bearer $TOKEN" "$@"; }
fingerprint() { openssl x509 -noout -fingerprint -sha256 2>/dev/null | cut -d= -f2; }

echo "-- openssl s_client -dtls1_2: the coaps port's certificate verifies against cert.pem, and is the HTTPS one"
timeout 20 openssl s_client -dtls1_2 -connect "${COAPS#coaps://}" -CAfile "$cert" -verify_return_error \
  -verify_ip 127.0.0.1 </dev/null >"$work/s_client" 2>&1 || fail "DTLS certificate not verified: $(tail -5 "$work/s_client")"
grep -q "Verify return code: 0 (ok)" "$work/s_client" || fail "s_client: $(grep -i verify "$work/s_client")"
dtls_fp=$(fingerprint <"$work/s_client")
https_fp=$(timeout 20 openssl s_client -connect "${HTTP#https://}" </dev/null 2>/dev/null | fingerprint)
[ -n "$dtls_fp" ] && [ "$dtls_fp" = "$https_fp" ] || fail "coaps presents '$dtls_fp', HTTPS '$https_fp'"
echo "$(grep -m1 "Cipher is" "$work/s_client"); SHA-256 $dtls_fp on both ports"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/other.key" \
  -out "$work/other.pem" -subj /CN=other -days 1 >/dev/null 2>&1
if timeout 20 openssl s_client -dtls1_2 -connect "${COAPS#coaps://}" -CAfile "$work/other.pem" \
  -verify_return_error </dev/null >/dev/null 2>&1; then
  fail "s_client accepted the coaps certificate with a CA that did not sign it"
fi

for client in coap-client-openssl coap-client-gnutls; do
  # -v 3: no warnings on stdout (gnutls warns that cert.pem is no CA certificate).
  c() { timeout 30 "$client" -v 3 -B 10 -R "$cert" "$@"; }
  echo "== $client, certificate mode (-R cert.pem, no key: anonymous)"

  echo "-- GET a property (opened by --coap-open read)"
  want=$(https "$HTTP/things/lamp/properties/brightness")
  got=$(c -m get "$COAPS/things/lamp/properties/brightness" 2>/dev/null)
  [ "$got" = "$want" ] || fail "certificate-mode GET returned '$got', HTTPS says '$want'"

  echo "-- TD block-wise (64-byte blocks)"
  c -m get -b 64 "$COAPS/things/lamp" >"$work/td-cert" 2>/dev/null
  [ "$(stat -c %s "$work/td-cert")" -gt 1024 ] || fail "TD too small to have needed Block2: $(head -c 300 "$work/td-cert")"
  python3 -c 'import json,sys; td=json.load(open(sys.argv[1])); assert td["title"] == "Lamp", td["title"]' "$work/td-cert" \
    || fail "the TD over certificate-mode coaps is not the lamp's"

  echo "-- a PUT is refused (4.01) as on plain CoAP, and changes nothing"
  out=$(c -m put -e 3 -t 50 "$COAPS/things/lamp/properties/brightness" 2>&1 || true)
  echo "$out" | grep -q "4.01" || fail "certificate-mode PUT not refused: $out"
  [ "$(https "$HTTP/things/lamp/properties/brightness")" = "$want" ] || fail "the refused PUT changed the value"
  echo "$client: GET, TD block-wise and refused PUT ok in certificate mode"
done
echo "aiocoap in certificate mode: not tried (its DTLS transport, tinydtls, is PSK only)"

echo "coaps interop OK"
