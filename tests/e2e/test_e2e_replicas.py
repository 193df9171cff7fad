"""Three replicas on one PostgreSQL, each with its own data dir: any replica serves any file.

Every flow crosses replicas through the official SDK: a file uploaded on one is downloaded from
another; the code interpreter reads inputs uploaded elsewhere and its outputs are read back through a
third; vector store files uploaded on a replica that ingests nothing are indexed by the others; and a
delete on any replica leaves no bytes in the database nor in any data dir.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import openai
import pytest

from .remote import E2E_MARKS
from .replicas import ReplicaSet, StartReplicas
from .runs_support import ScriptedUpstream, new_model, wait_for

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
