"""Taking over a run whose server is gone (its lease lapsed, or it shut down and handed the run over).

``adopt`` runs in the transaction that claimed the run and decides what becomes of it:

- ``queued``: nothing to repair; it simply runs here.
- ``cancelling``: the cancel is honoured (``cancelled``).
- ``in_progress``: it resumes from its last completed step. The message the dead server was streaming
  is closed ``incomplete`` with the text it had saved (every ``stream_save_seconds``), and its
  message_creation step ``completed``, so the next model call reads that text and goes on from it; a
  tool step still open (the model was writing its calls, or a repeatable tool such as file search was
  running) is closed ``failed`` and left out of the model's context, so the model asks again.
- ``in_progress`` with a tool call in flight that may have had effects (``RunState.in_flight``: the code
  interpreter was executing): repeating it is not safe, so the run ends ``failed`` saying so.

Completed steps are never run again: they are the context the resumed execution starts from.
``requires_action`` runs hold no lease and simply keep waiting for their outputs. A run whose servers
keep dying under it (``MAX_TAKEOVERS`` lapsed leases; a graceful hand-over does not count) ends
``failed`` rather than taking down server after server.
"""

from __future__ import annotations

from typing import Any

import orjson

from assistantd.clock import now
from assistantd.engine.records import Closed, close_run, text_block
from assistantd.engine.state import RunState
from assistantd.store import Conn
from assistantd.store import objects as rows
from assistantd.store import runs as run_rows

MAX_TAKEOVERS = 3

INTERRUPTED_STEP = (
    "The server executing this step stopped before it finished; another server took the run over and "
    "asked the model again."
)


def unsafe_message(tools: list[str]) -> str:
    return (
        f"The server executing this run stopped while a {', '.join(sorted(set(tools)))} call was running; "
        "it may have had effects, so it was not repeated and the run was not resumed. Messages and steps "
        "written before that are kept; start a new run to go on."
    )


def adopt(conn: Conn, project: str, run_id: str, *, lapsed: bool) -> Closed | None:
    """Repair a claimed run for execution here; the ``Closed`` result when it ended instead (cancelled, or
    failed as unsafe to resume), None when it should be executed (it is ``queued`` or ``in_progress``).
    ``lapsed``: its server died (rather than handing it over), which counts towards ``MAX_TAKEOVERS``."""
    record = run_rows.load(conn, project, run_id)
    if record is None:
        return Closed()
    run, state = record.run, RunState.from_json(record.state)
    status = run["status"]
    if status == "cancelling":
        return close_run(conn, project, run, record.state, "cancelled")
    if lapsed:
        if state.takeovers >= MAX_TAKEOVERS:
            said = (
                f"The servers executing this run stopped {state.takeovers + 1} times before it finished; it was "
                "not taken over again. Messages and steps written before that are kept."
            )
            return close_run(
                conn, project, run, record.state, "failed", last_error={"code": "server_error", "message": said}
            )
        state.takeovers += 1
        record.state = state.to_json()
        run_rows.save(conn, project, run, record.state)
    if status != "in_progress":
        return None  # queued
    if state.in_flight:
        return close_run(
            conn, project, run, record.state, "failed",
            last_error={"code": "server_error", "message": unsafe_message(state.in_flight)},
        )  # fmt: skip
    moment = now()
    with_text: set[str] = set()
    for raw in conn.fetchall(
        "SELECT data FROM messages WHERE run_id = ? AND project_id = ? AND thread_id = ? ORDER BY seq",
        (run_id, project, run["thread_id"]),
    ):
        message: dict[str, Any] = orjson.loads(raw[0])
        if message["status"] != "in_progress":
            continue
        text = "".join(b["text"]["value"] for b in message["content"] if b.get("type") == "text")
        if text:
            with_text.add(message["id"])
        else:
            message["content"] = [text_block("")]  # the SDK's stream helper reads content[0]
        # The spec has no reason for an interrupted execution; the execution that wrote it did fail.
        message.update(status="incomplete", incomplete_at=moment, incomplete_details={"reason": "run_failed"})
        rows.replace(conn, rows.MESSAGES, project, message)
    for step in run_rows.steps_of(conn, project, run_id):
        if step["status"] != "in_progress":
            continue
        details = step["step_details"]
        if details["type"] == "message_creation" and details["message_creation"]["message_id"] in with_text:
            # Its text is what the model said so far: kept in the context, so the model continues it.
            step.update(status="completed", completed_at=moment)
        else:
            step.update(
                status="failed", failed_at=moment, last_error={"code": "server_error", "message": INTERRUPTED_STEP}
            )
        run_rows.save_step(conn, project, step)
    return None


def in_context(step: dict[str, Any]) -> bool:
    """Whether a stored step is part of what the model is told when the run goes on: steps closed
    ``failed`` by a takeover were interrupted and are asked for again."""
    return bool(step["status"] != "failed")
