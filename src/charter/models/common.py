"""What every provider shares: resolved settings, token estimates, SDK imports, errors.

A provider is configured from the contract's ``model`` section, possibly overridden at
submission (``--model openai:gpt-4o-mini``); :class:`ProviderSettings` is that
configuration resolved once, so that providers never read the contract themselves.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from charter.contract.sections import ModelSection
from charter.errors import ModelError, ModelRequestBlockedError
from charter.models.base import ModelRequest, Usage
from charter.models.schema import proposal_schema
from charter.scrub import scrub

#: Output cap when the contract sets no ``model.max_tokens``: every call is capped, so
#: that its cost can be bounded before it is made.
DEFAULT_MAX_TOKENS = 1024
#: Seconds per HTTP attempt when the contract sets no ``model.timeout``.
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
#: Characters per token of the estimate. Real tokenisers need vocabulary files that are
#: downloaded on first use; four characters per token is the usual figure for English
#: text and JSON, and the estimate is settled against the provider's actual count anyway.
CHARS_PER_TOKEN = 4
#: Per-message framing tokens the chat formats add around the prompt.
MESSAGE_OVERHEAD = 8


def estimate_tokens(text: str) -> int:
    """Tokens in ``text`` by the chars/4 heuristic, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def schema_tokens(schema: Mapping[str, Any]) -> int:
    return estimate_tokens(json.dumps(schema, separators=(",", ":")))


@dataclass(frozen=True)
class ProviderSettings:
    """A provider's configuration, from the contract's ``model`` section and the override."""

    provider: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    temperature: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    output: str | None = None

    @property
    def output_cap(self) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS

    def api_key(self, default_env: str) -> str | None:
        """The key from ``model.api_key_env`` if named, else from the SDK's usual variable.

        Keys never live in contracts (they are stored in the ledger and shared); a contract
        may only name the environment variable that holds one.
        """
        return os.environ.get(self.api_key_env or default_env) or None

    @classmethod
    def from_model(
        cls, section: ModelSection, provider: str, model: str | None
    ) -> ProviderSettings:
        """Settings for ``provider``; endpoint settings of the contract apply only when the
        contract names the same provider (an override to another provider uses its defaults)."""
        same = section.provider == provider
        return cls(
            provider=provider,
            model=model or (section.name or "" if same else ""),
            base_url=section.base_url if same else None,
            api_key_env=section.api_key_env if same else None,
            timeout=section.timeout.total_seconds() if section.timeout else DEFAULT_TIMEOUT,
            max_retries=DEFAULT_MAX_RETRIES if section.max_retries is None else section.max_retries,
            temperature=section.temperature,
            seed=section.seed,
            max_tokens=section.max_tokens,
            output=section.output if same else None,
        )


def import_sdk(module: str, extra: str) -> ModuleType:
    """Import an optional SDK, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(
            f"the {module} provider needs the {module!r} package: pip install 'charter[{extra}]'"
        ) from None


def describe_api_error(provider: str, model: str, exc: Exception) -> str:
    """One line naming the provider, the HTTP status and the API's own message, scrubbed.

    The message carries the server's response body, which Charter does not control (a
    proxy may echo the request's ``Authorization`` header in it) and which ends up in the
    append-only ledger (``run.failed``, the ``fallback`` of a call's ``params``): every
    credential :func:`charter.scrub.scrub` recognises is replaced by ``[REDACTED]`` here,
    before the text can go anywhere.
    """
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    where = f"{provider}:{model}"
    if status is not None:
        return scrub(f"{where}: HTTP {status} {type(exc).__name__}: {message}")
    return scrub(f"{where}: {type(exc).__name__}: {message}")


class SdkProvider:
    """What the SDK-backed providers share: their settings, the SDK client built on first
    use and closed with the provider, and the estimate reserved before every call.

    Subclasses name themselves (``name``, ``default_model``) and build their client in
    :meth:`_build_client`; the client is created lazily so that a provider can be
    constructed (and checked) on a machine without the SDK or a key.
    """

    name: str
    default_model: str

    def __init__(self, settings: ProviderSettings, *, client: Any = None) -> None:
        self.settings = settings
        self.model = settings.model or self.default_model
        self._client = client
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def _build_client(self) -> Any:
        raise NotImplementedError

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._build_client()
            # pooled connections are closed with the provider (or by close())
            self._finalizer = weakref.finalize(self, self._client.close)
        return self._client

    def close(self) -> None:
        """Close the HTTP client's pooled connections."""
        if self._finalizer is not None:
            self._finalizer()

    def failure(self, exc: Exception) -> ModelError:
        """What an SDK error means to a run: the guard's refusal as it was raised (the SDK
        wraps it in a connection error), anything else one scrubbed line naming the call."""
        if isinstance(exc.__cause__, ModelRequestBlockedError):
            return exc.__cause__
        return ModelError(describe_api_error(self.name, self.model, exc))

    def estimate(self, request: ModelRequest) -> Usage:
        """Prompt and proposal schema by chars/4, plus the output cap priced as output."""
        schema = proposal_schema(request.actions, request.descriptions)
        return Usage(
            input_tokens=estimate_tokens(request.prompt) + schema_tokens(schema) + MESSAGE_OVERHEAD,
            output_tokens=self.settings.output_cap,
        )
