"""SIGTERM with streams open: the server does not wait on them forever.

Runs executing on the stopping server get ``--shutdown-grace-seconds`` to finish (their streams end with
the run's terminal event), the rest are handed over (their streams end cleanly with ``done``: the SDK's
stream helper returns, the run still ``in_progress``), and the process exits. On SQLite the server
started again on the same data dir takes the handed-over run over and finishes it.
"""

from __future__ import annotations

import signal
from pathlib import Path

from .remote import E2E_MARKS, KEY_A, PROJECT_A, RemoteServer, make_client
from .runs_support import ScriptedUpstream, check_clean_exit, make_assistant, new_model, server_flags, wait_status

pytestmark = E2E_MARKS


def test_sigterm_ends_open_streams_and_exits(tmp_path: Path, upstream: ScriptedUpstream) -> None:
    server = RemoteServer(
        "sigterm",
        tmp_path / "sigterm",
        api_keys=f"{KEY_A}:{PROJECT_A}",
        extra_args=server_flags(upstream, "--shutdown-grace-seconds", "2", "--stream-save-seconds", "0.05"),
    )
    server.workdir.mkdir(parents=True)
    server.start()
    finishing, handed = new_model(), new_model()
    upstream.script(finishing, {"chunks": ["Done", " in", " time"], "hold": True})
    upstream.script(handed, {"chunks": ["Cut", " short"], "hold": True}, {"text": "finished after the restart."})
    client = make_client(server, KEY_A)
    try:
        managers = {}
        for model in (finishing, handed):
            thread = client.beta.threads.create(messages=[{"role": "user", "content": "Go"}])
            assistant = make_assistant(client, model)
            manager = client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id)
            stream = manager.__enter__()
            events = iter(stream)
            while next(events).event != "thread.message.delta":  # the model is held after its first words
                pass
            managers[model] = (manager, stream, events, thread.id)

        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        upstream.release(finishing)  # this run ends within the grace period, on the stopping server

        _, stream, events, _ = managers[finishing]
        rest = [e.event for e in events]
        assert rest[-1] == "thread.run.completed", rest
        assert stream.current_run is not None and stream.current_run.status == "completed"

        # Still held when the grace period ends: handed over, its stream ends cleanly without a terminal event.
        _, stream, events, handed_thread = managers[handed]
        rest = [e.event for e in events]  # the SDK raises if the stream were cut or ended with an error
        assert not any(e.startswith("thread.run.") for e in rest), rest
        assert stream.current_run is not None and stream.current_run.status == "in_progress"
        handed_run = stream.current_run.id
        for manager, *_ in managers.values():
            manager.__exit__(None, None, None)

        code = server.proc.wait(timeout=60)
        check_clean_exit(server, code)
        assert "run handed over run_id=" + handed_run in server.log_text()
    finally:
        client.close()
        upstream.release(handed)
        server.stop()

    server.start()  # the same data dir: the handed-over run is taken over at start-up and finishes
    with make_client(server, KEY_A) as again:
        run = wait_status(again, handed_thread, handed_run)
        assert run.status == "completed", run.last_error
        cut, rest_message = again.beta.threads.messages.list(handed_thread, run_id=handed_run, order="asc").data
        assert (cut.status, cut.content[0].text.value) == ("incomplete", "Cut")  # type: ignore[union-attr]
        assert rest_message.content[0].text.value == "finished after the restart."  # type: ignore[union-attr]
        assert len(upstream.requests(handed)) == 2
    check_clean_exit(server, server.stop())
