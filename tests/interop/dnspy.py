"""dnspython against a trellis agent's DNS: the protocol details a library checks.

Usage: dnspy.py HOST PORT NODE. Expects part 1's registrations (web: web1
10.1.0.1:8080 tag primary, web2 10.1.0.2:8081; big: 50 instances). Prints
`PASS name` / `FAIL name: why` lines; exits non-zero if any failed.
"""

import sys

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from report import finish, ok


def rrs(msg, section, rdtype):
    return [rd for rrset in getattr(msg, section) if rrset.rdtype == rdtype for rd in rrset]


def main():
    host, port, node = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    # The stub resolver API, as applications use it.
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [host]
    r.port = port
    r.lifetime = 5
    a = r.resolve("web.service.consul", "A")
    ok("resolver: web.service.consul A has both", sorted(x.address for x in a) == ["10.1.0.1", "10.1.0.2"],
       repr(list(a)))
    srv = r.resolve("_web._tcp.service.consul", "SRV")
    ok("resolver: SRV ports", sorted(x.port for x in srv) == [8080, 8081], repr(list(srv)))
    glue = rrs(srv.response, "additional", dns.rdatatype.A)
    ok("resolver: SRV carries target addresses in additional", len(glue) == 2, srv.response.to_text())
    try:
        r.resolve("nosuch.service.consul", "A")
        ok("resolver: NXDOMAIN raised", False, "answered")
    except dns.resolver.NXDOMAIN:
        ok("resolver: NXDOMAIN raised", True)
    try:
        r.resolve("web.service.consul", "AAAA")
        ok("resolver: AAAA of an IPv4-only service is NODATA", False, "answered")
    except dns.resolver.NoAnswer:
        ok("resolver: AAAA of an IPv4-only service is NODATA", True)

    # Header bits and case: a mixed-case question is echoed exactly (0x20).
    q = dns.message.make_query("WeB.SeRvIcE.CoNsUl", "A", use_edns=0, payload=1232)
    resp = dns.query.udp(q, host, port=port, timeout=3)
    ok("udp: id, QR and AA", resp.id == q.id and resp.flags & dns.flags.QR and resp.flags & dns.flags.AA,
       resp.to_text())
    ok("udp: question case preserved", resp.question[0].name.to_text() == "WeB.SeRvIcE.CoNsUl.",
       resp.question[0].name.to_text())
    ok("udp: EDNS answered with EDNS", resp.edns == 0, f"edns={resp.edns}")
    q = dns.message.make_query("web.service.consul", "A", use_edns=False)
    resp = dns.query.udp(q, host, port=port, timeout=3)
    ok("udp: no EDNS in, no OPT out", resp.edns == -1, f"edns={resp.edns}")

    # Truncation and the library's own TCP fallback.
    q = dns.message.make_query("big.service.consul", "SRV")
    resp, used_tcp = dns.query.udp_with_fallback(q, host, port=port, timeout=3)
    ok("udp_with_fallback: fell back to TCP", used_tcp, "")
    ok("udp_with_fallback: 50 SRV over TCP", len(rrs(resp, "answer", dns.rdatatype.SRV)) == 50,
       f"{len(rrs(resp, 'answer', dns.rdatatype.SRV))}")
    resp = dns.query.udp(q, host, port=port, timeout=3)
    ok("udp: TC set on the big answer", bool(resp.flags & dns.flags.TC), resp.to_text()[:400])

    # Reverse and apex.
    ptr = r.resolve_address(host)
    ok("resolver: PTR of the node", [x.target.to_text() for x in ptr] == [f"{node}.node.dc1.consul."],
       repr(list(ptr)))
    soa = r.resolve("consul", "SOA")
    ok("resolver: SOA at the apex", len(soa) == 1, repr(list(soa)))

    # Two queries on one TCP connection (pipelined clients reuse it).
    import socket

    with socket.create_connection((host, port), timeout=3) as s:
        r1 = dns.query.tcp(dns.message.make_query("web.service.consul", "A"), host, port=port, sock=s, timeout=3)
        r2 = dns.query.tcp(dns.message.make_query("consul", "NS"), host, port=port, sock=s, timeout=3)
        ok("tcp: two queries on one connection", r1.rcode() == dns.rcode.NOERROR and r2.rcode() == dns.rcode.NOERROR
           and len(r2.answer) == 1, r2.to_text())

    finish()


if __name__ == "__main__":
    main()
