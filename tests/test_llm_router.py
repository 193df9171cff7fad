"""Model routing: one upstream for all, several by pattern, aliases, the OPENAI_API_KEY fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from assistantd.app import create_app
from assistantd.llm.router import OPENAI_BASE_URL, ModelRouter, NoRoute
from assistantd.settings import load_settings


def test_single_upstream_serves_every_model() -> None:
    router = ModelRouter.from_config(base_url="http://up/v1", api_key="k", timeout=5, extra={}, environ={})
    route = router.resolve("anything-at-all")
    assert (route.upstream, route.upstream_model) == ("default", "anything-at-all")


def test_patterns_pick_the_first_matching_upstream_and_aliases_rename() -> None:
    extra = {
        "upstreams": [
            {"name": "openai", "base_url": "https://o/v1", "api_key_env": "MY_KEY", "models": ["gpt-*"]},
            {"name": "local", "base_url": "http://l/v1", "models": ["llama*"]},
        ],
        "aliases": {"gpt-4o": "llama3.1:8b"},
    }
    router = ModelRouter.from_config(base_url="", api_key="", timeout=5, extra=extra, environ={"MY_KEY": "s"})
    assert router.resolve("gpt-4.1-mini").upstream == "openai"
    assert router.upstreams[0].api_key == "s"
    aliased = router.resolve("gpt-4o")
    assert (aliased.upstream, aliased.upstream_model) == ("local", "llama3.1:8b")
    with pytest.raises(NoRoute) as err:
        router.resolve("mistral")
    # Upstreams are configured: the error lists what they serve instead of saying to configure one.
    assert str(err.value).startswith(
        "No model provider serves model 'mistral': the configured upstreams serve openai: gpt-*; local: llama*."
    )
    assert "[[upstreams]]" in str(err.value) and "ASSISTANTD_UPSTREAM_BASE_URL" not in str(err.value)


def test_openai_key_in_the_environment_is_the_fallback() -> None:
    router = ModelRouter.from_config(base_url="", api_key="", timeout=5, extra={},
                                     environ={"OPENAI_API_KEY": "sk-x"})
    assert router.upstreams[0].base_url == OPENAI_BASE_URL
    assert router.resolve("gpt-4o").upstream == "openai"


def test_nothing_configured_says_how_to_configure() -> None:
    router = ModelRouter.from_config(base_url="", api_key="", timeout=5, extra={}, environ={})
    with pytest.raises(NoRoute) as err:
        router.resolve("gpt-4o")
    assert "ASSISTANTD_UPSTREAM_BASE_URL" in str(err.value)
    assert "OPENAI_API_KEY" in str(err.value)


def test_an_upstream_entry_without_base_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="needs a base_url"):
        ModelRouter.from_config(base_url="", api_key="", timeout=5, extra={"upstreams": [{"name": "x"}]},
                                environ={})


def test_upstream_clients_are_built_at_start_up_not_by_the_first_run(tmp_path: Path) -> None:
    # Building one costs ~20-45 ms (pools, a TLS context, the first also an import): paid before serving.
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path),
            "upstream_base_url": "http://127.0.0.1:9/v1",
            "code_interpreter_pool_size": 0,
        },
        environ={},
    )
    app = create_app(settings)
    upstream = app.state.services.router.upstreams[0]
    assert upstream._client is None, "nothing is built before start-up"
    with TestClient(app):
        assert upstream._client is not None
