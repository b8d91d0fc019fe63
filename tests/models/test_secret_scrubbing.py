"""Credentials echoed by a server never reach the ledger.

A proxy in front of a provider answered errors with the request's ``Authorization`` header
in the body; Charter put that body in a ``run.failed`` event, and the ledger is append-only,
so the API key could never be removed again. These tests run real runs through the real SDKs
against a fake server on 127.0.0.1 that echoes the credentials it receives, then look for the
key in every stored event row and in the SQLite files' raw bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from charter.errors import ExecutorError, ModelError
from charter.execution.base import ExecutionContext
from charter.execution.executors import HttpExecutor
from charter.ledger.events import ActionFailed, ModelCalled, RunFailed
from charter.models.anthropic_provider import AnthropicProvider
from charter.models.base import ModelRequest
from charter.models.common import ProviderSettings, describe_api_error
from charter.models.openai_provider import OpenAIProvider
from charter.runs.runtime import Runtime
from tests.models.fake_servers import (
    FakeModelServer,
    Reply,
    chat_completion,
    echo_error,
    final,
)
from tests.runs.domain import Effects, contract

# distinctive fake keys: one shaped like an OpenAI project key, two opaque ones that only
# the environment (a variable named *KEY*) or the header they travel in give away
SK_KEY = "sk-proj-CharterCanary7Q2w9E4r6T8y0U1i3O5p"
OPAQUE_KEY = "gw-canary-5f1e2d3c4b5a69788796a5b4"
UNNAMED_KEY = "cred-canary-0a9b8c7d6e5f4a3b2c1d"
KEYS = [
    pytest.param("OPENAI_API_KEY", SK_KEY, id="sk-shaped-key"),
    pytest.param("CHARTER_GATEWAY_KEY", OPAQUE_KEY, id="opaque-key-in-a-KEY-variable"),
    pytest.param("MODEL_GATEWAY_CRED", UNNAMED_KEY, id="opaque-key-in-an-unremarkable-variable"),
]


def openai_model(fake: FakeModelServer, key_env: str) -> dict[str, Any]:
    return {
        "provider": "openai",
        "name": "gpt-4o-mini",
        "base_url": f"{fake.url}/v1",
        "api_key_env": key_env,
        "script": None,
        "max_tokens": 200,
        "max_retries": 0,
    }


def assert_nowhere_in_the_ledger(rt: Runtime, run_id: str, db: Path, secret: str) -> None:
    rows = list(rt.store.raw_events(run_id))
    assert rows
    for row in rows:
        assert secret not in row.data_json, f"{row.type} (seq {row.seq}) holds the key"
        assert secret not in json.dumps(row.data_json)
    # the files themselves: the database, its write-ahead log and any journal
    files = sorted(db.parent.glob(db.name + "*"))
    assert db in files
    for path in files:
        data = path.read_bytes()
        assert secret.encode() not in data, f"{path.name} holds the key"
        assert secret.encode("utf-16-le") not in data


def received_key(fake: FakeModelServer, secret: str) -> None:
    """The key really went out, so it really could have come back."""
    assert any(secret in value for r in fake.requests for value in r.headers.values())


@pytest.mark.parametrize(("key_env", "secret"), KEYS)
@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize("style", ["openai", "text"])
def test_a_key_echoed_in_a_provider_error_never_reaches_the_ledger(
    rt: Runtime,
    db: Path,
    effects: Effects,
    fake: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key_env: str,
    secret: str,
    status: int,
    style: str,
) -> None:
    monkeypatch.setenv(key_env, secret)
    fake.push(echo_error(status, style=style))
    c = contract(tmp_path / "ops.yaml", model=openai_model(fake, key_env))
    run_id = rt.submit(c, {"item": "bolt"})
    state = rt.run(run_id)
    assert state.status == "failed"
    received_key(fake, secret)
    [failed] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, RunFailed)]
    # still a useful error: who failed, how
    assert f"openai:gpt-4o-mini: HTTP {status}" in failed.error
    assert secret not in failed.error
    if style == "openai":  # the SDK quotes error.message, with the header in it
        assert "Authorization: Bearer [REDACTED]" in failed.error
        assert '"authorization": "Bearer [REDACTED]"' in failed.error
    assert_nowhere_in_the_ledger(rt, run_id, db, secret)


@pytest.mark.parametrize(("key_env", "secret"), KEYS)
def test_a_key_echoed_in_a_successful_answer_never_reaches_the_ledger(
    rt: Runtime,
    db: Path,
    effects: Effects,
    fake: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key_env: str,
    secret: str,
) -> None:
    """A gateway that answers 200 with the caller's key in the content (a debugging echo, a
    hostile server): the raw output is recorded scrubbed, and parsed from what is recorded."""
    monkeypatch.setenv(key_env, secret)
    answer = final({"note": f"debug: Authorization: Bearer {secret}"})
    fake.push(chat_completion(content=json.dumps(answer)))
    c = contract(tmp_path / "ops.yaml", model=openai_model(fake, key_env))
    run_id = rt.submit(c, {"item": "bolt"})
    state = rt.run(run_id)
    assert state.status == "completed"
    received_key(fake, secret)
    [called] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ModelCalled)]
    assert "[REDACTED]" in called.raw_output
    assert state.proposal is not None and "[REDACTED]" in state.proposal["final"]["note"]
    assert_nowhere_in_the_ledger(rt, run_id, db, secret)


@pytest.mark.parametrize(("key_env", "secret"), KEYS)
def test_a_key_echoed_in_a_rejected_output_mode_stays_out_of_the_recorded_call(
    rt: Runtime,
    db: Path,
    effects: Effects,
    fake: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key_env: str,
    secret: str,
) -> None:
    """A 400 on the structured-output mode is retried in JSON mode and the run succeeds,
    but the 400's text is recorded in the call's ``params.fallback``."""
    monkeypatch.setenv(key_env, secret)
    fake.push(echo_error(400), chat_completion(content=json.dumps(final({"done": True}))))
    c = contract(tmp_path / "ops.yaml", model=openai_model(fake, key_env))
    run_id = rt.submit(c, {"item": "bolt"})
    assert rt.run(run_id).status == "completed"
    received_key(fake, secret)
    [called] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ModelCalled)]
    [fallback] = called.params["fallback"]
    assert fallback.startswith("json_schema: openai:gpt-4o-mini: HTTP 400 BadRequestError")
    assert "Bearer [REDACTED]" in fallback and secret not in fallback
    assert_nowhere_in_the_ledger(rt, run_id, db, secret)


def test_an_anthropic_key_echoed_in_an_error_never_reaches_the_ledger(
    rt: Runtime,
    db: Path,
    effects: Effects,
    fake: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-ant-api03-CharterCanary-9x8y7z6w5v4u3t2s1r0q"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    fake.push(echo_error(401, style="anthropic"))
    model = {"provider": "anthropic", "name": "claude-haiku-4-5", "base_url": fake.url}
    c = contract(tmp_path / "ops.yaml", model={**model, "script": None, "max_retries": 0})
    run_id = rt.submit(c, {"item": "bolt"})
    assert rt.run(run_id).status == "failed"
    received_key(fake, secret)  # as Authorization: Bearer or x-api-key, by SDK version
    [failed] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, RunFailed)]
    assert "anthropic:claude-haiku-4-5: HTTP 401 AuthenticationError" in failed.error
    assert "'authorization': 'Bearer [REDACTED]'" in failed.error
    assert_nowhere_in_the_ledger(rt, run_id, db, secret)


# -- the providers' errors, directly --------------------------------------------------------
def test_openai_provider_errors_are_scrubbed(
    fake: FakeModelServer, request_: ModelRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SK_KEY)
    fake.push(echo_error(403))
    p = OpenAIProvider(
        ProviderSettings("openai", "gpt-4o-mini", base_url=f"{fake.url}/v1", max_retries=0)
    )
    with pytest.raises(ModelError) as info:
        p.complete(request_)
    assert "HTTP 403 PermissionDeniedError" in str(info.value)
    assert SK_KEY not in str(info.value) and "[REDACTED]" in str(info.value)
    p.close()


def test_anthropic_provider_errors_are_scrubbed(
    fake: FakeModelServer, request_: ModelRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "opaque-anthropic-canary-1234"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    fake.push(echo_error(500, style="text"))
    p = AnthropicProvider(
        ProviderSettings("anthropic", "claude-haiku-4-5", base_url=fake.url, max_retries=0)
    )
    with pytest.raises(ModelError) as info:
        p.complete(request_)
    message = str(info.value)
    assert "HTTP 500 InternalServerError" in message  # the SDK quotes a text body whole
    assert "authorization: Bearer [REDACTED]" in message
    assert secret not in message
    p.close()


def test_describe_api_error_scrubs_the_whole_line() -> None:
    class BoomError(Exception):
        status_code = 502
        message = "bad gateway; upstream https://svc:hunter2hunter2@llm.internal/v1 said no"

    line = describe_api_error("openai", "gpt-4o-mini", BoomError())
    assert line == (
        "openai:gpt-4o-mini: HTTP 502 BoomError: bad gateway; upstream "
        "https://svc:[REDACTED]@llm.internal/v1 said no"
    )


# -- the HTTP executor ----------------------------------------------------------------------
CTX = ExecutionContext("run_1", 1, "refund", "run_1:1")
ECHO = (
    "400 Bad Request\r\nAuthorization: Bearer opaque-exec-token-0000\r\n"
    '{"error": "refused", "api_key": "' + SK_KEY + '"}'
)


@pytest.mark.parametrize("status", [400, 422, 500, 503])
def test_http_executor_errors_are_scrubbed(fake: FakeModelServer, status: int) -> None:
    fake.push(*[Reply(status, ECHO)] * 2)
    executor = HttpExecutor(f"{fake.url}/refund", timeout=5, retries=1, backoff=0)
    with pytest.raises(ExecutorError) as info:
        executor({"order_id": "o-1"}, CTX)
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert "Authorization: Bearer [REDACTED]" in message
    assert '"api_key": "[REDACTED]"' in message
    assert "opaque-exec-token-0000" not in message and SK_KEY not in message
    assert "sk-proj" not in message


def test_http_executor_scrubs_before_it_cuts_the_body_short(fake: FakeModelServer) -> None:
    """A key across the 200-character cut: cut first, its front half (too short to look
    like a key) would be quoted."""
    body = "x" * 180 + " " + SK_KEY + " trailing"
    assert len(body[:200]) < len(body) and SK_KEY[:19] in body[:200]
    fake.push(Reply(400, body))
    with pytest.raises(ExecutorError) as info:
        HttpExecutor(f"{fake.url}/refund", retries=0)({}, CTX)
    message = str(info.value)
    assert SK_KEY[:10] not in message
    assert "[REDA" in message  # the marker, possibly cut itself


def test_http_executor_scrubs_long_bodies_without_splitting_a_key(fake: FakeModelServer) -> None:
    # a long redacted block first, so that what follows moves into the quoted 200 characters
    pem = "-----BEGIN PRIVATE KEY-----\n" + "A" * 3900 + "\n-----END PRIVATE KEY-----"
    body = pem + " " + "y" * (4000 - len(pem) - 20) + " " + SK_KEY + " and more" * 10
    fake.push(Reply(400, body))
    with pytest.raises(ExecutorError) as info:
        HttpExecutor(f"{fake.url}/refund", retries=0)({}, CTX)
    message = str(info.value)
    assert "[REDACTED]" in message
    assert SK_KEY[:8] not in message


def test_an_http_executor_echo_never_reaches_the_ledger(
    rt: Runtime,
    db: Path,
    effects: Effects,
    fake: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "opaque-exec-canary-77aa66bb55cc"
    monkeypatch.setenv("REFUND_SERVICE_TOKEN", secret)
    fake.push(Reply(400, f"denied; you sent Authorization: Bearer {secret}"))
    c = contract(
        tmp_path / "ops.yaml",
        script="planned",
        actions={"write": {"executor": {"http": f"{fake.url}/write", "retries": 0}}},
    )
    plan = [[["write", {"item": "bolt", "qty": 1}]]]
    run_id = rt.submit(c, {"item": "bolt", "plan": plan})
    assert rt.run(run_id).status == "failed"
    [failed] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ActionFailed)]
    assert "refused the action: HTTP 400" in failed.error
    assert "Bearer [REDACTED]" in failed.error
    assert_nowhere_in_the_ledger(rt, run_id, db, secret)
