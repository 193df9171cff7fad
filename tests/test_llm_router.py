"""Model routing: one upstream for all, several by pattern, aliases, the OPENAI_API_KEY fallback."""

from __future__ import annotations

import pytest

from assistantd.llm.router import OPENAI_BASE_URL, ModelRouter, NoRoute


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
