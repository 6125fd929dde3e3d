#!/bin/sh
# Debian's packages that `make install` and its test (tests/test_install.py) need, installed
# only when missing: python3-venv (a venv from the system Python, as on a stock Debian 12 /
# Ubuntu 24.04) and systemd (systemd-analyze verify). The test calls this, so a fresh machine
# (or CI) gets the same tools.
set -eu
missing=""
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing="$missing python3-venv"
[ -x /usr/bin/systemd-analyze ] || missing="$missing systemd"
if [ -z "$missing" ]; then
    exit 0
fi
# shellcheck disable=SC2086 # one word per package
sh "$(dirname "$0")/apt_install.sh" install_debian.sh $missing
/usr/bin/python3 -c 'import ensurepip' && [ -x /usr/bin/systemd-analyze ]
