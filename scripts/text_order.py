#!/usr/bin/env python3
"""Writes link/text-order.txt, the order in which the linker lays out the
release binary's functions (build.rs hands it to lld as
--symbol-ordering-file).

The kernel maps a binary's text in windows of 64 KiB around each page an
agent touches. Left in the compiler's order, the code an agent runs as it
starts and idles is spread over the whole of .text, and an idle agent kept
8.4 MB of its 9.7 MB resident. Laid out together, first, it keeps 2.7-3.1
MB (benches/README.md, scale).

The file lists the functions a release `trellis agent --dev` runs under
callgrind: first those it runs as it starts and idles for ten seconds (two
runs), then those it adds when it answers a few HTTP and DNS requests (a
service registered, a KV write and read, A, SRV and NXDOMAIN over UDP and
TCP); each with its variants for other CPU features, which callgrind does
not run.

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

It takes about ten minutes (two release builds) and needs valgrind and nm.

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

ADDR = "127.0.3.62"
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


def wait_for_leader(agent, deadline):
    while time.time() < deadline:
        if agent.poll() is not None:
            sys.exit(f"text_order: the agent exited ({agent.returncode}) before it had a leader")
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


def profile(binary, serve):
    """The functions an agent ran under callgrind: start, then (when
    `serve`) the requests of `exercise`, then idle."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        with open(os.path.join(tmp, "agent.log"), "w") as log:
            agent = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}", binary]
                + ["agent", "--dev", "--client", ADDR, "--bind", ADDR]
                + ["--http-port", str(HTTP_PORT), "--dns-port", str(DNS_PORT)]
                + ["--serf-lan-port", "0", "--server-port", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for_leader(agent, time.time() + 120)
                if serve:
                    exercise()
                time.sleep(IDLE_SECONDS)
            except BaseException:
                log.flush()
                with open(log.name) as f:
                    sys.stderr.write("text_order: the agent's log ends:\n" + "".join(f.readlines()[-20:]))
                raise
            finally:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait()
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

    idle, served, counts = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cargo_args in (
            ("release", ["build", "--release", "--bin", "trellis"]),
            ("bench", ["bench", "--bench", "scale", "--no-run"]),
        ):
            binary = os.path.join(tmp, name)
            build(root, cargo_args, binary)
            symbols = text_symbols(binary)
            # What an idle agent runs goes first, then what serving adds: an
            # idle agent's text then spans no window of serving code alone.
            # Two runs of the idle agent: some of what it runs depends on timing.
            ran = profile(binary, serve=False) + profile(binary, serve=False)
            ran = with_cpu_variants([n for n in ran if n in symbols], symbols)
            ran_serving = [n for n in profile(binary, serve=True) if n in symbols]
            ran_serving = with_cpu_variants(ran_serving, symbols)
            idle += ran
            served += ran_serving
            counts[name] = len(set(ran) | set(ran_serving))
            print(f"text_order: the {name} build profiled")

    ordered, seen = [], set()
    for n in idle + served:
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
