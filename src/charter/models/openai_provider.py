"""The ``openai`` provider: the official SDK against any OpenAI-compatible endpoint.

That covers OpenAI itself and the servers that speak its chat-completions API: Ollama,
vLLM, llama.cpp's server, LM Studio, gateways. The endpoint comes from the contract's
``model.base_url`` or ``$OPENAI_BASE_URL``, the key from the variable the contract's
``model.api_key_env`` names or ``$OPENAI_API_KEY`` (a local endpoint without a key gets a
placeholder, which such servers ignore).

How a proposal is asked for (``model.output``):

- ``json_schema`` (default): structured outputs, the proposal schema generated from the
  contract's actions as ``response_format``;
- ``tools``: one ``propose`` function whose parameters are that schema, forced with
  ``tool_choice``;
- ``json``: JSON mode (``{"type": "json_object"}``), the shape given only by the prompt;
- ``text``: nothing but the prompt.

When the endpoint rejects the requested mode (HTTP 400 or 422) the call is repeated once
in the next weaker mode (``json_schema``/``tools`` → ``json`` → ``text``); the modes tried
and why are recorded in the call's ``params``, and the provider remembers the mode that
worked. Whatever the mode, the output is validated by Charter before policy sees it.

Retries: the SDK's own (exponential backoff with jitter on 408/409/429/5xx and connection
errors, honouring ``Retry-After``/``retry-after-ms`` up to two minutes), configured with
``model.max_retries``; ``model.timeout`` bounds each attempt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from charter.errors import ModelError
from charter.models.base import ModelRequest, ModelResponse, Usage
from charter.models.common import (
    ProviderSettings,
    SdkProvider,
    describe_api_error,
    import_sdk,
)
from charter.models.guard import check_url, request_hook
from charter.models.schema import TOOL_DESCRIPTION, TOOL_NAME, proposal_schema
from charter.scrub import scrub

DEFAULT_MODEL = "gpt-4o-mini"
_FALLBACK = {"json_schema": "json", "tools": "json", "json": "text"}


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_openai(usage: Any) -> Usage:
    """Normalise chat-completions usage: cached tokens are already *part of* prompt tokens
    and reasoning tokens part of completion tokens, exactly as :class:`Usage` counts them."""
    if usage is None:
        return Usage()
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    extra: Mapping[str, Any] = getattr(usage, "model_extra", None) or {}
    reported = extra.get("cost")  # gateways such as OpenRouter report the charge
    return Usage(
        input_tokens=_int(getattr(usage, "prompt_tokens", 0)),
        output_tokens=_int(getattr(usage, "completion_tokens", 0)),
        cost_usd=float(reported)
        if isinstance(reported, int | float) and not isinstance(reported, bool)
        else 0.0,
        cached_input_tokens=_int(getattr(prompt_details, "cached_tokens", 0)),
        reasoning_tokens=_int(getattr(completion_details, "reasoning_tokens", 0)),
        cache_write_tokens=_int(getattr(prompt_details, "cache_write_tokens", 0)),
    )


class OpenAIProvider(SdkProvider):
    """Chat completions through the official ``openai`` SDK."""

    name = "openai"
    default_model = DEFAULT_MODEL

    def __init__(self, settings: ProviderSettings, *, client: Any = None) -> None:
        super().__init__(settings, client=client)
        self.mode = settings.output or "json_schema"

    # -- client ----------------------------------------------------------------------
    def _build_client(self) -> Any:
        sdk = import_sdk("openai", "openai")
        key = self.settings.api_key("OPENAI_API_KEY")
        base_url = self.settings.base_url  # None: the SDK reads $OPENAI_BASE_URL
        official = base_url is None and not _env_base_url()
        if key is None:
            if official:
                raise ModelError(
                    "openai: no API key; set OPENAI_API_KEY (or the variable named by "
                    "model.api_key_env), or point OPENAI_BASE_URL at a local server"
                )
            key = "unused"  # Ollama, llama.cpp and friends ignore it
        return sdk.OpenAI(
            api_key=key,
            base_url=base_url,
            timeout=self.settings.timeout,
            max_retries=self.settings.max_retries,
            http_client=sdk.DefaultHttpxClient(event_hooks={"request": [request_hook]}),
        )

    @property
    def base_url(self) -> str:
        return str(self.client.base_url)

    # -- interface -------------------------------------------------------------------
    def _kwargs(self, request: ModelRequest, mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        sent: dict[str, Any] = {}
        if s.temperature is not None:
            kwargs["temperature"] = sent["temperature"] = s.temperature
        if s.seed is not None:
            kwargs["seed"] = sent["seed"] = s.seed
        # OpenAI's own API wants max_completion_tokens (reasoning models refuse max_tokens);
        # compatible servers know max_tokens.
        cap_name = "max_completion_tokens" if _official(self.base_url) else "max_tokens"
        kwargs[cap_name] = sent[cap_name] = s.output_cap
        schema = proposal_schema(request.actions, request.descriptions)
        if mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "proposal", "schema": schema, "strict": False},
            }
        elif mode == "tools":
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": TOOL_NAME,
                        "description": TOOL_DESCRIPTION,
                        "parameters": schema,
                    },
                }
            ]
            kwargs["tool_choice"] = {"type": "function", "function": {"name": TOOL_NAME}}
        elif mode == "json":
            kwargs["response_format"] = {"type": "json_object"}
        sent["output"] = mode
        return kwargs, sent

    def complete(self, request: ModelRequest) -> ModelResponse:
        sdk = import_sdk("openai", "openai")
        check_url(self.base_url)
        fallbacks: list[str] = []
        mode: str | None = self.mode
        started = time.perf_counter()
        while mode is not None:
            kwargs, sent = self._kwargs(request, mode)
            try:
                response = self.client.chat.completions.create(**kwargs)
            except (sdk.BadRequestError, sdk.UnprocessableEntityError) as exc:
                nxt = _FALLBACK.get(mode)
                if nxt is None:
                    raise ModelError(describe_api_error(self.name, self.model, exc)) from None
                fallbacks.append(f"{mode}: {describe_api_error(self.name, self.model, exc)}"[:500])
                mode = nxt
                continue
            except sdk.OpenAIError as exc:
                raise self.failure(exc) from None
            self.mode = mode  # remember what this endpoint accepts
            if fallbacks:
                sent["fallback"] = fallbacks
            return ModelResponse(
                # from a server Charter does not control, and recorded for good
                raw=scrub(_raw_output(response, mode)),
                usage=usage_from_openai(getattr(response, "usage", None)),
                model=str(getattr(response, "model", None) or self.model),
                latency_ms=(time.perf_counter() - started) * 1000,
                params=sent,
            )
        raise AssertionError("unreachable")  # pragma: no cover


def _raw_output(response: Any, mode: str) -> str:
    choices = getattr(response, "choices", None) or []
    if not choices:
        return ""
    message = choices[0].message
    if mode == "tools":
        for call in getattr(message, "tool_calls", None) or []:
            function = getattr(call, "function", None)
            if function is not None and function.name == TOOL_NAME:
                return str(function.arguments or "")
    content = getattr(message, "content", None)
    if content:
        return str(content)
    refusal = getattr(message, "refusal", None)
    return str(refusal or "")


def _env_base_url() -> str | None:
    return os.environ.get("OPENAI_BASE_URL") or None


def _official(base_url: str) -> bool:
    return (urlsplit(base_url).hostname or "").endswith("api.openai.com")
