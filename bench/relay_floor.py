"""The floor of relaying one small chunk on this machine: uvloop, no HTTP, no parsing.

1,000 relays, each a protocol that writes every chunk it receives on one socket to another (socketpairs);
this process feeds each relay one 100-byte chunk a round and drains the far ends. It prints the CPU time
a chunk costs everything in the process, the feeding and draining included (about 2 us of it): what a
server relaying tokens pays per token at least, before any Python of its own.

    python bench/relay_floor.py
    python bench/relay_floor.py --relays 1000 --rounds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time

import uvloop


class Round:
    """Counts the chunks relayed in one round; ``done`` resolves when every relay has passed its chunk."""

    def __init__(self, relays: int) -> None:
        self.left = relays
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def relayed(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set_result(None)


class Relay(asyncio.Protocol):
    def __init__(self, out: asyncio.BaseTransport) -> None:
        self.out = out
        self.round: Round | None = None

    def data_received(self, data: bytes) -> None:
        self.out.write(data)  # type: ignore[attr-defined]
        if self.round is not None:
            self.round.relayed()


async def bench(relays: int, rounds: int) -> float:
    loop = asyncio.get_running_loop()
    feeders, sinks, protocols = [], [], []
    for _ in range(relays):
        feed, inlet = socket.socketpair()
        outlet, sink = socket.socketpair()
        for s in (feed, inlet, outlet, sink):
            s.setblocking(False)
        out, _ = await loop.connect_accepted_socket(asyncio.Protocol, outlet)
        relay = Relay(out)
        await loop.connect_accepted_socket(lambda relay=relay: relay, inlet)
        feeders.append(feed)
        sinks.append(sink)
        protocols.append(relay)
    chunk = b"x" * 100
    cpu = time.process_time()
    for _ in range(rounds):
        this = Round(relays)
        for relay in protocols:
            relay.round = this
        for feed in feeders:
            feed.send(chunk)
        await this.done
        for sink in sinks:
            with contextlib.suppress(BlockingIOError):
                sink.recv(65536)
    return (time.process_time() - cpu) / (relays * rounds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--relays", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args()
    per_chunk = uvloop.run(bench(args.relays, args.rounds))
    print(f"{per_chunk * 1e6:.1f} us of CPU a relayed chunk ({args.relays} relays x {args.rounds} rounds)")


if __name__ == "__main__":
    main()
