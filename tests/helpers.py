"""Shared helpers: small contracts built from Python dicts, a fixed decision instant."""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from charter import Contract, PolicyPack
from charter.contract.source import parse_yaml

ROOT = Path(__file__).resolve().parent.parent
REFUNDS = ROOT / "examples" / "refunds" / "refunds.yaml"
BASELINE = ROOT / "examples" / "packs" / "baseline.yaml"

#: A Monday, 10:15 UTC: inside business hours, so time-dependent rules stay quiet.
NOW = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)

BASE: dict[str, Any] = {
    "contract": "shop",
    "version": 1,
    "domain": "sales",
    "description": "A small contract for tests.",
    "input": {"type": "object"},
    "channels": {
        "crm.customer": {"labels": ["pii"]},
        "crm.notes": {"labels": ["confidential"]},
        "ticket.message": {"labels": ["untrusted"]},
    },
    "actions": {
        "refund": {
            "executor": "shop.executors:refund",
            "effect": "write",
            "args": {
                "type": "object",
                "required": ["order_id", "amount"],
                "properties": {"order_id": {"type": "string"}, "amount": {"type": "integer"}},
            },
        },
        "email": {
            "executor": "shop.executors:email",
            "effect": "irreversible",
            "egress": "external",
            "allows_labels": ["pii"],
            "args": {"type": "object"},
        },
        "note": {
            "executor": "shop.executors:note",
            "effect": "read",
            "args": {"type": "object"},
        },
    },
    "policy": {"default": "deny", "rules": []},
}


def to_yaml(data: Any) -> str:
    """Dump plain data as block-style YAML text."""
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def document(**overrides: Any) -> dict[str, Any]:
    """A deep copy of :data:`BASE` with top-level keys replaced."""
    data = copy.deepcopy(BASE)
    data.update(copy.deepcopy(overrides))
    return data


def with_rules(
    rules: Sequence[Mapping[str, Any]],
    *,
    default: str | None = None,
    on_error: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    data = document(**overrides)
    policy: dict[str, Any] = {"rules": [dict(r) for r in rules]}
    if default is not None:
        policy["default"] = default
    if on_error is not None:
        policy["on_error"] = on_error
    data["policy"] = policy
    return data


def build(
    data: Mapping[str, Any], packs: Sequence[PolicyPack] = (), file: str = "gen.yaml"
) -> Contract:
    """Contract from a dict, through YAML text, exactly as a file would be loaded."""
    return Contract.from_document(parse_yaml(to_yaml(dict(data)), file), packs)


def contract_with(
    rules: Sequence[Mapping[str, Any]],
    *,
    default: str | None = None,
    on_error: str | None = None,
    packs: Sequence[PolicyPack] = (),
    **overrides: Any,
) -> Contract:
    return build(with_rules(rules, default=default, on_error=on_error, **overrides), packs)


def pack(text: str, file: str = "pack.yaml") -> PolicyPack:
    return PolicyPack.from_document(parse_yaml(text, file))


def rule(rid: str, when: str, effect: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "when": when, "effect": effect, **extra}


def refund(order_id: str = "o-1", amount: int = 100) -> dict[str, Any]:
    return {"name": "refund", "args": {"order_id": order_id, "amount": amount}}
