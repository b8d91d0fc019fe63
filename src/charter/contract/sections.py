"""A contract's sections as typed values, each default written once, here.

The contract file is validated against the published JSON Schema before any of this runs,
so these constructors only convert (durations to ``timedelta``, lists to tuples) and fill
defaults. Everything that reads a section — the run loop, the providers, reports — reads
these attributes rather than ``.get(key, default)`` on a mapping, so a default cannot be
one thing in one module and another elsewhere. ``docs/contracts.md`` lists the same
defaults, and ``tests/contract/test_sections.py`` checks each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from charter.policy.cel import Expression, compile_expression
from charter.policy.decision import Effect
from charter.primitives import parse_duration

AutonomyLevel = Literal["shadow", "assist", "supervised", "autonomous"]

#: Model calls a run may make when the budget sets no ``max_model_calls``.
DEFAULT_MAX_MODEL_CALLS = 20
#: Invalid proposals sent back to the model before the run escalates.
DEFAULT_PROPOSAL_RETRIES = 2


def _duration(value: Any) -> timedelta | None:
    return parse_duration(str(value)) if value else None


@dataclass(frozen=True)
class ModelSection:
    """``model``: which model proposes, how it is called, what it may see.

    ``redact`` is ``None`` when the contract does not say (the prompt module then masks
    ``pii``); ``()`` when it opts out of redaction. ``timeout`` and ``max_retries`` are
    ``None`` when the provider's defaults apply.
    """

    provider: str = "scripted"
    name: str | None = None
    temperature: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    prompt: str | None = None
    script: str | None = None
    base_url: str | None = None
    timeout: timedelta | None = None
    max_retries: int | None = None
    api_key_env: str | None = None
    output: str | None = None
    redact: tuple[str, ...] | None = None
    prices: str | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> ModelSection:
        d = data or {}
        return cls(
            provider=str(d.get("provider", "scripted")),
            name=str(d["name"]) if d.get("name") else None,
            temperature=float(d["temperature"]) if "temperature" in d else None,
            seed=int(d["seed"]) if "seed" in d else None,
            max_tokens=int(d["max_tokens"]) if "max_tokens" in d else None,
            prompt=str(d["prompt"]) if d.get("prompt") else None,
            script=str(d["script"]) if d.get("script") else None,
            base_url=str(d["base_url"]) if d.get("base_url") else None,
            timeout=_duration(d.get("timeout")),
            max_retries=int(d["max_retries"]) if "max_retries" in d else None,
            api_key_env=str(d["api_key_env"]) if d.get("api_key_env") else None,
            output=str(d["output"]) if d.get("output") else None,
            redact=tuple(str(x) for x in d["redact"]) if d.get("redact") is not None else None,
            prices=str(d["prices"]) if d.get("prices") else None,
        )

    @property
    def params(self) -> dict[str, Any]:
        """The sampling parameters the contract sets, as sent to (and recorded for) a call."""
        found = {"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens}
        return {k: v for k, v in found.items() if v is not None}


@dataclass(frozen=True)
class Budget:
    """``budget``: per-run limits, and per-contract spend per calendar window.

    ``None`` means no limit. Model limits are checked before each call (reserve) and
    settled after; ``max_actions`` before each action.
    """

    max_model_calls: int = DEFAULT_MAX_MODEL_CALLS
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_actions: int | None = None
    max_proposal_retries: int = DEFAULT_PROPOSAL_RETRIES
    max_spend_per_day_usd: float | None = None
    max_spend_per_month_usd: float | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Budget:
        d = data or {}

        def number(key: str) -> float | None:
            return float(d[key]) if key in d else None

        return cls(
            max_model_calls=int(d.get("max_model_calls", DEFAULT_MAX_MODEL_CALLS)),
            max_tokens=int(d["max_tokens"]) if "max_tokens" in d else None,
            max_cost_usd=number("max_cost_usd"),
            max_actions=int(d["max_actions"]) if "max_actions" in d else None,
            max_proposal_retries=int(d.get("max_proposal_retries", DEFAULT_PROPOSAL_RETRIES)),
            max_spend_per_day_usd=number("max_spend_per_day_usd"),
            max_spend_per_month_usd=number("max_spend_per_month_usd"),
        )

    @property
    def spend_limits(self) -> dict[str, float]:
        """Calendar window (``day``, ``month``) → USD the contract may spend in it."""
        limits = {"day": self.max_spend_per_day_usd, "month": self.max_spend_per_month_usd}
        return {k: v for k, v in limits.items() if v is not None}

    @property
    def limits_cost(self) -> bool:
        """Whether a call's price must be known to be allowed (a cost or spend limit)."""
        return self.max_cost_usd is not None or bool(self.spend_limits)


@dataclass(frozen=True)
class Escalation:
    """``escalation``: who reviews by default, how long they have, what a timeout becomes."""

    reviewers: tuple[str, ...] = ()
    sla: timedelta | None = None
    on_timeout: Effect = "deny"

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Escalation:
        d = data or {}
        return cls(
            reviewers=tuple(d.get("reviewers") or ()),
            sla=_duration(d.get("sla")),
            on_timeout=d.get("on_timeout", "deny"),
        )


@dataclass(frozen=True)
class PromoteWhen:
    """``autonomy.promote_when``: the evidence that earns the next level."""

    agreement: float | None = None
    min_reviews: int | None = None


@dataclass(frozen=True)
class Autonomy:
    """``autonomy``: how much the contract is trusted. Absent, a contract is ``supervised``."""

    level: AutonomyLevel = "supervised"
    sample_rate: float | None = None
    promote_when: PromoteWhen | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Autonomy:
        d = data or {}
        promote = d.get("promote_when")
        return cls(
            level=d.get("level", "supervised"),
            sample_rate=float(d["sample_rate"]) if "sample_rate" in d else None,
            promote_when=PromoteWhen(
                agreement=float(promote["agreement"]) if "agreement" in promote else None,
                min_reviews=int(promote["min_reviews"]) if "min_reviews" in promote else None,
            )
            if isinstance(promote, Mapping)
            else None,
        )

    @property
    def executes(self) -> bool:
        """Whether what policy allows runs without a person (not ``shadow`` or ``assist``)."""
        return self.level in ("supervised", "autonomous")


#: Labels whose data makes a run's content sealed when the contract names none.
DEFAULT_SENSITIVE = ("pii", "confidential")


@dataclass(frozen=True)
class Privacy:
    """``privacy``: whose data a run holds and which labels are sensitive (for sealing)."""

    subject: str | None = None
    sensitive: tuple[str, ...] = DEFAULT_SENSITIVE

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Privacy:
        d = data or {}
        return cls(
            subject=str(d["subject"]) if d.get("subject") else None,
            sensitive=tuple(d["sensitive"]) if "sensitive" in d else DEFAULT_SENSITIVE,
        )

    def subject_of(self, payload: Mapping[str, Any]) -> str | None:
        """The subject named by the task input, if the contract says where it is."""
        if self.subject is None:
            return None
        value: Any = payload
        for part in self.subject.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return None if value is None or isinstance(value, dict | list) else str(value)


@dataclass(frozen=True)
class Value:
    """``value``: what a finished run delivered, as a CEL expression, and its unit."""

    expr: Expression
    unit: str

    @classmethod
    def from_data(cls, data: Mapping[str, Any] | None) -> Value | None:
        if not data:
            return None
        return cls(compile_expression(str(data["expr"])), str(data["unit"]))
