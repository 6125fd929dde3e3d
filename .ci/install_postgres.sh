#!/bin/sh
# Install Debian's PostgreSQL server for the tests (tests/postgres.py runs this), only when no
# server binaries are under /usr/lib/postgresql/*/bin. The tests start their own server with
# initdb and pg_ctl on a data directory of their own, so the package's cluster and service are
# not wanted: no main cluster is created and no service started. Needs root (the project's
# machines run as root).
set -eu
have() {
    for bin in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$bin" ] && [ -x "$(dirname "$bin")/pg_ctl" ] && return 0
    done
    return 1
}
if have; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_postgres.sh: PostgreSQL is not installed and this is not root:" \
        "apt-get install postgresql" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
conf=/etc/postgresql-common/createcluster.conf
if [ ! -e "$conf" ]; then
    mkdir -p "$(dirname "$conf")"
    echo "create_main_cluster = false" >"$conf"
fi
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends postgresql >/dev/null
have
