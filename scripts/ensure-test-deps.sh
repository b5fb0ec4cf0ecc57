#!/bin/sh
# Packages the test suite needs beyond pip: Debian's Chromium (the web page's browser tests) and
# the openssl command (throwaway certificates for the NATS TLS tests).
# As root it installs what is missing; otherwise it stops and says what to install.
set -eu
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-test-deps: installing$missing (browser tests of the web page, NATS TLS tests)"
    apt-get update -q
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
    exit 0
fi
echo "ensure-test-deps: missing:$missing (the web page's browser tests need chromium, the NATS TLS" >&2
echo "  tests the openssl command); install with:  sudo apt-get install$missing   (Debian/Ubuntu)" >&2
exit 1
