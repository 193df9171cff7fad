"""The code interpreter's latency: first execution in a new thread, a warm cell, and 20 threads at once.

Drives ``assistantd.tools.code_interpreter.CodeInterpreter`` in process (real bubblewrap sandboxes with
real kernels; the same object the run engine calls), with the default limits, and measures:

1. **First execution in a new thread, cold** (``pool_size=0``: the sandbox and kernel start on demand)
   and **with the pool** (a pre-started sandbox, kernel up and numpy/pandas/matplotlib imported; the
   pool is refilled between trials, so every trial finds it full). Two cells each: ``1+1``, and a
   pandas cell (``import pandas as pd; pd.DataFrame(...).sum()``), since the pool's preload is what a
   data cell saves. p50 over ``--trials`` new threads.
2. **Warm overhead**: ``1+1`` on a warm session, ``--warm`` times: everything ``execute()`` adds around
   a cell that costs nothing (the Jupyter round trip, the /mnt/data scans, the limits).
3. **20 threads at once**: ``--sessions`` sessions execute at the same moment, first all new (with the
   default pool of 2, most start cold, all competing for the CPUs), then again once warm, a cell of
   about 10 ms of CPU each. Wall time of the batch and the p50/max of the calls.

Needs root and bubblewrap (see the README's code interpreter notes). Prints one table; a measurement,
never a pass/fail test.

    python bench/code_interpreter_bench.py                 # about 2 minutes on 2 cores
    python bench/code_interpreter_bench.py --trials 5 --warm 100 --sessions 20
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from assistantd.tools.code_interpreter import CodeInterpreter, SandboxConfig

TRIVIAL = "1+1"
PANDAS = "import pandas as pd\npd.DataFrame({'a': [1, 2, 3]}).sum()"
BUSY = "sum(i * i for i in range(200_000))"  # about 10 ms of CPU


@dataclass
class Row:
    case: str
    samples: list[float]
    note: str = ""

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) * 1000

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def discard(name: str, chunks: AsyncIterator[bytes]) -> str:
    async for _ in chunks:
        pass
    return name


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    result = await call()
    elapsed = time.perf_counter() - started
    error = getattr(result, "error", None)
    if error is not None:
        raise RuntimeError(f"benchmark cell failed: {error}: {getattr(result, 'logs', '')[-300:]}")
    return elapsed


async def first_executions(base: SandboxConfig, pool: int, trials: int) -> list[Row]:
    ci = CodeInterpreter(replace(base, pool_size=pool))
    await ci.start()
    if not ci.available:
        sys.exit(f"code interpreter unavailable: {ci.unavailable_reason}")
    label = "with the pool" if pool else "cold (no pool)"
    rows = [Row(f"first execution, {label}: 1+1", []), Row(f"first execution, {label}: pandas cell", [])]
    try:
        for i in range(trials):
            for row, code in zip(rows, (TRIVIAL, PANDAS), strict=True):
                if pool:
                    await ci.wait_for_pool()
                row.samples.append(
                    await timed(lambda code=code, i=i: ci.execute(f"bench:first-{i}-{code[:4]}", code, save=discard))
                )
    finally:
        await ci.stop()
    return rows


async def warm_overhead(base: SandboxConfig, n: int) -> Row:
    ci = CodeInterpreter(replace(base, pool_size=0))
    await ci.start()
    row = Row("warm session: 1+1", [])
    try:
        await ci.execute("bench:warm", TRIVIAL, save=discard)
        for _ in range(10):  # let the kernel settle (first-cell compilation, caches)
            await ci.execute("bench:warm", TRIVIAL, save=discard)
        for _ in range(n):
            row.samples.append(await timed(lambda: ci.execute("bench:warm", TRIVIAL, save=discard)))
    finally:
        await ci.stop()
    row.note = f"p99 {row.quantile(0.99):.1f} ms"
    return row


async def many_at_once(base: SandboxConfig, sessions: int) -> list[Row]:
    ci = CodeInterpreter(base)
    await ci.start()
    rows = []
    try:
        await ci.wait_for_pool()
        for label in ("new", "warm"):
            started = time.perf_counter()
            samples = await asyncio.gather(
                *(timed(lambda k=k: ci.execute(f"bench:many-{k}", BUSY, save=discard)) for k in range(sessions))
            )
            wall = time.perf_counter() - started
            row = Row(f"{sessions} threads at once, {label} sessions", list(samples))
            row.note = f"batch wall {wall * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms"
            rows.append(row)
    finally:
        await ci.stop()
    return rows


def print_table(rows: list[Row]) -> None:
    width = max(len(r.case) for r in rows)
    head = f"{'case':<{width}}  {'n':>4}  {'p50 ms':>8}  {'p90 ms':>8}  note"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r.case:<{width}}  {len(r.samples):>4}  {r.p50:>8.1f}  {r.quantile(0.9):>8.1f}  {r.note}")


async def amain(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="assistantd-ci-bench-"))
    base = SandboxConfig(work_root=work / "code-interpreter", protect=(work,))
    try:
        cold = await first_executions(base, 0, args.trials)
        pooled = await first_executions(base, 2, args.trials)
        warm = await warm_overhead(base, args.warm)
        many = await many_at_once(base, args.sessions)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for c, p in zip(cold, pooled, strict=True):
        p.note = f"{c.p50 / p.p50:.1f}x faster than cold"
    print_table([*cold, *pooled, warm, *many])
    print(
        f"\ntargets: first execution with the pool < 300 ms p50 (measured {pooled[0].p50:.0f} ms for 1+1, "
        f"{pooled[1].p50:.0f} ms for the pandas cell); warm overhead < 20 ms (measured {warm.p50:.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=7, help="new threads per first-execution case")
    parser.add_argument("--warm", type=int, default=200, help="cells on the warm session")
    parser.add_argument("--sessions", type=int, default=20, help="threads executing at once")
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
