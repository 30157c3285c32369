#!/usr/bin/env bash
# Interop: discovery as the hubs do it. python-zeroconf (a third-party mDNS stack) browses
# _wot._tcp, _webthing._tcp, the _directory subtype (and _wot._udp when the ready line has a CoAP
# URL: a coap and a coaps instance per thing, the latter with scheme=coaps on the coaps port),
# resolves every instance of every thing, fetches what the records point to, then checks
# that after SIGTERM the goodbyes remove every instance within 3 s. All of it runs inside
# ../shared/tools/netns-run, so no multicast packet leaves the machine. Also runs the multicast
# Rust tests (WOT_MDNS_TESTS=1) in the same kind of namespace.
set -euo pipefail
cd "$(dirname "$0")/../.."
NETNS=../shared/tools/netns-run
VENV=target/interop-venv

# Everything that needs the registries happens here, outside the namespace.
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'zeroconf>=0.131,<1'
cargo build --quiet --bin wot
cargo test --no-run --test it

echo "-- multicast tests (cargo test --offline, WOT_MDNS_TESTS=1, inside netns-run)"
"$NETNS" env WOT_MDNS_TESTS=1 cargo test --offline --test it -- discovery:: consumer_cli::a_name_is_found_by_discovery

echo "-- python-zeroconf against wot serve (inside netns-run)"
"$NETNS" "$VENV/bin/python" .ci/interop/discovery.py target/debug/wot
