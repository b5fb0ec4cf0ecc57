#!/bin/sh
# Packages the test suite needs beyond pip: Debian's Chromium for the web page's browser tests.
# As root it installs them; otherwise it stops and says what to install.
set -eu
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-deps: installing chromium (browser tests of the web page)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    exit 0
fi
echo "ensure-test-deps: /usr/bin/chromium is missing; the web page's browser tests need it." >&2
echo "  install it with:  sudo apt-get install chromium   (Debian/Ubuntu)" >&2
exit 1
