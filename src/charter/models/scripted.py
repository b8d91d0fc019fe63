"""The offline provider: a Python callable plays the model.

Used by the demo and the tests so that runs are deterministic and free. The callable
receives the :class:`ModelRequest` a real model would get and returns a proposal dict (or
a raw string, to exercise malformed output); the provider records it as raw JSON text,
exactly as it would a real model's reply. Token counts are estimated from text length.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from charter.models.base import ModelRequest, ModelResponse, Usage

Script = Callable[[ModelRequest], Any]


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class ScriptedProvider:
    """A model whose replies come from ``script(request)``."""

    name = "scripted"

    def __init__(self, script: Script, model: str = "scripted", max_tokens: int = 1024) -> None:
        self.script = script
        self.model = model
        self.max_tokens = max_tokens

    def estimate(self, request: ModelRequest) -> Usage:
        return Usage(
            input_tokens=_tokens(request.prompt), output_tokens=self.max_tokens, cost_usd=0.0
        )

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        reply = self.script(request)
        raw = reply if isinstance(reply, str) else json.dumps(reply, sort_keys=True)
        return ModelResponse(
            raw=raw,
            usage=Usage(
                input_tokens=_tokens(request.prompt), output_tokens=_tokens(raw), cost_usd=0.0
            ),
            model=self.model,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
