#!/bin/sh
# Install Debian's chromium and chromium-driver for the console's browser tests
# (tests/integration/test_console.py), only when /usr/bin/chromedriver is missing.
# `make test` calls this, so a fresh machine (or CI) gets the same browser. Needs root
# (the project's machines run as root).
set -eu
if [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_browser.sh: chromium is not installed and this is not root:" \
        "apt-get install chromium chromium-driver" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
test -x /usr/bin/chromedriver && test -x /usr/bin/chromium
