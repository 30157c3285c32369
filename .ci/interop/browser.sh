#!/usr/bin/env bash
# Interop: a real browser's CORS rules. Headless Chromium (Debian's package, driven by Playwright
# for Python through `executable_path`; no browser is downloaded) opens a page served from another
# origin, which talks to `wot serve --auth bearer:...`: a fetch without the token must be able to
# read the 401's problem+json (CORS on refusals), then fetch with the header (preflighted PUT
# included), EventSource and WebSocket with `?access_token=` must work. Asserts on what the page
# saw.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet --bin wot
. .ci/lib/browser-env.sh
VENV=$BROWSER_VENV

TOKEN="browser-$RANDOM$RANDOM"
. .ci/lib/wot-serve.sh
trap end_wot EXIT
start_wot --http-port 0 --no-coap --auth "bearer:$TOKEN"
echo "wot serve at $HTTP"

"$VENV/bin/python" - "$HTTP" "$TOKEN" "$(command -v chromium)" <<'PY'
import http.server, json, sys, tempfile, threading, os
from playwright.sync_api import sync_playwright

api, token, chromium = sys.argv[1], sys.argv[2], sys.argv[3]

# The page's own origin: another port on this machine, so every call to the runtime is
# cross-origin and Chromium applies CORS to it.
site = tempfile.mkdtemp()
with open(os.path.join(site, "index.html"), "w") as f:
    f.write('<!doctype html><title>another origin</title><link rel="icon" href="data:,"><p>page</p>')
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
handler = lambda *a: Quiet(*a, directory=site)
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
threading.Thread(target=httpd.serve_forever, daemon=True).start()
page_url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html"

SCRIPT = """
async ([api, token]) => {
  const out = {origin: location.origin};
  const prop = `${api}/things/lamp/properties/brightness`;
  const auth = {Authorization: `Bearer ${token}`};
  // Without the token: the refusal itself must be readable, not an opaque TypeError.
  try {
    const r = await fetch(prop);
    out.refused = {status: r.status, type: r.headers.get('content-type'),
                   challenge: r.headers.get('www-authenticate'), body: await r.json()};
  } catch (e) { out.refused = {error: String(e)}; }
  // With it: a read, then a preflighted write.
  out.read = await (await fetch(prop, {headers: auth})).json();
  const td = await (await fetch(`${api}/things/lamp`, {headers: auth})).json();
  out.write = (await fetch(prop, {method: 'PUT', headers: {...auth, 'Content-Type': 'application/json'},
                                  body: '42'})).status;
  // EventSource cannot set headers: the token goes in the query; events are named.
  out.sse = await new Promise((resolve) => {
    const es = new EventSource(`${prop}?access_token=${encodeURIComponent(token)}`);
    const timer = setTimeout(() => { es.close(); resolve({error: 'no event in 10 s'}); }, 10000);
    es.addEventListener('brightness', (e) => { clearTimeout(timer); es.close(); resolve({data: JSON.parse(e.data)}); });
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) { clearTimeout(timer); resolve({error: 'EventSource failed'}); } };
    es.onopen = () => fetch(prop, {method: 'PUT', headers: {...auth, 'Content-Type': 'application/json'}, body: '77'});
  });
  // WebSocket, the same way, with the Web Thing Protocol.
  const wsUrl = `${api.replace(/^http/, 'ws')}/things/lamp`;
  out.ws = await new Promise((resolve) => {
    const ws = new WebSocket(`${wsUrl}?access_token=${encodeURIComponent(token)}`, 'webthingprotocol');
    const timer = setTimeout(() => { ws.close(); resolve({error: 'no answer in 10 s'}); }, 10000);
    ws.onopen = () => ws.send(JSON.stringify({thingID: td.id, messageID: crypto.randomUUID(),
      messageType: 'request', operation: 'readproperty', name: 'brightness', correlationID: 'c1'}));
    ws.onmessage = (e) => { clearTimeout(timer); ws.close(); resolve({protocol: ws.protocol, message: JSON.parse(e.data)}); };
    ws.onerror = () => { clearTimeout(timer); resolve({error: 'WebSocket failed'}); };
  });
  // And without the token the socket is refused.
  out.wsRefused = await new Promise((resolve) => {
    const ws = new WebSocket(wsUrl, 'webthingprotocol');
    ws.onopen = () => { ws.close(); resolve('opened'); };
    ws.onerror = () => resolve('refused');
  });
  return out;
}
"""

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page()
    console = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(page_url)
    out = page.evaluate(SCRIPT, [api, token])
    version = browser.version
    browser.close()
httpd.shutdown()

def check(ok, what):
    if not ok:
        print("browser interop FAILED:", what, "\npage saw:", json.dumps(out, indent=1),
              "\nconsole:", console, file=sys.stderr)
        sys.exit(1)
check(out["origin"] != api, "the page is on another origin")
refused = out["refused"]
check(refused.get("status") == 401, f"a readable 401: {refused}")
check(refused.get("type") == "application/problem+json", f"problem+json: {refused}")
check(refused.get("body", {}).get("status") == 401, f"the problem's status: {refused}")
check((refused.get("challenge") or "").startswith("Bearer"), f"the challenge is exposed: {refused}")
check(out["read"] == 50, f"read with the header: {out['read']}")
check(out["write"] == 204, f"preflighted PUT: {out['write']}")
check(out["sse"].get("data") == 77, f"EventSource with ?access_token=: {out['sse']}")
ws = out["ws"]
check(ws.get("protocol") == "webthingprotocol", f"WebSocket subprotocol: {ws}")
msg = ws.get("message", {})
check(msg.get("messageType") == "response" and msg.get("value") == 77 and msg.get("correlationID") == "c1",
      f"WebSocket with ?access_token=: {ws}")
check(out["wsRefused"] == "refused", f"WebSocket without a token: {out['wsRefused']}")
print("browser interop: Chromium", version, "OK")
PY
