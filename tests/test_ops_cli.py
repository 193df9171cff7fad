"""The operator's first contact: the start-up summary, `assistantd check`, and every subcommand's help."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import httpx
import pytest
from ops_support import assistantd_serve, clean_env, free_port, run_cli, scripted_model

from assistantd import __version__
from assistantd.cli import build_parser, main
from assistantd.diagnostics import model_lines, redact_url
from assistantd.llm.router import ModelRouter
from assistantd.settings import load_settings
from assistantd.store.schema import LATEST

Commands = list[tuple[tuple[str, ...], argparse.ArgumentParser]]


def _subparsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Commands:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(((*prefix, name), sub))
                found += _subparsers(sub, (*prefix, name))
    return found


# --- CLI help and --version ---------------------------------------------------------------------------


def test_every_subcommand_documents_config_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _subparsers(build_parser())
    assert {c for c, _ in commands} >= {("serve",), ("check",), ("migrate",), ("keys",), ("keys", "create")}
    for command, _ in commands:
        with pytest.raises(SystemExit) as info:
            main([*command, "--help"])
        assert info.value.code == 0
        out = re.sub(r"\s+", " ", capsys.readouterr().out)
        assert "--config FILE A TOML file of settings" in out, command
        assert "--version" in out, command
        # Every argument has help text (argparse prints none for an option without it).
        sub = dict(commands)[command]
        for action in sub._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, (command, action.dest)


@pytest.mark.parametrize(
    "argv", [["--version"], ["serve", "--version"], ["keys", "list", "--version"], ["check", "--version"]]
)
def test_version_is_accepted_anywhere(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"assistantd {__version__}"


def test_keys_alone_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["keys"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: assistantd keys" in out
    for word in ("create", "list", "revoke"):
        assert word in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


def test_flags_before_a_nested_subcommand_are_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'data_dir = "{tmp_path / "from-file"}"\n')
    assert main(["keys", "--config", str(config), "create", "--project", "p1"]) == 0
    assert (tmp_path / "from-file" / "assistantd.db").exists()
    capsys.readouterr()
    assert main(["keys", "list", "--data-dir", str(tmp_path / "from-file")]) == 0
    assert "\tp1\tactive" in capsys.readouterr().out


def test_migrate_reports_what_it_did_and_the_schema_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    first = capsys.readouterr().out
    assert re.search(rf"applied {LATEST} migration\(s\) on sqlite: 1 \w", first), first
    assert f"schema version {LATEST} (this assistantd's latest: {LATEST})" in first
    assert main(["migrate", "--data-dir", str(tmp_path)]) == 0
    again = capsys.readouterr().out
    assert "nothing to migrate on sqlite" in again
    assert f"schema version {LATEST}" in again


# --- the start-up summary -------------------------------------------------------------------------------


def test_summary_says_runs_will_fail_without_an_upstream() -> None:
    settings = load_settings(environ={})
    lines = model_lines(settings, ModelRouter.from_config(base_url="", api_key="", timeout=1, extra={}, environ={}))
    assert len(lines) == 1
    assert "every run will fail" in lines[0] and "ASSISTANTD_UPSTREAM_BASE_URL" in lines[0]


def test_summary_says_openai_api_key_routes_models_to_openai() -> None:
    settings = load_settings(environ={})
    router = ModelRouter.from_config(base_url="", api_key="", timeout=1, extra={}, environ={"OPENAI_API_KEY": "sk-x"})
    text = "\n".join(model_lines(settings, router))
    assert "upstream openai: https://api.openai.com/v1 serves *" in text
    assert "OPENAI_API_KEY is set and no upstream is configured: every model goes to OpenAI" in text
    assert "sk-x" not in text


def test_summary_lists_upstreams_patterns_and_aliases(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[upstreams]]\nname = "cloud"\nbase_url = "https://c/v1"\nmodels = ["gpt-*", "o*"]\n'
        '[[upstreams]]\nname = "local"\nbase_url = "http://l/v1"\nmodels = ["llama*"]\n'
        '[aliases]\n"gpt-4o" = "llama3.1:8b"\n"claude" = "mistral"\n'
    )
    settings = load_settings(environ={}, config_file=str(config))
    router = ModelRouter.from_config(base_url="", api_key="", timeout=1, extra=settings.extra, environ={})
    assert model_lines(settings, router) == [
        "upstream cloud: https://c/v1 serves gpt-*, o*",
        "upstream local: http://l/v1 serves llama*",
        "alias gpt-4o -> llama3.1:8b (local)",
        "alias claude -> mistral (no upstream serves it: runs will fail)",
    ]


def test_database_passwords_are_not_shown() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact_url("sqlite:////var/lib/a.db") == "sqlite:////var/lib/a.db"


def test_a_real_server_logs_one_summary_block(tmp_path: Path) -> None:
    with scripted_model(tmp_path) as model, assistantd_serve(
        tmp_path, "--upstream-base-url", model.url, "--code-interpreter-pool-size", "0"
    ) as server:
        assert httpx.get(server.url + "/health").status_code == 200
        root = httpx.get(server.url + "/")
        log = server.output()
    assert root.status_code == 200, root.text
    assert "<title>" in root.text and root.headers["content-type"].startswith("text/html")  # the web console
    block = log[log.index(f"assistantd {__version__} ready") :]
    port = server.url.rsplit(":", 1)[1]
    for expected in (
        f"listen: http://127.0.0.1:{port}/v1",
        "auth: open: no API key is configured, any key is accepted on loopback only",
        f"database: sqlite sqlite:///{(tmp_path / 'data').resolve()}/assistantd.db",
        f"blob store: files in {(tmp_path / 'data').resolve()}/files",
        f"upstream default: {model.url} serves *",
        "code interpreter: sandboxes start on first use",
        "file search: hybrid",
    ):
        assert expected in block, (expected, block)


# --- assistantd check ------------------------------------------------------------------------------------


def test_check_passes_with_working_dependencies(tmp_path: Path) -> None:
    with scripted_model(tmp_path) as model:
        result = run_cli("check", "--data-dir", str(tmp_path / "data"), "--upstream-base-url", model.url)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^ok +config +valid \(defaults", out, re.M), out
    assert re.search(rf"^ok +database +sqlite .* schema version {LATEST}", out, re.M), out
    assert re.search(rf"^ok +upstream default +{re.escape(model.url)}/models answered", out, re.M), out
    assert re.search(r"^ok +code interpreter +ran print\(6 \* 7\): sandboxed", out, re.M), out
    assert re.search(r"^ok +file search +hybrid .* 384 dimensions", out, re.M), out
    assert out.rstrip().endswith("all checks passed")


def test_check_fails_readably_when_things_are_missing(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = tmp_path / "c.toml"
    config.write_text(
        f'[[upstreams]]\nname = "gone"\nbase_url = "{dead}"\nmodels = ["x*"]\n[aliases]\n"gpt-4o" = "y"\n'
    )
    result = run_cli("check", "--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert re.search(rf"^FAIL +upstream gone +GET {re.escape(dead)}/models: ConnectError", out, re.M), out
    assert re.search(r"^FAIL +alias gpt-4o +-> y: no upstream pattern matches it", out, re.M), out
    assert "problem(s): upstream gone, alias gpt-4o" in out


def test_check_without_any_model_provider_says_how_to_configure_one(tmp_path: Path) -> None:
    result = run_cli("check", "--data-dir", str(tmp_path / "data"), env=clean_env())
    assert result.returncode == 1
    assert re.search(r"^FAIL +models +no model provider is configured: every run will fail", result.stdout, re.M)


def test_check_reports_invalid_settings_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("log-level = 'debug'\n")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:1: unknown key 'log-level'; did you mean 'log_level'?" in result.stderr
