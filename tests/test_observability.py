"""Logs, /metrics and traces, seen as an operator sees them: from a real server's output and endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import subprocess
import sys
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from ops_support import assistantd_serve, free_port, scripted_model
from prometheus_client import CollectorRegistry, Counter

from assistantd.observability import collector, metrics, tracing
from assistantd.observability.loop_lag import LoopLagWatch
from assistantd.observability.web import route_of

KEY = "sk-ops-observability-0123456789"

# The SDK marks the Assistants API deprecated (OpenAI's own plan); this server is what keeps it running.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]


def _script(model_url: str, model: str, turns: list[dict[str, Any]]) -> None:
    base = model_url.removesuffix("/v1")
    httpx.post(f"{base}/_script", json={"model": model, "turns": turns}).raise_for_status()


def _wait(predicate: Any, what: str, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample, matched on the labels given (others may be present)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_route_templates_keep_the_label_set_small() -> None:
    assert route_of("/v1/threads/thread_abc/runs/run_1/steps") == "/v1/threads/{id}/runs/{id}/steps"
    assert route_of("/v1/assistants") == "/v1/assistants"
    assert route_of("/v1/models/gpt-4o") == "/v1/models/{id}"
    assert route_of("/" + "/".join(["x"] * 50)).count("{id}") == 8


def test_labeled_metrics_are_resolved_once_and_the_cache_stays_bounded() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_labeled", "test", ["route"], registry=registry)
    first = metrics.labeled(counter, "/v1/assistants")
    assert metrics.labeled(counter, "/v1/assistants") is first  # the same child, not looked up again
    first.inc()
    for i in range(metrics._MAX_CHILDREN + 10):  # a flood of distinct label values (a hostile client's paths)
        metrics.labeled(counter, f"/v1/{i}").inc()
        assert len(metrics._children) <= metrics._MAX_CHILDREN
    metrics.labeled(counter, "/v1/assistants").inc()  # resolved again after the cache started over: same series
    assert registry.get_sample_value("t_labeled_total", {"route": "/v1/assistants"}) == 2
    assert registry.get_sample_value("t_labeled_total", {"route": f"/v1/{metrics._MAX_CHILDREN}"}) == 1


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, int]]:
    """A real server with JSON logs, a key, a separate metrics port, and the scripted model."""
    tmp = tmp_path_factory.mktemp("observed")
    metrics_port = free_port()
    with scripted_model(tmp) as model, assistantd_serve(
        tmp,
        "--upstream-base-url", model.url,
        "--log-format", "json",
        "--api-keys", f"{KEY}:obs",
        "--metrics-port", str(metrics_port),
        "--code-interpreter-pool-size", "0",
    ) as server:  # fmt: skip
        yield model, server, metrics_port


def _client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY)


def _run_two(model: Any, server: Any) -> tuple[Any, Any]:
    with _client(server) as client:  # its connections closed once done
        usage = {"prompt_tokens": 11, "completion_tokens": 3}
        # The model takes 300 ms to its first token, so the run's line can tell the server's wait from the model's.
        _script(model.url, "obs-ok", [{"text": "Hello there friend", "usage": usage, "ttft_ms": 300}])
        _script(model.url, "obs-bad", [{"status": 400, "error": "the model is sulking"}])
        good = client.beta.assistants.create(model="obs-ok")
        bad = client.beta.assistants.create(model="obs-bad")
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
        with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=good.id) as stream:
            deltas = [e for e in stream if e.event == "thread.message.delta"]
            ok_run = stream.get_final_run()
        assert len(deltas) == 3
        failed = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=bad.id, poll_interval_ms=50)
        assert failed.status == "failed"
        return ok_run, failed


def test_logs_metrics_and_run_lines_from_a_real_server(observed: tuple[Any, Any, int]) -> None:
    model, server, metrics_port = observed
    ok_run, failed = _run_two(model, server)

    # Logs: every line is one JSON object, uvicorn's included; run and model-call lines carry their facts.
    lines = _wait(
        lambda: (ls := _json_lines(server.output())) and sum(1 for x in ls if x["message"] == "run ended") >= 2 and ls,
        "two run-ended lines",
    )
    assert any(x["logger"].startswith("uvicorn") for x in lines), "uvicorn's lines go through the same formatter"
    ended = {x["run_id"]: x for x in lines if x["message"] == "run ended"}
    good = ended[ok_run.id]
    assert good["level"] == "INFO"
    assert (good["project"], good["thread_id"], good["model"], good["status"]) == (
        "obs",
        ok_run.thread_id,
        "obs-ok",
        "completed",
    )
    assert isinstance(good["duration_ms"], int) and good["last_error"] is None
    bad = ended[failed.id]
    assert bad["level"] == "WARNING" and bad["status"] == "failed"
    assert bad["last_error_code"] == "server_error"
    assert "the model is sulking" in bad["last_error"]
    # A run's model calls are told in its own line; only a failed call logs one of its own.
    assert (good["upstream"], good["model_calls"]) == ("default", 1)
    assert good["prompt_tokens"] == 11 and good["completion_tokens"] == 3
    assert isinstance(good["ttft_ms"], int) and good["ttft_ms"] >= 300
    # The wait is the server's own, from the create to the call going out: the model's 300 ms are not in it.
    assert isinstance(good["wait_ms"], int) and 0 <= good["wait_ms"] < good["ttft_ms"]
    assert (bad["upstream"], bad["model_calls"], bad["ttft_ms"]) == ("default", 1, None)
    assert isinstance(bad["wait_ms"], int), "a call that failed still went out"
    calls = [x for x in lines if x["message"] == "model call"]
    assert not [x for x in calls if x["model"] == "obs-ok"]
    bad_call = next(x for x in calls if x["model"] == "obs-bad")
    assert bad_call["level"] == "WARNING" and bad_call["outcome"] == "server_error"
    assert KEY not in server.output()

    # /metrics on the API's address takes a key.
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    response = httpx.get(server.url + "/metrics", headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert _sample(text, "assistantd_runs_ended_total", status="completed") >= 1
    assert _sample(text, "assistantd_runs_ended_total", status="failed") >= 1
    assert _sample(text, "assistantd_run_duration_seconds_count", status="completed") >= 1
    assert _sample(text, "assistantd_model_calls_total", upstream="default", outcome="ok") >= 1
    assert _sample(text, "assistantd_model_calls_total", upstream="default", outcome="server_error") >= 1
    assert _sample(text, "assistantd_model_time_to_first_token_seconds_count", upstream="default") >= 1
    assert _sample(text, "assistantd_run_model_wait_seconds_count") >= 2
    assert _sample(text, "assistantd_model_tokens_total", upstream="default", kind="prompt") >= 11
    route = "/v1/threads/{id}/runs"
    assert _sample(text, "assistantd_http_requests_total", method="POST", route=route, status="200") >= 2
    assert _sample(text, "assistantd_http_request_duration_seconds_count", method="POST", route=route) >= 2
    assert _sample(text, "assistantd_http_requests_total", method="GET", route="/metrics", status="401") >= 2
    # The stream above has ended (the server may finish its side just after the client read the last event).
    _wait(
        lambda: _sample(httpx.get(server.url + "/metrics", headers=auth).text, "assistantd_active_streams") == 0,
        "the stream to be counted as closed",
    )
    assert _sample(text, "assistantd_runs", status="in_progress") == 0
    assert _sample(text, "assistantd_run_queue_depth") == 0
    assert _sample(text, "assistantd_ingestion_backlog") == 0
    assert _sample(text, "assistantd_sandbox_sessions") == 0
    assert _sample(text, "assistantd_db_pool", figure="size") >= 1
    # The served process tuned its garbage collector once started: what startup built is frozen.
    assert (_sample(text, "assistantd_gc_frozen_objects") or 0) > 10_000
    # Collections waited while each request and run was set up, and the collector was back once none was.
    assert (_sample(text, "assistantd_gc_deferrals_total", ended="idle") or 0) >= 1
    # The event loop's lag is sampled while the server runs (every 50 ms; it has served for seconds).
    assert (_sample(text, "assistantd_event_loop_lag_seconds_count") or 0) >= 1

    # The separate metrics address needs no key and shows the same figures.
    separate = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert separate.status_code == 200
    assert _sample(separate.text, "assistantd_runs_ended_total", status="completed") >= 1


@contextlib.contextmanager
def _held_run(model: Any, client: openai.OpenAI, name: str) -> Iterator[tuple[Any, Any]]:
    """A streamed run whose model holds after its first word, followed up to that word: (thread, stream).
    The run is in progress and its stream open until ``/_release?model=name``."""
    _script(model.url, name, [{"text": "one two three", "hold": True}])
    assistant = client.beta.assistants.create(model=name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        for event in stream:
            if event.event == "thread.message.delta":
                break
        yield thread, stream


def test_metrics_count_an_open_stream_and_runs_in_flight(observed: tuple[Any, Any, int]) -> None:
    model, server, _ = observed
    headers = {"Authorization": f"Bearer {KEY}"}
    with _client(server) as client, _held_run(model, client, "obs-hold") as (_, stream):
        text = httpx.get(server.url + "/metrics", headers=headers).text
        assert _sample(text, "assistantd_active_streams") == 1
        assert _sample(text, "assistantd_runs", status="in_progress") == 1
        httpx.post(model.url.removesuffix("/v1") + "/_release", params={"model": "obs-hold"}).raise_for_status()
        assert stream.get_final_run().status == "completed"


def test_a_client_that_leaves_mid_stream_ends_its_response_but_not_its_run(observed: tuple[Any, Any, int]) -> None:
    """The server notices the client's hang-up while the model is quiet: the response ends then (the
    open-stream gauge drops), not when the model next speaks; a run carries on, a pass-through stops."""
    model, server, _ = observed
    headers = {"Authorization": f"Bearer {KEY}"}

    def open_streams() -> float | None:
        return _sample(httpx.get(server.url + "/metrics", headers=headers).text, "assistantd_active_streams")

    with _client(server) as client:
        with _held_run(model, client, "obs-leave") as (thread, stream):
            run_id = stream.current_run.id
            assert open_streams() == 1
        _wait(lambda: open_streams() == 0, "the run's stream to end once its client left")
        assert client.beta.threads.runs.retrieve(run_id, thread_id=thread.id).status == "in_progress"
        httpx.post(model.url.removesuffix("/v1") + "/_release", params={"model": "obs-leave"}).raise_for_status()
        run = _wait(
            lambda: (r := client.beta.threads.runs.retrieve(run_id, thread_id=thread.id)).status == "completed" and r,
            "the run to complete without its client",
        )
        (message,) = client.beta.threads.messages.list(thread.id, run_id=run.id).data
        assert message.content[0].text.value == "one two three"  # type: ignore[union-attr]

    _script(model.url, "obs-leave-chat", [{"text": "one two three", "hold": True}])
    body = {"model": "obs-leave-chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()  # kept open: leaving a loop over it would close the connection
        seen = b""
        while b"one" not in seen:
            seen += next(chunks)  # the upstream holds after its first word
        assert open_streams() == 1
    _wait(lambda: open_streams() == 0, "the pass-through stream to end once its client left")
    httpx.post(model.url.removesuffix("/v1") + "/_release", params={"model": "obs-leave-chat"}).raise_for_status()


def test_the_collector_is_tuned_and_its_pauses_measured() -> None:
    # In a process of its own: tune() changes the interpreter's collector for good.
    code = (
        "import asyncio, gc, json\n"
        "from assistantd.observability import collector, metrics\n"
        "from prometheus_client import generate_latest\n"
        "before = gc.get_threshold()\n"
        "collector.tune(); collector.tune()\n"
        "ring = []\n"
        "for _ in range(1000):\n"  # garbage in cycles: still collected
        "    a = []; a.append(a)\n"
        "    ring.append(a)\n"
        "del ring, a\n"
        "facts = {'before': before, 'after': gc.get_threshold(), 'frozen': gc.get_freeze_count(),\n"
        "         'hooked': gc.callbacks.count(collector._observe), 'collected': gc.collect(0),\n"
        "         'deferring without a loop': collector._deferral.enabled}\n"
        "async def served():\n"  # as `serve` calls it: inside the running loop
        "    collector.tune()\n"
        "    facts['frozen by the last tune'] = gc.get_freeze_count()\n"
        "    held = collector.hold()\n"
        "    facts['held: collector off'] = not gc.isenabled()\n"
        "    collector._deferral.max_seconds = 0.0\n"
        "    for _ in range(100):\n"  # the loop's timer ends the spell held too long (checked every 0.1 s)
        "        await asyncio.sleep(0.05)\n"
        "        if gc.isenabled():\n"
        "            break\n"
        "    facts['ended by the timer'] = gc.isenabled()\n"
        "    held.release()\n"
        "asyncio.run(served())\n"
        "print(json.dumps(facts))\n"
        "print(generate_latest(metrics.REGISTRY).decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    first, _, text = out.partition("\n")
    facts = json.loads(first)
    assert facts["after"] == [10_000, *facts["before"][1:]]  # the older generations' thresholds are kept
    assert facts["frozen"] > 1000 and facts["hooked"] == 1  # hooked once, however often tune() runs
    assert facts["collected"] == 1000  # garbage in cycles is still collected
    # Deferring needs the loop's timer to bound a spell: not without a loop, and on once in one.
    assert facts["deferring without a loop"] is False
    assert facts["held: collector off"] is True and facts["ended by the timer"] is True
    assert _sample(text, "assistantd_gc_pause_seconds_count", generation="0") == 1
    assert _sample(text, "assistantd_gc_frozen_objects") == facts["frozen by the last tune"]


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _deferrals(ended: str) -> float:
    return metrics.REGISTRY.get_sample_value("assistantd_gc_deferrals_total", {"ended": ended}) or 0.0


@pytest.fixture
def deferral() -> Iterator[collector.Deferral]:
    """A deferral started as ``tune`` starts it, thawing only when told; the test process's collector is
    as it was afterwards (on, nothing frozen)."""
    assert gc.isenabled() and gc.get_freeze_count() == 0
    with warnings.catch_warnings():
        # Garbage earlier tests left (a client dropped unclosed warns as it is freed) goes first, quietly:
        # the passes these tests cause must find only what they made.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    made = collector.Deferral(thaw_growth=10**9)
    made.start()
    try:
        yield made
    finally:
        gc.unfreeze()
        gc.enable()


def test_collections_wait_while_anything_is_being_set_up_and_a_big_spell_is_frozen(
    deferral: collector.Deferral,
) -> None:
    idle_spells = _deferrals("idle")
    first, second = deferral.hold(), deferral.hold()
    assert not gc.isenabled()
    cycle = _Cycle()
    ref = weakref.ref(cycle)
    del cycle
    kept = [[] for _ in range(3 * gc.get_threshold()[0])]  # well past the young threshold
    assert ref() is not None  # no pass ran
    first.release()
    first.release()  # a hold is released once, however often it is told
    assert not gc.isenabled() and deferral.holders == 1
    second.release()
    assert gc.isenabled() and deferral.holders == 0
    assert _deferrals("idle") == idle_spells + 1
    # What the spell made is out of the collector's reach, not walked: the young generation is empty.
    frozen, made = gc.get_freeze_count(), len(kept)
    assert frozen >= made and gc.get_count()[0] < made
    del kept  # reference counting still frees frozen objects
    assert gc.get_freeze_count() <= frozen - made
    assert ref() is not None  # a cycle frozen with them waits for a thaw


def test_a_small_spell_leaves_what_it_made_to_the_collector(deferral: collector.Deferral) -> None:
    thresholds = gc.get_threshold()
    gc.set_threshold(10_000)  # as ``tune`` sets it: the young generation holds fewer now (<= 700)
    try:
        held = deferral.hold()
        cycle = _Cycle()
        ref = weakref.ref(cycle)
        del cycle
        held.release()
        assert gc.isenabled() and gc.get_freeze_count() == 0
        kept = [[] for _ in range(10_001)]  # the young threshold is crossed: a pass runs
        assert ref() is None and kept
    finally:
        gc.set_threshold(*thresholds)


def test_a_spell_that_freezes_past_the_thaw_mark_collects_everything_once(deferral: collector.Deferral) -> None:
    thaws = metrics.REGISTRY.get_sample_value("assistantd_gc_thaws_total") or 0.0
    deferral.thaw_growth = 1000
    deferral.start()  # nothing frozen: the mark is at 1,000
    held = deferral.hold()
    cycle = _Cycle()
    ref = weakref.ref(cycle)
    del cycle
    kept = [[] for _ in range(2000)]
    held.release()
    assert ref() is None  # the thaw walked everything, garbage in cycles included
    assert metrics.REGISTRY.get_sample_value("assistantd_gc_thaws_total") == thaws + 1
    frozen = gc.get_freeze_count()  # what was alive is frozen again, and the next mark is twice that
    assert frozen >= len(kept) and deferral.thaw_at == 2 * frozen
    # What is frozen is counted at most every ``count_every`` seconds (the count walks all of it): a spell
    # past the mark before then freezes, and thaws at a later spell's end.
    deferral.thaw_growth, deferral.count_every = 0, 3600.0
    deferral.thaw_at = 0
    held = deferral.hold()
    cycle = _Cycle()
    ref = weakref.ref(cycle)
    del cycle
    kept += [[] for _ in range(2000)]
    held.release()
    assert ref() is not None and metrics.REGISTRY.get_sample_value("assistantd_gc_thaws_total") == thaws + 1
    deferral.count_every = 0.0
    held = deferral.hold()
    kept += [[] for _ in range(2000)]
    held.release()
    assert ref() is None and metrics.REGISTRY.get_sample_value("assistantd_gc_thaws_total") == thaws + 2


def test_a_busy_spell_collects_again_past_the_limit_and_defers_again_once_idle(deferral: collector.Deferral) -> None:
    limit_spells = _deferrals("limit")
    deferral.limit = 1000
    busy = deferral.hold()
    assert not gc.isenabled()
    kept = [[] for _ in range(2000)]  # net allocations past the limit
    more = deferral.hold()
    assert gc.isenabled()  # the spell is over while the server stays busy
    assert _deferrals("limit") == limit_spells + 1 and gc.get_freeze_count() >= len(kept)
    still = deferral.hold()
    assert gc.isenabled()  # no new spell while this one lasts
    for held in (busy, more, still):
        held.release()
    assert gc.isenabled() and deferral.holders == 0
    fresh = deferral.hold()  # idle, then busy again: a new spell
    assert not gc.isenabled()
    fresh.release()
    assert gc.isenabled()


def test_a_spell_held_open_ends_at_its_bounds_on_the_loop_timer(deferral: collector.Deferral) -> None:
    limit_spells = _deferrals("limit")
    deferral.limit = 1000
    held = deferral.hold()  # one slow request: no other hold or release comes
    kept = [[] for _ in range(2000)]  # allocations elsewhere (streams, threads) past the limit
    assert not gc.isenabled()
    deferral.tick()
    assert gc.isenabled() and _deferrals("limit") == limit_spells + 1 and kept
    held.release()
    deferral.limit, deferral.max_seconds = 10**9, 3600.0
    held = deferral.hold()
    deferral.tick()
    assert not gc.isenabled()  # within both bounds
    deferral.max_seconds = 0.0
    deferral.tick()
    assert gc.isenabled() and _deferrals("limit") == limit_spells + 2  # held longer than allowed
    held.release()


def test_the_collector_is_left_alone_before_tune_or_when_someone_else_turned_it_off() -> None:
    untuned = collector.Deferral()
    held = untuned.hold()
    assert gc.isenabled() and untuned.holders == 0
    held.release()
    tuned = collector.Deferral()
    tuned.enabled = True
    gc.disable()  # by the embedding application, say
    try:
        held = tuned.hold()
        held.release()
        assert not gc.isenabled()  # still off: not ours to turn on
    finally:
        gc.enable()


def test_a_blocked_event_loop_shows_as_lag() -> None:
    lags: list[float] = []

    async def block_the_loop() -> None:
        watch = LoopLagWatch(asyncio.get_running_loop(), interval=0.01, observe=lags.append).start()
        busy_until = time.perf_counter() + 0.2
        while time.perf_counter() < busy_until:
            pass  # 200 ms of work in one callback, as a blocking handler does: nothing else runs meanwhile
        for _ in range(100):  # the loop's next turns: the first one runs the overdue timer
            if lags:
                break
            await asyncio.sleep(0)
        watch.stop()

    asyncio.run(block_the_loop())
    # The timer due 10 ms into the 200 ms block ran ~190 ms late (more on a machine that descheduled
    # us meanwhile, never less), and it was the only one.
    assert len(lags) == 1 and 0.15 <= lags[0] < 1.0, lags


def test_text_logs_put_uvicorn_in_our_format(tmp_path: Path) -> None:
    with assistantd_serve(tmp_path, "--code-interpreter-pool-size", "0") as server:
        httpx.get(server.url + "/health")
    output = server.output()
    assert re.search(r"^\S+Z level=INFO logger=uvicorn\.error Uvicorn running on", output, re.M), output
    assert not re.search(r"^INFO: ", output, re.M), "uvicorn's own format must not appear"


# --- traces ------------------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_traces_cover_http_requests_runs_model_and_tool_calls(
    spans: Any, make_api: Any, tmp_path: Path, backend: str
) -> None:
    with scripted_model(tmp_path) as model:
        _script(
            model.url,
            "traced",
            [
                {"tool_calls": [{"name": "code_interpreter", "arguments": json.dumps({"code": "print(6 * 7)"})}]},
                {"text": "It is 42.", "usage": {"prompt_tokens": 5, "completion_tokens": 4}},
            ],
        )
        api = make_api(upstream_base_url=model.url)
        assistant = api.client.post(
            "/v1/assistants", json={"model": "traced", "tools": [{"type": "code_interpreter"}]}
        ).json()
        run = api.client.post(
            "/v1/threads/runs",
            json={"assistant_id": assistant["id"], "thread": {"messages": [{"role": "user", "content": "6*7?"}]}},
        ).json()
        url = f"/v1/threads/{run['thread_id']}/runs/{run['id']}"
        done = _wait(
            lambda: (r := api.client.get(url).json())["status"] in ("completed", "failed") and r, "the run", 120
        )
        assert done["status"] == "completed", done
        finished = _wait(
            lambda: (s := spans.get_finished_spans()) and any(x.name == "run" for x in s) and s, "the run span"
        )
    by_name: dict[str, list[Any]] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    http = by_name["HTTP POST /v1/threads/runs"][0]
    assert http.attributes["http.response.status_code"] == 200
    run_span = by_name["run"][0]
    assert run_span.attributes["assistantd.run_id"] == run["id"]
    assert run_span.attributes["assistantd.run.status"] == "completed"
    chats = by_name["chat traced"]
    assert len(chats) == 2
    assert chats[1].attributes["gen_ai.usage.output_tokens"] == 4
    assert chats[0].attributes["assistantd.upstream"] == "default"
    tool = by_name["tool code_interpreter"][0]
    assert tool.attributes["assistantd.run_id"] == run["id"]
    assert tool.status.is_ok


def test_run_span_parents_the_calls_made_inside_it(spans: Any) -> None:
    from assistantd.observability import hooks

    with hooks.run_span(project="p", thread_id="thread_1", run_id="run_1", model="m"):
        call = hooks.model_call("up", "m")
        call.end()
        hooks.log_run_ended(
            project="p", thread_id="thread_1", run_id="run_1", model="m", status="failed",
            started_at=time.time(), last_error={"code": "server_error", "message": "boom"},
        )  # fmt: skip
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["chat m"].parent.span_id == finished["run"].context.span_id
    assert finished["run"].attributes["assistantd.run.status"] == "failed"
    assert not finished["run"].status.is_ok


def test_tracing_without_the_extra_says_what_to_install() -> None:
    assert "pip install '.[otel]'" in tracing.INSTALL_HINT


def test_the_log_handler_follows_stderr_and_leaves_other_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from assistantd.observability.logs import configure_logging

    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    try:
        configure_logging("info", "json")
        configure_logging("info", "json")  # again: replaces its own handler, not the others
        ours = [h for h in root.handlers if type(h).__name__ == "_StderrHandler"]
        assert len(ours) == 1 and other in root.handlers
        logging.getLogger("assistantd.test").info("hello", extra={"fields": {"run_id": "run_1"}})
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert (line["message"], line["run_id"], line["logger"]) == ("hello", "run_1", "assistantd.test")
    finally:
        root.removeHandler(other)
        for handler in [h for h in root.handlers if type(h).__name__ == "_StderrHandler"]:
            root.removeHandler(handler)
