#!/usr/bin/env python3
"""Writes link/text-order.txt, the order in which the linker lays out the
release binary's functions (build.rs hands it to lld as
--symbol-ordering-file).

The kernel maps a binary's text in windows of 64 KiB around each page an
agent touches. Left in the compiler's order, the code an agent runs as it
starts and idles is spread over the whole of .text, and an idle agent kept
8.4 MB of its 9.7 MB resident. Laid out together, first, it keeps 2.7-3.1
MB (benches/README.md, scale). A client agent, whose own code a dev agent
never runs, kept 2.7 MB (2,712-2,720 KiB in /proc) more resident than it
needed until the file listed what it runs too.

The file lists the functions a release agent runs under callgrind, in
four groups:
1. what both a `trellis agent --dev` and a client agent joined to a dev
   server run as they start and idle for ten seconds (two runs of each:
   some of what they run depends on timing);
2. what only the dev agent runs then (Raft, redb);
3. what only the client agent runs then (its link to the servers);
4. what each adds when it answers a few HTTP and DNS requests (a service
   registered, a KV write and read, A, SRV and NXDOMAIN over UDP and TCP).
So each kind of idle agent maps the code it runs and little else. Each
function comes with its variants for other CPU features, which callgrind
does not run.

Symbols are mangled with a hash of their crate's build: its features, its
dependencies' and the compiler's version. `cargo build --release` and
`cargo bench` build the binary with different features (the dev-dependencies
add tokio's `test-util`, among others), so most of its functions have a name
in each, and the file lists both builds' names, phase by phase; each build
finds its own. A stale file orders less, never wrongly: what it does not
name keeps the compiler's order, after what it does. `cargo bench --bench
scale -- --only idle` prints how many of the bench build's names the
benchmarked binary has. Regenerate the file after a toolchain or
dependency update, or when that count falls:

    scripts/text_order.py      # builds both, then runs each under callgrind
    cargo build --release --bin trellis

It takes about twenty minutes (two release builds) and needs valgrind and nm.

Usage: scripts/text_order.py [--out PATH]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

# The profiled agent: the dev agent, or the client agent (whose server, a
# dev agent not profiled, is on SERVER_ADDR).
ADDR = "127.0.3.62"
SERVER_ADDR = "127.0.3.63"
SERVER_SERF_PORT = 18363
HTTP_PORT = 18562
DNS_PORT = 18662
IDLE_SECONDS = 10


def http(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{ADDR}:{HTTP_PORT}{path}", data=data, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def dns_query(name, qtype, tcp):
    """Sends one query and returns the response's RCODE."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    msg = struct.pack(">HHHHHH", 0x7472, 0x0100, 1, 0, 0, 0) + labels + struct.pack(">HH", qtype, 1)
    if tcp:
        with socket.create_connection((ADDR, DNS_PORT), timeout=30) as s:
            s.sendall(struct.pack(">H", len(msg)) + msg)
            (n,) = struct.unpack(">H", recv_exact(s, 2))
            resp = recv_exact(s, n)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(30)
            s.sendto(msg, (ADDR, DNS_PORT))
            resp = s.recv(4096)
    return resp[3] & 0x0F


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("DNS server closed the connection")
        buf += chunk
    return buf


def wait_for_leader(agent, deadline, server=None):
    while time.time() < deadline:
        if agent.poll() is not None:
            sys.exit(f"text_order: the agent exited ({agent.returncode}) before it had a leader")
        if server is not None and server.poll() is not None:
            sys.exit(f"text_order: the client's server exited ({server.returncode})")
        try:
            if http("GET", "/v1/status/leader").strip(b'"\n'):
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("text_order: no leader within the deadline")


def exercise():
    http(
        "PUT",
        "/v1/agent/service/register",
        {"Name": "web", "Port": 80, "Tags": ["v1"], "Meta": {"a": "b"}, "Check": {"TTL": "30s"}},
    )
    http("PUT", "/v1/agent/check/pass/service:web")
    http("GET", "/v1/catalog/services")
    http("GET", "/v1/health/service/web?passing")
    http("PUT", "/v1/kv/app/config", {"k": "v"})
    http("GET", "/v1/kv/app/config")
    http("GET", "/v1/kv/app?recurse")
    for tcp in (False, True):
        for name, qtype, rcode in (
            ("web.service.consul", 1, 0),
            ("_web._tcp.service.consul", 33, 0),
            ("nothing.service.consul", 1, 3),
        ):
            got = dns_query(name, qtype, tcp)
            if got != rcode:
                raise RuntimeError(f"{name} type {qtype}: RCODE {got}, not {rcode}")


def functions_run(callgrind_out):
    """The names of the functions that ran, in the order callgrind's file
    first names them (its own order, not the order they ran in)."""
    seen, names = set(), []
    with open(callgrind_out) as f:
        for line in f:
            m = re.match(r"c?fn=\(\d+\) (.+)$", line)
            if m and m.group(1) not in seen:
                seen.add(m.group(1))
                names.append(m.group(1))
    return names


# Words that name a CPU feature in a function's name: a crate that picks an
# implementation at run time (redb's xxh3, aho-corasick's Teddy) runs one
# under callgrind, which lacks AVX-512, and another on the machine.
CPU_FEATURE = re.compile(
    r"(?<![a-z])(?:avx512[a-z]*|avx2|avx|sse4[12]|ssse3|sse2|neon)(?![a-z])"
    r"|(?:AVX512[A-Z]*|AVX2|AVX|SSE4[12]|SSSE3|SSE2|NEON)(?![A-Z])"
)


def with_cpu_variants(names, symbols):
    """`names`, each followed by the binary's other variants of it for other
    CPU features (names that differ only in such a word and in the numbers
    of their mangling)."""

    def key(n):
        return re.sub(r"\d+", "", CPU_FEATURE.sub("#", re.sub(r"17h[0-9a-f]{16}E$", "", n)))

    variants = {}
    for s in sorted(symbols):
        if CPU_FEATURE.search(s):
            variants.setdefault(key(s), []).append(s)
    out = []
    for n in names:
        out.append(n)
        if CPU_FEATURE.search(n):
            out += [v for v in variants.get(key(n), []) if v != n]
    return out


def text_symbols(binary):
    out = subprocess.run(["nm", "--defined-only", binary], check=True, capture_output=True, text=True).stdout
    return {p[2] for p in (l.split() for l in out.splitlines()) if len(p) == 3 and p[1] in "tTwW"}


def stop(process):
    """SIGTERM, then SIGKILL if it outlives two minutes."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def print_log_end(path, who):
    with open(path) as f:
        sys.stderr.write(f"text_order: the {who}'s log ends:\n" + "".join(f.readlines()[-20:]))


def profile(binary, serve, client=False):
    """The functions an agent ran under callgrind: start, then (when
    `serve`) the requests of `exercise`, then idle. With `client`, the
    agent profiled is a client agent joined to a dev server that runs
    beside it, not profiled."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        agent_log = os.path.join(tmp, "agent.log")
        server_log = os.path.join(tmp, "server.log")
        mode = ["--dev", "--server-port", "0"]
        server = None
        if client:
            with open(server_log, "w") as log:
                server = subprocess.Popen(
                    [binary, "agent", "--dev", "--node", "text-order-server"]
                    + ["--client", SERVER_ADDR, "--bind", SERVER_ADDR, "--dns-port", "0", "--http-port", "0"]
                    + ["--serf-lan-port", str(SERVER_SERF_PORT), "--serf-wan-port", "-1", "--server-port", "0"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            mode = ["--data-dir", os.path.join(tmp, "data"), "--retry-join", f"{SERVER_ADDR}:{SERVER_SERF_PORT}"]
        try:
            with open(agent_log, "w") as log:
                agent = subprocess.Popen(
                    ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}", binary]
                    + ["agent", "--node", "text-order"] + mode + ["--client", ADDR, "--bind", ADDR]
                    + ["--http-port", str(HTTP_PORT), "--dns-port", str(DNS_PORT), "--serf-lan-port", "0"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                try:
                    wait_for_leader(agent, time.time() + 120, server)
                    if serve:
                        exercise()
                    time.sleep(IDLE_SECONDS)
                except BaseException:
                    print_log_end(agent_log, "agent")
                    if server is not None:
                        print_log_end(server_log, "server")
                    raise
                finally:
                    stop(agent)
        finally:
            if server is not None:
                stop(server)
        return functions_run(out)


def build(root, cargo_args, into):
    """Builds the release binary as `cargo_args` do, and copies it to `into`
    (each build overwrites target/release/trellis)."""
    subprocess.run(["cargo"] + cargo_args, cwd=root, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    shutil.copy(os.path.join(root, target, "release/trellis"), into)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(root, "link/text-order.txt"))
    args = ap.parse_args()

    # The groups of the module's doc, each with both builds' names.
    groups, counts = [[], [], [], []], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cargo_args in (
            ("release", ["build", "--release", "--bin", "trellis"]),
            ("bench", ["bench", "--bench", "scale", "--no-run"]),
        ):
            binary = os.path.join(tmp, name)
            build(root, cargo_args, binary)
            symbols = text_symbols(binary)

            def ran(*runs):
                return with_cpu_variants([n for r in runs for n in r if n in symbols], symbols)

            # What an idle agent runs goes first, then what serving adds: an
            # idle agent's text then spans no window of serving code alone.
            # Two runs of each idle agent: some of what it runs depends on
            # timing.
            dev_idle = ran(profile(binary, serve=False), profile(binary, serve=False))
            client_idle = ran(
                profile(binary, serve=False, client=True), profile(binary, serve=False, client=True)
            )
            served = ran(profile(binary, serve=True), profile(binary, serve=True, client=True))
            in_client = set(client_idle)
            groups[0] += [n for n in dev_idle if n in in_client]
            groups[1] += [n for n in dev_idle if n not in in_client]
            groups[2] += client_idle
            groups[3] += served
            counts[name] = len(set(dev_idle) | in_client | set(served))
            print(f"text_order: the {name} build profiled")

    ordered, seen = [], set()
    for n in (n for group in groups for n in group):
        if n not in seen:
            seen.add(n)
            ordered.append(n)
    rustc = subprocess.run(["rustc", "--version"], cwd=root, capture_output=True, text=True).stdout.strip()
    with open(args.out, "w") as f:
        f.write("# The release binary's functions that an agent runs as it starts, idles\n")
        f.write("# and serves, laid out first by the linker; names of the release and the\n")
        f.write(f"# bench build. Written by scripts/text_order.py ({rustc});\n")
        f.write("# its doc says why and when to regenerate it.\n")
        for name, count in counts.items():
            f.write(f"# names of the {name} build: {count}\n")
        f.writelines(n + "\n" for n in ordered)
    print(f"text_order: {len(ordered)} names written to {args.out}")


if __name__ == "__main__":
    main()
