"""Decisions are values: equality without timing, JSON round trip."""

from __future__ import annotations

import json

import pytest

from charter import Decision, RuleError
from charter.policy.decision import EFFECTS, strongest
from tests.helpers import NOW, contract_with, rule


def sample(**over: object) -> Decision:
    fields: dict[str, object] = {
        "effect": "review",
        "at": "action",
        "rules": ("a",),
        "matched": ("a", "b"),
        "reasons": ("A",),
        "errors": (RuleError("b", "no such key: x"),),
        "reviewers": ("leads",),
        "contract": "shop@1",
        "policy_hash": "0" * 64,
        "now": "2026-03-02T10:15:00Z",
        "elapsed_us": 12.5,
    }
    fields.update(over)
    return Decision(**fields)  # type: ignore[arg-type]


def test_equality_ignores_elapsed_us() -> None:
    assert sample(elapsed_us=1.0) == sample(elapsed_us=999.0)
    assert sample() != sample(effect="deny")
    assert sample() != sample(now="2026-03-02T10:16:00Z")
    assert sample() != sample(policy_hash="1" * 64)


def test_to_dict_from_dict_round_trip() -> None:
    d = sample()
    raw = d.to_dict()
    assert raw == {
        "effect": "review",
        "at": "action",
        "rules": ["a"],
        "matched": ["a", "b"],
        "reasons": ["A"],
        "errors": [{"rule": "b", "message": "no such key: x"}],
        "reviewers": ["leads"],
        "contract": "shop@1",
        "policy_hash": "0" * 64,
        "now": "2026-03-02T10:15:00Z",
        "elapsed_us": 12.5,
    }
    back = Decision.from_dict(json.loads(json.dumps(raw)))
    assert back == d
    assert back.elapsed_us == 12.5
    assert back.errors == (RuleError("b", "no such key: x"),)


def test_to_dict_without_timing_round_trips_too() -> None:
    raw = sample().to_dict(timing=False)
    assert "elapsed_us" not in raw
    assert Decision.from_dict(raw) == sample()
    assert Decision.from_dict(raw).elapsed_us == 0.0


def test_a_real_decision_round_trips() -> None:
    c = contract_with(
        [
            rule("x", "context.nope", "allow", reviewers=["r"]),
            rule("y", "true", "review", reviewers=["s"]),
        ]
    )
    d = c.decide(action={"name": "note"}, now=NOW)
    assert Decision.from_dict(json.loads(json.dumps(d.to_dict()))) == d


def test_decisions_are_immutable_and_hashable() -> None:
    d = sample()
    with pytest.raises(AttributeError):
        d.effect = "allow"  # type: ignore[misc]
    assert hash(d) == hash(sample(elapsed_us=3.0))


def test_strongest() -> None:
    assert strongest(["allow", "batch"]) == "batch"
    assert strongest(["deny", "allow"]) == "deny"
    assert strongest(list(EFFECTS)) == "deny"
    assert strongest(["review", "escalate", "batch"]) == "escalate"
