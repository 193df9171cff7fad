"""Run every flow against a real model server and print a table: ``python -m tests.realmodel.check``."""

from __future__ import annotations

import sys
import time
import traceback

from .flows import FLOWS
from .harness import RealServers


def main() -> int:
    servers = RealServers.from_env()
    started = time.monotonic()
    servers.start()
    print(f"servers up in {time.monotonic() - started:.0f}s (llama {servers.llama_url}, assistantd {servers.base_url})")
    rows: list[tuple[str, str, str, float]] = []
    try:
        for name, flow in FLOWS:
            began = time.monotonic()
            try:
                detail, result = flow(servers), "PASS"
            except AssertionError as exc:
                detail, result = str(exc).splitlines()[0] if str(exc) else "assertion failed", "FAIL"
            except Exception as exc:
                detail, result = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", "ERROR"
                traceback.print_exc(file=sys.stderr)
            rows.append((name, result, detail, time.monotonic() - began))
            print(f"  {result:5} {name} ({rows[-1][3]:.0f}s)", file=sys.stderr, flush=True)
    finally:
        servers.stop()
    width = max(len(r[0]) for r in rows)
    print(f"\n| {'flow':{width}} | result | seconds | detail |")
    print(f"| {'-' * width} | ------ | ------- | ------ |")
    for name, result, detail, seconds in rows:
        print(f"| {name:{width}} | {result:6} | {seconds:7.0f} | {detail} |")
    print(f"\nlogs in {servers.workdir}; total {time.monotonic() - started:.0f}s")
    return 0 if all(r[1] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
