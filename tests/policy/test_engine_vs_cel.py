"""The engine's results equal a direct CEL evaluation of each rule on the whole request.

The engine converts only the parts of the variables its rules can read and skips rules
whose leading ``action.name == "..."`` test excludes the action. These tests hold it to
plain CEL semantics: for every rule, true → matched, false → not, anything else → failed
closed, exactly as evaluating the rule's source against the unpruned variables.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import cel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.policy.cel import LIST_FUNCTIONS, STRING_FUNCTIONS, compile_expression
from charter.policy.engine import ActionTraits, PolicyEngine, Rule
from charter.policy.provenance import Observation, ProvenanceIndex

NOW = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
ACTIONS = {
    "refund": ActionTraits("write", "internal", ()),
    "note": ActionTraits("read", "internal", ()),
    "email": ActionTraits("irreversible", "external", ("pii",)),
}
CONTEXT: dict[str, Any] = {
    "tier": "gold",
    "items": [{"a": 1, "b": 2}, {"a": 3}],
    "tier-1": "vip",
    "n": {"m": 1},
    "s": "Hello",
    "e": {},
    "l": [],
}
INPUT = {"a": {"b": {"c": 1}}, "msg": "ZX99881 please"}
OBSERVATIONS = [Observation("crm", ("pii",), {"x": "ZX99881", "m": 1})]
REQUESTS = [
    {"name": "refund", "args": {"order_id": "o", "amount": 1, "k": 1, "z": "ZX99881"}},
    {"name": "note", "args": {"k": 1}},
    {"name": "email", "args": {"to": "a@b.io", "k": 2}},
]

TRICKY = [
    # guards: a leading action.name test, and everything that must not be taken for one
    'action.name == "refund" && false || true',
    'action.name == "refund" && context.x > 1 || context.tier == "vip"',
    'action.name == "refund" && false ? false : true',
    'action.name == "refund" ? action.args.k == 1 : true',
    'action.name == "refund" && action.args.k == 1 || action.name == "note"',
    'action.name == "refund" && (false || action.name == "email")',
    '(action.name == "refund" && false) || action.name == "email"',
    '!(action.name == "refund" && false)',
    'action.name == "refund" && action.args.k',
    'action.name == "refund" && action.args.missing == 1',
    'action.name == "note" && action.args.missing',
    'action.name != "refund" && action.args.missing',
    'action.name == "refund"&&action.args.k==1',
    'action.name == r"refund" && true',
    'action.name == "ref\\x75nd" && true',
    'action.name == """refund""" && true',
    "action.name == 'refund' && action.args.k == 1",
    'action.name == "refund" &&\n  action.args.k == 1',
    'action.args.k == 1 && action.name == "refund"',
    'action.name in ["refund", "note"] && action.args.k == 1',
    # whole values versus field paths
    'action.args == {"k": 1}',
    "size(action.args) == 1",
    'action.args.exists(k, k == "z")',
    'action["args"]["k"] == 1',
    "dyn(action).args.k == 1",
    'context["tier-1"] == "vip"',
    'context["n"].m == 1',
    'context == {"tier": "gold"}',
    "size(context) == 7",
    "size(context.n) == 1",
    "type(context.n) == map",
    'string(context.n.m) == "1"',
    '"m" in context.n',
    "context.e == {} && context.l == []",
    "has(context.n.m) && !has(context.n.z)",
    "has(context.nope)",
    "context.nope.x == 1",
    "context.n.nope == 1",
    "context.s.x == 1",
    "context.items.x == 1",
    "input.a.b.c == 1",
    'input["a"]["b"].c == 1',
    # comprehensions and their element shapes
    'context.items.exists(o, o == {"a": 1})',
    "context.items.exists(o, size(o) == 2)",
    "context.items.exists(o, o.a == 3 && size(o) == 1)",
    "context.items.filter(o, o.a == 1).size() == 1",
    "context.items.filter(x, x.a == 1)[0].b == 2",
    "context.items.map(o, o).size() == 2 && context.items[0].b == 2",
    "context.items.map(o, o.b).size() == 2",
    "context.items.map(o, o.a).sum() == 4",
    'context.items.map(x, {"v": x}).exists(y, y.v.b == 2)',
    "context.items.map(x, [x]).exists(y, y[0].b == 2)",
    "context.items.exists(context, context.a == 3)",
    "context.items.exists(a, a.a == 1)",
    "context.items.exists(o, context.items.exists(p, p.a == o.a + 2))",
    "context.items.exists_one(o, o.a == 1)",
    "context.items.all(x, has(x.a)) && context.items.exists(x, has(x.b))",
    'context.items.exists(o, "b" in o)',
    'context.n.exists(k, k == "m")',
    "context.n.all(k, context.n[k] == 1)",
    "[context.n].exists(q, q.m == 1)",
    "context.items.exists(x, x.a == 1 ? x.b == 2 : false)",
    # functions that see whole values
    '"pii" in provenance(action.args).labels',
    '"pii" in provenance(input).labels',
    '"pii" in provenance(input.msg).labels',
    'context.items.exists(o, "pii" in provenance(o).labels)',
    'context.s.lowerAscii() == "hello" && context.s.upperAscii() == "HELLO"',
    'count("refund", {"k": action.args.k}, "1h") == 0',
    # comments, literals that look like paths, other variables
    "context.n.m + 1 == 2 // context.tier",
    'context.n.m == 1 && "context.tier" != ""',
    "now.getHours() == 10 && run.step == 0",
    'run == {"step": 0, "model_calls": 0, "tokens": 0, "cost_usd": 0.0, "actions": 0, "elapsed_s": 0.0}',
    "proposal == {} && outcome == {}",
    'action.effect == "write" && action.egress == "internal"',
]


def reference(source: str, request: dict[str, Any]) -> Any:
    """True, False, or the exception: the rule as CEL evaluates it on the whole request."""
    traits = ACTIONS[request["name"]]
    prov = ProvenanceIndex(OBSERVATIONS)
    variables = {
        "action": {**request, "effect": traits.effect, "egress": traits.egress},
        "input": INPUT,
        "context": CONTEXT,
        "proposal": {},
        "run": {
            "step": 0,
            "model_calls": 0,
            "tokens": 0,
            "cost_usd": 0.0,
            "actions": 0,
            "elapsed_s": 0.0,
        },
        "now": NOW,
        "outcome": {},
    }
    functions = {
        **STRING_FUNCTIONS,
        **LIST_FUNCTIONS,
        "provenance": lambda v: prov.of(v).to_dict(),
        "count": lambda *a: 0,
    }
    try:
        return cel.compile(source).execute(cel.Context(variables, functions))
    except Exception as exc:
        return exc


def engine_for(sources: list[str]) -> PolicyEngine:
    rules = [
        Rule(id=f"r{i}", at="action", when=compile_expression(s), effect="review", reason="")
        for i, s in enumerate(sources)
    ]
    return PolicyEngine(
        contract="t@1", policy_hash="h", rules=rules, actions=ACTIONS, on_error="deny"
    )


def check(sources: list[str], request: dict[str, Any]) -> None:
    d = engine_for(sources).decide(
        action=request, input=INPUT, context=CONTEXT, observations=OBSERVATIONS, now=NOW
    )
    expected_true = set()
    expected_errors = set()
    for i, s in enumerate(sources):
        r = reference(s, request)
        if r is True:
            expected_true.add(f"r{i}")
        elif r is not False:
            expected_errors.add(f"r{i}")
    assert {e.rule for e in d.errors} == expected_errors, (sources, request["name"], d.errors)
    assert set(d.matched) - {"flow:email"} == expected_true | expected_errors, (
        sources,
        request["name"],
    )


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r["name"])
@pytest.mark.parametrize("source", TRICKY)
def test_each_rule_alone_agrees_with_cel(source: str, request_: dict[str, Any]) -> None:
    check([source], request_)


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r["name"])
def test_all_rules_together_agree_with_cel(request_: dict[str, Any]) -> None:
    """Together, the rules' paths merge: what one rule prunes another may need whole."""
    check(TRICKY, request_)


ATOMS = [
    'action.name == "refund"',
    'action.name == "note"',
    "action.args.k == 1",
    "action.args.missing == 1",
    "has(action.args.z)",
    "action.args.k",
    "context.n.m == 1",
    "has(context.n.zz)",
    "context.items.exists(o, o.a == 3)",
    "context.items.all(o, has(o.b))",
    "context.items.filter(o, o.a > 1).size() == 1",
    "size(context) == 7",
    "context.missing.x",
    '"pii" in provenance(action.args).labels',
    "context.items[0].b == 2",
    'context.s.lowerAscii() == "hello"',
    "input.a.b.c == 1",
    "true",
    "false",
    "context.items.exists(a, a.a == 1)",
    'context.n == {"m": 1}',
]


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, children).map(lambda t: f"{t[0]} && {t[1]}"),
        st.tuples(children, children).map(lambda t: f"{t[0]} || {t[1]}"),
        st.tuples(children, children, children).map(lambda t: f"{t[0]} ? ({t[1]}) : {t[2]}"),
        children.map(lambda c: f"({c})"),
        children.map(lambda c: f"!({c})"),
    )


expressions = st.recursive(st.sampled_from(ATOMS), _combine, max_leaves=5)


@settings(max_examples=150, deadline=None)
@given(
    sources=st.lists(expressions, min_size=1, max_size=4),
    request_=st.sampled_from(REQUESTS),
)
def test_generated_rules_agree_with_cel(sources: list[str], request_: dict[str, Any]) -> None:
    check(sources, request_)
