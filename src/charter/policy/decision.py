"""Decisions, effects and the precedence that combines them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Effect = Literal["allow", "batch", "review", "escalate", "deny"]
DecisionPoint = Literal["admit", "action", "outcome"]

EFFECTS: tuple[Effect, ...] = ("allow", "batch", "review", "escalate", "deny")
DECISION_POINTS: tuple[DecisionPoint, ...] = ("admit", "action", "outcome")

#: Higher wins when several rules match: deny > escalate > review > batch > allow.
PRECEDENCE: dict[str, int] = {effect: rank for rank, effect in enumerate(EFFECTS)}


def strongest(effects: list[Effect]) -> Effect:
    """The effect that wins under :data:`PRECEDENCE`; callers guarantee a non-empty list."""
    return max(effects, key=PRECEDENCE.__getitem__)


@dataclass(frozen=True)
class RuleError:
    """A rule that could not be evaluated; it failed closed with the policy's ``on_error``."""

    rule: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class Decision:
    """The outcome of one policy evaluation; a plain value, equal for equal inputs.

    ``rules`` are the ids that produced ``effect``; ``matched`` every id that contributed an
    effect (a true condition, a rule that failed closed, or a built-in flow rule).
    ``elapsed_us`` is measurement, not meaning, and is excluded from equality.
    """

    effect: Effect
    at: DecisionPoint
    rules: tuple[str, ...]
    matched: tuple[str, ...]
    reasons: tuple[str, ...]
    errors: tuple[RuleError, ...]
    reviewers: tuple[str, ...]
    contract: str
    policy_hash: str
    now: str
    elapsed_us: float = field(default=0.0, compare=False)

    def to_dict(self, *, timing: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "effect": self.effect,
            "at": self.at,
            "rules": list(self.rules),
            "matched": list(self.matched),
            "reasons": list(self.reasons),
            "errors": [e.to_dict() for e in self.errors],
            "reviewers": list(self.reviewers),
            "contract": self.contract,
            "policy_hash": self.policy_hash,
            "now": self.now,
        }
        if timing:
            out["elapsed_us"] = round(self.elapsed_us, 1)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Decision:
        return cls(
            effect=raw["effect"],
            at=raw["at"],
            rules=tuple(raw["rules"]),
            matched=tuple(raw["matched"]),
            reasons=tuple(raw["reasons"]),
            errors=tuple(RuleError(e["rule"], e["message"]) for e in raw["errors"]),
            reviewers=tuple(raw.get("reviewers", ())),
            contract=raw["contract"],
            policy_hash=raw["policy_hash"],
            now=raw["now"],
            elapsed_us=float(raw.get("elapsed_us", 0.0)),
        )
