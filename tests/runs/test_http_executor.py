"""HTTP executors: JSON POST with a stable Idempotency-Key, 5xx/timeouts retried, 4xx final."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from charter.errors import ExecutorError
from charter.execution.base import ExecutionContext
from charter.execution.executors import HttpExecutor, resolve_executor
from charter.ledger.events import ActionCompleted, ActionFailed, ActionStarted
from charter.runs.runtime import Runtime
from tests.runs.domain import Effects, contract


@dataclass
class Endpoint:
    """A local HTTP service: answers from a script, remembers every request."""

    url: str = ""
    answers: deque[tuple[int, bytes, float]] = field(default_factory=deque)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, status: int, body: Any = None, *, delay: float = 0.0) -> None:
        raw = (
            body
            if isinstance(body, bytes)
            else json.dumps(body).encode()
            if body is not None
            else b""
        )
        self.answers.append((status, raw, delay))


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            ep.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
            )
            status, raw, delay = ep.answers.popleft() if ep.answers else (200, b'{"ok": true}', 0)
            if delay:
                time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that timed out and left is not a test failure

    server = Server(("127.0.0.1", 0), Handler)
    ep.url = f"http://127.0.0.1:{server.server_address[1]}/ship"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield ep
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff delays the executor asked for (without waiting them)."""
    delays: list[float] = []

    class FakeTime:
        @staticmethod
        def sleep(seconds: float) -> None:
            delays.append(seconds)

    monkeypatch.setattr("charter.execution.executors.time", FakeTime)
    return delays


CTX = ExecutionContext("run_abc", 3, "ship", "run_abc:3")


def test_5xx_is_retried_with_backoff_and_the_same_idempotency_key(
    endpoint: Endpoint, sleeps: list[float]
) -> None:
    endpoint.answer(503, {"error": "busy"})
    endpoint.answer(502, b"bad gateway")
    endpoint.answer(201, {"receipt": "r-1"})
    result = HttpExecutor(endpoint.url, timeout=2, retries=3, backoff=0.2)({"n": 1}, CTX)
    assert result == {"receipt": "r-1"}
    assert len(endpoint.requests) == 3
    keys = {r["headers"]["Idempotency-Key"] for r in endpoint.requests}
    assert keys == {"run_abc:3"}
    first = endpoint.requests[0]
    assert first["body"] == {"n": 1}
    assert first["headers"]["Content-Type"] == "application/json"
    assert (first["headers"]["X-Charter-Run"], first["headers"]["X-Charter-Action"]) == (
        "run_abc",
        "ship",
    )
    # exponential backoff with jitter: 0.2 * 2**attempt * [0.5, 1.5)
    assert len(sleeps) == 2
    assert 0.1 <= sleeps[0] < 0.3
    assert 0.2 <= sleeps[1] < 0.6


def test_4xx_is_final_and_not_retried(endpoint: Endpoint, sleeps: list[float]) -> None:
    endpoint.answer(422, {"error": "amount too large"})
    with pytest.raises(ExecutorError, match=r"refused the action: HTTP 422 .*amount too large"):
        HttpExecutor(endpoint.url, retries=3)({"n": 1}, CTX)
    assert len(endpoint.requests) == 1
    assert sleeps == []


def test_persistent_5xx_gives_up_after_the_retries(endpoint: Endpoint, sleeps: list[float]) -> None:
    for _ in range(3):
        endpoint.answer(500, {"error": "down"})
    with pytest.raises(ExecutorError, match=r"failed after 3 attempts: HTTP 500"):
        HttpExecutor(endpoint.url, retries=2)({}, CTX)
    assert len(endpoint.requests) == 3
    assert len(sleeps) == 2


def test_a_success_that_is_not_json_is_an_error(endpoint: Endpoint, sleeps: list[float]) -> None:
    endpoint.answer(200, b"<html>ok</html>")
    with pytest.raises(ExecutorError, match="answered 200 with a body that is not JSON"):
        HttpExecutor(endpoint.url)({}, CTX)
    assert len(endpoint.requests) == 1


def test_an_empty_success_is_an_empty_result(endpoint: Endpoint) -> None:
    endpoint.answer(204)
    assert HttpExecutor(endpoint.url)({}, CTX) == {}


def test_a_timeout_is_retried_with_the_same_key(endpoint: Endpoint, sleeps: list[float]) -> None:
    endpoint.answer(200, {"late": True}, delay=1.0)
    endpoint.answer(200, {"receipt": "r-2"})
    result = HttpExecutor(endpoint.url, timeout=0.2, retries=1)({"n": 2}, CTX)
    assert result == {"receipt": "r-2"}
    assert [r["headers"]["Idempotency-Key"] for r in endpoint.requests] == ["run_abc:3"] * 2


def test_an_unreachable_endpoint_is_reported(sleeps: list[float]) -> None:
    with pytest.raises(ExecutorError, match=r"failed after 2 attempts: Connect"):
        HttpExecutor("http://127.0.0.1:9/nothing", timeout=0.5, retries=1)({}, CTX)


def test_contract_settings_configure_the_executor() -> None:
    ex = resolve_executor({"http": "http://svc/x", "timeout": "1500ms", "retries": 5})
    assert isinstance(ex, HttpExecutor)
    assert (ex.url, ex.timeout, ex.retries) == ("http://svc/x", 1.5, 5)


def _ship_contract(url: str) -> Any:
    return contract(
        script="planned",
        actions={
            "ship": {
                "executor": {"http": url, "retries": 2, "timeout": "2s"},
                "effect": "write",
                "args": {"type": "object", "required": ["parcel"]},
            }
        },
        rules=[{"id": "ship", "when": 'action.name == "ship"', "effect": "allow"}],
    )


def test_a_run_calls_the_endpoint_with_its_step_key(
    rt: Runtime, endpoint: Endpoint, effects: Effects, sleeps: list[float]
) -> None:
    endpoint.answer(500, {"error": "try again"})
    endpoint.answer(200, {"tracking": "T-1"})
    run_id = rt.submit(
        _ship_contract(endpoint.url), {"item": "x", "plan": [[["ship", {"parcel": "p1"}]]]}
    )
    assert rt.run(run_id).status == "completed"
    [started] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ActionStarted)]
    [done] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ActionCompleted)]
    assert done.result == {"tracking": "T-1"}
    assert [r["headers"]["Idempotency-Key"] for r in endpoint.requests] == [
        started.idempotency_key
    ] * 2
    assert started.idempotency_key == f"{run_id}:1"
    assert [r["body"] for r in endpoint.requests] == [{"parcel": "p1"}] * 2


def test_a_run_whose_endpoint_refuses_fails_the_action(
    rt: Runtime, endpoint: Endpoint, effects: Effects, sleeps: list[float]
) -> None:
    endpoint.answer(409, {"error": "duplicate parcel"})
    run_id = rt.submit(
        _ship_contract(endpoint.url), {"item": "x", "plan": [[["ship", {"parcel": "p1"}]]]}
    )
    assert rt.run(run_id).status == "failed"
    [failed] = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ActionFailed)]
    assert "HTTP 409" in failed.error and "duplicate parcel" in failed.error
    assert len(endpoint.requests) == 1
