#!/bin/sh
# Install Debian's nginx for the benchmark receiver, only when no nginx is on PATH.
# The bench and its test call this same script, so a fresh machine (or CI) gets the
# same receiver: apt-get update once, then nginx-light where the release still has it,
# else nginx. Needs root (the project's machines run as root).
set -eu
PATH="$PATH:/usr/sbin:/sbin"
if command -v nginx >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_nginx.sh: nginx is not installed and this is not root: apt-get install nginx" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
if apt-cache show nginx-light >/dev/null 2>&1; then
    pkg=nginx-light
else
    pkg=nginx
fi
# The package's own service is not wanted: the bench starts nginx with its own config.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -q --no-install-recommends "$pkg" >/dev/null
command -v nginx >/dev/null
