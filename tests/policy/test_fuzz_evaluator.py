"""Fuzzing the policy evaluator: any rule the grammar below can write, on any request.

Rules are CEL expressions generated from a small grammar — comprehensions (nested, over
literal lists, concatenations and request data), arithmetic, string helpers, ``has``,
``in``, map and list literals, ``provenance()`` and ``count()`` with generated arguments —
and requests are generated too, some of them malformed. Whatever the rule, loading the
contract either works or reports a located problem, and ``decide`` either returns a
:class:`Decision` (rules that fail or run out of time fail closed, listed in ``errors``)
within the decision budget, or raises :class:`PolicyError` for a malformed request.

A longer, coverage-guided run: ``tests/fuzz/fuzz_policy.py`` (see "Limits" in
docs/policy.md).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter import ContractError, Decision, InMemoryHistory, PolicyError
from charter.policy.decision import PRECEDENCE
from tests.helpers import NOW, contract_with, rule

BUDGET_MS = 60

# -- the grammar -------------------------------------------------------------------------

VARS = ("x", "y", "z")
TEXT = st.text(alphabet='ab,-@. AZé"\\\n', max_size=6)


def quoted(s: str) -> str:
    return json.dumps(s)  # a valid CEL string literal, escapes included


def literal_list(n: int) -> str:
    return "[" + ", ".join(str(i) for i in range(n)) + "]"


ints_leaf = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(["action.args.amount", "size(context.items)", "input.n", "context.n"]),
    st.sampled_from(VARS),
)
strings_leaf = st.one_of(
    TEXT.map(quoted),
    st.sampled_from(["action.args.order_id", "context.tier", "input.message", "action.name"]),
)
ranges_leaf = st.one_of(
    st.integers(0, 60).map(literal_list),
    st.sampled_from(["context.items", "context.words", "input.list"]),
    st.lists(st.integers(0, 25), min_size=2, max_size=4).map(
        lambda ns: "(" + " + ".join(literal_list(n) for n in ns) + ")"
    ),
)


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """One more level of the grammar over ``children`` (any kind of expression)."""
    var = st.sampled_from(VARS)
    return st.one_of(
        # arithmetic and comparison
        st.tuples(children, st.sampled_from(["+", "-", "*", "/", "%"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(children, st.sampled_from(["==", "!=", "<", ">=", "in"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(children, st.sampled_from(["&&", "||"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        children.map(lambda c: f"!({c})"),
        st.tuples(children, children, children).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
        # comprehensions, over literal ranges, concatenations, request data, or children
        st.tuples(
            st.one_of(ranges_leaf, children),
            st.sampled_from(["all", "exists", "exists_one", "map", "filter"]),
            var,
            children,
        ).map(lambda t: f"{t[0]}.{t[1]}({t[2]}, {t[3]})"),
        st.tuples(st.one_of(ranges_leaf, children), var, children, children).map(
            lambda t: f"{t[0]}.map({t[1]}, {t[2]}, {t[3]})"
        ),
        # string helpers
        st.tuples(
            children,
            st.sampled_from(
                [
                    "lowerAscii()",
                    "upperAscii()",
                    "trim()",
                    'split(",")',
                    'replace("a", "bb")',
                    "charAt(1)",
                    'indexOf("a")',
                    "substring(1)",
                    'contains("a")',
                    'startsWith("a")',
                    'matches("a+")',
                    "size()",
                ]
            ),
        ).map(lambda t: f"{t[0]}.{t[1]}"),
        children.map(lambda c: f'{c}.join("-")'),
        children.map(lambda c: f"{c}.flatten()"),
        children.map(lambda c: f"{c}.distinct()"),
        children.map(lambda c: f"sum({c})"),
        children.map(lambda c: f"string({c})"),
        children.map(lambda c: f"int({c})"),
        # literals, has, indexing
        st.lists(children, max_size=3).map(lambda cs: "[" + ", ".join(cs) + "]"),
        st.lists(st.tuples(strings_leaf, children), max_size=3).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
        ),
        st.sampled_from(
            ["has(context.tier)", "has(action.args.amount)", "has(input.list)", "has(context.x.y)"]
        ),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
        # the per-decision functions, with generated arguments
        children.map(lambda c: f"provenance({c}).labels"),
        children.map(lambda c: f'"pii" in provenance({c}).labels'),
        st.tuples(st.sampled_from(['"refund"', '"email"', "action.name"]), children).map(
            lambda t: f'count({t[0]}, {{"order_id": {t[1]}}}, duration("1h"))'
        ),
    )


EXPRESSIONS = st.recursive(
    st.one_of(ints_leaf, strings_leaf, ranges_leaf, st.sampled_from(["true", "false", "null"])),
    _extend,
    max_leaves=14,
)


@st.composite
def nested_comprehensions(draw: st.DrawFn) -> str:
    """Two to four comprehensions inside each other: the shape that multiplies evaluation
    time, over literal ranges and request data alike. Half of them have a body that holds
    for every element (``all``) or for none (``exists``), so they run to the end unless
    something stops them; the others have a generated body."""
    names = VARS[: draw(st.integers(2, 3))] + ("w",)[: draw(st.integers(0, 1))]
    total = draw(st.booleans())
    text = " + ".join(f"string({n})" for n in names)
    body = draw(EXPRESSIONS) if not total else f'{text} != "-"'
    holds = True  # with a total body: whether it is true for every element
    for var in reversed(names):
        if total:  # all() of what always holds, exists() of what never does: no early end
            macro = draw(st.sampled_from(["all", "exists"]))
            if holds != (macro == "all"):
                body = f"!({body})"
            holds = macro == "all"
        else:
            macro = draw(st.sampled_from(["all", "exists", "map", "filter", "exists_one"]))
        over = draw(st.one_of(ranges_leaf, st.sampled_from(["context.items", "context.words"])))
        body = f"{over}.{macro}({var}, {body})"
    return body if draw(st.booleans()) else f"({body}) || true"


RULES = st.one_of(EXPRESSIONS, nested_comprehensions())

# -- requests --------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=10,
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A decision request; about one in ten is malformed (PolicyError expected)."""
    amount = draw(st.one_of(st.integers(-5, 10**6), TEXT, st.none()))
    action: Any = {"name": draw(st.sampled_from(["refund", "email", "note"])), "args": {}}
    action["args"] = {"order_id": draw(TEXT), "amount": amount}
    malformed = draw(st.sampled_from(["", "", "", "", "", "", "", "name", "args", "point", "now"]))
    if malformed == "name":
        action = draw(st.sampled_from([{}, {"name": "unknown"}, None]))
    elif malformed == "args":
        action["args"] = draw(st.sampled_from([[1], "text", 3]))
    n = draw(st.sampled_from([0, 3, 300, 3000]))
    context = {
        "items": list(range(n)),
        "words": [f"w{i}" for i in range(min(n, 300))],
        "tier": draw(TEXT),
        "n": draw(st.integers(-3, 3)),
        "data": draw(JSON),
    }
    if draw(st.booleans()):
        del context["tier"]
    return {
        "at": "bogus" if malformed == "point" else draw(st.sampled_from(["action", "admit"])),
        "action": action,
        "input": {"n": draw(st.integers(0, 5)), "message": draw(TEXT), "list": draw(JSON)},
        "context": context,
        "observations": [
            {"channel": "ticket.message", "labels": ["untrusted"], "content": draw(TEXT)},
            {"channel": "crm.customer", "labels": ["pii"], "content": {"email": draw(TEXT)}},
        ],
        "proposal": {"confidence": 0.5},
        "now": NOW.replace(tzinfo=None) if malformed == "now" else NOW,
    }


HISTORY = InMemoryHistory()
HISTORY.record("refund", {"order_id": "a"}, NOW - timedelta(minutes=5))


@pytest.fixture(scope="module", autouse=True)
def _short_budget() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARTER_CAP_DECISION_MS", str(BUDGET_MS))
        yield


@pytest.mark.timeout(120)
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    whens=st.lists(RULES, min_size=1, max_size=3),
    effect=st.sampled_from(["allow", "review", "deny"]),
    request=requests(),
    any_cost=st.booleans(),
)
def test_any_rule_on_any_request_gives_a_decision_in_time(
    whens: list[str], effect: str, request: dict[str, Any], any_cost: bool
) -> None:
    rules = [rule(f"r{i}", when, effect) for i, when in enumerate(whens)]
    rules.append(rule("routine", "true", "allow"))
    try:
        with pytest.MonkeyPatch.context() as mp:
            if any_cost:  # leave stopping expensive rules to the clock alone
                mp.setenv("CHARTER_CAP_EXPRESSION_COST", str(10**15))
            contract = contract_with(rules, on_error="review")
    except ContractError as exc:
        # a rule the validator refuses is located at its condition
        for issue in exc.issues:
            assert issue.path.startswith("policy.rules[") and issue.path.endswith("].when")
        return
    started = time.perf_counter()
    try:
        decision = contract.decide(history=HISTORY, **request)
    except PolicyError:
        assert (
            request["at"] == "bogus"
            or request["now"].tzinfo is None
            or not isinstance(request["action"], dict)
            or request["action"].get("name") not in ("refund", "email", "note")
            or not isinstance(request["action"].get("args"), dict)
        )
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert isinstance(decision, Decision)
    # the budget, plus what cannot be interrupted: one CEL operation, converting the request
    assert elapsed_ms < BUDGET_MS + 500, (elapsed_ms, whens)
    if decision.errors:  # fail closed: at least as strict as on_error
        assert PRECEDENCE[decision.effect] >= PRECEDENCE["review"]
        assert {e.rule for e in decision.errors} <= {r["id"] for r in rules}
    else:
        assert "routine" in decision.matched or request["at"] == "admit"


@pytest.mark.timeout(120)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(when=nested_comprehensions(), n=st.sampled_from([30, 300, 3000]))
def test_nested_comprehensions_never_outlast_the_budget(when: str, n: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARTER_CAP_EXPRESSION_COST", str(10**15))
        try:
            contract = contract_with([rule("nested", when, "deny")], on_error="review")
        except ContractError as exc:
            assert all("unknown variable" in i.message for i in exc.issues)
            return
    context = {"items": list(range(n)), "words": [str(i) for i in range(n)], "n": 1}
    started = time.perf_counter()
    decision = contract.decide(action={"name": "note", "args": {}}, context=context, now=NOW)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert elapsed_ms < BUDGET_MS + 500, (elapsed_ms, when)
    assert decision.effect in ("deny", "review")  # matched, or failed closed


def test_the_grammar_reaches_the_expensive_shapes() -> None:
    # the fuzz test above is only as good as what it generates: nested comprehensions over
    # request data, which only the clock can stop, are among them
    seen: list[str] = []

    @settings(max_examples=300, database=None, deadline=None)
    @given(RULES)
    def collect(source: str) -> None:
        seen.append(source)

    collect()
    assert any(s.count(".all(") + s.count(".exists(") + s.count(".map(") >= 2 for s in seen)
    assert any("context.items." in s for s in seen)
    assert any("count(" in s for s in seen) and any("provenance(" in s for s in seen)


_ = datetime, UTC  # re-exported for the atheris harness (tests/fuzz/fuzz_policy.py)
