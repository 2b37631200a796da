#!/bin/sh
# Runs the cluster write benchmark (3 trellis servers against 3 etcd
# members), installing etcd first when it is missing (Debian/Ubuntu, as root
# or with sudo).
#
#   benches/cluster_vs_etcd/run.sh                 # throughput and failover
#   benches/cluster_vs_etcd/run.sh --failover      # failover only
#   BENCH_SECONDS=10 benches/cluster_vs_etcd/run.sh --throughput
set -eu

if ! command -v etcd >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: etcd-server" >&2
    $sudo apt-get update -qq
    # The package may start a system etcd on 127.0.0.1:2379; the benchmark
    # runs its own members on 127.0.3.1-3 and does not touch that one.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq etcd-server
fi

cd "$(dirname "$0")/../.."
exec cargo bench --bench cluster_vs_etcd -- "$@"
