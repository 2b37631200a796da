"""py-consul against a trellis agent, through py-consul's own API calls.

Usage: pyconsul.py HOST PORT. Prints one `PASS name` or `FAIL name: why`
line per assertion; exits non-zero if any failed.
"""

import sys
import threading
import time

import consul

from report import finish, ok, step, until


def main():
    c = consul.Consul(host=sys.argv[1], port=int(sys.argv[2]))

    leader = step("status.leader", lambda: c.status.leader())
    ok("status.leader names a server", bool(leader), repr(leader))

    me = step("agent.self", lambda: c.agent.self())
    node = me["Config"]["NodeName"] if me else None
    ok("agent.self has Config.NodeName", bool(node), repr(me)[:300])

    r = step(
        "agent.service.register with TTL check",
        lambda: c.agent.service.register(
            "api",
            service_id="api1",
            address="127.0.0.50",
            port=9090,
            tags=["v1", "blue"],
            meta={"team": "core"},
            check=consul.Check.ttl("10s"),
        ),
    )
    ok("agent.service.register returns True", r is True, repr(r))

    svcs = step("agent.services", lambda: c.agent.services()) or {}
    a = svcs.get("api1", {})
    ok(
        "agent.services shows api1 with tags, port, meta",
        a.get("Service") == "api"
        and a.get("Port") == 9090
        and a.get("Tags") == ["v1", "blue"]
        and a.get("Meta") == {"team": "core"},
        repr(a),
    )

    checks = step("agent.checks", lambda: c.agent.checks()) or {}
    ok("agent.checks has service:api1 critical", checks.get("service:api1", {}).get("Status") == "critical", repr(checks))

    _, passing = step("health.service passing (before)", lambda: c.health.service("api", passing=True)) or (0, None)
    ok("health.service passing=True is empty before ttl_pass", passing == [], repr(passing))

    r = step("agent.check.ttl_pass", lambda: c.agent.check.ttl_pass("service:api1", notes="all good"))
    ok("agent.check.ttl_pass returns True", r is True, repr(r))

    def passing_api():
        _, nodes = c.health.service("api", passing=True)
        return nodes

    nodes = step("health.service passing (after)", lambda: until(5, passing_api)) or []
    ok("health.service passing=True lists api1 after ttl_pass", len(nodes) == 1, repr(nodes))
    if nodes:
        e = nodes[0]
        ok("health entry has Node, Service, Checks",
           e["Service"]["ID"] == "api1" and e["Node"]["Node"] == node
           and any(ch["CheckID"] == "service:api1" and ch["Status"] == "passing" and ch["Output"] == "all good"
                   for ch in e["Checks"]),
           repr(e))

    # Blocking query: index from the last read, woken by a write.
    idx, _ = c.health.service("api")
    t0 = time.monotonic()
    step("agent.check.ttl_warn", lambda: c.agent.check.ttl_warn("service:api1", notes="hmm"))
    idx2, nodes = c.health.service("api", index=idx, wait="5s")
    ok("blocking health.service returns a newer index", int(idx2) > int(idx) and time.monotonic() - t0 < 4,
       f"{idx} -> {idx2}")
    ok("ttl_warn shows as warning",
       any(ch["Status"] == "warning" for ch in nodes[0]["Checks"]) if nodes else False, repr(nodes))

    _, services = step("catalog.services", lambda: c.catalog.services()) or (0, {})
    ok("catalog.services has api with tags", sorted(services.get("api", [])) == ["blue", "v1"], repr(services))

    _, cnodes = step("catalog.nodes", lambda: c.catalog.nodes()) or (0, [])
    ok("catalog.nodes has this node", any(n["Node"] == node for n in cnodes), repr(cnodes))

    _, cs = step("catalog.service", lambda: c.catalog.service("api", tag="blue")) or (0, [])
    ok("catalog.service by tag", len(cs) == 1 and cs[0]["ServiceAddress"] == "127.0.0.50"
       and cs[0]["ServicePort"] == 9090 and cs[0]["ServiceMeta"] == {"team": "core"}, repr(cs))

    _, cn = step("catalog.node", lambda: c.catalog.node(node)) or (0, None)
    ok("catalog.node lists api1", bool(cn) and "api1" in cn.get("Services", {}), repr(cn))

    _, dcs = (0, step("catalog.datacenters", lambda: c.catalog.datacenters()))
    ok("catalog.datacenters is [dc1]", dcs == ["dc1"], repr(dcs))

    # A standalone check on the agent, by py-consul's check constructors.
    r = step("agent.check.register", lambda: c.agent.check.register(
        "disk", check=consul.Check.ttl("30s"), check_id="disk1", notes="free space"))
    ok("agent.check.register returns True", r is True, repr(r))
    step("agent.check.ttl_fail", lambda: c.agent.check.ttl_fail("disk1", notes="full"))
    _, hc = step("health.node", lambda: c.health.node(node)) or (0, [])
    ok("health.node shows disk1 critical", any(ch["CheckID"] == "disk1" and ch["Status"] == "critical" for ch in hc),
       repr(hc))
    _, st = step("health.state critical", lambda: c.health.state("critical")) or (0, [])
    ok("health.state('critical') includes disk1", any(ch["CheckID"] == "disk1" for ch in st), repr(st))
    _, hcs = step("health.checks", lambda: c.health.checks("api")) or (0, [])
    ok("health.checks('api') has service:api1", any(ch["CheckID"] == "service:api1" for ch in hcs), repr(hcs))
    r = step("agent.check.deregister", lambda: c.agent.check.deregister("disk1"))
    ok("agent.check.deregister returns True", r is True, repr(r))
    ok("disk1 gone from agent.checks", "disk1" not in (c.agent.checks() or {}), "")

    # Maintenance mode hides the service from passing health queries.
    step("agent.service.maintenance on", lambda: c.agent.service.maintenance("api1", "true", "upgrade"))
    step("agent.check.ttl_pass again", lambda: c.agent.check.ttl_pass("service:api1"))
    _, nodes = c.health.service("api", passing=True)
    ok("service maintenance hides api1 from passing", nodes == [], repr(nodes))
    step("agent.service.maintenance off", lambda: c.agent.service.maintenance("api1", "false"))
    _, nodes = c.health.service("api", passing=True)
    ok("maintenance off brings api1 back", len(nodes) == 1, repr(nodes))

    r = step("agent.service.deregister", lambda: c.agent.service.deregister("api1"))
    ok("agent.service.deregister returns True", r is True, repr(r))
    _, nodes = c.health.service("api")
    ok("health.service empty after deregister", nodes == [], repr(nodes))
    _, services = c.catalog.services()
    ok("catalog.services lost api", "api" not in services, repr(services))

    # Catalog-level register/deregister of an external node.
    r = step("catalog.register", lambda: c.catalog.register(
        "ext1", "10.9.9.9", service={"Service": "extsvc", "Port": 5432, "Tags": ["pg"]}))
    ok("catalog.register returns True", r is True, repr(r))
    _, cs = c.catalog.service("extsvc")
    ok("catalog.service extsvc on ext1", len(cs) == 1 and cs[0]["Node"] == "ext1" and cs[0]["Address"] == "10.9.9.9",
       repr(cs))
    r = step("catalog.deregister", lambda: c.catalog.deregister("ext1"))
    ok("catalog.deregister returns True", r is True, repr(r))
    _, cnodes = c.catalog.nodes()
    ok("ext1 gone from catalog.nodes", not any(n["Node"] == "ext1" for n in cnodes), repr(cnodes))

    # HTTP and TCP checks built with py-consul's Check helpers, run by the
    # agent against a server this script owns.
    import http.server
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer((sys.argv[1], 0), Ok)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    hport = srv.server_address[1]
    step("register with Check.http", lambda: c.agent.service.register(
        "web", service_id="web1", port=hport, address=sys.argv[1],
        check=consul.Check.http(f"http://{sys.argv[1]}:{hport}/", interval="1s", timeout="1s")))
    step("register with Check.tcp", lambda: c.agent.service.register(
        "tcpsvc", service_id="tcp1", port=hport, address=sys.argv[1],
        check=consul.Check.tcp(sys.argv[1], hport, "1s", timeout="1s")))

    def passing_both():
        return (len(c.health.service("web", passing=True)[1]) == 1
                and len(c.health.service("tcpsvc", passing=True)[1]) == 1)

    ok("Check.http and Check.tcp turn passing", until(10, passing_both), repr(c.agent.checks()))
    srv.shutdown()
    srv.server_close()

    def critical_both():
        return (c.health.service("web", passing=True)[1] == []
                and c.health.service("tcpsvc", passing=True)[1] == [])

    ok("Check.http and Check.tcp turn critical when the server stops", until(10, critical_both),
       repr(c.agent.checks()))
    ok("critical check has output", all(ch["Output"] for ch in c.agent.checks().values()
                                        if ch["ServiceID"] in ("web1", "tcp1")), repr(c.agent.checks()))
    step("deregister web1", lambda: c.agent.service.deregister("web1"))
    step("deregister tcp1", lambda: c.agent.service.deregister("tcp1"))

    finish()


if __name__ == "__main__":
    main()
