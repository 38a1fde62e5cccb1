#!/usr/bin/env bash
# Install Debian's chromium for the dashboard's browser tests (tests/browser, marker `browser`), if missing.
#
#   scripts/install_browser.sh
#
# Playwright drives /usr/bin/chromium (executable_path); it never downloads a browser of its own, which
# these machines could not do anyway. As root with apt-get this installs the package; otherwise it says
# what to run and exits 0, and the browser tests skip (or fail on CI, like a missing LocalStack).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: $CHROMIUM missing; install Debian's chromium (apt-get install chromium) to run the browser tests" >&2
    exit 0
fi
echo "==> installing Debian's chromium for the browser tests (a minute or two, once)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium >/dev/null
"$CHROMIUM" --version >&2
