"""A fixed set of worker threads that run blocking database calls for the event loop.

``loop.run_in_executor`` with a ``ThreadPoolExecutor`` costs a concurrent ``Future`` (with its
``Condition``), a work item, an asyncio ``Future`` chained to it both ways and several Python-level
callbacks per call; for a point read that takes tens of microseconds in SQLite, that bookkeeping
costs more than the query. Here a call is one queue put, and the worker hands the result back with
one ``call_soon_threadsafe``. Semantics are those of the executor: calls run in submission order
per free worker, a call whose awaiting task was cancelled before a worker picked it up is skipped,
and ``shutdown`` lets queued calls finish.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("assistantd.store")

_STOP = object()


def resolve_future(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class WorkerPool:
    def __init__(self, size: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=_work, args=(self._queue,), name=f"{name}_{i}", daemon=True) for i in range(size)
        ]
        for t in self._threads:
            t.start()
        # Daemon threads do not hold the interpreter open; at exit, queued calls still finish.
        atexit.register(_drain, weakref.ref(self))

    @property
    def backlog(self) -> int:
        """Calls queued and not yet picked up by a worker."""
        return self._queue.qsize()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeError("cannot run database calls after shutdown")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, loop, fut))
        return await fut

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on a worker and wait for it, from a thread that is not a worker."""
        if self._closed:
            raise RuntimeError("cannot run database calls after shutdown")
        fut: Future[T] = Future()
        self._queue.put((fn, args, None, fut))
        return fut.result()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on a worker and do not wait for it (it reports its own outcome)."""
        if self._closed:
            raise RuntimeError("cannot run database calls after shutdown")
        self._queue.put((fn, args, None, None))

    def shutdown(self) -> None:
        """Let queued calls finish, then stop the threads."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        current = threading.current_thread()
        for t in self._threads:
            if t is not current:
                t.join()


def _drain(ref: weakref.ref[WorkerPool]) -> None:
    pool = ref()
    if pool is not None:
        pool.shutdown()


def _work(q: queue.SimpleQueue[Any]) -> None:
    while True:
        item = q.get()
        if item is _STOP:
            return
        fn, args, loop, fut = item
        if fut is None:  # submit: nobody waits, it reports its own outcome
            try:
                fn(*args)
            except BaseException:
                log.exception("a database call run in the background failed")  # the thread carries on
            del item, fn, args
            continue
        if loop is None:  # run_sync
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:
                fut.set_exception(exc)
            continue
        if fut.cancelled():
            continue
        try:
            ok, value = True, fn(*args)
        except BaseException as exc:
            ok, value = False, exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody awaits the answer
            loop.call_soon_threadsafe(resolve_future, fut, ok, value)
        del item, fn, args, fut, value  # hold nothing (results, tracebacks) while idle
