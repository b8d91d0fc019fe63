"""Policy tests: cases beside a contract, with expected effects, and rule coverage.

A policy is data with tests beside it (as in OPA and Cedar). ``refunds.tests.yaml`` next
to ``refunds.yaml`` lists cases — an action, input, context, observations, proposal and
history — and the effect and rule ids each must produce. Running them reports every case
and which rules no case exercised, so a rule nobody tested cannot hide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from charter.contract.model import Contract
from charter.contract.registry import load_packs
from charter.contract.source import Document, read_yaml
from charter.errors import CharterError, ContractError, Issue
from charter.policy.decision import DECISION_POINTS, EFFECTS, Decision
from charter.policy.history import InMemoryHistory
from charter.primitives import DURATION_PATTERN, parse_duration, parse_instant

_CASE_FIELDS = {
    "action": {"type": "object", "required": ["name"]},
    "input": {"type": "object"},
    "context": {"type": "object"},
    "observations": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["channel", "content"],
            "additionalProperties": False,
            "properties": {
                "channel": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string"}},
                "content": {},
            },
        },
    },
    "proposal": {"type": "object"},
    "run": {"type": "object"},
    "outcome": {},
    "now": {"type": "string"},
    "at": {"enum": list(DECISION_POINTS)},
    "history": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["action"],
            "additionalProperties": False,
            "properties": {
                "action": {"type": "string"},
                "args": {"type": "object"},
                "at": {"type": "string"},
                "ago": {"type": "string", "pattern": DURATION_PATTERN},
            },
        },
    },
}

TESTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["cases"],
    "additionalProperties": False,
    "properties": {
        "contract": {"type": "string"},
        "packs": {"type": "array", "items": {"type": "string"}},
        "defaults": {"type": "object", "additionalProperties": False, "properties": _CASE_FIELDS},
        "cases": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "expect"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    **_CASE_FIELDS,
                    "expect": {
                        "type": "object",
                        "required": ["effect"],
                        "additionalProperties": False,
                        "properties": {
                            "effect": {"enum": list(EFFECTS)},
                            "rules": {"type": "array", "items": {"type": "string"}},
                            "matched": {"type": "array", "items": {"type": "string"}},
                            "errors": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
        },
    },
}


@cache
def _tests_validator() -> Draft202012Validator:
    return Draft202012Validator(TESTS_SCHEMA)


@dataclass
class CaseResult:
    name: str
    passed: bool
    decision: Decision | None
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "failures": self.failures,
            "decision": self.decision.to_dict(timing=False) if self.decision else None,
        }


@dataclass
class FileResult:
    file: str
    contract: str
    cases: list[CaseResult]
    rules: list[str]
    covered: list[str]

    @property
    def passed(self) -> int:
        return sum(1 for c in self.cases if c.passed)

    @property
    def failed(self) -> int:
        return len(self.cases) - self.passed

    @property
    def uncovered(self) -> list[str]:
        return [r for r in self.rules if r not in set(self.covered)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "contract": self.contract,
            "passed": self.passed,
            "failed": self.failed,
            "cases": [c.to_dict() for c in self.cases],
            "coverage": {
                "rules": len(self.rules),
                "covered": len(self.covered),
                "uncovered": self.uncovered,
            },
        }


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return over


def _default_contract_path(tests_path: Path) -> Path:
    name = tests_path.name
    for suffix in (".tests.yaml", ".tests.yml"):
        if name.endswith(suffix):
            return tests_path.with_name(name[: -len(suffix)] + ".yaml")
    return tests_path.with_suffix(".yaml")


def _check(doc: Document) -> list[Issue]:
    if not isinstance(doc.data, dict):
        return [
            doc.issue([], "a policy test file must be a mapping with `cases`", "add `cases: [...]`")
        ]
    issues = []
    for err in _tests_validator().iter_errors(doc.data):
        issues.append(
            doc.issue(list(err.path), err.message, "see docs/policy-tests.md for the format")
        )
    for i, case in enumerate(doc.data.get("cases") or []):
        if not isinstance(case, dict):
            continue
        for key in ("now",):
            if isinstance(case.get(key), str):
                try:
                    parse_instant(case[key])
                except ValueError as exc:
                    issues.append(
                        doc.issue(["cases", i, key], str(exc), "write e.g. 2026-01-31T12:00:00Z")
                    )
    return issues


def run_file(path: str | Path) -> FileResult:
    """Run one policy test file; invalid files raise :class:`ContractError` with every problem."""
    p = Path(path)
    doc = read_yaml(p)
    issues = _check(doc)
    if issues:
        raise ContractError(issues)
    data = doc.data
    contract_path = (
        (p.parent / data["contract"]) if data.get("contract") else _default_contract_path(p)
    )
    packs = load_packs([p.parent / x for x in data.get("packs") or []])
    contract = Contract.load(contract_path, packs)
    defaults = data.get("defaults") or {}
    results = [
        _run_case(contract, _merge(defaults, case), doc, i) for i, case in enumerate(data["cases"])
    ]
    covered: set[str] = set()
    for r in results:
        if r.decision is not None:
            errored = {e.rule for e in r.decision.errors}
            covered.update(m for m in r.decision.matched if m not in errored)
    rule_ids = [rule.id for rule in contract.engine.rules]
    return FileResult(
        file=str(p),
        contract=contract.ref,
        cases=results,
        rules=rule_ids,
        covered=[r for r in rule_ids if r in covered],
    )


def _run_case(contract: Contract, case: Mapping[str, Any], doc: Document, index: int) -> CaseResult:
    name = case["name"]
    now = parse_instant(case["now"]) if case.get("now") else datetime(2026, 1, 1, tzinfo=UTC)
    history = InMemoryHistory(normalize=contract.normalizers)
    for h in case.get("history") or []:
        at = parse_instant(h["at"]) if h.get("at") else now - parse_duration(h.get("ago", "0s"))
        history.record(h["action"], h.get("args") or {}, at)
    try:
        decision = contract.decide(
            at=case.get("at", "action"),
            action=case.get("action"),
            input=case.get("input"),
            context=case.get("context"),
            observations=case.get("observations") or (),
            proposal=case.get("proposal"),
            run=case.get("run"),
            outcome=case.get("outcome"),
            now=now,
            history=history,
        )
    except CharterError as exc:
        line, _col = doc.locate(["cases", index])
        return CaseResult(name, False, None, [f"line {line}: cannot decide: {exc}"])
    expect = case["expect"]
    failures: list[str] = []
    if decision.effect != expect["effect"]:
        failures.append(
            f"effect: expected {expect['effect']}, got {decision.effect} ({'; '.join(decision.reasons)})"
        )
    if "rules" in expect and sorted(expect["rules"]) != sorted(decision.rules):
        failures.append(f"rules: expected {sorted(expect['rules'])}, got {list(decision.rules)}")
    if "matched" in expect and sorted(expect["matched"]) != sorted(decision.matched):
        failures.append(
            f"matched: expected {sorted(expect['matched'])}, got {list(decision.matched)}"
        )
    if "errors" in expect and expect["errors"] != len(decision.errors):
        failures.append(
            f"errors: expected {expect['errors']}, got {[e.message for e in decision.errors]}"
        )
    return CaseResult(name, not failures, decision, failures)


def discover(paths: Sequence[str | Path]) -> list[Path]:
    """Test files named on the command line, or found under directories."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted({*p.rglob("*.tests.yaml"), *p.rglob("*.tests.yml")}))
        else:
            out.append(p)
    return out
