# Sourced by interop steps: one way to run `target/debug/wot serve` in the background.
#   start_wot ARGS...  starts it on 127.0.0.1 without mDNS, with ARGS (ports, things dir, auth),
#                      waits for its ready line (failing at once, with its log, if it exits) and
#                      sets WOT_PID, HTTP, COAP when CoAP is served and COAPS when coaps is
#   stop_wot           ends it (safe to call when none runs)
#   end_wot            ends it and removes its files: put it in the step's EXIT trap
# Uses `fail MESSAGE` when the step defines one.
WOT_PID=""
WOT_DIR=$(mktemp -d)

stop_wot() {
  if [ -n "$WOT_PID" ]; then
    kill "$WOT_PID" 2>/dev/null || true
    wait "$WOT_PID" 2>/dev/null || true
    WOT_PID=""
  fi
}

end_wot() {
  stop_wot
  rm -rf "$WOT_DIR"
}

start_wot() {
  stop_wot
  : >"$WOT_DIR/ready"
  target/debug/wot serve --host 127.0.0.1 --no-mdns "$@" >"$WOT_DIR/ready" 2>"$WOT_DIR/log" &
  WOT_PID=$!
  local _
  for _ in $(seq 1 100); do
    [ -s "$WOT_DIR/ready" ] && break
    if ! kill -0 "$WOT_PID" 2>/dev/null; then
      cat "$WOT_DIR/log" >&2
      WOT_PID=""
      { declare -F fail >/dev/null && fail "wot serve exited"; } || { echo "wot serve exited" >&2; exit 1; }
    fi
    sleep 0.1
  done
  [ -s "$WOT_DIR/ready" ] || { echo "wot serve printed no ready line" >&2; exit 1; }
  HTTP=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$WOT_DIR/ready")
  COAP=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline()).get("coap", ""))' "$WOT_DIR/ready")
  COAPS=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline()).get("coaps", ""))' "$WOT_DIR/ready")
}
