#!/bin/sh
# Debian's packages that `make install` and its test (tests/test_install.py) need, installed
# only when missing: python3-venv (a venv from the system Python, as on a stock Debian 12 /
# Ubuntu 24.04) and systemd (systemd-analyze verify). The test calls this, so a fresh machine
# (or CI) gets the same tools. Needs root (the project's machines run as root).
set -eu
missing=""
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || missing="$missing python3-venv"
[ -x /usr/bin/systemd-analyze ] || missing="$missing systemd"
if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_debian.sh: missing and this is not root: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086 # one word per package
apt-get install -y -q --no-install-recommends $missing >/dev/null
/usr/bin/python3 -c 'import ensurepip' && [ -x /usr/bin/systemd-analyze ]
