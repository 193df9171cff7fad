"""The run engine alone: N streamed runs started at once in one process, against a ChatModel in the same
process, on SQLite. No HTTP and no upstream socket, so the figures are the engine's and the store's cost
(run setup, the writes per run through the one SQLite writer, event building), which the end-to-end
``run_bench.py`` cannot separate from the HTTP server and the upstream client on a shared machine.

For each round it creates N threads, starts N runs through the run service (as ``POST /runs`` with
``stream: true`` does) and follows each run's events to its end: CPU time of the process (all threads)
per run, time to the first text delta and to the end (p50/p99), and the writes the database committed.
``--source`` benchmarks another checkout's ``assistantd/`` (the model is injected through the engine's
router, which both have), so before/after pairs run alternately on the same machine:

    python bench/engine_bench.py --source /tmp/old --runs 1000 --rounds 3
    python bench/engine_bench.py --runs 1000 --rounds 3 --stream-save-seconds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(Path(__file__).resolve().parent.parent), help="checkout holding assistantd/")
    p.add_argument("--runs", type=int, default=1000, help="runs started at once per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ttft-ms", type=float, default=100.0, help="the model's time to its first token")
    p.add_argument("--delay-ms", type=float, default=10.0, help="the model's time between tokens")
    p.add_argument("--tokens", type=int, default=50)
    p.add_argument("--cpu", type=int, default=0, help="pin the process to this CPU (-1: no pinning)")
    p.add_argument("--stream-save-seconds", type=float, default=None, help="setting override (new engine only)")
    p.add_argument("--json", help="also write the rounds to this file")
    args = p.parse_args()
    sys.path.insert(0, args.source)
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    rounds = asyncio.run(bench(args))
    print(f"# assistantd from {args.source}: {args.runs} runs at once, {args.tokens} tokens, "
          f"ttft {args.ttft_ms:.0f} ms, {args.delay_ms:.0f} ms/token")  # fmt: skip
    print("round  cpu ms/run  ttft p50  ttft p99  total p50  total p99  wall s  writes/run  errors")
    for i, r in enumerate(rounds):
        print(
            f"{i + 1:5d}  {r['cpu_ms_per_run']:10.2f}  {r['ttft_p50']:8.0f}  {r['ttft_p99']:8.0f}  "
            f"{r['total_p50']:9.0f}  {r['total_p99']:9.0f}  {r['wall_s']:6.2f}  {r['writes_per_run']:10.2f}  "
            f"{r['errors']:6d}"
        )
    best = min(rounds, key=lambda r: r["cpu_ms_per_run"])
    print(f"best round: {best['cpu_ms_per_run']:.2f} ms CPU per run, first delta p50 {best['ttft_p50']:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(rounds, indent=1))


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    from assistantd.app import build_services
    from assistantd.llm.base import ChatModel, Finish, TextDelta, Usage
    from assistantd.llm.router import ModelRouter, Upstream
    from assistantd.protocol.assistants import CreateAssistant
    from assistantd.protocol.runs import CreateRun
    from assistantd.protocol.threads import CreateThread
    from assistantd.settings import load_settings

    class Paced(ChatModel):
        async def stream(self, request: Any) -> Any:
            await asyncio.sleep(args.ttft_ms / 1000)
            for i in range(args.tokens):
                if i:
                    await asyncio.sleep(args.delay_ms / 1000)
                yield TextDelta((" " if i else "") + f"w{i}")
            yield Usage(10, args.tokens)
            yield Finish("stop")

    tmp = tempfile.mkdtemp(prefix="engine-bench-")
    overrides: dict[str, Any] = {"data_dir": tmp, "code_interpreter_pool_size": 0}
    if args.stream_save_seconds is not None:
        overrides["stream_save_seconds"] = args.stream_save_seconds
    settings = load_settings(overrides=overrides, environ={})
    services = build_services(settings)
    engine = services.runs.engine
    # The one model for every name, the way create_app(chat_model=...) wires it (older trees lack that).
    engine.router = ModelRouter([Upstream(name="bench", base_url="", _client=Paced())])
    await engine.start_background(embedded=True)
    writes = 0
    write = services.db.write

    async def counted(fn: Any, **options: Any) -> Any:
        nonlocal writes
        writes += 1
        return await write(fn, **options)

    services.db.write = counted  # type: ignore[method-assign]  # counting only; the call is unchanged
    project = "proj_bench"
    rounds = []
    try:
        assistant = await services.assistants.create(project, CreateAssistant.model_validate({"model": "m"}))
        for _ in range(args.rounds):
            threads = [
                await services.threads.create(
                    project, CreateThread.model_validate({"messages": [{"role": "user", "content": "hi"}]})
                )
                for _ in range(args.runs)
            ]
            req = CreateRun.model_validate({"assistant_id": assistant["id"]})
            writes_before = writes
            cpu0, t0 = time.process_time(), time.monotonic()

            async def one(thread_id: str, req: CreateRun = req) -> tuple[float, float, bool]:
                start = time.monotonic()
                _, sub = await services.runs.create(project, thread_id, req, include=[], stream=True)
                first = 0.0
                last = ""
                assert sub is not None
                async for name, _data in sub:
                    if name == "thread.message.delta" and not first:
                        first = time.monotonic() - start
                    last = name
                return first * 1000, (time.monotonic() - start) * 1000, last == "thread.run.completed"

            results = await asyncio.gather(*(one(t["id"]) for t in threads))
            wall = time.monotonic() - t0
            cpu = time.process_time() - cpu0
            ttft = sorted(r[0] for r in results)
            total = sorted(r[1] for r in results)
            rounds.append(
                {
                    "cpu_ms_per_run": cpu * 1000 / args.runs,
                    "ttft_p50": statistics.median(ttft),
                    "ttft_p99": ttft[int(len(ttft) * 0.99) - 1],
                    "total_p50": statistics.median(total),
                    "total_p99": total[int(len(total) * 0.99) - 1],
                    "wall_s": wall,
                    "writes_per_run": (writes - writes_before) / args.runs,
                    "errors": sum(1 for r in results if not r[2]),
                }
            )
    finally:
        await engine.stop()
        await services.db.close()
    return rounds


if __name__ == "__main__":
    main()
