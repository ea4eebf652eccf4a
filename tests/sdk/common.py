"""Helpers shared by the SDK interop scripts in this folder."""

import sys
import time


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


def wait_for(what, fn, timeout=30.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                print("ok:", what, flush=True)
                return last
        except Exception as e:  # noqa: BLE001 - report the last failure if it never succeeds
            last = e
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def run_main(main):
    """Runs `main`, printing one clear FAILED line for the Rust test's failure message."""
    try:
        main()
    except Exception as e:  # noqa: BLE001
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        raise
