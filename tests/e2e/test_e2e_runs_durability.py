"""Runs outlive their clients and their servers.

Two servers on one PostgreSQL database share runs: a run started on one is read, listed and
cancelled through the other, and a server killed with SIGKILL mid-run has its run taken over by the
other once the lease lapses: it resumes from its last completed step, nothing completed is asked of
the model again. On SQLite, the restarted server takes it over at start-up. A client that goes away
mid-stream does not stop its run.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from .remote import E2E_MARKS, KEY_A, PROJECT_A, RemoteServer, make_client
from .runs_support import (
    FUNCTION_TOOLS,
    ScriptedUpstream,
    assert_unlocked,
    check_clean_exit,
    make_assistant,
    new_model,
    server_flags,
    wait_for,
    wait_status,
)

pytestmark = E2E_MARKS

# Short enough to keep the test quick, long enough that a busy machine never lets a live server's lease
# lapse (it is renewed every third of it).
LEASE = ["--run-lease-seconds", "4", "--reap-interval-seconds", "0.5"]
STOCK_CALL = {"tool_calls": [{"name": "CheckOutOfStock", "arguments": "{}"}]}


class Servers:
    """Servers a test starts itself; each is stopped (and checked) at the end unless it was killed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[RemoteServer] = []
        self.killed: set[int] = set()

    def start(self, name: str, *, database_url: str = "", extra_args: list[str]) -> RemoteServer:
        server = RemoteServer(
            name, self.root / name, database_url=database_url, api_keys=f"{KEY_A}:{PROJECT_A}", extra_args=extra_args
        )
        server.workdir.mkdir(parents=True, exist_ok=True)
        server.start()
        self.started.append(server)
        return server

    def kill(self, server: RemoteServer) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        assert server.proc.wait(timeout=30) == -signal.SIGKILL
        self.killed.add(id(server))
        server.stop()  # only forgets it: the process is gone

    def restart(self, server: RemoteServer) -> None:
        """The same server (same data dir and flags) started again."""
        self.killed.discard(id(server))
        server.start()

    def stop_all(self) -> None:
        for server in self.started:
            if id(server) not in self.killed:
                check_clean_exit(server, server.stop())


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def start_held_run(client: openai.OpenAI, upstream: ScriptedUpstream, model: str) -> tuple[str, str, str]:
    """A run that called a function, got its output, and is now held mid-answer: (thread, run, call).
    The model's next turn (the run taken over) answers "and nothing else"."""
    upstream.script(
        model, STOCK_CALL, {"chunks": ["Oat", " milk", " is", " out"], "hold": True}, {"text": "and nothing else."}
    )
    assistant = make_assistant(client, model, tools=FUNCTION_TOOLS)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "What is out of stock?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
    assert run.status == "requires_action"
    call = run.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
    client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "oat milk"}]
    )
    upstream.wait_requests(model, 2)

    def streamed_text_saved() -> bool:
        # Saved while it streams (every --stream-save-seconds), so a kill -9 from here on keeps it.
        found = client.beta.threads.messages.list(thread.id, run_id=run.id).data
        return bool(found and found[0].content and found[0].content[0].text.value == "Oat")  # type: ignore[union-attr]

    wait_for("the held answer's first words in its stored message", streamed_text_saved)
    return thread.id, run.id, call.id


def check_resumed_mid_answer(
    client: openai.OpenAI, upstream: ScriptedUpstream, model: str, thread_id: str, run_id: str, call_id: str
) -> openai.types.beta.threads.Run:
    """The run was taken over and finished: the tool step is not run again, the interrupted message is
    closed with the words saved before the kill, and the model continued from them, asked once more."""
    run = wait_status(client, thread_id, run_id)
    assert run.status == "completed", run.last_error
    assert run.last_error is None and run.failed_at is None
    tool_step, cut_step, next_step = client.beta.threads.runs.steps.list(run_id, thread_id=thread_id, order="asc").data
    assert (tool_step.type, tool_step.status) == ("tool_calls", "completed")
    (call,) = tool_step.step_details.tool_calls  # type: ignore[union-attr]
    assert (call.id, call.function.output) == (call_id, "oat milk")  # type: ignore[union-attr]
    assert [(s.type, s.status) for s in (cut_step, next_step)] == [("message_creation", "completed")] * 2
    cut, rest = client.beta.threads.messages.list(thread_id, run_id=run_id, order="asc").data
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "run_failed"  # type: ignore[union-attr]
    assert cut.content[0].text.value == "Oat"  # type: ignore[union-attr]  # streamed before the kill
    assert rest.status == "completed" and rest.content[0].text.value == "and nothing else."  # type: ignore[union-attr]
    sent = upstream.requests(model)
    assert len(sent) == 3  # the function call, the answer cut by the kill, the answer resumed: none twice
    assert sent[2]["messages"][: len(sent[1]["messages"])] == sent[1]["messages"]
    assert [m["role"] for m in sent[2]["messages"][len(sent[1]["messages"]) :]] == ["assistant"]
    return run


def test_two_servers_on_one_postgres_share_runs_and_survive_a_kill(
    servers: Servers, upstream: ScriptedUpstream, postgres: Callable[[], str]
) -> None:
    database = postgres()
    a = servers.start("a", database_url=database, extra_args=server_flags(upstream, *LEASE))
    b = servers.start("b", database_url=database, extra_args=server_flags(upstream, *LEASE))
    with make_client(a, KEY_A) as on_a, make_client(b, KEY_A) as on_b:
        # Started on A, seen and cancelled through B; A, which executes it, notices.
        model = new_model()
        upstream.script(model, {"chunks": ["never", " finished"], "hold": True})
        assistant = make_assistant(on_a, model)
        thread = on_a.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
        run = on_a.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
        upstream.wait_requests(model, 1)
        assert on_b.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"
        assert [r.id for r in on_b.beta.threads.runs.list(thread.id).data] == [run.id]
        with pytest.raises(openai.BadRequestError, match="already has an active run"):
            on_b.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
        assert on_b.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
        cancelled = wait_status(on_b, thread.id, run.id)
        upstream.release(model)
        assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
        assert_unlocked(on_b, thread.id)

        # A cancel through B that lands just before A's model turn ends in a function call: A must not
        # write requires_action over it (the turn ends before A's cancel poll can have seen it).
        model = new_model()
        upstream.script(model, {**STOCK_CALL, "hold": True})
        tools_assistant = make_assistant(on_a, model, tools=FUNCTION_TOOLS)
        run = on_a.beta.threads.runs.create(thread.id, assistant_id=tools_assistant.id)
        upstream.wait_requests(model, 1)
        assert on_b.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
        upstream.release(model)
        ended = wait_status(on_b, thread.id, run.id, "requires_action", "cancelled", "completed", "failed")
        assert ended.status == "cancelled" and ended.required_action is None
        (step,) = on_b.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
        assert step.status == "cancelled"
        assert_unlocked(on_b, thread.id)

        # Waiting for outputs after A's model turn, resumed through B: B executes it and streams it.
        model = new_model()
        upstream.script(model, STOCK_CALL, {"chunks": ["resumed", " on", " B"]})
        waiting = on_a.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=make_assistant(on_a, model, tools=FUNCTION_TOOLS).id, poll_interval_ms=50
        )
        assert waiting.status == "requires_action"
        call = waiting.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
        with on_b.beta.threads.runs.submit_tool_outputs_stream(
            thread_id=thread.id, run_id=waiting.id, tool_outputs=[{"tool_call_id": call.id, "output": "x"}]
        ) as stream:
            assert "".join(stream.text_deltas) == "resumed on B"
            assert stream.get_final_run().status == "completed"
        assert on_a.beta.threads.runs.retrieve(waiting.id, thread_id=thread.id).status == "completed"

        # A dies mid-answer (SIGKILL); B takes the run over once A's lease lapses and finishes it.
        model = new_model()
        thread_id, run_id, call_id = start_held_run(on_a, upstream, model)
        servers.kill(a)
        check_resumed_mid_answer(on_b, upstream, model, thread_id, run_id, call_id)
        upstream.release(model)

        # The thread is usable again, through the surviving server.
        upstream.script(model, {"text": "back in business"})
        again = on_b.beta.threads.runs.create_and_poll(
            thread_id=thread_id,
            assistant_id=on_b.beta.threads.runs.retrieve(run_id, thread_id=thread_id).assistant_id,
            poll_interval_ms=50,
        )
        assert again.status == "completed"
        assert on_b.beta.threads.messages.list(thread_id).data[0].content[0].text.value == "back in business"  # type: ignore[union-attr]
    assert f"run taken over run_id={run_id} status=in_progress" in b.log_text()


def test_sqlite_server_killed_mid_run_finishes_it_when_restarted(servers: Servers, upstream: ScriptedUpstream) -> None:
    server = servers.start("solo", extra_args=server_flags(upstream))
    model = new_model()
    with make_client(server, KEY_A) as client:
        thread_id, run_id, call_id = start_held_run(client, upstream, model)
        assistant_id = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id).assistant_id
    servers.kill(server)
    upstream.release(model)

    servers.restart(server)  # same data dir
    with make_client(server, KEY_A) as client:
        # Taken over at start-up: no lease to wait for with one process.
        check_resumed_mid_answer(client, upstream, model, thread_id, run_id, call_id)
        upstream.script(model, {"text": "restarted"})
        again = client.beta.threads.runs.create_and_poll(
            thread_id=thread_id, assistant_id=assistant_id, poll_interval_ms=50
        )
        assert again.status == "completed"


def test_client_gone_mid_stream_does_not_stop_the_run(
    runs_server: RemoteServer, rclient: openai.OpenAI, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(model, {"chunks": ["first", " second", " third"], "hold": True})
    assistant = make_assistant(rclient, model)
    thread = rclient.beta.threads.create(messages=[{"role": "user", "content": "Stream"}])
    seen: list[str] = []
    with rclient.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        for event in stream:
            seen.append(event.event)
            if event.event == "thread.message.delta":
                break  # the client leaves: the response is closed on leaving the block
        run_id = stream.current_run.id  # type: ignore[union-attr]
    assert seen[-1] == "thread.message.delta" and "thread.run.completed" not in seen
    assert rclient.beta.threads.runs.retrieve(run_id, thread_id=thread.id).status == "in_progress"

    upstream.release(model)
    run = wait_status(rclient, thread.id, run_id)
    assert run.status == "completed"
    (message,) = rclient.beta.threads.messages.list(thread.id, run_id=run_id).data
    assert message.status == "completed" and message.content[0].text.value == "first second third"  # type: ignore[union-attr]
