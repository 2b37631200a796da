"""py-consul's KV, session and txn calls against a trellis agent.

Usage: pykv.py HOST PORT. Prints one `PASS name` or `FAIL name: why` line
per assertion; exits non-zero if any failed.
"""

import base64
import json
import sys
import threading
import time

import consul
from consul.exceptions import ClientError

from report import finish, ok, step


def raises(name, exc, fn):
    """Passes when fn raises exc; returns the exception."""
    try:
        r = fn()
    except exc as e:
        ok(name, True)
        return e
    except Exception as e:  # noqa: BLE001
        ok(name, False, f"raised {type(e).__name__}: {e}")
        return None
    ok(name, False, f"returned {r!r}")
    return None


def b64(s):
    return base64.b64encode(s.encode()).decode()


def value(c, key):
    _, e = c.kv.get(key)
    return e["Value"] if e else None


def test_kv(c):
    r = step("kv.put", lambda: c.kv.put("pykv/a", "one"))
    ok("kv.put returns True", r is True, repr(r))
    idx, e = step("kv.get", lambda: c.kv.get("pykv/a")) or (None, None)
    ok("kv.get returns the value, Flags 0, no Session",
       e is not None and e["Value"] == b"one" and e["Flags"] == 0 and e["Key"] == "pykv/a" and "Session" not in e,
       repr(e))
    ok("kv.get's index is the key's ModifyIndex", e is not None and int(idx) == e["ModifyIndex"], f"{idx} {e!r}")

    step("kv.put with flags", lambda: c.kv.put("pykv/flagged", "f", flags=42))
    _, e = c.kv.get("pykv/flagged")
    ok("kv.put flags=42 reads back", e is not None and e["Flags"] == 42, repr(e))

    r = step("kv.put None", lambda: c.kv.put("pykv/empty", None))
    _, e = c.kv.get("pykv/empty")
    ok("a None value reads back as None", r is True and e is not None and e["Value"] is None, repr(e))

    idx, e = step("kv.get of a missing key", lambda: c.kv.get("pykv/nosuch")) or (None, "error")
    ok("kv.get of a missing key is (index, None) with an index", e is None and idx and int(idx) > 0, f"{idx} {e!r}")

    for k in ("pykv/dir/x", "pykv/dir/y", "pykv/dir/sub/z", "pykv/dirt"):
        step(f"kv.put {k}", lambda k=k: c.kv.put(k, k.upper()))
    _, es = step("kv.get recurse", lambda: c.kv.get("pykv/dir/", recurse=True)) or (0, None)
    ok("kv.get recurse lists the prefix in key order",
       es is not None and [x["Key"] for x in es] == ["pykv/dir/sub/z", "pykv/dir/x", "pykv/dir/y"], repr(es))
    _, ks = step("kv.get keys", lambda: c.kv.get("pykv/", keys=True, separator="/")) or (0, None)
    ok("kv.get keys with separator stops at the separator",
       ks == ["pykv/a", "pykv/dir/", "pykv/dirt", "pykv/empty", "pykv/flagged"], repr(ks))

    # Check-and-set.
    r = step("kv.put cas=0 (create only)", lambda: c.kv.put("pykv/cas", "v1", cas=0))
    ok("cas=0 creates a missing key", r is True, repr(r))
    r = step("kv.put cas=0 again", lambda: c.kv.put("pykv/cas", "v2", cas=0))
    ok("cas=0 on an existing key returns False", r is False, repr(r))
    _, e = c.kv.get("pykv/cas")
    m = e["ModifyIndex"]
    ok("the refused cas=0 changed nothing", e["Value"] == b"v1", repr(e))
    r = step("kv.put cas=ModifyIndex", lambda: c.kv.put("pykv/cas", "v3", cas=m))
    ok("cas with the current ModifyIndex returns True", r is True, repr(r))
    r = step("kv.put with a stale cas", lambda: c.kv.put("pykv/cas", "v4", cas=m))
    ok("a stale cas returns False", r is False, repr(r))
    _, e = c.kv.get("pykv/cas")
    ok("the value is the one of the successful cas", e["Value"] == b"v3" and e["ModifyIndex"] > m, repr(e))
    r = step("kv.delete with a stale cas", lambda: c.kv.delete("pykv/cas", cas=m))
    ok("kv.delete with a stale cas returns False and keeps the key", r is False and value(c, "pykv/cas") == b"v3",
       repr(r))
    r = step("kv.delete with the current cas", lambda: c.kv.delete("pykv/cas", cas=e["ModifyIndex"]))
    ok("kv.delete with the current cas removes the key", r is True and value(c, "pykv/cas") is None, repr(r))

    # Delete, recursive and not.
    r = step("kv.delete", lambda: c.kv.delete("pykv/a"))
    ok("kv.delete removes one key", r is True and value(c, "pykv/a") is None, repr(r))
    idx_before, _ = c.kv.get("pykv/dir/", recurse=True)
    r = step("kv.delete recurse", lambda: c.kv.delete("pykv/dir/", recurse=True))
    idx_after, es = c.kv.get("pykv/dir/", recurse=True)
    ok("kv.delete recurse removes the whole prefix", r is True and es is None, repr(es))
    ok("the prefix's index moves forward across the delete (tombstones)", int(idx_after) > int(idx_before),
       f"{idx_before} -> {idx_after}")
    ok("kv.delete recurse leaves a sibling outside the prefix", value(c, "pykv/dirt") == b"PYKV/DIRT", "")


def test_sessions(c, node):
    sid = step("session.create with name, ttl, behavior, lock_delay",
               lambda: c.session.create(name="pykv-eph", ttl=10, behavior="delete", lock_delay=1))
    ok("session.create returns an ID", isinstance(sid, str) and len(sid) == 36, repr(sid))
    if not sid:
        return
    _, s = step("session.info", lambda: c.session.info(sid)) or (0, None)
    ok("session.info has the name, TTL, behavior, lock-delay and node",
       s is not None and s["ID"] == sid and s["Name"] == "pykv-eph" and s["TTL"] == "10s"
       and s["Behavior"] == "delete" and s["LockDelay"] == 1_000_000_000 and s["Node"] == node,
       repr(s))
    _, ss = step("session.list", lambda: c.session.list()) or (0, [])
    ok("session.list has it", any(x["ID"] == sid for x in ss), repr(ss))
    _, ss = step("session.node", lambda: c.session.node(node)) or (0, [])
    ok("session.node has it", any(x["ID"] == sid for x in ss), repr(ss))
    r = step("session.renew", lambda: c.session.renew(sid))
    ok("session.renew returns the session", isinstance(r, dict) and r.get("ID") == sid and r.get("TTL") == "10s",
       repr(r))

    # Locks with acquire/release.
    other = step("session.create (default behavior and lock-delay)", lambda: c.session.create(name="pykv-other"))
    r = step("kv.put acquire", lambda: c.kv.put("pykv/lock", "mine", acquire=sid))
    ok("acquire by a free key's session returns True", r is True, repr(r))
    _, e = c.kv.get("pykv/lock")
    ok("the held key names the session, LockIndex 1", e and e.get("Session") == sid and e["LockIndex"] == 1, repr(e))
    r = step("kv.put acquire by another session", lambda: c.kv.put("pykv/lock", "theirs", acquire=other))
    ok("acquire of a held key by another session returns False", r is False and value(c, "pykv/lock") == b"mine",
       repr(r))
    r = step("kv.put release by another session", lambda: c.kv.put("pykv/lock", "x", release=other))
    ok("release by a session that does not hold it returns False", r is False, repr(r))
    r = step("kv.put release", lambda: c.kv.put("pykv/lock", "released", release=sid))
    _, e = c.kv.get("pykv/lock")
    ok("release returns True, clears Session, keeps LockIndex, writes the value",
       r is True and e and "Session" not in e and e["LockIndex"] == 1 and e["Value"] == b"released", repr(e))
    r = step("kv.put acquire right after a release", lambda: c.kv.put("pykv/lock", "theirs", acquire=other))
    ok("a release sets no lock-delay: the other session acquires at once", r is True, repr(r))
    _, e = c.kv.get("pykv/lock")
    ok("LockIndex counts the second acquire", e and e["LockIndex"] == 2 and e.get("Session") == other, repr(e))
    r = step("session.destroy of the holder", lambda: c.session.destroy(other))
    ok("session.destroy returns True", r is True, repr(r))
    _, e = c.kv.get("pykv/lock")
    ok("destroying a release-behavior holder releases its key", e and "Session" not in e and e["Value"] == b"theirs",
       repr(e))
    r = step("kv.put acquire during lock-delay", lambda: c.kv.put("pykv/lock", "mine", acquire=sid))
    ok("after a destroy, lock-delay (15s default) refuses the acquire", r is False, repr(r))

    # A delete-behavior session's keys go with it.
    r = step("kv.put acquire of an ephemeral key", lambda: c.kv.put("pykv/eph", "here", acquire=sid))
    ok("acquire of the ephemeral key", r is True, repr(r))
    r = step("session.destroy", lambda: c.session.destroy(sid))
    ok("session.destroy returns True", r is True, repr(r))
    ok("destroying a delete-behavior session deletes its keys", value(c, "pykv/eph") is None, "")
    _, s = step("session.info of a destroyed session", lambda: c.session.info(sid)) or (0, "error")
    ok("session.info of a destroyed session is None", s is None, repr(s))
    _, ss = c.session.list()
    ok("session.list no longer has it", not any(x["ID"] == sid for x in ss), repr(ss))
    raises("session.renew of a destroyed session raises NotFound", consul.NotFound, lambda: c.session.renew(sid))
    # On a key without a lock-delay: under one (pykv/lock, just released by
    # a destroy) Consul answers False before it looks at the session.
    raises("kv.put acquire with an unknown session fails", consul.ConsulException,
           lambda: c.kv.put("pykv/never-locked", "x", acquire=sid))


def test_txn(c):
    r = step("txn.put (set, set, get)", lambda: c.txn.put([
        {"KV": {"Verb": "set", "Key": "pykv/t1", "Value": b64("a")}},
        {"KV": {"Verb": "set", "Key": "pykv/t2", "Value": b64("b"), "Flags": 3}},
        {"KV": {"Verb": "get", "Key": "pykv/t1"}},
    ]))
    res = (r or {}).get("Results") or []
    ok("txn.put returns three Results and no Errors", len(res) == 3 and not r.get("Errors"), repr(r))
    if len(res) == 3:
        ok("txn results: sets carry no value, the get sees the earlier set",
           res[0]["KV"]["Key"] == "pykv/t1" and res[0]["KV"]["Value"] is None
           and res[1]["KV"]["Flags"] == 3 and res[2]["KV"]["Value"] == b64("a"), repr(res))
        ok("txn results share one ModifyIndex", res[0]["KV"]["ModifyIndex"] == res[1]["KV"]["ModifyIndex"], repr(res))
    _, e2 = c.kv.get("pykv/t2")
    e = raises("a failing txn (stale cas) raises ClientError", ClientError, lambda: c.txn.put([
        {"KV": {"Verb": "set", "Key": "pykv/t1", "Value": b64("changed")}},
        {"KV": {"Verb": "delete", "Key": "pykv/t2"}},
        {"KV": {"Verb": "cas", "Key": "pykv/t3", "Value": b64("c"), "Index": 999999}},
    ]))
    if e is not None:
        msg = str(e)
        ok("the failure is a 409", msg.startswith("409 "), msg)
        body = None
        try:
            body = json.loads(msg[4:])
        except ValueError:
            pass
        ok("the 409 body names OpIndex 2 and no Results",
           isinstance(body, dict) and body.get("Results") is None
           and [x.get("OpIndex") for x in body.get("Errors") or []] == [2], msg)
    _, e1 = c.kv.get("pykv/t1")
    _, e2b = c.kv.get("pykv/t2")
    _, e3 = c.kv.get("pykv/t3")
    ok("the failed txn changed nothing", e1 and e1["Value"] == b"a" and e2b == e2 and e3 is None, f"{e1} {e2b} {e3}")


def test_blocking(c, host, port):
    writer = consul.Consul(host=host, port=port)
    step("kv.put the watched key", lambda: c.kv.put("pykv/watch", "0"))
    idx, e = c.kv.get("pykv/watch")
    wrote = {}

    def write():
        wrote["at"] = time.monotonic()
        writer.kv.put("pykv/watch", "1")

    # The writer goes a little after the reader parks; the reader's answer
    # must come after the write and soon after it.
    t = threading.Timer(0.5, write)
    t0 = time.monotonic()
    t.start()
    idx2, e2 = step("blocking kv.get", lambda: c.kv.get("pykv/watch", index=idx, wait="10s")) or (idx, None)
    done = time.monotonic()
    t.join()
    ok("a blocking kv.get returns when another client writes the key",
       e2 is not None and e2["Value"] == b"1" and int(idx2) > int(idx) and "at" in wrote
       and wrote["at"] <= done < wrote["at"] + 2, f"{idx} -> {idx2} after {done - t0:.2f}s: {e2!r}")
    print(f"INFO blocking kv.get answered {done - wrote.get('at', t0):.3f}s after the write")

    t0 = time.monotonic()
    idx3, e3 = step("blocking kv.get that times out", lambda: c.kv.get("pykv/watch", index=idx2, wait="1s")) or (0, 0)
    took = time.monotonic() - t0
    ok(f"an unchanged key's blocking kv.get returns after its wait with the same index ({took:.2f}s)",
       0.9 <= took < 3 and idx3 == idx2 and e3 and e3["Value"] == b"1", f"{idx2} -> {idx3}")

    # A missing key: the 404 carries an index to block on.
    idx, e = c.kv.get("pykv/later")
    t = threading.Timer(0.5, lambda: writer.kv.put("pykv/later", "here"))
    t.start()
    idx2, e2 = step("blocking kv.get on a missing key", lambda: c.kv.get("pykv/later", index=idx, wait="10s")) or (0, 0)
    t.join()
    ok("a blocking kv.get on a missing key returns when it is created",
       e is None and e2 and e2["Value"] == b"here" and int(idx2) > int(idx), f"{idx} -> {idx2}: {e2!r}")


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    c = consul.Consul(host=host, port=port)
    me = step("agent.self", lambda: c.agent.self())
    node = me["Config"]["NodeName"] if me else None
    # A client error outside a step() ends that section only.
    step("kv section", lambda: test_kv(c))
    step("session section", lambda: test_sessions(c, node))
    step("txn section", lambda: test_txn(c))
    step("blocking section", lambda: test_blocking(c, host, port))
    step("clean up", lambda: c.kv.delete("pykv/", recurse=True))
    finish()


if __name__ == "__main__":
    main()
