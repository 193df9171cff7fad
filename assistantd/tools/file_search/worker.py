"""Parsing and chunking in child processes with their own memory limit and a deadline per file.

A document is hostile input: a zip bomb, a deck of 100k shapes, markup a parser chokes on. So the server
never parses one itself. Each ingestion slot borrows a reader process (``python -m
assistantd.tools.file_search.worker``) whose address space is capped (``RLIMIT_AS``), hands it the file's
path and gets back the text and the chunk plan. A reader that runs past the file's deadline is killed; one
that dies (its own memory limit, a crash) is replaced; either way that file fails with ``invalid_file`` and
a message naming the limit, the server's memory stays where it was, and the other slots never wait.

The reader speaks length-prefixed JSON frames on a pipe of its own (never pickle: its output is treated
as untrusted, as the documents it reads are). Embedding stays in the server, which holds the model once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from assistantd.tools.file_search.chunk import Chunk, ChunkPlan, RegexTokenizer, Tokenizer, Window, plan_chunks
from assistantd.tools.file_search.parse import Limits, ParseError, parse

log = logging.getLogger("assistantd.ingest")

_HEADER = struct.Struct(">Q")
_PASSED_ENV = frozenset({"PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "HOME", "LANG", "LC_ALL", "TMPDIR"})
POLL_SECONDS = 0.2  # how often a waiting slot looks at its stop flag (a cancelled or deleted file)


class Stopped(Exception):
    """The file was cancelled, detached or deleted while it was being processed."""


@dataclass(frozen=True)
class ReaderConfig:
    """How every reader process is set up (from settings)."""

    limits: Limits = Limits()  # noqa: RUF009 (frozen)
    max_chunks: int = 200_000  # chunks one file may make
    memory_mb: int = 1024  # address space of one reader process
    timeout_seconds: float = 300.0  # wall-clock time one file may take to parse and chunk
    tokenizer_json: str | None = None  # the model's tokenizer; None: words and punctuation


@dataclass(frozen=True)
class Planned:
    segments: list[str]
    plan: ChunkPlan


# --- the server's side ---------------------------------------------------------------------------


class ReaderPool:
    """Reader processes, lent one per file. Blocking: call ``read`` from a worker thread."""

    def __init__(self, config: ReaderConfig, *, keep: int = 1) -> None:
        self.config = config
        self.keep = max(1, keep)  # idle readers kept started between files
        self._idle: list[_Reader] = []
        self._lock = threading.Lock()
        self._closed = False

    def read(
        self, path: Path, filename: str, *, max_tokens: int, overlap: int, window: int, stop: threading.Event
    ) -> Planned:
        """Parse and chunk one file in a reader; raises ``ParseError``, ``Stopped`` or ``RuntimeError``."""
        job = {"path": str(path), "filename": filename, "max_tokens": max_tokens, "overlap": overlap, "window": window}
        reader = self._borrow()
        try:
            try:
                answer = reader.ask(job, self.config.timeout_seconds, stop, filename, self.config)
            except _Gone:  # an idle reader that had exited: one fresh try
                reader.kill()
                reader = _Reader.start(self.config)
                answer = reader.ask(job, self.config.timeout_seconds, stop, filename, self.config)
            if answer.get("retire"):
                reader.kill()  # it ran out of memory and exits: never lend it again
        except BaseException:
            reader.kill()
            raise
        finally:
            self._give_back(reader)
        if "error" in answer:
            error = answer["error"]
            if error.get("code") in ("invalid_file", "unsupported_file"):
                raise ParseError(error["code"], str(error["message"]))
            raise RuntimeError(f"the file reader failed: {error.get('message')}")
        segments = list(answer["segments"])
        text = "\n\n".join(segments)
        windows = [Window(int(s), int(e), int(t)) for s, e, t in answer["windows"]]
        chunks = [
            Chunk(i, int(c[0]), int(c[1]), int(c[2]), tuple(int(w) for w in c[3]))
            for i, c in enumerate(answer["chunks"])
        ]
        return Planned(segments, ChunkPlan(text, chunks, windows))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for reader in idle:
            reader.close()

    def _borrow(self) -> _Reader:
        with self._lock:
            while self._idle:
                reader = self._idle.pop()
                if reader.alive():
                    return reader
        return _Reader.start(self.config)

    def _give_back(self, reader: _Reader) -> None:
        with self._lock:
            if reader.alive() and not self._closed and len(self._idle) < self.keep:
                self._idle.append(reader)
                return
        reader.close()


class _Gone(Exception):
    """The reader had exited before it was given the file."""


class _Reader:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @classmethod
    def start(cls, config: ReaderConfig) -> _Reader:
        env = {
            # Only what Python needs to start: the server's keys (API, upstream, database) stay out of
            # reach of whatever a document might make its parser do.
            **{k: v for k, v in os.environ.items() if k in _PASSED_ENV},
            # One thread each: every thread's stack and malloc arena count against the address-space limit.
            "RAYON_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "RUST_BACKTRACE": "0",
        }
        setup = orjson.dumps({**asdict(config), "limits": asdict(config.limits)}).decode()
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistantd.tools.file_search.worker", setup],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # its log lines go where the server's do
            env=env,
            close_fds=True,
        )
        return cls(proc)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(
        self, job: dict[str, Any], timeout: float, stop: threading.Event, filename: str, config: ReaderConfig
    ) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            _write_frame(self.proc.stdin, job)
        except OSError:
            raise _Gone() from None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        buffer = bytearray()
        need = _HEADER.size
        size: int | None = None
        while True:
            if stop.is_set():
                raise Stopped()
            left = deadline - time.monotonic()
            if left <= 0:
                raise ParseError(
                    "invalid_file",
                    f"'{filename}' took longer than {timeout:g} s to read (the ingest_file_timeout_seconds "
                    "limit); it was stopped.",
                )
            ready, _, _ = select.select([fd], [], [], min(POLL_SECONDS, left))
            if not ready:
                continue
            data = os.read(fd, max(1 << 16, need - len(buffer)))
            if not data:
                raise self._died(filename, config)
            buffer += data
            if size is None and len(buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buffer)
                need = _HEADER.size + size
            if size is not None and len(buffer) >= need:
                answer: dict[str, Any] = orjson.loads(bytes(buffer[_HEADER.size : need]))
                return answer

    def _died(self, filename: str, config: ReaderConfig) -> ParseError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        log.warning("file reader exited while reading file=%r returncode=%s", filename, self.proc.returncode)
        return ParseError(
            "invalid_file",
            f"'{filename}' could not be read within the memory one file may use ({config.memory_mb} MB, the "
            "ingest_worker_memory_mb limit); its reader was stopped.",
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._close_pipes()

    def close(self) -> None:
        """Ask an idle reader to exit (end of its input), killing it if it does not."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _write_frame(out: IO[bytes], obj: Any) -> None:
    body = orjson.dumps(obj)
    out.write(_HEADER.pack(len(body)) + body)
    out.flush()


def _read_frame(source: IO[bytes]) -> Any:
    header = source.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    return orjson.loads(source.read(size))


# --- the reader's side ---------------------------------------------------------------------------


def _limit_memory(megabytes: int) -> None:
    import resource

    cap = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _tokenizer(config: dict[str, Any]) -> Tokenizer:
    if config.get("tokenizer_json"):
        from assistantd.tools.file_search.chunk import WordPieceTokenizer

        return WordPieceTokenizer(Path(config["tokenizer_json"]))
    return RegexTokenizer()


def _answer(job: dict[str, Any], limits: Limits, max_chunks: int, tokenizer: Tokenizer) -> dict[str, Any]:
    filename = str(job["filename"])
    document = parse(Path(job["path"]), filename, limits)
    plan = plan_chunks(
        document.text,
        tokenizer,
        max_tokens=int(job["max_tokens"]),
        overlap=int(job["overlap"]),
        window_tokens=int(job["window"]),
    )
    if len(plan.chunks) > max_chunks:
        raise ParseError(
            "invalid_file",
            f"'{filename}' makes more than {max_chunks} chunks (the ingest_max_chunks limit); split it into "
            "smaller files or use larger chunks.",
        )
    return {
        "segments": document.segments,
        "chunks": [(c.start, c.end, c.tokens, c.windows) for c in plan.chunks],
        "windows": [(w.start, w.end, w.tokens) for w in plan.windows],
    }


def main() -> None:
    config = orjson.loads(sys.argv[1])
    # Frames go on a private copy of stdout; fd 1 then points at stderr, so nothing a library prints
    # can corrupt them.
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the server, which then closes us
    limits = Limits(**config["limits"])
    tokenizer = _tokenizer(config)  # loaded before the cap, so it is paid once, not per file
    _limit_memory(int(config["memory_mb"]))
    source = sys.stdin.buffer
    while True:
        job = _read_frame(source)
        if job is None:
            return  # the server closed the pipe (or is gone)
        try:
            answer = _answer(job, limits, int(config["max_chunks"]), tokenizer)
        except ParseError as exc:
            answer = {"error": {"code": exc.code, "message": exc.message}}
        except MemoryError:
            answer = {
                "error": {
                    "code": "invalid_file",
                    "message": f"'{job['filename']}' could not be read within the memory one file may use "
                    f"({config['memory_mb']} MB, the ingest_worker_memory_mb limit).",
                },
                "retire": True,
            }
            _write_frame(frames, answer)
            return  # a fresh reader takes over: this one's heap may stay fragmented near its cap
        except Exception as exc:  # a bug of ours or a parser's: the server logs it as a server error
            answer = {"error": {"code": "server_error", "message": f"{type(exc).__name__}: {exc}"}}
        _write_frame(frames, answer)


if __name__ == "__main__":
    main()
