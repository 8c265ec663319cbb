#!/usr/bin/env bash
# Makes sure a headless-capable Chromium is installed, for the dashboard's browser tests
# (internal/web/webtest). Prints the browser's path on stdout; progress goes to stderr.
# Order of preference: LIMITR_CHROMIUM, an installed chromium, then Debian packages
# (needs root or sudo, and apt). Exits non-zero with a reason when none can be had, so a
# test fails loudly instead of skipping.
set -euo pipefail

log() { echo "chromium: $*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

find_browser() {
  if [ -n "${LIMITR_CHROMIUM:-}" ] && [ -x "$LIMITR_CHROMIUM" ]; then echo "$LIMITR_CHROMIUM"; return 0; fi
  for b in chromium chromium-browser google-chrome-stable google-chrome; do
    if have "$b"; then command -v "$b"; return 0; fi
  done
  return 1
}

if find_browser; then exit 0; fi

if ! have apt-get; then
  log "no Chromium found and no apt-get to install it: install chromium or set LIMITR_CHROMIUM"
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if have sudo; then sudo="sudo -n"; else log "no Chromium found and installing it needs root"; exit 1; fi
fi
log "installing chromium from Debian packages"
# Another test package may be installing it at the same moment: dpkg's lock serialises us.
$sudo apt-get update -qq >&2 || true
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium >&2
if find_browser; then exit 0; fi
log "chromium was installed but is not on PATH"
exit 1
