from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import to_yaml, with_rules

RULES = [
    {
        "id": "vip",
        "at": "admit",
        "when": 'has(context.tier) && context.tier == "vip"',
        "effect": "allow",
    },
    {
        "id": "big",
        "when": 'action.name == "refund" && action.args.amount > 1000',
        "effect": "review",
        "reviewers": ["leads"],
    },
    {"id": "night", "when": "now.getHours() < 8", "effect": "escalate"},
    {
        "id": "rate",
        "when": 'action.name == "refund" && count("refund", {"order_id": action.args.order_id}, duration("1h")) >= 1',
        "effect": "deny",
    },
    {"id": "routine", "when": 'action.name in ["refund", "note", "email"]', "effect": "allow"},
    {"id": "never", "when": "false", "effect": "deny"},
]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def contract_file(tmp_path: Path) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(to_yaml(with_rules(RULES)), encoding="utf-8")
    return path
