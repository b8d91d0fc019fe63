"""The ``anthropic`` provider: the official SDK's Messages API, proposals via tool use.

The model gets one tool, ``propose``, whose input schema is the proposal schema generated
from the contract's actions, and is made to call it (``tool_choice``); the tool input is
the proposal, recorded as canonical JSON. Endpoint and key: ``model.base_url`` or
``$ANTHROPIC_BASE_URL``, the variable ``model.api_key_env`` names or ``$ANTHROPIC_API_KEY``.

This SDK version exposes neither ``temperature`` nor ``seed``; when a contract sets them
the call records them under ``params.unsupported`` rather than pretending they were used.

Usage: Anthropic reports ``input_tokens`` *without* the prompt-cache reads and writes,
which come beside it (``cache_read_input_tokens``, ``cache_creation_input_tokens``); they
are added in here so that :class:`~charter.models.base.Usage` means the same for every
provider and each kind is priced once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from charter.errors import ModelError
from charter.models.base import ModelRequest, ModelResponse, Usage
from charter.models.common import (
    SdkProvider,
    import_sdk,
)
from charter.models.guard import check_url, request_hook
from charter.models.schema import TOOL_DESCRIPTION, TOOL_NAME, proposal_schema
from charter.scrub import scrub

DEFAULT_MODEL = "claude-haiku-4-5"


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_anthropic(usage: Any) -> Usage:
    """Normalise Messages usage: cache reads and writes join ``input_tokens`` as subsets."""
    if usage is None:
        return Usage()
    plain = _int(getattr(usage, "input_tokens", 0))
    read = _int(getattr(usage, "cache_read_input_tokens", 0))
    written = _int(getattr(usage, "cache_creation_input_tokens", 0))
    details = getattr(usage, "output_tokens_details", None)
    return Usage(
        input_tokens=plain + read + written,
        output_tokens=_int(getattr(usage, "output_tokens", 0)),
        cached_input_tokens=read,
        cache_write_tokens=written,
        reasoning_tokens=_int(getattr(details, "thinking_tokens", 0)),
    )


class AnthropicProvider(SdkProvider):
    """Messages with a forced ``propose`` tool through the official ``anthropic`` SDK."""

    name = "anthropic"
    default_model = DEFAULT_MODEL

    def _build_client(self) -> Any:
        sdk = import_sdk("anthropic", "anthropic")
        key = self.settings.api_key("ANTHROPIC_API_KEY")
        if key is None:
            raise ModelError(
                "anthropic: no API key; set ANTHROPIC_API_KEY (or the variable named by "
                "model.api_key_env)"
            )
        return sdk.Anthropic(
            api_key=key,
            base_url=self.settings.base_url,  # None: the SDK reads $ANTHROPIC_BASE_URL
            timeout=self.settings.timeout,
            max_retries=self.settings.max_retries,
            http_client=sdk.DefaultHttpxClient(event_hooks={"request": [request_hook]}),
        )

    def complete(self, request: ModelRequest) -> ModelResponse:
        sdk = import_sdk("anthropic", "anthropic")
        check_url(str(self.client.base_url))
        s = self.settings
        sent: dict[str, Any] = {"max_tokens": s.output_cap, "output": "tools"}
        unsupported = [
            p for p, v in (("temperature", s.temperature), ("seed", s.seed)) if v is not None
        ]
        if unsupported:
            sent["unsupported"] = unsupported
        started = time.perf_counter()
        try:
            message = self.client.messages.create(
                model=self.model,
                max_tokens=s.output_cap,
                messages=[{"role": "user", "content": request.prompt}],
                tools=[
                    {
                        "name": TOOL_NAME,
                        "description": TOOL_DESCRIPTION,
                        "input_schema": proposal_schema(request.actions, request.descriptions),
                    }
                ],
                tool_choice={"type": "tool", "name": TOOL_NAME},
            )
        except sdk.AnthropicError as exc:
            raise self.failure(exc) from None
        return ModelResponse(
            # from a server Charter does not control, and recorded for good
            raw=scrub(_raw_output(message)),
            usage=usage_from_anthropic(getattr(message, "usage", None)),
            model=str(getattr(message, "model", None) or self.model),
            latency_ms=(time.perf_counter() - started) * 1000,
            params=sent,
        )


def _raw_output(message: Any) -> str:
    """The ``propose`` tool input as canonical JSON, else the text the model wrote."""
    texts: list[str] = []
    for block in getattr(message, "content", None) or []:
        kind = getattr(block, "type", None)
        if kind == "tool_use" and getattr(block, "name", None) == TOOL_NAME:
            return json.dumps(block.input, sort_keys=True, ensure_ascii=False)
        if kind == "text":
            texts.append(str(getattr(block, "text", "")))
    return "".join(texts)
