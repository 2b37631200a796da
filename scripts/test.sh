#!/usr/bin/env bash
# Runs every test trellis has. Installs what the tests need beyond the Rust
# toolchain (dig from dnsutils, openssl for a TLS test server, ip, curl and
# nft for the network-namespace partition tests) when they are missing.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v nft >/dev/null 2>&1 || need+=(nftables)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo test --all-targets --locked
# The coordinate tests that order datacenters by injected delay need the
# test-only delay layer, which the release binary never has: a second build
# of the binary with the feature, running only those tests.
cargo test --locked --features test-delay --test integration coordinates
