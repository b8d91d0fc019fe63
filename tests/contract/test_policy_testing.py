"""Policy test files: defaults merged into cases, history, packs, coverage, bad files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from charter import ContractError
from charter.contract.testing import discover, run_file
from charter.primitives import parse_instant
from tests.helpers import to_yaml, with_rules

RULES = [
    {"id": "vip", "when": 'has(context.tier) && context.tier == "vip"', "effect": "allow"},
    {"id": "rate", "when": 'count("refund", {}, duration("1h")) >= 2', "effect": "deny"},
    {"id": "gold", "when": 'context.tier == "gold"', "effect": "review"},
]
REFUND = {"name": "refund", "args": {"order_id": "o", "amount": 1}}


def setup(tmp_path: Path, doc: dict[str, Any], name: str = "shop.tests.yaml") -> Path:
    (tmp_path / "shop.yaml").write_text(to_yaml(with_rules(RULES)), encoding="utf-8")
    path = tmp_path / name
    path.write_text(to_yaml(doc), encoding="utf-8")
    return path


def test_parse_instant() -> None:
    assert parse_instant("2026-01-31T12:00:00Z") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    got = parse_instant(" 2026-01-31T14:00:00+02:00 ")
    assert got == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert got.tzinfo == UTC
    with pytest.raises(ValueError, match="has no timezone"):
        parse_instant("2026-01-31T12:00:00")
    with pytest.raises(ValueError):
        parse_instant("tomorrow")
    assert parse_instant("2026-01-31T12:00:00-05:00").utcoffset() == timedelta(0)
    assert UTC == UTC


def test_defaults_are_deep_merged(tmp_path: Path) -> None:
    doc = {
        "defaults": {"action": REFUND, "context": {"tier": "vip", "other": {"x": 1}}},
        "cases": [
            {"name": "default vip", "expect": {"effect": "allow", "rules": ["vip"]}},
            {"name": "gold", "context": {"tier": "gold"}, "expect": {"effect": "review"}},
            {
                "name": "a null tier replaces the default: nothing matches",
                "context": {"tier": None},
                "expect": {"effect": "deny", "matched": [], "errors": 0},
            },
            {
                "name": "other keys of the default context are kept",
                "context": {"other": {"y": 2}},
                "expect": {"effect": "allow", "rules": ["vip"]},
            },
        ],
    }
    result = run_file(setup(tmp_path, doc))
    assert [c.passed for c in result.cases] == [True] * 4, [c.failures for c in result.cases]
    assert result.contract == "shop@1"


def test_history_by_ago_and_at(tmp_path: Path) -> None:
    doc = {
        "defaults": {"action": REFUND, "context": {"tier": "x"}, "now": "2026-03-02T10:00:00Z"},
        "cases": [
            {
                "name": "two recent refunds",
                "history": [
                    {"action": "refund", "ago": "10m"},
                    {"action": "refund", "at": "2026-03-02T09:30:00Z"},
                ],
                "expect": {"effect": "deny", "rules": ["rate"]},
            },
            {
                "name": "one is too old",
                "history": [{"action": "refund", "ago": "10m"}, {"action": "refund", "ago": "2h"}],
                "expect": {"effect": "deny", "matched": []},
            },
        ],
    }
    result = run_file(setup(tmp_path, doc))
    assert [c.failures for c in result.cases] == [[], []]


def test_coverage_counts_only_rules_that_matched_without_error(tmp_path: Path) -> None:
    doc = {
        "cases": [
            {
                "name": "gold errors without a tier",
                "action": REFUND,
                "expect": {"effect": "deny", "errors": 1},
            },
        ]
    }
    result = run_file(setup(tmp_path, doc))
    assert result.rules == ["vip", "rate", "gold"]
    assert result.covered == []
    assert result.uncovered == ["vip", "rate", "gold"]
    assert result.to_dict()["coverage"] == {
        "rules": 3,
        "covered": 0,
        "uncovered": ["vip", "rate", "gold"],
    }


def test_explicit_contract_and_packs(tmp_path: Path) -> None:
    (tmp_path / "guard.yaml").write_text(
        "pack: guard\napplies_to: {domains: [sales]}\nrules: [{id: stop, when: 'true', effect: deny}]\n"
    )
    doc = {
        "contract": "shop.yaml",
        "packs": ["guard.yaml"],
        "cases": [
            {
                "name": "stopped",
                "action": REFUND,
                "context": {"tier": "vip"},
                "expect": {"effect": "deny", "rules": ["guard/stop"]},
            }
        ],
    }
    result = run_file(setup(tmp_path, doc, name="other-name.tests.yaml"))
    assert result.cases[0].passed, result.cases[0].failures
    assert "guard/stop" in result.rules


def test_invalid_test_files_report_every_issue(tmp_path: Path) -> None:
    doc = {
        "cases": [
            {
                "name": "bad now",
                "now": "2026-01-01T00:00:00",
                "action": REFUND,
                "expect": {"effect": "allow"},
            },
            {"name": "bad effect", "action": REFUND, "expect": {"effect": "permit"}},
            {"name": "bad at", "at": "later", "action": REFUND, "expect": {"effect": "allow"}},
        ]
    }
    with pytest.raises(ContractError) as info:
        run_file(setup(tmp_path, doc))
    paths = sorted(i.path for i in info.value.issues)
    assert paths == ["cases[0].now", "cases[1].expect.effect", "cases[2].at"]
    assert all(i.line > 1 for i in info.value.issues)


def test_a_test_file_for_a_missing_contract(tmp_path: Path) -> None:
    path = tmp_path / "ghost.tests.yaml"
    path.write_text(to_yaml({"cases": [{"name": "x", "expect": {"effect": "allow"}}]}))
    with pytest.raises(ContractError, match="file not found"):
        run_file(path)


def test_discover(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for name in ("a/x.tests.yaml", "b.tests.yml", "c.yaml", "a/d.tests.yaml"):
        (tmp_path / name).write_text("cases: []")
    found = discover([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/d.tests.yaml",
        "a/x.tests.yaml",
        "b.tests.yml",
    ]
    explicit = tmp_path / "c.yaml"
    assert discover([explicit]) == [explicit]
