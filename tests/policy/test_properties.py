"""Invariants of the policy engine, checked on generated contracts (hypothesis).

Contracts are generated as Python dicts, dumped to YAML text and loaded with
``Contract.from_document(parse_yaml(text, "gen.yaml"))`` — the same path as a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from charter import Contract, Decision, InMemoryHistory
from charter.contract.source import parse_yaml
from charter.policy.decision import EFFECTS, PRECEDENCE
from tests.helpers import to_yaml, with_rules

POINTS = ("admit", "action", "outcome")

#: Conditions that evaluate to true or false depending on the request.
TOTAL = (
    "true",
    "false",
    "action.args.amount > 100",
    "action.args.amount <= 50",
    'action.name == "refund"',
    'has(context.tier) && context.tier == "vip"',
    "proposal.confidence < 0.7",
    '"pii" in provenance(action.args.order_id).labels',
    "now.getHours() < 8",
    'count("refund", {"order_id": action.args.order_id}, duration("1h")) >= 1',
    "input.claimed > 300",
)
#: Conditions that fail at run time for some or all requests.
FAILING = (
    "action.args.missing > 1",  # missing field
    "action.args.amount",  # not a bool
    "action.args.order_id > 3",  # type error
    'context.tier == "vip"',  # missing when the request has no tier
    "outcome.refunded > 0",  # no such key unless an outcome is given
)
EXPRESSIONS = TOTAL + FAILING

rules_strategy = st.lists(
    st.tuples(st.sampled_from(EXPRESSIONS), st.sampled_from(EFFECTS), st.sampled_from(POINTS)),
    max_size=7,
)


@dataclass(frozen=True)
class Request:
    at: str
    amount: int
    order_id: str
    tier: str | None
    confidence: float
    hour: int
    tainted: bool
    executed: int
    claimed: int

    def decide(self, contract: Contract) -> Decision:
        now = datetime(2026, 3, 2, self.hour, 30, tzinfo=UTC)
        history = InMemoryHistory()
        for i in range(self.executed):
            history.record("refund", {"order_id": self.order_id}, now - timedelta(minutes=10 * i))
        observations = (
            [{"channel": "crm", "labels": ["pii"], "content": {"order": self.order_id}}]
            if self.tainted
            else []
        )
        return contract.decide(
            at=self.at,  # type: ignore[arg-type]
            action={"name": "refund", "args": {"order_id": self.order_id, "amount": self.amount}},
            input={"claimed": self.claimed},
            context={"tier": self.tier} if self.tier else {},
            proposal={"confidence": self.confidence},
            observations=observations,
            now=now,
            history=history,
        )


requests = st.builds(
    Request,
    at=st.sampled_from(POINTS),
    amount=st.integers(0, 500),
    order_id=st.sampled_from(["ord-123456", "o-1"]),
    tier=st.sampled_from([None, "vip", "basic"]),
    confidence=st.floats(0, 1, allow_nan=False),
    hour=st.integers(0, 23),
    tainted=st.booleans(),
    executed=st.integers(0, 2),
    claimed=st.integers(0, 500),
)
policy_effects = st.sampled_from((None, *EFFECTS))

FAST = settings(max_examples=60, deadline=None)


def as_rules(specs: list[tuple[str, str, str]], first: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": f"r{first + i}", "when": when, "effect": effect, "at": at}
        for i, (when, effect, at) in enumerate(specs)
    ]


def build(rules: list[dict[str, Any]], default: str | None, on_error: str | None) -> Contract:
    key = tuple(tuple(sorted(r.items())) for r in rules)
    return _build(key, default, on_error)


@lru_cache(maxsize=4096)
def _build(
    rules: tuple[tuple[tuple[str, str], ...], ...], default: str | None, on_error: str | None
) -> Contract:
    data = with_rules([dict(r) for r in rules], default=default, on_error=on_error)
    return Contract.from_document(parse_yaml(to_yaml(data), "gen.yaml"))


def meaning(d: Decision) -> dict[str, Any]:
    """A decision without what depends on the document's bytes (policy_hash) or timing."""
    out = d.to_dict(timing=False)
    del out["policy_hash"]
    return out


@FAST
@given(
    specs=rules_strategy,
    extra=st.tuples(st.sampled_from(EXPRESSIONS), st.sampled_from(POINTS)),
    default=policy_effects,
    on_error=policy_effects,
    request=requests,
)
def test_adding_an_allow_rule_never_weakens_a_decision(
    specs: list[tuple[str, str, str]],
    extra: tuple[str, str],
    default: str | None,
    on_error: str | None,
    request: Request,
) -> None:
    rules = as_rules(specs)
    before = request.decide(build(rules, default, on_error))
    added = {"id": "added-allow", "when": extra[0], "effect": "allow", "at": extra[1]}
    after = request.decide(build([*rules, added], default, on_error))

    assert set(before.matched) <= set(after.matched)
    assert set(before.errors) <= set(after.errors)
    if before.matched or before.effect == "allow":
        # whatever rules decided (or an open admit/outcome) can only get stricter
        assert PRECEDENCE[after.effect] >= PRECEDENCE[before.effect], (before, after)
    if before.effect == "deny" and before.rules:
        assert after.effect == "deny"
        assert set(before.rules) <= set(after.rules)
    if not before.matched:
        # the default (or an open admit/outcome) is replaced only by what the new rule adds:
        # an allow when it matches, on_error when it fails, the default when it does not match
        assert set(after.matched) <= {"added-allow"}
        if after.errors:
            assert after.effect == (on_error or "deny")
        elif after.matched:
            assert after.effect == "allow"
        else:
            assert after.effect in {before.effect, default or "deny"}


@FAST
@given(
    specs=rules_strategy,
    default=policy_effects,
    on_error=policy_effects,
    request=requests,
    data=st.data(),
)
def test_rule_order_never_matters(
    specs: list[tuple[str, str, str]],
    default: str | None,
    on_error: str | None,
    request: Request,
    data: st.DataObject,
) -> None:
    rules = as_rules(specs)
    shuffled = data.draw(st.permutations(rules))
    a = request.decide(build(rules, default, on_error))
    b = request.decide(build(list(shuffled), default, on_error))
    assert meaning(a) == meaning(b)


@FAST
@given(specs=rules_strategy, default=policy_effects, on_error=policy_effects, request=requests)
def test_evaluation_is_deterministic(
    specs: list[tuple[str, str, str]],
    default: str | None,
    on_error: str | None,
    request: Request,
) -> None:
    rules = as_rules(specs)
    contract = build(rules, default, on_error)
    first = request.decide(contract)
    assert request.decide(contract) == first
    # a fresh load of the same document decides identically, policy hash included
    again = request.decide(build(rules, default, on_error))
    assert again == first
    assert again.to_dict(timing=False) == first.to_dict(timing=False)


@FAST
@given(
    specs=rules_strategy,
    failing=st.sampled_from(
        ("action.args.missing > 1", "action.args.amount", "action.args.order_id > 3")
    ),
    effect=st.sampled_from(EFFECTS),
    default=policy_effects,
    request=requests,
)
def test_every_rule_error_fails_closed(
    specs: list[tuple[str, str, str]],
    failing: str,
    effect: str,
    default: str | None,
    request: Request,
) -> None:
    """A rule that errors, with on_error deny, makes the decision deny and is reported."""
    broken = {"id": "broken", "when": failing, "effect": effect, "at": request.at}
    d = request.decide(build([*as_rules(specs), broken], default, "deny"))
    assert d.effect == "deny"
    assert "broken" in d.rules
    assert "broken" in [e.rule for e in d.errors]


@FAST
@given(
    specs=rules_strategy,
    on_error=st.sampled_from(EFFECTS),
    default=policy_effects,
    request=requests,
)
def test_any_error_contributes_at_least_on_error(
    specs: list[tuple[str, str, str]],
    on_error: str,
    default: str | None,
    request: Request,
) -> None:
    d = request.decide(build(as_rules(specs), default, on_error))
    if d.errors:
        assert PRECEDENCE[d.effect] >= PRECEDENCE[on_error]
        assert {e.rule for e in d.errors} <= set(d.matched)
    # every deciding rule matched, and the deciding rules all carry the winning effect
    assert set(d.rules) <= set(d.matched)
    if d.matched:
        assert d.rules
