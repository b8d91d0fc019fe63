"""The openai provider through the official SDK, over HTTP, against a local fake server."""

from __future__ import annotations

import json
import time

import pytest

from charter.errors import ModelError, ModelRequestBlockedError
from charter.models.base import ModelRequest, Usage
from charter.models.common import ProviderSettings
from charter.models.openai_provider import OpenAIProvider
from tests.models.fake_servers import (
    FakeModelServer,
    chat_completion,
    openai_error,
    proposal,
)

WRITE = proposal(("write", {"item": "bolt", "qty": 2}))


def provider(fake: FakeModelServer, **settings: object) -> OpenAIProvider:
    base = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "base_url": f"{fake.url}/v1",
        "max_retries": 2,
        "timeout": 10.0,
    }
    base.update(settings)
    return OpenAIProvider(ProviderSettings(**base))  # type: ignore[arg-type]


def test_structured_output_sends_the_proposal_schema_and_the_parameters(
    fake: FakeModelServer, request_: ModelRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake.push(chat_completion(content=json.dumps(WRITE), cached_tokens=1000, reasoning_tokens=30))
    p = provider(fake, temperature=0.0, seed=7, max_tokens=300)
    response = p.complete(request_)
    assert json.loads(response.raw) == WRITE
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.usage == Usage(
        input_tokens=1200,
        output_tokens=80,
        cached_input_tokens=1000,
        reasoning_tokens=30,
    )
    [req] = fake.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test"
    body = req.body
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [{"role": "user", "content": request_.prompt}]
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.0, 7, 300)
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is False
    schema = fmt["json_schema"]["schema"]
    variants = schema["properties"]["actions"]["items"]["anyOf"]
    assert [v["properties"]["name"]["const"] for v in variants] == ["send_email", "write"]
    assert variants[1]["properties"]["args"] == request_.actions["write"]
    assert variants[1]["description"] == "Write stock"
    assert response.params == {
        "temperature": 0.0,
        "seed": 7,
        "max_tokens": 300,
        "output": "json_schema",
    }


def test_tool_calls_mode_forces_the_propose_function(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(chat_completion(tool_arguments=json.dumps(WRITE)))
    response = provider(fake, output="tools").complete(request_)
    assert json.loads(response.raw) == WRITE
    body = fake.requests[0].body
    assert body["tool_choice"] == {"type": "function", "function": {"name": "propose"}}
    [tool] = body["tools"]
    assert tool["function"]["name"] == "propose"
    assert set(tool["function"]["parameters"]["properties"]) == {
        "actions",
        "final",
        "confidence",
        "rationale",
    }
    assert "response_format" not in body
    # a local endpoint without a key gets a placeholder, which such servers ignore
    assert fake.requests[0].headers["authorization"] == "Bearer unused"


def test_an_endpoint_that_rejects_structured_output_falls_back_to_json_mode(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(
        openai_error(400, "response_format json_schema is not supported by this server"),
        chat_completion(content=json.dumps(WRITE)),
        chat_completion(content=json.dumps(WRITE)),
    )
    p = provider(fake)
    first = p.complete(request_)
    assert json.loads(first.raw) == WRITE
    assert first.params is not None and first.params["output"] == "json"
    assert "json_schema: openai:gpt-4o-mini: HTTP 400" in first.params["fallback"][0]
    assert [b.get("response_format", {}).get("type") for b in fake.bodies()] == [
        "json_schema",
        "json_object",
    ]
    # the provider remembers what the endpoint accepts: no second failing request
    second = p.complete(request_)
    assert second.params is not None and "fallback" not in second.params
    assert fake.bodies()[-1]["response_format"] == {"type": "json_object"}


def test_json_mode_rejected_too_falls_back_to_the_prompt_alone(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(
        openai_error(400, "unsupported: response_format"),
        openai_error(400, "unsupported: response_format"),
        chat_completion(content=json.dumps(WRITE)),
    )
    response = provider(fake).complete(request_)
    assert response.params is not None and response.params["output"] == "text"
    assert len(response.params["fallback"]) == 2
    assert "response_format" not in fake.bodies()[-1]


def test_a_400_in_the_weakest_mode_is_an_error_naming_the_api_message(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(openai_error(400, "model 'nope' does not exist"))
    with pytest.raises(ModelError, match=r"openai:gpt-4o-mini: HTTP 400 .*model 'nope' does not"):
        provider(fake, output="text").complete(request_)


def test_429_is_retried_after_the_retry_after_header(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(
        openai_error(429, "Rate limit reached", {"Retry-After": "1"}),
        chat_completion(content=json.dumps(WRITE)),
    )
    started = time.monotonic()
    response = provider(fake).complete(request_)
    assert json.loads(response.raw) == WRITE
    first, second = fake.requests
    # the SDK's own backoff for a first retry is at most 0.5 s: 1 s means Retry-After won
    assert second.at - first.at >= 0.95
    assert time.monotonic() - started >= 0.95
    assert second.headers["x-stainless-retry-count"] == "1"
    assert response.latency_ms >= 950


def test_a_500_then_success_is_retried_with_backoff(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(openai_error(500, "internal error"), chat_completion(content=json.dumps(WRITE)))
    response = provider(fake).complete(request_)
    assert json.loads(response.raw) == WRITE
    first, second = fake.requests
    assert 0.3 <= second.at - first.at <= 3  # 0.5 s less up to 25% jitter
    # the same logical request: identical bodies
    assert first.body == second.body


def test_persistent_server_errors_give_up_after_max_retries(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(*[openai_error(503, "overloaded")] * 3)
    with pytest.raises(ModelError, match="HTTP 503"):
        provider(fake, max_retries=1).complete(request_)
    assert len(fake.requests) == 2


def test_the_request_timeout_applies_per_attempt(request_: ModelRequest) -> None:
    import socket

    # a server that accepts and never answers
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        p = OpenAIProvider(
            ProviderSettings("openai", "gpt-4o-mini", base_url=url, timeout=0.3, max_retries=0)
        )
        started = time.monotonic()
        with pytest.raises(ModelError, match="Timeout"):
            p.complete(request_)
        assert time.monotonic() - started < 5
    finally:
        listener.close()


def test_reported_gateway_cost_is_kept_as_the_providers_own_figure(
    fake: FakeModelServer, request_: ModelRequest
) -> None:
    fake.push(chat_completion(content=json.dumps(WRITE), extra_usage={"cost": 0.00042}))
    assert provider(fake).complete(request_).usage.cost_usd == 0.00042


def test_estimate_counts_the_prompt_and_schema_and_caps_the_output(
    request_: ModelRequest,
) -> None:
    p = OpenAIProvider(ProviderSettings("openai", "gpt-4o-mini", max_tokens=500))
    est = p.estimate(request_)
    assert est.output_tokens == 500
    # chars/4 of the prompt, plus the schema, plus framing
    assert est.input_tokens > len(request_.prompt) // 4 + 50
    assert OpenAIProvider(ProviderSettings("openai", "x")).estimate(request_).output_tokens == 1024


def test_real_endpoints_are_blocked_in_tests_before_any_request(
    request_: ModelRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-key")
    with pytest.raises(ModelRequestBlockedError, match=r"'api\.openai\.com' blocked"):
        OpenAIProvider(ProviderSettings("openai", "gpt-4o-mini")).complete(request_)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://llm.example.com/v1")
    with pytest.raises(ModelRequestBlockedError, match=r"llm\.example\.com"):
        OpenAIProvider(ProviderSettings("openai", "gpt-4o-mini")).complete(request_)


def test_the_official_endpoint_without_a_key_is_a_clear_error(request_: ModelRequest) -> None:
    with pytest.raises(ModelError, match="no API key; set OPENAI_API_KEY"):
        OpenAIProvider(ProviderSettings("openai", "gpt-4o-mini")).complete(request_)


def test_the_key_comes_from_the_variable_the_contract_names(
    fake: FakeModelServer, request_: ModelRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_KEY", "gw-123")
    fake.push(chat_completion(content=json.dumps(WRITE)))
    provider(fake, api_key_env="GATEWAY_KEY").complete(request_)
    assert fake.requests[0].headers["authorization"] == "Bearer gw-123"


def test_openai_base_url_from_the_environment_is_used(
    fake: FakeModelServer, request_: ModelRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake.url}/v1")
    fake.push(chat_completion(content=json.dumps(WRITE)))
    response = OpenAIProvider(ProviderSettings("openai", "llama3.2")).complete(request_)
    assert json.loads(response.raw) == WRITE
    assert fake.requests[0].body["model"] == "llama3.2"
