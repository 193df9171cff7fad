"""Runs outlive the server executing them, in process on both databases: a run whose lease lapsed is taken
over by the (surviving) engine instead of failed. ``queued`` runs, ``in_progress`` resumes from its last
completed step with the interrupted message closed ``incomplete`` and its text kept, a tool call with
effects in flight ends the run ``failed`` saying why, and a graceful stop hands its runs over to the next
server (on SQLite: the same data dir started again). Nothing completed is asked of the model twice.

A lapse is made by rewriting the run's lease behind the engine's back (``lease_owner`` another server's,
``lease_until`` long past): the engine's next renewal learns the run is no longer its own and stops it
without writing, as a server that was paused past its lease would, and the reaper takes it over.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlean
from conftest import Api, MakeApi, query
from engine_support import FakeChatModel, Gate, assistant, messages, ok, steps, thread, wait_for, wait_run
from starlette.testclient import TestClient

from assistantd.app import create_app
from assistantd.settings import load_settings

FAST = {"run_lease_seconds": 0.6, "reap_interval_seconds": 0.1, "stream_save_seconds": 0.05}
FUNCTION = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"what": {"type": "string"}}}},
}


@pytest.fixture
def model() -> Any:
    fake = FakeChatModel()
    yield fake
    fake.open_all()


def write(api: Api, sql: str, params: tuple[Any, ...]) -> None:
    if api.backend == "sqlite":
        path = api.database_url.removeprefix("sqlite:").removeprefix("//")
        with contextlib.closing(sqlean.connect(path)) as conn:
            conn.execute(sql, params)
            conn.commit()
    else:
        with psycopg.connect(api.database_url) as conn:
            conn.execute(sql.replace("?", "%s"), params)


def lapse(api: Api, run_id: str, **state: Any) -> None:
    """The run's server is gone: its lease belongs to nobody alive and ran out long ago. ``state`` keys are
    merged into the stored run state in the same write."""
    (stored,) = api.sql("SELECT state FROM runs WHERE id = ?", (run_id,))[0]
    merged = {**json.loads(stored), **state}
    write(
        api,
        "UPDATE runs SET lease_owner = 'gone', lease_until = 1, state = ? WHERE id = ?",
        (json.dumps(merged), run_id),
    )


def start(api: Api, *texts: str, **body: Any) -> tuple[str, str]:
    asst = assistant(api.client, "m", tools=body.pop("tools", []))
    t = thread(api.client, *texts)
    run = ok(api.client.post(f"/v1/threads/{t['id']}/runs", json={"assistant_id": asst["id"], **body}))
    return t["id"], run["id"]


def held_mid_answer(api: Api, model: FakeChatModel, then: dict[str, Any]) -> tuple[str, str]:
    """A run whose model stopped after its first words ("Half", saved into the open message); ``then`` is
    the model's next turn."""
    gate = Gate()
    model.script("m", {"chunks": ["Half", " way", " there"], "gate": gate}, then)
    t, run_id = start(api, "go on")
    gate.wait_reached()

    def saved() -> bool:
        found = [m for m in messages(api.client, t) if m["role"] == "assistant"]
        return bool(found and found[0]["content"] and found[0]["content"][0]["text"]["value"] == "Half")

    wait_for("the first words in the stored message", saved)
    return t, run_id


def assistant_texts(api: Api, t: str) -> list[tuple[str, str, Any]]:
    return [
        (m["status"], m["content"][0]["text"]["value"], m["incomplete_details"])
        for m in messages(api.client, t)
        if m["role"] == "assistant"
    ]


def test_an_in_progress_run_resumes_from_its_last_completed_step(make_api: MakeApi, model: FakeChatModel) -> None:
    api = make_api(chat_model=model, **FAST)
    t, run_id = held_mid_answer(api, model, {"text": "and the rest."})
    lapse(api, run_id)

    run = wait_run(api.client, t, run_id)
    assert run["status"] == "completed", run["last_error"]
    assert run["last_error"] is None and run["failed_at"] is None
    assert assistant_texts(api, t) == [
        ("incomplete", "Half", {"reason": "run_failed"}),  # closed with what was saved, never rewritten
        ("completed", "and the rest.", None),
    ]
    assert [(s["type"], s["status"]) for s in steps(api.client, t, run_id)] == [
        ("message_creation", "completed"),
        ("message_creation", "completed"),
    ]
    # The model was asked once more, and read what it had said so far.
    first, second = model.requests["m"]
    assert second["messages"][: len(first["messages"])] == first["messages"]
    (said,) = second["messages"][len(first["messages"]) :]
    assert said["role"] == "assistant" and "Half" in json.dumps(said["content"])
    assert api.sql("SELECT lease_owner FROM runs WHERE id = ?", (run_id,)) == [(None,)]


def test_a_completed_tool_step_is_not_run_again(make_api: MakeApi, model: FakeChatModel) -> None:
    api = make_api(chat_model=model, **FAST)
    gate = Gate()
    model.script(
        "m",
        {"tool_calls": [{"name": "lookup", "arguments": '{"what": "x"}'}]},
        {"chunks": ["Looked", " it", " up"], "gate": gate},
        {"text": "done."},
    )
    t, run_id = start(api, "look", tools=[FUNCTION])
    waiting = wait_run(api.client, t, run_id, ("requires_action",))
    (call,) = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    ok(
        api.client.post(
            f"/v1/threads/{t}/runs/{run_id}/submit_tool_outputs",
            json={"tool_outputs": [{"tool_call_id": call["id"], "output": "42"}]},
        )
    )
    gate.wait_reached()
    wait_for("the first words saved", lambda: any(m["content"] for m in messages(api.client, t)[1:]))
    lapse(api, run_id)

    assert wait_run(api.client, t, run_id)["status"] == "completed"
    assert [(s["type"], s["status"]) for s in steps(api.client, t, run_id)] == [
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
        ("message_creation", "completed"),
    ]
    assert len(model.requests["m"]) == 3
    last = model.requests["m"][2]["messages"]
    assert [m["role"] for m in last[-3:]] == ["assistant", "tool", "assistant"]
    assert last[-2] == {"role": "tool", "tool_call_id": call["id"], "content": "42"}


def test_a_tool_call_with_effects_in_flight_is_not_repeated(make_api: MakeApi, model: FakeChatModel) -> None:
    api = make_api(chat_model=model, **FAST)
    t, run_id = held_mid_answer(api, model, {"text": "never asked"})
    lapse(api, run_id, in_flight=["code_interpreter"])

    run = wait_run(api.client, t, run_id)
    assert run["status"] == "failed" and run["failed_at"]
    assert run["last_error"]["code"] == "server_error"
    assert "code_interpreter call was running" in run["last_error"]["message"]
    assert "not repeated" in run["last_error"]["message"]
    assert len(model.requests["m"]) == 1
    assert assistant_texts(api, t) == [("incomplete", "Half", {"reason": "run_failed"})]
    assert [s["status"] for s in steps(api.client, t, run_id)] == ["failed"]
    # The thread is usable again.
    model.turns["m"].clear()
    model.script("m", {"text": "fresh"})
    again = ok(api.client.post(f"/v1/threads/{t}/runs", json={"assistant_id": run["assistant_id"]}))
    assert wait_run(api.client, t, again["id"])["status"] == "completed"


def test_a_run_whose_servers_keep_dying_is_not_taken_over_forever(make_api: MakeApi, model: FakeChatModel) -> None:
    api = make_api(chat_model=model, **FAST)
    t, run_id = held_mid_answer(api, model, {"text": "never asked"})
    lapse(api, run_id, takeovers=3)  # three servers already died under it

    run = wait_run(api.client, t, run_id)
    assert run["status"] == "failed" and run["last_error"]["code"] == "server_error"
    assert "stopped 4 times" in run["last_error"]["message"]
    assert len(model.requests["m"]) == 1


def test_takeovers_are_counted_in_the_run_state(make_api: MakeApi, model: FakeChatModel) -> None:
    api = make_api(chat_model=model, **FAST)
    t, run_id = held_mid_answer(api, model, {"text": "resumed."})
    lapse(api, run_id)
    assert wait_run(api.client, t, run_id)["status"] == "completed"
    (state,) = api.sql("SELECT state FROM runs WHERE id = ?", (run_id,))[0]
    assert json.loads(state)["takeovers"] == 1


def test_a_queued_run_left_behind_simply_runs(make_api: MakeApi, model: FakeChatModel) -> None:
    """Its server died between committing the client's tool outputs (the run back to ``queued``) and
    executing it: what submit_tool_outputs stores, without the execution."""
    api = make_api(chat_model=model, **FAST)
    model.script("m", {"tool_calls": [{"name": "lookup", "arguments": "{}"}]}, {"text": "answered"})
    t, run_id = start(api, "look", tools=[FUNCTION])
    waiting = wait_run(api.client, t, run_id, ("requires_action",))
    (call,) = waiting["required_action"]["submit_tool_outputs"]["tool_calls"]
    (step,) = steps(api.client, t, run_id)
    step["step_details"]["tool_calls"][0]["function"]["output"] = "out"
    step.update(status="completed", completed_at=step["created_at"])
    write(api, "UPDATE run_steps SET data = ? WHERE id = ?", (json.dumps(step), step["id"]))
    queued = {**waiting, "status": "queued", "required_action": None}
    (stored,) = api.sql("SELECT state FROM runs WHERE id = ?", (run_id,))[0]
    state = {**json.loads(stored), "pending_step_id": None}
    write(
        api,
        "UPDATE runs SET status = 'queued', data = ?, state = ?, lease_owner = 'gone', lease_until = 1 WHERE id = ?",
        (json.dumps(queued), json.dumps(state), run_id),
    )

    assert wait_run(api.client, t, run_id)["status"] == "completed"
    assert assistant_texts(api, t) == [("completed", "answered", None)]
    assert model.requests["m"][1]["messages"][-1] == {"role": "tool", "tool_call_id": call["id"], "content": "out"}


def test_a_graceful_stop_hands_its_runs_over_to_the_next_server(
    make_api: MakeApi, model: FakeChatModel, database_url: str, tmp_path: Path
) -> None:
    values = {"data_dir": str(tmp_path / "data"), "database_url": database_url, "code_interpreter_pool_size": 0}
    settings = load_settings(overrides={**values, **FAST}, environ={})
    gate = Gate()
    model.script("m", {"chunks": ["Before", " the", " stop"], "gate": gate}, {"text": "after the stop."})
    # A loopback name, as a local client would send (an open server refuses other Host headers).
    with TestClient(create_app(settings, chat_model=model), base_url="http://localhost") as first:
        asst = ok(first.post("/v1/assistants", json={"model": "m"}))
        t = ok(first.post("/v1/threads", json={"messages": [{"role": "user", "content": "go"}]}))["id"]
        run_id = ok(first.post(f"/v1/threads/{t}/runs", json={"assistant_id": asst["id"]}))["id"]
        gate.wait_reached()
    model.gates.remove(gate)  # its loop is gone with the first server
    # Stopped (lifespan exit): the run is neither failed nor held by anyone, its text so far is stored.
    (status, owner, data) = query(database_url, "SELECT status, lease_owner, data FROM runs WHERE id = ?", (run_id,))[0]
    assert (status, owner) == ("in_progress", None) and json.loads(data)["failed_at"] is None
    (text,) = query(database_url, "SELECT data FROM messages WHERE run_id = ?", (run_id,))[0]
    assert json.loads(text)["content"][0]["text"]["value"] == "Before"

    api = make_api(chat_model=model, **FAST)  # the next server (on SQLite: the same data dir restarted)
    run = wait_run(api.client, t, run_id)
    assert run["status"] == "completed", run["last_error"]
    assert assistant_texts(api, t) == [
        ("incomplete", "Before", {"reason": "run_failed"}),
        ("completed", "after the stop.", None),
    ]
    assert len(model.requests["m"]) == 2
