"""Building run steps and assistant messages, and ending a run with everything it left open.

``close_run`` is the one way a run reaches a terminal state (or ``requires_action``'s expiry), whether
its own executor ends it or a reaper finds it orphaned: open messages become ``incomplete``, open steps
take the run's fate, the lease is released, and the thread is unlocked in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from assistantd.clock import now
from assistantd.ids import new_id
from assistantd.store import Conn
from assistantd.store import objects as rows
from assistantd.store import runs as run_rows


def new_step(run: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id("step"),
        "object": "thread.run.step",
        "created_at": now(),
        "run_id": run["id"],
        "assistant_id": run["assistant_id"],
        "thread_id": run["thread_id"],
        "type": details["type"],
        "status": "in_progress",
        "cancelled_at": None,
        "completed_at": None,
        "expired_at": None,
        "failed_at": None,
        "last_error": None,
        "step_details": details,
        "usage": None,
        "metadata": {},
    }


def new_message(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": new_id("message"),
        "object": "thread.message",
        "created_at": now(),
        "assistant_id": run["assistant_id"],
        "thread_id": run["thread_id"],
        "run_id": run["id"],
        "status": "in_progress",
        "incomplete_details": None,
        "completed_at": None,
        "incomplete_at": None,
        "role": "assistant",
        "content": [],
        "attachments": [],
        "metadata": {},
    }


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": {"value": text, "annotations": []}}


# How each terminal run status closes what the run left open.
_STEP_STATUS = {
    "cancelled": "cancelled",
    "failed": "failed",
    "expired": "expired",
    "incomplete": "cancelled",
    "completed": "completed",
}
_MESSAGE_REASON = {
    "cancelled": "run_cancelled",
    "failed": "run_failed",
    "expired": "run_expired",
    "incomplete": "max_tokens",
}
_RUN_STAMP = {
    "cancelled": "cancelled_at",
    "failed": "failed_at",
    "expired": None,
    "incomplete": None,
    "completed": "completed_at",
}


@dataclass
class Closed:
    """What ``close_run`` changed, for the caller to announce in this order."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)


def close_run(
    conn: Conn,
    project: str,
    run: dict[str, Any],
    state: dict[str, Any],
    status: str,
    *,
    last_error: dict[str, str] | None = None,
    incomplete_reason: str | None = None,
    scan_open: bool = True,
) -> Closed:
    """``scan_open=False`` when the caller knows the run left nothing open (its executor completing it)."""
    moment = now()
    closed = Closed()
    for raw in (
        ()
        if not scan_open
        else conn.fetchall(
            "SELECT data FROM messages WHERE run_id = ? AND project_id = ? AND thread_id = ? ORDER BY seq",
            (run["id"], project, run["thread_id"]),
        )
    ):
        message = orjson.loads(raw[0])
        if message["status"] != "in_progress":
            continue
        if status == "completed":
            message.update(status="completed", completed_at=moment)
        else:
            message.update(
                status="incomplete", incomplete_at=moment, incomplete_details={"reason": _MESSAGE_REASON[status]}
            )
        if not message["content"]:
            message["content"] = [text_block("")]  # the SDK's stream helper reads content[0]
        rows.replace(conn, rows.MESSAGES, project, message)
        closed.messages.append(message)
    step_status = _STEP_STATUS[status]
    for step in run_rows.steps_of(conn, project, run["id"]) if scan_open else ():
        if step["status"] != "in_progress":
            continue
        step["status"] = step_status
        step[f"{step_status}_at"] = moment
        if step_status == "failed":
            step["last_error"] = last_error
        run_rows.save_step(conn, project, step)
        closed.steps.append(step)
    run["status"] = status
    run["required_action"] = None
    stamp = _RUN_STAMP[status]
    if stamp:
        run[stamp] = moment
    if last_error is not None:
        run["last_error"] = last_error
    if incomplete_reason is not None:
        run["incomplete_details"] = {"reason": incomplete_reason}
    usage = state.get("usage")
    if usage:
        run["usage"] = usage
    run_rows.save(conn, project, run, state, release=True)
    closed.run = run
    return closed
