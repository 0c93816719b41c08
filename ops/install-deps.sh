#!/bin/sh
# install-deps.sh — installs the Debian 12 packages kvsweep builds, tests and
# benchmarks with. Idempotent; must run as root (CI and fresh boxes are).
#   sh ops/install-deps.sh          install whatever is missing
#   sh ops/install-deps.sh --check  exit 0 iff everything is already there
set -eu
PKGS="build-essential pkg-config clang libopenblas-openmp-dev libcunit1-dev
libjansson-dev libpcre2-dev libutf8proc-dev libhiredis-dev libmsgpack-dev
libsqlite3-dev sqlite3 libssl-dev redis-server"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    [ "${1:-}" = "--check" ] && exit 0
    echo "install-deps: all packages present"; exit 0
fi
[ "${1:-}" = "--check" ] && { echo "install-deps: missing:$missing"; exit 1; }
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages:$missing — run as root: sudo sh ops/install-deps.sh" >&2
    exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
