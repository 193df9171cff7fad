"""The code interpreter inside runs, end to end: the model's code really runs in the sandbox, its input
and outputs stream as the SDK's helper expects, files go in and come out, charts become images."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from .remote import E2E_MARKS, KEY_A, RemoteServer
from .runs_support import ScriptedUpstream, new_model

pytestmark = E2E_MARKS

TREATMENTS = (
    "Treatment A: [45, 42, 39, 47, 41, 43, 40, 44, 38, 46]\nTreatment B: [52, 49, 51, 47, 50, 53, 48, 51, 49, 50]"
)
TTEST = (
    "from scipy.stats import ttest_ind\n"
    "a = [45, 42, 39, 47, 41, 43, 40, 44, 38, 46]\n"
    "b = [52, 49, 51, 47, 50, 53, 48, 51, 49, 50]\n"
    "t, p = ttest_ind(a, b)\n"
    'print(f"t={t:.3f} p={p:.6f}")\n'
)


def _client(server: RemoteServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url, api_key=KEY_A, max_retries=0, timeout=120.0, _strict_response_validation=True
    )


def _code_call(code: str) -> dict[str, Any]:
    return {"tool_calls": [{"name": "code_interpreter", "arguments": json.dumps({"code": code})}]}


def test_seed_002_the_t_test_really_runs_and_streams(
    runs_server: RemoteServer, upstream: ScriptedUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    from openai import AssistantEventHandler
    from typing_extensions import override

    model = new_model()
    answer = "The difference is statistically significant (p < 0.001)."
    upstream.script(model, _code_call(TTEST), {"text": answer})
    client = _client(runs_server)
    assistant = client.beta.assistants.create(
        name="Research Analyst",
        instructions="You are a research assistant specialized in analyzing academic papers and research data.",
        tools=[{"type": "code_interpreter"}],
        model=model,
    )
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content=TREATMENTS)

    class ResearchEventHandler(AssistantEventHandler):  # as in the seed
        @override
        def on_text_created(self, text) -> None:  # type: ignore[no-untyped-def]
            print("\nAssistant > ", end="", flush=True)

        @override
        def on_text_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
            print(delta.value, end="", flush=True)

        def on_tool_call_created(self, tool_call):  # type: ignore[no-untyped-def]
            print(f"\nRunning analysis: {tool_call.type}\n", flush=True)

        def on_tool_call_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
            if delta.type == "code_interpreter":
                if delta.code_interpreter.input:
                    print(delta.code_interpreter.input, end="", flush=True)
                if delta.code_interpreter.outputs:
                    print("\nResults:", flush=True)
                    for output in delta.code_interpreter.outputs:
                        if output.type == "logs":
                            print(f"\n{output.logs}", flush=True)

    capsys.readouterr()
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=ResearchEventHandler()
    ) as stream:
        stream.until_done()
    printed = capsys.readouterr().out
    assert printed.startswith("\nRunning analysis: code_interpreter\n\n" + TTEST)
    assert "\nResults:\n\nt=-6." in printed  # scipy's real answer: t = -6.33..., p ~ 5.6e-06
    assert printed.endswith(f"\nAssistant > {answer}")
    run = stream.get_final_run()
    assert run.status == "completed"

    steps = list(client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc"))
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    call = steps[0].step_details.tool_calls[0]  # type: ignore[union-attr]
    assert call.type == "code_interpreter"
    assert call.code_interpreter.input == TTEST
    logs = call.code_interpreter.outputs[0]
    assert logs.type == "logs" and logs.logs.startswith("t=-6.")
    # The model was given the output, as a tool message answering its call.
    second = upstream.requests(model)[1]["messages"]
    assert second[-1]["role"] == "tool" and second[-1]["content"].startswith("t=-6.")
    assert second[-2]["tool_calls"][0]["function"]["name"] == "code_interpreter"


def test_files_in_and_out_and_a_chart_become_files_annotations_and_images(
    runs_server: RemoteServer, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    code = (
        "import pandas as pd, matplotlib.pyplot as plt\n"
        "df = pd.read_csv('/mnt/data/sales.csv')\n"
        "df['double'] = df['amount'] * 2\n"
        "df.to_csv('/mnt/data/doubled.csv', index=False)\n"
        "plt.plot(df['amount']); plt.show()\n"
        "print(df['double'].sum())\n"
    )
    link = "sandbox:/mnt/data/doubled.csv"
    upstream.script(model, _code_call(code), {"text": f"Done: [download the file]({link})."})
    client = _client(runs_server)
    uploaded = client.files.create(file=("sales.csv", b"amount\n1\n2\n3\n"), purpose="assistants")
    assistant = client.beta.assistants.create(
        model=model,
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [uploaded.id]}},
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Double the sales, chart them."}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100)
    assert run.status == "completed", run.last_error

    steps = list(client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc"))
    outputs = steps[0].step_details.tool_calls[0].code_interpreter.outputs  # type: ignore[union-attr]
    assert outputs[0].type == "logs" and outputs[0].logs.strip() == "12"
    image = next(o for o in outputs if o.type == "image")
    png = client.files.content(image.image.file_id).read()  # type: ignore[union-attr]
    assert png.startswith(b"\x89PNG")

    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    text = message.content[0].text  # type: ignore[union-attr]
    (annotation,) = text.annotations
    assert annotation.type == "file_path" and annotation.text == link
    assert text.value[annotation.start_index : annotation.end_index] == link
    produced = client.files.retrieve(annotation.file_path.file_id)  # type: ignore[union-attr]
    assert produced.purpose == "assistants_output" and produced.filename == "doubled.csv"
    assert client.files.content(produced.id).read() == b"amount,double\n1,2\n2,4\n3,6\n"
    assert [b.type for b in message.content] == ["text", "image_file"]
    assert message.content[1].image_file.file_id == image.image.file_id  # type: ignore[union-attr]


def test_a_thread_keeps_its_session_between_runs_and_errors_go_back_to_the_model(
    runs_server: RemoteServer, upstream: ScriptedUpstream
) -> None:
    model = new_model()
    upstream.script(
        model,
        _code_call("x = 41\nopen('/mnt/data/note.txt', 'w').write('kept')"),
        {"text": "Stored."},
        _code_call("print(x + 1, open('/mnt/data/note.txt').read())"),
        {"text": "42."},
        _code_call("1 / 0"),
        {"text": "That divides by zero."},
    )
    client = _client(runs_server)
    assistant = client.beta.assistants.create(model=model, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create()
    outputs = []
    for _ in range(3):
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="go on")
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
        )
        assert run.status == "completed", run.last_error
        step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
        outputs.append(step.step_details.tool_calls[0].code_interpreter.outputs)  # type: ignore[union-attr]
    assert outputs[1][0].logs.strip() == "42 kept"
    assert "ZeroDivisionError" in outputs[2][0].logs
    assert "ZeroDivisionError" in upstream.requests(model)[-1]["messages"][-1]["content"]


def test_the_sandbox_has_no_network(runs_server: RemoteServer, upstream: ScriptedUpstream) -> None:
    model = new_model()
    probe = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {runs_server.port}), timeout=2); print('CONNECTED')\n"
        "except OSError as e:\n"
        "    print('blocked', type(e).__name__)\n"
    )
    upstream.script(model, _code_call(probe), {"text": "ok"})
    client = _client(runs_server)
    assistant = client.beta.assistants.create(model=model, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "reach the server"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100)
    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    logs = step.step_details.tool_calls[0].code_interpreter.outputs[0].logs  # type: ignore[union-attr]
    assert logs.startswith("blocked") and "CONNECTED" not in logs
    assert httpx.get(f"{runs_server.url}/health").status_code == 200


def test_seed_000_math_tutor_streams_its_code_and_the_sandbox_output(
    runs_server: RemoteServer, upstream: ScriptedUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    from openai import AssistantEventHandler
    from typing_extensions import override

    model = new_model()
    code = "from sympy import symbols, Eq, solve\nx = symbols('x')\nprint(solve(Eq(8*x + 12, 14), x))\n"
    answer = "SISTCA student, the solution is x = 1/4."
    upstream.script(model, _code_call(code), {"text": answer})
    client = _client(runs_server)
    assistant = client.beta.assistants.create(
        name="Math Tutor",
        instructions="You are a personal math tutor. Write and run code to answer math questions.",
        tools=[{"type": "code_interpreter"}],
        model=model,
    )
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content="I need to solve the equation `8x + 12 = 14`. Can you help me?"
    )

    class EventHandler(AssistantEventHandler):  # the seed's handler, as written
        @override
        def on_text_created(self, text) -> None:  # type: ignore[no-untyped-def]
            print("\nassistant > ", end="", flush=True)

        @override
        def on_text_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
            print(delta.value, end="", flush=True)

        def on_tool_call_created(self, tool_call):  # type: ignore[no-untyped-def]
            print(f"\nassistant > {tool_call.type}\n", flush=True)

        def on_tool_call_delta(self, delta, snapshot):  # type: ignore[no-untyped-def]
            if delta.type == "code_interpreter":
                if delta.code_interpreter.input:
                    print(delta.code_interpreter.input, end="", flush=True)
                if delta.code_interpreter.outputs:
                    print("\n\noutput >", flush=True)
                    for output in delta.code_interpreter.outputs:
                        if output.type == "logs":
                            print(f"\n{output.logs}", flush=True)

    capsys.readouterr()
    with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="Please address the user as SISTCA student.",
        event_handler=EventHandler(),
    ) as stream:
        stream.until_done()
    assert capsys.readouterr().out == (
        f"\nassistant > code_interpreter\n\n{code}\n\noutput >\n\n[1/4]\n\n\nassistant > {answer}"
    )


def test_deleting_a_thread_ends_its_session_and_files_at_once(
    runs_server: RemoteServer, upstream: ScriptedUpstream
) -> None:
    from code_interpreter_support import host_pids_of_uid

    model = new_model()
    marker = f"deleted-with-thread-{new_model()}.txt"
    upstream.script(
        model,
        _code_call(
            f"import os, subprocess\nopen('/mnt/data/{marker}', 'w').write('x')\n"
            "subprocess.Popen(['sleep', '600'])\nprint(os.getuid())"
        ),
        {"text": "ok"},
    )
    client = _client(runs_server)
    assistant = client.beta.assistants.create(model=model, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "go"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100)
    assert run.status == "completed", run.last_error
    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    uid = int(step.step_details.tool_calls[0].code_interpreter.outputs[0].logs.strip())  # type: ignore[union-attr]
    assert host_pids_of_uid(uid) != []
    assert list(runs_server.data_dir.rglob(marker)) != []
    assert client.beta.threads.delete(thread.id).deleted
    # Once the delete has answered: no process of the session is left, and its files are gone.
    assert host_pids_of_uid(uid) == []
    assert list(runs_server.data_dir.rglob(marker)) == []
