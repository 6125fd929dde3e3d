#!/bin/sh
# Install Debian's nginx for the benchmark receiver, only when no nginx is on PATH.
# The bench and its test call this same script, so a fresh machine (or CI) gets the
# same receiver: nginx-light where the release still has it, else nginx (its own
# service is not started: the bench starts nginx with its own config).
set -eu
PATH="$PATH:/usr/sbin:/sbin"
if command -v nginx >/dev/null 2>&1; then
    exit 0
fi
sh "$(dirname "$0")/../.ci/apt_install.sh" install_nginx.sh "nginx-light|nginx"
command -v nginx >/dev/null
