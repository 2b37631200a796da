"""py-consul's ACL calls against a trellis agent with ACLs on and
default_policy "deny", and DNS answering as the anonymous token.

Usage: pyacl.py HOST HTTP_PORT DNS_PORT. Prints one `PASS name` or
`FAIL name: why` line per assertion, and `INFO management-token SECRET`
(for the Go part that follows); exits non-zero if any failed.
"""

import sys

import consul
import dns.message
import dns.query
import dns.rcode

from report import finish, ok, step, until

ANONYMOUS = "00000000-0000-0000-0000-000000000002"


def refused(name, fn):
    """Passes when fn raises py-consul's ACLPermissionDenied (a 403)."""
    try:
        r = fn()
    except consul.ACLPermissionDenied as e:
        ok(name, "Permission denied" in str(e) or "ACL" in str(e), str(e))
        return
    except Exception as e:  # noqa: BLE001
        ok(name, False, f"{type(e).__name__}: {e}")
        return
    ok(name, False, f"allowed: {r!r}")


def dns_a(host, port, name):
    q = dns.message.make_query(name, "A")
    r = dns.query.udp(q, host, port=port, timeout=2)
    addrs = [item.address for rrset in r.answer for item in rrset if hasattr(item, "address")]
    return dns.rcode.to_text(r.rcode()), addrs


def main():
    host, port, dns_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    anon = consul.Consul(host=host, port=port)

    boot = step("acl.bootstrap", lambda: anon.acl.bootstrap()) or {}
    mgmt = boot.get("SecretID", "")
    ok(
        "acl.bootstrap returns a management token",
        bool(mgmt) and any(p.get("Name") == "global-management" for p in boot.get("Policies") or []),
        repr(boot),
    )
    print(f"INFO management-token {mgmt}")
    refused("a second acl.bootstrap is refused", lambda: anon.acl.bootstrap())

    admin = consul.Consul(host=host, port=port, token=mgmt)
    refused(
        "an anonymous service registration is refused (default deny)",
        lambda: anon.agent.service.register("web", service_id="web-anon", port=1),
    )
    r = step(
        "the management token registers web",
        lambda: admin.agent.service.register("web", service_id="web1", address="10.0.0.5", port=80),
    )
    ok("agent.service.register with the management token", r is True, repr(r))

    policy = step(
        "acl.policy.create web-read",
        lambda: admin.acl.policy.create(
            name="web-read",
            description="reads web",
            rules={"service": {"web": {"policy": "read"}}, "node_prefix": {"": {"policy": "read"}}},
        ),
    ) or {}
    ok("acl.policy.create returns its ID and name", bool(policy.get("ID")) and policy.get("Name") == "web-read",
       repr(policy))
    token = step(
        "acl.token.create",
        lambda: admin.acl.token.create(policies_name=["web-read"], description="web reader"),
    ) or {}
    secret = token.get("SecretID", "")
    ok(
        "acl.token.create links the policy by name",
        bool(secret) and [p.get("Name") for p in token.get("Policies") or []] == ["web-read"],
        repr(token),
    )
    listed = step("acl.token.list", lambda: admin.acl.token.list()) or []
    ok("acl.token.list has the new token", any(t.get("AccessorID") == token.get("AccessorID") for t in listed),
       repr(listed)[:300])

    reader = consul.Consul(host=host, port=port, token=secret)
    me = step("acl.token.read_self", lambda: reader.acl.token.read_self()) or {}
    ok("acl.token.read_self names the reader's token", me.get("AccessorID") == token.get("AccessorID"), repr(me))

    def web_instances():
        _, nodes = reader.catalog.service("web")
        return nodes

    nodes = step("catalog.service web with the reader", lambda: until(5, web_instances)) or []
    ok("the reader reads web", len(nodes) == 1 and nodes[0].get("ServiceAddress") == "10.0.0.5", repr(nodes))
    _, services = step("catalog.services with the reader", lambda: reader.catalog.services()) or (0, {})
    ok("catalog.services is filtered to what the reader may read", sorted(services) == ["web"], repr(services))
    _, health = step("health.service web with the reader", lambda: reader.health.service("web")) or (0, [])
    ok("health.service web with the reader", len(health) == 1, repr(health)[:300])
    refused(
        "the reader may not register web",
        lambda: reader.agent.service.register("web", service_id="web2", port=81),
    )
    refused("the reader may not write KV", lambda: reader.kv.put("config/flag", "on"))
    ok("the management token writes KV", step("kv.put with the management token",
                                              lambda: admin.kv.put("config/flag", "on")) is True)
    refused("the reader may not read KV", lambda: reader.kv.get("config/flag"))

    rcode, addrs = dns_a(host, dns_port, "web.service.consul")
    ok("anonymous DNS under default deny answers NXDOMAIN", rcode == "NXDOMAIN" and addrs == [], f"{rcode} {addrs}")
    step(
        "acl.policy.create dns-read",
        lambda: admin.acl.policy.create(
            name="dns-read",
            rules={"service_prefix": {"": {"policy": "read"}}, "node_prefix": {"": {"policy": "read"}}},
        ),
    )
    step(
        "acl.token.update of the anonymous token",
        lambda: admin.acl.token.update(accessor_id=ANONYMOUS, policies_name=["dns-read"]),
    )
    answered = until(5, lambda: dns_a(host, dns_port, "web.service.consul")[1])
    ok("anonymous DNS answers once the anonymous token may read", answered == ["10.0.0.5"], repr(answered))

    step("acl.token.delete", lambda: admin.acl.token.delete(token.get("AccessorID", "")))
    try:
        reader.catalog.service("web")
        ok("a deleted token is refused", False, "allowed")
    except consul.ACLPermissionDenied as e:
        ok("a deleted token is refused", "ACL not found" in str(e), str(e))
    except Exception as e:  # noqa: BLE001
        ok("a deleted token is refused", False, f"{type(e).__name__}: {e}")

    finish()


if __name__ == "__main__":
    main()
