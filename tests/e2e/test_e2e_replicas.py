"""Three replicas on one PostgreSQL, each with its own data dir: any replica serves any file.

Every flow crosses replicas through the official SDK: a file uploaded on one is downloaded from
another; the code interpreter reads inputs uploaded elsewhere and its outputs are read back through a
third; vector store files uploaded on a replica that ingests nothing are indexed by the others; and a
delete on any replica leaves no bytes in the database nor in any data dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .remote import E2E_MARKS
from .replicas import ReplicaSet, StartReplicas
from .runs_support import ScriptedUpstream, new_model, wait_for, wait_status

pytestmark = E2E_MARKS


def _stores(client: Any) -> Any:
    return client.vector_stores if hasattr(client, "vector_stores") else client.beta.vector_stores


def _blob_rows(rs: ReplicaSet, file_id: str) -> list[tuple[Any, ...]]:
    return rs.sql(
        "SELECT b.key, count(c.seq) FROM blobs b LEFT JOIN blob_chunks c ON c.key = b.key WHERE b.key = %s "
        "GROUP BY b.key",
        (file_id,),
    )


def test_every_replica_is_ready(replicas: ReplicaSet) -> None:
    for server in replicas.servers:
        r = httpx.get(f"{server.url}/health/ready", timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"database": {"status": "ok"}, "file_storage": {"status": "ok"}}


def test_a_file_uploaded_on_one_replica_downloads_whole_from_the_others(replicas: ReplicaSet) -> None:
    # Not a multiple of the store's 1 MiB chunk, with every byte value.
    data = bytes(range(256)) * (5 * 4096 + 17)
    uploaded = replicas.client(0).files.create(file=("big.bin", data), purpose="assistants")
    assert uploaded.bytes == len(data)
    for i in (1, 2):
        assert replicas.client(i).files.retrieve(uploaded.id).bytes == len(data)
        body = replicas.client(i).files.content(uploaded.id).read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert replicas.files_on_disk(uploaded.id) == []  # the bytes are in the database only
    ((_, chunks),) = _blob_rows(replicas, uploaded.id)
    assert chunks == -(-len(data) // (1024 * 1024))


def _code_call(code: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "code_interpreter", "arguments": json.dumps({"code": code})}]}


def test_code_interpreter_reads_inputs_from_one_replica_and_its_outputs_read_back_on_a_third(
    replicas: ReplicaSet, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    code = (
        "import pandas as pd\n"
        "df = pd.read_csv('/mnt/data/sales.csv')\n"
        "df['double'] = df['amount'] * 2\n"
        "df.to_csv('/mnt/data/doubled.csv', index=False)\n"
        "print(df['double'].sum())\n"
    )
    link = "sandbox:/mnt/data/doubled.csv"
    upstream.script(model, _code_call(code), {"text": f"Done: [download]({link})."})
    uploaded = replicas.client(0).files.create(file=("sales.csv", b"amount\n1\n2\n3\n"), purpose="assistants")

    runner = replicas.client(1, timeout=120.0)
    assistant = runner.beta.assistants.create(
        model=model,
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [uploaded.id]}},
    )
    thread = runner.beta.threads.create(messages=[{"role": "user", "content": "Double the sales."}])
    run = runner.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100)
    assert run.status == "completed", run.last_error

    reader = replicas.client(2)
    steps = list(reader.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc"))
    outputs = steps[0].step_details.tool_calls[0].code_interpreter.outputs  # type: ignore[union-attr]
    assert outputs[0].type == "logs" and outputs[0].logs.strip() == "12"  # the input file was in /mnt/data
    message = reader.beta.threads.messages.list(thread_id=thread.id).data[0]
    (annotation,) = message.content[0].text.annotations  # type: ignore[union-attr]
    produced_id = annotation.file_path.file_id  # type: ignore[union-attr]
    assert reader.files.retrieve(produced_id).purpose == "assistants_output"
    assert reader.files.content(produced_id).read() == b"amount,double\n1,2\n2,4\n3,6\n"
    assert replicas.files_on_disk(produced_id) == [] and replicas.files_on_disk(uploaded.id) == []


def test_vector_store_files_uploaded_on_a_replica_that_ingests_nothing_are_all_indexed(
    replicas: ReplicaSet,
) -> None:
    docs = {
        f"doc{i}.txt": f"Document {i} is about {topic}. It has several sentences about {topic}.".encode()
        for i, topic in enumerate(["lighthouses", "sourdough", "owls", "glaciers", "violins", "comets"])
    }
    # Replica 0 runs no ingestion workers: replicas 1 and 2 must read these bytes to index them.
    ids = [replicas.client(0).files.create(file=(n, d), purpose="assistants").id for n, d in docs.items()]
    store = _stores(replicas.client(1)).create(name="across replicas", file_ids=ids[:3])
    for fid in ids[3:]:
        _stores(replicas.client(2)).files.create(vector_store_id=store.id, file_id=fid)

    def all_done() -> Any:
        listed = list(_stores(replicas.client(0)).files.list(vector_store_id=store.id, limit=100))
        return listed if len(listed) == 6 and all(f.status != "in_progress" for f in listed) else None

    listed = wait_for("the six files to be processed", all_done, timeout=120)
    assert {f.id: f.status for f in listed} == dict.fromkeys(ids, "completed"), [f.last_error for f in listed]
    assert _stores(replicas.client(1)).retrieve(store.id).file_counts.completed == 6


@pytest.mark.parametrize(("uploader", "deleter"), [(0, 2), (2, 1)])
def test_a_delete_on_any_replica_leaves_no_bytes_anywhere(replicas: ReplicaSet, uploader: int, deleter: int) -> None:
    data = b"x" * (3 * 1024 * 1024 + 5)
    uploaded = replicas.client(uploader).files.create(file=("gone.bin", data), purpose="assistants")
    other = 3 - uploader - deleter
    assert replicas.client(other).files.content(uploaded.id).read() == data
    assert _blob_rows(replicas, uploaded.id) != []

    deleted = replicas.client(deleter).files.delete(uploaded.id)
    assert deleted.deleted is True
    assert _blob_rows(replicas, uploaded.id) == []
    assert replicas.sql("SELECT count(*) FROM blob_chunks WHERE key = %s", (uploaded.id,)) == [(0,)]
    # Nothing in any data dir at all: no store folder, no spooled copy left behind (sandboxes aside).
    assert replicas.files_on_disk() == []
    for i in range(len(replicas)):
        with pytest.raises(openai.NotFoundError):
            replicas.client(i).files.content(uploaded.id).read()


def test_files_outlive_the_replica_that_received_them(replica_sets: StartReplicas) -> None:
    rs = replica_sets(count=2)
    data = bytes(range(256)) * 9000
    uploaded = rs.client(0).files.create(file=("survivor.bin", data), purpose="assistants")
    rs.kill(0)  # SIGKILL: its disk is as good as gone
    r = httpx.get(f"{rs.servers[1].url}/health/ready", timeout=10)
    assert r.status_code == 200, r.text
    assert rs.client(1).files.content(uploaded.id).read() == data
    assert rs.client(1).files.delete(uploaded.id).deleted is True
    assert _blob_rows(rs, uploaded.id) == []


# --- a replica dies: its runs are taken over by the others ---------------------------------------

TAKEOVER_FLAGS = ["--run-lease-seconds", "3", "--reap-interval-seconds", "0.3", "--stream-save-seconds", "0.05"]
STOCK = {
    "type": "function",
    "function": {"name": "CheckStock", "parameters": {"type": "object", "properties": {}}},
}
STOCK_CALL = {"tool_calls": [{"name": "CheckStock", "arguments": "{}"}]}
ACTIVE = ("queued", "in_progress", "requires_action", "cancelling")


def _saved_text(rs: ReplicaSet, run_id: str) -> str:
    rows = rs.sql("SELECT data FROM messages WHERE run_id = %s ORDER BY seq", (run_id,))
    content = json.loads(rows[-1][0])["content"] if rows else []
    return str(content[0]["text"]["value"]) if content else ""


def _step_shapes(client: Any, thread_id: str, run_id: str) -> list[tuple[str, str]]:
    listed = client.beta.threads.runs.steps.list(run_id, thread_id=thread_id, order="asc").data
    return [(s.type, s.status) for s in listed]


def test_a_killed_replicas_runs_finish_on_the_survivors(
    replica_sets: StartReplicas, upstream: ScriptedUpstream
) -> None:
    rs = replica_sets(count=3, flags=lambda i: TAKEOVER_FLAGS)
    doomed = rs.client(0, timeout=120.0)
    models = {name: new_model() for name in ("streaming", "tools", "waiting", "queued", "code")}
    upstream.script(models["streaming"], {"chunks": ["Streamed", " until", " the", " kill"], "hold": True},
                    {"text": "and finished elsewhere."})  # fmt: skip
    upstream.script(models["tools"], STOCK_CALL, {"chunks": ["Stock", " is", " low"], "hold": True},
                    {"text": "so reorder."})  # fmt: skip
    upstream.script(models["waiting"], STOCK_CALL, {"text": "thanks for the output."})
    upstream.script(models["queued"], STOCK_CALL, {"text": "ran on a survivor."})
    upstream.script(models["code"], _code_call("import time\ntime.sleep(30)\n"), {"text": "never asked"})
    runs: dict[str, tuple[str, str]] = {}  # name -> (thread id, run id)

    def create(name: str, **kwargs: Any) -> tuple[str, str]:
        assistant = doomed.beta.assistants.create(model=models[name], **kwargs)
        thread = doomed.beta.threads.create(messages=[{"role": "user", "content": f"the {name} run"}])
        run = doomed.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
        runs[name] = (thread.id, run.id)
        return runs[name]

    def wait_state(name: str, status: str) -> Any:
        thread_id, run_id = runs[name]
        return wait_status(doomed, thread_id, run_id, status, "completed", "failed", "cancelled", "expired")

    # Streaming: a client follows it on the doomed replica, the model held after its first words.
    assistant = doomed.beta.assistants.create(model=models["streaming"])
    thread = doomed.beta.threads.create(messages=[{"role": "user", "content": "the streaming run"}])
    manager = doomed.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id)
    stream = manager.__enter__()
    events = iter(stream)
    while next(events).event != "thread.message.delta":
        pass
    assert stream.current_run is not None
    runs["streaming"] = (thread.id, stream.current_run.id)

    # Tool-calling: the function's output submitted, the answer held mid-way.
    thread_id, run_id = create("tools", tools=[STOCK])
    call = wait_state("tools", "requires_action").required_action.submit_tool_outputs.tool_calls[0]
    doomed.beta.threads.runs.submit_tool_outputs(
        run_id, thread_id=thread_id, tool_outputs=[{"tool_call_id": call.id, "output": "3 left"}]
    )
    # Waiting for outputs when the replica dies.
    create("waiting", tools=[STOCK])
    wait_state("waiting", "requires_action")
    # Queued: outputs committed (the run back to queued, leased by the doomed replica), not yet executed.
    thread_id, run_id = create("queued", tools=[STOCK])
    waiting = wait_state("queued", "requires_action")
    queued_call = waiting.required_action.submit_tool_outputs.tool_calls[0]
    # Code interpreter executing: a call with effects in flight.
    create("code", tools=[{"type": "code_interpreter"}])

    for name in ("streaming", "tools"):
        wait_for(f"the {name} run's first words saved", lambda n=name: _saved_text(rs, runs[n][1]) or None)
    wait_for(
        "the code interpreter call in flight",
        lambda: rs.sql("SELECT state FROM runs WHERE id = %s", (runs["code"][1],))[0][0].find("in_flight") >= 0 or None,
    )
    ((owner, until),) = rs.sql("SELECT lease_owner, lease_until FROM runs WHERE id = %s", (runs["tools"][1],))
    (step,) = doomed.beta.threads.runs.steps.list(runs["queued"][1], thread_id=runs["queued"][0]).data
    details = step.model_dump()
    details["step_details"]["tool_calls"][0]["function"]["output"] = "7 left"
    details.update(status="completed", completed_at=details["created_at"])
    ((data, state),) = rs.sql("SELECT data, state FROM runs WHERE id = %s", (runs["queued"][1],))
    rs.sql("UPDATE run_steps SET data = %s WHERE id = %s RETURNING id", (json.dumps(details), step.id))
    rs.sql(
        "UPDATE runs SET status = 'queued', data = %s, state = %s, lease_owner = %s, lease_until = %s "
        "WHERE id = %s RETURNING id",
        (
            json.dumps({**json.loads(data), "status": "queued", "required_action": None}),
            json.dumps({**json.loads(state), "pending_step_id": None}),
            owner,
            until,
            runs["queued"][1],
        ),
    )

    rs.kill(0)
    try:
        _check_taken_over(rs, upstream, models, runs, events, manager, queued_call)
    finally:
        _unmount_left_behind(rs.servers[0].data_dir)


def _unmount_left_behind(root: Path) -> None:
    """A server killed outright leaves its code interpreter mounts (the next server on its data dir sweeps
    them, but this one never starts again): detach them, or removing the test's folders fails."""
    with open("/proc/mounts") as mounts:
        targets = [line.split()[1] for line in mounts if line.split()[1].startswith(str(root))]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


def _check_taken_over(
    rs: ReplicaSet,
    upstream: ScriptedUpstream,
    models: dict[str, str],
    runs: dict[str, tuple[str, str]],
    events: Any,
    manager: Any,
    queued_call: Any,
) -> None:
    # The streaming client loses its connection (the error is its HTTP library's, whichever the SDK uses).
    with pytest.raises(Exception, match=r"closed|incomplete|reset|Connection"):
        for _ in events:
            pass
    with contextlib.suppress(Exception):
        manager.__exit__(None, None, None)

    survivor = rs.client(1, timeout=120.0)
    done = {}
    for name in ("streaming", "tools", "queued", "code"):
        thread_id, run_id = runs[name]
        done[name] = wait_status(survivor, thread_id, run_id)
    for name in ("streaming", "tools", "queued"):
        assert done[name].status == "completed", (name, done[name].last_error)
    assert done["code"].status == "failed"
    assert "code_interpreter call was running" in done["code"].last_error.message  # type: ignore[union-attr]

    waiting_thread, waiting_run = runs["waiting"]
    still = survivor.beta.threads.runs.retrieve(waiting_run, thread_id=waiting_thread)
    assert still.status == "requires_action"
    call = still.required_action.submit_tool_outputs.tool_calls[0]  # type: ignore[union-attr]
    rs.client(2).beta.threads.runs.submit_tool_outputs(
        waiting_run, thread_id=waiting_thread, tool_outputs=[{"tool_call_id": call.id, "output": "9 left"}]
    )
    assert wait_status(survivor, waiting_thread, waiting_run).status == "completed"

    # Nothing asked of the model twice but the one call each kill cut; no step run twice.
    sent = {name: len(upstream.requests(model)) for name, model in models.items()}
    assert sent == {"streaming": 2, "tools": 3, "waiting": 2, "queued": 2, "code": 1}
    last = upstream.requests(models["queued"])[1]["messages"][-1]
    assert last == {"role": "tool", "tool_call_id": queued_call.id, "content": "7 left"}
    shapes = {name: _step_shapes(survivor, *runs[name]) for name in runs}
    assert shapes == {
        "streaming": [("message_creation", "completed")] * 2,
        "tools": [("tool_calls", "completed"), ("message_creation", "completed"), ("message_creation", "completed")],
        "waiting": [("tool_calls", "completed"), ("message_creation", "completed")],
        "queued": [("tool_calls", "completed"), ("message_creation", "completed")],
        "code": [("tool_calls", "failed")],
    }
    cut, resumed = survivor.beta.threads.messages.list(runs["streaming"][0], order="asc").data[1:]
    assert (cut.status, cut.content[0].text.value) == ("incomplete", "Streamed")  # type: ignore[union-attr]
    assert resumed.content[0].text.value == "and finished elsewhere."  # type: ignore[union-attr]
    assert rs.sql("SELECT count(*) FROM runs WHERE status = ANY(%s)", (list(ACTIVE),)) == [(0,)]
    taken = "".join(rs.servers[i].log_text() for i in (1, 2))
    for name in ("streaming", "tools", "queued", "code"):
        assert f"run_id={runs[name][1]}" in taken, name
    for model in (models["streaming"], models["tools"]):
        upstream.release(model)
