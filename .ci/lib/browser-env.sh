# Sourced by the browser interop steps: Debian's Chromium (installed if missing; Playwright's own
# browser download does not work here) and Playwright for Python in a venv under target/, shared
# by the steps (BROWSER_VENV).
if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
BROWSER_VENV=target/interop-browser-venv
[ -x "$BROWSER_VENV/bin/python" ] || python3 -m venv "$BROWSER_VENV"
"$BROWSER_VENV/bin/pip" install --quiet --disable-pip-version-check 'playwright>=1.40,<2'
