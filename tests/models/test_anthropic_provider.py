"""The anthropic provider through the official SDK, over HTTP, against a local fake server."""

from __future__ import annotations

import json

import pytest

from charter.errors import ModelError, ModelRequestBlockedError
from charter.models.anthropic_provider import AnthropicProvider
from charter.models.base import ModelRequest, Usage
from charter.models.common import ProviderSettings
from tests.models.fake_servers import (
    FakeModelServer,
    anthropic_error,
    anthropic_message,
    proposal,
)

WRITE = proposal(("write", {"item": "bolt", "qty": 2}))


def provider(fake: FakeModelServer, **settings: object) -> AnthropicProvider:
    base = {
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "base_url": fake.url,
        "max_retries": 2,
        "timeout": 10.0,
    }
    base.update(settings)
    return AnthropicProvider(ProviderSettings(**base))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")


def test_tool_use_carries_the_proposal_and_usage_is_normalised(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(anthropic_message(tool_input=WRITE, cache_read=4000, cache_write=500))
    response = provider(fake, max_tokens=400).complete(request_)
    assert json.loads(response.raw) == WRITE
    assert response.model == "claude-haiku-4-5-20251001"
    # Anthropic's input_tokens excludes cache reads and writes; Charter's includes them
    assert response.usage == Usage(
        input_tokens=900 + 4000 + 500,
        output_tokens=60,
        cached_input_tokens=4000,
        cache_write_tokens=500,
    )
    [req] = fake.requests
    assert req.path == "/v1/messages"
    assert req.headers["authorization"] == "Bearer sk-ant-test"  # this SDK sends keys so
    body = req.body
    assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == 400
    assert body["messages"] == [{"role": "user", "content": request_.prompt}]
    assert body["tool_choice"] == {"type": "tool", "name": "propose"}
    [tool] = body["tools"]
    assert tool["name"] == "propose"
    assert tool["input_schema"]["type"] == "object"
    assert {
        v["properties"]["name"]["const"]
        for v in tool["input_schema"]["properties"]["actions"]["items"]["anyOf"]
    } == {"write", "send_email"}
    assert response.params == {"max_tokens": 400, "output": "tools"}


def test_parameters_this_sdk_cannot_send_are_recorded_as_unsupported(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(anthropic_message(tool_input=WRITE))
    response = provider(fake, temperature=0.0, seed=7).complete(request_)
    assert response.params is not None and response.params["unsupported"] == ["temperature", "seed"]
    assert "temperature" not in fake.requests[0].body and "seed" not in fake.requests[0].body


def test_a_reply_without_the_tool_is_recorded_as_its_text(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(anthropic_message(text="I would rather not."))
    assert provider(fake).complete(request_).raw == "I would rather not."


def test_rate_limits_honour_retry_after_and_overload_is_retried(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(
        anthropic_error(429, "rate limited", {"retry-after-ms": "300"}),
        anthropic_error(529, "Overloaded"),
        anthropic_message(tool_input=WRITE),
    )
    response = provider(fake).complete(request_)
    assert json.loads(response.raw) == WRITE
    first, second, third = fake.requests
    assert second.at - first.at >= 0.28
    assert third.headers["x-stainless-retry-count"] == "2"


def test_a_bad_request_is_an_error_with_the_api_message(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(anthropic_error(400, "max_tokens: must be at most 8192"))
    with pytest.raises(ModelError, match=r"anthropic:claude-haiku-4-5: HTTP 400 .*max_tokens"):
        provider(fake).complete(request_)
    assert len(fake.requests) == 1  # 400 is not retried


def test_real_endpoints_are_blocked_in_tests(request_: ModelRequest) -> None:
    with pytest.raises(ModelRequestBlockedError, match=r"api\.anthropic\.com"):
        AnthropicProvider(ProviderSettings("anthropic", "claude-haiku-4-5")).complete(request_)


def test_no_key_is_a_clear_error(request_: ModelRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ModelError, match="set ANTHROPIC_API_KEY"):
        AnthropicProvider(ProviderSettings("anthropic", "claude-haiku-4-5")).complete(request_)


def test_estimate_caps_the_output(request_: ModelRequest) -> None:
    est = AnthropicProvider(ProviderSettings("anthropic", "x", max_tokens=321)).estimate(request_)
    assert est.output_tokens == 321 and est.input_tokens > 50
