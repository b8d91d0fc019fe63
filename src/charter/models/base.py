"""What a model provider receives and returns.

Providers are the only place Charter talks to a model. They get a :class:`ModelRequest`
(everything the model may see, already filtered by the contract) and return a
:class:`ModelResponse` with the raw output and usage; parsing and validating the proposal
happens outside the provider, so a real provider and the scripted one are judged alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelRequest:
    """Everything one model call may see.

    ``history`` lists earlier steps of this run: each ``{"proposal": {...}, "results":
    [{"action", "args", "status", "result" | "reason"}]}`` with status one of
    ``completed``, ``failed``, ``denied``, ``rejected`` (by a reviewer). ``feedback`` holds
    the reasons the previous output was rejected as invalid, for a corrected retry.
    """

    contract: str
    run_id: str
    step: int
    attempt: int
    prompt: str
    input: Mapping[str, Any]
    context: Mapping[str, Any]
    observations: Sequence[Mapping[str, Any]]
    actions: Mapping[str, Mapping[str, Any]]
    history: Sequence[Mapping[str, Any]] = ()
    feedback: Sequence[str] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    #: ``{action: description}`` from the contract, so providers can describe the actions
    #: in the structured-output schema they send (the prompt already lists them).
    descriptions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    """Tokens by kind, normalised across providers so that pricing has one meaning.

    ``input_tokens`` counts *every* prompt token, and ``cached_input_tokens`` (read from a
    prompt cache) and ``cache_write_tokens`` (written to it) are subsets of it; likewise
    ``reasoning_tokens`` is the subset of ``output_tokens`` the model spent thinking.
    OpenAI reports usage this way already; Anthropic reports cache reads and writes
    *beside* ``input_tokens``, and its provider adds them in. Counting a subset twice is
    the classic cost bug (see :mod:`charter.models.pricing`). ``cost_usd`` is what the
    provider itself says the call cost (0 when it does not say); the price table, when it
    knows the model, takes precedence.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ModelResponse:
    """The raw text the model produced and what it cost; ``raw`` is recorded verbatim."""

    raw: str
    usage: Usage
    model: str
    latency_ms: float = 0.0
    #: The parameters actually sent (temperature, seed, max tokens, output mode, fallbacks
    #: taken, parameters the provider does not support); recorded in ``ModelCalled.params``.
    #: ``None`` means "what the contract asked for", as for the scripted provider.
    params: Mapping[str, Any] | None = None


class ModelProvider(Protocol):
    """A model behind Charter's interface: estimate before calling, then call."""

    name: str
    model: str

    def estimate(self, request: ModelRequest) -> Usage:
        """Upper bound of the call's usage, reserved against the budget before calling."""
        ...

    def complete(self, request: ModelRequest) -> ModelResponse: ...
