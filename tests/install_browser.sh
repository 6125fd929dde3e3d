#!/bin/sh
# Install Debian's chromium and chromium-driver for the console's browser tests
# (tests/integration/test_console.py), only when /usr/bin/chromedriver is missing.
# `make test` calls this, so a fresh machine (or CI) gets the same browser.
set -eu
if [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; then
    exit 0
fi
sh "$(dirname "$0")/../.ci/apt_install.sh" install_browser.sh chromium chromium-driver
test -x /usr/bin/chromedriver && test -x /usr/bin/chromium
