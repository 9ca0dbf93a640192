#!/bin/sh
# deps.sh: installs the Debian packages forge-stream builds and tests with.
# Idempotent and quiet when everything is present; when something is missing
# and we are not root, prints the command to run and fails.
set -e
PKGS="gcc make libc6-dev pkg-config check libsubunit-dev libopenblas-dev liblapacke-dev libjansson-dev libxxhash-dev liburing-dev liblz4-dev libpcre2-dev libutf8proc-dev xz-utils time"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" != 0 ]; then
    echo "forge-stream: missing Debian packages:$missing" >&2
    echo "run as root:  apt-get update && $cmd" >&2
    exit 1
fi
echo "forge-stream: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
$cmd >/dev/null
