"""The HTTP requests Prometheus's consul_sd_configs sends, byte for byte.

Only used when the installed Prometheus cannot run Consul SD itself (Debian's
build leaves it out). It replays what Prometheus 2.x's discovery/consul does
through Consul's Go client: `GET /v1/agent/self` for Config.Datacenter, then
per watched service a blocking `GET /v1/health/service/NAME?dc=DC&stale=&
index=N&wait=30000ms[&tag=T]`, reading X-Consul-Index / X-Consul-KnownLeader
/ X-Consul-LastContact, and builds the target labels the same way.

Usage: promsd_wire.py HOST:PORT. Prints PASS/FAIL lines.
"""

import json
import sys
import threading
import time
import urllib.request

from report import finish, ok


def call(base, method, path, body=None, timeout=40):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return r.headers, (json.loads(raw) if raw else None)


def aggregated(checks):
    """Consul's Go client HealthChecks.AggregatedStatus, which Prometheus labels as health."""
    statuses = [c["Status"] for c in checks]
    for c in checks:
        if c["CheckID"] in ("_node_maintenance",) or c["CheckID"].startswith("_service_maintenance:"):
            return "maintenance"
    for s in ("critical", "warning", "passing"):
        if s in statuses:
            return s
    return "passing"


def targets(entries):
    out = {}
    for e in entries:
        svc, node = e["Service"], e["Node"]
        addr = svc["Address"] or node["Address"]
        labels = {
            "__address__": f"{addr}:{svc['Port']}",
            "__meta_consul_tags": "," + ",".join(svc["Tags"]) + ",",
            "__meta_consul_health": aggregated(e["Checks"]),
            "__meta_consul_node": node["Node"],
            "__meta_consul_service_id": svc["ID"],
        }
        for k, v in (svc.get("Meta") or {}).items():
            labels[f"__meta_consul_service_metadata_{k}"] = v
        for k, v in (node.get("Meta") or {}).items():
            labels[f"__meta_consul_metadata_{k}"] = v
        for k, v in (node.get("TaggedAddresses") or {}).items():
            labels[f"__meta_consul_tagged_address_{k}"] = v
        out[svc["ID"]] = labels
    return out


def main():
    base = "http://" + sys.argv[1]

    _, me = call(base, "GET", "/v1/agent/self")
    dc = me.get("Config", {}).get("Datacenter")
    ok("agent/self Config.Datacenter is a string", isinstance(dc, str) and dc, repr(me.get("Config")))

    for n in (1, 2):
        call(base, "PUT", "/v1/agent/service/register", {
            "ID": f"api{n}", "Name": "api", "Address": f"127.0.0.4{n}", "Port": 9100,
            "Tags": ["blue", f"v{n}"], "Meta": {"team": f"core{n}"}, "Check": {"CheckID": f"ttl{n}", "TTL": "60s"}})
    call(base, "PUT", "/v1/agent/check/pass/ttl1")

    q = f"/v1/health/service/api?dc={dc}&stale=&index=0&wait=30000ms"
    h, body = call(base, "GET", q)
    idx = h.get("X-Consul-Index")
    ok("X-Consul-Index is an unsigned integer", idx is not None and idx.isdigit() and int(idx) > 0, repr(idx))
    ok("X-Consul-KnownLeader is true", h.get("X-Consul-KnownLeader") == "true", repr(h.get("X-Consul-KnownLeader")))
    lc = h.get("X-Consul-LastContact")
    ok("X-Consul-LastContact is an unsigned integer", lc is not None and lc.isdigit(), repr(lc))
    t = targets(body)
    ok("api1 target labels", t.get("api1", {}).get("__address__") == "127.0.0.41:9100"
       and t["api1"]["__meta_consul_tags"] == ",blue,v1,"
       and t["api1"]["__meta_consul_service_metadata_team"] == "core1"
       and t["api1"]["__meta_consul_health"] == "passing", repr(t.get("api1")))
    ok("api2 (TTL never passed) is critical", t.get("api2", {}).get("__meta_consul_health") == "critical",
       repr(t.get("api2")))

    _, tagged = call(base, "GET", f"/v1/health/service/api?dc={dc}&stale=&tag=v2&wait=30000ms")
    ok("tag= filter", sorted(targets(tagged)) == ["api2"], repr(sorted(targets(tagged))))

    # The blocking watch wakes on a change well before its 30s wait.
    result = {}

    def watch():
        t0 = time.monotonic()
        hh, bb = call(base, "GET", f"/v1/health/service/api?dc={dc}&stale=&index={idx}&wait=30000ms")
        result.update(h=hh, body=bb, took=time.monotonic() - t0)

    th = threading.Thread(target=watch)
    th.start()
    # Give the watch time to arrive first; if the change wins the race the
    # query returns at once anyway, so the checks below hold either way.
    time.sleep(0.3)
    call(base, "PUT", "/v1/agent/service/deregister/api2")
    th.join(35)
    ok("blocking query wakes on deregister", result.get("took", 99) < 5, repr(result.get("took")))
    if result:
        ok("index moved forward", int(result["h"]["X-Consul-Index"]) > int(idx), result["h"]["X-Consul-Index"])
        ok("deregistered target gone", sorted(targets(result["body"])) == ["api1"],
           repr(sorted(targets(result["body"]))))
        idx = result["h"]["X-Consul-Index"]

    # A check turning critical changes the health label on the next wake.
    result.clear()
    th = threading.Thread(target=watch)
    th.start()
    time.sleep(0.3)
    call(base, "PUT", "/v1/agent/check/fail/ttl1")
    th.join(35)
    ok("blocking query wakes on a check turning critical", result.get("took", 99) < 5, repr(result.get("took")))
    if result:
        ok("critical target labelled critical",
           targets(result["body"]).get("api1", {}).get("__meta_consul_health") == "critical",
           repr(targets(result["body"])))

    # Catalog watch (used when services: is empty or tags: is set).
    h, svcs = call(base, "GET", f"/v1/catalog/services?dc={dc}&stale=&index=0&wait=30000ms")
    ok("catalog/services map with tags", sorted(svcs.get("api", [])) == ["blue", "v1"], repr(svcs))
    ok("catalog/services has X-Consul-Index", (h.get("X-Consul-Index") or "").isdigit(), repr(h.get("X-Consul-Index")))

    finish()


if __name__ == "__main__":
    main()
