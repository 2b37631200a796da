#!/usr/bin/env bash
# Interop suite: real clients (dig, kdig, glibc's resolver, dnsmasq, the
# MariaDB client, py-consul, Prometheus) against real trellis agents.
#
# Everything runs on loopback (127.0.0.x, one address per part) or inside
# network namespaces this script creates; the EXIT trap removes every process,
# namespace and temporary directory it made. Ends with `N passed, M failed`.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
TRELLIS="$TARGET/debug/trellis"
VENV="$TARGET/interop-venv"
WORK="$(mktemp -d /tmp/trellis-interop.XXXXXX)"
NS="trellis-interop-$$"
NS2="trellis-interop-dm-$$"
PIDS=()
PASSED=0
FAILED=0

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$NS" 2>/dev/null || true
    ip netns del "$NS2" 2>/dev/null || true
    rm -rf "/etc/netns/$NS" "/etc/netns/$NS2"
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '== %s\n' "$*"; }
pass() {
    PASSED=$((PASSED + 1))
    printf 'PASS %s\n' "$1"
}
fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL %s\n' "$1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/    | /' | head -40; fi
}

# check NAME OUTPUT REGEX: passes when OUTPUT matches the extended REGEX.
check() {
    if printf '%s\n' "$2" | grep -Eq -- "$3"; then pass "$1"; else fail "$1 (wanted /$3/)" "$2"; fi
}

# wait_for SECONDS COMMAND...: polls COMMAND every 0.1s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
        sleep 0.1
    done
}

# ---------------------------------------------------------------- setup

install_tools() {
    local missing=()
    command -v dig >/dev/null || missing+=(dnsutils)
    command -v kdig >/dev/null || missing+=(knot-dnsutils)
    command -v dnsmasq >/dev/null || missing+=(dnsmasq)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    command -v mariadb >/dev/null || missing+=(mariadb-client)
    command -v prometheus >/dev/null || missing+=(prometheus)
    command -v ip >/dev/null || missing+=(iproute2)
    python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        # Keep the packages' own services from starting and binding default ports.
        local policy=/usr/sbin/policy-rc.d
        local had_policy=0
        [ -e "$policy" ] && had_policy=1
        [ "$had_policy" = 1 ] || printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        [ "$had_policy" = 1 ] || rm -f "$policy"
    fi
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import consul, dns.resolver' 2>/dev/null; then
        log "creating python venv in $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install -q py-consul dnspython
    fi
}

build() {
    log "building trellis"
    (cd "$ROOT" && cargo build --locked -q)
}

# start_agent VAR LOG [NETNS] -- ARGS...: starts trellis, waits for its
# `listening dns=… http=…` line and sets VAR_DNS (IP:PORT), VAR_HTTP, VAR_PID.
start_agent() {
    local var="$1" logf="$2" netns="$3"
    shift 3
    local pre=()
    [ -n "$netns" ] && pre=(ip netns exec "$netns")
    "${pre[@]}" "$TRELLIS" agent "$@" >"$logf" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    if ! wait_for 30 grep -q 'listening dns=' "$logf"; then
        fail "$var agent started" "$(cat "$logf")"
        return 1
    fi
    local line
    line="$(grep -o 'listening dns=[^ ]* http=[^ ]*' "$logf" | head -1)"
    local dns="${line#listening dns=}"
    dns="${dns%% *}"
    local http="${line##*http=}"
    printf -v "${var}_DNS" '%s' "$dns"
    printf -v "${var}_HTTP" '%s' "$http"
    printf -v "${var}_PID" '%s' "$pid"
}

dev_agent() {
    local var="$1" ip="$2"
    shift 2
    start_agent "$var" "$WORK/$var.log" "" --dev --node "${var,,}" --bind "$ip" --client "$ip" \
        --dns-port 0 --http-port 0 --server-port 0 --serf-lan-port 0 --serf-wan-port 0 "$@"
}

# put HTTP PATH JSON
put() {
    curl -fsS -X PUT --data "$3" "http://$1$2"
}

# ---------------------------------------------------------------- part 1: dig and kdig

part_dig() {
    log "part 1: dig and kdig, every name form"
    local ip=127.0.0.2
    dev_agent DIG "$ip" || return 0
    local h="${DIG_DNS%:*}" p="${DIG_DNS##*:}"
    put "$DIG_HTTP" /v1/agent/service/register \
        '{"ID":"web1","Name":"web","Tags":["primary"],"Address":"10.1.0.1","Port":8080}'
    put "$DIG_HTTP" /v1/agent/service/register \
        '{"ID":"web2","Name":"web","Tags":["secondary"],"Address":"10.1.0.2","Port":8081}'
    local i
    for i in $(seq 1 50); do
        put "$DIG_HTTP" /v1/agent/service/register \
            "{\"ID\":\"big$i\",\"Name\":\"big\",\"Address\":\"10.2.0.$i\",\"Port\":$((9000 + i))}"
    done
    wait_for 10 sh -c "dig @$h -p $p +short big.service.consul SRV +tcp | wc -l | grep -qx 50"

    local tool mode out
    for tool in dig kdig; do
        for mode in udp tcp udp-noedns tcp-noedns; do
            local opts=("@$h" -p "$p" +time=2)
            if [ "$tool" = dig ]; then opts+=(+tries=1); else opts+=(+retry=0); fi
            case "$mode" in tcp*) opts+=(+tcp) ;; esac
            case "$mode" in *noedns) opts+=(+noedns) ;; *) opts+=(+edns=0) ;; esac
            local t="$tool/$mode"
            out="$($tool "${opts[@]}" web.service.consul A 2>&1)" || true
            check "$t web.service.consul A" "$out" 'web\.service\.consul\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+10\.1\.0\.2'
            out="$($tool "${opts[@]}" web.service.consul SRV 2>&1)" || true
            check "$t web.service.consul SRV" "$out" 'SRV[[:space:]]+1[[:space:]]+1[[:space:]]+8081[[:space:]]'
            out="$($tool "${opts[@]}" primary.web.service.consul A 2>&1)" || true
            check "$t primary.web (tag) only web1" "$out" 'IN[[:space:]]+A[[:space:]]+10\.1\.0\.1'
            if printf '%s' "$out" | grep -q '10\.1\.0\.2'; then fail "$t tag filter leaked web2" "$out"; fi
            out="$($tool "${opts[@]}" _web._tcp.service.consul SRV 2>&1)" || true
            check "$t _web._tcp SRV" "$out" 'SRV[[:space:]]+1[[:space:]]+1[[:space:]]+8080[[:space:]]'
            out="$($tool "${opts[@]}" _web._secondary.service.consul SRV 2>&1)" || true
            check "$t _web._secondary SRV" "$out" 'SRV[[:space:]]+1[[:space:]]+1[[:space:]]+8081[[:space:]]'
            out="$($tool "${opts[@]}" dig.node.consul A 2>&1)" || true
            check "$t node A" "$out" "IN[[:space:]]+A[[:space:]]+$ip"
            out="$($tool "${opts[@]}" 0a010001.addr.dc1.consul A 2>&1)" || true
            check "$t hex addr A" "$out" 'addr\.dc1\.consul\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]+10\.1\.0\.1'
            out="$($tool "${opts[@]}" -x "$ip" 2>&1)" || true
            check "$t PTR of the node" "$out" 'PTR[[:space:]]+dig\.node\.dc1\.consul\.'
            out="$($tool "${opts[@]}" consul SOA 2>&1)" || true
            check "$t SOA at apex" "$out" '^consul\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+SOA'
            out="$($tool "${opts[@]}" consul NS 2>&1)" || true
            check "$t NS at apex" "$out" '^consul\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+NS'
            out="$($tool "${opts[@]}" nosuch.service.consul A 2>&1)" || true
            check "$t NXDOMAIN with SOA" "$out" 'NXDOMAIN'
        done
    done

    # Truncation: UDP sets TC; dig retries over TCP by itself and gets all 50.
    out="$(dig "@$h" -p "$p" +ignore +time=2 +tries=1 big.service.consul SRV 2>&1)" || true
    check "dig UDP big.service.consul SRV sets TC" "$out" 'flags:[^;]* tc[ ;]'
    out="$(dig "@$h" -p "$p" +time=2 +tries=1 big.service.consul SRV 2>&1)" || true
    check "dig retries over TCP after TC" "$out" 'Truncated, retrying in TCP mode'
    local n
    n="$(printf '%s\n' "$out" | grep -Ec '^big\.service\.consul\.[[:space:]].*SRV' || true)"
    check "dig gets all 50 SRV after the retry ($n)" "$n" '^50$'
    out="$(kdig "@$h" -p "$p" +ignore +time=2 +retry=0 big.service.consul SRV 2>&1)" || true
    check "kdig UDP big.service.consul SRV sets TC" "$out" 'Flags:[^;]* tc[ ;]'
    out="$(kdig "@$h" -p "$p" +time=2 +retry=0 big.service.consul SRV 2>&1)" || true
    check "kdig retries over TCP after TC" "$out" 'truncated reply.*retrying over TCP'
    n="$(printf '%s\n' "$out" | grep -Ec '^big\.service\.consul\.[[:space:]].*SRV' || true)"
    check "kdig gets all 50 SRV after the retry ($n)" "$n" '^50$'
    out="$(kdig "@$h" -p "$p" +tcp +time=2 +retry=0 big.service.consul SRV 2>&1)" || true
    n="$(printf '%s\n' "$out" | grep -Ec '^big\.service\.consul\.[[:space:]].*SRV' || true)"
    check "kdig +tcp gets all 50 SRV ($n)" "$n" '^50$'
    out="$(kdig "@$h" -p "$p" +tcp +time=2 +retry=0 +short big.service.consul A 2>&1 | sort -u | wc -l)" || true
    check "kdig +tcp big.service.consul A has 50 addresses ($out)" "$out" '^50$'
}

# ---------------------------------------------------------------- part 2: py-consul

part_pyconsul() {
    log "part 2: py-consul"
    dev_agent PYC 127.0.0.3 || return 0
    local out rc=0
    out="$("$VENV/bin/python" "$HERE/pyconsul.py" "${PYC_HTTP%:*}" "${PYC_HTTP##*:}" 2>&1)" || rc=$?
    local line
    while IFS= read -r line; do
        case "$line" in
            PASS\ *) pass "py-consul: ${line#PASS }" ;;
            FAIL\ *) fail "py-consul: ${line#FAIL }" ;;
        esac
    done <<<"$out"
    if [ "$rc" != 0 ]; then fail "py-consul script exited $rc" "$out"; fi
}

main() {
    install_tools
    build
    part_dig
    part_pyconsul
    printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
    [ "$FAILED" = 0 ]
}

main "$@"
