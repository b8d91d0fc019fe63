"""A local HTTP server that speaks the OpenAI and Anthropic wire formats.

The providers are tested through the real SDKs over real HTTP against this server on
127.0.0.1 — no SDK internals are patched. Each test queues the replies the server gives,
in order (status, headers, JSON or raw body), and reads back every request it received.

- ``POST /v1/chat/completions`` (OpenAI): :func:`chat_completion` builds replies with
  message content (structured output / JSON mode) or a ``propose`` tool call;
- ``POST /v1/messages`` (Anthropic): :func:`anthropic_message` builds replies with a
  ``tool_use`` block or text;
- :func:`openai_error` / :func:`anthropic_error` build the providers' error bodies, for
  429 (with ``Retry-After``), 5xx and 400 replies;
- :func:`echo_error` builds a reply computed from the request it answers: a misbehaving
  proxy that echoes the request's headers (``Authorization``, ``x-api-key``) in its error.

With no reply queued the server answers 599 with an error, so an unexpected extra request
fails the test loudly rather than hanging.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Reply:
    status: int = 200
    # dict/list: sent as JSON; str: sent as is; callable: called with the request received
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class FakeModelServer:
    """A threaded HTTP server on 127.0.0.1 with a queue of scripted replies."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = raw.decode("utf-8", "replace")
                received = Received(
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                )
                with server._lock:
                    server.requests.append(received)
                    reply = (
                        server.replies.popleft()
                        if server.replies
                        else Reply(
                            599, {"error": {"message": "no reply queued in the fake server"}}
                        )
                    )
                content = reply.body(received) if callable(reply.body) else reply.body
                payload = (
                    content
                    if isinstance(content, str)
                    else json.dumps(content if content is not None else {})
                ).encode("utf-8")
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.body for r in self.requests if path is None or r.path.endswith(path)]


@contextmanager
def running() -> Iterator[FakeModelServer]:
    server = FakeModelServer().start()
    try:
        yield server
    finally:
        server.stop()


# -- OpenAI chat completions ----------------------------------------------------------
def chat_completion(
    *,
    content: str | None = None,
    tool_arguments: str | None = None,
    model: str = "gpt-4o-mini-2024-07-18",
    prompt_tokens: int = 1200,
    completion_tokens: int = 80,
    cached_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    extra_usage: Mapping[str, Any] | None = None,
) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    finish = "stop"
    if tool_arguments is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "propose", "arguments": tool_arguments},
            }
        ]
        finish = "tool_calls"
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens, "audio_tokens": 0}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    usage.update(extra_usage or {})
    return Reply(
        200,
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1767225600,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": usage,
        },
    )


def openai_error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    kind = {
        400: "invalid_request_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error")
    return Reply(
        status,
        {"error": {"message": message, "type": kind, "param": None, "code": None}},
        headers or {},
    )


def echo_error(status: int, *, style: str = "openai") -> Reply:
    """An error that echoes the request's credential headers back, as some proxies do.

    ``style``: ``openai`` (the header inside ``error.message``, which the SDK quotes in its
    exception), ``anthropic`` (an Anthropic error body with the headers beside the message)
    or ``text`` (a plain-text dump of every request header, as a debugging proxy sends).
    """

    def body(request: Received) -> Any:
        auth = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key", "")
        if style == "text":
            dump = "\r\n".join(f"{k}: {v}" for k, v in request.headers.items())
            return f"upstream rejected the request\r\n{dump}\r\n"
        if style == "anthropic":
            return {
                "type": "error",
                "error": {
                    "type": "authentication_error",
                    "message": f"invalid x-api-key: {key} (Authorization: {auth})",
                },
                "request": {"headers": {"x-api-key": key, "authorization": auth}},
            }
        return {
            "error": {
                "message": (
                    f"proxy: upstream said no. Request had Authorization: {auth}\n"
                    f'headers={{"authorization": "{auth}", "x-api-key": "{key}"}}'
                ),
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            },
            "echo": {"Authorization": auth},
        }

    return Reply(status, body)


# -- Anthropic messages ------------------------------------------------------------------
def anthropic_message(
    *,
    tool_input: Any = None,
    text: str | None = None,
    model: str = "claude-haiku-4-5-20251001",
    input_tokens: int = 900,
    output_tokens: int = 60,
    cache_read: int | None = None,
    cache_write: int | None = None,
) -> Reply:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    if tool_input is not None:
        content.append(
            {"type": "tool_use", "id": "toolu_1", "name": "propose", "input": tool_input}
        )
    usage: dict[str, Any] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cache_read is not None:
        usage["cache_read_input_tokens"] = cache_read
    if cache_write is not None:
        usage["cache_creation_input_tokens"] = cache_write
    return Reply(
        200,
        {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if tool_input is not None else "end_turn",
            "stop_sequence": None,
            "usage": usage,
        },
    )


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    kind = {
        400: "invalid_request_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }.get(status, "api_error")
    return Reply(
        status,
        {"type": "error", "error": {"type": kind, "message": message}},
        headers or {},
    )


def proposal(*actions: tuple[str, dict[str, Any]], confidence: float = 0.9) -> dict[str, Any]:
    return {
        "actions": [{"name": n, "args": a} for n, a in actions],
        "final": None,
        "confidence": confidence,
        "rationale": "fake model",
    }


def final(answer: dict[str, Any], confidence: float = 0.95) -> dict[str, Any]:
    return {"actions": [], "final": answer, "confidence": confidence, "rationale": "done"}
