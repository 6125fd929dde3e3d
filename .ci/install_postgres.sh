#!/bin/sh
# Install Debian's PostgreSQL server for the tests (tests/postgres.py runs this), only when no
# server binaries are under /usr/lib/postgresql/*/bin. The tests start their own server with
# initdb and pg_ctl on a data directory of their own, so the package's cluster and service are
# not wanted: no main cluster is created and no service started.
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
conf=/etc/postgresql-common/createcluster.conf
if [ "$(id -u)" = 0 ] && [ ! -e "$conf" ]; then
    mkdir -p "$(dirname "$conf")"
    echo "create_main_cluster = false" >"$conf"
fi
sh "$(dirname "$0")/apt_install.sh" install_postgres.sh postgresql
have
