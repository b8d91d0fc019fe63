"""The policy engine: a pure function from a request to a :class:`Decision`.

Semantics (documented in ``docs/policy.md``):

* every rule of the decision point is evaluated — order never matters;
* matched effects combine by precedence deny > escalate > review > batch > allow;
* a rule whose expression fails fails *closed*: it contributes ``on_error`` (default deny)
  and the error is part of the decision;
* no contribution → ``default`` (itself deny unless set); at ``admit`` and ``outcome`` a
  policy with no rules for that point at all admits / accepts;
* an action with ``egress: external`` whose arguments carry provenance labels outside its
  ``allows_labels`` is denied by the built-in rule ``flow:<action>``.

Nothing here reads the clock or performs I/O except through the history provider, so
decisions replay exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from charter.durations import parse_duration
from charter.errors import PolicyError
from charter.policy.cel import Environment, Expression
from charter.policy.decision import (
    DECISION_POINTS,
    Decision,
    DecisionPoint,
    Effect,
    RuleError,
    strongest,
)
from charter.policy.history import HistoryProvider, NoHistory
from charter.policy.provenance import Observation, ProvenanceIndex


@dataclass(frozen=True)
class Rule:
    """One policy rule, compiled. ``source`` is ``contract`` or the name of a policy pack."""

    id: str
    at: DecisionPoint
    when: Expression
    effect: Effect
    reason: str
    reviewers: tuple[str, ...] = ()
    source: str = "contract"


@dataclass(frozen=True)
class ActionTraits:
    """What policy needs to know of a declared action beyond its proposed arguments."""

    effect: str
    egress: str
    allows_labels: tuple[str, ...]


_NO_HISTORY = NoHistory()
_EMPTY_RUN: Mapping[str, Any] = {
    "step": 0,
    "model_calls": 0,
    "tokens": 0,
    "cost_usd": 0.0,
    "actions": 0,
    "elapsed_s": 0.0,
}


def _as_window(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise TypeError(f"count() window must be a duration, got {type(value).__name__}")


def _leaf_paths(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k in sorted(value):
            yield from _leaf_paths(value[k], f"{prefix}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _leaf_paths(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


class PolicyEngine:
    """Rules of one contract and its packs, grouped by decision point, ready to evaluate."""

    def __init__(
        self,
        *,
        contract: str,
        policy_hash: str,
        rules: Sequence[Rule],
        actions: Mapping[str, ActionTraits],
        default: Effect = "deny",
        on_error: Effect = "deny",
    ) -> None:
        self.contract = contract
        self.policy_hash = policy_hash
        self.default: Effect = default
        self.on_error: Effect = on_error
        self.actions = dict(actions)
        self.rules = tuple(rules)
        self._by_point: dict[str, tuple[Rule, ...]] = {
            point: tuple(r for r in rules if r.at == point) for point in DECISION_POINTS
        }
        self._needed: dict[str, frozenset[str]] = {
            point: frozenset().union(*(r.when.variables for r in group))
            for point, group in self._by_point.items()
        }

    def rules_at(self, at: str) -> tuple[Rule, ...]:
        return self._by_point[at]

    def decide(
        self,
        *,
        at: DecisionPoint = "action",
        action: Mapping[str, Any] | None = None,
        input: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        observations: Sequence[Observation] = (),
        proposal: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        outcome: Any = None,
        now: datetime,
        history: HistoryProvider | None = None,
    ) -> Decision:
        """Evaluate every rule of ``at`` against one environment and combine the effects."""
        started = time.perf_counter()
        if at not in self._by_point:
            raise PolicyError(
                f"unknown decision point {at!r}; use one of {', '.join(DECISION_POINTS)}"
            )
        if now.tzinfo is None:
            raise PolicyError("'now' must be timezone-aware, e.g. 2026-01-31T12:00:00Z")
        now = now.astimezone(UTC)
        action_value = self._action_value(action) if at == "action" else dict(action or {})
        prov = ProvenanceIndex(observations)
        hist = history if history is not None else _NO_HISTORY

        def provenance(value: Any) -> dict[str, list[str]]:
            return prov.of(value).to_dict()

        def count(name: str, match: Mapping[str, Any], window: Any) -> int:
            return hist.count(str(name), dict(match), now - _as_window(window), now)

        functions: dict[str, Callable[..., Any]] = {"provenance": provenance, "count": count}
        variables = {
            "action": action_value,
            "input": dict(input or {}),
            "context": dict(context or {}),
            "proposal": dict(proposal or {}),
            "run": {**_EMPTY_RUN, **(run or {})},
            "now": now,
            "outcome": outcome if outcome is not None else {},
        }
        rules = self._by_point[at]
        contributions: list[tuple[str, Effect, str, tuple[str, ...]]] = []
        errors: list[RuleError] = []
        if rules:
            env = Environment(variables, functions, self._needed[at])
            for rule in rules:
                try:
                    result = rule.when.evaluate(env)
                    if not isinstance(result, bool):
                        raise TypeError(
                            f"condition must be true or false, got {type(result).__name__}"
                        )
                except Exception as exc:
                    message = str(exc) or type(exc).__name__
                    errors.append(RuleError(rule.id, message))
                    contributions.append(
                        (rule.id, self.on_error, f"rule {rule.id} failed closed: {message}", ())
                    )
                    continue
                if result:
                    contributions.append(
                        (rule.id, rule.effect, rule.reason or rule.id, rule.reviewers)
                    )
        if at == "action":
            contributions.extend(self._flow(action_value, prov))

        if contributions:
            effect = strongest([c[1] for c in contributions])
            deciding = sorted((c for c in contributions if c[1] == effect), key=lambda c: c[0])
            rule_ids = tuple(c[0] for c in deciding)
            reasons = tuple(c[2] for c in deciding)
            reviewers = tuple(sorted({r for c in deciding for r in c[3]}))
        else:
            if at != "action" and not rules:
                effect = "allow"
                reasons = (f"no {at} rules; {at} allowed",)
            else:
                effect = self.default
                reasons = (f"no rule matched; policy default is {self.default}",)
            rule_ids = ()
            reviewers = ()
        return Decision(
            effect=effect,
            at=at,
            rules=rule_ids,
            matched=tuple(sorted(c[0] for c in contributions)),
            reasons=reasons,
            errors=tuple(sorted(errors, key=lambda e: e.rule)),
            reviewers=reviewers,
            contract=self.contract,
            policy_hash=self.policy_hash,
            now=now.isoformat().replace("+00:00", "Z"),
            elapsed_us=(time.perf_counter() - started) * 1e6,
        )

    def _action_value(self, action: Mapping[str, Any] | None) -> dict[str, Any]:
        if not action or "name" not in action:
            raise PolicyError('an action decision needs an action: {"name": ..., "args": {...}}')
        name = str(action["name"])
        traits = self.actions.get(name)
        if traits is None:
            known = ", ".join(sorted(self.actions)) or "none"
            raise PolicyError(
                f"action {name!r} is not declared by contract {self.contract}; declared: {known}"
            )
        args = action.get("args") or {}
        if not isinstance(args, Mapping):
            raise PolicyError(f"action.args must be an object, got {type(args).__name__}")
        return {"name": name, "args": dict(args), "effect": traits.effect, "egress": traits.egress}

    def _flow(
        self, action: Mapping[str, Any], prov: ProvenanceIndex
    ) -> list[tuple[str, Effect, str, tuple[str, ...]]]:
        traits = self.actions[action["name"]]
        if traits.egress != "external" or not prov:
            return []
        allowed = set(traits.allows_labels)
        found: list[tuple[str, str]] = []
        for path, value in _leaf_paths(action["args"], "args"):
            for label in prov.of(value).labels:
                if label not in allowed:
                    found.append((label, path))
        if not found:
            return []
        detail = "; ".join(f"{label!r} data flows into {path}" for label, path in found)
        allowed_text = ", ".join(sorted(allowed)) or "none"
        reason = (
            f"{action['name']} sends data outside the organisation: {detail} "
            f"(allows_labels: {allowed_text})"
        )
        return [(f"flow:{action['name']}", "deny", reason, ())]
