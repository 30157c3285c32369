#!/usr/bin/env bash
# Interop: the web explorer at `/` in a real browser. Headless Chromium (Debian's package, driven
# by Playwright for Python through `executable_path`; no browser is downloaded) opens the page
# served by `wot serve` and works it as a user would: the things are listed, the lamp's switch
# writes `on` (read back over HTTP), a write made by curl shows up within a second, `fade` runs
# to completed with intermediate brightness values on screen, an out-of-range value shows the
# problem and changes nothing, a title made of markup renders as text, and under `--auth` the
# token prompt appears and then everything works; the page also explores another server pasted
# into it (another origin, under --auth) and cancels a running fade. Writes
# target/explorer-screenshot.png (and -top.png, what docs/explorer.png shows) and prints the
# page's weight and its time to first rendered value.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet --bin wot
. .ci/lib/browser-env.sh
VENV=$BROWSER_VENV

# The bundled things, plus one whose title is markup.
THINGS=$(mktemp -d)
cp things/*.json "$THINGS/"
cat >"$THINGS/markup.json" <<'JSON'
{
  "title": "<img src=x onerror=alert(1)>",
  "description": "<b>not bold</b><script>alert(2)</script>",
  "properties": {
    "note": { "title": "<i>note</i>", "type": "string", "default": "<svg onload=alert(3)>", "observable": true }
  }
}
JSON

PIDS=()
OUTS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$THINGS" "${OUTS[@]}"
}
trap cleanup EXIT

# Starts `wot serve` with extra arguments; sets the variable named by $1 to its HTTP origin.
serve() {
  local var=$1 out
  shift
  out=$(mktemp)
  OUTS+=("$out")
  target/debug/wot serve "$THINGS" --host 127.0.0.1 --http-port 0 --coap-port 0 --no-mdns "$@" >"$out" 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 100); do
    grep -q '"event":"ready"' "$out" && break
    sleep 0.1
  done
  printf -v "$var" '%s' "$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$out")"
}

serve OPEN
TOKEN="explorer-$RANDOM$RANDOM"
serve GUARDED --auth "bearer:$TOKEN"
echo "wot serve at $OPEN and, under --auth, at $GUARDED"

"$VENV/bin/python" - "$OPEN" "$GUARDED" "$TOKEN" "$(command -v chromium)" "$THINGS" <<'PY'
import json, os, shutil, subprocess, sys, time, urllib.request
from playwright.sync_api import sync_playwright

open_url, guarded_url, token, chromium, things_dir = sys.argv[1:6]
failures = []

def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)

def http_json(url, token=None):
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())

def watch(page, thing, what):
    """Polls `what` (a JS expression over `panel`) in the page until truthy; returns it or None."""
    return page.wait_for_function(
        f"() => {{ const panel = [...document.querySelectorAll('details.thing')].find("
        f"d => d.querySelector('summary .title').textContent === {json.dumps(thing)}); "
        f"return panel && ({what}); }}", timeout=10000).json_value()

def panel(page, title):
    return page.locator("details.thing").filter(has=page.locator("summary .title", has_text=title)).first

def new_page(browser):
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    # Refusals the scenarios provoke (400, 401) are logged by Chromium as failed loads: not
    # problems of the page. Anything else (a CSP violation, an exception) is.
    page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text
            and page.problems.append(f"console: {m.text}"))
    page.on("dialog", lambda d: (page.problems.append(f"a dialog opened: {d.message}"), d.dismiss()))
    return page

def exercise(page, base, token=None, shot=None):
    """The scenarios on a page already showing the things of `base`."""
    lamp_td = http_json(f"{base}/things/lamp", token)
    on_url = f"{base}/things/lamp/properties/on"
    lamp = panel(page, "Lamp")
    lamp.locator(":scope > summary").click()
    switch = lamp.get_by_label("On/Off", exact=True)
    page.wait_for_function("(e) => e.dataset.value !== undefined", arg=switch.element_handle(), timeout=10000)
    before = http_json(on_url, token)
    switch.click()
    deadline = time.time() + 3
    while http_json(on_url, token) == before and time.time() < deadline:
        time.sleep(0.05)
    check(http_json(on_url, token) == (not before), f"toggling the switch changed `on` to {not before} (read back over HTTP)")

    # A write made by curl meanwhile shows up within a second.
    brightness = lamp.get_by_label("Brightness", exact=True)
    curl = ["curl", "-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/json"]
    if token:
        curl += ["-H", f"Authorization: Bearer {token}"]
    subprocess.run(curl + ["-d", "37", f"{base}/things/lamp/properties/brightness"], check=True)
    written = time.time()
    try:
        page.wait_for_function("(e) => e.value === '37'", arg=brightness.element_handle(), timeout=1000)
        check(True, f"curl's write shown in {int((time.time() - written) * 1000)} ms")
    except Exception:
        check(False, f"curl's write shown within 1 s (field shows {brightness.input_value()!r})")

    # fade runs to completed; intermediate brightness values are on screen meanwhile.
    page.evaluate("""(e) => { window.seen = []; new MutationObserver(() => window.seen.push(Number(e.dataset.value)))
        .observe(e, {attributes: true, attributeFilter: ['data-value']}); }""", brightness.element_handle())
    fade = lamp.locator("form.action[data-name=fade]")
    fade.get_by_label("level", exact=True).fill("80")
    fade.get_by_label("duration", exact=True).fill("1500")
    fade.get_by_role("button", name="Fade").click()
    status = fade.locator("output.action-status")
    states = set()
    deadline = time.time() + 10
    while time.time() < deadline:
        state = status.get_attribute("data-state")
        states.add(state)
        if state in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.05)
    seen = page.evaluate("window.seen")
    between = sorted({v for v in seen if 37 < v < 80})
    check(state == "completed", f"fade ended {state!r} after {sorted(s for s in states if s)}")
    check(len(between) >= 3, f"intermediate brightness values shown: {between}")
    check(brightness.input_value() == "80" and http_json(f"{base}/things/lamp/properties/brightness", token) == 80,
          "brightness ends at 80 on screen and over HTTP")
    try:
        page.wait_for_function("(log) => /Faded/.test(log.textContent) && /80/.test(log.textContent)",
                               arg=lamp.locator("ol.events").element_handle(), timeout=3000)
        check(True, "the faded event is in the log")
    except Exception:
        check(False, f"the faded event in the log: {lamp.locator('ol.events').text_content()!r}")
    if shot:
        # The screenshot: lamp (after its fade) and thermostat open.
        panel(page, "Thermostat").locator(":scope > summary").click()
        page.wait_for_timeout(1500)
        page.screenshot(path=f"{shot}.png", full_page=True)
        # The README's picture: the top of the page, the lamp after its fade (docs/explorer.png
        # is a copy of this file).
        page.screenshot(path=f"{shot}-top.png", clip={"x": 0, "y": 0, "width": 1000, "height": 820})
        panel(page, "Thermostat").locator(":scope > summary").click()

    # A long fade, cancelled from the page: it ends failed and the ramp stops short of its level.
    fade.get_by_label("level", exact=True).fill("0")
    fade.get_by_label("duration", exact=True).fill("20000")
    fade.get_by_role("button", name="Fade").click()
    page.wait_for_function("(e) => e.dataset.state === 'running'", arg=status.element_handle(), timeout=5000)
    page.wait_for_timeout(300)
    fade.get_by_role("button", name="Cancel").click()
    page.wait_for_function("(e) => e.dataset.state === 'failed'", arg=status.element_handle(), timeout=5000)
    stopped = http_json(f"{base}/things/lamp/properties/brightness", token)
    time.sleep(0.4)
    check(0 < stopped < 80 and http_json(f"{base}/things/lamp/properties/brightness", token) == stopped,
          f"Cancel ended the fade ({status.text_content()!r}) and the ramp stopped at {stopped}")
    subprocess.run(curl + ["-d", "80", f"{base}/things/lamp/properties/brightness"], check=True)
    page.wait_for_function("(e) => e.value === '80'", arg=brightness.element_handle(), timeout=3000)

    # An out-of-range value: the problem is shown next to the control, nothing changes.
    brightness.fill("150")
    brightness.press("Enter")
    problem = lamp.locator("form.property[data-name=brightness] output.problem")
    problem.wait_for(state="visible", timeout=5000)
    shown = problem.text_content()
    req = urllib.request.Request(f"{base}/things/lamp/properties/brightness", data=b"150", method="PUT",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        urllib.request.urlopen(req, timeout=5)
        expected = {}
    except urllib.error.HTTPError as e:
        expected = json.loads(e.read())
    check(bool(expected.get("detail")) and expected["detail"] in shown, f"the problem's detail is shown: {shown!r}")
    check(f"pointer {expected.get('pointer') or '/'}" in shown and f"rule {expected.get('rule')}" in shown,
          f"its pointer and rule too ({expected.get('pointer')!r}, {expected.get('rule')!r})")
    check(http_json(f"{base}/things/lamp/properties/brightness", token) == 80, "the refused value changed nothing")
    page.wait_for_function("(e) => e.value === '80'", arg=brightness.element_handle(), timeout=3000)
    check(True, "the field shows the thing's value again")

    # Every control is labelled (the keyboard and screen readers find it by its title).
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => !e.labels?.length && !e.getAttribute('aria-label')).map(e => e.id || e.outerHTML)""")
    check(not unlabelled, f"every control has a label: {unlabelled}")

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    version = browser.version

    # 1. Without credentials.
    page = new_page(browser)
    sizes = []
    page.on("response", lambda r: sizes.append(len(r.body())) if r.url.startswith(open_url) and (r.url == open_url + "/" or "/explorer/" in r.url) else None)
    page.goto(open_url + "/")
    page.wait_for_function("() => document.querySelectorAll('#things > li').length === 4", timeout=10000)
    titles = page.locator("details.thing summary .title").all_text_contents()
    check({"Lamp", "Thermostat"} <= set(titles) and len(titles) == 4, f"the things are listed: {titles}")
    markup = panel(page, "<img src=x onerror=alert(1)>")
    check(markup.count() == 1, "a title made of markup renders literally")
    markup.locator(":scope > summary").click()
    page.wait_for_function("() => [...document.querySelectorAll('input')].some(i => i.value === '<svg onload=alert(3)>')", timeout=10000)
    check(page.locator("main img, main script, main svg, main b, main i").count() == 0, "no markup from thing files became elements")
    markup.locator(":scope > summary").click()
    exercise(page, open_url, shot="target/explorer-screenshot")
    check(not page.problems, f"no page errors, CSP violations or dialogs: {page.problems}")
    weight = sum(sizes)

    # The TD view's commands are taken from the forms and work as printed.
    lamp = panel(page, "Lamp")
    lamp.locator("details.td > summary").click()
    commands = lamp.locator("details.td .commands").text_content()
    read = next((l for l in commands.split("\n") if l.startswith("curl") and l.endswith("/properties/brightness'")
                 and " -X " not in l and "event-stream" not in l), None)
    out = subprocess.run(["sh", "-c", read or "false"], capture_output=True, text=True)
    check(read is not None and out.stdout.strip() == "80", f"the TD view's curl command reads brightness: {read!r} -> {out.stdout!r}")
    # libcoap's client (Debian's package names it coap-client-notls), run as printed.
    coap = shutil.which("coap-client") or shutil.which("coap-client-notls")
    lines = commands.split("\n")
    coap_read = next((l for l in lines if l.startswith("coap-client -m get '") and l.endswith("/properties/brightness'")), None)
    coap_write = next((l for l in lines if l.startswith("coap-client -m put") and l.endswith("/properties/brightness'")), None)
    if coap and coap_read and coap_write:
        wrote = subprocess.run(["sh", "-c", coap_write.replace("coap-client", coap, 1)], capture_output=True, text=True)
        out = subprocess.run(["sh", "-c", coap_read.replace("coap-client", coap, 1)], capture_output=True, text=True)
        check(wrote.returncode == 0 and out.stdout.strip() == "50",
              f"the TD view's coap-client lines write and read brightness: {coap_write!r}, {coap_read!r} -> {out.stdout!r}")
        subprocess.run(["sh", "-c", read.replace("curl -sS", "curl -sS -f -X PUT -H 'Content-Type: application/json' -d 80", 1)], check=True)
    else:
        check(coap_read is not None and coap_write is not None, f"coap-client commands for the CoAP forms ({coap or 'no coap-client here'})")
    lamp.locator("details.td > summary").click()

    # A lost stream says so and comes back: changing a property's schema in lamp.json reloads
    # the lamp, which ends its property streams (a change of text only would not); the page
    # reconnects (backoff from 1 s), reads the values again and shows writes again.
    streams = lamp.locator("p.streams")
    page.evaluate("""(e) => { window.streamStates = []; new MutationObserver(() => window.streamStates.push(e.textContent))
        .observe(e, {childList: true, subtree: true, characterData: true}); }""", streams.element_handle())
    path = f"{things_dir}/lamp.json"
    model = json.load(open(path))
    model["properties"]["brightness"]["multipleOf"] = 1
    json.dump(model, open(path + ".tmp", "w"))
    os.replace(path + ".tmp", path)
    try:
        page.wait_for_function("() => window.streamStates.some(s => /reconnecting in/.test(s))", timeout=10000)
        page.wait_for_function("(e) => /properties: live/.test(e.textContent) && /events: live/.test(e.textContent)",
                               arg=streams.element_handle(), timeout=10000)
        lost = [s for s in page.evaluate("window.streamStates") if "reconnecting" in s]
        check(True, f"a lost stream said so and came back: {lost[0]!r}")
    except Exception:
        check(False, f"a lost stream said so and came back: {page.evaluate('window.streamStates')}")
    subprocess.run(["curl", "-sS", "-f", "-X", "PUT", "-H", "Content-Type: application/json", "-d", "55",
                    f"{open_url}/things/lamp/properties/brightness"], check=True)
    try:
        page.wait_for_function("(e) => e.value === '55'", arg=lamp.get_by_label("Brightness", exact=True).element_handle(), timeout=1000)
        check(True, "after reconnecting, a curl write shows up within 1 s")
    except Exception:
        check(False, "after reconnecting, a curl write shows up within 1 s")

    # A paged list is followed to its end (Link: rel="next").
    paged = new_page(browser)
    paged.goto(f"{open_url}/?td={open_url}/things?limit=1")
    try:
        paged.wait_for_function("() => document.querySelectorAll('#things > li').length === 4", timeout=10000)
        check(True, "a list paged one TD at a time is followed to its 4 things")
    except Exception:
        check(False, f"paged list: {paged.locator('#list-state').text_content()!r}")
    paged.close()

    # The same page explores another server pasted into it (another origin, under --auth):
    # it asks for that server's token and shows live values.
    page.get_by_label("TD or list of TDs").fill(f"{guarded_url}/things")
    page.get_by_role("button", name="Explore").click()
    page.locator("dialog#auth").wait_for(state="visible", timeout=10000)
    page.locator("dialog#auth").get_by_label("Token").fill(token)
    page.locator("dialog#auth").get_by_role("button", name="Use").click()
    page.wait_for_function("() => document.querySelectorAll('#things > li').length === 4", timeout=10000)
    other = panel(page, "Thermostat")
    other.locator(":scope > summary").click()
    temperature = other.get_by_label("Temperature", exact=True)
    page.wait_for_function("(e) => e.dataset.value !== undefined", arg=temperature.element_handle(), timeout=10000)
    check(True, f"another server pasted in (another origin, --auth): temperature {temperature.input_value()}")
    # That server's token goes to that server only: back on this one, no request carries it.
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization"))))
    page.get_by_label("TD or list of TDs").fill(f"{open_url}/things")
    page.get_by_role("button", name="Explore").click()
    page.wait_for_function("() => document.querySelectorAll('#things > li').length === 4", timeout=10000)
    panel(page, "Lamp").locator(":scope > summary").click()
    page.wait_for_function("(e) => e.dataset.value !== undefined",
                           arg=panel(page, "Lamp").get_by_label("On/Off", exact=True).element_handle(), timeout=10000)
    leaked = [u for u, a in sent if u.startswith(open_url) and (a or "access_token" in u)]
    check(sent and not leaked, f"the other server's token is not sent here ({len(sent)} requests): {leaked}")
    check(not page.problems, f"no page errors exploring another origin: {page.problems}")
    page.close()

    # Time to first rendered value: a fresh page on the lamp's TD alone (its panel opens).
    ttfv = []
    for _ in range(5):
        page = new_page(browser)
        page.goto(f"{open_url}/?td={open_url}/things/lamp")
        page.wait_for_function("() => document.body.dataset.firstValueMs !== undefined", timeout=10000)
        ttfv.append(int(page.evaluate("document.body.dataset.firstValueMs")))
        page.close()

    # 2. Under --auth: the prompt appears once, then everything works.
    page = new_page(browser)
    page.goto(guarded_url + "/")
    dialog = page.locator("dialog#auth")
    dialog.wait_for(state="visible", timeout=10000)
    check(True, "under --auth the token prompt appears")
    dialog.get_by_label("Token").fill(token)
    dialog.get_by_role("button", name="Use").click()
    page.wait_for_function("() => document.querySelectorAll('#things > li').length === 4", timeout=10000)
    check(True, "with the token the things are listed")
    exercise(page, guarded_url, token)
    check(not page.locator("dialog#auth").is_visible(), "the prompt was asked once")
    check(not page.problems, f"no page errors under --auth: {page.problems}")
    browser.close()

print(f"page weight: {weight} bytes (page and assets, uncompressed)")
print(f"time to first rendered value on loopback: median {sorted(ttfv)[len(ttfv) // 2]} ms of {ttfv}")
if failures:
    print("explorer interop FAILED:", failures, file=sys.stderr)
    sys.exit(1)
print("explorer interop: Chromium", version, "OK")
PY
