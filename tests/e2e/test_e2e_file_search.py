"""File search inside runs, end to end: the model's queries hit the real index, results reach the model
under citation markers, the step records them, and the answer carries file citations."""

from __future__ import annotations

import json
from typing import Any

import openai

from .remote import E2E_MARKS, KEY_A, RemoteServer, accepts
from .runs_support import ScriptedUpstream, new_model

pytestmark = E2E_MARKS

INCLUDE = "step_details.tool_calls[*].file_search.results[*].content"
GUIDE = (
    "# Office guide\n\nThe office coffee machine is descaled every Tuesday by Priya.\n\n"
    "Visitors sign in at the front desk on the ground floor and receive a blue badge.\n"
)
MENU = "# Canteen\n\nThe canteen serves lentil soup on Mondays and fish on Fridays.\n"


def _client(server: RemoteServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url, api_key=KEY_A, max_retries=0, timeout=120.0, _strict_response_validation=True
    )


def _stores(client: openai.OpenAI) -> Any:
    return client.vector_stores if hasattr(client, "vector_stores") else client.beta.vector_stores  # 3.x / 1.x


def _search_call(*queries: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "file_search", "arguments": json.dumps({"queries": list(queries)})}]}


def test_a_file_search_run_cites_the_file_it_used(runs_server: RemoteServer, upstream: ScriptedUpstream) -> None:
    client = _client(runs_server)
    guide = client.files.create(file=("guide.md", GUIDE.encode()), purpose="assistants")
    menu = client.files.create(file=("menu.md", MENU.encode()), purpose="assistants")
    store = _stores(client).create(name="office")
    batch = _stores(client).file_batches.create_and_poll(vector_store_id=store.id, file_ids=[guide.id, menu.id])
    assert batch.file_counts.completed == 2

    model = new_model()
    answer = "Priya descales it every Tuesday【0:0†guide.md】."
    upstream.script(model, _search_call("who descales the coffee machine"), {"text": answer})
    assistant = client.beta.assistants.create(
        model=model,
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Who descales the coffee machine?"}])
    extra: dict[str, Any] = {"include": [INCLUDE]} if accepts(client.beta.threads.runs.create, "include") else {}
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100, **extra
    )
    assert run.status == "completed", run.last_error

    # The model read the best chunk under the marker it then cited.
    told = upstream.requests(model)[1]["messages"][-1]
    assert told["role"] == "tool" and told["content"].startswith("【0:0†guide.md】")
    assert "descaled every Tuesday" in told["content"].split("【0:1", 1)[0]

    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    call = step.step_details.tool_calls[0]  # type: ignore[union-attr]
    assert call.type == "file_search"
    # SDK 1.x types the details as a bare object (a dict); 3.x as a model. The wire is the same.
    details = call.file_search if isinstance(call.file_search, dict) else call.file_search.model_dump()
    results = details["results"]
    assert results[0]["file_id"] == guide.id and results[0]["file_name"] == "guide.md"
    assert 0 < results[0]["score"] <= 1
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert details["ranking_options"]["ranker"] == "default_2024_08_21"

    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    text = message.content[0].text  # type: ignore[union-attr]
    assert text.value == answer
    (citation,) = text.annotations
    assert citation.type == "file_citation" and citation.file_citation.file_id == guide.id  # type: ignore[union-attr]
    assert text.value[citation.start_index : citation.end_index] == "【0:0†guide.md】" == citation.text


def test_with_no_store_the_model_is_told_there_is_nothing_to_search(
    runs_server: RemoteServer, upstream: ScriptedUpstream
) -> None:
    client = _client(runs_server)
    model = new_model()
    upstream.script(model, _search_call("anything"), {"text": "I found nothing."})
    assistant = client.beta.assistants.create(model=model, tools=[{"type": "file_search"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "search"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100)
    assert run.status == "completed"
    assert "nothing to search" in upstream.requests(model)[1]["messages"][-1]["content"]


def test_a_file_attached_for_file_search_is_searched_through_the_threads_store(
    runs_server: RemoteServer, upstream: ScriptedUpstream
) -> None:
    client = _client(runs_server)
    menu = client.files.create(file=("menu.md", MENU.encode()), purpose="assistants")
    model = new_model()
    upstream.script(model, _search_call("what is served on fridays"), {"text": "Fish【0:0†menu.md】."})
    assistant = client.beta.assistants.create(model=model, tools=[{"type": "file_search"}])
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="What does the canteen serve on Fridays?",
        attachments=[{"file_id": menu.id, "tools": [{"type": "file_search"}]}],
    )
    store_ids = client.beta.threads.retrieve(thread.id).tool_resources.file_search.vector_store_ids  # type: ignore[union-attr]
    assert len(store_ids) == 1 and store_ids[0].startswith("vs_")
    store = _stores(client).retrieve(store_ids[0])
    assert store.expires_after is not None and store.expires_after.days == 7

    # The run waits for the thread's store to finish ingesting before it searches.
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100)
    assert run.status == "completed", run.last_error
    told = upstream.requests(model)[1]["messages"][-1]["content"]
    assert told.startswith("【0:0†menu.md】") and "fish on Fridays" in told
    text = client.beta.threads.messages.list(thread_id=thread.id).data[0].content[0].text  # type: ignore[union-attr]
    assert text.annotations[0].file_citation.file_id == menu.id  # type: ignore[union-attr]


def test_search_content_is_always_recorded_and_shown_only_when_included(
    runs_server: RemoteServer, upstream: ScriptedUpstream
) -> None:
    """OpenAI's docs inspect a finished run's chunks with steps.retrieve(..., include=[...]): that works
    whether or not the run was created with include; without it no content is sent, streamed or not."""
    import httpx

    client = _client(runs_server)
    guide = client.files.create(file=("guide.md", GUIDE.encode()), purpose="assistants")
    store = _stores(client).create(name="office")
    _stores(client).file_batches.create_and_poll(vector_store_id=store.id, file_ids=[guide.id])
    model = new_model()
    upstream.script(model, _search_call("coffee machine"), {"text": "Priya【0:0†guide.md】."})
    assistant = client.beta.assistants.create(
        model=model, tools=[{"type": "file_search"}], tool_resources={"file_search": {"vector_store_ids": [store.id]}}
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Who descales it?"}])
    events = list(client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, stream=True))
    step_events = [e for e in events if e.event.startswith("thread.run.step")]
    assert any("file_search" in json.dumps(e.data.model_dump()) for e in step_events)
    assert all("descaled every Tuesday" not in json.dumps(e.data.model_dump()) for e in step_events)
    run_id = next(e.data.id for e in events if e.event == "thread.run.completed")

    http = httpx.Client(base_url=runs_server.base_url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30)
    steps = http.get(f"/threads/{thread.id}/runs/{run_id}/steps", params={"order": "asc"}).json()["data"]
    search_step = steps[0]
    assert "content" not in search_step["step_details"]["tool_calls"][0]["file_search"]["results"][0]
    path = f"/threads/{thread.id}/runs/{run_id}/steps/{search_step['id']}"
    assert "content" not in http.get(path).json()["step_details"]["tool_calls"][0]["file_search"]["results"][0]
    for url in (path, f"/threads/{thread.id}/runs/{run_id}/steps"):
        doc = http.get(url, params={"include[]": INCLUDE}).json()
        step = next(s for s in doc["data"] if s["id"] == search_step["id"]) if "data" in doc else doc
        content = step["step_details"]["tool_calls"][0]["file_search"]["results"][0]["content"]
        assert content[0]["type"] == "text" and "descaled every Tuesday" in content[0]["text"]
    # A streamed run created with include shows the content in its step events.
    upstream.script(model, _search_call("coffee machine"), {"text": "Priya【0:0†guide.md】."})
    with http.stream("POST", f"/threads/{thread.id}/runs", params={"include[]": INCLUDE},
                     json={"assistant_id": assistant.id, "stream": True}) as response:
        body = response.read().decode()
    completed = [line for line in body.split("\n\n") if line.startswith("event: thread.run.step.completed")]
    assert any("descaled every Tuesday" in frame for frame in completed)
    if accepts(client.beta.threads.runs.steps.retrieve, "include"):
        step_obj = client.beta.threads.runs.steps.retrieve(
            step_id=search_step["id"], thread_id=thread.id, run_id=run_id, include=[INCLUDE]  # type: ignore[list-item]
        )
        assert "descaled every Tuesday" in json.dumps(step_obj.model_dump())
    http.close()
