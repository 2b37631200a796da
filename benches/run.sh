#!/bin/sh
# Runs the DNS benchmark (trellis against Knot, and NSD on request),
# installing the tools it drives first when they are missing (Debian/Ubuntu,
# as root or with sudo).
#
#   benches/run.sh                   # 15 s per run, 3k and 100k instances
#   BENCH_SECONDS=30 benches/run.sh
#   BENCH_SIZES=100k BENCH_PEERS=knot,nsd benches/run.sh
set -eu

missing=""
command -v knotd >/dev/null 2>&1 || [ -x /usr/sbin/knotd ] || missing="$missing knot"
command -v nsd >/dev/null 2>&1 || [ -x /usr/sbin/nsd ] || missing="$missing nsd"
command -v dnsperf >/dev/null 2>&1 || missing="$missing dnsperf"
command -v dig >/dev/null 2>&1 || missing="$missing dnsutils"
command -v taskset >/dev/null 2>&1 || missing="$missing util-linux"

if [ -n "$missing" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing:$missing" >&2
    $sudo apt-get update -qq
    # The knot and nsd packages may start system servers on port 53; the
    # benchmark runs its own on free ports of 127.0.0.3 and .4 and does not
    # touch those.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing
fi

# knotd and nsd live in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin"
export PATH
cd "$(dirname "$0")/.."
exec cargo bench --bench dns_vs_nsd "$@"
