"""The model-requests guard and ``provider:model`` names."""

from __future__ import annotations

import pytest

from charter.errors import CharterError, ModelRequestBlockedError, UsageError
from charter.models.guard import check_url, is_local, requests_allowed
from charter.models.openai_provider import OpenAIProvider
from charter.models.registry import (
    ModelSpec,
    check_model,
    create_provider,
    parse_model,
    register_provider,
    spec_for,
)
from charter.models.replay import ReplayProvider
from charter.models.scripted import ScriptedProvider
from tests.runs.domain import contract


def test_the_suite_runs_with_model_requests_switched_off() -> None:
    assert requests_allowed() is False


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://localhost:11434/v1",
        "http://[::1]:1/",
        "http://127.0.0.7/",
    ],
)
def test_loopback_is_allowed(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "http://10.0.0.5/v1",
        "http://localhost.evil.com/",
        "http://192.168.1.2:11434",
    ],
)
def test_everything_else_is_blocked(url: str) -> None:
    with pytest.raises(ModelRequestBlockedError, match="CHARTER_ALLOW_MODEL_REQUESTS is false"):
        check_url(url)


def test_switching_requests_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_ALLOW_MODEL_REQUESTS", "true")
    check_url("https://api.openai.com/v1")
    monkeypatch.delenv("CHARTER_ALLOW_MODEL_REQUESTS")
    assert requests_allowed()  # the default outside tests
    assert is_local("sub.localhost") and not is_local("example.com")


def test_parse_model() -> None:
    assert parse_model("openai:gpt-4o-mini") == ModelSpec("openai", "gpt-4o-mini")
    assert parse_model("replay") == ModelSpec("replay")
    assert parse_model("scripted:tests.runs.domain:planned") == ModelSpec(
        "scripted", "tests.runs.domain:planned"
    )
    assert str(parse_model("anthropic:claude-haiku-4-5")) == "anthropic:claude-haiku-4-5"
    for bad in ("", "OpenAI:x", "openai gpt", ":gpt"):
        with pytest.raises(UsageError, match="is not provider:model"):
            parse_model(bad)


def test_check_model_knows_providers_and_scripts() -> None:
    assert check_model("openai:gpt-4o") == ModelSpec("openai", "gpt-4o")
    with pytest.raises(UsageError, match="known: anthropic, openai, replay, scripted"):
        check_model("mistral:large")
    with pytest.raises(CharterError, match="no_such"):
        check_model("scripted:tests.runs.domain:no_such")


def test_the_contracts_model_section_and_overrides() -> None:
    scripted = contract()
    assert spec_for(scripted) == ModelSpec("scripted")
    assert isinstance(create_provider(scripted), ScriptedProvider)
    p = create_provider(scripted, override="openai:gpt-4.1")
    assert isinstance(p, OpenAIProvider) and p.model == "gpt-4.1"
    # the contract's seed and max_tokens carry over; its endpoint settings do not
    assert p.settings.seed == 1 and p.settings.base_url is None
    own = contract(
        model={
            "provider": "openai",
            "name": "gpt-4o",
            "base_url": "http://127.0.0.1:9/v1",
            "script": None,
        }
    )
    q = create_provider(own)
    assert isinstance(q, OpenAIProvider)
    assert (q.model, q.settings.base_url) == ("gpt-4o", "http://127.0.0.1:9/v1")
    with pytest.raises(CharterError, match="needs a ledger"):
        create_provider(scripted, override="replay")


def test_registering_a_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from charter.models import registry

    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))

    class Echo(ScriptedProvider):
        name = "echo"

    register_provider(
        "echo", lambda ctx: Echo(lambda r: {"final": {}}, model=ctx.spec.model or "e")
    )
    assert create_provider(contract(), override="echo:v1").model == "v1"
    with pytest.raises(UsageError):
        register_provider("Bad Name", lambda ctx: Echo(lambda r: {}))


def test_replay_estimates_nothing() -> None:
    from charter.models.base import ModelRequest

    assert (
        ReplayProvider(None, None)
        .estimate(  # type: ignore[arg-type]
            ModelRequest("c", "r", 1, 1, "p", {}, {}, [], {})
        )
        .tokens
        == 0
    )
