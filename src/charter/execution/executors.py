"""Resolving and calling executors: Python callables by import path, and HTTP endpoints.

An executor performs one action and returns a JSON-serialisable result. It receives an
idempotency key that stays the same if the call is retried after a crash, so effects
happen once even when the runtime cannot know whether the first call got through.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from charter.errors import ExecutorError
from charter.execution.base import ExecutionContext
from charter.primitives import import_callable, parse_duration
from charter.scrub import scrub

Executor = Callable[[dict[str, Any], ExecutionContext], Any]


class HttpExecutor:
    """POST the args as JSON with an ``Idempotency-Key`` header; retry 5xx and timeouts.

    4xx answers are final (the request itself is wrong); 5xx and network errors are retried
    with exponential backoff and jitter, always with the same idempotency key.

    Error messages quote the start of the endpoint's answer, which is recorded in the
    append-only ledger (``action.failed``, ``run.failed``); the endpoint may echo what it
    was sent, so every message is passed through :func:`charter.scrub.scrub` first.
    """

    def __init__(
        self, url: str, timeout: float = 10.0, retries: int = 3, backoff: float = 0.2
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def __call__(self, args: dict[str, Any], ctx: ExecutionContext) -> Any:
        import httpx

        headers = {
            "Idempotency-Key": ctx.idempotency_key,
            "Content-Type": "application/json",
            "X-Charter-Run": ctx.run_id,
            "X-Charter-Action": ctx.action,
        }
        body = json.dumps(args, sort_keys=True)
        last = ""
        for attempt in range(self.retries + 1):
            try:
                resp = httpx.post(self.url, content=body, headers=headers, timeout=self.timeout)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 300:
                    if not resp.content:
                        return {}
                    try:
                        return resp.json()
                    except ValueError:
                        raise ExecutorError(
                            scrub(
                                f"{self.url} answered {resp.status_code} with a body that is "
                                "not JSON"
                            )
                        ) from None
                if resp.status_code < 500:
                    raise ExecutorError(
                        scrub(
                            f"{self.url} refused the action: HTTP {resp.status_code} "
                            f"{_excerpt(resp.text)}"
                        )
                    )
                last = f"HTTP {resp.status_code} {_excerpt(resp.text)}"
            if attempt < self.retries:
                time.sleep(self.backoff * (2**attempt) * (0.5 + random.random()))
        raise ExecutorError(scrub(f"{self.url} failed after {self.retries + 1} attempts: {last}"))


#: Characters of an error body quoted in an executor error, and how much of the body is
#: scrubbed to produce them.
_EXCERPT = 200
_SCRUB_WINDOW = 4000


def _excerpt(body: str) -> str:
    """The start of an endpoint's answer, scrubbed *before* it is cut short.

    Cutting first could leave the front half of a key, too short for its shape to be
    recognised. A body longer than the window is cut at its last blank inside it, so that
    no credential (they contain no blanks) straddles the cut either.
    """
    window = body[:_SCRUB_WINDOW]
    if len(body) > _SCRUB_WINDOW:
        window = _LAST_WORD.sub("", window)
    return scrub(window)[:_EXCERPT]


_LAST_WORD = re.compile(r"\S*\Z")


def resolve_executor(spec: str | Mapping[str, Any]) -> Executor:
    if isinstance(spec, str):
        return import_callable(spec)
    timeout = parse_duration(spec["timeout"]).total_seconds() if spec.get("timeout") else 10.0
    return HttpExecutor(str(spec["http"]), timeout=timeout, retries=int(spec.get("retries", 3)))
