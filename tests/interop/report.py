"""What every interop script prints and how it ends: one `PASS name` or
`FAIL name: why` line per assertion (run.sh counts them), and an exit
status that is non-zero if any failed."""

import sys
import time

failed = 0


def ok(name, cond, detail=""):
    """One assertion's line; returns cond."""
    global failed
    if cond:
        print(f"PASS {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")
    return cond


def step(name, fn):
    """Runs fn, reporting an exception as a failure instead of stopping."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - every client error is a test failure
        ok(name, False, f"{type(e).__name__}: {e}")
        return None


def until(deadline_s, fn):
    """Polls fn until it returns a truthy value or the deadline passes."""
    end = time.monotonic() + deadline_s
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(0.1)


def finish():
    """Exits non-zero if any assertion failed."""
    sys.exit(1 if failed else 0)
