#!/usr/bin/env bash
# Interop suite: real clients (dig, kdig, glibc's resolver, dnsmasq, the
# MariaDB client, py-consul, Prometheus, hashicorp/consul/api,
# consul-template, `trellis lock`, ACL tokens from py-consul and the api)
# against real trellis agents.
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
# Go builds and modules stay under the target directory, so a rerun is fast.
GODIR="$TARGET/interop-go"
CONSUL_TEMPLATE_VERSION=v0.41.1
CONSUL_TEMPLATE="$GODIR/bin/consul-template"
CONSULAPI="$GODIR/bin/consulapi"
GO_PROBLEM=""
WORK="$(mktemp -d /tmp/trellis-interop.XXXXXX)"
NS="trellis-interop-$$"
NS2="trellis-interop-dm-$$"
PIDS=()
PASSED=0
SKIPPED=()
FAILED=0

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    # Commands `trellis lock` started (part 9) are not our children.
    if [ -f "$WORK/leader.pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/leader.pids"
    fi
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
    dpkg -s python3-venv >/dev/null 2>&1 || missing+=(python3-venv)
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
        "$VENV/bin/pip" install -q py-consul==1.8.0 dnspython==2.9.2
    fi
}

# The Go parts: consul-template at a pinned version, and the program in go/
# built against hashicorp/consul/api as pinned in go/go.mod. A failure is
# kept in GO_PROBLEM and reported by the parts that need them.
install_go_tools() {
    # The Go tarball's usual place, for a shell whose PATH lacks it.
    if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then PATH="/usr/local/go/bin:$PATH"; fi
    if ! command -v go >/dev/null; then
        GO_PROBLEM="go is not installed"
        return 0
    fi
    export GOPATH="$GODIR" GOMODCACHE="$GODIR/mod" GOCACHE="$GODIR/cache" GOBIN="$GODIR/bin" GOTOOLCHAIN=local
    local out
    if ! "$CONSUL_TEMPLATE" -version 2>&1 | grep -q "consul-template $CONSUL_TEMPLATE_VERSION "; then
        log "go install consul-template@$CONSUL_TEMPLATE_VERSION"
        if ! out="$(go install "github.com/hashicorp/consul-template@$CONSUL_TEMPLATE_VERSION" 2>&1)"; then
            GO_PROBLEM="go install consul-template@$CONSUL_TEMPLATE_VERSION failed: $(tail -5 <<<"$out")"
            rm -f "$CONSUL_TEMPLATE" # never test another version than the pinned one
        fi
    fi
    log "building go/ (hashicorp/consul/api)"
    if ! out="$(cd "$HERE/go" && go build -o "$CONSULAPI" . 2>&1)"; then
        GO_PROBLEM="${GO_PROBLEM:+$GO_PROBLEM; }go build in tests/interop/go failed: $out"
    fi
}

build() {
    log "building trellis"
    (cd "$ROOT" && cargo build --locked -q)
}

# start_agent VAR LOG NETNS ARGS...: starts trellis (in NETNS unless it is
# empty), waits for its
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

    run_py dnspython dnspy.py "$h" "$p" dig
}

# run_py LABEL SCRIPT ARGS...: runs a Python part with the venv, counting its
# `PASS name` / `FAIL name: why` lines.
run_py() {
    local label="$1" script="$2" out rc=0 line
    shift 2
    out="$("$VENV/bin/python" "$HERE/$script" "$@" 2>&1)" || rc=$?
    count_lines "$label" "$out"
    if [ "$rc" != 0 ]; then fail "$label: $script exited $rc" "$(tail -20 <<<"$out")"; fi
}

# count_lines LABEL OUTPUT: a PASS or FAIL for each `PASS name` / `FAIL
# name: why` line of OUTPUT; `INFO …` lines (measurements) are printed.
count_lines() {
    local label="$1" line
    while IFS= read -r line; do
        case "$line" in
            PASS\ *) pass "$label: ${line#PASS }" ;;
            FAIL\ *) fail "$label: ${line#FAIL }" ;;
            INFO\ *) printf 'INFO %s: %s\n' "$label" "${line#INFO }" ;;
        esac
    done <<<"$2"
}

# ---------------------------------------------------------------- part 2: py-consul

part_pyconsul() {
    log "part 2: py-consul"
    dev_agent PYC 127.0.0.3 || return 0
    run_py py-consul pyconsul.py "${PYC_HTTP%:*}" "${PYC_HTTP##*:}"
    run_py py-consul-kv pykv.py "${PYC_HTTP%:*}" "${PYC_HTTP##*:}"
}

# ---------------------------------------------------------------- namespaces

# make_ns NAME: a network namespace with loopback up and its own resolv.conf
# (ip netns exec bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf).
make_ns() {
    ip netns add "$1"
    ip -n "$1" link set lo up
    mkdir -p "/etc/netns/$1"
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:2\n' >"/etc/netns/$1/resolv.conf"
}

# ns_agent VAR NETNS IP DNSPORT ARGS...: a dev agent inside NETNS.
ns_agent() {
    local var="$1" netns="$2" ip="$3" dport="$4"
    shift 4
    start_agent "$var" "$WORK/$var.log" "$netns" --dev --node "${var,,}" --bind "$ip" --client "$ip" \
        --dns-port "$dport" --http-port 0 --server-port 0 --serf-lan-port 0 --serf-wan-port 0 "$@"
}

# ns_put NETNS HTTP PATH JSON
ns_put() {
    ip netns exec "$1" curl -fsS -X PUT --data "$4" "http://$2$3"
}

# A static zone for the upstream resolver: names outside .consul.
write_zone() {
    mkdir -p "$WORK/zones"
    cat >"$WORK/zones/interop.test.zone" <<'ZONE'
$TTL 60
@       IN  SOA  ns1 hostmaster ( 1 3600 600 86400 60 )
        IN  NS   ns1
ns1     IN  A    127.0.0.2
www     IN  A    192.0.2.80
ZONE
}

# mariadb_start N: MariaDB server N on 127.0.0.1N:3306 inside $NS, server_id N.
mariadb_start() {
    local n="$1" dir="$WORK/db$1"
    if [ ! -d "$dir/mysql" ]; then
        mariadb-install-db --no-defaults --datadir="$dir" --user=root \
            --auth-root-authentication-method=normal --skip-test-db >"$WORK/db$n-install.log" 2>&1
    fi
    ip netns exec "$NS" mariadbd --no-defaults --datadir="$dir" --user=root \
        --bind-address="127.0.0.1$n" --port=3306 --socket="$WORK/db$n.sock" \
        --pid-file="$WORK/db$n.pid" --server-id="$n" --skip-grant-tables --skip-name-resolve \
        --innodb-buffer-pool-size=16M --skip-log-bin --log-error="$WORK/db$n.err" \
        >>"$WORK/db$n.stderr" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    printf -v "DB${n}_PID" '%s' "$pid"
    wait_for 60 ip netns exec "$NS" mariadb --no-defaults -h "127.0.0.1$n" -P 3306 -u root -N -B -e 'select 1'
}

mariadb_stop() {
    local var="DB${1}_PID"
    kill "${!var}"
    wait "${!var}" 2>/dev/null || true
}

# by_name: which server a new connection by hostname reaches (its server_id).
by_name() {
    ip netns exec "$NS" mariadb --no-defaults -h mysql.service.consul -P 3306 -u root \
        --connect-timeout=2 -N -B -e 'select @@server_id' 2>&1
}

# all_reach N COUNT: COUNT consecutive connections by hostname all reach server N.
all_reach() {
    local i
    for i in $(seq 1 "$2"); do
        [ "$(by_name)" = "$1" ] || return 1
    done
}

# ---------------------------------------------------------------- parts 3 and 4: glibc and MariaDB in a namespace

part_netns() {
    log "part 4: the system resolver (glibc) in a namespace, trellis on port 53"
    make_ns "$NS"
    write_zone
    ns_agent UP4 "$NS" 127.0.0.2 53 --zone-dir "$WORK/zones" || return 0
    ns_agent NS4 "$NS" 127.0.0.1 53 --recursor 127.0.0.2:53 || return 0

    local out
    if ! mariadb_start 1 || ! mariadb_start 2; then
        fail "MariaDB servers started" "$(cat "$WORK"/db*.err 2>/dev/null | tail -20)"
        return 0
    fi
    local n
    for n in 1 2; do
        ns_put "$NS" "$NS4_HTTP" /v1/agent/service/register \
            "{\"ID\":\"mysql$n\",\"Name\":\"mysql\",\"Address\":\"127.0.0.1$n\",\"Port\":3306,
              \"Check\":{\"TCP\":\"127.0.0.1$n:3306\",\"Interval\":\"1s\",\"Timeout\":\"1s\"}}" >/dev/null
    done
    both_listed() {
        local a
        a="$(ip netns exec "$NS" getent ahosts mysql.service.consul)" &&
            grep -q '127\.0\.0\.11' <<<"$a" && grep -q '127\.0\.0\.12' <<<"$a"
    }
    wait_for 10 both_listed || true

    out="$(ip netns exec "$NS" getent hosts mysql.service.consul 2>&1)" || true
    check "getent hosts mysql.service.consul" "$out" '^127\.0\.0\.1[12][[:space:]]+mysql\.service\.consul'
    out="$(ip netns exec "$NS" getent ahosts mysql.service.consul 2>&1)" || true
    check "getent ahosts lists server 1" "$out" '^127\.0\.0\.11[[:space:]]+STREAM'
    check "getent ahosts lists server 2" "$out" '^127\.0\.0\.12[[:space:]]+STREAM'
    out="$(ip netns exec "$NS" getent hosts ns4.node.consul 2>&1)" || true
    check "getent hosts ns4.node.consul" "$out" '^127\.0\.0\.1[[:space:]]'
    out="$(ip netns exec "$NS" getent hosts www.interop.test 2>&1)" || true
    check "getent hosts www.interop.test through the recursor" "$out" '^192\.0\.2\.80[[:space:]]+www\.interop\.test'
    if ip netns exec "$NS" getent hosts nosuch.service.consul >/dev/null 2>&1; then
        fail "getent hosts nosuch.service.consul fails"
    else
        pass "getent hosts nosuch.service.consul fails"
    fi

    log "part 3: MariaDB by hostname follows the healthy server"
    local seen1=0 seen2=0 i
    for i in $(seq 1 30); do
        case "$(by_name)" in 1) seen1=1 ;; 2) seen2=1 ;; esac
        [ "$seen1$seen2" = 11 ] && break
    done
    check "connections by hostname reach both servers" "$seen1$seen2" '^11$'

    mariadb_stop 2
    local t0=$SECONDS
    # Check interval 1s plus a margin of 4s: by then ten connections in a row
    # all reach the survivor...
    if wait_for 5 all_reach 1 10; then
        pass "within interval+margin every connection reaches server 1 ($((SECONDS - t0))s)"
    else
        fail "within interval+margin every connection reaches server 1" "$(by_name)"
    fi
    # The client alone may fall back to the next address; the answers must
    # also have dropped the dead server.
    only_1() {
        local a
        a="$(ip netns exec "$NS" getent ahosts mysql.service.consul)" &&
            grep -q '127\.0\.0\.11' <<<"$a" && ! grep -q '127\.0\.0\.12' <<<"$a"
    }
    if wait_for 5 only_1; then
        pass "the stopped server leaves the DNS answers within interval+margin ($((SECONDS - t0))s)"
    else
        fail "the stopped server leaves the DNS answers" "$(ip netns exec "$NS" getent ahosts mysql.service.consul)"
    fi
    # ...and none fails afterwards.
    local bad=0 got
    for i in $(seq 1 30); do
        got="$(by_name)"
        [ "$got" = 1 ] || { bad=$((bad + 1)); printf '    | attempt %s: %s\n' "$i" "$got"; }
    done
    check "30 further connections all reach server 1 ($bad failed)" "$bad" '^0$'

    mariadb_start 2 || fail "MariaDB server 2 restarted" "$(tail -20 "$WORK/db2.err")"
    reaches_2() {
        local i
        for i in 1 2 3 4 5 6 7 8 9 10; do [ "$(by_name)" = 2 ] && return 0; done
        return 1
    }
    if wait_for 15 reaches_2; then
        pass "restarted server 2 returns to the answers"
    else
        fail "restarted server 2 returns to the answers" "$(ip netns exec "$NS" getent ahosts mysql.service.consul)"
    fi
}

# ---------------------------------------------------------------- part 5: dnsmasq forwarding .consul

part_dnsmasq() {
    log "part 5: dnsmasq on port 53 forwarding consul to trellis"
    make_ns "$NS2"
    write_zone
    ns_agent UP5 "$NS2" 127.0.0.2 53 --zone-dir "$WORK/zones" || return 0
    ns_agent DM5 "$NS2" 127.0.0.3 8600 || return 0
    ip netns exec "$NS2" dnsmasq -k --conf-file=/dev/null --user=root --listen-address=127.0.0.1 \
        --bind-interfaces --port=53 --no-resolv --no-hosts --cache-size=0 \
        --server=/consul/127.0.0.3#8600 --server=127.0.0.2#53 --pid-file="$WORK/dnsmasq.pid" \
        >"$WORK/dnsmasq.log" 2>&1 &
    PIDS+=("$!")
    ns_put "$NS2" "$DM5_HTTP" /v1/agent/service/register \
        '{"ID":"web1","Name":"web","Address":"127.0.0.21","Port":80}' >/dev/null
    local out
    wait_for 10 ip netns exec "$NS2" getent hosts web.service.consul || true
    out="$(ip netns exec "$NS2" getent hosts web.service.consul 2>&1)" || true
    check "dnsmasq: getent hosts web.service.consul" "$out" '^127\.0\.0\.21[[:space:]]+web\.service\.consul'
    out="$(ip netns exec "$NS2" getent ahosts web.service.consul 2>&1)" || true
    check "dnsmasq: getent ahosts web.service.consul" "$out" '^127\.0\.0\.21[[:space:]]+STREAM'
    out="$(ip netns exec "$NS2" getent hosts dm5.node.consul 2>&1)" || true
    check "dnsmasq: getent hosts dm5.node.consul" "$out" '^127\.0\.0\.3[[:space:]]'
    out="$(ip netns exec "$NS2" getent hosts www.interop.test 2>&1)" || true
    check "dnsmasq: getent hosts www.interop.test from the other upstream" "$out" '^192\.0\.2\.80[[:space:]]'
    out="$(ip netns exec "$NS2" dig +short @127.0.0.1 _web._tcp.service.consul SRV 2>&1)" || true
    check "dnsmasq: SRV passes through" "$out" '^1 1 80 '
}

# ---------------------------------------------------------------- part 6: Prometheus consul_sd_configs

free_port() {
    "$VENV/bin/python" -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"
}

# prom_targets: one line per active target: `instance team color tags health`.
prom_targets() {
    curl -fsS "http://$PROM/api/v1/targets?state=active" | "$VENV/bin/python" -c '
import json, sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    l, d = t["labels"], t["discoveredLabels"]
    print(l.get("instance"), l.get("team", "-"), l.get("color", "-"),
          d.get("__meta_consul_tags"), d.get("__meta_consul_health"))
'
}

prom_has() { prom_targets | grep -Eq -- "$1"; }
prom_lacks() { local t; t="$(prom_targets)" && ! grep -Eq -- "$1" <<<"$t"; }

part_prometheus() {
    log "part 6: Prometheus consul_sd_configs against trellis"
    dev_agent PROM6 127.0.0.4 || return 0
    local port
    port="$(free_port 127.0.0.4)"
    PROM="127.0.0.4:$port"
    mkdir -p "$WORK/prom"
    cat >"$WORK/prometheus.yml" <<YAML
global:
  scrape_interval: 1m
scrape_configs:
  - job_name: consul
    consul_sd_configs:
      - server: $PROM6_HTTP
        services: [api]
    relabel_configs:
      - source_labels: [__meta_consul_health]
        regex: passing
        action: keep
      - source_labels: [__meta_consul_tags]
        regex: '.*,blue,.*'
        target_label: color
        replacement: blue
      - source_labels: [__meta_consul_service_metadata_team]
        target_label: team
YAML
    # Debian's build of Prometheus leaves Consul SD out ("Disable Consul SD
    # until its Debian package is back in shape"); PROMETHEUS may name an
    # upstream build that has it.
    local prom="${PROMETHEUS:-prometheus}" why
    if ! why="$("$(dirname "$(command -v "$prom")")/promtool" check config "$WORK/prometheus.yml" 2>&1)"; then
        if grep -q 'field consul_sd_configs not found' <<<"$why"; then
            SKIPPED+=("Prometheus: $("$prom" --version 2>&1 | head -1) is built without consul_sd_configs")
            printf 'SKIP %s\n' "${SKIPPED[-1]}"
            # Still hold trellis to the requests Prometheus's Consul SD sends.
            run_py prometheus-sd-wire promsd_wire.py "$PROM6_HTTP"
        else
            fail "promtool accepts the configuration" "$why"
        fi
        return 0
    fi
    "$prom" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
        --web.listen-address="$PROM" >"$WORK/prometheus.log" 2>&1 &
    local ppid=$!
    PIDS+=("$ppid")
    # Ready, or dead: either ends the wait.
    prom_ready() { ! kill -0 "$ppid" 2>/dev/null || curl -fsS "http://$PROM/-/ready"; }
    wait_for 60 prom_ready || true
    if ! curl -fsS "http://$PROM/-/ready" >/dev/null 2>&1; then
        fail "Prometheus ready" "$(tail -20 "$WORK/prometheus.log")"
        return 0
    fi
    local n
    for n in 1 2; do
        put "$PROM6_HTTP" /v1/agent/service/register \
            "{\"ID\":\"api$n\",\"Name\":\"api\",\"Address\":\"127.0.0.4$n\",\"Port\":9100,
              \"Tags\":[\"blue\",\"v$n\"],\"Meta\":{\"team\":\"core$n\"},
              \"Check\":{\"CheckID\":\"ttl$n\",\"TTL\":\"60s\"}}" >/dev/null
        put "$PROM6_HTTP" "/v1/agent/check/pass/ttl$n" '' >/dev/null
    done
    # Critical from the start, so never a target.
    put "$PROM6_HTTP" /v1/agent/service/register \
        '{"ID":"api3","Name":"api","Address":"127.0.0.43","Port":9100,"Check":{"TTL":"60s"}}' >/dev/null

    if wait_for 30 prom_has '^127\.0\.0\.42:9100 core2 blue ,blue,v2, passing$'; then
        pass "registered targets appear"
    else
        fail "registered targets appear" "$(prom_targets; tail -5 "$WORK/prometheus.log")"
    fi
    local out
    out="$(prom_targets)"
    check "target api1 with tag and meta labels" "$out" '^127\.0\.0\.41:9100 core1 blue ,blue,v1, passing$'
    check "target api2 with tag and meta labels" "$out" '^127\.0\.0\.42:9100 core2 blue ,blue,v2, passing$'
    if grep -q '127\.0\.0\.43' <<<"$out"; then fail "critical api3 is not a target" "$out"; else pass "critical api3 is not a target"; fi

    curl -fsS -X PUT "http://$PROM6_HTTP/v1/agent/service/deregister/api2" >/dev/null
    if wait_for 30 prom_lacks '127\.0\.0\.42'; then
        pass "deregistered target disappears"
    else
        fail "deregistered target disappears" "$(prom_targets)"
    fi
    put "$PROM6_HTTP" /v1/agent/check/fail/ttl1 '' >/dev/null
    if wait_for 30 prom_lacks '127\.0\.0\.41'; then
        pass "target whose check turns critical disappears"
    else
        fail "target whose check turns critical disappears" "$(prom_targets)"
    fi
    put "$PROM6_HTTP" /v1/agent/check/pass/ttl1 '' >/dev/null
    if wait_for 30 prom_has '^127\.0\.0\.41:9100 '; then
        pass "target passing again comes back"
    else
        fail "target passing again comes back" "$(prom_targets)"
    fi
    if grep -Ei 'level=(error|warn).*consul' "$WORK/prometheus.log" >/dev/null; then
        fail "Prometheus logged no consul SD errors" "$(grep -Ei 'level=(error|warn).*consul' "$WORK/prometheus.log" | head)"
    else
        pass "Prometheus logged no consul SD errors"
    fi
}

# ---------------------------------------------------------------- part 7: hashicorp/consul/api

part_consulapi() {
    log "part 7: hashicorp/consul/api Lock, Semaphore, blocking queries, txn (go/)"
    if [ ! -x "$CONSULAPI" ]; then
        fail "the Go program in tests/interop/go is built" "$GO_PROBLEM"
        return 0
    fi
    dev_agent API7 127.0.0.5 || return 0
    local out rc=0 cross=()
    # `trellis lock` against the api's Lock and Semaphore on one prefix;
    # part 9 reports a missing `trellis lock`.
    "$TRELLIS" lock --help >/dev/null 2>&1 && cross=(-trellis "$TRELLIS")
    out="$("$CONSULAPI" -addr "$API7_HTTP" -timeout 150s "${cross[@]}" 2>&1)" || rc=$?
    count_lines consul-api "$out"
    if [ "$rc" != 0 ]; then fail "consul-api: the program exited $rc" "$(grep -v '^PASS ' <<<"$out" | tail -20)"; fi
}

# ---------------------------------------------------------------- part 8: consul-template

# seconds_since T0: seconds from EPOCHREALTIME T0 until now, to 0.01s.
seconds_since() {
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

part_consul_template() {
    log "part 8: consul-template $CONSUL_TEMPLATE_VERSION renders from trellis and re-renders on changes"
    if [ ! -x "$CONSUL_TEMPLATE" ]; then
        fail "consul-template $CONSUL_TEMPLATE_VERSION is built" "$GO_PROBLEM"
        return 0
    fi
    dev_agent CT8 127.0.0.6 || return 0
    put "$CT8_HTTP" /v1/kv/app/config 'color=blue' >/dev/null
    put "$CT8_HTTP" /v1/agent/service/register '{"ID":"web1","Name":"web","Address":"127.0.0.61","Port":8081}' >/dev/null
    printf '%s\n' 'config: {{ key "app/config" }}' '{{ range service "web" }}web {{ .Address }}:{{ .Port }}' '{{ end }}' \
        >"$WORK/ct.tpl"
    local outf="$WORK/ct.out"
    # Without -kill-signal it stops only on SIGINT and ignores the cleanup's SIGTERM.
    "$CONSUL_TEMPLATE" -consul-addr "$CT8_HTTP" -template "$WORK/ct.tpl:$outf" -log-level info -kill-signal SIGTERM \
        >"$WORK/ct.log" 2>&1 &
    PIDS+=("$!")
    local want1 want2 want3
    want1="$(printf 'config: color=blue\nweb 127.0.0.61:8081\n')"
    rendered() { [ "$(cat "$outf" 2>/dev/null)" = "$1" ]; }
    if wait_for 20 rendered "$want1"; then
        pass "consul-template: first render has the key and the service"
    else
        fail "consul-template: first render has the key and the service" "$(cat "$outf" 2>&1; tail -20 "$WORK/ct.log")"
        return 0
    fi
    local t0
    want2="$(printf 'config: color=green\nweb 127.0.0.61:8081\n')"
    t0="$EPOCHREALTIME"
    put "$CT8_HTTP" /v1/kv/app/config 'color=green' >/dev/null
    if wait_for 5 rendered "$want2"; then
        pass "consul-template: re-renders when the key changes ($(seconds_since "$t0")s)"
    else
        fail "consul-template: re-renders when the key changes" "$(cat "$outf"; tail -20 "$WORK/ct.log")"
    fi
    want3="$(printf 'config: color=green\nweb 127.0.0.61:8081\nweb 127.0.0.62:8082\n')"
    t0="$EPOCHREALTIME"
    put "$CT8_HTTP" /v1/agent/service/register '{"ID":"web2","Name":"web","Address":"127.0.0.62","Port":8082}' >/dev/null
    if wait_for 5 rendered "$want3"; then
        pass "consul-template: re-renders when a web instance registers ($(seconds_since "$t0")s)"
    else
        fail "consul-template: re-renders when a web instance registers" "$(cat "$outf"; tail -20 "$WORK/ct.log")"
    fi
    t0="$EPOCHREALTIME"
    curl -fsS -X DELETE "http://$CT8_HTTP/v1/kv/app/config" >/dev/null
    curl -fsS -X PUT "http://$CT8_HTTP/v1/agent/service/deregister/web1" >/dev/null
    # A missing key blocks rendering in consul-template; its last output stays.
    put "$CT8_HTTP" /v1/kv/app/config 'color=red' >/dev/null
    if wait_for 5 rendered "$(printf 'config: color=red\nweb 127.0.0.62:8082\n')"; then
        pass "consul-template: follows a delete, a re-create and a deregistration ($(seconds_since "$t0")s)"
    else
        fail "consul-template: follows a delete, a re-create and a deregistration" "$(cat "$outf"; tail -20 "$WORK/ct.log")"
    fi
    if grep -Ei '\[(err|error|warn)\]' "$WORK/ct.log" >/dev/null; then
        fail "consul-template logged no errors or warnings" "$(grep -Ei '\[(err|error|warn)\]' "$WORK/ct.log" | head)"
    else
        pass "consul-template logged no errors or warnings"
    fi
}

# ---------------------------------------------------------------- part 10: ACL tokens from py-consul and the api

part_acl() {
    log "part 10: ACLs (default deny): py-consul bootstraps and uses tokens, DNS as anonymous, the api's tokens (go/)"
    printf '{"acl": {"enabled": true, "default_policy": "deny"}}\n' >"$WORK/acl.json"
    dev_agent ACL10 127.0.0.12 --config-file "$WORK/acl.json" || return 0
    local out rc=0 token
    out="$("$VENV/bin/python" "$HERE/pyacl.py" "${ACL10_HTTP%:*}" "${ACL10_HTTP##*:}" "${ACL10_DNS##*:}" 2>&1)" || rc=$?
    count_lines py-consul-acl "$out"
    if [ "$rc" != 0 ]; then fail "py-consul-acl: pyacl.py exited $rc" "$(tail -20 <<<"$out")"; fi
    token="$(sed -n 's/^INFO management-token //p' <<<"$out" | head -1)"
    if [ ! -x "$CONSULAPI" ]; then
        fail "the Go program in tests/interop/go is built" "$GO_PROBLEM"
        return 0
    fi
    if [ -z "$token" ]; then
        fail "consul-api-acl: py-consul's bootstrap gave a management token" "$out"
        return 0
    fi
    rc=0
    out="$("$CONSULAPI" -addr "$ACL10_HTTP" -timeout 60s -acl-token "$token" 2>&1)" || rc=$?
    count_lines consul-api-acl "$out"
    if [ "$rc" != 0 ]; then fail "consul-api-acl: the program exited $rc" "$(grep -v '^PASS ' <<<"$out" | tail -20)"; fi
}

# ---------------------------------------------------------------- part 11: two datacenters through hashicorp/consul/api

part_federation() {
    log "part 11: two datacenters joined by one trellis join -wan; the api across them (go/)"
    if [ ! -x "$CONSULAPI" ]; then
        fail "the Go program in tests/interop/go is built" "$GO_PROBLEM"
        return 0
    fi
    dev_agent DC1 127.0.0.13 --datacenter dc1 || return 0
    dev_agent DC2 127.0.0.14 --datacenter dc2 || return 0
    local wan out rc=0
    wan="$(grep -o 'serf_wan=[^ ]*' "$WORK/DC2.log" | head -1)"
    wan="${wan#serf_wan=}"
    if out="$("$TRELLIS" join -wan -http-addr "$DC1_HTTP" "$wan" 2>&1)"; then
        pass "trellis join -wan federates dc1 with dc2"
    else
        fail "trellis join -wan federates dc1 with dc2" "$out"
        return 0
    fi
    out="$("$CONSULAPI" -addr "$DC1_HTTP" -dc2-addr "$DC2_HTTP" -timeout 90s 2>&1)" || rc=$?
    count_lines consul-api-federation "$out"
    if [ "$rc" != 0 ]; then fail "consul-api-federation: the program exited $rc" "$(grep -v '^PASS ' <<<"$out" | tail -20)"; fi
    local answer
    answer="$(dig +short @"${DC1_DNS%:*}" -p "${DC1_DNS##*:}" web.service.dc2.consul A)"
    if [ "$answer" = "127.0.0.141" ]; then
        pass "dig web.service.dc2.consul asked of dc1 answers dc2's instance"
    else
        fail "dig web.service.dc2.consul asked of dc1 answers dc2's instance" "got: $answer"
    fi
}

# ---------------------------------------------------------------- part 9: leader election with trellis lock

# health_passing HTTP NODE: NODE's serfHealth check is passing.
health_passing() {
    curl -fsS "http://$1/v1/health/node/$2" | "$VENV/bin/python" -c '
import json, sys
sys.exit(0 if any(c["CheckID"] == "serfHealth" and c["Status"] == "passing" for c in json.load(sys.stdin)) else 1)'
}

# has_session HTTP NODE: NODE has at least one session.
has_session() {
    curl -fsS "http://$1/v1/session/node/$2" | "$VENV/bin/python" -c '
import json, sys
sys.exit(0 if json.load(sys.stdin) else 1)'
}

part_lock() {
    log "part 9: leader election with trellis lock across a hard kill of the holder's agent"
    if ! "$TRELLIS" lock --help >/dev/null 2>&1; then
        fail "trellis lock exists" "$("$TRELLIS" lock --help 2>&1 | head -5)"
        return 0
    fi
    local ports=(--dns-port 0 --http-port 0 --server-port 0 --serf-lan-port 0 --serf-wan-port 0)
    start_agent LS9 "$WORK/LS9.log" "" --server --bootstrap-expect 1 --node ls9 --data-dir "$WORK/ls9" \
        --bind 127.0.0.7 --client 127.0.0.7 "${ports[@]}" || return 0
    local serf
    serf="$(grep -o 'serf_lan=[^ ]*' "$WORK/LS9.log" | head -1)"
    serf="${serf#serf_lan=}"
    start_agent LA9 "$WORK/LA9.log" "" --node la9 --data-dir "$WORK/la9" --bind 127.0.0.8 --client 127.0.0.8 \
        "${ports[@]}" --retry-join "$serf" || return 0
    start_agent LB9 "$WORK/LB9.log" "" --node lb9 --data-dir "$WORK/lb9" --bind 127.0.0.9 --client 127.0.0.9 \
        "${ports[@]}" --retry-join "$serf" || return 0
    if wait_for 30 health_passing "$LS9_HTTP" la9 && wait_for 30 health_passing "$LS9_HTTP" lb9; then
        pass "lock: both client agents joined with serfHealth passing"
    else
        fail "lock: both client agents joined with serfHealth passing" "$(curl -sS "http://$LS9_HTTP/v1/health/state/any")"
        return 0
    fi

    # The command the lock runs: a start line with the time and
    # CONSUL_LOCK_HELD, a stop line when it is told to stop.
    local llog="$WORK/leader.log"
    : >"$llog"
    cat >"$WORK/leader.sh" <<SH
#!/bin/sh
echo \$\$ >>"$WORK/leader.pids"
printf 'start %s %s %s\n' "\$1" "\$(date +%s.%N)" "\${CONSUL_LOCK_HELD:-unset}" >>"$llog"
trap 'printf "stop %s %s\n" "\$1" "\$(date +%s.%N)" >>"$llog"; exit 0' TERM INT
while :; do sleep 0.1; done
SH
    chmod +x "$WORK/leader.sh"

    "$TRELLIS" lock --http-addr "$LA9_HTTP" app/leader "$WORK/leader.sh" a >"$WORK/lock-a.log" 2>&1 &
    local lock_a=$!
    PIDS+=("$lock_a")
    if wait_for 20 grep -q '^start a ' "$llog"; then
        pass "lock: the first contender runs its command"
    else
        fail "lock: the first contender runs its command" "$(cat "$llog" "$WORK/lock-a.log")"
        return 0
    fi
    check "lock: the command sees CONSUL_LOCK_HELD=true" "$(grep '^start a ' "$llog")" ' true$'
    "$TRELLIS" lock --http-addr "$LB9_HTTP" app/leader "$WORK/leader.sh" b >"$WORK/lock-b.log" 2>&1 &
    local lock_b=$!
    PIDS+=("$lock_b")
    # The second contender is waiting once its session exists.
    if wait_for 20 has_session "$LS9_HTTP" lb9; then
        pass "lock: the second contender made its session and waits"
    else
        fail "lock: the second contender made its session and waits" "$(cat "$WORK/lock-b.log")"
    fi
    if grep -q '^start b ' "$llog"; then fail "lock: only one contender runs its command" "$(cat "$llog")"; else
        pass "lock: only one contender runs its command"
    fi

    local t_kill="$EPOCHREALTIME"
    kill -9 "$LA9_PID"
    wait "$LA9_PID" 2>/dev/null || true # reaped here, so bash prints no "Killed" line
    # TTL 15s ×2 plus lock-delay 15s bound the takeover.
    if wait_for 60 grep -q '^start b ' "$llog"; then
        local took
        took="$(awk -v k="$t_kill" '$1 == "start" && $2 == "b" { printf "%.1f", $3 - k; exit }' "$llog")"
        local name="lock: the other contender runs its command ${took}s after the holder's agent was killed (≤ 45s)"
        if awk -v t="$took" 'BEGIN { exit !(t <= 45) }'; then pass "$name"; else fail "$name" "$(cat "$llog")"; fi
    else
        fail "lock: the other contender runs its command after the holder's agent was killed" \
            "$(cat "$llog" "$WORK/lock-b.log")"
    fi
    # The orphaned holder stops its command when it learns it lost the lock
    # (its agent is gone).
    if wait_for 30 grep -q '^stop a ' "$llog"; then
        pass "lock: the holder whose agent died stops its command ($(awk -v k="$t_kill" \
            '$1 == "stop" && $2 == "a" { printf "%.1f", $3 - k; exit }' "$llog")s after the kill)"
    else
        fail "lock: the holder whose agent died stops its command" "$(cat "$llog" "$WORK/lock-a.log")"
    fi
    kill -TERM "$lock_b" 2>/dev/null || true
    wait_for 15 grep -q '^stop b ' "$llog" || true
    # Never two at once: every start comes after the previous holder's stop.
    local overlap
    overlap="$(awk '
        $1 == "start" { if (running != "") { print "start " $2 " at " $3 " while " running " runs" } running = $2 }
        $1 == "stop" { if (running != $2) { print "stop " $2 " while " running " runs" } running = "" }
    ' "$llog")"
    if [ -z "$overlap" ] && [ "$(grep -c '^start ' "$llog")" = 2 ]; then
        pass "lock: the commands' intervals never overlap"
    else
        fail "lock: the commands' intervals never overlap" "$overlap"$'\n'"$(cat "$llog")"
    fi
    printf 'INFO leader log:\n%s\n' "$(sed 's/^/    /' "$llog")"
}

main() {
    if [ "$(id -u)" != 0 ]; then
        fail "the interop suite runs as root (apt-get, ip netns, port 53)"
        printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
        return 1
    fi
    install_tools
    install_go_tools
    build
    # Called in a condition, a part keeps going past a failed command; its
    # checks then report what went wrong.
    # INTEROP_PARTS (space-separated function names) runs a subset.
    local part parts
    read -r -a parts <<<"${INTEROP_PARTS:-part_dig part_pyconsul part_netns part_dnsmasq part_prometheus \
        part_consulapi part_consul_template part_lock part_acl part_federation}"
    for part in "${parts[@]}"; do
        "$part" || fail "$part ended early (status $?)"
    done
    local s
    for s in "${SKIPPED[@]}"; do printf 'skipped: %s\n' "$s"; done
    printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
    [ "$FAILED" = 0 ]
}

main "$@"
