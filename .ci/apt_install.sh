#!/bin/sh
# Install Debian packages for the tests and the bench: the install_*.sh scripts call this
# once they found what they need missing. apt-get update, then the packages without their
# recommends; no service a package brings is started (the tests and the bench start their
# own servers). A package given as "a|b" is a where the release has it, else b. Needs root
# (the project's machines run as root).
#   usage: apt_install.sh CALLER PACKAGE...
set -eu
caller=$1
shift
if [ "$(id -u)" != 0 ]; then
    echo "$caller: missing, and this is not root: apt-get install $*" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -q >/dev/null
packages=""
for wanted in "$@"; do
    case "$wanted" in
    *"|"*)
        if apt-cache show "${wanted%%|*}" >/dev/null 2>&1; then
            wanted=${wanted%%|*}
        else
            wanted=${wanted#*|}
        fi
        ;;
    esac
    packages="$packages $wanted"
done
# shellcheck disable=SC2086 # one word per package
apt-get install -y -q --no-install-recommends $packages >/dev/null
