"""Any damage to a valid contract gives a Contract or a ContractError, nothing else."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter import Contract, ContractError
from charter.contract.source import parse_yaml
from tests.helpers import to_yaml, with_rules

VALID = with_rules(
    [
        {"id": "big", "when": "action.args.amount > 100", "effect": "review", "reviewers": ["x"]},
        {
            "id": "adm",
            "at": "admit",
            "when": 'count("refund", {}, duration("1h")) > 2',
            "effect": "deny",
        },
    ],
    default="deny",
    on_error="deny",
    escalation={"reviewers": ["leads"], "sla": "4h", "on_timeout": "deny"},
    budget={"max_actions": 3},
    success=["outcome.ok"],
    value={"expr": "outcome.n * 2", "unit": "USD"},
    autonomy={"level": "assist"},
    model={"provider": "scripted"},
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


PATHS = _paths(VALID)

junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.sampled_from(["", " ", "deny", "1h", "x >", "flow:x", "a.b:c", "*", "true", "{", "@"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(["type", "id", "when", "x", "properties", "$ref"]), children, max_size=3
        ),
    ),
    max_leaves=6,
)


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.sampled_from(PATHS), junk, st.booleans()), min_size=1, max_size=3)
)
def test_damaged_contracts_fail_with_contract_error_only(
    edits: list[tuple[tuple[Any, ...], Any, bool]],
) -> None:
    doc = copy.deepcopy(VALID)
    for path, value, delete in edits:
        try:
            _set(doc, path, value, delete)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced the parent
    try:
        c = Contract.from_document(parse_yaml(to_yaml(doc), "fuzz.yaml"))
    except ContractError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.file == "fuzz.yaml"
            assert issue.line >= 1 and issue.column >= 1
            assert issue.message
    else:
        assert c.ref.startswith(f"{c.name}@")
