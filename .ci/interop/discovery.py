"""python-zeroconf against `wot serve`: run only inside ../shared/tools/netns-run.

Starts the runtime (with CoAP and coaps: a pre-shared key), finds every thing under every service
type it must announce (under _wot._udp twice: coap, and coaps on its own port with scheme=coaps),
resolves each instance, checks its TXT keys, fetches what the record points to and checks the
document, then sends SIGTERM and checks that every instance is removed (goodbyes) within 3 seconds.
Exits non-zero with a message on the first thing that is wrong.
"""

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

WOT_TCP = "_wot._tcp.local."
WOT_UDP = "_wot._udp.local."
WEBTHING = "_webthing._tcp.local."
DIRECTORY = "_directory._sub._wot._tcp.local."


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def fetch(url):
    request = urllib.request.Request(url, headers={"Accept": "application/td+json, application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        if response.status != 200:
            fail(f"{url} answered {response.status}")
        return json.loads(response.read())


class Seen:
    def __init__(self):
        self.lock = threading.Lock()
        self.present = {}  # type -> set of names
        self.removed = {}  # name -> monotonic time

    def handler(self, zeroconf, service_type, name, state_change):
        with self.lock:
            if state_change is ServiceStateChange.Removed:
                self.removed[name] = time.monotonic()
                self.present.setdefault(service_type, set()).discard(name)
            else:
                self.present.setdefault(service_type, set()).add(name)

    def names(self, service_type):
        with self.lock:
            return set(self.present.get(service_type, set()))


def wait_for(predicate, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def main():
    binary = sys.argv[1]
    server = subprocess.Popen(
        [binary, "serve", "--http-port", "0", "--coap-port", "0", "--coaps-port", "0",
         "--coap-psk", "device-1:device-key"],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
    )
    try:
        ready = json.loads(server.stdout.readline())
        if ready.get("event") != "ready":
            fail(f"no ready line: {ready}")
        slugs = ready["things"]
        port = int(ready["http"].rsplit(":", 1)[1])
        coap = ready.get("coap")
        coaps = ready.get("coaps")
        if coap and not coaps:
            fail(f"a key was given but coaps does not run: {ready}")
        coap_port = int(coap.rsplit(":", 1)[1]) if coap else None
        coaps_port = int(coaps.rsplit(":", 1)[1]) if coaps else None
        print(f"ready: {ready}")
        types = [WOT_TCP, WEBTHING, DIRECTORY] + ([WOT_UDP] if coap else [])

        zc = Zeroconf(ip_version=IPVersion.V4Only)
        seen = Seen()
        browsers = [ServiceBrowser(zc, t, handlers=[seen.handler]) for t in types]

        expected = {WOT_TCP: len(slugs) + 1, WEBTHING: len(slugs), DIRECTORY: 1}
        if coap:
            # One coap and one coaps instance per thing.
            expected[WOT_UDP] = 2 * len(slugs)
        wait_for(
            lambda: all(len(seen.names(t)) >= n for t, n in expected.items()),
            f"instances {expected}",
        )

        ids = {}
        for service_type in types:
            for name in sorted(seen.names(service_type)):
                info = zc.get_service_info(WOT_TCP if service_type == DIRECTORY else service_type, name, 3000)
                if info is None:
                    fail(f"cannot resolve {name}")
                txt = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
                addresses = info.parsed_addresses()
                if not addresses:
                    fail(f"{name}: no A record for {info.server}")
                if not info.server.endswith(".local."):
                    fail(f"{name}: SRV target {info.server} is not <host>.local.")
                host = addresses[0]
                print(f"{service_type:32} {name:48} {info.server}:{info.port} {txt}")
                if service_type in (WOT_TCP, DIRECTORY):
                    if info.port != port:
                        continue
                    for key in ("td", "type", "scheme"):
                        if key not in txt:
                            fail(f"{name}: TXT lacks '{key}': {txt}")
                    document = fetch(f"{txt['scheme']}://{host}:{info.port}{txt['td']}")
                    if txt["type"] == "Directory":
                        if txt["td"] != "/.well-known/wot" or document.get("@type") != "ThingDirectory":
                            fail(f"{name}: the directory record leads to {document.get('@type')}")
                        continue
                    if service_type == DIRECTORY:
                        fail(f"{name}: a Thing under the directory subtype")
                    if txt != {"td": txt["td"], "type": "Thing", "scheme": "http", "path": txt["td"]}:
                        fail(f"{name}: unexpected TXT {txt}")
                    if not name.startswith(document["title"]):
                        fail(f"{name}: instance name does not start with the title {document['title']}")
                    ids.setdefault(document["id"], set()).add("wot")
                elif service_type == WEBTHING:
                    if info.port != port:
                        continue
                    if set(txt) != {"path"}:
                        fail(f"{name}: _webthing._tcp TXT must carry path: {txt}")
                    document = fetch(f"http://{host}:{info.port}{txt['path']}")
                    if document.get("@context") != "https://webthings.io/schemas":
                        fail(f"{name}: legacy @context is {document.get('@context')!r}")
                    if not any(
                        link.get("rel") == "alternate" and link.get("href", "").startswith("ws")
                        for link in document.get("links", [])
                    ):
                        fail(f"{name}: no alternate ws link")
                    ids.setdefault(document["id"], set()).add("webthing")
                elif service_type == WOT_UDP:
                    if info.port not in (coap_port, coaps_port):
                        continue
                    secure = info.port == coaps_port
                    scheme = "coaps" if secure else "coap"
                    if set(txt) != {"td", "type", "scheme"} or txt["scheme"] != scheme \
                            or txt["type"] != "Thing" or not txt["td"].startswith("/things/"):
                        fail(f"{name} on port {info.port}: _wot._udp TXT {txt} (want scheme={scheme})")
                    if name.endswith(" (coaps)._wot._udp.local.") != secure:
                        fail(f"{name}: only the coaps instance is named '... (coaps)'")
                    # No CoAP client here: the same path over HTTP names the thing it stands for.
                    document = fetch(f"http://{host}:{port}{txt['td']}")
                    ids.setdefault(document["id"], set()).add(scheme)
        wanted = {"wot", "webthing"} | ({"coap", "coaps"} if coap else set())
        things = {i: kinds for i, kinds in ids.items() if wanted <= kinds}
        if len(things) != len(slugs):
            fail(f"expected {len(slugs)} things under {sorted(wanted)}, found {ids}")
        print(f"found every thing: {sorted(things)}")

        ours = set()
        for service_type in types:
            ours |= seen.names(service_type)
        sent = time.monotonic()
        server.send_signal(signal.SIGTERM)
        wait_for(lambda: ours <= set(seen.removed), f"goodbyes for {sorted(ours - set(seen.removed))}", 3.0)
        slowest = max(seen.removed[n] for n in ours) - sent
        print(f"every instance removed {slowest:.2f} s after SIGTERM")
        if server.wait(timeout=10) != 0:
            fail(f"wot serve exited with {server.returncode}")
        for b in browsers:
            b.cancel()
        zc.close()
    finally:
        if server.poll() is None:
            server.kill()
    print("discovery interop passed")


if __name__ == "__main__":
    main()
